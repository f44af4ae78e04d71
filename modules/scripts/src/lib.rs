//! The user's code, as cloud-init runs it (docs/user-data.md):
//! - `bootcmd` (local stage, every boot, before the other modules of its stage): the
//!   user-data's boothooks, then the `bootcmd` list as one script;
//! - `scripts` (final stage): `runcmd` as one script, the user-data's scripts, then the
//!   image's script directories (per-boot, per-instance, per-once), in that order.
//!
//! Each script is bounded by a timeout that kills its whole process group, its outcome,
//! duration and output tail go to `stoke status`, its whole output to the journal and
//! `/var/log/stoke/scripts/`. A per-instance or per-once script is started at most once.

#![forbid(unsafe_code)]

mod config;
mod exec;

use std::time::Duration;

use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, ScriptKind, ScriptOutcome,
    ScriptRun, ScriptsReport, Stage, UserScript, config_spec,
};

pub use config::{BootcmdConfig, CommandLine, FinalConfig, ScriptSettings, shell_script};
use exec::{Body, Due, Job, Scripts, dir_scripts};

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(Bootcmd), Box::new(FinalScripts)]
}

/// Where baked scripts live: stoke's own, then cloud-init's (an image moving from
/// cloud-init keeps working).
const IMAGE_DIRS: [(&str, &str); 2] = [
    ("image", "/var/lib/stoke/scripts"),
    ("cloud-image", "/var/lib/cloud/scripts"),
];

/// A bound on the whole module: each script has its own timeout; this only catches a
/// module that would otherwise never end.
const MODULE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

pub struct Bootcmd;

impl Bootcmd {
    fn jobs(ctx: &Context, cfg: &BootcmdConfig) -> Vec<Job> {
        let settings = cfg.scripts.clone().unwrap_or_default();
        let timeout = Duration::from_secs(settings.early_timeout_seconds);
        let mut jobs: Vec<Job> = ctx
            .user_scripts
            .iter()
            .filter(|s| s.kind == ScriptKind::Boothook)
            .map(|s| Job {
                name: s.name.clone(),
                source: "boothook",
                frequency: Frequency::PerBoot,
                body: Body::Content(strip_first_line(&s.content)),
                timeout,
            })
            .collect();
        if let Some(lines) = cfg.bootcmd.as_deref().filter(|l| !l.is_empty()) {
            jobs.push(Job {
                name: "bootcmd".into(),
                source: "bootcmd",
                frequency: Frequency::PerBoot,
                body: Body::Content(shell_script(lines).into_bytes()),
                timeout,
            });
        }
        jobs
    }
}

#[stoke_api::async_trait]
impl Module for Bootcmd {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "bootcmd",
            stage: Stage::Local,
            frequency: Frequency::PerBoot,
            after: &[],
            // Boothooks and bootcmd come with the user-data.
            needs_metadata: true,
            before_logins: false,
            timeout: MODULE_TIMEOUT,
            config: config_spec::<BootcmdConfig>(),
            order: Order::First,
        }
    }

    /// Nothing to run holds nothing back: as the first module of the local stage, an
    /// empty run would still make every other module wait for it.
    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        scripts: &[UserScript],
    ) -> Option<String> {
        let cfg: BootcmdConfig = serde_json::from_value(config.clone()).ok()?;
        let commands = cfg.bootcmd.is_some_and(|l| !l.is_empty());
        let hooks = scripts.iter().any(|s| s.kind == ScriptKind::Boothook);
        (!commands && !hooks).then(|| "no `bootcmd` and no boothook in the user-data".to_string())
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: BootcmdConfig = ctx.config()?;
        let jobs = Self::jobs(ctx, &cfg);
        let runner = Scripts {
            ctx,
            retry_failed: false,
        };
        finish(runner.run_all(&jobs).await)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: BootcmdConfig = ctx.config().ok()?;
        plan_line(ctx, &Self::jobs(ctx, &cfg), false)
    }
}

pub struct FinalScripts;

impl FinalScripts {
    fn jobs(ctx: &Context, cfg: &FinalConfig) -> Vec<Job> {
        let settings = cfg.scripts.clone().unwrap_or_default();
        let timeout = Duration::from_secs(settings.timeout_seconds);
        let mut jobs = Vec::new();
        if let Some(lines) = cfg.runcmd.as_deref().filter(|l| !l.is_empty()) {
            jobs.push(Job {
                name: "runcmd".into(),
                source: "runcmd",
                frequency: Frequency::PerInstance,
                body: Body::Content(shell_script(lines).into_bytes()),
                timeout,
            });
        }
        let parts = |freq: Frequency| {
            ctx.user_scripts
                .iter()
                .filter(move |s| s.kind == ScriptKind::Script(freq))
                .map(move |s| Job {
                    name: s.name.clone(),
                    source: "user-data",
                    frequency: freq,
                    body: Body::Content(s.content.clone()),
                    timeout,
                })
        };
        jobs.extend(parts(Frequency::PerInstance));
        for freq in [Frequency::PerBoot, Frequency::PerInstance, Frequency::Once] {
            let sub = match freq {
                Frequency::PerBoot => "per-boot",
                Frequency::PerInstance => "per-instance",
                Frequency::Once => "per-once",
            };
            for (source, base) in IMAGE_DIRS {
                let dir = std::path::PathBuf::from(format!("{base}/{sub}"));
                jobs.extend(dir_scripts(ctx, &dir).into_iter().map(|(name, path)| Job {
                    name,
                    source,
                    frequency: freq,
                    body: Body::File(path),
                    timeout,
                }));
            }
            // MIME parts of that frequency run with the image's scripts of the same one.
            if freq != Frequency::PerInstance {
                jobs.extend(parts(freq));
            }
        }
        jobs
    }
}

#[stoke_api::async_trait]
impl Module for FinalScripts {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "scripts",
            stage: Stage::Final,
            // Each script keeps its own frequency (start records); the module looks every boot.
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: MODULE_TIMEOUT,
            config: config_spec::<FinalConfig>(),
            // As cloud-init's scripts_user: after the stage's normal modules (write_files
            // deferred, packages, puppet, ...), whatever became of them; before the final
            // message and the power-state change.
            order: Order::Late,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: FinalConfig = ctx.config()?;
        let settings = cfg.scripts.clone().unwrap_or_default();
        let jobs = Self::jobs(ctx, &cfg);
        let runner = Scripts {
            ctx,
            retry_failed: settings.retry_failed,
        };
        finish(runner.run_all(&jobs).await)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: FinalConfig = ctx.config().ok()?;
        let retry = cfg.scripts.as_ref().is_some_and(|s| s.retry_failed);
        plan_line(ctx, &Self::jobs(ctx, &cfg), retry)
    }
}

/// A boothook's body without its `#cloud-boothook` line.
fn strip_first_line(content: &[u8]) -> Vec<u8> {
    match content.iter().position(|&b| b == b'\n') {
        Some(i) => content[i + 1..].to_vec(),
        None => Vec::new(),
    }
}

/// The module's outcome: failed (with every script's record kept) when any script failed.
fn finish(runs: Vec<ScriptRun>) -> Result<Report, ModuleError> {
    let count = |o: ScriptOutcome| runs.iter().filter(|r| r.outcome == o).count();
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| matches!(r.outcome, ScriptOutcome::Failed | ScriptOutcome::TimedOut))
        .map(|r| format!("{}/{} {}", r.source, r.name, r.note))
        .collect();
    let summary = if runs.is_empty() {
        "nothing to run".to_string()
    } else {
        let mut parts = Vec::new();
        for o in [
            ScriptOutcome::Ok,
            ScriptOutcome::Failed,
            ScriptOutcome::TimedOut,
            ScriptOutcome::Recorded,
            ScriptOutcome::Skipped,
        ] {
            let n = count(o);
            if n > 0 {
                parts.push(format!("{n} {}", o.as_str()));
            }
        }
        format!("{} script(s): {}", runs.len(), parts.join(", "))
    };
    let details =
        serde_json::to_value(ScriptsReport { scripts: runs }).unwrap_or(serde_json::Value::Null);
    let report = Report::new(summary).with_details(details);
    if failed.is_empty() {
        Ok(report)
    } else {
        Err(ModuleError::Partial {
            message: format!("failed: {}", failed.join("; ")),
            report: Box::new(report),
        })
    }
}

/// What `stoke plan` says: what would run, and what would not and why.
fn plan_line(ctx: &Context, jobs: &[Job], retry_failed: bool) -> Option<String> {
    if jobs.is_empty() {
        return Some("nothing configured".into());
    }
    let runner = Scripts { ctx, retry_failed };
    let mut run = Vec::new();
    let mut not = Vec::new();
    for job in jobs {
        let label = format!("{}/{}", job.source, job.name);
        match runner.due(job) {
            Due::Yes => run.push(label),
            Due::No(why) => not.push(format!("{label} ({why})")),
        }
    }
    let mut out = String::new();
    if !run.is_empty() {
        out.push_str(&format!("would run: {}", run.join(", ")));
    }
    if !not.is_empty() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&format!("not again: {}", not.join(", ")));
    }
    Some(out)
}

#[cfg(test)]
mod tests;
