//! Waiting for udev. stoke-local starts once udev's coldplug is triggered, not once udevd
//! is up and has handled it: the modules that look at block devices wait for udev
//! themselves, and only for the devices they use, so the rest of the stage (host keys above
//! all) waits for nothing and they do not wait for the rest of udev's queue.

use std::time::Duration;

use crate::{Cmd, Context, tools};

/// Whether udev runs on this machine: its control socket exists. It is socket-activated,
/// so it is there before udevd itself has started.
pub fn present(ctx: &Context) -> bool {
    ctx.path("/run/udev/control").exists()
}

/// `udevadm wait` for `devices` (device nodes, `/dev/disk/by-*` links, `/sys/class/block/*`
/// paths; instance paths), bounded by `secs`: returns once udevd has handled an event of
/// each. udevd marks a device initialized only after all its rules ran — `IMPORT{program}`
/// ones included, such as `mdadm --incremental` for an array member — and its links were
/// made. The other devices' coldplug events (often most of the queue) are not waited for.
/// Where udevadm has no `wait` verb (systemd before 251) the whole queue is settled instead.
pub async fn wait(ctx: &Context, devices: &[String], secs: u64) -> Result<(), String> {
    if devices.is_empty() {
        return Ok(());
    }
    let mut args = vec!["wait".to_string(), format!("--timeout={secs}")];
    args.extend(devices.iter().map(|d| ctx.path(d).display().to_string()));
    let cmd = Cmd::new(ctx.tool(tools::UDEVADM), args).timeout(Duration::from_secs(secs + 5));
    match ctx.system.run(&cmd).await {
        Ok(out) if out.success() => Ok(()),
        Ok(out) if out.stderr.to_ascii_lowercase().contains("unknown command") => {
            settle(ctx, secs).await
        }
        Ok(out) => Err(format!("`{}` {}", cmd.display(), out.status_text())),
        Err(e) => Err(format!("`{}`: {e}", cmd.display())),
    }
}

/// `udevadm settle`, bounded by `secs`: returns once udev's event queue is empty. udevd
/// answers settle's ping only after reading every pending kernel event, so the events
/// queued by the coldplug trigger are all waited for, even when udevd was still starting.
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
