//! `volumes`: EBS data volumes, found by the device name they were attached as (`sdf`) or
//! by volume id, on every instance type: on Nitro a volume is an NVMe controller in any
//! order, its volume id the serial and its requested name in the identify data. A blank
//! volume gets the configured filesystem; one that holds anything else is refused unless
//! the entry says `overwrite: true` (the `disks` rules, `stoke_api::probe`). `mounts`
//! (which runs after it) mounts the results by UUID, as it mounts the `disks` volumes.
//! A volume that is not attached within `wait_seconds` is a warning, never a failed boot.
//!
//! Read top to bottom: [`config`] (the `volumes:` list), [`identify`] (the identify data
//! and the names), [`find`] (where each volume is), then this file (wait, probe, format,
//! links, report). docs/ec2.md has the rules in prose.

#![forbid(unsafe_code)]

pub mod config;
pub mod find;
pub mod identify;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use stoke_api::outputs::DiskVolume;
use stoke_api::probe::{Content, probe};
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Report, RootDir, Stage, config_spec,
    tools,
};

use crate::config::{Config, Entry};
use crate::find::{Found, IdentifyCache, controllers, find};

/// How often sysfs is looked at again while a volume is awaited.
const POLL: Duration = Duration::from_millis(250);
/// Where stoke links each volume by its requested name and its volume id.
pub const BY_EBS: &str = "/dev/disk/by-ebs";

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(VolumesModule)]
}

pub struct VolumesModule;

/// One entry's outcome, for status.
#[derive(Debug, Serialize)]
pub struct EntryReport {
    pub entry: String,
    pub want: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_by: Option<String>,
    /// "created" | "kept" | "not attached".
    pub action: String,
    /// How long the volume was waited for.
    pub waited_ms: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

/// Everything `volumes` reports: `volumes` is the typed contract with `mounts`
/// ([`stoke_api::outputs::VolumesOutput`]).
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub volumes: Vec<DiskVolume>,
    /// Mount points of the entries whose volume is not attached: their fstab lines stay.
    pub awaited: Vec<String>,
    pub entries: Vec<EntryReport>,
}

enum Plan {
    Keep {
        uuid: Option<String>,
        label: Option<String>,
    },
    Create {
        wipe: bool,
    },
}

/// Waits for the entries' volumes, each at most its `wait_seconds`; returns what was found
/// and when (ms since the start).
async fn wait_for_volumes(
    ctx: &Context,
    root: &RootDir,
    entries: &[Entry],
    warnings: &mut BTreeSet<String>,
) -> Vec<Option<(Found, u64)>> {
    // tokio's clock: the wait is bounded in the runtime's time (tests pause it).
    let started = tokio::time::Instant::now();
    let mut found: Vec<Option<(Found, u64)>> = vec![None; entries.len()];
    let mut cache = IdentifyCache::default();
    loop {
        let ctrls = controllers(root);
        for (slot, entry) in found.iter_mut().zip(entries) {
            if slot.is_none()
                && let Some(f) = find(ctx, root, &ctrls, &mut cache, entry).await
            {
                *slot = Some((f, started.elapsed().as_millis() as u64));
            }
        }
        warnings.extend(cache.warnings.drain(..));
        let elapsed = started.elapsed();
        let awaited = found
            .iter()
            .zip(entries)
            .any(|(f, e)| f.is_none() && elapsed < Duration::from_secs(e.volume.wait_seconds));
        if !awaited {
            return found;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What to do with a found volume, or why not.
fn decide(
    entry: &Entry,
    device: &str,
    content: &Content,
) -> Result<(Plan, Option<String>), String> {
    let fs = entry.volume.filesystem.as_str();
    match content {
        Content::Filesystem {
            fstype,
            uuid,
            label,
        } if fstype == fs => Ok((
            Plan::Keep {
                uuid: uuid.clone(),
                label: label.clone(),
            },
            None,
        )),
        Content::Blank => Ok((Plan::Create { wipe: false }, None)),
        other if entry.volume.overwrite => Ok((
            Plan::Create { wipe: true },
            Some(format!(
                "{}: overwrite: wiping {device} ({})",
                entry.label(),
                other.describe()
            )),
        )),
        Content::Filesystem { fstype, .. } => Err(format!(
            "{}: {device} holds {}, not {fs}; set {}.filesystem: {fstype} to use it, or \
             {}.overwrite: true to wipe it",
            entry.label(),
            content.describe(),
            entry.origin,
            entry.origin
        )),
        other => Err(format!(
            "{}: {device} holds {}; set {}.overwrite: true to wipe it",
            entry.label(),
            other.describe(),
            entry.origin
        )),
    }
}

/// A failure while working on an entry's volume, naming the entry.
fn in_entry(entry: &Entry, e: ModuleError) -> ModuleError {
    ModuleError::Other(format!("{}: {e}", entry.label()))
}

async fn run_checked(ctx: &Context, cmd: &Cmd) -> Result<(), ModuleError> {
    ctx.system.run(cmd).await?.check(cmd).map(|_| ())
}

/// `/dev/disk/by-ebs/<name>` → the device, unless it already leads there. Returns the
/// links made or found right.
fn link(root: &RootDir, found: &Found) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    names.extend(found.requested.clone());
    names.extend(found.volume_key.as_deref().map(identify::volume_id_text));
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let Some(dev_rel) = found.device.strip_prefix("/dev/") else {
        return Ok(Vec::new());
    };
    let target = Path::new("../..").join(dev_rel);
    let want = root
        .real_path(Path::new(&found.device))
        .map_err(|e| format!("{}: {e}", found.device))?
        .map(|(p, _)| p);
    root.create_dir_all(Path::new(BY_EBS), 0o755)
        .map_err(|e| format!("creating {BY_EBS}: {e}"))?;
    let mut out = Vec::new();
    for name in names {
        let path = format!("{BY_EBS}/{name}");
        let now = root
            .real_path(Path::new(&path))
            .ok()
            .flatten()
            .map(|(p, _)| p);
        if now.is_none() || now != want {
            root.symlink_atomic(Path::new(&path), &target)
                .map_err(|e| format!("linking {path}: {e}"))?;
        }
        out.push(path);
    }
    Ok(out)
}

#[stoke_api::async_trait]
impl Module for VolumesModule {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "volumes",
            stage: Stage::Local,
            frequency: Frequency::PerBoot,
            after: &[],
            // Volumes are found on the machine itself, not in the metadata.
            needs_metadata: false,
            before_logins: false,
            // Waits (at most 600 s per entry) and mkfs of a large volume.
            timeout: Duration::from_secs(20 * 60),
            config: config_spec::<Config>(),
            order: stoke_api::Order::Normal,
        }
    }

    /// Without `volumes:` the module neither runs nor holds back a `before_metadata` `mounts`
    /// (an image that names no volumes). `mounts` then keeps the lines of volumes an earlier
    /// boot of this instance mounted, as it does for a volume not attached this boot.
    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        config
            .get("volumes")
            .is_none_or(serde_json::Value::is_null)
            .then(|| "no `volumes:` section".to_string())
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: Config = ctx.config()?;
        let entries = config::entries(&cfg)?;
        let mut out = Outcome::default();
        if entries.is_empty() {
            // Still a report: `mounts` then drops the lines of volumes no longer configured.
            let details =
                serde_json::to_value(&out).map_err(|e| ModuleError::Other(e.to_string()))?;
            return Ok(Report::new("volumes: none configured").with_details(details));
        }
        let root =
            RootDir::open(&ctx.root).map_err(|e| ModuleError::io("opening", ctx.root.dir(), e))?;
        let mut warnings = BTreeSet::new();
        let found = wait_for_volumes(ctx, &root, &entries, &mut warnings).await;
        let mut warnings: Vec<String> = warnings.into_iter().collect();

        // Every decision first: a refusal changes nothing, for any entry.
        let mut plans = Vec::new();
        let mut refusals = Vec::new();
        for (entry, f) in entries.iter().zip(&found) {
            let Some((f, waited)) = f else {
                warnings.push(format!(
                    "{}: not attached after {} s; nothing formatted or mounted for it this \
                     boot (its fstab line, if an earlier boot made one, is kept; stoke looks \
                     again at the next boot)",
                    entry.label(),
                    entry.volume.wait_seconds
                ));
                out.awaited.extend(entry.volume.mount_point.clone());
                out.entries.push(EntryReport {
                    entry: entry.origin.clone(),
                    want: entry.want.describe(),
                    device: None,
                    found_by: None,
                    action: "not attached".into(),
                    waited_ms: entry.volume.wait_seconds * 1000,
                    links: Vec::new(),
                });
                continue;
            };
            let content = probe(ctx, &f.device)
                .await
                .map_err(|e| in_entry(entry, e))?;
            match decide(entry, &f.device, &content) {
                Ok((plan, warning)) => {
                    warnings.extend(warning);
                    plans.push((entry, f, *waited, plan));
                }
                Err(why) => refusals.push(why),
            }
        }
        if !refusals.is_empty() {
            return Err(ModuleError::Refused(format!(
                "{}; nothing was changed",
                refusals.join("; ")
            )));
        }

        for (entry, f, waited, plan) in plans {
            let v = &entry.volume;
            let host = ctx.host_path(&f.device).display().to_string();
            let (uuid, label, action) = match plan {
                Plan::Keep { uuid, label } => (uuid, label, "kept"),
                Plan::Create { wipe } => {
                    if wipe {
                        let cmd = Cmd::new(ctx.tool(tools::WIPEFS), ["-a", host.as_str()])
                            .timeout(Duration::from_secs(60));
                        run_checked(ctx, &cmd)
                            .await
                            .map_err(|e| in_entry(entry, e))?;
                    }
                    let uuid = uuid::Uuid::new_v4().to_string();
                    // A blank EBS volume reads as zeros already: no discard pass.
                    let cmd = v
                        .filesystem
                        .mkfs(ctx, &host, v.label.as_deref(), &uuid, true, &[]);
                    run_checked(ctx, &cmd)
                        .await
                        .map_err(|e| in_entry(entry, e))?;
                    (Some(uuid), v.label.clone(), "created")
                }
            };
            let links = link(&root, f).unwrap_or_else(|e| {
                warnings.push(format!("{}: {e}", entry.label()));
                Vec::new()
            });
            out.volumes.push(DiskVolume {
                device: f.device.clone(),
                uuid,
                fstype: v.filesystem.as_str().into(),
                label,
                mountpoint: v.mount_point.clone(),
                mount_options: v.options.clone(),
                action: action.into(),
                members: vec![f.device.clone()],
                index: None,
            });
            out.entries.push(EntryReport {
                entry: entry.origin.clone(),
                want: entry.want.describe(),
                device: Some(f.device.clone()),
                found_by: Some(f.how.clone()),
                action: action.into(),
                waited_ms: waited,
                links,
            });
        }
        out.entries.sort_by_key(|e| {
            e.entry
                .trim_start_matches("volumes[")
                .trim_end_matches(']')
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let count = |a: &str| out.volumes.iter().filter(|v| v.action == a).count();
        let missing = entries.len() - out.volumes.len();
        let mut summary = format!(
            "volumes: {} found ({} created, {} kept)",
            out.volumes.len(),
            count("created"),
            count("kept")
        );
        if missing > 0 {
            summary.push_str(&format!(", {missing} not attached"));
        }
        let details = serde_json::to_value(&out).map_err(|e| ModuleError::Other(e.to_string()))?;
        let mut report = Report::new(summary).with_details(details);
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let entries = match ctx
            .config::<Config>()
            .map_err(ModuleError::from)
            .and_then(|c| config::entries(&c))
        {
            Ok(e) => e,
            Err(e) => return Some(format!("would fail: {e}")),
        };
        if entries.is_empty() {
            return Some("no volumes configured".into());
        }
        let ctrls = RootDir::open(&ctx.root)
            .map(|r| controllers(&r))
            .unwrap_or_default();
        let ebs = ctrls
            .iter()
            .filter(|c| c.model == identify::EBS_MODEL)
            .count();
        let mut words = Vec::new();
        for e in &entries {
            let v = &e.volume;
            let now = match &e.want {
                config::Want::VolumeId(key) => ctrls
                    .iter()
                    .find(|c| identify::volume_key(&c.serial).as_deref() == Some(key))
                    .map(|c| format!("now {}", c.block.as_deref().unwrap_or(&c.name)))
                    .unwrap_or_else(|| "not attached now".into()),
                config::Want::Device { .. } => format!(
                    "looked up by requested name in the identify data of {ebs} EBS NVMe \
                     controllers (or /dev/xvd*, /dev/sd*)"
                ),
            };
            words.push(format!(
                "{}: {now}; waits up to {} s; {} if blank, kept if {}, else refused{}; {}",
                e.label(),
                v.wait_seconds,
                v.filesystem.as_str(),
                v.filesystem.as_str(),
                if v.overwrite {
                    " (overwrite: wiped)"
                } else {
                    ""
                },
                v.mount_point
                    .as_deref()
                    .map(|m| format!("mounted at {m} by mounts"))
                    .unwrap_or_else(|| "not mounted".into())
            ));
        }
        Some(words.join("; "))
    }
}
