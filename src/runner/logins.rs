//! Logins wait for keys. `stoke-hold-logins.target` (wanted by `stoke.target`) is ordered after
//! the network stage and before sshd and user sessions, so by default logins wait for the network
//! stage: on a new EC2 instance the host and authorized keys are only known there. When the local
//! stage finds that no key module waits for a later stage (the keys came from a NoCloud seed, or
//! this instance's keys are already in place), it drops the hold: sshd then starts as soon as the
//! local stage is done, not after `network-online.target` and the network stage. If the release
//! fails, logins just wait as by default.

use std::time::Duration;

use stoke_api::{Cmd, Root, System, tools};

pub const HOLD_UNIT: &str = "stoke-hold-logins.target";

/// The command that drops the hold. `--no-block`: stoke-local must not wait on systemd's queue.
pub fn release_cmd(systemctl: &str) -> Cmd {
    Cmd::new(systemctl, ["stop", "--no-block", HOLD_UNIT]).timeout(Duration::from_secs(10))
}

/// Drops the hold when systemd is the init system (under `--root`, when the sandbox has
/// `run/systemd/system`, the command is recorded instead).
pub async fn release(system: &dyn System, root: &Root, systemctl: Option<&str>) {
    if !root
        .fs()
        .is_ok_and(|rd| rd.is_dir(std::path::Path::new("/run/systemd/system")))
    {
        tracing::debug!("logins: not booted with systemd; no hold to release");
        return;
    }
    let cmd = release_cmd(systemctl.unwrap_or(tools::SYSTEMCTL));
    match system.run(&cmd).await {
        Ok(out) if out.success() => {
            tracing::info!("logins: no key module waits for a later stage; sshd need not wait")
        }
        Ok(out) => tracing::warn!(
            "logins: `{}` {}: {}; logins wait for the network stage",
            cmd.display(),
            out.status_text(),
            out.stderr.trim()
        ),
        Err(e) => tracing::warn!("logins: {e}; logins wait for the network stage"),
    }
}
