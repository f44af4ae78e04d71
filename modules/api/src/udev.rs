//! Waiting for udev. stoke-local starts once udev's coldplug is triggered, not once udevd
//! is up and has handled it: the modules that look at block devices wait for udev's queue
//! themselves, so the rest of the stage (host keys above all) does not wait for udevd.

use std::time::Duration;

use crate::{Cmd, Context, tools};

/// Whether udev runs on this machine: its control socket exists. It is socket-activated,
/// so it is there before udevd itself has started.
pub fn present(ctx: &Context) -> bool {
    ctx.path("/run/udev/control").exists()
}

/// `udevadm settle`, bounded by `secs`: returns once udev's event queue is empty. udevd
/// answers settle's ping only after reading every pending kernel event, so the events
/// queued by the coldplug trigger (e.g. `mdadm --incremental` for each member of an
/// array) are all waited for, even when udevd was still starting.
pub async fn settle(ctx: &Context, secs: u64) -> Result<(), String> {
    let cmd = Cmd::new(
        ctx.tool(tools::UDEVADM),
        ["settle".to_string(), format!("--timeout={secs}")],
    )
    .timeout(Duration::from_secs(secs + 5));
    match ctx.system.run(&cmd).await {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!("`{}` {}", cmd.display(), out.status_text())),
        Err(e) => Err(format!("`{}`: {e}", cmd.display())),
    }
}
