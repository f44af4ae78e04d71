//! cloud-init's `write_files`: two modules over one list.
//!
//! - `write-files` (stage `local`, per-instance) writes the entries without `defer: true`;
//! - `write-files-deferred` (stage `final`, per-instance, after `users-groups` and
//!   `packages` when those run) writes the entries with `defer: true`, so a file
//!   can belong to a user or sit in a directory that a package creates.
//!
//! Each entry: `path` (absolute, required), `content` (default empty), `encoding`
//! (`b64`/`base64`, `gz`/`gzip`, `gz+b64`/`gzip+base64`/`gz+base64`/`gzip+b64`,
//! `text/plain`; any case), `owner` (`user:group` or `user`, default `root:root`;
//! names from the root's `/etc/passwd` and `/etc/group`, numeric ids accepted),
//! `permissions` (octal string `"0644"`/`"0o644"`, or an integer; default 0644),
//! `append`, `defer`. `source` (a URL) is not supported: that entry fails.
//!
//! # `!!binary`
//!
//! `content: !!binary <base64>` gives bytes. The loader keeps them
//! ([`stoke_api::parse_yaml`]): bytes that are UTF-8 arrive as the string they
//! spell, other bytes as `{"$binary": "<base64>"}`, read back by
//! [`stoke_api::TextOrBinary`]. Either way the file gets exactly those bytes, and
//! `encoding` still applies to them, as in cloud-init (`encoding: gzip` with
//! `!!binary` gzip data is its documented example).
//!
//! # Writing
//!
//! Every path is resolved inside the root ([`stoke_api::RootDir`]): a symlink
//! can never lead a write out of it. Missing parent directories are made (0755,
//! owned by stoke, i.e. root on a boot). A file is replaced atomically (temp file,
//! owner, mode, fsync, rename, fsync of the directory); an existing symlink or
//! directory at the path is refused. `append: true` appends (not atomic; created
//! if absent). Owner and mode are applied in both cases, as cloud-init does.
//!
//! One bad entry fails alone: the others are still written, and the module
//! reports failed naming each bad entry (`write_files[<index in the list>]` and
//! its path). Decoded content is capped at 64 MiB per run (gzip bombs included).

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Report, Root, RootDir, Stage,
    TextOrBinary, config_spec, lookup_group, lookup_user,
};

#[cfg(test)]
mod tests;

/// All decoded content of one run, together: what stoke will hold in memory.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
const DEFAULT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The stoke modules this crate provides.
pub fn modules() -> Vec<Box<dyn Module>> {
    vec![
        Box::new(WriteFiles { deferred: false }),
        Box::new(WriteFiles { deferred: true }),
    ]
}

/// The top-level configuration key these modules read.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct WriteFilesConfig {
    /// Files to write, as cloud-init's `write_files` (see docs/user-data.md).
    pub write_files: Option<Vec<FileEntry>>,
}

/// One `write_files` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute path of the file on the instance.
    pub path: String,
    /// The content (after decoding per `encoding`); YAML `!!binary` for bytes.
    #[serde(default)]
    pub content: TextOrBinary,
    /// cloud-init's remote source: not supported (the entry fails).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub source: Option<serde_json::Value>,
    /// `b64`, `gzip`, `gz+b64` (and their spellings) or `text/plain` (default).
    #[serde(default)]
    pub encoding: Option<String>,
    /// `user:group` or `user` (group root); names or numbers. Default `root:root`.
    #[serde(default)]
    pub owner: Option<String>,
    /// Octal mode: `"0644"`, `"0o644"`, or an integer (YAML `0644` is octal). Default 0644.
    #[serde(default)]
    pub permissions: Option<Permissions>,
    /// Append to the file instead of replacing it.
    #[serde(default)]
    pub append: bool,
    /// Write in the final stage (module `write-files-deferred`), after users and packages.
    #[serde(default)]
    pub defer: bool,
}

/// `permissions` as written: an integer (the mode itself) or an octal string.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Permissions {
    Number(u64),
    Text(String),
}

/// `write-files` or, with `deferred`, `write-files-deferred`.
pub struct WriteFiles {
    deferred: bool,
}

/// One entry, checked and decoded, ready to write.
#[derive(Debug)]
struct Planned {
    path: PathBuf,
    data: Vec<u8>,
    mode: u32,
    owner: String,
    uid: u32,
    gid: u32,
    append: bool,
    warnings: Vec<String>,
}

impl Planned {
    fn describe(&self) -> String {
        format!(
            "{} {} ({} bytes, mode {:04o}, owner {})",
            if self.append { "append to" } else { "write" },
            self.path.display(),
            self.data.len(),
            self.mode,
            self.owner
        )
    }
}

impl WriteFiles {
    fn name(&self) -> &'static str {
        if self.deferred {
            "write-files-deferred"
        } else {
            "write-files"
        }
    }

    /// This module's entries, with their index in the whole `write_files` list.
    fn entries<'a>(&self, cfg: &'a WriteFilesConfig) -> Vec<(usize, &'a FileEntry)> {
        cfg.write_files
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| e.defer == self.deferred)
            .collect()
    }
}

#[stoke_api::async_trait]
impl Module for WriteFiles {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: self.name(),
            stage: if self.deferred {
                Stage::Final
            } else {
                Stage::Local
            },
            frequency: Frequency::PerInstance,
            // Modules not in the run (not written yet, or disabled) are ignored by the runner.
            after: if self.deferred {
                &["users-groups", "packages"]
            } else {
                &[]
            },
            // The entries come from user-data.
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(60),
            config: config_spec::<WriteFilesConfig>(),
            order: stoke_api::Order::Normal,
        }
    }

    /// As cloud-init's `write_files` with no entries: not run (an empty run would still
    /// take its share of the stage's CPU).
    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        let cfg: WriteFilesConfig = serde_json::from_value(config.clone()).ok()?;
        self.entries(&cfg).is_empty().then(|| {
            if self.deferred {
                "no `write_files` entry with `defer: true`".to_string()
            } else {
                "no `write_files` entry".to_string()
            }
        })
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: WriteFilesConfig = ctx.config()?;
        let entries = self.entries(&cfg);
        if entries.is_empty() {
            return Ok(Report::new("no files to write").with_details(json!({"files": []})));
        }
        let dir = RootDir::open(&ctx.root)
            .map_err(|e| ModuleError::io("opening the root", ctx.root.dir(), e))?;
        let mut budget = MAX_TOTAL_BYTES;
        let mut files = Vec::new();
        let mut warnings = Vec::new();
        let mut failures = Vec::new();
        for (index, entry) in &entries {
            let label = format!("write_files[{index}] ({})", entry.path);
            let done = prepare(&ctx.root, entry, &mut budget).and_then(|p| {
                write(&dir, &p, ctx)?;
                Ok(p)
            });
            match done {
                Ok(p) => {
                    warnings.extend(p.warnings.iter().map(|w| format!("{label}: {w}")));
                    files.push(json!({
                        "index": index,
                        "path": p.path,
                        "bytes": p.data.len(),
                        "mode": format!("{:04o}", p.mode),
                        "owner": p.owner,
                        "uid": p.uid,
                        "gid": p.gid,
                        "append": p.append,
                    }));
                }
                Err(why) => failures.push(format!("{label}: {why}")),
            }
        }
        if !failures.is_empty() {
            let written: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
            return Err(ModuleError::Other(format!(
                "{} of {} entries failed: {}; written: {}",
                failures.len(),
                entries.len(),
                failures.join("; "),
                if written.is_empty() {
                    "none".to_string()
                } else {
                    written.join(", ")
                }
            )));
        }
        let n = files.len();
        let mut report = Report::new(format!("wrote {n} file{}", if n == 1 { "" } else { "s" }))
            .with_details(json!({ "files": files }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: WriteFilesConfig = match ctx.config() {
            Ok(c) => c,
            Err(e) => return Some(format!("would fail: configuration: {e}")),
        };
        let entries = self.entries(&cfg);
        if entries.is_empty() {
            return Some("no files to write".into());
        }
        let mut budget = MAX_TOTAL_BYTES;
        let lines: Vec<String> = entries
            .iter()
            .map(
                |(index, entry)| match prepare(&ctx.root, entry, &mut budget) {
                    Ok(p) => format!("would {}", p.describe()),
                    Err(why) => format!("write_files[{index}] ({}) would fail: {why}", entry.path),
                },
            )
            .collect();
        Some(lines.join("; "))
    }
}

/// Checks and decodes one entry (reads only: the root's passwd and group).
fn prepare(root: &Root, entry: &FileEntry, budget: &mut u64) -> Result<Planned, String> {
    if entry.source.is_some() {
        return Err(
            "`source` (fetching content from a URL) is not supported by stoke; \
                    give the content inline"
                .into(),
        );
    }
    let path = instance_path(&entry.path)?;
    let mut warnings = Vec::new();
    let (mode, warning) = mode_of(entry.permissions.as_ref())?;
    warnings.extend(warning);
    let owner = entry
        .owner
        .as_deref()
        .unwrap_or("root:root")
        .trim()
        .to_string();
    let (uid, gid) = resolve_owner(root, &owner)?;
    let data = decode(entry.content.as_bytes(), entry.encoding.as_deref(), *budget)?;
    *budget -= data.len() as u64;
    Ok(Planned {
        path,
        data,
        mode,
        owner,
        uid,
        gid,
        append: entry.append,
        warnings,
    })
}

fn write(dir: &RootDir, p: &Planned, ctx: &Context) -> Result<(), String> {
    let parent = p.path.parent().unwrap_or(Path::new("/"));
    dir.create_dir_all(parent, DIR_MODE)
        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let owner = Some((p.uid, p.gid));
    let system = ctx.system.as_ref();
    if p.append {
        dir.append(&p.path, &p.data, p.mode, owner, system)
            .map_err(|e| format!("appending: {e}"))
    } else {
        dir.write_atomic(&p.path, &p.data, p.mode, owner, system)
            .map_err(|e| format!("writing: {e}"))
    }
}

/// An absolute path naming a file, `.` and `..` resolved lexically.
fn instance_path(raw: &str) -> Result<PathBuf, String> {
    if !raw.starts_with('/') {
        return Err("`path` must be absolute".into());
    }
    if raw.contains('\0') {
        return Err("`path` contains a NUL byte".into());
    }
    let mut out = PathBuf::from("/");
    for comp in Path::new(raw).components() {
        match comp {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    if out == Path::new("/") || raw.ends_with('/') {
        return Err("`path` names a directory, not a file".into());
    }
    Ok(out)
}

/// The mode, and a warning for an integer that was most likely meant as octal.
fn mode_of(p: Option<&Permissions>) -> Result<(u32, Option<String>), String> {
    let mode = match p {
        None => return Ok((DEFAULT_MODE, None)),
        Some(Permissions::Number(n)) => *n,
        Some(Permissions::Text(s)) => {
            let t = s.trim();
            let digits = t
                .strip_prefix("0o")
                .or_else(|| t.strip_prefix("0O"))
                .unwrap_or(t);
            u64::from_str_radix(digits, 8)
                .map_err(|_| format!("permissions `{s}`: not an octal mode"))?
        }
    };
    if mode > 0o7777 {
        return Err(format!(
            "permissions {mode:o} (octal): more than the 12 mode bits"
        ));
    }
    // cloud-init takes an integer as the mode itself: `permissions: 644` (decimal)
    // is mode 1204. Kept for compatibility, but said.
    let warning = match p {
        Some(Permissions::Number(n))
            if *n > 0o777 && n.to_string().bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
        {
            Some(format!(
                "permissions {n} is a decimal number: mode {n:o} (octal); write \"0{n}\" for mode 0{n}"
            ))
        }
        _ => None,
    };
    Ok((mode as u32, warning))
}

/// `user[:group]` to ids: names from the root's files, else numbers; no group is
/// root's (what a file created by root has, as with cloud-init).
fn resolve_owner(root: &Root, owner: &str) -> Result<(u32, u32), String> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u.trim(), g.trim()),
        None => (owner, ""),
    };
    if user.is_empty() {
        return Err(format!("owner `{owner}`: no user"));
    }
    let uid = match lookup_user(root, user) {
        Ok(Some(u)) => u.uid,
        Ok(None) => numeric_or(user, "user", "/etc/passwd")?,
        Err(e) => return Err(format!("reading /etc/passwd: {e}")),
    };
    let gid = if group.is_empty() {
        0
    } else {
        match lookup_group(root, group) {
            Ok(Some(g)) => g.gid,
            Ok(None) => numeric_or(group, "group", "/etc/group")?,
            Err(e) => return Err(format!("reading /etc/group: {e}")),
        }
    };
    Ok((uid, gid))
}

fn numeric_or(name: &str, what: &str, file: &str) -> Result<u32, String> {
    if name == "root" {
        // Root is 0 even in a root whose account files lack it.
        return Ok(0);
    }
    name.parse()
        .map_err(|_| format!("no {what} `{name}` in the root's {file}"))
}

/// The content after `encoding`, at most `limit` bytes.
fn decode(content: &[u8], encoding: Option<&str>, limit: u64) -> Result<Vec<u8>, String> {
    let enc = encoding.unwrap_or("").trim().to_ascii_lowercase();
    let (b64, gz) = match enc.as_str() {
        "" | "text/plain" => (false, false),
        "b64" | "base64" => (true, false),
        "gz" | "gzip" => (false, true),
        "gz+b64" | "gzip+b64" | "gz+base64" | "gzip+base64" => (true, true),
        // cloud-init writes the content as it is after a warning; an entry that
        // is most likely mis-decoded is better refused.
        other => {
            return Err(format!(
                "unknown encoding `{other}` (known: b64, base64, gz, gzip, gz+b64, gz+base64, \
                 gzip+b64, gzip+base64, text/plain)"
            ));
        }
    };
    let mut data = if b64 {
        let cleaned: Vec<u8> = content
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        engine
            .decode(cleaned)
            .map_err(|e| format!("content is not valid base64: {e}"))?
    } else {
        content.to_vec()
    };
    if gz {
        let mut out = Vec::new();
        // Read one byte past the limit to tell "exactly the limit" from "more".
        flate2::read::MultiGzDecoder::new(data.as_slice())
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("content is not valid gzip data: {e}"))?;
        data = out;
    }
    if data.len() as u64 > limit {
        return Err(format!(
            "content decodes to more than {limit} bytes (all files of one run together: at most {MAX_TOTAL_BYTES})"
        ));
    }
    Ok(data)
}
