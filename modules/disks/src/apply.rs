//! The decisions (keep, assemble, create, refuse) and the commands that carry them out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use stoke_api::{Cmd, CmdOutput, Context, ModuleError, managed_block, render, tools, udev};

use crate::config::{Disks, Mode};
use crate::discover::{Candidate, Discovery, Excluded, Sys};
use stoke_api::probe::{Content, parse_export, probe};

/// What the configuration asks of the disks found.
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    Nothing(String),
    Raid0(Vec<Candidate>),
    Single(Candidate),
    Jbod(Vec<Candidate>),
}

pub fn layout(cfg: &Disks, disks: &[Candidate], warnings: &mut Vec<String>) -> Layout {
    match (cfg.mode, disks) {
        (Mode::Off, _) => Layout::Nothing("mode is off".into()),
        (_, []) => Layout::Nothing("no ephemeral disks found".into()),
        (Mode::Raid0, [one]) | (Mode::Single, [one]) => Layout::Single(one.clone()),
        (Mode::Raid0, many) => Layout::Raid0(many.to_vec()),
        (Mode::Single, [first, rest @ ..]) => {
            warnings.push(format!(
                "mode single: using {} only; {} left alone",
                first.device,
                rest.iter()
                    .map(|c| c.device.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Layout::Single(first.clone())
        }
        (Mode::Jbod, many) => Layout::Jbod(many.to_vec()),
    }
}

impl Layout {
    /// One line for `stoke plan` and summaries.
    pub fn describe(&self, cfg: &Disks) -> String {
        let names = |v: &[Candidate]| {
            v.iter()
                .map(|c| format!("{} ({})", c.device, c.origin))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fs = cfg.filesystem.as_str();
        match self {
            Layout::Nothing(why) => format!("nothing to do: {why}"),
            Layout::Single(c) => format!(
                "{fs} on {} ({}){}",
                c.device,
                c.origin,
                mount_words(cfg, &cfg.mount_point)
            ),
            Layout::Raid0(v) => format!(
                "raid0 /dev/md/{} of {} disks [{}], {fs}{}",
                cfg.array_name,
                v.len(),
                names(v),
                mount_words(cfg, &cfg.mount_point)
            ),
            Layout::Jbod(v) => format!(
                "jbod: {fs} on each of {} disks [{}]{}",
                v.len(),
                names(v),
                mount_words(cfg, &cfg.jbod_mount_point)
            ),
        }
    }
}

fn mount_words(cfg: &Disks, at: &str) -> String {
    if cfg.mount {
        format!(", mounted at {at}")
    } else {
        String::new()
    }
}

/// The typed contract with `mounts` (stoke-api), not a copy of it.
pub use stoke_api::outputs::DiskVolume as Volume;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ArrayInfo {
    pub device: String,
    pub members: Vec<String>,
    pub chunk_kib: u64,
    /// "created" | "assembled" | "active".
    pub action: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Step {
    pub step: String,
    pub target: String,
    pub ms: u64,
}

/// Everything `disks` reports (the Report details).
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub mode: &'static str,
    /// "raid0" | "single" | "jbod" | "none".
    pub layout: &'static str,
    pub disks: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
    pub ephemeral: BTreeMap<String, String>,
    pub array: Option<ArrayInfo>,
    pub volumes: Vec<Volume>,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Runs commands for one module run, timing each step.
pub struct Applier<'a> {
    pub ctx: &'a Context,
    pub cfg: &'a Disks,
    pub steps: Vec<Step>,
    pub warnings: Vec<String>,
}

impl<'a> Applier<'a> {
    pub fn new(ctx: &'a Context, cfg: &'a Disks) -> Self {
        Applier {
            ctx,
            cfg,
            steps: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn host(&self, dev: &str) -> String {
        self.ctx.host_path(dev).display().to_string()
    }

    /// Runs a tool; a non-zero exit is an error carrying stderr.
    async fn run(
        &mut self,
        step: &str,
        target: &str,
        tool: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<CmdOutput, ModuleError> {
        self.run_cmd(
            step,
            target,
            Cmd::new(self.ctx.tool(tool), args).timeout(timeout),
        )
        .await
    }

    /// A step that took from `since` until now.
    pub fn record(&mut self, step: &str, target: &str, since: Instant) {
        self.steps.push(Step {
            step: step.into(),
            target: target.into(),
            ms: since.elapsed().as_millis() as u64,
        });
    }

    /// What is on `device` (`stoke_api::probe`), recorded as a step: on a first boot it is on
    /// the way to mkfs, so its time belongs in the module's account.
    async fn probe(&mut self, device: &str) -> Result<Content, ModuleError> {
        let t = Instant::now();
        let content = probe(self.ctx, device).await?;
        self.record("probe", device, t);
        Ok(content)
    }

    async fn run_cmd(
        &mut self,
        step: &str,
        target: &str,
        cmd: Cmd,
    ) -> Result<CmdOutput, ModuleError> {
        let t = Instant::now();
        tracing::info!(command = %cmd.display(), "disks: {step} {target}");
        let out = self.ctx.system.run(&cmd).await?;
        self.record(step, target, t);
        out.check(&cmd)
    }

    /// Waits for udev's events of the disks the module may use (`devwait`), or of
    /// `devices`, bounded by `settle_timeout`; recorded as a step naming what was watched
    /// (nothing waited for without udev and with nothing missing). A failure is a warning.
    pub async fn wait_udev(&mut self, devices: Option<&[String]>) -> Result<(), ModuleError> {
        let secs = self.cfg.settle_secs()?;
        let (all, first): (Vec<String>, Vec<String>) = match devices {
            Some(d) => (
                d.to_vec(),
                d.iter()
                    .filter(|d| !udev::ready(self.ctx, d))
                    .cloned()
                    .collect(),
            ),
            None => crate::devwait::watched(self.ctx, self.cfg),
        };
        if first.is_empty() && !udev::present(self.ctx) {
            return Ok(());
        }
        let t = Instant::now();
        let r = match devices {
            Some(d) => udev::wait(self.ctx, d, secs).await,
            None => crate::devwait::wait(self.ctx, self.cfg, secs).await,
        };
        self.record("wait for udev", &all.join(" "), t);
        if let Err(e) = r {
            // What is still missing or half-assembled is refused by the steps that follow
            // (discovery names a missing device), so a failure here is worth a warning, not
            // a failed boot.
            self.warnings.push(format!("waiting for udev: {e}"));
        }
        Ok(())
    }

    async fn wipe(&mut self, dev: &str) -> Result<(), ModuleError> {
        let host = self.host(dev);
        self.run(
            "wipefs",
            dev,
            tools::WIPEFS,
            vec!["-a".into(), host],
            Duration::from_secs(60),
        )
        .await
        .map(|_| ())
    }

    /// Makes the configured filesystem; returns the UUID it was given.
    async fn mkfs(&mut self, dev: &str, label: &str, nvme: bool) -> Result<String, ModuleError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let host = self.host(dev);
        // Instance store comes trimmed: no discard at mkfs on NVMe.
        let cmd = self.cfg.filesystem.mkfs(
            self.ctx,
            &host,
            Some(label),
            &uuid,
            nvme,
            &self.cfg.mkfs_options,
        );
        let step = format!("mkfs.{}", self.cfg.filesystem.as_str());
        self.run_cmd(&step, dev, cmd).await?;
        Ok(uuid)
    }

    /// `mdadm --detail --export` of an md device, as KEY=value pairs (MD_NAME, MD_LEVEL...).
    async fn md_detail(&mut self, md: &str) -> Result<BTreeMap<String, String>, ModuleError> {
        let host = self.host(md);
        let out = self
            .run(
                "mdadm --detail",
                md,
                tools::MDADM,
                vec!["--detail".into(), "--export".into(), host],
                Duration::from_secs(30),
            )
            .await?;
        Ok(parse_export(&out.stdout))
    }

    fn is_ours(&self, md_name: Option<&str>) -> bool {
        md_name.is_some_and(|n| n.rsplit(':').next() == Some(self.cfg.array_name.as_str()))
    }

    /// Checks md holders: disks held by an array that is not stoke's are excluded
    /// (discovered) or refused (listed in config). Returns the holder that is stoke's array.
    pub async fn resolve_md_holders(
        &mut self,
        disc: &mut Discovery,
    ) -> Result<Option<String>, ModuleError> {
        let holders: BTreeSet<String> = disc
            .candidates
            .iter()
            .filter_map(|c| c.md_holder.clone())
            .collect();
        let mut ours = None;
        for md in holders {
            let vars = self.md_detail(&format!("/dev/{md}")).await?;
            let name = vars.get("MD_NAME").map(String::as_str);
            if self.is_ours(name) {
                ours = Some(md);
                continue;
            }
            let why = format!(
                "in use by {md} (array {}, not stoke's {})",
                name.unwrap_or("?"),
                self.cfg.array_name
            );
            if let Some(c) = disc
                .candidates
                .iter()
                .find(|c| c.md_holder.as_ref() == Some(&md) && c.origin == "config")
            {
                return Err(ModuleError::Refused(format!("{} {why}", c.device)));
            }
            let (held, free): (Vec<_>, Vec<_>) = std::mem::take(&mut disc.candidates)
                .into_iter()
                .partition(|c| c.md_holder.as_ref() == Some(&md));
            disc.candidates = free;
            disc.excluded.extend(held.into_iter().map(|c| Excluded {
                device: c.device,
                reason: why.clone(),
            }));
        }
        Ok(ours)
    }

    /// Single disk or JBOD: one filesystem per disk.
    pub async fn plain(
        &mut self,
        disks: &[Candidate],
        jbod: bool,
    ) -> Result<Vec<Volume>, ModuleError> {
        enum Plan {
            Keep(Option<String>, Option<String>),
            Create { wipe: bool },
        }
        let mut plans = Vec::new();
        let mut refusals = Vec::new();
        for c in disks {
            if let Some(md) = &c.md_holder {
                refusals.push(format!(
                    "{} is a member of the array {md} (assembled by the kernel; with too few \
                     disks for the layout, a member may be missing): not formatting it. \
                     Bring the missing disk back, or `mdadm --stop /dev/{md}` and set \
                     `force: true` to start over",
                    c.device
                ));
                continue;
            }
            let content = self.probe(&c.device).await?;
            let plan = match &content {
                Content::Filesystem {
                    fstype,
                    uuid,
                    label,
                } if fstype == self.cfg.filesystem.as_str() => {
                    Plan::Keep(uuid.clone(), label.clone())
                }
                _ if !c.mounted_at.is_empty() => {
                    refusals.push(format!(
                        "{} is mounted at {} ({}); not touching it",
                        c.device,
                        c.mounted_at.join(", "),
                        content.describe()
                    ));
                    continue;
                }
                Content::Blank => Plan::Create { wipe: false },
                other if self.cfg.force => {
                    self.warnings.push(format!(
                        "force: wiping {} ({})",
                        c.device,
                        other.describe()
                    ));
                    Plan::Create { wipe: true }
                }
                other => {
                    refusals.push(format!("{} holds {}", c.device, other.describe()));
                    continue;
                }
            };
            plans.push((c, plan));
        }
        refuse_if_any(refusals)?;

        // JBOD indexes are stable across boots: a kept filesystem labelled
        // `<label><N>` keeps index N (device names change between boots).
        let mut indexes: Vec<Option<usize>> = plans
            .iter()
            .map(|(_, p)| match p {
                Plan::Keep(_, Some(l)) if jbod => l
                    .strip_prefix(self.cfg.label.as_str())
                    .and_then(|n| n.parse().ok()),
                _ => None,
            })
            .collect();
        let mut used = BTreeSet::new();
        for ix in indexes.iter_mut() {
            if let Some(n) = *ix
                && !used.insert(n)
            {
                *ix = None;
            }
        }
        let mut next = 0;
        for ix in indexes.iter_mut().filter(|i| i.is_none()) {
            while used.contains(&next) {
                next += 1;
            }
            used.insert(next);
            *ix = Some(next);
        }

        let mut volumes = Vec::new();
        for ((c, plan), ix) in plans.into_iter().zip(indexes) {
            let index = ix.unwrap_or(0);
            let label = if jbod {
                format!("{}{index}", self.cfg.label)
            } else {
                self.cfg.label.clone()
            };
            let (uuid, label, action) = match plan {
                Plan::Keep(uuid, l) => (uuid, l, "kept"),
                Plan::Create { wipe } => {
                    if wipe {
                        self.wipe(&c.device).await?;
                    }
                    let uuid = self.mkfs(&c.device, &label, c.is_nvme()).await?;
                    (Some(uuid), Some(label), "created")
                }
            };
            let mountpoint = if jbod {
                self.jbod_mount_point(index)?
            } else {
                self.cfg.mount_point.clone()
            };
            volumes.push(self.volume(
                &c.device,
                uuid,
                label,
                mountpoint,
                action,
                vec![c.device.clone()],
                jbod.then_some(index),
            ));
        }
        Ok(volumes)
    }

    fn jbod_mount_point(&self, index: usize) -> Result<String, ModuleError> {
        let mut vars = self.ctx.vars.clone();
        vars.insert("index".into(), index.to_string());
        Ok(render(&self.cfg.jbod_mount_point, &vars)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn volume(
        &self,
        device: &str,
        uuid: Option<String>,
        label: Option<String>,
        mountpoint: String,
        action: &str,
        members: Vec<String>,
        index: Option<usize>,
    ) -> Volume {
        Volume {
            device: device.into(),
            uuid,
            fstype: self.cfg.filesystem.as_str().into(),
            label,
            mountpoint: self.cfg.mount.then_some(mountpoint),
            mount_options: self.cfg.mount_options.clone(),
            action: action.into(),
            members,
            index,
        }
    }

    /// RAID0: use the active array, assemble it, or create it; then its filesystem.
    pub async fn raid0(
        &mut self,
        disks: &[Candidate],
        ours_active: Option<String>,
    ) -> Result<(ArrayInfo, Volume), ModuleError> {
        let chunk = self.cfg.chunk_kib()?;
        let name = self.cfg.array_name.clone();
        let md_link = format!("/dev/md/{name}");
        let members: Vec<String> = disks.iter().map(|c| c.device.clone()).collect();

        let mounted: Vec<String> = disks
            .iter()
            .filter(|c| !c.mounted_at.is_empty())
            .map(|c| format!("{} is mounted at {}", c.device, c.mounted_at.join(", ")))
            .collect();
        refuse_if_any(mounted)?;

        let (device, action, members) = if let Some(md) = ours_active {
            // Already running (assembled by udev at boot, or by an earlier run).
            let device = if self
                .ctx
                .root
                .fs()
                .is_ok_and(|rd| rd.exists(Path::new(&md_link)))
            {
                md_link.clone()
            } else {
                format!("/dev/{md}")
            };
            let sys = Sys::read(&self.ctx.root);
            let in_array: Vec<String> = sys
                .backing_disks(&md)
                .into_iter()
                .filter(|d| *d != md)
                .map(|d| format!("/dev/{d}"))
                .collect();
            let outside: Vec<&String> = members.iter().filter(|m| !in_array.contains(m)).collect();
            if !outside.is_empty() {
                self.warnings.push(format!(
                    "{device} is active without {}; left alone",
                    outside
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            (device, "active", in_array)
        } else if self
            .ctx
            .root
            .fs()
            .is_ok_and(|rd| rd.exists(Path::new(&md_link)))
        {
            return Err(ModuleError::Refused(format!(
                "{md_link} exists but holds none of {}; stop it or set disks.array_name",
                members.join(", ")
            )));
        } else {
            let mut contents = Vec::new();
            for c in disks {
                contents.push(self.probe(&c.device).await?);
            }
            let action = self.assemble_or_create(disks, &contents, chunk).await?;
            // The array's event: udev makes /dev/md/<name> (what fstab and mounts name).
            if udev::present(self.ctx) {
                self.wait_udev(Some(std::slice::from_ref(&md_link))).await?;
            }
            (md_link.clone(), action, members)
        };

        let nvme = disks.iter().all(Candidate::is_nvme);
        let label = self.cfg.label.clone();
        let new_array = action == "created";
        let (uuid, label, fs_action) = match self.probe(&device).await? {
            Content::Filesystem {
                fstype,
                uuid,
                label,
            } if fstype == self.cfg.filesystem.as_str() && !new_array => (uuid, label, "kept"),
            // An array made a moment ago from blank or wiped disks can still show an
            // old signature at its data offset: that is stale, never data to keep.
            other if new_array && other != Content::Blank => {
                self.warnings.push(format!(
                    "stale {} on the new array {device}: wiped",
                    other.describe()
                ));
                self.wipe(&device).await?;
                (
                    Some(self.mkfs(&device, &label, nvme).await?),
                    Some(label),
                    "created",
                )
            }
            Content::Blank => (
                Some(self.mkfs(&device, &label, nvme).await?),
                Some(label),
                "created",
            ),
            other if self.cfg.force => {
                self.warnings
                    .push(format!("force: wiping {device} ({})", other.describe()));
                self.wipe(&device).await?;
                (
                    Some(self.mkfs(&device, &label, nvme).await?),
                    Some(label),
                    "created",
                )
            }
            other => {
                return Err(ModuleError::Refused(format!(
                    "{device} holds {}; set disks.force: true to wipe it",
                    other.describe()
                )));
            }
        };
        if let Some(conf) = self.cfg.mdadm_conf.clone() {
            self.write_mdadm_conf(&conf, &device).await?;
        }
        let array = ArrayInfo {
            device: device.clone(),
            members: members.clone(),
            chunk_kib: chunk,
            action: action.into(),
        };
        let vol = self.volume(
            &device,
            uuid,
            label,
            self.cfg.mount_point.clone(),
            fs_action,
            members,
            None,
        );
        Ok((array, vol))
    }

    /// The decision table for disks that are not in a running array.
    async fn assemble_or_create(
        &mut self,
        disks: &[Candidate],
        contents: &[Content],
        chunk: u64,
    ) -> Result<&'static str, ModuleError> {
        let name = self.cfg.array_name.clone();
        let md_link = format!("/dev/md/{name}");
        let host_members: Vec<String> = disks.iter().map(|c| self.host(&c.device)).collect();

        // All members of one array of ours → assemble it (no resync, data kept).
        let array_uuids: BTreeSet<Option<&String>> = contents
            .iter()
            .map(|c| match c {
                Content::MdMember { array_uuid, name } if self.is_ours(name.as_deref()) => {
                    Some(array_uuid.as_ref())
                }
                _ => None,
            })
            .collect::<Option<_>>()
            .unwrap_or_default();
        let mut problem = None;
        if array_uuids.len() == 1 {
            let host0 = host_members[0].clone();
            let out = self
                .run(
                    "mdadm --examine",
                    &disks[0].device,
                    tools::MDADM,
                    vec!["--examine".into(), "--export".into(), host0],
                    Duration::from_secs(30),
                )
                .await?;
            let vars = parse_export(&out.stdout);
            let level = vars.get("MD_LEVEL").map(String::as_str);
            let count = vars.get("MD_DEVICES").and_then(|n| n.parse::<usize>().ok());
            match (level, count) {
                (Some(l), _) if l != "raid0" => {
                    problem = Some(format!("stoke's array on these disks is {l}, not raid0"))
                }
                (_, Some(n)) if n != disks.len() => {
                    problem = Some(format!(
                        "stoke's array had {n} members, {} are here",
                        disks.len()
                    ))
                }
                _ => {
                    let mut args = vec!["--assemble".into(), self.host(&md_link)];
                    args.extend(host_members.iter().cloned());
                    self.run(
                        "mdadm --assemble",
                        &md_link,
                        tools::MDADM,
                        args,
                        Duration::from_secs(120),
                    )
                    .await?;
                    return Ok("assembled");
                }
            }
        }

        let mut foreign: Vec<String> = disks
            .iter()
            .zip(contents)
            .filter(|(_, c)| **c != Content::Blank)
            .map(|(d, c)| format!("{} holds {}", d.device, c.describe()))
            .collect();
        if let Some(p) = problem {
            foreign.insert(0, p);
        }
        if !foreign.is_empty() {
            if !self.cfg.force {
                refuse_if_any(foreign.clone())?;
            }
            self.warnings
                .push(format!("force: wiping: {}", foreign.join("; ")));
            for (d, c) in disks.iter().zip(contents) {
                if *c != Content::Blank {
                    self.wipe(&d.device).await?;
                }
            }
        }
        let mut args = vec![
            "--create".into(),
            self.host(&md_link),
            "--run".into(),
            "--level=0".into(),
            format!("--raid-devices={}", disks.len()),
            format!("--chunk={chunk}K"),
            "--metadata=1.2".into(),
            format!("--name={name}"),
            // Not tied to the hostname: the same name on every host (and after a rename).
            "--homehost=any".into(),
        ];
        args.extend(host_members);
        self.run(
            "mdadm --create",
            &md_link,
            tools::MDADM,
            args,
            Duration::from_secs(120),
        )
        .await?;
        Ok("created")
    }

    async fn write_mdadm_conf(&mut self, conf: &str, device: &str) -> Result<(), ModuleError> {
        let host = self.host(device);
        let out = self
            .run(
                "mdadm --detail --brief",
                device,
                tools::MDADM,
                vec!["--detail".into(), "--brief".into(), host],
                Duration::from_secs(30),
            )
            .await?;
        let line: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("ARRAY "))
            .collect();
        if line.is_empty() {
            self.warnings
                .push(format!("{conf} not updated: mdadm printed no ARRAY line"));
            return Ok(());
        }
        let path = self.ctx.host_path(conf);
        let rd = self.ctx.fs()?;
        let existing = rd
            .read_string(Path::new(conf), 4 * 1024 * 1024)
            .map_err(|e| ModuleError::io("reading", &path, e))?
            .unwrap_or_default();
        let new = managed_block(
            &existing,
            "# BEGIN stoke disks",
            "# END stoke disks",
            &line.join("\n"),
        );
        if new != existing {
            rd.replace_keeping(Path::new(conf), new.as_bytes(), 0o644, true)
                .map_err(|e| ModuleError::io("writing", &path, e))?;
        }
        Ok(())
    }
}

/// Fails with every reason at once, before anything was changed.
fn refuse_if_any(reasons: Vec<String>) -> Result<(), ModuleError> {
    if reasons.is_empty() {
        return Ok(());
    }
    let hint = if reasons.iter().any(|r| r.contains(" holds ")) {
        " (disks.force: true wipes data stoke did not make)"
    } else {
        ""
    };
    Err(ModuleError::Refused(format!(
        "{}; nothing was changed{hint}",
        reasons.join("; ")
    )))
}
