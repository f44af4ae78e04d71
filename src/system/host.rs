use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use nix::mount::{MntFlags, MsFlags};
use stoke_api::{Cmd, CmdOutput, MountRequest, SysError, System};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// Runs commands and syscalls for real, on the machine stoke boots.
pub struct Host;

/// How long output is still read after a command exited.
const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn call_err(call: &'static str, what: impl Into<String>, e: impl Into<std::io::Error>) -> SysError {
    SysError::Call {
        call,
        what: what.into(),
        source: e.into(),
    }
}

/// Reads a child's stream to the end; with `stream`, logs each line as it comes.
async fn collect(reader: impl AsyncRead + Unpin, program: String, stream: bool) -> String {
    let mut lines = BufReader::new(reader).lines();
    let mut out = String::new();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if stream {
                    tracing::info!(target: "stoke::cmd", "{program}: {line}");
                }
                out.push_str(&line);
                out.push('\n');
            }
            Ok(None) => break,
            Err(e) => {
                // Non-UTF-8 output: keep what we have rather than fail the command.
                tracing::debug!("reading output of {program}: {e}");
                break;
            }
        }
    }
    out
}

#[stoke_api::async_trait]
impl System for Host {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError> {
        let argv = cmd.display();
        tracing::info!("running: {argv}");
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &cmd.env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|source| SysError::Spawn {
            program: cmd.program.clone(),
            source,
        })?;
        let pgid = child.id();
        if let (Some(input), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(input.as_bytes()).await;
            });
        }
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(collect(s, cmd.program.clone(), cmd.stream_output)));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(collect(s, cmd.program.clone(), cmd.stream_output)));
        let status = match tokio::time::timeout(cmd.timeout, child.wait()).await {
            Ok(res) => res.map_err(|e| call_err("wait", argv.clone(), e))?,
            Err(_) => {
                if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill().await;
                tracing::warn!("timed out after {:?}, killed: {argv}", cmd.timeout);
                return Err(SysError::Timeout {
                    argv,
                    after: cmd.timeout,
                });
            }
        };
        // A daemon the command left behind may hold its output open: read
        // what is there, but never wait on it for long.
        let join = |h: Option<tokio::task::JoinHandle<String>>| async move {
            let Some(mut h) = h else {
                return String::new();
            };
            match tokio::time::timeout(OUTPUT_GRACE, &mut h).await {
                Ok(r) => r.unwrap_or_default(),
                Err(_) => {
                    h.abort();
                    tracing::warn!(
                        "{}: output still open after exit; not waiting for it",
                        cmd.program
                    );
                    String::new()
                }
            }
        };
        let out = CmdOutput {
            code: status.code(),
            stdout: join(stdout).await,
            stderr: join(stderr).await,
        };
        let took = started.elapsed();
        if out.success() {
            tracing::info!("{argv}: {} in {took:?}", out.status_text());
        } else {
            tracing::warn!(
                "{argv}: {} in {took:?}: {}",
                out.status_text(),
                out.stderr.trim()
            );
        }
        Ok(out)
    }

    fn spawn_detached(&self, cmd: &Cmd, log: &Path) -> Result<u32, SysError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| call_err("mkdir", dir.display().to_string(), e))?;
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| call_err("open", log.display().to_string(), e))?;
        let err = out
            .try_clone()
            .map_err(|e| call_err("dup", log.display().to_string(), e))?;
        let mut command = std::process::Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in &cmd.env {
            command.env(k, v);
        }
        // Its own process group: signals to stoke's group do not reach it.
        command.process_group(0);
        let child = command.spawn().map_err(|source| SysError::Spawn {
            program: cmd.program.clone(),
            source,
        })?;
        tracing::info!("started detached (pid {}): {}", child.id(), cmd.display());
        Ok(child.id())
    }

    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        tracing::info!("sethostname({name})");
        nix::unistd::sethostname(name).map_err(|e| call_err("sethostname", name, e))
    }

    fn mount(&self, req: &MountRequest) -> Result<(), SysError> {
        let (flags, data) = mount_flags(&req.options);
        tracing::info!(
            "mount {} on {} type {} ({})",
            req.source,
            req.target.display(),
            req.fstype,
            req.options
        );
        nix::mount::mount(
            Some(req.source.as_str()),
            &req.target,
            Some(req.fstype.as_str()),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| call_err("mount", req.target.display().to_string(), e))
    }

    fn umount(&self, target: &Path) -> Result<(), SysError> {
        tracing::info!("umount {}", target.display());
        nix::mount::umount2(target, MntFlags::empty())
            .map_err(|e| call_err("umount", target.display().to_string(), e))
    }

    fn fchown(&self, file: &File, path: &Path, uid: u32, gid: u32) -> Result<(), SysError> {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))
            .map_err(|e| call_err("fchown", path.display().to_string(), e))
    }

    fn console(&self, text: &str) -> Result<(), SysError> {
        let mut f = OpenOptions::new()
            .write(true)
            .open("/dev/console")
            .map_err(|e| call_err("open", "/dev/console", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| call_err("write", "/dev/console", e))
    }

    fn executes(&self) -> bool {
        true
    }
}

/// Splits fstab-style options into kernel flags and the filesystem's data
/// string, dropping options only fstab/systemd understand.
pub fn mount_flags(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" | "auto" | "noauto" | "nofail" | "user" | "nouser" | "_netdev" => {}
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            o => data.push(o),
        }
    }
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fstab_only_options_never_reach_the_kernel() {
        let (flags, data) = mount_flags(
            "defaults,nofail,x-systemd.device-timeout=10s,x-stoke,noatime,ro,logbsize=256k",
        );
        assert_eq!(flags, MsFlags::MS_NOATIME | MsFlags::MS_RDONLY);
        assert_eq!(data, "logbsize=256k");
    }

    #[tokio::test]
    async fn run_captures_output_and_exit_code() {
        let out = Host
            .run(&Cmd::new("sh", ["-c", "echo out; echo err >&2; exit 3"]))
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[tokio::test]
    async fn run_kills_at_timeout() {
        let started = Instant::now();
        let err = Host
            .run(&Cmd::new("sleep", ["30"]).timeout(Duration::from_millis(100)))
            .await
            .unwrap_err();
        assert!(matches!(err, SysError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Live (not zombie) processes in process group `pgid`, from /proc.
    fn group_members(pgid: u32) -> usize {
        std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                    .filter(|stat| {
                        // After the ")" that ends the command name: state, ppid, pgrp.
                        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                        let f: Vec<&str> = rest.split_whitespace().collect();
                        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The shell leads its own group; its background child is in it too.
        let script = format!("echo $$ > {}; sleep 30 & sleep 30", pidfile.display());
        let err = Host
            .run(&Cmd::new("sh", ["-c", script.as_str()]).timeout(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(matches!(err, SysError::Timeout { .. }), "{err}");
        let pgid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_members(pgid) > 0 {
            assert!(Instant::now() < deadline, "group {pgid} still has members");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn a_daemon_holding_stdout_does_not_hang_the_run() {
        let started = Instant::now();
        let out = Host
            .run(&Cmd::new("sh", ["-c", "sleep 5 & echo started"]).timeout(Duration::from_secs(20)))
            .await
            .unwrap();
        assert!(out.success());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn run_reports_a_missing_program() {
        let err = Host
            .run(&Cmd::new(
                "/nonexistent/stoke-test-program",
                Vec::<String>::new(),
            ))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
    }

    #[tokio::test]
    async fn run_feeds_stdin() {
        let out = Host
            .run(&Cmd::new("cat", Vec::<String>::new()).stdin("hello"))
            .await
            .unwrap();
        assert_eq!(out.stdout, "hello\n");
    }
}
