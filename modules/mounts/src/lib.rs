//! `mounts`: mounts what `disks` and `volumes` made and the `mounts:` entries of the config
//! (cloud-init's list form), in path order, and keeps stoke's lines of /etc/fstab
//! (marked with the `x-stoke` option) in step, leaving every other line as it was.
//! docs/storage.md has the policy in prose.

#![forbid(unsafe_code)]

pub mod fstab;
mod spec;
mod swap;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stoke_api::{
    Cmd, Context, FileKind, Frequency, Module, ModuleError, ModuleSpec, MountRequest, Report,
    Stage, config_spec, tools, udev,
};

use crate::fstab::{Entry, MARKER, MARKER_DISKS, MARKER_VOLUMES, norm};

/// Upper bound for waiting on udev's queue before resolving configured devices.
const UDEV_SETTLE_SECS: u64 = 10;

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(MountsModule), Box::new(swap::SwapModule)]
}

/// A scalar in a `mounts:` entry: YAML gives strings and numbers (`0`, `2`).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Field {
    Int(i64),
    Str(String),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Int(n) => n.to_string(),
            Field::Str(s) => s.clone(),
        }
    }
}

/// Top-level keys read by `mounts` (the cloud-init names, plus one stoke key).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Config {
    /// cloud-init form: each entry `[spec, mount point, type, options, freq, passno]`;
    /// missing fields come from `mount_default_fields`; a null mount point drops the entry
    /// and the earlier ones for that device; the last entry for a mount point wins.
    pub mounts: Option<Vec<Vec<Option<Field>>>>,
    /// Defaults for missing fields (cloud-init: `[null, null, auto, "defaults,nofail", "0", "2"]`).
    pub mount_default_fields: Option<Vec<Option<Field>>>,
    /// `x-systemd.device-timeout=` on stoke's fstab lines: seconds or a systemd
    /// time span (`10s`, `1min`). Default 10s.
    pub mount_device_timeout: Option<Field>,
    /// cloud-init's `device_aliases` (name → device), as `mounts:` entries use them
    /// (`[my_data.1, /data]`). stoke implements no `disk_setup`/`fs_setup` that would
    /// partition or format them.
    pub device_aliases: Option<BTreeMap<String, String>>,
}

/// What `mounts` reads from the `disks` and `volumes` reports: the typed contracts in stoke-api.
use stoke_api::outputs::{DiskVolume, DisksOutput as DisksDetails, VolumesOutput};

const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "fuse.sshfs",
    "9p",
];

/// Whether (and how) an entry is mounted now.
#[derive(Clone, Debug, PartialEq)]
enum How {
    /// Mount now; `source` is the host path of the device (or the `UUID=` spec
    /// itself when commands are only recorded and blkid could not resolve it).
    Now { source: String },
    /// Left to systemd at boot (network filesystems, swap), with the reason.
    Later(String),
    /// Not mounted now; a warning.
    Skip(String),
}

#[derive(Clone, Debug)]
struct Want {
    entry: Entry,
    /// False when no stable name is known (the line would name a kernel device).
    in_fstab: bool,
    how: How,
    origin: String,
    /// How warnings name it: `mounts[2] (xvdh)`, `the disks module's /dev/md/ephemeral`.
    label: String,
}

/// One line of `mounts` details.
#[derive(Debug, Serialize)]
struct Done {
    mountpoint: String,
    spec: String,
    fstype: String,
    origin: String,
    /// "mounted" | "already mounted" | "left to systemd: ..." | "skipped: ..."
    action: String,
}

pub struct MountsModule;

const FSTAB: &str = "/etc/fstab";
/// Larger files are refused (real ones are a few KiB; a FIFO or device is an error, not a hang).
const MAX_FSTAB: u64 = 4 * 1024 * 1024;
const MAX_MOUNTINFO: u64 = 64 * 1024 * 1024;

fn invalid(msg: impl Into<String>) -> ModuleError {
    ModuleError::Invalid(msg.into())
}

fn device_timeout(cfg: &Config) -> Result<String, ModuleError> {
    let Some(f) = &cfg.mount_device_timeout else {
        return Ok("10s".into());
    };
    let t = match f {
        Field::Int(n) if *n > 0 => format!("{n}s"),
        Field::Str(s) => s.trim().to_string(),
        Field::Int(_) => String::new(),
    };
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let ok = digits > 0 && ["", "ms", "s", "sec", "min", "m", "h"].contains(&&t[digits..]);
    if ok {
        Ok(t)
    } else {
        Err(invalid(format!(
            "mount_device_timeout {t:?}: a number of seconds or e.g. 10s, 1min"
        )))
    }
}

/// The options stoke writes: the given ones plus `nofail`, the device timeout
/// (unless the entry sets its own) and the marker.
fn with_stoke_options(base: &str, timeout: &str, marker: &str) -> String {
    let mut opts: Vec<String> = base
        .split(',')
        .filter(|o| !o.is_empty() && *o != MARKER && !o.starts_with("x-stoke="))
        .map(str::to_string)
        .collect();
    if !opts.iter().any(|o| o == "nofail") {
        opts.push("nofail".into());
    }
    if !opts
        .iter()
        .any(|o| o.starts_with("x-systemd.device-timeout="))
    {
        opts.push(format!("x-systemd.device-timeout={timeout}"));
    }
    opts.push(marker.into());
    opts.join(",")
}

fn dev_number(meta: &fs::Metadata) -> Option<(u32, u32)> {
    if !meta.file_type().is_block_device() {
        return None;
    }
    let r = meta.rdev();
    let major = ((r >> 8) & 0xfff) | ((r >> 32) & !0xfff);
    let minor = (r & 0xff) | ((r >> 12) & !0xff);
    Some((major as u32, minor as u32))
}

/// A stable fstab name for an existing device: kept when already stable
/// (/dev/md/*, /dev/mapper/*, /dev/disk/by-*), else `UUID=` from blkid.
async fn stable_spec(ctx: &Context, dev: &str) -> Result<Option<String>, ModuleError> {
    if ["/dev/md/", "/dev/mapper/", "/dev/disk/by-"]
        .iter()
        .any(|p| dev.starts_with(p))
    {
        return Ok(Some(dev.to_string()));
    }
    let host = ctx.host_path(dev).display().to_string();
    let cmd = Cmd::new(
        ctx.tool(tools::BLKID),
        ["-s", "UUID", "-o", "value", host.as_str()],
    )
    .timeout(Duration::from_secs(30));
    let out = ctx.system.run(&cmd).await?;
    let uuid = out.stdout.trim();
    Ok((out.success() && !uuid.is_empty()).then(|| format!("UUID={uuid}")))
}

/// Which block device a `UUID=`/`LABEL=` spec names (host path), via blkid.
async fn resolve_tag(ctx: &Context, spec: &str) -> Result<How, ModuleError> {
    let cmd = Cmd::new(ctx.tool(tools::BLKID), ["-o", "device", "-t", spec])
        .timeout(Duration::from_secs(30));
    let out = ctx.system.run(&cmd).await?;
    let dev = out.stdout.lines().next().unwrap_or("").trim().to_string();
    Ok(match out.code {
        Some(0) if !dev.is_empty() => How::Now { source: dev },
        // Commands only recorded: mount by the tag itself.
        Some(0) => How::Now {
            source: spec.to_string(),
        },
        Some(2) => How::Skip(format!("no device with {spec} is present")),
        _ => return out.check(&cmd).map(|_| How::Skip(String::new())),
    })
}

/// The entries for the results of `disks` or `volumes` (`origin`), whose fstab lines
/// carry `marker`.
fn made_wants(
    ctx: &Context,
    volumes: &[DiskVolume],
    origin: &str,
    marker: &str,
    timeout: &str,
    warnings: &mut Vec<String>,
) -> Vec<Want> {
    let mut v = Vec::new();
    for vol in volumes {
        let Some(mp) = &vol.mountpoint else { continue };
        let (spec, in_fstab) = match (&vol.uuid, vol.device.starts_with("/dev/md/")) {
            (Some(u), _) => (format!("UUID={u}"), true),
            (None, true) => (vol.device.clone(), true),
            (None, false) => {
                warnings.push(format!(
                    "{}: filesystem UUID unknown; mounted now but not written to fstab \
                     (kernel names change between boots)",
                    vol.device
                ));
                (vol.device.clone(), false)
            }
        };
        v.push(Want {
            entry: Entry {
                spec,
                file: mp.clone(),
                vfstype: vol.fstype.clone(),
                mntops: with_stoke_options(&vol.mount_options, timeout, marker),
                freq: "0".into(),
                passno: "2".into(),
            },
            in_fstab,
            how: How::Now {
                source: ctx.host_path(&vol.device).display().to_string(),
            },
            origin: origin.into(),
            label: format!("the {origin} module's {}", vol.device),
        });
    }
    v
}

/// Whether `dev` (instance path) is one of the `disks` volumes or their member disks:
/// the volume's device and mount point.
fn used_by_disks<'a>(
    ctx: &Context,
    details: Option<&'a DisksDetails>,
    dev: &str,
) -> Option<&'a DiskVolume> {
    let rd = ctx.root.fs().ok()?;
    let canon = |d: &str| Some(rd.real_path(Path::new(d)).ok()??.0);
    let want = canon(dev);
    details?.volumes.iter().find(|v| {
        std::iter::once(&v.device)
            .chain(&v.members)
            .any(|m| m == dev || (want.is_some() && canon(m) == want))
    })
}

/// The devices the `mounts:` entries name (tags as their `/dev/disk/by-*` links), when all
/// are there now: then only their udev events are waited for. `None` when one is missing: a
/// link udev has not made yet and a device that is not coming look alike until udev's whole
/// queue is handled, so then that is waited for.
fn named_devices(
    ctx: &Context,
    cfg: &Config,
    details: Option<&DisksDetails>,
) -> Option<Vec<String>> {
    let aliases = cfg.device_aliases.clone().unwrap_or_default();
    let no_ephemeral = BTreeMap::new();
    let ephemeral = details.map_or(&no_ephemeral, |d| &d.ephemeral);
    let mut out = Vec::new();
    for raw in cfg.mounts.iter().flatten() {
        let text = |n: usize| raw.get(n).cloned().flatten().map(|f| f.text());
        let spec = text(0)?;
        let tag = ["LABEL", "UUID", "PARTUUID", "PARTLABEL"]
            .into_iter()
            .find_map(|t| Some((t, spec.strip_prefix(t)?.strip_prefix('=')?)));
        let device = match tag {
            Some((t, v)) => Some(format!("/dev/disk/by-{}/{v}", t.to_ascii_lowercase())),
            None if spec == "swap" => None,
            None => {
                let fstype = text(2).unwrap_or_else(|| "auto".into());
                match spec::resolve(ctx, &spec, &fstype, &aliases, ephemeral) {
                    spec::Named::Kernel(d) | spec::Named::Stable(d) => Some(d),
                    spec::Named::Missing(_) => return None,
                    spec::Named::Other => None,
                }
            }
        };
        if let Some(d) = device {
            if !ctx.fs().ok()?.exists(Path::new(&d)) {
                return None;
            }
            out.push(d);
        }
    }
    Some(out)
}

/// The entries from `mounts:` (cloud-init list form), in config order, each mount point
/// once. Entries that cannot be used are dropped with a warning (and listed in `dropped`);
/// malformed ones are errors.
async fn config_wants(
    ctx: &Context,
    cfg: &Config,
    details: Option<&DisksDetails>,
    timeout: &str,
    warnings: &mut Vec<String>,
    dropped: &mut Vec<Done>,
) -> Result<Vec<Want>, ModuleError> {
    let mut defaults: Vec<Option<Field>> = cfg.mount_default_fields.clone().unwrap_or_else(|| {
        vec![
            None,
            None,
            Some(Field::Str("auto".into())),
            Some(Field::Str("defaults,nofail".into())),
            Some(Field::Str("0".into())),
            Some(Field::Str("2".into())),
        ]
    });
    // cloud-init's own example writes `[None, None, auto, ...]`: YAML strings, meant as null.
    for d in defaults.iter_mut().take(2) {
        if *d == Some(Field::Str("None".into())) {
            *d = None;
        }
    }
    let aliases = cfg.device_aliases.clone().unwrap_or_default();
    let no_ephemeral = BTreeMap::new();
    let disks_ephemeral = details.map_or(&no_ephemeral, |d| &d.ephemeral);
    // Each entry with the name cloud-init compares for removals: the device it resolved
    // to, else the spec as written.
    let mut out: Vec<(String, Want)> = Vec::new();
    for (i, raw) in cfg.mounts.iter().flatten().enumerate() {
        let origin = format!("mounts[{i}]");
        if raw.is_empty() || raw.len() > 6 {
            return Err(invalid(format!(
                "{origin}: an entry has 1 to 6 fields [spec, mount point, type, options, freq, passno]"
            )));
        }
        let field = |n: usize| -> Option<String> {
            raw.get(n)
                .cloned()
                .flatten()
                .or_else(|| defaults.get(n).cloned().flatten())
                .map(|f| f.text())
        };
        let Some(spec) = field(0).filter(|s| !s.is_empty()) else {
            return Err(invalid(format!(
                "{origin}: the first field (device) is empty"
            )));
        };
        let label = format!("{origin} ({spec})");
        let vfstype = field(2).unwrap_or_else(|| "auto".into());
        let named = if spec == "swap" {
            spec::Named::Other
        } else {
            spec::resolve(ctx, &spec, &vfstype, &aliases, disks_ephemeral)
        };
        let key = match &named {
            spec::Named::Kernel(d) | spec::Named::Stable(d) => d.clone(),
            _ => spec.clone(),
        };
        // cloud-init: no mount point means "no entry", and removes the earlier entries
        // for the same device.
        let Some(mp) = field(1).filter(|m| !m.is_empty() && m != "null") else {
            let before = out.len();
            out.retain(|(k, _)| *k != key && *k != spec);
            if out.len() == before
                && let spec::Named::Kernel(d) = &named
                && let Some(vol) = used_by_disks(ctx, details, d)
            {
                warnings.push(format!(
                    "{label}: no mount point: in cloud-init that leaves the instance store \
                     unmounted; here the disks module mounts {}{}: set `disks: {{mount: false}}` \
                     (or `mode: off`) for that",
                    vol.device,
                    vol.mountpoint
                        .as_deref()
                        .map(|m| format!(" at {m}"))
                        .unwrap_or_default()
                ));
            }
            continue;
        };
        let opts = field(3).unwrap_or_else(|| "defaults".into());
        let freq = field(4).unwrap_or_else(|| "0".into());
        let passno = field(5).unwrap_or_else(|| "2".into());
        let swap = vfstype == "swap" || mp == "none";
        if !swap && !mp.starts_with('/') {
            return Err(invalid(format!(
                "{origin}: mount point {mp:?} is not an absolute path"
            )));
        }
        // Compared and written as a path, not as spelled: `/./` is `/`, `/mnt/..` too.
        let mp = if swap { mp } else { fstab::norm(&mp) };
        for (k, v) in [("freq", &freq), ("passno", &passno)] {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
                return Err(invalid(format!("{origin}: {k} {v:?} is not a number")));
            }
        }
        if opts.contains(char::is_whitespace) {
            return Err(invalid(format!(
                "{origin}: options {opts:?} contain spaces"
            )));
        }
        let mut skip = |why: String, dropped: &mut Vec<Done>| {
            warnings.push(format!("{label}: {why}"));
            dropped.push(Done {
                mountpoint: mp.clone(),
                spec: spec.clone(),
                fstype: vfstype.clone(),
                origin: origin.clone(),
                action: format!("skipped: {why}"),
            });
        };
        if spec == "swap" {
            skip(
                "swap files are not managed by stoke (see the `swap` key); entry ignored".into(),
                dropped,
            );
            continue;
        }
        // A device that is not there now and cannot appear later gets no fstab line:
        // such a line would only ever wait for its device timeout.
        let device = match &named {
            spec::Named::Missing(why) => {
                skip(
                    format!("{why}; entry skipped (not mounted, no /etc/fstab line)"),
                    dropped,
                );
                continue;
            }
            spec::Named::Kernel(d) | spec::Named::Stable(d) => {
                if let Some(vol) = used_by_disks(ctx, details, d) {
                    skip(
                        format!(
                            "{d} is used by the disks module ({}{}); entry ignored: the disks \
                             settings say where and how it is mounted (disks.mount_point, \
                             disks.mount_options)",
                            vol.device,
                            vol.mountpoint
                                .as_deref()
                                .map(|m| format!(" at {m}"))
                                .unwrap_or_default()
                        ),
                        dropped,
                    );
                    continue;
                }
                Some(d.clone())
            }
            spec::Named::Other => None,
        };

        let network = NETWORK_FS.contains(&vfstype.as_str())
            || opts.split(',').any(|o| o == "_netdev")
            || (device.is_none() && spec.contains(':'))
            || spec.starts_with("//");
        let mut fstab_spec = spec.clone();
        let how = if swap {
            How::Later("swap is activated by systemd".into())
        } else if network {
            How::Later("network filesystem, mounted by systemd after the network".into())
        } else if let Some(dev) = &device {
            fstab_spec = dev.clone();
            let rd = ctx.fs()?;
            if rd.exists(Path::new(dev)) {
                if let Some(s) = stable_spec(ctx, dev).await? {
                    fstab_spec = s;
                }
                How::Now {
                    source: rd.resolved_host_path(Path::new(dev)).display().to_string(),
                }
            } else {
                How::Skip(format!(
                    "{dev} does not exist (yet); its /etc/fstab line mounts it if it appears"
                ))
            }
        } else if spec.contains('=') {
            resolve_tag(ctx, &spec).await?
        } else {
            How::Skip(format!("cannot tell what {spec} is"))
        };
        if let How::Skip(why) = &how {
            warnings.push(format!("{label}: {mp}: not mounted now: {why}"));
        }
        out.push((
            key,
            Want {
                entry: Entry {
                    spec: fstab_spec,
                    file: mp,
                    vfstype,
                    mntops: with_stoke_options(&opts, timeout, MARKER),
                    freq,
                    passno,
                },
                in_fstab: true,
                how,
                origin,
                label,
            },
        ));
    }
    // cloud-init writes every entry and `mount -a` leaves the last one on top: the last
    // entry for a mount point wins, the earlier ones are dropped (named, not silently).
    let mut wants: Vec<Want> = Vec::new();
    for (_, w) in out {
        if w.entry.file != "none"
            && let Some(pos) = wants.iter().position(|o| o.entry.file == w.entry.file)
        {
            let old = wants.remove(pos);
            let why = format!(
                "{} and {} both mount {}: the last one wins; {} is not mounted and has no \
                 /etc/fstab line",
                old.label, w.label, w.entry.file, old.origin
            );
            warnings.push(why.clone());
            dropped.push(Done {
                mountpoint: old.entry.file,
                spec: old.entry.spec,
                fstype: old.entry.vfstype,
                origin: old.origin,
                action: format!("skipped: {why}"),
            });
        }
        wants.push(w);
    }
    Ok(wants)
}

/// Checks that nothing conflicts, before anything is touched.
fn validate(
    ctx: &Context,
    wants: &[Want],
    fstab_text: &str,
    kept: &dyn Fn(&Entry) -> bool,
) -> Result<(), ModuleError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for w in wants {
        if w.entry.file == "none" {
            continue;
        }
        let mp = norm(&w.entry.file);
        if fstab::is_system_mount_point(&mp) {
            return Err(invalid(format!(
                "{}: mount point {mp} is the root or one of the system's own; refused",
                w.origin
            )));
        }
        if let Some(first) = seen.insert(mp.clone(), &w.origin) {
            return Err(invalid(format!(
                "duplicate mount point {mp}: wanted by {first} and {}",
                w.origin
            )));
        }
    }
    for (line, e) in fstab::entries(fstab_text) {
        let theirs = !e.is_owned() || kept(&e);
        if theirs && let Some(origin) = seen.get(&norm(&e.file)) {
            return Err(ModuleError::Refused(format!(
                "/etc/fstab line {line} already mounts {} at {} (not a line stoke owns); \
                 {origin} wants the same mount point: remove that line or choose another",
                e.spec, e.file
            )));
        }
    }
    for w in wants
        .iter()
        .filter(|w| w.entry.file.starts_with('/') && w.entry.vfstype != "swap")
    {
        // The mount point and each existing parent must be directories.
        let rd = ctx.fs()?;
        for p in Path::new(&w.entry.file).ancestors() {
            match rd.stat(p) {
                Ok(Some(st)) if st.kind != FileKind::Directory => {
                    return Err(invalid(format!(
                        "mount point {} ({}): {} exists and is not a directory",
                        w.entry.file,
                        w.origin,
                        ctx.host_path(p).display()
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A mount found in mountinfo: its device number (if a block device) and source.
type Mounted = (Option<(u32, u32)>, String);

/// What /proc/self/mountinfo says is mounted at `target` (instance path): (dev, source).
fn mounted_at(ctx: &Context, target: &Path) -> Result<Option<Mounted>, ModuleError> {
    let p = Path::new("/proc/self/mountinfo");
    let rd = ctx.fs()?;
    let text = rd
        .read_string(p, MAX_MOUNTINFO)
        .map_err(|e| ModuleError::io("reading", ctx.host_path(p), e))?
        .unwrap_or_default();
    // The kernel lists resolved paths (a symlinked /mnt shows as its target).
    let want = rd.resolved_host_path(target).display().to_string();
    // The last mount on a path is the visible one.
    let found = stoke_api::mountinfo::parse(&text)
        .into_iter()
        .rfind(|m| m.mount_point == want)
        .map(|m| (m.dev, m.source));
    Ok(found)
}

/// Whether `target` already has a mount, and whether it is `source`'s.
fn existing_mount(
    ctx: &Context,
    w: &Want,
    source: &str,
) -> Result<Option<Result<String, String>>, String> {
    let target = Path::new(&w.entry.file);
    let Some((dev, src)) = mounted_at(ctx, target).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let ours = fs::metadata(source).ok().and_then(|m| dev_number(&m));
    let same = match (dev, ours) {
        (Some(a), Some(b)) => a == b,
        _ => {
            let canon = |s: &str| {
                fs::canonicalize(s)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| s.to_string())
            };
            canon(&src) == canon(source)
        }
    };
    Ok(Some(if same {
        Ok("already mounted".into())
    } else {
        Err(format!(
            "{} is already mounted from {src}, not {}",
            w.entry.file, w.entry.spec
        ))
    }))
}

async fn mount_one(ctx: &Context, w: &Want, source: &str) -> Result<String, String> {
    let host_source = source;
    if let Some(verdict) = existing_mount(ctx, w, host_source)? {
        return verdict;
    }
    // Made inside the root; the mount call gets the directory as resolved there.
    let target = ctx
        .fs()
        .map_err(|e| e.to_string())?
        .host_dir(Path::new(&w.entry.file))
        .map_err(|e| {
            format!(
                "creating mount point {}: {e}",
                ctx.host_path(&w.entry.file).display()
            )
        })?;
    let mut fstype = w.entry.vfstype.clone();
    if fstype == "auto" {
        let cmd = Cmd::new(
            ctx.tool(tools::BLKID),
            ["-s", "TYPE", "-o", "value", host_source],
        )
        .timeout(Duration::from_secs(30));
        if let Ok(out) = ctx.system.run(&cmd).await
            && out.success()
            && !out.stdout.trim().is_empty()
        {
            fstype = out.stdout.trim().to_string();
        }
    }
    let req = MountRequest {
        source: host_source.to_string(),
        target: target.clone(),
        fstype,
        options: stoke_api::mount_options::for_mount_call(&w.entry.mntops),
    };
    match ctx.system.mount(&req).await {
        Ok(()) => Ok("mounted".into()),
        // systemd mounts the same fstab line when the device appears: if it
        // got there first, the mount we wanted is in place.
        Err(e) => match existing_mount(ctx, w, host_source)? {
            Some(Ok(_)) => Ok("already mounted".into()),
            _ => Err(format!(
                "mounting {} at {}: {e}",
                w.entry.spec, w.entry.file
            )),
        },
    }
}

#[stoke_api::async_trait]
impl Module for MountsModule {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "mounts",
            stage: Stage::Local,
            frequency: Frequency::PerBoot,
            after: &["disks", "volumes"],
            needs_metadata: false,
            before_logins: false,
            timeout: Duration::from_secs(5 * 60),
            config: config_spec::<Config>(),
            order: stoke_api::Order::Normal,
        }
    }

    /// A refused EBS volume fails `volumes`; the instance store and the `mounts:` entries
    /// are still mounted (the volumes lines are then kept as they are: no report).
    fn runs_despite(&self) -> &'static [&'static str] {
        &["volumes"]
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: Config = ctx.config()?;
        let timeout = device_timeout(&cfg)?;
        let mut warnings = Vec::new();
        let details: Option<DisksDetails> = stoke_api::outputs::prior_output(&ctx.prior, "disks")
            .transpose()
            .map_err(ModuleError::Other)?;
        // Without a disks report (disabled, or failed before reporting) its fstab
        // lines are kept as they are rather than dropped.
        let keep_disks = details.is_none();
        let mut wants = details
            .as_ref()
            .map(|d| {
                made_wants(
                    ctx,
                    &d.volumes,
                    "disks",
                    MARKER_DISKS,
                    &timeout,
                    &mut warnings,
                )
            })
            .unwrap_or_default();
        // The EBS volumes `volumes` found or made: mounted as the disks results are, and
        // their lines kept as they are without a report, as the disks lines are.
        let volumes: Option<VolumesOutput> =
            stoke_api::outputs::prior_output(&ctx.prior, "volumes")
                .transpose()
                .map_err(ModuleError::Other)?;
        let keep_volumes = volumes.is_none();
        wants.extend(
            volumes
                .as_ref()
                .map(|d| {
                    made_wants(
                        ctx,
                        &d.volumes,
                        "volumes",
                        MARKER_VOLUMES,
                        &timeout,
                        &mut warnings,
                    )
                })
                .unwrap_or_default(),
        );
        // stoke-local does not wait for udevd: a configured /dev/disk/by-* link may not
        // be there yet. (The disks module waits for its own devices; its volumes need nothing.)
        if cfg.mounts.as_ref().is_some_and(|m| !m.is_empty()) && udev::present(ctx) {
            let waited = match named_devices(ctx, &cfg, details.as_ref()) {
                Some(devices) => udev::wait(ctx, &devices, UDEV_SETTLE_SECS).await,
                None => udev::settle(ctx, UDEV_SETTLE_SECS).await,
            };
            if let Err(e) = waited {
                warnings.push(format!("waiting for udev: {e}"));
            }
        }
        let mut dropped = Vec::new();
        let configured = config_wants(
            ctx,
            &cfg,
            details.as_ref(),
            &timeout,
            &mut warnings,
            &mut dropped,
        )
        .await?;
        // A `mounts:` entry for the path of a disks volume wins that path: the user's
        // user-data is the later, more specific word, and an application that finds its
        // data volume where it asked for it is safer than one writing to scratch disks
        // it believes persistent. The volume is still made, and named in the warning.
        let config_paths: BTreeSet<String> =
            configured.iter().map(|w| w.entry.file.clone()).collect();
        wants.retain(|w| {
            let Some(theirs) = configured.iter().find(|c| c.entry.file == w.entry.file) else {
                return true;
            };
            let why = format!(
                "{} and {} both want {}: the mounts: entry wins; {} is not mounted and \
                 has no /etc/fstab line ({} to mount it elsewhere)",
                w.label,
                theirs.label,
                w.entry.file,
                w.label,
                if w.origin == "volumes" {
                    "set the volumes entry's mount_point"
                } else {
                    "set disks.mount_point, or jbod_mount_point,"
                }
            );
            warnings.push(why.clone());
            dropped.push(Done {
                mountpoint: w.entry.file.clone(),
                spec: w.entry.spec.clone(),
                fstype: w.entry.vfstype.clone(),
                origin: w.origin.clone(),
                action: format!("skipped: {why}"),
            });
            false
        });
        wants.extend(configured);
        wants.sort_by(|a, b| Path::new(&a.entry.file).cmp(Path::new(&b.entry.file)));

        let fstab_path = ctx.host_path(FSTAB);
        let rd = ctx.fs()?;
        let existing = rd
            .read_string(Path::new(FSTAB), MAX_FSTAB)
            .map_err(|e| ModuleError::io("reading", &fstab_path, e))?
            .unwrap_or_default();
        // Lines left as they are: the swap file's (the `swap` module's, per-instance) and,
        // without a disks report, the disks lines, except where a mounts: entry now wants
        // the path (the same rule as with a report).
        // A volume not attached this boot keeps its line (nofail) for when it is back.
        let awaited: BTreeSet<String> = volumes
            .iter()
            .flat_map(|v| v.awaited.iter().map(|m| norm(m)))
            .collect();
        let kept = |e: &Entry| {
            e.is_swap()
                || (((keep_disks && e.is_disks())
                    || (e.is_volumes() && (keep_volumes || awaited.contains(&norm(&e.file)))))
                    && !config_paths.contains(&norm(&e.file)))
        };
        if keep_disks {
            for (line, e) in fstab::entries(&existing) {
                if e.is_disks() && config_paths.contains(&norm(&e.file)) {
                    warnings.push(format!(
                        "/etc/fstab line {line} (the disks module's, for {} at {}) is replaced: \
                         a mounts: entry wants {}",
                        e.spec, e.file, e.file
                    ));
                }
            }
        }
        validate(ctx, &wants, &existing, &kept)?;

        let desired: Vec<Entry> = wants
            .iter()
            .filter(|w| w.in_fstab)
            .map(|w| w.entry.clone())
            .collect();
        let rw = fstab::rewrite(&existing, &desired, kept);
        let fstab_changed = rw.text != existing;
        if fstab_changed {
            rd.replace_keeping(Path::new(FSTAB), rw.text.as_bytes(), 0o644, true)
                .map_err(|e| ModuleError::io("writing", &fstab_path, e))?;
        }

        let mut done = Vec::new();
        let mut errors = Vec::new();
        for w in &wants {
            let action = match &w.how {
                How::Later(why) => format!("left to systemd: {why}"),
                How::Skip(why) => format!("skipped: {why}"),
                How::Now { source } => match mount_one(ctx, w, source).await {
                    Ok(a) => a,
                    Err(e) => {
                        errors.push(e.clone());
                        format!("failed: {e}")
                    }
                },
            };
            done.push(Done {
                mountpoint: w.entry.file.clone(),
                spec: w.entry.spec.clone(),
                fstype: w.entry.vfstype.clone(),
                origin: w.origin.clone(),
                action,
            });
        }
        // No `systemctl daemon-reload` after an fstab change: stoke mounts what it
        // wrote itself, and the fstab lines are for the next boot. A reload during
        // boot costs ~2 s and replaces the generated units of a line whose device
        // is still awaited, dropping its x-systemd.device-timeout: systemd then
        // waits the default 90 s for a filesystem that no longer exists.
        let mounted = done.iter().filter(|d| d.action == "mounted").count();
        let already = done
            .iter()
            .filter(|d| d.action == "already mounted")
            .count();
        let mut summary = format!("mounts: {mounted} mounted, {already} already mounted");
        if fstab_changed {
            summary.push_str(", /etc/fstab updated");
        }
        if !rw.removed.is_empty() {
            summary.push_str(&format!(" ({} stale lines removed)", rw.removed.len()));
        }
        // Entries not used (and why) after the others, so status shows every entry.
        done.extend(dropped);
        let mut report = Report::new(summary).with_details(serde_json::json!({
            "mounts": done,
            "fstab_changed": fstab_changed,
            "fstab_removed": rw.removed,
            "device_timeout": timeout,
        }));
        for w in warnings {
            report.warn(w);
        }
        if !errors.is_empty() {
            // Failed, and the report (what was mounted, the warnings) still reaches status.
            return Err(ModuleError::Partial {
                message: format!(
                    "{}{}",
                    errors.join("; "),
                    if fstab_changed {
                        " (/etc/fstab was updated)"
                    } else {
                        ""
                    }
                ),
                report: Box::new(report),
            });
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: Config = match ctx.config() {
            Ok(c) => c,
            Err(e) => return Some(format!("would fail: {e}")),
        };
        let n = cfg.mounts.as_ref().map_or(0, Vec::len);
        Some(format!(
            "mounts the disks and volumes results and {n} mounts: entries in path order; \
             keeps stoke's /etc/fstab lines (option {MARKER}) in step, nofail, device timeout {}",
            device_timeout(&cfg).unwrap_or_else(|e| e.to_string())
        ))
    }
}
