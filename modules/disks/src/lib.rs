//! `disks`: finds the instance's ephemeral (instance-store) disks and makes them one
//! RAID0 array or one filesystem per disk (JBOD), idempotently on every boot, never
//! wiping data it did not make. `mounts` (which runs after it) mounts the results.
//!
//! Read top to bottom: [`config`] (the `disks:` section), [`discover`] (which disks),
//! `stoke_api::probe` (what is on them, shared with `volumes`), [`apply`] (the decision table and the commands).
//! docs/storage.md has the rules in prose.

#![forbid(unsafe_code)]

pub mod apply;
pub mod config;
pub mod devwait;
pub mod discover;

use std::time::Duration;

use stoke_api::{Context, Frequency, Module, ModuleError, ModuleSpec, Report, Stage, config_spec};

use crate::apply::{Applier, Layout, Outcome, layout};
use crate::config::{Config, Disks, Mode};
use crate::discover::discover;

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(DisksModule)]
}

pub struct DisksModule;

fn section(ctx: &Context) -> Result<Disks, ModuleError> {
    Ok(ctx.config::<Config>()?.disks.unwrap_or_default())
}

#[stoke_api::async_trait]
impl Module for DisksModule {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "disks",
            stage: Stage::Local,
            frequency: Frequency::PerBoot,
            after: &[],
            // NVMe discovery needs no metadata; the IMDS block-device-mapping is used
            // when the datasource already has it (cached, NoCloud), so data disks are
            // ready before services start instead of waiting for the network stage.
            needs_metadata: false,
            before_logins: false,
            timeout: Duration::from_secs(20 * 60),
            config: config_spec::<Config>(),
            order: stoke_api::Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg = section(ctx)?;
        cfg.validate(0)?;
        if cfg.mode == Mode::Off {
            return Ok(Report::new("disks: mode off, nothing done"));
        }
        let mut applier = Applier::new(ctx, &cfg);
        // stoke-local does not wait for udevd: on a reboot udev may still be assembling
        // our array one member at a time (`mdadm --incremental`), and a link may be
        // missing. Seen half-done, the array would be refused. (devwait says what is waited for.)
        applier.wait_udev(None).await?;
        let looked = std::time::Instant::now();
        let mut disc = discover(&ctx.root, &ctx.instance, &cfg).inspect_err(|_| {
            // A failed run reports no warnings: these say why a device is still missing.
            for w in &applier.warnings {
                tracing::warn!("disks: {w}");
            }
        })?;
        let ours_active = applier.resolve_md_holders(&mut disc).await?;
        let found: Vec<&str> = disc.candidates.iter().map(|c| c.device.as_str()).collect();
        applier.record("discover", &found.join(" "), looked);
        cfg.validate(disc.candidates.len())?;
        let mut warnings = Vec::new();
        let plan = layout(&cfg, &disc.candidates, &mut warnings);
        let mut out = Outcome {
            mode: cfg.mode.as_str(),
            layout: "none",
            disks: disc.candidates.clone(),
            excluded: disc.excluded.clone(),
            ephemeral: disc.ephemeral.clone(),
            array: None,
            volumes: Vec::new(),
            steps: Vec::new(),
            notes: disc.notes.clone(),
            warnings,
        };
        let summary = match &plan {
            Layout::Nothing(why) => format!("disks: {why}"),
            Layout::Single(c) => {
                out.layout = "single";
                out.volumes = applier.plain(std::slice::from_ref(c), false).await?;
                let v = &out.volumes[0];
                format!("disks: {} {} on {}", v.fstype, v.action, v.device)
            }
            Layout::Jbod(cs) => {
                out.layout = "jbod";
                out.volumes = applier.plain(cs, true).await?;
                let made = out.volumes.iter().filter(|v| v.action == "created").count();
                format!(
                    "disks: jbod of {} disks ({made} filesystems created, {} kept)",
                    cs.len(),
                    cs.len() - made
                )
            }
            Layout::Raid0(cs) => {
                out.layout = "raid0";
                let (array, vol) = applier.raid0(cs, ours_active).await?;
                let s = format!(
                    "disks: raid0 {} of {} disks {}, {} {}",
                    array.device,
                    cs.len(),
                    array.action,
                    vol.fstype,
                    vol.action
                );
                out.array = Some(array);
                out.volumes = vec![vol];
                s
            }
        };
        out.steps = std::mem::take(&mut applier.steps);
        out.warnings.append(&mut applier.warnings);
        let details = serde_json::to_value(&out).map_err(|e| ModuleError::Other(e.to_string()))?;
        let mut report = Report::new(summary).with_details(details);
        for w in out.warnings {
            report.warn(w);
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg = match section(ctx).and_then(|c| c.validate(0).map(|_| c)) {
            Ok(c) => c,
            Err(e) => return Some(format!("would fail: {e}")),
        };
        if cfg.mode == Mode::Off {
            return Some("mode off: nothing".into());
        }
        let disc = match discover(&ctx.root, &ctx.instance, &cfg) {
            Ok(d) => d,
            Err(e) => return Some(format!("would fail: {e}")),
        };
        let mut warnings = Vec::new();
        let mut words = vec![layout(&cfg, &disc.candidates, &mut warnings).describe(&cfg)];
        words.extend(warnings);
        for c in &disc.candidates {
            if let Some(md) = &c.md_holder {
                words.push(format!(
                    "{} is held by {md} (used if it is stoke's array)",
                    c.device
                ));
            }
        }
        for x in &disc.excluded {
            words.push(format!("excluded {}: {}", x.device, x.reason));
        }
        words.extend(disc.notes);
        if !matches!(
            layout(&cfg, &disc.candidates, &mut Vec::new()),
            Layout::Nothing(_)
        ) {
            words.push(
                "an existing array or filesystem is used as is; blank disks are formatted; \
                 foreign data is refused"
                    .to_string()
                    + if cfg.force { " (force: wiped)" } else { "" },
            );
        }
        Some(words.join("; "))
    }
}
