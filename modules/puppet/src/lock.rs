//! Waiting, boundedly, for a Puppet run that already holds the agent lock.
//!
//! The lock file holds the pid of the run. Like Puppet itself, a lock whose pid
//! is not running (or is running something that is not Puppet, as happens when a
//! lock file was baked into an image) is stale and does not make us wait.

use std::time::Duration;

// tokio's clock (not std's), so tests can run the bounded wait with paused time.
use tokio::time::Instant;

use stoke_api::{Context, ModuleError};

/// Puppet's agent lock: AIO packages, then Debian's puppet-agent.
pub const DEFAULT_LOCK_FILES: &[&str] = &[
    "/opt/puppetlabs/puppet/cache/state/agent_catalog_run.lock",
    "/var/cache/puppet/state/agent_catalog_run.lock",
];

/// How often the lock is looked at while waiting.
const POLL: Duration = Duration::from_secs(1);

/// A live lock: which file (instance path) and the pid in it.
#[derive(Debug, PartialEq, Eq)]
pub struct Holder {
    pub file: String,
    pub pid: u32,
}

/// The first of `files` (instance paths) held by a live process.
pub fn holder(ctx: &Context, files: &[String]) -> Result<Option<Holder>, ModuleError> {
    for file in files {
        let Some(text) = ctx
            .fs()?
            .read_string(std::path::Path::new(file), 64 * 1024)
            .map_err(|e| ModuleError::io("reading", ctx.host_path(file), e))?
        else {
            continue;
        };
        // Puppet treats a lock without a pid as stale; so do we.
        let Ok(pid) = text.trim().parse::<u32>() else {
            continue;
        };
        if pid_is_puppet(ctx, pid) {
            return Ok(Some(Holder {
                file: file.clone(),
                pid,
            }));
        }
    }
    Ok(None)
}

/// True when `pid` runs and, where its command line is readable, mentions puppet.
fn pid_is_puppet(ctx: &Context, pid: u32) -> bool {
    let Ok(rd) = ctx.root.fs() else {
        return false;
    };
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    if !rd.is_dir(&proc_dir) {
        return false;
    }
    match rd.read_regular(&proc_dir.join("cmdline"), 1024 * 1024) {
        Ok(Some(cmdline)) => String::from_utf8_lossy(&cmdline).contains("puppet"),
        // Unreadable: assume it is the holder rather than run twice.
        Ok(None) | Err(_) => true,
    }
}

/// Waits until no live process holds any of `files`, at most `bound`.
/// Returns how long it waited.
pub async fn wait(
    ctx: &Context,
    files: &[String],
    bound: Duration,
) -> Result<Duration, ModuleError> {
    let start = Instant::now();
    loop {
        let Some(h) = holder(ctx, files)? else {
            return Ok(start.elapsed());
        };
        let waited = start.elapsed();
        if waited >= bound {
            return Err(ModuleError::Refused(format!(
                "another Puppet run (pid {}, lock file {}) is still in progress after waiting {} s \
                 (puppet.wait_for_lock: {} s); not starting a second run",
                h.pid,
                h.file,
                waited.as_secs(),
                bound.as_secs()
            )));
        }
        tokio::time::sleep(POLL.min(bound - waited)).await;
    }
}
