//! The Auto Scaling double (asg_double.py) as a child process: its port, and
//! its request log read line by line as events the tests wait on. Shared with
//! the root crate's tests/lifecycle.rs, which uses only a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const GROUP: &str = "web-asg";
pub const HOOK: &str = "launching";
pub const INSTANCE: &str = "i-0123456789abcdef0";
pub const REGION: &str = "eu-west-1";
pub const KEY: &str = "AKIDLIFECYCLETEST";
pub const SECRET: &str = "lifecycle/secret+key";

/// How long any wait on the double may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

/// The Python with botocore: the moto venv's (moto brings botocore), found as
/// route53's tests find moto_server. `Err` is a reason to skip.
pub fn python() -> Result<PathBuf, String> {
    let moto = match std::env::var_os("STOKE_MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    manifest
                        .ancestors()
                        .map(|d| d.join("target"))
                        .find(|t| t.join("moto-venv").is_dir())
                })
                .unwrap_or_else(|| manifest.join("target"));
            target.join("moto-venv/bin/moto_server")
        }
    };
    let py = moto.with_file_name("python3");
    if py.exists() {
        Ok(py)
    } else {
        Err(format!(
            "no python3 with botocore next to {} (run scripts/install-moto.sh target/moto-venv, \
             or set STOKE_MOTO_SERVER)",
            moto.display()
        ))
    }
}

pub struct Double {
    child: Child,
    pub port: u16,
    lines: Receiver<String>,
    /// Every event seen so far.
    pub events: Vec<Value>,
}

impl Double {
    pub fn start(throttle: u32) -> Result<Double, String> {
        let py = python()?;
        // Embedded: this file is compiled from two crates, so no path is right for both.
        let mut child = Command::new(&py)
            .args(["-c", include_str!("asg_double.py")])
            .args(["--group", GROUP, "--hook", HOOK, "--instance", INSTANCE])
            .args(["--region", REGION, "--key", KEY, "--secret", SECRET])
            .args(["--throttle", &throttle.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", py.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = match lines.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!("the Auto Scaling double did not start ({e:?}) {err}");
            }
        };
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the double said {first:?}, not its port"));
        Ok(Double {
            child,
            port,
            lines,
            events: Vec::new(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn next(&mut self, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => serde_json::from_str(&l).unwrap_or_else(|e| panic!("event {l:?}: {e}")),
            Err(RecvTimeoutError::Timeout) => panic!("no event from the double within {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the double exited"),
        }
    }

    /// Waits until `done` holds for the events seen so far.
    pub fn wait_for(&mut self, done: impl Fn(&[Value]) -> bool) -> &[Value] {
        let deadline = Instant::now() + WAIT;
        while !done(&self.events) {
            let e = self.next(deadline);
            self.events.push(e);
        }
        &self.events
    }

    /// Every request the double answered until now (a GET /sync barrier).
    pub fn settle(&mut self) -> Vec<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the double");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        s.write_all(b"GET /sync HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("sync request");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let deadline = Instant::now() + WAIT;
        loop {
            let e = self.next(deadline);
            if e.get("sync").is_some() {
                break;
            }
            self.events.push(e);
        }
        self.events.clone()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests of `action` in `events`.
pub fn of<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// No request the double found wrong (action, parameters, signature).
pub fn assert_clean(events: &[Value]) {
    for e in events {
        assert!(
            e.get("problem").is_none(),
            "the double rejected a request: {e}"
        );
    }
}
