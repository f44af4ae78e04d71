//! Finding the ephemeral disks: /sys/block, the mount table, IMDS block-device-mapping
//! and the explicit `devices:` list, all read under the context's root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use stoke_api::unescape_octal;

use serde::Serialize;
use stoke_api::{FileKind, InstanceData, ModuleError, Root, RootDir};

use crate::config::Disks;

/// The model string of EC2 NVMe instance-store disks.
pub const EC2_INSTANCE_STORE_MODEL: &str = "Amazon EC2 NVMe Instance Storage";

/// One whole disk as /sys/block shows it.
#[derive(Clone, Debug, Default)]
pub struct BlockDev {
    pub dev: Option<(u32, u32)>,
    pub model: Option<String>,
    pub size_bytes: Option<u64>,
    /// Partition names (`nvme1n1p1`).
    pub partitions: Vec<String>,
    /// Holders of the disk itself (`md127`, `dm-0`).
    pub holders: Vec<String>,
    /// Holders of any of its partitions.
    pub partition_holders: Vec<String>,
    /// For md/dm devices: what they are built on (disk or partition names).
    pub slaves: Vec<String>,
}

/// The block devices of the machine.
#[derive(Debug, Default)]
pub struct Sys {
    pub disks: BTreeMap<String, BlockDev>,
    /// partition name → disk name.
    pub parent: BTreeMap<String, String>,
    /// device number → disk or partition name.
    pub by_dev: BTreeMap<(u32, u32), String>,
}

/// Larger sysfs/procfs files are not what stoke reads there (an attribute is one line).
const MAX_ATTR: u64 = 64 * 1024;
const MAX_TABLE: u64 = 64 * 1024 * 1024;

/// A sysfs attribute, resolved inside the root (a `--root` tree's /sys cannot lead out).
fn read_trim(rd: &RootDir, p: &Path) -> Option<String> {
    rd.read_string(p, MAX_ATTR)
        .ok()
        .flatten()
        .map(|s| s.trim().to_string())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The entry names of a directory (resolved inside the root), sorted; none if absent.
fn dir_names(rd: &RootDir, p: &Path) -> Vec<String> {
    let mut v: Vec<String> = rd
        .list_dir(p)
        .map(|entries| entries.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default();
    v.sort();
    v
}

impl Sys {
    /// Reads `<root>/sys/block`. A missing directory is an empty machine.
    pub fn read(root: &Root) -> Sys {
        let mut sys = Sys::default();
        let Ok(rd) = root.fs() else {
            return sys;
        };
        let rd = &*rd;
        let base = Path::new("/sys/block");
        for name in dir_names(rd, base) {
            let d = base.join(&name);
            // A hidden block device (an NVMe multipath controller path, `nvme0c0n1`) has no
            // device node and no udev event: its visible head (`nvme0n1`) is the disk.
            if read_trim(rd, &d.join("hidden")).as_deref() == Some("1") {
                continue;
            }
            let mut bd = BlockDev {
                dev: read_trim(rd, &d.join("dev")).and_then(|s| parse_dev(&s)),
                model: read_trim(rd, &d.join("device/model")).filter(|m| !m.is_empty()),
                size_bytes: read_trim(rd, &d.join("size"))
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|sectors| sectors * 512),
                holders: dir_names(rd, &d.join("holders")),
                slaves: dir_names(rd, &d.join("slaves")),
                ..BlockDev::default()
            };
            for sub in dir_names(rd, &d) {
                let pd = d.join(&sub);
                if rd
                    .stat(&pd.join("partition"))
                    .is_ok_and(|st| st.is_some_and(|st| st.kind == FileKind::File))
                {
                    if let Some(dev) = read_trim(rd, &pd.join("dev")).and_then(|s| parse_dev(&s)) {
                        sys.by_dev.insert(dev, sub.clone());
                    }
                    bd.partition_holders
                        .extend(dir_names(rd, &pd.join("holders")));
                    sys.parent.insert(sub.clone(), name.clone());
                    bd.partitions.push(sub);
                }
            }
            if let Some(dev) = bd.dev {
                sys.by_dev.insert(dev, name.clone());
            }
            sys.disks.insert(name, bd);
        }
        sys
    }

    /// The whole disks under a disk, partition, md or dm name (itself included when it is a disk).
    pub fn backing_disks(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            let disk = self.parent.get(&n).cloned().unwrap_or(n);
            if !out.insert(disk.clone()) {
                continue;
            }
            if let Some(bd) = self.disks.get(&disk) {
                todo.extend(bd.slaves.iter().cloned());
            }
        }
        out
    }
}

/// Which disks the running system uses: the root filesystem, other mounts, swap.
#[derive(Debug, Default)]
pub struct Usage {
    pub root_disks: BTreeSet<String>,
    /// disk → mount points (or "swap") it backs.
    pub used: BTreeMap<String, Vec<String>>,
}

impl Usage {
    pub fn read(root: &Root, sys: &Sys) -> Result<Usage, ModuleError> {
        let mut usage = Usage::default();
        let rd = root
            .fs()
            .map_err(|e| ModuleError::io("opening", root.dir(), e))?;
        let mi = Path::new("/proc/self/mountinfo");
        let text = rd
            .read_string(mi, MAX_TABLE)
            .map_err(|e| ModuleError::io("reading", root.host_path(mi), e))?
            .unwrap_or_default();
        let name_of = |dev: Option<(u32, u32)>, source: &str| -> Option<String> {
            if let Some(n) = dev.filter(|d| d.0 != 0).and_then(|d| sys.by_dev.get(&d)) {
                return Some(n.clone());
            }
            // btrfs and friends report 0:N; fall back to the source device's name.
            let src = source.strip_prefix("/dev/")?;
            let canon = rd
                .real_path(Path::new(source))
                .ok()
                .flatten()
                .map(|(h, _)| h);
            let name = canon
                .as_deref()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| src.rsplit('/').next().unwrap_or(src).to_string());
            (sys.disks.contains_key(&name) || sys.parent.contains_key(&name)).then_some(name)
        };
        for m in stoke_api::mountinfo::parse(&text) {
            let Some(name) = name_of(m.dev, &m.source) else {
                continue;
            };
            for disk in sys.backing_disks(&name) {
                if m.mount_point == "/" {
                    usage.root_disks.insert(disk.clone());
                }
                usage
                    .used
                    .entry(disk)
                    .or_default()
                    .push(m.mount_point.clone());
            }
        }
        let swaps = Path::new("/proc/swaps");
        let text = rd
            .read_string(swaps, MAX_TABLE)
            .map_err(|e| ModuleError::io("reading", root.host_path(swaps), e))?
            .unwrap_or_default();
        for line in text.lines().skip(1) {
            let Some(src) = line.split_whitespace().next() else {
                continue;
            };
            if let Some(name) = name_of(None, &unescape_octal(src)) {
                for disk in sys.backing_disks(&name) {
                    usage.used.entry(disk).or_default().push("swap".into());
                }
            }
        }
        Ok(usage)
    }
}

/// A disk stoke may use.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Candidate {
    /// `/dev/<kernel name>` as the instance sees it.
    pub device: String,
    #[serde(skip)]
    pub name: String,
    /// Why it was chosen: "nvme instance store", "imds ephemeral0", "config".
    pub origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Mount points the whole disk is mounted at (a JBOD/single disk mounted by fstab).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounted_at: Vec<String>,
    /// An md array holding the disk; whether it is stoke's is checked when running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md_holder: Option<String>,
}

impl Candidate {
    pub fn is_nvme(&self) -> bool {
        self.name.starts_with("nvme")
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Excluded {
    pub device: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Discovery {
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
    /// IMDS `ephemeralN` → `/dev/<name>` for those present.
    pub ephemeral: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Why a disk cannot be used, or None. A whole disk mounted directly is still
/// usable: it is a JBOD/single filesystem from an earlier boot, kept and never touched.
fn unusable(name: &str, bd: &BlockDev, usage: &Usage) -> Option<String> {
    if usage.root_disks.contains(name) {
        return Some("holds the root filesystem".into());
    }
    if let Some(h) = bd.holders.iter().find(|h| !h.starts_with("md")) {
        return Some(format!("in use by {h} (device-mapper/LVM)"));
    }
    if let Some(h) = bd.partition_holders.first() {
        return Some(format!("a partition is in use by {h}"));
    }
    if !bd.partitions.is_empty() {
        let used: Vec<&String> = usage.used.get(name).into_iter().flatten().collect();
        if !used.is_empty() {
            return Some(format!(
                "its partitions are in use ({})",
                used.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if bd.holders.len() > 1 {
        return Some(format!(
            "held by several devices ({})",
            bd.holders.join(", ")
        ));
    }
    None
}

fn candidate(name: &str, bd: &BlockDev, origin: &str, usage: &Usage) -> Candidate {
    let mounted_at = if bd.partitions.is_empty() && bd.holders.is_empty() {
        usage.used.get(name).cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    Candidate {
        device: format!("/dev/{name}"),
        name: name.to_string(),
        origin: origin.to_string(),
        model: bd.model.clone(),
        size_bytes: bd.size_bytes,
        mounted_at,
        md_holder: bd.holders.iter().find(|h| h.starts_with("md")).cloned(),
    }
}

/// Device names in natural order (shared with `volumes`).
pub use stoke_api::probe::natural_key;

/// Kernel names an IMDS device name may have: `sdb` → sdb, xvdb, vdb.
fn imds_names(dev: &str) -> Vec<String> {
    let d = dev.trim().trim_start_matches("/dev/");
    let mut v = vec![d.to_string()];
    if let Some(rest) = d.strip_prefix("sd") {
        v.push(format!("xvd{rest}"));
        v.push(format!("vd{rest}"));
    } else if let Some(rest) = d.strip_prefix("xvd") {
        v.push(format!("sd{rest}"));
        v.push(format!("vd{rest}"));
    }
    v
}

/// The disk an IMDS device name (`sdb`) is on this machine, if any.
pub fn imds_disk(sys: &Sys, dev: &str) -> Option<String> {
    imds_names(dev)
        .into_iter()
        .find(|n| sys.disks.contains_key(n))
}

/// The NVMe instance-store disks (by the kernel's model string), in natural order.
pub fn instance_store(sys: &Sys) -> Vec<String> {
    let mut v: Vec<String> = sys
        .disks
        .iter()
        .filter(|(n, bd)| {
            n.starts_with("nvme") && bd.model.as_deref() == Some(EC2_INSTANCE_STORE_MODEL)
        })
        .map(|(n, _)| n.clone())
        .collect();
    v.sort_by_key(|n| natural_key(n));
    v
}

/// Whether a string has glob metacharacters.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style match of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`. The `glob`
/// crate's matcher stops as soon as the rest cannot match, so a hostile pattern such as
/// `*a*a*a*a*b` costs polynomial time, never the exponential backtracking that once hung a stage.
/// An invalid pattern matches nothing.
pub fn glob_match(pat: &str, s: &str) -> bool {
    glob::Pattern::new(pat).is_ok_and(|p| p.matches(s))
}

/// Expands an absolute glob (instance path) under the root; sorted naturally.
fn expand_glob(root: &Root, pattern: &str) -> Vec<String> {
    let Ok(rd) = root.fs() else {
        return Vec::new();
    };
    let mut paths = vec![String::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for p in &paths {
            if is_glob(comp) {
                let dir = Path::new(if p.is_empty() { "/" } else { p.as_str() });
                for name in dir_names(&rd, dir) {
                    if !name.starts_with('.') && glob_match(comp, &name) {
                        next.push(format!("{p}/{name}"));
                    }
                }
            } else {
                next.push(format!("{p}/{comp}"));
            }
        }
        paths = next;
    }
    paths.retain(|p| rd.exists(Path::new(p)));
    paths.sort_by_key(|p| natural_key(p));
    paths
}

/// The kernel name behind an instance path (following /dev/disk/by-id links).
pub fn kernel_name(root: &Root, path: &str) -> Option<String> {
    let (canon, _) = root.fs().ok()?.real_path(Path::new(path)).ok()??;
    canon.file_name().map(|n| n.to_string_lossy().into_owned())
}

pub fn discover(
    root: &Root,
    instance: &InstanceData,
    cfg: &Disks,
) -> Result<Discovery, ModuleError> {
    let sys = Sys::read(root);
    let usage = Usage::read(root, &sys)?;
    let mut out = Discovery::default();

    // IMDS ephemeralN, needed for `mounts:` name resolution even with an explicit list.
    let mut imds: Vec<(&String, &String)> = instance
        .block_device_mapping
        .iter()
        .filter(|(k, _)| k.starts_with("ephemeral"))
        .collect();
    imds.sort_by_key(|(k, _)| natural_key(k));
    let mut imds_found = Vec::new();
    for (key, dev) in imds {
        match imds_disk(&sys, dev) {
            Some(name) => {
                out.ephemeral.insert(key.clone(), format!("/dev/{name}"));
                imds_found.push((key.clone(), name));
            }
            None => out.notes.push(format!(
                "IMDS {key} = {dev}: no such disk here (on Nitro instances it is an NVMe disk)"
            )),
        }
    }

    let mut seen = BTreeSet::new();
    if let Some(devices) = &cfg.devices {
        for entry in devices {
            let paths = if is_glob(entry) {
                let p = expand_glob(root, entry);
                if p.is_empty() {
                    out.notes
                        .push(format!("devices glob {entry:?} matched nothing"));
                }
                p
            } else if !root.fs().is_ok_and(|rd| rd.exists(Path::new(entry))) {
                return Err(ModuleError::Invalid(format!(
                    "disks.devices: {entry} does not exist"
                )));
            } else {
                vec![entry.clone()]
            };
            for path in paths {
                let name = kernel_name(root, &path).unwrap_or_default();
                let Some(bd) = sys.disks.get(&name) else {
                    let why = match sys.parent.get(&name) {
                        Some(disk) => format!("is a partition of {disk}; give whole disks"),
                        None => "is not a whole disk (not in /sys/block)".to_string(),
                    };
                    return Err(ModuleError::Invalid(format!("disks.devices: {path} {why}")));
                };
                if let Some(why) = unusable(&name, bd, &usage) {
                    return Err(ModuleError::Refused(format!("{path} ({name}) {why}")));
                }
                if seen.insert(name.clone()) {
                    out.candidates.push(candidate(&name, bd, "config", &usage));
                }
            }
        }
        return Ok(out);
    }

    let mut auto: Vec<(String, String)> = instance_store(&sys)
        .into_iter()
        .map(|n| (n, "nvme instance store".to_string()))
        .collect();
    auto.extend(
        imds_found
            .into_iter()
            .map(|(key, name)| (name, format!("imds {key}"))),
    );
    for (name, origin) in auto {
        let Some(bd) = sys.disks.get(&name) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let reason = unusable(&name, bd, &usage)
            .or_else(|| (!bd.partitions.is_empty()).then(|| "has partitions".to_string()));
        match reason {
            Some(reason) => out.excluded.push(Excluded {
                device: format!("/dev/{name}"),
                reason,
            }),
            None => out.candidates.push(candidate(&name, bd, &origin, &usage)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn hostile_globs_are_answered_at_once() {
        // With exponential backtracking this one call would not return for hours.
        let name = "a".repeat(64);
        assert!(!glob_match(&format!("{}b", "*a".repeat(32)), &name));
        assert!(glob_match(&format!("{}*", "*a".repeat(32)), &name));
    }

    #[test]
    fn globs() {
        assert!(glob_match("nvme*n1", "nvme12n1"));
        assert!(glob_match("xvd[b-e]", "xvdc"));
        assert!(!glob_match("xvd[b-e]", "xvdf"));
        assert!(glob_match("xvd[!a]", "xvdb"));
        assert!(!glob_match("xvd[!a]", "xvda"));
        assert!(glob_match("vd?", "vdb"));
        assert!(!glob_match("vd?", "vdb1"));
    }

    #[test]
    fn hidden_block_devices_are_not_disks() {
        let dir = tempfile::tempdir().unwrap();
        let put = |p: &str, text: &str| {
            let path = dir.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        put("sys/block/nvme0n1/dev", "259:0\n");
        put("sys/block/nvme0n1/hidden", "0\n");
        put("sys/block/nvme0c0n1/dev", "259:1\n");
        put("sys/block/nvme0c0n1/hidden", "1\n");
        let sys = Sys::read(&Root::new(dir.path()));
        assert_eq!(sys.disks.keys().collect::<Vec<_>>(), ["nvme0n1"]);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["nvme10n1", "nvme2n1", "nvme1n1"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["nvme1n1", "nvme2n1", "nvme10n1"]);
    }
}
