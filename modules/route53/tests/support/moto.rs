//! moto_server as the Route53 peer of the tests: started on 127.0.0.1 with a
//! free port, ready when it accepts a connection, killed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    /// moto's request log (a file: a pipe nobody drains would stall it).
    log: PathBuf,
}

/// Where moto_server is: `STOKE_MOTO_SERVER`, else the venv that
/// `scripts/install-moto.sh` makes in the workspace's target directory.
/// `Err` (skip the test, printing why) only when neither is there.
pub fn moto_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STOKE_MOTO_SERVER") {
        let p = PathBuf::from(p);
        // Set but wrong is a broken set-up, not a reason to skip.
        assert!(
            p.exists(),
            "STOKE_MOTO_SERVER={} does not exist",
            p.display()
        );
        return Ok(p);
    }
    // The workspace's target dir: CARGO_TARGET_DIR, else the nearest `target`
    // above the package that includes this file (a module crate or the root).
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
    let p = target.join("moto-venv/bin/moto_server");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "moto_server not found at {} and STOKE_MOTO_SERVER is unset \
             (run scripts/install-moto.sh target/moto-venv)",
            p.display()
        ))
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Moto {
    /// Starts moto_server; `Err` (a reason to print and skip) only when the
    /// binary is absent. A server that does not come up is a test failure.
    pub fn start() -> Result<Moto, String> {
        Self::start_with_env(&[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> Result<Moto, String> {
        let bin = moto_binary()?;
        // The port can be taken between probe and bind: a few tries.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("stoke-moto-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("creating moto log");
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut moto = Moto {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log,
            };
            match moto.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(moto),
                Err(e) => last = e,
            }
        }
        panic!("moto_server did not start: {last}");
    }

    /// Ready means accepting connections: retry connect until it does, the
    /// process exits, or the deadline passes.
    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("exited ({status}): {err}"));
            }
            if Instant::now() > deadline {
                return Err(format!("not accepting on {} after {within:?}", self.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
