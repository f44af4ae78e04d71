//! `swap`: cloud-init's `swap: {filename, size, maxsize}` (done by cloud-init's
//! mounts module; here a module of its own in this crate, to share the fstab code).
//!
//! Per instance, stage `local`, after `mounts` (the file may live on a filesystem
//! that `mounts` mounts). The file is made under a temp name beside it (0600,
//! preallocated with `fallocate`, `dd` if that is refused; `chattr +C` first on
//! btrfs), given `mkswap`, renamed into place, then `swapon`; one fstab line marked
//! `x-stoke=swap` is kept in step (every other line stays byte-identical). A file
//! already there of the right size with a swap signature is reused as it is; a
//! file without a swap signature is never overwritten.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage,
    config_spec, tools, unescape_octal,
};

use crate::fstab::{self, Entry, MARKER_SWAP, norm};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const DEFAULT_FILENAME: &str = "/swap.img";
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

pub struct SwapModule;

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SwapConfig {
    /// cloud-init's `swap`: `{filename: /swap.img, size: 0, maxsize}`.
    pub swap: Option<SwapSection>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapSection {
    /// Path of the swap file. Default `/swap.img`.
    #[serde(default = "default_filename")]
    pub filename: String,
    /// Bytes, a size with a K/M/G/T suffix (`2G`, `512M`; powers of 1024), or `auto`.
    /// Rounded down to whole MiB; 0 (default) means no swap file.
    #[serde(default)]
    pub size: Option<Size>,
    /// The most `auto` may choose (same forms as `size`). Default: 8 GiB, and at most a
    /// quarter of the free space.
    #[serde(default)]
    pub maxsize: Option<Size>,
}

fn default_filename() -> String {
    DEFAULT_FILENAME.into()
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// `1048576`, `512M`, `1.5G`, `2GB`, `4k`: powers of 1024, as cloud-init reads them.
fn parse_size(what: &str, size: &Size) -> Result<u64, String> {
    let text = match size {
        Size::Bytes(n) => return Ok(*n),
        Size::Text(t) => t.trim(),
    };
    let bad =
        || format!("swap.{what} {text:?}: expected bytes, a size such as 512M or 2G, or auto");
    let t = text.strip_suffix(['B', 'b']).unwrap_or(text);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_digit() || c == '.' => (t, 1u64),
        Some(c) => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => MIB,
                'G' => GIB,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..t.len() - c.len_utf8()], mult)
        }
        None => return Err(bad()),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 || n * mult as f64 > u64::MAX as f64 {
        return Err(bad());
    }
    Ok((n * mult as f64) as u64)
}

fn is_auto(size: &Option<Size>) -> bool {
    matches!(size, Some(Size::Text(t)) if t.trim().eq_ignore_ascii_case("auto"))
}

/// cloud-init's suggestion for `auto`: as much as memory below 4 GiB, 4 GiB below 16 GiB,
/// else √(GiB of memory) GiB; capped by `maxsize`, which defaults to 8 GiB and a quarter
/// of the free space, and is never more than 90% of it.
fn suggested(mem: u64, avail: Option<u64>, maxsize: Option<u64>) -> u64 {
    let max = match (avail, maxsize) {
        (Some(a), None) => (a / 4).min(8 * GIB),
        (Some(a), Some(m)) => m.min(a / 10 * 9),
        (None, Some(m)) => m,
        (None, None) => 8 * GIB,
    };
    let min = if mem < 4 * GIB {
        mem
    } else if mem < 16 * GIB {
        4 * GIB
    } else {
        ((mem as f64 / GIB as f64).sqrt().round() as u64) * GIB
    };
    min.min(max)
}

fn mem_total(ctx: &Context, rd: &RootDir) -> Result<u64, ModuleError> {
    let p = Path::new("/proc/meminfo");
    let text = rd
        .read_regular(p, MIB)
        .map_err(|e| ModuleError::io("reading", ctx.host_path(p), e))?
        .ok_or_else(|| {
            ModuleError::Other(format!(
                "swap.size auto: no {} to read the memory size from",
                ctx.host_path(p).display()
            ))
        })?;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            kb.checked_mul(1024)
        })
        .ok_or_else(|| ModuleError::Other("swap.size auto: no MemTotal in /proc/meminfo".into()))
}

/// The filename as a normalised absolute path, or why it cannot hold a swap file.
fn check_filename(name: &str) -> Result<String, ModuleError> {
    let bad = |why: &str| ModuleError::Invalid(format!("swap.filename {name:?}: {why}"));
    if !name.starts_with('/') {
        return Err(bad("not an absolute path"));
    }
    if name.contains(['\0', '\n']) {
        return Err(bad("contains a NUL or newline"));
    }
    let n = norm(name);
    if n == "/" || name.ends_with('/') {
        return Err(bad("names a directory"));
    }
    if ["/proc/", "/sys/", "/dev/", "/run/"]
        .iter()
        .any(|p| n.starts_with(p))
    {
        return Err(bad("is under a virtual filesystem"));
    }
    Ok(n)
}

/// The size to make, in whole MiB (0: no swap file).
fn wanted_mib(
    ctx: &Context,
    rd: &RootDir,
    sec: &SwapSection,
    file: &str,
) -> Result<u64, ModuleError> {
    let bytes = if is_auto(&sec.size) {
        let maxsize = match &sec.maxsize {
            Some(m) => Some(parse_size("maxsize", m).map_err(ModuleError::Invalid)?),
            None => None,
        };
        let parent = Path::new(file).parent().unwrap_or(Path::new("/"));
        // The nearest existing directory (resolved inside the root): the file's own may
        // not exist yet.
        let avail = parent
            .ancestors()
            .find_map(|d| nix::sys::statvfs::fstatvfs(rd.open_dir(d).ok()?).ok())
            .map(|v| v.fragment_size().saturating_mul(v.blocks_free()));
        suggested(mem_total(ctx, rd)?, avail, maxsize)
    } else {
        match &sec.size {
            Some(s) => parse_size("size", s).map_err(ModuleError::Invalid)?,
            None => 0,
        }
    };
    Ok(bytes / MIB)
}

/// Paths in /proc/swaps (as the kernel sees them: host paths).
fn active_swaps(ctx: &Context, rd: &RootDir) -> Result<Vec<String>, ModuleError> {
    let p = Path::new("/proc/swaps");
    let text = rd
        .read_regular(p, MIB)
        .map_err(|e| ModuleError::io("reading", ctx.host_path(p), e))?
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(unescape_octal))
        .collect())
}

/// mkswap's signature sits in the last 10 bytes of the first page; pages are 4, 16 or
/// 64 KiB depending on the architecture.
fn has_swap_signature(file: &mut std::fs::File) -> std::io::Result<bool> {
    let mut head = Vec::with_capacity(65536);
    file.take(65536).read_to_end(&mut head)?;
    Ok([4096usize, 8192, 16384, 65536].iter().any(|&ps| {
        head.get(ps - 10..ps)
            .is_some_and(|s| s == b"SWAPSPACE2" || s == b"SWAP-SPACE")
    }))
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ModuleError + 'a {
    move |e| ModuleError::io(what, path, e)
}

async fn run_checked(ctx: &Context, cmd: Cmd) -> Result<(), ModuleError> {
    ctx.system.run(&cmd).await?.check(&cmd).map(|_| ())
}

/// Makes the swap file under a temp name and renames it into place: an interrupted
/// run leaves no half-made swap file at `file`. Returns how its blocks were allocated.
async fn create(
    ctx: &Context,
    rd: &RootDir,
    file: &str,
    mib: u64,
    notes: &mut Vec<String>,
) -> Result<&'static str, ModuleError> {
    let guest = Path::new(file);
    let parent = guest.parent().unwrap_or(Path::new("/"));
    let name = guest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.stoke-new"));
    let tmp_host = ctx.host_path(&tmp);
    let tmp_arg = tmp_host.display().to_string();
    rd.create_dir_all(parent, 0o755)
        .map_err(io_err("creating", &ctx.host_path(parent)))?;
    // A leftover of an interrupted run.
    rd.remove_file(&tmp)
        .map_err(io_err("removing", &tmp_host))?;
    drop(
        rd.create_new(&tmp, 0o600)
            .map_err(io_err("creating", &tmp_host))?,
    );
    let result = async {
        let btrfs = rd
            .open_dir(parent)
            .ok()
            .and_then(|d| nix::sys::statfs::fstatfs(d).ok())
            .is_some_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC);
        if btrfs {
            // btrfs swaps only from a no-copy-on-write file, set while it is empty.
            run_checked(
                ctx,
                Cmd::new(ctx.tool(tools::CHATTR), ["+C", tmp_arg.as_str()]).timeout(CMD_TIMEOUT),
            )
            .await?;
        }
        let fa = Cmd::new(
            ctx.tool(tools::FALLOCATE),
            ["-l".to_string(), (mib * MIB).to_string(), tmp_arg.clone()],
        )
        .timeout(CMD_TIMEOUT);
        let out = ctx.system.run(&fa).await?;
        let how = if out.success() {
            "fallocate"
        } else {
            notes.push(format!(
                "fallocate refused ({}): written with dd",
                out.stderr.trim()
            ));
            // Writes every block: bounded at 2 minutes plus one second per 16 MiB.
            run_checked(
                ctx,
                Cmd::new(
                    ctx.tool(tools::DD),
                    [
                        "if=/dev/zero".to_string(),
                        format!("of={tmp_arg}"),
                        "bs=1M".into(),
                        format!("count={mib}"),
                        "conv=fsync".into(),
                    ],
                )
                .timeout(CMD_TIMEOUT + Duration::from_secs(mib / 16)),
            )
            .await?;
            "dd"
        };
        run_checked(
            ctx,
            Cmd::new(ctx.tool(tools::MKSWAP), [tmp_arg.as_str()]).timeout(CMD_TIMEOUT),
        )
        .await?;
        if ctx.system.executes() {
            rd.rename_in_dir(&tmp, guest)
                .map_err(io_err("renaming into place", &ctx.host_path(guest)))?;
        } else {
            // Recorded only: the empty temp file is no swap file; leave nothing behind.
            rd.remove_file(&tmp)
                .map_err(io_err("removing", &tmp_host))?;
        }
        Ok(how)
    }
    .await;
    if result.is_err() {
        let _ = rd.remove_file(&tmp);
    }
    result
}

#[stoke_api::async_trait]
impl Module for SwapModule {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "swap",
            stage: Stage::Local,
            frequency: Frequency::PerInstance,
            after: &["mounts"],
            needs_metadata: false,
            before_logins: false,
            timeout: Duration::from_secs(30 * 60),
            config: config_spec::<SwapConfig>(),
            order: Order::Normal,
        }
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        let cfg: SwapConfig = serde_json::from_value(config.clone()).ok()?;
        match cfg.swap {
            None => Some("no `swap:` section".into()),
            Some(s) if s.size.is_none() => Some("no swap.size".into()),
            Some(s) if !is_auto(&s.size) => match s.size.as_ref().map(|z| parse_size("size", z)) {
                Some(Ok(n)) if n < MIB => Some("swap.size is below 1 MiB".into()),
                _ => None,
            },
            _ => None,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: SwapConfig = ctx.config()?;
        let Some(sec) = cfg.swap else {
            return Ok(Report::new("swap: no `swap:` section"));
        };
        let file = check_filename(&sec.filename)?;
        let rd = ctx.fs()?;
        let mib = wanted_mib(ctx, &rd, &sec, &file)?;
        if mib == 0 {
            return Ok(Report::new("swap: size 0, no swap file"));
        }
        let guest = PathBuf::from(&file);
        let host = ctx.host_path(&guest);
        let host_arg = host.display().to_string();
        let mut notes = Vec::new();

        let action = if active_swaps(ctx, &rd)?.contains(&host_arg) {
            "already active".to_string()
        } else {
            let existing = rd
                .open_regular(&guest)
                .map_err(|e| ModuleError::Refused(format!("swap.filename {file}: {e}")))?;
            let done = match existing {
                Some(mut f) => {
                    let len = f.metadata().map_err(io_err("reading", &host))?.len();
                    if !has_swap_signature(&mut f).map_err(io_err("reading", &host))? {
                        return Err(ModuleError::Refused(format!(
                            "swap.filename {file} exists and is not a swap file (no swap \
                             signature); stoke does not overwrite it"
                        )));
                    }
                    if len == mib * MIB {
                        f.set_permissions(std::fs::Permissions::from_mode(0o600))
                            .map_err(io_err("chmod", &host))?;
                        "reused".to_string()
                    } else {
                        let how = create(ctx, &rd, &file, mib, &mut notes).await?;
                        format!("replaced a {} MiB one ({how})", len / MIB)
                    }
                }
                None => format!(
                    "created ({})",
                    create(ctx, &rd, &file, mib, &mut notes).await?
                ),
            };
            run_checked(
                ctx,
                Cmd::new(ctx.tool(tools::SWAPON), [host_arg.as_str()]).timeout(CMD_TIMEOUT),
            )
            .await?;
            done
        };

        // The fstab line, written once swapon has taken the file: a line for a file the
        // kernel refuses would fail every later boot.
        let fstab_guest = Path::new("/etc/fstab");
        let fstab_host = ctx.host_path(fstab_guest);
        let existing = rd
            .read_regular(fstab_guest, 4 * MIB)
            .map_err(io_err("reading", &fstab_host))?
            .map(String::from_utf8)
            .transpose()
            .map_err(|_| ModuleError::Other(format!("{} is not UTF-8", fstab_host.display())))?
            .unwrap_or_default();
        let foreign = fstab::entries(&existing).into_iter().any(|(_, e)| {
            !e.is_owned() && e.vfstype == "swap" && e.spec.starts_with('/') && norm(&e.spec) == file
        });
        let desired = if foreign {
            notes.push(format!(
                "/etc/fstab already has a line for {file} (not stoke's): left as it is"
            ));
            Vec::new()
        } else {
            vec![Entry {
                spec: file.clone(),
                file: "none".into(),
                vfstype: "swap".into(),
                mntops: format!("sw,{MARKER_SWAP}"),
                freq: "0".into(),
                passno: "0".into(),
            }]
        };
        let rw = fstab::rewrite(&existing, &desired, |e| !e.is_swap());
        let fstab_changed = rw.text != existing;
        if fstab_changed {
            rd.create_dir_all(Path::new("/etc"), 0o755)
                .map_err(io_err("creating", &ctx.host_path("/etc")))?;
            rd.write_atomic(fstab_guest, rw.text.as_bytes(), 0o644, None, &*ctx.system)
                .map_err(io_err("writing", &fstab_host))?;
        }
        let mut summary = format!("swap: {file} {mib} MiB {action}");
        if fstab_changed {
            summary.push_str(", /etc/fstab updated");
        }
        // Notes, not warnings: a dd fallback or the image's own fstab line is no fault.
        Ok(Report::new(summary).with_details(json!({
            "filename": file,
            "size": mib * MIB,
            "action": action,
            "fstab_changed": fstab_changed,
            "notes": notes,
        })))
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: SwapConfig = match ctx.config() {
            Ok(c) => c,
            Err(e) => return Some(format!("would fail: {e}")),
        };
        let s = cfg.swap?;
        Some(format!(
            "a swap file at {} (fallocate, mkswap, swapon) with one /etc/fstab line ({MARKER_SWAP})",
            s.filename
        ))
    }
}

#[cfg(test)]
#[path = "swap_tests.rs"]
mod tests;
