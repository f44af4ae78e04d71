//! What the module waits for before it looks at disks: udev's events for the devices it may
//! use, not udev's whole queue. stoke-local does not wait for udevd, and on a reboot udev may
//! still be assembling our array one member at a time (`mdadm --incremental` runs in each
//! member's event): seen half-done, the array would be refused. Once every disk the module
//! may use has had its event handled, every member's `mdadm --incremental` has run.

use stoke_api::{Context, udev};

use crate::config::Disks;
use crate::discover::{Sys, imds_disk, instance_store, is_glob, kernel_name};

/// The devices whose udev events the module waits for, and those of them still to come
/// (instance paths):
/// - configured paths (`/dev/disk/by-id/...` links udev makes), and the partitions of those
///   that are there;
/// - with a glob in `devices`, every disk and partition (but loop, ram and zram devices):
///   which links will match is known only once udev has made them;
/// - discovered disks (NVMe instance store, IMDS `ephemeralN`) and their partitions.
///
/// Partitions count because a partition in an array or volume group makes its disk unusable.
/// Without udev, only the configured paths that do not exist yet (the kernel may still add
/// the device).
pub fn watched(ctx: &Context, cfg: &Disks) -> (Vec<String>, Vec<String>) {
    let (mut all, mut out) = (Vec::new(), Vec::new());
    if !udev::present(ctx) {
        for d in cfg.devices.iter().flatten().filter(|d| !is_glob(d)) {
            all.push(d.clone());
            if !ctx
                .root
                .fs()
                .is_ok_and(|rd| rd.exists(std::path::Path::new(d)))
            {
                out.push(d.clone());
            }
        }
        return (all, out);
    }
    let sys = Sys::read(&ctx.root);
    let mut names = Vec::new();
    match &cfg.devices {
        Some(list) => {
            for d in list.iter().filter(|d| !is_glob(d)) {
                all.push(d.clone());
                match kernel_name(&ctx.root, d) {
                    Some(name) if udev::ready(ctx, d) => names.push(name),
                    _ => out.push(d.clone()),
                }
            }
            if list.iter().any(|d| is_glob(d)) {
                names.extend(
                    sys.disks
                        .keys()
                        .filter(|n| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
                        .cloned(),
                );
            }
        }
        None => {
            names.extend(instance_store(&sys));
            names.extend(
                ctx.instance
                    .block_device_mapping
                    .iter()
                    .filter(|(k, _)| k.starts_with("ephemeral"))
                    .filter_map(|(_, dev)| imds_disk(&sys, dev)),
            );
        }
    }
    for name in names {
        let Some(disk) = sys.disks.get(&name) else {
            continue;
        };
        let parts = disk
            .partitions
            .iter()
            .map(|p| (p.as_str(), part_dev(&sys, p)));
        for (n, dev) in std::iter::once((name.as_str(), disk.dev)).chain(parts) {
            all.push(format!("/dev/{n}"));
            if !dev.is_some_and(|d| udev::initialized(ctx, d)) {
                out.push(format!("/dev/{n}"));
            }
        }
    }
    for v in [&mut all, &mut out] {
        v.sort();
        v.dedup();
    }
    (all, out)
}

fn part_dev(sys: &Sys, part: &str) -> Option<(u32, u32)> {
    sys.by_dev
        .iter()
        .find_map(|(dev, name)| (name == part).then_some(*dev))
}

/// Waits until nothing is pending, bounded by `secs`; the error names what still is.
pub async fn wait(ctx: &Context, cfg: &Disks, secs: u64) -> Result<(), String> {
    udev::wait_until(secs, || watched(ctx, cfg).1)
        .await
        .map_err(|left| {
            format!(
                "no udev event handled within {secs} s for {}",
                left.join(", ")
            )
        })
}
