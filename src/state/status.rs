//! `/run/stoke/status.json`: the live record of this boot — stages, each
//! module's outcome, reason and duration — read by `stoke status`/`analyze`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use stoke_api::{Frequency, Stage};

use crate::paths::Paths;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModState {
    Pending,
    Running,
    Ok,
    Failed,
    /// Not due (frequency says it already ran).
    Skipped,
    /// Waits for a later stage (metadata not available yet).
    Deferred,
    /// A module it runs after failed.
    Blocked,
    Disabled,
}

impl ModState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModState::Pending => "pending",
            ModState::Running => "running",
            ModState::Ok => "ok",
            ModState::Failed => "failed",
            ModState::Skipped => "skipped",
            ModState::Deferred => "deferred",
            ModState::Blocked => "blocked",
            ModState::Disabled => "disabled",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleStatus {
    pub stage: Stage,
    pub frequency: Frequency,
    pub state: ModState,
    /// Why it ran or not ("per-instance, not yet run for i-0abc").
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Work the module left running (e.g. a non-blocking puppet run) and its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<stoke_api::RunRecord>,
    /// Ran in the local stage of a new instance, before its metadata and user-data
    /// (`modules.<name>.before_metadata`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_metadata: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageStatus {
    pub started_unix: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// From the process's start (exec) to the stage's: program load and start-up, which a cold
    /// page cache at boot makes visible. 10 ms resolution (the kernel's clock ticks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<f64>,
    /// The part of `startup_ms` before `main`: fork, exec and the program's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_ms: Option<f64>,
    /// Loading the configuration and finding the instance (datasource), inside `duration_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_ms: Option<f64>,
    /// When each part of the preparation ended, in ms from its start: where `prepare_ms` went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepare_steps: Vec<PrepareStep>,
    /// Later runs of this stage in the same boot (by hand, `stoke run --stage ...`). The
    /// record above stays the boot's; these only say when a rerun came and what it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<Rerun>,
}

/// A part of a stage's preparation (`image layers`, `datasource`, `metadata extras`,
/// `instance recorded`, `user-data`) and when it ended. The image layers are parsed while
/// the local stage's datasource is read, so their times may overlap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareStep {
    pub step: String,
    pub ended_ms: f64,
}

impl PrepareStep {
    pub fn new(step: &str, since_start: std::time::Duration) -> Self {
        Self {
            step: step.to_string(),
            ended_ms: since_start.as_secs_f64() * 1000.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rerun {
    pub started_unix: f64,
    pub duration_ms: f64,
    /// Modules it ran (none: everything had already run this boot).
    pub ran: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub boot_id: Option<String>,
    #[serde(default)]
    pub instance_id: Option<stoke_api::InstanceId>,
    #[serde(default)]
    pub datasource: Option<String>,
    #[serde(default)]
    pub stages: BTreeMap<Stage, StageStatus>,
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleStatus>,
    /// Problems that degrade the run without failing a module (rejected config, datasource).
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// When the kernel started (from CLOCK_BOOTTIME), for `analyze --svg`'s time axis.
    /// Recorded at boot on the host only: a `--root` sandbox is not a boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_started_unix: Option<f64>,
    /// True once the final stage has finished.
    #[serde(default)]
    pub done: bool,
    /// The image's layers that say who they are (`image:`), foundation first, with the
    /// build facts `stoke clean` recorded for each (docs/ready.md, "Image lineage").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<crate::state::lineage::Layer>,
    /// The boot's record of a stage being run again, until the rerun ends.
    #[serde(skip)]
    earlier: BTreeMap<Stage, StageStatus>,
}

/// `stoke status` exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overall {
    Ok = 0,
    Error = 1,
    Degraded = 2,
    NotFinished = 3,
}

impl Status {
    /// This boot's status; a file left from another boot (or unreadable) starts afresh.
    pub fn load(paths: &Paths, boot_id: Option<&str>) -> Status {
        let fresh = Status {
            boot_id: boot_id.map(str::to_string),
            ..Status::default()
        };
        match Status::read(paths, &paths.status_file()) {
            Some(s) if s.boot_id.as_deref() == boot_id && boot_id.is_some() => s,
            _ => fresh,
        }
    }

    /// A stage starts. When it already ran to the end this boot, its record is kept aside:
    /// [`Status::finish_stage`] puts it back with this run as a rerun.
    pub fn start_stage(&mut self, stage: Stage, record: StageStatus) {
        if let Some(prev) = self.stages.insert(stage, record)
            && prev.finished_unix.is_some()
        {
            self.earlier.insert(stage, prev);
        }
    }

    /// A stage ends after `ms`. A rerun keeps the boot's record of the stage and is listed in it.
    pub fn finish_stage(&mut self, stage: Stage, ms: f64, now_unix: f64) {
        let Some(current) = self.stages.get_mut(&stage) else {
            return;
        };
        current.finished_unix = Some(now_unix);
        current.duration_ms = Some(ms);
        let Some(mut boot) = self.earlier.remove(&stage) else {
            return;
        };
        let started = current.started_unix;
        let ran = self
            .modules
            .iter()
            .filter(|(_, m)| m.started_unix.is_some_and(|t| t >= started))
            .map(|(n, _)| n.clone())
            .collect();
        boot.reruns.push(Rerun {
            started_unix: started,
            duration_ms: ms,
            ran,
        });
        self.stages.insert(stage, boot);
    }

    /// Records where a module stands in a stage run. A module skipped because it already ran
    /// this boot keeps the outcome, summary and duration that run recorded: a rerun of the
    /// stage (by hand, or `run --stage all` twice) must not erase what happened at boot.
    pub fn settle(&mut self, name: &str, ms: ModuleStatus) {
        let keep = ms.state == ModState::Skipped
            && self
                .modules
                .get(name)
                .is_some_and(|prev| matches!(prev.state, ModState::Ok | ModState::Failed));
        if !keep {
            self.modules.insert(name.to_string(), ms);
        }
    }

    /// The status at `path` (resolved inside the root when under it).
    pub fn read(paths: &Paths, path: &Path) -> Option<Status> {
        let text = paths.read(path).ok()??;
        serde_json::from_str(&text).ok()
    }

    /// Writes atomically (temp + rename). No fsync: /run is tmpfs and this
    /// file only matters for the current boot; readers still never see a part.
    pub fn save(&self, paths: &Paths) {
        let path = paths.status_file();
        let result = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|json| paths.write(&path, &json, 0o644, false));
        if let Err(e) = result {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    /// The modules that make the boot `error` so far (see [`Status::overall`]).
    pub fn boot_so_far(&self) -> stoke_api::BootSoFar {
        stoke_api::BootSoFar {
            failed: self
                .modules
                .iter()
                .filter(|(_, m)| matches!(m.state, ModState::Failed | ModState::Blocked))
                .map(|(n, m)| {
                    (
                        n.clone(),
                        format!(
                            "{}: {}",
                            m.state.as_str(),
                            m.error.as_deref().unwrap_or(&m.reason)
                        ),
                    )
                })
                .collect(),
            status: None,
        }
    }

    /// `stoke status --json` as the boot reports send it, from inside the final stage: the
    /// `reporters` (the report modules, running) are left out of the verdict, which is the
    /// word the boot ends with when they succeed.
    pub fn report_json(&self, reporters: &[&str]) -> serde_json::Value {
        let mut ended = self.clone();
        ended.done = true;
        for r in reporters {
            ended.modules.remove(*r);
        }
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("status".into(), ended.overall_word().into());
        }
        v
    }

    pub fn overall(&self) -> Overall {
        let failed = self
            .modules
            .values()
            .any(|m| matches!(m.state, ModState::Failed | ModState::Blocked));
        let running = self.modules.values().any(|m| m.state == ModState::Running);
        if !self.done || running {
            if failed {
                return Overall::Error;
            }
            return Overall::NotFinished;
        }
        let degraded = !self.errors.is_empty()
            || !self.warnings.is_empty()
            || self
                .modules
                .values()
                .any(|m| !m.warnings.is_empty() || m.state == ModState::Deferred);
        if failed {
            Overall::Error
        } else if degraded {
            Overall::Degraded
        } else {
            Overall::Ok
        }
    }

    pub fn overall_word(&self) -> &'static str {
        match self.overall() {
            Overall::Ok => "done",
            Overall::Error => "error",
            Overall::Degraded => "degraded",
            Overall::NotFinished => "running",
        }
    }

    /// The overall word and, when it is not plain "done" or "running", why: counts and the
    /// first of each (`degraded: 1 warning (user-data:6:1: ...)`), on one line.
    pub fn overall_line(&self) -> String {
        let word = self.overall_word();
        let mut why: Vec<String> = Vec::new();
        let mut add = |n: usize, one: &str, many: &str, first: Option<String>| {
            if n == 0 {
                return;
            }
            let mut part = format!("{n} {}", if n == 1 { one } else { many });
            if let Some(f) = first {
                part.push_str(&format!(" ({})", shorten(&f, 72)));
            }
            why.push(part);
        };
        let failed: Vec<(&String, &ModuleStatus)> = self
            .modules
            .iter()
            .filter(|(_, m)| matches!(m.state, ModState::Failed | ModState::Blocked))
            .collect();
        add(
            failed.len(),
            "module failed",
            "modules failed",
            failed
                .first()
                .map(|(n, m)| format!("{n}: {}", m.error.as_deref().unwrap_or(m.reason.as_str()))),
        );
        if matches!(self.overall(), Overall::Ok | Overall::NotFinished) && failed.is_empty() {
            return word.to_string();
        }
        add(
            self.errors.len(),
            "error",
            "errors",
            self.errors.first().cloned(),
        );
        // A module's warning is usually in the boot's list too: count each once.
        let mut warnings: Vec<&String> = self.warnings.iter().collect();
        for m in self.modules.values() {
            for w in &m.warnings {
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        add(
            warnings.len(),
            "warning",
            "warnings",
            warnings.first().map(|w| w.to_string()),
        );
        let deferred: Vec<&String> = self
            .modules
            .iter()
            .filter(|(_, m)| m.state == ModState::Deferred)
            .map(|(n, _)| n)
            .collect();
        add(
            deferred.len(),
            "module deferred",
            "modules deferred",
            deferred
                .first()
                .map(|n| format!("{n}: waiting for instance metadata")),
        );
        if why.is_empty() {
            word.to_string()
        } else {
            format!("{word}: {}", why.join(", "))
        }
    }

    /// Human-readable report for `stoke status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "status: {}\ninstance: {} (datasource {})\n",
            self.overall_line(),
            self.instance_id.as_deref().unwrap_or("unknown"),
            self.datasource.as_deref().unwrap_or("none"),
        ));
        out.push_str(&crate::state::lineage::render(&self.lineage));
        for (stage, s) in &self.stages {
            match s.duration_ms {
                Some(ms) => out.push_str(&format!("stage {stage}: done in {ms:.1} ms")),
                None => out.push_str(&format!("stage {stage}: running")),
            }
            for r in &s.reruns {
                out.push_str(&format!(
                    "; rerun {:.1} s later: {}",
                    r.started_unix - s.started_unix,
                    describe_rerun(r)
                ));
            }
            out.push('\n');
        }
        let mut mods: Vec<_> = self.modules.iter().collect();
        mods.sort_by_key(|(name, m)| (m.stage, name.to_string()));
        for (name, m) in mods {
            let dur = m
                .duration_ms
                .map(|d| format!(" {d:.1} ms"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<22} {:<8} {:<9}{dur}  {}\n",
                name,
                m.stage.as_str(),
                m.state.as_str(),
                if m.summary.is_empty() {
                    &m.reason
                } else {
                    &m.summary
                }
            ));
            if let Some(e) = &m.error {
                out.push_str(&format!("      error: {e}\n"));
            }
            for w in &m.warnings {
                out.push_str(&format!("      warning: {w}\n"));
            }
            if let Some(bg) = &m.background {
                out.push_str(&format!("      background: {}\n", bg.describe()));
            }
            for run in stoke_api::ScriptsReport::from_details(&m.details)
                .map(|r| r.scripts)
                .unwrap_or_default()
            {
                out.push_str(&describe_script(&run));
            }
        }
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }

    /// `stoke analyze`: durations per stage and module, slowest first.
    pub fn analyze(&self) -> String {
        let mut out = String::new();
        let total: f64 = self.stages.values().filter_map(|s| s.duration_ms).sum();
        out.push_str(&format!(
            "total {total:.1} ms over {} stage(s)\n",
            self.stages.len()
        ));
        for (stage, s) in &self.stages {
            let mut parts = Vec::new();
            if let Some(ms) = s.startup_ms {
                parts.push(match s.main_ms {
                    Some(m) => format!("after {ms:.0} ms of process start-up ({m:.0} ms to main)"),
                    None => format!("after {ms:.0} ms of process start-up"),
                });
            }
            if let Some(ms) = s.prepare_ms {
                let steps: Vec<String> = s
                    .prepare_steps
                    .iter()
                    .map(|p| format!("{} {:.0}", p.step, p.ended_ms))
                    .collect();
                parts.push(if steps.is_empty() {
                    format!("config and datasource {ms:.1} ms")
                } else {
                    format!(
                        "config and datasource {ms:.1} ms (ended at ms: {})",
                        steps.join(", ")
                    )
                });
            }
            for r in &s.reruns {
                parts.push(format!(
                    "rerun {:.1} s later: {}",
                    r.started_unix - s.started_unix,
                    describe_rerun(r)
                ));
            }
            out.push_str(&format!(
                "  stage {:<8} {:>10}{}\n",
                stage.as_str(),
                s.duration_ms
                    .map(|d| format!("{d:.1} ms"))
                    .unwrap_or_else(|| "running".into()),
                if parts.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", parts.join("; "))
                }
            ));
        }
        let mut mods: Vec<_> = self
            .modules
            .iter()
            .filter_map(|(n, m)| m.duration_ms.map(|d| (d, n, m)))
            .collect();
        mods.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.push_str("modules, slowest first:\n");
        for (d, n, m) in mods {
            out.push_str(&format!(
                "  {d:>10.1} ms  {n:<22} ({}, {})\n",
                m.stage.as_str(),
                m.state.as_str()
            ));
            // The scripts inside a module, in the order they ran.
            for run in stoke_api::ScriptsReport::from_details(&m.details)
                .map(|r| r.scripts)
                .unwrap_or_default()
            {
                if let Some(ms) = run.duration_ms {
                    out.push_str(&format!(
                        "  {ms:>10.1} ms    {}/{} ({})\n",
                        run.source,
                        run.name,
                        run.outcome.as_str()
                    ));
                }
            }
        }
        out
    }
}

/// A script's line (outcome, exit, duration, why) and the tail of its output.
fn describe_script(run: &stoke_api::ScriptRun) -> String {
    let mut line = format!(
        "      script {}/{}: {}",
        run.source,
        run.name,
        run.outcome.as_str()
    );
    if let Some(ms) = run.duration_ms {
        line.push_str(&format!(" in {:.1} s", ms / 1000.0));
    }
    if !run.note.is_empty() {
        line.push_str(&format!(" ({})", run.note));
    }
    if let Some(log) = &run.log {
        line.push_str(&format!(", output in {log}"));
    }
    line.push('\n');
    for l in run.output_tail.lines() {
        line.push_str(&format!("        | {l}\n"));
    }
    line
}

fn describe_rerun(r: &Rerun) -> String {
    if r.ran.is_empty() {
        "nothing due".to_string()
    } else {
        format!("ran {} in {:.1} ms", r.ran.join(", "), r.duration_ms)
    }
}

/// The first line of `s`, cut to about `max` characters.
fn shorten(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(state: ModState) -> ModuleStatus {
        ModuleStatus {
            stage: Stage::Local,
            frequency: Frequency::PerBoot,
            state,
            reason: String::new(),
            summary: String::new(),
            error: None,
            warnings: vec![],
            started_unix: None,
            duration_ms: Some(1.0),
            details: serde_json::Value::Null,
            background: None,
            before_metadata: false,
        }
    }

    fn stage_record(started_unix: f64) -> StageStatus {
        StageStatus {
            started_unix,
            finished_unix: None,
            duration_ms: None,
            startup_ms: None,
            main_ms: None,
            prepare_ms: None,
            prepare_steps: Vec::new(),
            reruns: Vec::new(),
        }
    }

    #[test]
    fn a_rerun_that_finds_nothing_due_keeps_the_boots_record() {
        let mut s = Status::default();
        s.start_stage(Stage::Local, stage_record(100.0));
        let mut ran = module(ModState::Ok);
        ran.summary = "hostname web-1".into();
        ran.duration_ms = Some(12.5);
        ran.started_unix = Some(100.1);
        s.settle("hostname", ran);
        s.finish_stage(Stage::Local, 40.0, 100.2);

        s.start_stage(Stage::Local, stage_record(160.0));
        let mut again = module(ModState::Skipped);
        again.reason = "per-boot, already ran this boot".into();
        again.duration_ms = None;
        s.settle("hostname", again);
        s.finish_stage(Stage::Local, 3.0, 160.1);

        let m = &s.modules["hostname"];
        assert_eq!((m.state, m.duration_ms), (ModState::Ok, Some(12.5)));
        assert_eq!(m.summary, "hostname web-1");
        let st = &s.stages[&Stage::Local];
        assert_eq!((st.started_unix, st.duration_ms), (100.0, Some(40.0)));
        assert_eq!(
            st.reruns,
            vec![Rerun {
                started_unix: 160.0,
                duration_ms: 3.0,
                ran: vec![]
            }]
        );
        assert!(
            s.render().contains("rerun 60.0 s later: nothing due"),
            "{}",
            s.render()
        );
    }

    #[test]
    fn a_stage_that_never_finished_is_replaced_by_the_next_run() {
        let mut s = Status::default();
        s.start_stage(Stage::Local, stage_record(100.0));
        s.start_stage(Stage::Local, stage_record(130.0));
        s.finish_stage(Stage::Local, 5.0, 130.1);
        let st = &s.stages[&Stage::Local];
        assert_eq!((st.started_unix, st.reruns.len()), (130.0, 0));
    }

    #[test]
    fn the_status_line_says_why() {
        let mut s = Status {
            done: true,
            ..Status::default()
        };
        s.modules.insert("a".into(), module(ModState::Ok));
        assert_eq!(s.overall_line(), "done");
        s.warnings
            .push("user-data:6:1: `runcmd` is a cloud-init key".into());
        assert_eq!(
            s.overall_line(),
            "degraded: 1 warning (user-data:6:1: `runcmd` is a cloud-init key)"
        );
        let mut deferred = module(ModState::Deferred);
        deferred
            .warnings
            .push("user-data:6:1: `runcmd` is a cloud-init key".into());
        s.modules.insert("d".into(), deferred);
        assert_eq!(
            s.overall_line(),
            "degraded: 1 warning (user-data:6:1: `runcmd` is a cloud-init key), \
             1 module deferred (d: waiting for instance metadata)"
        );
        let mut failed = module(ModState::Failed);
        failed.error = Some("mkfs.xfs: exit 1".into());
        s.modules.insert("disks".into(), failed);
        assert!(
            s.overall_line()
                .starts_with("error: 1 module failed (disks: mkfs.xfs: exit 1), 1 warning"),
            "{}",
            s.overall_line()
        );
    }

    #[test]
    fn overall_maps_to_exit_codes() {
        let mut s = Status::default();
        assert_eq!(s.overall(), Overall::NotFinished);
        s.done = true;
        s.modules.insert("a".into(), module(ModState::Ok));
        assert_eq!(s.overall(), Overall::Ok);
        s.errors.push("user-data:1:1: bad".into());
        assert_eq!(s.overall(), Overall::Degraded);
        s.modules.insert("b".into(), module(ModState::Failed));
        assert_eq!(s.overall(), Overall::Error);
        s.done = false;
        assert_eq!(
            s.overall(),
            Overall::Error,
            "a failure is known before the end"
        );
    }

    #[test]
    fn boot_so_far_names_what_makes_the_boot_error() {
        let mut s = Status::default();
        s.modules.insert("a".into(), module(ModState::Ok));
        s.modules.insert("d".into(), module(ModState::Deferred));
        assert!(s.boot_so_far().ok());
        let mut failed = module(ModState::Failed);
        failed.error = Some("exit 4".into());
        s.modules.insert("puppet".into(), failed);
        let mut blocked = module(ModState::Blocked);
        blocked.reason = "not run: puppet failed".into();
        s.modules.insert("later".into(), blocked);
        let b = s.boot_so_far();
        assert!(!b.ok());
        assert_eq!(
            b.failed.into_iter().collect::<Vec<_>>(),
            [
                (
                    "later".to_string(),
                    "blocked: not run: puppet failed".to_string()
                ),
                ("puppet".to_string(), "failed: exit 4".to_string()),
            ]
        );
        assert_eq!(s.overall(), Overall::Error);
    }
}
