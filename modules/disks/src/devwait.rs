//! A configured `/dev/disk/by-*` link may still be missing after udev's queue has settled
//! (a device that appears late). Wait for the missing ones, bounded by `settle_timeout`,
//! before looking at disks.

use std::time::Duration;

use stoke_api::{Cmd, Context, tools};

use crate::config::Disks;
use crate::discover::is_glob;

/// The configured device paths (not globs) that do not exist yet.
pub fn missing(ctx: &Context, cfg: &Disks) -> Vec<String> {
    cfg.devices
        .iter()
        .flatten()
        .filter(|d| !is_glob(d) && !ctx.path(d.as_str()).exists())
        .cloned()
        .collect()
}

/// Waits for `paths` with `udevadm wait` (systemd 251+). Returns a warning when that did not
/// work; what is still missing is then reported by discovery. An older udevadm has no `wait`:
/// the module's `udevadm settle` before this is then all the waiting there is.
pub async fn wait_for(ctx: &Context, paths: &[String], secs: u64) -> Option<String> {
    let timeout = Duration::from_secs(secs + 5);
    let udevadm = ctx.tool(tools::UDEVADM);
    let mut args = vec!["wait".to_string(), format!("--timeout={secs}")];
    args.extend(
        paths
            .iter()
            .map(|p| ctx.path(p.as_str()).display().to_string()),
    );
    let wait = Cmd::new(&udevadm, args).timeout(timeout);
    let failed = match ctx.system.run(&wait).await {
        Ok(out) if out.success() => return None,
        Ok(out) => format!("`{}` {}", wait.display(), out.status_text()),
        Err(e) => format!("`{}`: {e}", wait.display()),
    };
    Some(format!("waiting for {}: {failed}", paths.join(", ")))
}
