//! Acceptance checks (`checks:`): the image says what a ready machine looks like, stoke
//! checks it at the end of the boot, and a failed `error` check makes the boot `error`
//! (the instance is not ready). `stoke verify` runs the same checks in a build pipeline.
//!
//! One module per stage (`checks-local`, `checks-network`, `checks`), each after every
//! other module of its stage but the final message and power-state change; a check runs
//! in the stage it names (default final). Checks of one stage run concurrently.

#![forbid(unsafe_code)]

mod config;
mod probe;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage, config_spec,
};

pub use config::{Check, CheckSpec, ChecksConfig, FileType, Kind, Mode, Severity};

pub fn modules() -> Vec<Box<dyn Module>> {
    [Stage::Local, Stage::Network, Stage::Final]
        .into_iter()
        .map(|s| Box::new(Checks { stage: Some(s) }) as Box<dyn Module>)
        .collect()
}

/// Runs the checks of one stage; with no stage (`stoke verify`), every check.
pub struct Checks {
    pub stage: Option<Stage>,
}

/// What one check found, as `stoke status` and `stoke verify` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `file`, `service`, ...
    pub kind: String,
    /// What was checked, in one line (`file /etc/motd`, `port 443`).
    pub subject: String,
    pub passed: bool,
    pub severity: Severity,
    /// When it failed: what was found instead; when it passed, what was seen.
    pub found: String,
    pub duration_ms: u64,
}

/// The outcome of a module run, in the report's details.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChecksReport {
    pub checks: Vec<CheckResult>,
}

impl Checks {
    fn name(&self) -> &'static str {
        match self.stage {
            Some(Stage::Local) => "checks-local",
            Some(Stage::Network) => "checks-network",
            Some(Stage::Final) | None => "checks",
        }
    }
}

#[stoke_api::async_trait]
impl Module for Checks {
    fn spec(&self) -> ModuleSpec {
        let stage = self.stage.unwrap_or(Stage::Final);
        ModuleSpec {
            name: self.name(),
            stage,
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: stage != Stage::Local,
            before_logins: false,
            // Each command check has its own bound; this one covers them all.
            timeout: Duration::from_secs(15 * 60),
            config: config_spec::<ChecksConfig>(),
            order: Order::Checks,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: ChecksConfig = ctx.config()?;
        let chosen: Vec<(&String, &Check)> = cfg
            .checks
            .iter()
            .flatten()
            .filter(|(_, c)| match self.stage {
                Some(s) => c.stage() == s,
                None => c.verify != Some(false),
            })
            .collect();
        if chosen.is_empty() {
            return Ok(Report::new("no checks"));
        }
        let results = futures_util::future::join_all(
            chosen
                .iter()
                .map(|(name, check)| run_check(ctx, name, check)),
        )
        .await;
        report(results)
    }
}

/// The module's outcome: a failed `error` check fails it (its report kept), a failed
/// `warning` check is a warning.
fn report(results: Vec<CheckResult>) -> Result<Report, ModuleError> {
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed).collect();
    let errors: Vec<String> = failed
        .iter()
        .filter(|r| r.severity == Severity::Error)
        .map(|r| format!("{} ({})", r.name, r.found))
        .collect();
    let summary = format!(
        "{} of {} checks passed",
        results.len() - failed.len(),
        results.len()
    );
    let mut report = Report::new(summary.clone()).with_details(json!(ChecksReport {
        checks: results.clone()
    }));
    for r in failed.iter().filter(|r| r.severity == Severity::Warning) {
        report.warn(format!("check {} failed: {}", r.name, r.found));
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(ModuleError::Partial {
            message: format!("{summary}; failed: {}", errors.join("; ")),
            report: Box::new(report),
        })
    }
}

async fn run_check(ctx: &Context, name: &str, check: &Check) -> CheckResult {
    let started = Instant::now();
    // Well-formed since load (`Check` is only built from a spec whose kind is right).
    let (kind, subject, outcome) = match check.kind() {
        Ok(kind) => {
            let subject = subject(&kind);
            let outcome = probe::probe(ctx, &kind, check).await;
            (kind.name().to_string(), subject, outcome)
        }
        Err(e) => ("invalid".into(), String::new(), Err(e)),
    };
    let (passed, found) = match outcome {
        Ok(seen) => (true, seen),
        Err(why) => (false, why),
    };
    let result = CheckResult {
        name: name.to_string(),
        kind,
        subject,
        passed,
        severity: check.severity(),
        found,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if result.passed {
        tracing::info!("check {}: passed ({})", result.name, result.found);
    } else {
        tracing::warn!("check {}: FAILED: {}", result.name, result.found);
    }
    result
}

fn subject(kind: &Kind) -> String {
    match kind {
        Kind::File(p) => format!("file {p}"),
        Kind::Service(s) => format!("service {s}"),
        Kind::Command(argv) => format!("command {}", argv.join(" ")),
        Kind::Port(p) => format!("port {p}"),
        Kind::Mount(m) => format!("mount {m}"),
        Kind::User(u) => format!("user {u}"),
        Kind::Group(g) => format!("group {g}"),
        Kind::Package(p) => format!("package {p}"),
    }
}

#[cfg(test)]
mod tests;
