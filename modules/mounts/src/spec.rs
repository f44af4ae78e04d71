//! What the first field of a `mounts:` entry names, read as cloud-init's cc_mounts reads it:
//! `ephemeral` is `ephemeral0`; `ephemeralN`/`ebsN` go through the `disks` report or the
//! instance's block-device-mapping (IMDS `sdb` tried as `sdb`, `xvdb`, `vdb`); a
//! `device_aliases` name is its target; `NAME.N` is partition N of NAME; a kernel device
//! name without a partition means its first partition when it has one. stoke also reads
//! `/dev/ephemeralN` (cloud-init's own example writes it so) as `ephemeralN`.

use std::collections::BTreeMap;

use stoke_api::Context;

/// What a spec turned out to name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Named {
    /// A block device by its kernel name (instance path, e.g. `/dev/xvdb1`): it exists
    /// now, or the entry is dropped (a kernel name that is missing at boot is not coming).
    Kernel(String),
    /// A name that can appear later and is written as it is: `/dev/disk/by-*`,
    /// `/dev/mapper/*`, `/dev/md/*`, an LVM `/dev/VG/LV`.
    Stable(String),
    /// No device: the entry is dropped, for this reason.
    Missing(String),
    /// Not a device name (a tag, a network source, `tmpfs`, a bind source): as written.
    Other,
}

/// cloud-init's meta names: resolved through the block-device-mapping.
fn is_meta(name: &str) -> bool {
    ["ephemeral", "ebs"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// A kernel block device name (`sdb`, `xvdb1`, `vdc`, `nvme1n1`, `nvme1n1p2`, `sr0`, `md0`).
fn is_kernel_name(name: &str) -> bool {
    let digits_then_letters = |s: &str| {
        let s = s.trim_end_matches(|c: char| c.is_ascii_digit());
        !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase())
    };
    for p in ["xvd", "sd", "vd", "hd"] {
        if let Some(rest) = name.strip_prefix(p) {
            return digits_then_letters(rest);
        }
    }
    let numbered = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    if numbered("sr") || numbered("md") || numbered("loop") {
        return true;
    }
    // nvme1n1, nvme1n1p2 (nvme1 alone is the controller, not a block device).
    name.strip_prefix("nvme").is_some_and(|rest| {
        rest.contains('n')
            && rest
                .split(['n', 'p'])
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// `ephemeral0.1` → (`ephemeral0`, Some(1)); only for bare names (a path may hold dots).
fn split_partition(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('.') {
        Some((base, n))
            if !base.is_empty()
                && !base.contains('/')
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit()) =>
        {
            (base, Some(n))
        }
        _ => (name, None),
    }
}

/// The names IMDS's `sdb` may have on this kernel (as the disks module tries them).
pub(crate) fn imds_names(dev: &str) -> Vec<String> {
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

/// A device node (or, under a test root, a file standing for one): not a directory such
/// as `/dev/disk`.
fn exists(ctx: &Context, dev: &str) -> bool {
    ctx.root
        .fs()
        .and_then(|rd| rd.stat(std::path::Path::new(dev)))
        .is_ok_and(|st| st.is_some_and(|st| st.kind != stoke_api::FileKind::Directory))
}

/// `ephemeralN`/`ebsN` → its device, from the disks report or the block-device-mapping.
fn meta_device(
    ctx: &Context,
    name: &str,
    disks_ephemeral: &BTreeMap<String, String>,
) -> Result<String, String> {
    if let Some(d) = disks_ephemeral.get(name) {
        return Ok(d.clone());
    }
    let bdm = &ctx.instance.block_device_mapping;
    // Eucalyptus called the first one `ephemeral` (cloud-init LP #513842).
    let mapped = bdm.get(name).or_else(|| {
        (name == "ephemeral0")
            .then(|| bdm.get("ephemeral"))
            .flatten()
    });
    let Some(mapped) = mapped else {
        return Err(format!(
            "{name} is not in the instance's block-device-mapping"
        ));
    };
    let tried: Vec<String> = imds_names(mapped)
        .into_iter()
        .map(|n| format!("/dev/{n}"))
        .collect();
    match tried.iter().find(|p| exists(ctx, p)) {
        Some(p) => Ok(p.clone()),
        None => Err(format!(
            "{name} is {mapped} in the block-device-mapping, and none of {} exists",
            tried.join(", ")
        )),
    }
}

/// "sdb" → /dev/sdb, or the xvd/vd name this kernel gave it (the name as given when
/// none exists).
fn kernel_path(ctx: &Context, name: &str) -> String {
    imds_names(name)
        .into_iter()
        .map(|n| format!("/dev/{n}"))
        .find(|p| exists(ctx, p))
        .unwrap_or_else(|| format!("/dev/{name}"))
}

/// Partition `n` of `disk` (`/dev/sdb1`, `/dev/nvme1n1p1`, `...-part1`), if it exists.
fn partition(ctx: &Context, disk: &str, n: &str) -> Option<String> {
    [n.to_string(), format!("p{n}"), format!("-part{n}")]
        .iter()
        .map(|s| format!("{disk}{s}"))
        .find(|p| exists(ctx, p))
}

/// Reads a spec. `fstype` tells a bare name that needs a device (`auto`, a disk
/// filesystem) from a pseudo filesystem's source (`tmpfs`, `overlay`).
pub(crate) fn resolve(
    ctx: &Context,
    spec: &str,
    fstype: &str,
    aliases: &BTreeMap<String, String>,
    disks_ephemeral: &BTreeMap<String, String>,
) -> Named {
    if spec.contains(['=', ':']) || spec.starts_with("//") {
        return Named::Other;
    }
    let (base, part) = split_partition(spec);
    let mut base = base.to_string();
    let mut via = String::new();
    if let Some(target) = aliases.get(&base) {
        via = format!(" (device_aliases: {base} → {target})");
        base = target.clone();
    }
    if base == "ephemeral" {
        base = "ephemeral0".into();
    }
    // cloud-init's own mounts example says `/dev/ephemeral0`; no kernel makes that node.
    if let Some(m) = base.strip_prefix("/dev/").filter(|m| is_meta(m)) {
        base = m.to_string();
    }
    let disk = if is_meta(&base) {
        match meta_device(ctx, &base, disks_ephemeral) {
            Ok(d) => d,
            Err(why) => return Named::Missing(format!("{why}{via}")),
        }
    } else if let Some(rest) = base.strip_prefix("/dev/") {
        if rest.contains('/') {
            // by-id/label/uuid links, md and mapper names, LVM: may appear later.
            return match part {
                None => Named::Stable(base),
                Some(n) => match partition(ctx, &base, n) {
                    Some(p) => Named::Stable(p),
                    None => Named::Missing(format!("{base} has no partition {n}{via}")),
                },
            };
        }
        // `/dev/sdf` where this kernel says xvdf (EC2 renames them so), as for "sdf".
        kernel_path(ctx, rest)
    } else if !base.contains('/')
        && (is_kernel_name(&base)
            || !via.is_empty()
            || part.is_some()
            || exists(ctx, &format!("/dev/{base}"))
            || needs_device(fstype))
    {
        kernel_path(ctx, &base)
    } else {
        return Named::Other;
    };
    // The disks report names disks it found: present (and maybe in its array).
    let reported = disks_ephemeral.get(&base) == Some(&disk);
    if !reported && !exists(ctx, &disk) {
        let bare = !spec.contains('/');
        let hint = if bare && via.is_empty() && !is_meta(&base) && !is_kernel_name(&base) {
            " (a device_aliases or disk_setup name? stoke implements neither disk_setup nor \
             fs_setup: see the disks module)"
        } else {
            ""
        };
        return Named::Missing(format!("{disk} does not exist{via}{hint}"));
    }
    let dev = match part {
        Some(n) => match partition(ctx, &disk, n) {
            Some(p) => p,
            None => {
                return Named::Missing(format!(
                    "{disk} has no partition {n}{via} (stoke does not partition disks: \
                     cloud-init's disk_setup is not implemented)"
                ));
            }
        },
        // cloud-init: a whole disk that has partitions means its first one.
        None => partition(ctx, &disk, "1").unwrap_or(disk),
    };
    Named::Kernel(dev)
}

/// Filesystem types that live on a block device (a bare source name for one of these is a
/// device name, never a pseudo filesystem's source).
fn needs_device(fstype: &str) -> bool {
    [
        "auto", "xfs", "ext2", "ext3", "ext4", "btrfs", "vfat", "exfat", "ntfs", "ntfs3",
        "iso9660", "udf", "f2fs", "jfs", "reiserfs", "swap",
    ]
    .contains(&fstype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names() {
        for n in [
            "sdb",
            "sdb1",
            "xvdb",
            "xvdh",
            "vdc",
            "hda",
            "sr0",
            "nvme1n1",
            "nvme1n1p2",
            "md0",
            "sdaa",
        ] {
            assert!(is_kernel_name(n), "{n}");
        }
        for n in [
            "tmpfs",
            "none",
            "my_alias",
            "sd",
            "nvme",
            "nvme1",
            "ephemeral0",
            "md",
            "sdb-1",
        ] {
            assert!(!is_kernel_name(n), "{n}");
        }
    }

    #[test]
    fn dotted_partitions_only_on_bare_names() {
        assert_eq!(split_partition("ephemeral0.1"), ("ephemeral0", Some("1")));
        assert_eq!(split_partition("my_alias.2"), ("my_alias", Some("2")));
        assert_eq!(
            split_partition("/dev/disk/by-label/a.1"),
            ("/dev/disk/by-label/a.1", None)
        );
        assert_eq!(split_partition("x.y"), ("x.y", None));
        assert_eq!(split_partition(".1"), (".1", None));
    }

    #[test]
    fn meta_names() {
        assert!(is_meta("ephemeral0") && is_meta("ephemeral12") && is_meta("ebs3"));
        assert!(!is_meta("ephemeral") && !is_meta("ephemeralx") && !is_meta("ebs"));
    }
}
