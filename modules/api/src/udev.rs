//! Waiting for udev. stoke-local starts once udev's coldplug is triggered, not once udevd
//! is up and has handled it: the modules that look at block devices wait for udev
//! themselves, and only for the devices they use, so the rest of the stage (host keys above
//! all) waits for nothing and they do not wait for the rest of udev's queue.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Cmd, Context, tools};

/// How often a wait looks again: a few file checks each time.
const POLL: Duration = Duration::from_millis(20);

/// Whether `guest` exists, resolved inside the root.
fn exists(ctx: &Context, guest: &str) -> bool {
    ctx.root.fs().is_ok_and(|rd| rd.exists(Path::new(guest)))
}

/// Whether udev runs on this machine: its control socket exists. It is socket-activated,
/// so it is there before udevd itself has started.
pub fn present(ctx: &Context) -> bool {
    exists(ctx, "/run/udev/control")
}

/// A block device's number, from its node (instance path; links followed), else from sysfs
/// by the kernel name the path leads to (`/sys/class/block/<name>/dev`).
pub fn devnum(ctx: &Context, path: &str) -> Option<(u32, u32)> {
    // Resolved inside the root: `host` is the file itself, no link left for the host to follow.
    let (host, _) = ctx.root.fs().ok()?.real_path(Path::new(path)).ok()??;
    let meta = std::fs::symlink_metadata(&host).ok()?;
    if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        return Some((u32::try_from(major).ok()?, u32::try_from(minor).ok()?));
    }
    let name = host.file_name()?.to_owned();
    let name = name.to_string_lossy();
    ["/sys/class/block", "/sys/block"].iter().find_map(|dir| {
        let attr = format!("{dir}/{name}/dev");
        let text = ctx
            .root
            .fs()
            .ok()?
            .read_string(Path::new(&attr), 4096)
            .ok()??;
        let (a, b) = text.trim().split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
}

/// Whether udevd has handled an event of the block device `dev`: its database entry
/// (`/run/udev/data/b<major>:<minor>`) exists. udevd writes it once all the device's rules
/// have run — `IMPORT{program}` ones included, such as `mdadm --incremental` for an array
/// member — and its links are made; libudev calls a device with an entry initialized.
pub fn initialized(ctx: &Context, dev: (u32, u32)) -> bool {
    exists(ctx, &format!("/run/udev/data/b{}:{}", dev.0, dev.1))
}

/// Whether the device at `path` (instance path) is there and udevd has handled it.
pub fn ready(ctx: &Context, path: &str) -> bool {
    devnum(ctx, path).is_some_and(|d| initialized(ctx, d))
}

/// Waits until `pending` returns nothing, looking again every 20 ms, for at most `secs`.
/// Returns what was still pending then. No process is started: a look is a few `stat`s.
pub async fn wait_until<F>(secs: u64, mut pending: F) -> Result<(), Vec<String>>
where
    F: FnMut() -> Vec<String>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = pending();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for udev's events of `devices` (instance paths: nodes or `/dev/disk/by-*` links),
/// bounded by `secs`: returns once each is there and initialized. The other devices' coldplug
/// events (often most of the queue) are not waited for.
pub async fn wait(ctx: &Context, devices: &[String], secs: u64) -> Result<(), String> {
    wait_until(secs, || {
        devices.iter().filter(|d| !ready(ctx, d)).cloned().collect()
    })
    .await
    .map_err(|left| {
        format!(
            "no udev event handled within {secs} s for {}",
            left.join(", ")
        )
    })
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
