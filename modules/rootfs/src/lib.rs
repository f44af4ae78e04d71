//! `rootfs`: cloud-init's `growpart` and `resize_rootfs` in one module.
//!
//! Every boot (a stop/start onto a bigger volume grows again), stage `local`:
//! find the partition behind `/` (mountinfo → sysfs), grow it to the end of its
//! disk when there is room (`growpart`, else `sfdisk -N` then `partx -u`), then
//! grow the filesystem online (`resize2fs`, `xfs_growfs`, `btrfs filesystem resize
//! max`). A boot with nothing to do reads mountinfo and three sysfs files and
//! runs no command. Never shrinks, touches only the disk behind the configured
//! mount points, and a missing tool is a warning (the boot goes on).
//!
//! Under `--root DIR` only a filesystem mounted exactly at `DIR` counts (read
//! from `DIR/proc/self/mountinfo`, `DIR/sys`, `DIR/dev`): a sandbox that is a
//! plain directory has nothing to grow, whatever `--execute` says.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage, SysError,
    config_spec, tools,
};

/// Less free space than this at the end of the disk is not worth a grow (GPT's
/// backup header alone takes 33 sectors; growpart leaves about 1 MiB alone).
const MIN_GROW_SECTORS: u64 = 2048;
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(RootFs)]
}

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RootFsConfig {
    /// cloud-init's `growpart`: `{mode: auto|growpart|off, devices: [/]}`. Default: auto, `/`.
    pub growpart: Option<GrowpartConfig>,
    /// cloud-init's `resize_rootfs`: grow the filesystems after their partitions
    /// (`true`, default), `false`, or `noblock` (same as true: the resize is online).
    pub resize_rootfs: Option<ResizeRootfs>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrowpartConfig {
    #[serde(default)]
    pub mode: GrowMode,
    /// Mount points whose partition is grown. Default `["/"]`.
    #[serde(default = "default_devices")]
    pub devices: Vec<String>,
    /// cloud-init's switch for /etc/growroot-disabled: accepted; stoke reads no such file.
    #[serde(default)]
    pub ignore_growroot_disabled: bool,
}

fn default_devices() -> Vec<String> {
    vec!["/".into()]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
pub enum GrowMode {
    #[default]
    Auto,
    Growpart,
    Off,
}

// By hand: cloud-init also takes `mode: false` (YAML `off` is a boolean too).
impl<'de> Deserialize<'de> for GrowMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(false) => Ok(GrowMode::Off),
            serde_json::Value::Bool(true) => Ok(GrowMode::Auto),
            serde_json::Value::String(s) => match s.as_str() {
                "auto" => Ok(GrowMode::Auto),
                "growpart" => Ok(GrowMode::Growpart),
                "off" | "false" => Ok(GrowMode::Off),
                other => Err(serde::de::Error::custom(format!(
                    "growpart mode `{other}`: expected auto, growpart or off"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "growpart mode {other}: expected auto, growpart or off"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, JsonSchema)]
pub enum ResizeRootfs {
    Yes,
    No,
    NoBlock,
}

impl<'de> Deserialize<'de> for ResizeRootfs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(if b {
                ResizeRootfs::Yes
            } else {
                ResizeRootfs::No
            }),
            serde_json::Value::String(s) if s == "noblock" => Ok(ResizeRootfs::NoBlock),
            other => Err(serde::de::Error::custom(format!(
                "resize_rootfs {other}: expected true, false or noblock"
            ))),
        }
    }
}

pub struct RootFs;

#[stoke_api::async_trait]
impl Module for RootFs {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "rootfs",
            stage: Stage::Local,
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: false,
            before_logins: false,
            timeout: Duration::from_secs(600),
            config: config_spec::<RootFsConfig>(),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: RootFsConfig = ctx.config()?;
        let gp = cfg.growpart.clone().unwrap_or(GrowpartConfig {
            mode: GrowMode::Auto,
            devices: default_devices(),
            ignore_growroot_disabled: false,
        });
        let resize = cfg.resize_rootfs.unwrap_or(ResizeRootfs::Yes) != ResizeRootfs::No;
        if gp.mode == GrowMode::Off && !resize {
            return Ok(Report::new("rootfs: growpart and resize_rootfs are off"));
        }
        // Read through the root: a `--root` tree's /proc could be a link out of it.
        let shown = ctx.host_path(MOUNTINFO);
        let mountinfo = match ctx
            .fs()?
            .read_string(Path::new(MOUNTINFO), MAX_MOUNTINFO)
            .map_err(|e| ModuleError::io("reading", &shown, e))?
        {
            Some(t) => t,
            None => {
                return Ok(Report::new(format!(
                    "rootfs: no {} (nothing mounted to grow)",
                    shown.display()
                )));
            }
        };
        let mut warnings = Vec::new();
        let mut done = Vec::new();
        let mut summary = Vec::new();
        for mp in &gp.devices {
            match grow_one(ctx, &mountinfo, mp, gp.mode, resize, &mut warnings).await {
                Ok(d) => {
                    summary.push(d.summary());
                    done.push(d);
                }
                Err(e) => {
                    for w in &warnings {
                        tracing::warn!("{w}");
                    }
                    return Err(ModuleError::Other(format!("{mp}: {e}")));
                }
            }
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let mut report = Report::new(format!("rootfs: {}", summary.join("; ")))
            .with_details(json!({ "devices": done.iter().map(Outcome::json).collect::<Vec<_>>() }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }
}

/// What happened for one mount point.
#[derive(Debug, Default)]
struct Outcome {
    mount_point: String,
    device: Option<String>,
    disk: Option<String>,
    partition_grown: bool,
    filesystem_grown: bool,
    note: String,
}

impl Outcome {
    fn summary(&self) -> String {
        format!("{} {}", self.mount_point, self.note)
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "mount_point": self.mount_point,
            "device": self.device,
            "disk": self.disk,
            "partition_grown": self.partition_grown,
            "filesystem_grown": self.filesystem_grown,
            "note": self.note,
        })
    }
}

/// The partition (or whole disk) behind a mount, from sysfs.
#[derive(Debug)]
struct Block {
    /// sysfs directory of the device (instance path, read through the root).
    sys: PathBuf,
    name: String,
    /// (disk name, disk sysfs dir, partition number, start sector) for a partition.
    parent: Option<(String, PathBuf, u32, u64)>,
}

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Far more than any mount table; a bound so a planted file cannot exhaust memory.
const MAX_MOUNTINFO: u64 = 16 << 20;
/// A sysfs attribute reports a 4096-byte size whatever it holds.
const MAX_SYSFS_ATTR: u64 = 64 << 10;

fn read_u64(ctx: &Context, p: &Path) -> Result<u64, ModuleError> {
    let shown = ctx.host_path(p);
    let t = ctx
        .fs()?
        .read_string(p, MAX_SYSFS_ATTR)
        .map_err(|e| ModuleError::io("reading", &shown, e))?
        .ok_or_else(|| ModuleError::Other(format!("{}: missing", shown.display())))?;
    t.trim().parse().map_err(|_| {
        ModuleError::Other(format!("{}: not a number: {:?}", shown.display(), t.trim()))
    })
}

fn block_of(ctx: &Context, dev: (u32, u32), source: &str) -> Result<Option<Block>, ModuleError> {
    // btrfs and friends report an anonymous 0:N: go by the source device's name.
    let link = if dev.0 != 0 {
        PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1))
    } else {
        let Some(name) = source.strip_prefix("/dev/") else {
            return Ok(None);
        };
        PathBuf::from(format!(
            "/sys/class/block/{}",
            name.rsplit('/').next().unwrap_or(name)
        ))
    };
    let rd = ctx.fs()?;
    // The link resolved inside the root, then named as the instance sees it, so every
    // read below goes through the root too.
    let host = match rd.real_path(&link) {
        Ok(Some((host, _))) => host,
        Ok(None) => return Ok(None),
        Err(e) => return Err(ModuleError::io("resolving", ctx.host_path(&link), e)),
    };
    // The root's own real path: `--root` may be given through a symlink.
    let root_real = match rd.real_path(Path::new("/")) {
        Ok(Some((r, _))) => r,
        _ => ctx.root.dir().to_path_buf(),
    };
    let sys = match host.strip_prefix(&root_real) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => return Ok(None),
    };
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if rd.exists(&sys.join("dm")) {
        return Err(ModuleError::Refused(format!(
            "{name} is a device-mapper device (LVM, crypt): growing it is out of stoke's scope"
        )));
    }
    let parent = if rd.exists(&sys.join("partition")) {
        let disk_sys = sys
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| ModuleError::Other(format!("{}: no parent disk", host.display())))?;
        let disk = disk_sys
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nr = read_u64(ctx, &sys.join("partition"))? as u32;
        let start = read_u64(ctx, &sys.join("start"))?;
        Some((disk, disk_sys, nr, start))
    } else {
        None
    };
    Ok(Some(Block { sys, name, parent }))
}

async fn grow_one(
    ctx: &Context,
    mountinfo: &str,
    mount_point: &str,
    mode: GrowMode,
    resize: bool,
    warnings: &mut Vec<String>,
) -> Result<Outcome, ModuleError> {
    let mut out = Outcome {
        mount_point: mount_point.to_string(),
        ..Outcome::default()
    };
    let rd = ctx.fs()?;
    // Resolved inside the root: mountinfo lists resolved paths, and xfs_growfs and btrfs
    // resolve their argv on the host.
    let host_mp = rd.resolved_host_path(Path::new(mount_point));
    // The last mount at that point is the one in effect.
    let Some((dev, entry)) = mountinfo
        .lines()
        .filter_map(stoke_api::mountinfo::parse_line)
        .filter_map(|m| Some((m.dev?, m)))
        .rfind(|(_, m)| Path::new(&m.mount_point) == host_mp)
    else {
        out.note = "is not a mount point here; nothing to grow".into();
        return Ok(out);
    };
    let Some(block) = block_of(ctx, dev, &entry.source)? else {
        out.note = format!(
            "({}, {}) is not a block device; nothing to grow",
            entry.source, entry.fstype
        );
        return Ok(out);
    };
    out.device = Some(format!("/dev/{}", block.name));
    let part_dev = ctx.host_path(format!("/dev/{}", block.name));
    let mut grew_part = false;
    if let Some((disk, disk_sys, nr, start)) = &block.parent {
        out.disk = Some(format!("/dev/{disk}"));
        let size = read_u64(ctx, &block.sys.join("size"))?;
        let disk_size = read_u64(ctx, &disk_sys.join("size"))?;
        let free = disk_size.saturating_sub(start + size);
        if free < MIN_GROW_SECTORS {
            // The partition is full; its filesystem too, unless an earlier grow stopped
            // half-way (one statvfs tells: a filesystem well short of its partition).
            let fs_bytes = rd
                .open_dir(Path::new(mount_point))
                .and_then(|d| nix::sys::statvfs::fstatvfs(&d).map_err(Into::into))
                .map(|v| v.blocks() * v.fragment_size())
                .map_err(|e| ModuleError::io("statvfs", &host_mp, e))?;
            if !resize || fs_bytes >= size * 512 / 10 * 9 {
                out.note = "already fills its disk".into();
                return Ok(out);
            }
        } else if mode == GrowMode::Off {
            out.note = format!("{} MiB free after it; growpart is off", free / 2048);
            return Ok(out);
        } else {
            let disk_dev = ctx.host_path(format!("/dev/{disk}"));
            grew_part = grow_partition(ctx, &disk_dev, *nr, mode, warnings).await?;
            out.partition_grown = grew_part;
            if !grew_part {
                out.note = "partition not grown (see warnings)".into();
                return Ok(out);
            }
        }
    }
    if !resize {
        out.note = if grew_part {
            "partition grown; resize_rootfs is off".into()
        } else {
            "resize_rootfs is off".into()
        };
        return Ok(out);
    }
    if block.parent.is_none() {
        // A filesystem on a whole disk: nothing tells a no-op boot from a grown volume
        // without a command, so only `resize_rootfs` on a partition is automatic.
        out.note = "is on a whole disk (no partition); not resized".into();
        return Ok(out);
    }
    let cmd = match entry.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            Cmd::new(ctx.tool(tools::RESIZE2FS), [part_dev.display().to_string()])
        }
        "xfs" => Cmd::new(ctx.tool(tools::XFS_GROWFS), [host_mp.display().to_string()]),
        "btrfs" => Cmd::new(
            ctx.tool(tools::BTRFS),
            [
                "filesystem".to_string(),
                "resize".into(),
                "max".into(),
                host_mp.display().to_string(),
            ],
        ),
        other => {
            warnings.push(format!(
                "{mount_point}: partition grown; filesystem {other} is not resized by stoke"
            ));
            out.note = format!("partition grown; {other} not resized");
            return Ok(out);
        }
    };
    let cmd = cmd.timeout(CMD_TIMEOUT);
    match ctx.system.run(&cmd).await {
        Ok(o) => {
            o.check(&cmd)?;
        }
        Err(SysError::Spawn { program, .. }) => {
            warnings.push(format!(
                "{mount_point}: {program} is not installed; the filesystem was not grown"
            ));
            out.note = "partition grown; filesystem not (tool missing)".into();
            return Ok(out);
        }
        Err(e) => return Err(e.into()),
    }
    out.filesystem_grown = true;
    out.note = format!(
        "grown to fill /dev/{}",
        out.disk
            .as_deref()
            .map_or(block.name.as_str(), |d| d.trim_start_matches("/dev/"))
    );
    Ok(out)
}

/// Grows partition `nr` of `disk` to the end. Ok(false): a tool was missing (warned).
async fn grow_partition(
    ctx: &Context,
    disk: &Path,
    nr: u32,
    mode: GrowMode,
    warnings: &mut Vec<String>,
) -> Result<bool, ModuleError> {
    let d = disk.display().to_string();
    let cmd = Cmd::new(ctx.tool(tools::GROWPART), [d.clone(), nr.to_string()]).timeout(CMD_TIMEOUT);
    match ctx.system.run(&cmd).await {
        // growpart: 0 grown, 1 with NOCHANGE nothing to do, 2 error.
        Ok(o) if o.success() => return Ok(true),
        Ok(o) if o.code == Some(1) && o.stdout.contains("NOCHANGE") => return Ok(false),
        // 127: "not found" from a wrapper (`tools:` may name a script), as a spawn failure.
        Ok(o) if o.code == Some(127) && mode == GrowMode::Auto => {}
        Ok(o) => {
            o.check(&cmd)?;
        }
        Err(SysError::Spawn { .. }) if mode == GrowMode::Auto => {}
        Err(SysError::Spawn { program, .. }) => {
            warnings.push(format!(
                "{program} is not installed (cloud-guest-utils); partition not grown"
            ));
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    // Without growpart: on GPT the backup header first moves to the new end of the disk
    // (else the usable area ends where the old disk did; an MBR disk refuses, harmlessly),
    // then sfdisk moves the end of the partition to the end of the disk (`, +`), leaving
    // the table's other entries alone; then the kernel is told.
    let relocate = Cmd::new(
        ctx.tool(tools::SFDISK),
        [
            "--relocate".to_string(),
            "gpt-bak-std".into(),
            "--no-reread".into(),
            "--no-tell-kernel".into(),
            d.clone(),
        ],
    )
    .timeout(CMD_TIMEOUT);
    let missing = match ctx.system.run(&relocate).await {
        Err(SysError::Spawn { .. }) => true,
        Ok(o) => o.code == Some(127),
        Err(_) => false,
    };
    if missing {
        warnings.push(
            "neither growpart (cloud-guest-utils) nor sfdisk is installed; partition not grown"
                .into(),
        );
        return Ok(false);
    }
    let cmd = Cmd::new(
        ctx.tool(tools::SFDISK),
        [
            "--no-reread".to_string(),
            "--no-tell-kernel".into(),
            "-N".into(),
            nr.to_string(),
            d.clone(),
        ],
    )
    .stdin(", +\n")
    .timeout(CMD_TIMEOUT);
    match ctx.system.run(&cmd).await {
        Ok(o) => {
            o.check(&cmd)?;
        }
        Err(SysError::Spawn { .. }) => {
            warnings.push(
                "neither growpart (cloud-guest-utils) nor sfdisk is installed; partition not grown"
                    .into(),
            );
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    let cmd = Cmd::new(
        ctx.tool(tools::PARTX),
        ["--update".to_string(), "--nr".into(), nr.to_string(), d],
    )
    .timeout(CMD_TIMEOUT);
    ctx.system.run(&cmd).await?.check(&cmd)?;
    Ok(true)
}
