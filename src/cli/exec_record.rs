//! `stoke [--root DIR] exec-record --result FILE --success-codes 0,2 -- ARGV...`
//!
//! Runs a command that stoke does not wait for (the non-blocking Puppet run,
//! under `systemd-run` or detached) and records its life in FILE, so that
//! `stoke status` can show running / succeeded / failed after stoke has exited.
//! The command's output goes to this process's stdout/stderr (the journal under
//! systemd-run, the log file when detached), line by line; the last lines are
//! also kept for the record.
//!
//! FILE is the instance's path, resolved inside `--root` (default `/`): its directory is
//! opened once, at the start, and every record is written in that directory, so nothing
//! swapped in on the way later is followed. FILE is replaced atomically (never seen
//! half-written). Its JSON shape:
//!
//! ```text
//! while running:
//!   {"state": "running", "pid": 1234, "boot_id": "…", "started_unix": 1764100000,
//!    "argv": ["timeout", "-k", "60", "1800", "puppet", "agent", …]}
//! when finished:
//!   {"state": "succeeded" | "failed",
//!    "pid": 1234, "boot_id": "…", "started_unix": …, "argv": […],
//!    "finished_unix": 1764100042, "duration_ms": 41873,
//!    "code": 2,              // exit code; absent when killed by a signal or not started
//!    "signal": 9,            // only when killed by a signal
//!    "meaning": "changes applied",
//!    "error": "…",           // only when the command could not be started
//!    "tail": ["Notice: …", …]}   // last 20 output lines (stdout and stderr as they came)
//! ```
//!
//! `pid` is this process (the unit's main process under systemd): while it is
//! alive and `boot_id` is the current boot's, the run is going. A record still
//! saying "running" otherwise means the run was interrupted (power loss, kill).
//!
//! Exit status: the command's exit code; 128+N when it was killed by signal N;
//! 127 when it could not be started; 2 when no command was given.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stoke_api::{Root, RunRecord, replace_in_dir};

/// Output lines kept in the record.
const TAIL_LINES: usize = stoke_puppet::TAIL_LINES;
/// After the command exits, how long its output may still take to drain (a
/// grandchild holding the pipe must not keep the record from being written).
const DRAIN: Duration = Duration::from_secs(5);

/// Where the record goes: the result file's directory, opened inside the root once.
struct ResultFile {
    shown: PathBuf,
    dir: Result<(File, OsString), String>,
}

impl ResultFile {
    fn open(root: &Root, guest: &Path) -> ResultFile {
        let dir = (|| {
            let name = guest
                .file_name()
                .ok_or_else(|| format!("{} does not name a file", guest.display()))?;
            let parent = guest.parent().unwrap_or(Path::new("/"));
            let dir = root
                .fs()
                .and_then(|fs| fs.create_dir_all(parent, 0o755))
                .map_err(|e| format!("opening {}: {e}", parent.display()))?;
            Ok((dir, name.to_os_string()))
        })();
        ResultFile {
            shown: root.host_path(guest),
            dir,
        }
    }
}

/// Runs `argv`, recording it in `result` (inside `root`); returns the command's exit status.
pub fn exec_record(root: &Root, result: &Path, success_codes: &[i32], argv: &[String]) -> i32 {
    let result = &ResultFile::open(root, result);
    let start = Instant::now();
    let mut rec = RunRecord::running(argv.to_vec(), Some(std::process::id()), boot_id());
    let Some((program, args)) = argv.split_first() else {
        finish(
            result,
            &mut rec,
            start,
            None,
            "no command given",
            Vec::new(),
        );
        return 2;
    };
    // Recorded before the command starts, so the command (and status) always finds it.
    write(result, &rec);
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start `{program}`: {e}");
            eprintln!("stoke exec-record: {msg}");
            rec.error = Some(msg);
            finish(
                result,
                &mut rec,
                start,
                None,
                "command not found",
                Vec::new(),
            );
            return 127;
        }
    };

    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES + 1)));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    if let Some(out) = child.stdout.take() {
        forward(out, std::io::stdout(), tail.clone(), done_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward(err, std::io::stderr(), tail.clone(), done_tx.clone());
    }
    drop(done_tx);

    let status = child.wait();
    // Both readers end when the pipes close; bounded, see DRAIN.
    let deadline = Instant::now() + DRAIN;
    while let Ok(()) = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {}
    let lines: Vec<String> = match tail.lock() {
        Ok(t) => t.iter().cloned().collect(),
        Err(p) => p.into_inner().iter().cloned().collect(),
    };

    match status {
        Ok(status) => {
            let (code, exit) = exit_of(status);
            let ok = code.is_some_and(|c| success_codes.contains(&c));
            let meaning = match (code, signal_of(status)) {
                (Some(c), _) => stoke_puppet::meaning(c).1.to_string(),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "ended without an exit code".to_string(),
            };
            rec.signal = signal_of(status);
            rec.finish(ok, code, &meaning, elapsed_ms(start), lines);
            write(result, &rec);
            exit
        }
        Err(e) => {
            rec.error = Some(format!("waiting for `{program}`: {e}"));
            finish(
                result,
                &mut rec,
                start,
                None,
                "lost track of the command",
                lines,
            );
            1
        }
    }
}

/// Copies `from` to `to` line by line, keeping the last lines in `tail`.
fn forward(
    from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // The log/journal write is best effort: a full disk must not stop the run.
                    let _ = to.write_all(&buf).and_then(|()| to.flush());
                    let line = stoke_puppet::strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                    if line.trim().is_empty() {
                        continue;
                    }
                    let mut t = match tail.lock() {
                        Ok(t) => t,
                        Err(p) => p.into_inner(),
                    };
                    t.push_back(line);
                    if t.len() > TAIL_LINES {
                        t.pop_front();
                    }
                }
            }
        }
        let _ = done.send(());
    });
}

/// (exit code if any, this process's exit status: the code, or 128+signal).
fn exit_of(status: ExitStatus) -> (Option<i32>, i32) {
    match (status.code(), signal_of(status)) {
        (Some(c), _) => (Some(c), c),
        (None, Some(s)) => (None, 128 + s),
        (None, None) => (None, 1),
    }
}

fn signal_of(status: ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

/// A run that failed before an exit code: recorded as failed with `meaning`.
fn finish(
    result: &ResultFile,
    rec: &mut RunRecord,
    start: Instant,
    code: Option<i32>,
    meaning: &str,
    tail: Vec<String>,
) {
    rec.finish(false, code, meaning, elapsed_ms(start), tail);
    write(result, rec);
}

fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Writes the record (durably, atomically); a failure is reported on stderr (the journal)
/// but does not change the command's outcome.
fn write(result: &ResultFile, rec: &RunRecord) {
    let written = match &result.dir {
        Ok((dir, name)) => rec
            .to_json()
            .and_then(|json| replace_in_dir(dir, name, 0o644, true, |mut f| f.write_all(&json))),
        Err(e) => Err(std::io::Error::other(e.clone())),
    };
    if let Err(e) = written {
        eprintln!(
            "stoke exec-record: cannot write {}: {e}",
            result.shown.display()
        );
    }
}

/// This boot's id (exec-record runs on the instance itself, never under --root).
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// exec-record with the root `/`: the result's host path is its instance path.
    fn record_at_host(result: &Path, codes: &[i32], argv: &[String]) -> i32 {
        exec_record(&Root::new("/"), result, codes, argv)
    }

    fn sh(script: &str) -> Vec<String> {
        ["/bin/sh", "-c", script]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn read(p: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn records_running_then_success_with_code_meaning_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("state/background.json");
        let mid = dir.path().join("mid.json");
        // The command itself copies the record as it is while it runs.
        let script = format!(
            "cp '{}' '{}'; echo 'Notice: applied'; echo 'Warning: odd' >&2; exit 2",
            result.display(),
            mid.display()
        );
        let code = record_at_host(&result, &[0, 2], &sh(&script));
        assert_eq!(code, 2);
        let running = read(&mid);
        assert_eq!(running["state"], "running");
        assert_eq!(running["pid"], std::process::id());
        assert_eq!(running["argv"][2], script.as_str());
        assert!(running["started_unix"].as_u64().unwrap() > 0);
        assert!(running.get("code").is_none());

        let done = read(&result);
        assert_eq!(done["state"], "succeeded");
        assert_eq!(done["code"], 2);
        assert_eq!(done["meaning"], "changes applied");
        assert_eq!(done["started_unix"], running["started_unix"]);
        assert!(done["duration_ms"].is_u64());
        let tail: Vec<&str> = done["tail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(
            tail.contains(&"Notice: applied") && tail.contains(&"Warning: odd"),
            "{tail:?}"
        );
    }

    #[test]
    fn failure_keeps_the_last_twenty_lines_without_colour() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("r.json");
        let script = "i=1; while [ $i -le 30 ]; do printf '\\033[mNotice: %s\\033[0m\\n' $i; \
                      i=$((i+1)); done; exit 4";
        assert_eq!(record_at_host(&result, &[0, 2], &sh(script)), 4);
        let done = read(&result);
        assert_eq!(
            (done["state"].as_str(), done["code"].as_i64()),
            (Some("failed"), Some(4))
        );
        assert_eq!(done["meaning"], "failures");
        let tail = done["tail"].as_array().unwrap();
        assert_eq!(tail.len(), 20);
        assert_eq!(tail[0], "Notice: 11");
        assert_eq!(tail[19], "Notice: 30");
    }

    #[test]
    fn success_codes_decide_and_other_codes_fail() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("r.json");
        assert_eq!(record_at_host(&result, &[0, 2], &sh("exit 0")), 0);
        assert_eq!(read(&result)["state"], "succeeded");
        assert_eq!(record_at_host(&result, &[0], &sh("exit 2")), 2);
        assert_eq!(
            read(&result)["state"],
            "failed",
            "2 only counts when listed"
        );
        assert_eq!(record_at_host(&result, &[0, 2], &sh("exit 124")), 124);
        assert_eq!(read(&result)["meaning"], "timed out and was killed");
    }

    #[test]
    fn killed_by_a_signal() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("r.json");
        assert_eq!(
            record_at_host(&result, &[0, 2], &sh("echo bye; kill -9 $$")),
            137
        );
        let done = read(&result);
        assert_eq!(done["state"], "failed");
        assert!(done["code"].is_null());
        assert_eq!(done["signal"], 9);
        assert_eq!(done["meaning"], "killed by signal 9");
        assert_eq!(done["tail"], json!(["bye"]));
    }

    #[test]
    fn a_command_that_cannot_start_or_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("r.json");
        let argv = vec!["/nonexistent/puppet".to_string(), "agent".to_string()];
        assert_eq!(record_at_host(&result, &[0, 2], &argv), 127);
        let done = read(&result);
        assert_eq!(done["state"], "failed");
        assert!(
            done["error"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/puppet"),
            "{done}"
        );
        assert_eq!(record_at_host(&result, &[0], &[]), 2);
        assert_eq!(read(&result)["meaning"], "no command given");
    }

    #[test]
    fn a_real_puppet_apply_that_changes_a_file_is_a_success() {
        let present = Command::new("puppet")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            stoke_api::testing::skip("no working `puppet` on PATH (Debian's puppet-agent)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("motd");
        let manifest = dir.path().join("m.pp");
        std::fs::write(
            &manifest,
            format!("file {{ '{}': content => \"hi\\n\" }}\n", target.display()),
        )
        .unwrap();
        let mut argv: Vec<String> = ["puppet", "apply", "--detailed-exitcodes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for d in ["confdir", "vardir", "codedir", "logdir", "rundir"] {
            argv.push(format!("--{d}"));
            argv.push(dir.path().join(d).display().to_string());
        }
        argv.push(manifest.display().to_string());
        let result = dir.path().join("background.json");
        assert_eq!(
            record_at_host(&result, &stoke_puppet::SUCCESS_CODES, &argv),
            2
        );
        let done = read(&result);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["meaning"], "changes applied");
        assert!(
            done["tail"].to_string().contains("defined content as"),
            "{done}"
        );
        assert_eq!(std::fs::read_to_string(target).unwrap(), "hi\n");
    }

    #[test]
    fn output_held_open_by_a_grandchild_does_not_block_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("r.json");
        // The shell exits at once; a background sleep keeps stdout open for 30 s.
        let start = Instant::now();
        assert_eq!(
            record_at_host(&result, &[0], &sh("echo hi; sleep 30 & exit 0")),
            0
        );
        assert!(start.elapsed() < Duration::from_secs(20));
        assert_eq!(read(&result)["tail"], json!(["hi"]));
    }
}
