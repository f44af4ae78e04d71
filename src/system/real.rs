use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use nix::mount::{MntFlags, MsFlags};
use stoke_api::{Cmd, CmdOutput, MountRequest, OutputLog, SysError, System};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// Runs commands and syscalls for real, on the machine stoke boots.
pub struct RealSystem;

/// Linux's `struct nvme_passthru_cmd` (`include/uapi/linux/nvme_ioctl.h`), which
/// `NVME_IOCTL_ADMIN_CMD` takes.
#[repr(C)]
#[derive(Default)]
struct NvmeAdminCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

// The kernel's size: the ioctl number below encodes it (0xC0484E41).
const _: () = assert!(std::mem::size_of::<NvmeAdminCmd>() == 72);

nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, NvmeAdminCmd);

/// NVMe admin opcode Identify; CNS 1 = the controller's data structure.
const NVME_ADMIN_IDENTIFY: u8 = 0x06;
const NVME_CNS_CONTROLLER: u32 = 1;
/// The controller's own bound on the command; the caller's is a little longer.
const NVME_IDENTIFY_TIMEOUT_MS: u32 = 5000;

/// Identify Controller through the admin ioctl, on a character device only.
fn nvme_identify(dev: &Path) -> Result<Vec<u8>, SysError> {
    use std::os::unix::fs::FileTypeExt as _;
    let what = || dev.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(dev)
        .map_err(|e| call_err("open", what(), e))?;
    let meta = file.metadata().map_err(|e| call_err("fstat", what(), e))?;
    if !meta.file_type().is_char_device() {
        return Err(call_err(
            "nvme identify",
            what(),
            std::io::Error::other("not an NVMe controller (character device)"),
        ));
    }
    let mut buf = vec![0u8; stoke_api::NVME_IDENTIFY_LEN];
    let mut cmd = NvmeAdminCmd {
        opcode: NVME_ADMIN_IDENTIFY,
        addr: buf.as_mut_ptr() as u64,
        data_len: stoke_api::NVME_IDENTIFY_LEN as u32,
        cdw10: NVME_CNS_CONTROLLER,
        timeout_ms: NVME_IDENTIFY_TIMEOUT_MS,
        ..NvmeAdminCmd::default()
    };
    // SAFETY: `cmd` is the kernel's struct layout (size checked above) and `addr` points
    // at `buf`, `data_len` bytes long, which lives until the call returns.
    let status = unsafe { nvme_ioctl_admin_cmd(std::os::fd::AsRawFd::as_raw_fd(&file), &mut cmd) }
        .map_err(|e| call_err("nvme identify", what(), e))?;
    if status != 0 {
        // A positive value is the NVMe status of a command the controller refused.
        return Err(call_err(
            "nvme identify",
            what(),
            std::io::Error::other(format!("NVMe status {status:#x}")),
        ));
    }
    Ok(buf)
}

/// How long output is still read after a command exited.
const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn call_err(call: &'static str, what: impl Into<String>, e: impl Into<std::io::Error>) -> SysError {
    SysError::Call {
        call,
        what: what.into(),
        source: e.into(),
    }
}

/// Where a command's output lines go besides memory: the journal, a capped log file.
struct Sink {
    program: String,
    stream: bool,
    log: Option<std::sync::Arc<std::sync::Mutex<LogFile>>>,
    /// Keep only this many trailing bytes in memory (`None`: everything).
    tail: Option<usize>,
}

/// A command's output file, cut at [`stoke_api::OUTPUT_LOG_MAX`] bytes.
struct LogFile {
    file: File,
    written: u64,
    cut: bool,
}

impl LogFile {
    fn write_line(&mut self, line: &[u8]) {
        if self.cut {
            return;
        }
        let room = stoke_api::OUTPUT_LOG_MAX.saturating_sub(self.written);
        let res = if (line.len() as u64) < room {
            self.written += line.len() as u64;
            self.file.write_all(line)
        } else {
            self.cut = true;
            self.file.write_all(
                b"\n[stoke: output cut here: the log is full; the rest is in the journal]\n",
            )
        };
        if let Err(e) = res {
            tracing::debug!("writing a command's output log: {e}");
            self.cut = true;
        }
    }
}

/// Reads a child's stream to the end, line by line (bytes, so binary output never stops
/// the reading and never blocks the child on a full pipe).
async fn collect(reader: impl AsyncRead + Unpin, sink: Sink) -> String {
    let mut reader = BufReader::new(reader);
    let mut out: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {
                if sink.stream {
                    let text = String::from_utf8_lossy(&line);
                    tracing::info!(target: "stoke::cmd", "{}: {}", sink.program, text.trim_end());
                }
                if let Some(log) = &sink.log {
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .write_line(&line);
                }
                out.extend_from_slice(&line);
                if let Some(max) = sink.tail
                    && out.len() > 2 * max
                {
                    out.drain(..out.len() - max);
                }
            }
            Err(e) => {
                tracing::debug!("reading output of {}: {e}", sink.program);
                break;
            }
        }
    }
    if let Some(max) = sink.tail
        && out.len() > max
    {
        out.drain(..out.len() - max);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kills a command's whole process group when dropped before the command was reaped:
/// a module cancelled at its own timeout must not leave what its commands started.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns; a just-written script may be briefly held open for writing by a child another
/// thread forked meanwhile (ETXTBSY until that child execs): try again a few times.
async fn spawn_retrying_busy(
    command: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// The log's opened file: modules open it inside the root ([`stoke_api::Context::open_log`]);
/// the `System` never opens a log by path.
fn output_file(log: &OutputLog) -> Result<File, SysError> {
    let what = || log.path().display().to_string();
    match log.file() {
        Some(Ok(file)) => Ok(file),
        Some(Err(e)) => Err(call_err("dup", what(), e)),
        None => Err(call_err(
            "open",
            what(),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a log only named, not opened (a dry run's)",
            ),
        )),
    }
}

#[stoke_api::async_trait]
impl System for RealSystem {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, SysError> {
        let argv = cmd.display();
        tracing::info!("running: {argv}");
        let started = Instant::now();
        let log = match &cmd.output_log {
            Some(log) => Some(std::sync::Arc::new(std::sync::Mutex::new(LogFile {
                file: output_file(log)?,
                written: 0,
                cut: false,
            }))),
            None => None,
        };
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
        if cmd.clean_env {
            command.env_clear();
        }
        for (k, v) in &cmd.env {
            command.env(k, v);
        }
        let mut child =
            spawn_retrying_busy(&mut command)
                .await
                .map_err(|source| SysError::Spawn {
                    program: cmd.program.clone(),
                    source,
                })?;
        let mut group = GroupGuard {
            pgid: child.id().and_then(|p| i32::try_from(p).ok()),
        };
        if let (Some(input), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(input.as_bytes()).await;
            });
        }
        let sink = || Sink {
            program: cmd.program.clone(),
            stream: cmd.stream_output,
            log: log.clone(),
            tail: log.as_ref().map(|_| stoke_api::OUTPUT_TAIL_MAX),
        };
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(collect(s, sink())));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(collect(s, sink())));
        let status = match tokio::time::timeout(cmd.timeout, child.wait()).await {
            Ok(res) => res.map_err(|e| call_err("wait", argv.clone(), e))?,
            Err(_) => {
                group.kill();
                let _ = child.kill().await;
                tracing::warn!("timed out after {:?}, killed: {argv}", cmd.timeout);
                return Err(SysError::Timeout {
                    argv,
                    after: cmd.timeout,
                });
            }
        };
        // Reaped: the group id may be reused from here on, never signal it.
        group.pgid = None;
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

    fn spawn_detached(&self, cmd: &Cmd, log: &OutputLog) -> Result<u32, SysError> {
        let out = output_file(log)?;
        let err = out
            .try_clone()
            .map_err(|e| call_err("dup", log.path().display().to_string(), e))?;
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

    async fn mount(&self, req: &MountRequest) -> Result<(), SysError> {
        let (flags, data) = mount_flags(&req.options);
        tracing::info!(
            "mount {} on {} type {} ({})",
            req.source,
            req.target.display(),
            req.fstype,
            req.options
        );
        let req = req.clone();
        let what = req.target.display().to_string();
        stoke_api::off_runtime("mount", move || {
            nix::mount::mount(
                Some(req.source.as_str()),
                &req.target,
                Some(req.fstype.as_str()),
                flags,
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(std::io::Error::from)
        })
        .await
        .and_then(|r| r)
        .map_err(|e| call_err("mount", what, e))
    }

    async fn umount(&self, target: &Path) -> Result<(), SysError> {
        tracing::info!("umount {}", target.display());
        let what = target.display().to_string();
        let target = target.to_path_buf();
        stoke_api::off_runtime("umount", move || {
            nix::mount::umount2(&target, MntFlags::empty()).map_err(std::io::Error::from)
        })
        .await
        .and_then(|r| r)
        .map_err(|e| call_err("umount", what, e))
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

    async fn nvme_identify_controller(&self, dev: &Path) -> Result<Vec<u8>, SysError> {
        tracing::debug!("nvme identify {}", dev.display());
        let path = dev.to_path_buf();
        // An admin command may block for as long as the controller takes: off the runtime,
        // bounded by the controller's timeout and this one.
        let bound = std::time::Duration::from_millis(u64::from(NVME_IDENTIFY_TIMEOUT_MS) + 1000);
        match tokio::time::timeout(
            bound,
            tokio::task::spawn_blocking(move || nvme_identify(&path)),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(call_err(
                "nvme identify",
                dev.display().to_string(),
                std::io::Error::other(e),
            )),
            Err(_) => Err(SysError::Timeout {
                argv: format!("nvme identify {}", dev.display()),
                after: bound,
            }),
        }
    }
}

/// Splits fstab-style options into kernel flags and the filesystem's data
/// string, dropping options only fstab/systemd understand.
pub fn mount_flags(options: &str) -> (MsFlags, String) {
    use stoke_api::mount_options::{MountFlag, kernel_mount};
    let k = kernel_mount(options);
    let flags = k.flags.iter().fold(MsFlags::empty(), |acc, f| {
        acc | match f {
            MountFlag::ReadOnly => MsFlags::MS_RDONLY,
            MountFlag::NoAtime => MsFlags::MS_NOATIME,
            MountFlag::NoDirAtime => MsFlags::MS_NODIRATIME,
            MountFlag::RelAtime => MsFlags::MS_RELATIME,
            MountFlag::StrictAtime => MsFlags::MS_STRICTATIME,
            MountFlag::LazyTime => MsFlags::MS_LAZYTIME,
            MountFlag::NoDev => MsFlags::MS_NODEV,
            MountFlag::NoSuid => MsFlags::MS_NOSUID,
            MountFlag::NoExec => MsFlags::MS_NOEXEC,
            MountFlag::Synchronous => MsFlags::MS_SYNCHRONOUS,
            MountFlag::DirSync => MsFlags::MS_DIRSYNC,
            MountFlag::Silent => MsFlags::MS_SILENT,
        }
    });
    (flags, k.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn nvme_identify_refuses_what_is_not_a_controller() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nvme0");
        std::fs::write(&f, [0u8; 4096]).unwrap();
        let err = RealSystem.nvme_identify_controller(&f).await.unwrap_err();
        assert!(err.to_string().contains("not an NVMe controller"), "{err}");
        let err = RealSystem
            .nvme_identify_controller(&dir.path().join("absent"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

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
        let out = RealSystem
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
        let err = RealSystem
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
        let err = RealSystem
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
        let out = RealSystem
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
        let err = RealSystem
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
        let out = RealSystem
            .run(&Cmd::new("cat", Vec::<String>::new()).stdin("hello"))
            .await
            .unwrap();
        // Exactly what it printed: no newline added.
        assert_eq!(out.stdout, "hello");
    }

    #[tokio::test]
    async fn binary_output_is_read_to_the_end() {
        let out = RealSystem
            .run(&Cmd::new(
                "sh",
                ["-c", "printf 'a\\377\\376b\\n'; seq 1 20000 | tail -n 1"],
            ))
            .await
            .unwrap();
        assert!(out.stdout.ends_with("20000\n"), "{:?}", out.stdout);
    }

    #[tokio::test]
    async fn output_log_gets_everything_and_memory_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let file = stoke_api::Root::new(dir.path())
            .fs()
            .unwrap()
            .open_log(Path::new("/logs/s.log"), false)
            .unwrap();
        let log = dir.path().join("logs/s.log");
        let out = RealSystem
            .run(
                &Cmd::new("sh", ["-c", "seq 1 20000; echo oops >&2"])
                    .output_log(OutputLog::opened(&log, file)),
            )
            .await
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("1\n2\n") && text.contains("20000\n") && text.contains("oops"));
        assert!(
            out.stdout.len() <= stoke_api::OUTPUT_TAIL_MAX,
            "{}",
            out.stdout.len()
        );
        assert!(out.stdout.ends_with("20000\n"));
        assert_eq!(out.tail(2), "20000\noops");
    }

    /// The `System` writes only to a log opened inside the root; a path alone is not opened.
    #[tokio::test]
    async fn a_log_only_named_is_refused_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let err = RealSystem
            .run(&Cmd::new("true", Vec::<String>::new()).output_log(OutputLog::named(&log)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not opened"), "{err}");
        assert!(!log.exists());
        let err = RealSystem
            .spawn_detached(
                &Cmd::new("true", Vec::<String>::new()),
                &OutputLog::named(&log),
            )
            .unwrap_err();
        assert!(err.to_string().contains("not opened"), "{err}");
        assert!(!log.exists());
    }

    #[tokio::test]
    async fn clean_env_passes_only_what_is_given() {
        let out = RealSystem
            .run(
                &Cmd::new("/usr/bin/env", Vec::<String>::new())
                    .clean_env()
                    .env("A", "1"),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, "A=1\n");
    }

    /// A command cancelled from outside (its module timed out) takes its whole group with it.
    #[tokio::test]
    async fn dropping_a_running_command_kills_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let cmd = Cmd::new("sh", ["-c", script.as_str()]);
        let mut run = Box::pin(RealSystem.run(&cmd));
        // Poll the command until the grandchild has written its pid, then drop it.
        let pid: i32 = loop {
            tokio::select! {
                r = &mut run => panic!("ended early: {r:?}"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
            if let Ok(t) = std::fs::read_to_string(&pidfile)
                && let Ok(p) = t.trim().parse()
            {
                break p;
            }
        };
        drop(run);
        // Reaped by init or still a zombie of ours: either way it must stop running soon.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} outlived its command"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
