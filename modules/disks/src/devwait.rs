//! What the module waits for before it looks at disks: udev's events for the devices it may
//! use, not udev's whole queue. stoke-local does not wait for udevd, and on a reboot udev may
//! still be assembling our array one member at a time (`mdadm --incremental` runs in each
//! member's event): seen half-done, the array would be refused. Once every disk the module
//! may use has had its event handled, every member's `mdadm --incremental` has run.

use stoke_api::{Context, udev};

use crate::config::Disks;
use crate::discover::{Sys, imds_disk, instance_store, is_glob, kernel_name};

/// The devices whose udev events come first (instance paths):
/// - configured paths (`/dev/disk/by-id/...` links udev makes), and the partitions of those
///   that are there already;
/// - with a glob in `devices`, every disk and partition (but loop, ram and zram devices):
///   which links will match is known only once udev has made them;
/// - discovered disks (NVMe instance store, IMDS `ephemeralN`) and their partitions.
///
/// Partitions count because a partition in an array or volume group makes its disk unusable.
/// Without udev, only the configured paths that are still missing (nobody else makes them).
pub fn devices(ctx: &Context, cfg: &Disks) -> Vec<String> {
    let sys = Sys::read(&ctx.root);
    let with_parts = |name: &str| {
        std::iter::once(name.to_string())
            .chain(
                sys.disks
                    .get(name)
                    .into_iter()
                    .flat_map(|d| d.partitions.clone()),
            )
            .map(|n| format!("/dev/{n}"))
            .collect::<Vec<_>>()
    };
    let present = udev::present(ctx);
    let mut out = Vec::new();
    match &cfg.devices {
        Some(list) => {
            for d in list.iter().filter(|d| !is_glob(d)) {
                if !present {
                    if !ctx.path(d.as_str()).exists() {
                        out.push(d.clone());
                    }
                    continue;
                }
                out.push(d.clone());
                if let Some(name) = kernel_name(&ctx.root, d) {
                    out.extend(with_parts(&name).into_iter().skip(1));
                }
            }
            if present && list.iter().any(|d| is_glob(d)) {
                for name in sys.disks.keys() {
                    if !["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
                        out.extend(with_parts(name));
                    }
                }
            }
        }
        None if present => {
            let imds = ctx
                .instance
                .block_device_mapping
                .iter()
                .filter(|(k, _)| k.starts_with("ephemeral"))
                .filter_map(|(_, dev)| imds_disk(&sys, dev));
            for name in instance_store(&sys).into_iter().chain(imds) {
                out.extend(with_parts(&name));
            }
        }
        None => {}
    }
    out.sort();
    out.dedup();
    out
}
