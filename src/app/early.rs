//! Work the local stage starts before the seed is read: it needs no user-data, changes
//! nothing a module could see, and can never fail the boot (docs/dev/design.md, "Early
//! start").
//!
//! Today: the kernel modules of the filesystems the image layers' configuration will mount
//! (`disks:` makes and mounts its filesystem, `mounts:` entries name theirs). The first
//! mount of xfs makes the kernel load it (~1 s under TCG, on the critical path of `mounts`);
//! loaded while the NoCloud volume is read, the mount finds it there. If user-data then
//! changes the filesystem, the module loaded early is only unused memory: the mount loads
//! what it needs as it always did.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use stoke_api::{Cmd, System, tools};

/// Block filesystems whose module may be loaded early. A name outside this list (a network
/// filesystem, `auto`, `swap`, a typo) is left to the mount. Not vfat nor iso9660: the NoCloud
/// volume's mount, made while the early load runs, may need them, and a mount during the load
/// of its filesystem's module fails.
const PRELOADABLE: &[&str] = &["xfs", "ext4", "ext3", "ext2", "btrfs", "f2fs"];

/// Bound for each `modprobe`: a module load that hangs must not keep the stage's process.
const MODPROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The filesystems the configuration `merged` (the image layers', merged) will mount:
/// `disks.filesystem` (default xfs) when a `disks:` section is there, the module is not
/// turned off (`mode: off`, `mount: false`, `modules: {disks: {enabled: false}}`); the
/// type field of each `mounts:` entry. Only names in [`PRELOADABLE`].
pub fn filesystems(merged: &Map<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let enabled = |module: &str| {
        merged
            .get("modules")
            .and_then(|m| m.get(module))
            .and_then(|o| o.get("enabled"))
            .and_then(Value::as_bool)
            != Some(false)
    };
    if let Some(d) = merged.get("disks").filter(|d| d.is_object())
        && enabled("disks")
        && d.get("mode").and_then(Value::as_str) != Some("off")
        && d.get("mount").and_then(Value::as_bool) != Some(false)
    {
        out.insert(
            d.get("filesystem")
                .and_then(Value::as_str)
                .unwrap_or("xfs")
                .to_string(),
        );
    }
    if enabled("mounts")
        && let Some(entries) = merged.get("mounts").and_then(Value::as_array)
    {
        for e in entries {
            if let Some(fstype) = e.as_array().and_then(|f| f.get(2)).and_then(Value::as_str) {
                out.insert(fstype.to_string());
            }
        }
    }
    out.retain(|f| PRELOADABLE.contains(&f.as_str()));
    out
}

/// Loads each filesystem's module (`modprobe -q -- fs-<type>`, the alias the kernel asks
/// for at mount), one after the other, each bounded. Returns what failed, for a debug line:
/// a failure only means the mount loads it (or fails) as it would have anyway.
pub async fn preload(
    system: Arc<dyn System>,
    tool_paths: &BTreeMap<String, String>,
    filesystems: &BTreeSet<String>,
) -> Vec<String> {
    let modprobe = tool_paths
        .get(tools::MODPROBE)
        .cloned()
        .unwrap_or_else(|| tools::MODPROBE.to_string());
    let mut failed = Vec::new();
    for fs in filesystems {
        let cmd = Cmd::new(modprobe.as_str(), ["-q", "--", &format!("fs-{fs}")])
            .timeout(MODPROBE_TIMEOUT);
        match system.run(&cmd).await {
            Ok(out) if out.success() => {}
            Ok(out) => failed.push(format!("{fs}: {}", out.status_text())),
            Err(e) => failed.push(format!("{fs}: {e}")),
        }
    }
    failed
}

/// Starts [`preload`] on the runtime; the stage awaits the handle before its first module
/// starts: while a load is in flight, a mount of that filesystem would fail (the kernel's own
/// `modprobe` counts a module still loading as loaded), so no mount may overlap it.
pub fn start(
    system: Arc<dyn System>,
    tool_paths: BTreeMap<String, String>,
    merged: &Map<String, Value>,
) -> Option<tokio::task::JoinHandle<()>> {
    let fs = filesystems(merged);
    if fs.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let started = std::time::Instant::now();
        let failed = preload(system, &tool_paths, &fs).await;
        tracing::debug!(
            "early: filesystem modules {} loaded in {:.1} ms{}",
            fs.iter().cloned().collect::<Vec<_>>().join(", "),
            started.elapsed().as_secs_f64() * 1000.0,
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (not loaded: {}; the mount will)", failed.join("; "))
            }
        );
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoke_api::CmdOutput;
    use stoke_api::fake::FakeSystem;

    fn merged(yaml: &str) -> Map<String, Value> {
        match serde_saphyr::from_str::<Value>(yaml).unwrap() {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn names(set: BTreeSet<String>) -> Vec<String> {
        set.into_iter().collect()
    }

    #[test]
    fn disks_and_mounts_name_the_filesystems() {
        assert_eq!(
            names(filesystems(&merged(
                "disks:\n  devices: [/dev/vdb]\nmounts:\n  - [/dev/vdc, /data, ext4]\n  - [/dev/vdd, /x]\n"
            ))),
            ["ext4", "xfs"]
        );
        assert_eq!(
            names(filesystems(&merged("disks:\n  filesystem: ext4\n"))),
            ["ext4"]
        );
    }

    #[test]
    fn nothing_is_loaded_for_what_will_not_be_mounted() {
        for yaml in [
            "hostname: x\n",
            "disks:\n  mode: off\n",
            "disks:\n  mount: false\n",
            "disks: {}\nmodules:\n  disks: {enabled: false}\n",
            "mounts:\n  - [/dev/vdc, /data, auto]\n  - [server:/x, /nfs, nfs]\n  - [/swap, none, swap]\n  - [/dev/vde, /boot/efi, vfat]\n",
            "mounts:\n  - [/dev/vdc, /data, xfs]\nmodules:\n  mounts: {enabled: false}\n",
        ] {
            assert!(filesystems(&merged(yaml)).is_empty(), "{yaml}");
        }
    }

    #[tokio::test]
    async fn preload_runs_modprobe_through_the_tools_table() {
        let fake = FakeSystem::new();
        let tools = BTreeMap::from([(tools::MODPROBE.to_string(), "/sbin/modprobe".to_string())]);
        let fs = BTreeSet::from(["xfs".to_string(), "ext4".to_string()]);
        let failed = preload(fake.clone(), &tools, &fs).await;
        assert!(failed.is_empty());
        assert_eq!(
            fake.commands(),
            [
                "/sbin/modprobe -q -- fs-ext4",
                "/sbin/modprobe -q -- fs-xfs"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_load_is_reported_and_the_others_still_run() {
        let fake = FakeSystem::new();
        fake.on("modprobe -q -- fs-btrfs", CmdOutput::failed(1, "not found"));
        let fs = BTreeSet::from(["btrfs".to_string(), "xfs".to_string()]);
        let failed = preload(fake.clone(), &BTreeMap::new(), &fs).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].starts_with("btrfs: "), "{failed:?}");
        assert_eq!(fake.commands().len(), 2);
    }
}
