//! Runs one stage: picks the modules of the stage (and those deferred from an
//! earlier one), decides which are due, and runs them concurrently as their
//! `after` dependencies allow. A failure is recorded; only the modules that
//! run after the failed one are held back.

pub mod logins;
mod module_thread;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoke_api::{
    Context, Frequency, InstanceData, InstanceId, Module, ModuleError, Order, Report, Stage,
    System, UserScript, tools,
};
use tokio::task::JoinSet;

use crate::config::{EngineConfig, Loaded};
use crate::paths::Paths;
use crate::state::status::{ModState, ModuleStatus, Status};
use crate::state::{Semaphore, State, now_unix};

/// What a module that succeeded hands to the modules that run after it: its report's details
/// and the template variables it publishes.
#[derive(Clone, Debug, Default)]
pub struct Published {
    details: serde_json::Value,
    vars: BTreeMap<String, String>,
}

/// What stoke knows about this instance in this stage.
#[derive(Clone, Debug)]
pub enum Instance {
    /// A datasource described it.
    Described(Arc<InstanceData>),
    /// Only its id, from DMI (a new EC2 Nitro instance before the network stage): the modules
    /// with `modules.<name>.before_metadata` may run; the others wait for the metadata.
    IdOnly { id: InstanceId, why: String },
    /// Nothing yet: no datasource applies, or it failed.
    Unknown { why: String },
}

impl Instance {
    pub fn id(&self) -> Option<&InstanceId> {
        match self {
            Instance::Described(i) => Some(&i.instance_id),
            Instance::IdOnly { id, .. } => Some(id),
            Instance::Unknown { .. } => None,
        }
    }

    pub fn described(&self) -> Option<&Arc<InstanceData>> {
        match self {
            Instance::Described(i) => Some(i),
            _ => None,
        }
    }

    /// Why there is no metadata (empty when there is).
    pub fn why_not_described(&self) -> &str {
        match self {
            Instance::Described(_) => "",
            Instance::IdOnly { why, .. } | Instance::Unknown { why } => why,
        }
    }

    /// What a module sees. An id alone comes from EC2's DMI: the EC2 instance, no metadata yet.
    /// Nothing known: cloud-init's `iid-datasource-none` (only `once` modules that need no
    /// metadata run then).
    fn for_modules(&self) -> Arc<InstanceData> {
        match self {
            Instance::Described(i) => i.clone(),
            Instance::IdOnly { id, .. } => Arc::new(InstanceData {
                datasource: "ec2".into(),
                instance_id: id.clone(),
                ..InstanceData::default()
            }),
            Instance::Unknown { .. } => Arc::new(InstanceData {
                datasource: "none".into(),
                ..InstanceData::default()
            }),
        }
    }
}

pub struct Runner<'a> {
    pub paths: &'a Paths,
    pub modules: &'a [Arc<dyn Module>],
    pub system: Arc<dyn System>,
    pub loaded: &'a Loaded,
    pub engine: &'a EngineConfig,
    pub instance: Instance,
    pub boot_id: Option<String>,
    /// The process environment, read once (modules get it in their Context).
    pub env: Arc<BTreeMap<String, String>>,
    pub self_exe: PathBuf,
    /// Scripts and boothooks from user-data, for the modules that run them.
    pub user_scripts: Arc<Vec<UserScript>>,
}

struct Planned {
    module: Arc<dyn Module>,
    name: &'static str,
    stage: Stage,
    frequency: Frequency,
    after: &'static [&'static str],
    timeout: Duration,
    section: serde_json::Value,
    order: Order,
}

/// One module's place in this stage, as `stoke plan` shows it.
pub struct PlanLine {
    pub name: &'static str,
    pub stage: Stage,
    pub frequency: Frequency,
    pub state: ModState,
    pub reason: String,
    pub detail: Option<String>,
}

impl PlanLine {
    /// "due", or why not ("skipped", "deferred", "disabled").
    pub fn verdict(&self) -> &'static str {
        match self.state {
            ModState::Running => "due",
            s => s.as_str(),
        }
    }
}

impl<'a> Runner<'a> {
    fn iid(&self) -> Option<&InstanceId> {
        self.instance.id()
    }

    /// Sorts this stage's modules into: to run, and already settled (with a status).
    fn select(
        &self,
        stage: Stage,
        status: &Status,
    ) -> (Vec<Planned>, Vec<(&'static str, ModuleStatus)>) {
        let state = State::new(self.paths);
        let mut run = Vec::new();
        let mut settled = Vec::new();
        // Deferred for the metadata, with nothing configured by the image: see
        // `defer_early_dependents`.
        let mut idle = Vec::new();
        for module in self.modules {
            let spec = module.spec();
            let section = self.loaded.section((spec.config.keys)());
            let over = self
                .engine
                .modules
                .get(spec.name)
                .cloned()
                .unwrap_or_default();
            let frequency = over
                .frequency
                .unwrap_or_else(|| module.frequency_for(&section));
            let mstage = module.stage_for(&section);
            let was_deferred = status
                .modules
                .get(spec.name)
                .is_some_and(|m| m.state == ModState::Deferred);
            if !(mstage == stage || (mstage < stage && was_deferred)) {
                continue;
            }
            let mut ms = ModuleStatus {
                stage: mstage,
                frequency,
                state: ModState::Pending,
                reason: String::new(),
                summary: String::new(),
                error: None,
                warnings: Vec::new(),
                started_unix: None,
                duration_ms: None,
                details: serde_json::Value::Null,
                background: None,
                before_metadata: false,
            };
            if over.enabled == Some(false) {
                ms.state = ModState::Disabled;
                ms.reason = "disabled in config (modules.<name>.enabled: false)".into();
                settled.push((spec.name, ms));
                continue;
            }
            if self.instance.described().is_none()
                && (spec.needs_metadata || frequency != Frequency::Once)
            {
                let wanted = over.before_metadata == Some(true);
                if !wanted || spec.needs_metadata || self.instance.id().is_none() {
                    ms.state = ModState::Deferred;
                    ms.reason = format!(
                        "waiting for instance metadata: {}",
                        self.instance.why_not_described()
                    );
                    if module
                        .nothing_configured(&section, &self.user_scripts)
                        .is_some()
                    {
                        idle.push(spec.name);
                    }
                    if wanted && spec.needs_metadata {
                        ms.reason.push_str(&format!(
                            " (modules.{}.before_metadata does not apply: it needs the metadata)",
                            spec.name
                        ));
                    }
                    settled.push((spec.name, ms));
                    continue;
                }
                ms.before_metadata = true;
            }
            // Only now: without the metadata, user-data that configures it is not known yet.
            if let Some(why) = module.nothing_configured(&section, &self.user_scripts) {
                ms.state = ModState::Skipped;
                ms.reason = format!("nothing configured ({why})");
                settled.push((spec.name, ms));
                continue;
            }
            let decision = state.decide(spec.name, frequency, self.iid(), self.boot_id.as_deref());
            ms.reason = decision.reason;
            if ms.before_metadata {
                ms.reason
                    .push_str(" (before the metadata: image configuration, instance id from DMI)");
            }
            if !decision.due {
                ms.state = ModState::Skipped;
                settled.push((spec.name, ms));
                continue;
            }
            run.push(Planned {
                module: module.clone(),
                name: spec.name,
                stage: mstage,
                frequency,
                after: spec.after,
                timeout: over
                    .timeout_seconds
                    .map(Duration::from_secs)
                    .unwrap_or_else(|| module.timeout_for(&section)),
                section,
                order: spec.order,
            });
            settled.push((spec.name, ms));
        }
        Self::defer_early_dependents(&mut run, &mut settled, &idle);
        (run, settled)
    }

    /// A `before_metadata` module runs after its `after` modules, so it waits with them when
    /// they are deferred (e.g. `mounts` early without `disks`: it would miss the disks' volumes).
    /// A deferred one that the image configures nothing for (`idle`: `volumes` without an image
    /// `volumes:` section) does not hold it back: an early module sees the image's
    /// configuration only, and there it has nothing to wait for.
    fn defer_early_dependents(
        run: &mut Vec<Planned>,
        settled: &mut [(&'static str, ModuleStatus)],
        idle: &[&str],
    ) {
        loop {
            let deferred: Vec<&str> = settled
                .iter()
                .filter(|(n, ms)| ms.state == ModState::Deferred && !idle.contains(n))
                .map(|(n, _)| *n)
                .collect();
            let Some(i) = run
                .iter()
                .position(|p| p.after.iter().any(|d| deferred.contains(d)))
            else {
                return;
            };
            let p = run.remove(i);
            let dep = p.after.iter().find(|d| deferred.contains(d)).copied();
            if let Some((_, ms)) = settled.iter_mut().find(|(n, _)| *n == p.name) {
                ms.state = ModState::Deferred;
                ms.before_metadata = false;
                ms.reason = format!(
                    "waiting for instance metadata: it runs after {}, which waits for it",
                    dep.unwrap_or("?")
                );
            }
        }
    }

    /// What would happen in `stage` now, without doing it.
    pub fn plan(&self, stage: Stage, status: &Status) -> Vec<PlanLine> {
        let (run, settled) = self.select(stage, status);
        settled
            .into_iter()
            .map(|(name, ms)| {
                let detail = run
                    .iter()
                    .find(|p| p.name == name)
                    .and_then(|p| p.module.plan(&self.context(p, &BTreeMap::new())));
                PlanLine {
                    name,
                    stage: ms.stage,
                    frequency: ms.frequency,
                    state: if ms.state == ModState::Pending {
                        ModState::Running
                    } else {
                        ms.state
                    },
                    reason: ms.reason,
                    detail,
                }
            })
            .collect()
    }

    fn state_dir_for(&self, name: &str) -> PathBuf {
        match self.iid() {
            Some(iid) => self.paths.instance_dir(iid).join("data").join(name),
            None => self.paths.state_dir.join("modules").join(name),
        }
    }

    /// What a dependency published: in this run, else in its last run.
    fn published_by(&self, dep: &str, this_run: &BTreeMap<String, Published>) -> Option<Published> {
        if let Some(d) = this_run.get(dep) {
            return Some(d.clone());
        }
        let module = self.modules.iter().find(|m| m.spec().name == dep)?;
        let section = self.loaded.section((module.spec().config.keys)());
        let freq = self
            .engine
            .modules
            .get(dep)
            .and_then(|o| o.frequency)
            .unwrap_or_else(|| module.frequency_for(&section));
        State::new(self.paths)
            .read_sem(dep, freq, self.iid())
            .filter(|s| s.ok)
            .map(|s| Published {
                details: s.details,
                vars: s.vars,
            })
    }

    fn context(&self, p: &Planned, this_run: &BTreeMap<String, Published>) -> Context {
        self.context_for(p.name, p.after, p.section.clone(), this_run)
    }

    /// The context a module gets at shutdown: its config, its dependencies' last details.
    pub fn shutdown_context(&self, module: &dyn Module) -> Context {
        let spec = module.spec();
        let section = self.loaded.section((spec.config.keys)());
        self.context_for(spec.name, spec.after, section, &BTreeMap::new())
    }

    /// The context module `name` gets: its section, its dependencies' details, the instance as
    /// far as known, this boot. Also for `stoke verify` (the image's checks, no instance).
    pub fn context_for(
        &self,
        name: &str,
        after: &[&str],
        section: serde_json::Value,
        this_run: &BTreeMap<String, Published>,
    ) -> Context {
        let instance = self.instance.for_modules();
        let mut vars = instance.vars();
        vars.extend(self.engine.vars.clone());
        let mut prior = BTreeMap::new();
        for dep in after {
            if let Some(p) = self.published_by(dep, this_run) {
                vars.extend(p.vars);
                prior.insert((*dep).to_string(), p.details);
            }
        }
        Context {
            root: self.paths.root.clone(),
            instance,
            config: section,
            system: self.system.clone(),
            state_dir: self.state_dir_for(name),
            shared_state_dir: self.paths.state_dir.join("modules").join(name),
            user_scripts: self.user_scripts.clone(),
            vars,
            prior,
            tools: self.engine.tools.clone(),
            self_exe: self.self_exe.clone(),
            boot: Default::default(),
            boot_id: self.boot_id.clone(),
            env: self.env.clone(),
        }
    }

    pub fn user_scripts(mut self, scripts: Arc<Vec<UserScript>>) -> Self {
        self.user_scripts = scripts;
        self
    }

    /// Runs the stage's due modules; updates `status` (and saves it) as they start and end.
    pub async fn run(&self, stage: Stage, status: &mut Status) {
        let (planned, settled) = self.select(stage, status);
        self.note_config_not_applied(status);
        // Runs alongside the modules: logins need only wait for this stage (stoke-local is
        // ordered before sshd), not for the network stage.
        let release = (stage == Stage::Local && !self.holds_logins(&settled)).then(|| {
            let system = self.system.clone();
            let root = self.paths.root.clone();
            let systemctl = self.engine.tools.get(tools::SYSTEMCTL).cloned();
            tokio::spawn(async move {
                logins::release(system.as_ref(), &root, systemctl.as_deref()).await
            })
        });
        for (name, ms) in settled {
            status.settle(name, ms);
        }
        status.save(self.paths);

        let in_run: BTreeSet<&str> = planned.iter().map(|p| p.name).collect();
        let mut waiting: Vec<Planned> = planned;
        let mut results: BTreeMap<String, Published> = BTreeMap::new();
        let mut finished: BTreeMap<&str, bool> = BTreeMap::new();
        let mut tasks: JoinSet<(Result<Report, ModuleError>, Duration)> = JoinSet::new();
        let mut running: BTreeMap<tokio::task::Id, (Planned, Instant)> = BTreeMap::new();

        loop {
            // Start everything whose dependencies are settled; hold back dependents of failures.
            let mut i = 0;
            // A module starts when every module of a lower order rank in the stage has ended,
            // however it ended (First before Normal before Late before Last).
            let lowest_pending = waiting
                .iter()
                .map(|w| w.order.rank())
                .chain(running.values().map(|(r, _)| r.order.rank()))
                .min();
            while i < waiting.len() {
                let p = &waiting[i];
                let held = lowest_pending.is_some_and(|low| low < p.order.rank());
                if held {
                    i += 1;
                    continue;
                }
                let deps: Vec<&str> = p
                    .after
                    .iter()
                    .copied()
                    .filter(|d| in_run.contains(d))
                    .collect();
                let despite = p.module.runs_despite();
                if let Some(bad) = deps
                    .iter()
                    .find(|d| finished.get(*d) == Some(&false) && !despite.contains(*d))
                {
                    let p = waiting.remove(i);
                    finished.insert(p.name, false);
                    if let Some(ms) = status.modules.get_mut(p.name) {
                        ms.state = ModState::Blocked;
                        ms.reason = format!("not run: {bad} failed");
                    }
                    tracing::warn!("{}: not run because {bad} failed", p.name);
                    continue;
                }
                if deps.iter().all(|d| finished.contains_key(d)) {
                    let p = waiting.remove(i);
                    let mut ctx = self.context(&p, &results);
                    let mut boot = status.boot_so_far();
                    if p.order == Order::Report {
                        let reporters: Vec<&str> = waiting
                            .iter()
                            .map(|w| w.name)
                            .chain(running.values().map(|(r, _)| r.name))
                            .chain([p.name])
                            .filter(|n| {
                                self.modules
                                    .iter()
                                    .any(|m| m.spec().name == *n && m.spec().order == Order::Report)
                            })
                            .collect();
                        boot.status = Some(status.report_json(&reporters));
                    }
                    ctx.boot = Arc::new(boot);
                    let module = p.module.clone();
                    let timeout = p.timeout;
                    if let Some(ms) = status.modules.get_mut(p.name) {
                        ms.state = ModState::Running;
                        ms.started_unix = Some(now_unix());
                    }
                    tracing::info!(
                        "{}: starting ({})",
                        p.name,
                        status
                            .modules
                            .get(p.name)
                            .map(|m| m.reason.as_str())
                            .unwrap_or("")
                    );
                    let started = Instant::now();
                    let handle = tasks.spawn(async move {
                        let result = module_thread::run(module, ctx, timeout).await;
                        (result, started.elapsed())
                    });
                    running.insert(handle.id(), (p, started));
                    continue;
                }
                i += 1;
            }
            status.save(self.paths);
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            // A module that panicked is a failed module; the others go on.
            let (id, outcome) = match joined {
                Ok((id, (result, took))) => (id, Some((result, took))),
                Err(e) => (e.id(), None),
            };
            let Some((p, started)) = running.remove(&id) else {
                continue;
            };
            let (result, took) = outcome.unwrap_or_else(|| {
                (
                    Err(ModuleError::Other(
                        "panicked (a bug in stoke: please report it)".into(),
                    )),
                    started.elapsed(),
                )
            });
            let ok = result.is_ok();
            self.finish(&p, result, took, status, &mut results);
            finished.insert(p.name, ok);
        }
        for p in waiting {
            if let Some(ms) = status.modules.get_mut(p.name) {
                ms.state = ModState::Blocked;
                ms.reason = format!(
                    "not run: dependencies never finished ({})",
                    p.after.join(", ")
                );
            }
        }
        status.save(self.paths);
        if let Some(release) = release
            && let Err(e) = release.await
        {
            tracing::warn!("logins: releasing the hold: {e}");
        }
    }

    /// A module that ran before the metadata did not see the user-data: say so once the
    /// metadata is here, when the configuration it would get now differs from the one it ran with.
    fn note_config_not_applied(&self, status: &mut Status) {
        if self.instance.described().is_none() {
            return;
        }
        let state = State::new(self.paths);
        for module in self.modules {
            let spec = module.spec();
            let Some(ms) = status.modules.get_mut(spec.name) else {
                continue;
            };
            if !ms.before_metadata || ms.state != ModState::Ok {
                continue;
            }
            let section = self.loaded.section((spec.config.keys)());
            let Some(sem) = state.read_sem(spec.name, ms.frequency, self.iid()) else {
                continue;
            };
            if sem.config_sha256 == sha256_json(&section) {
                continue;
            }
            let w = format!(
                "{0}: ran before the metadata (modules.{0}.before_metadata): the configuration \
                 the user-data gives it was not applied on this boot",
                spec.name
            );
            if !ms.warnings.contains(&w) {
                tracing::warn!("{w}");
                ms.warnings.push(w.clone());
            }
            if !status.warnings.contains(&w) {
                status.warnings.push(w);
            }
        }
    }

    /// True when a module that logins wait for waits for a later stage.
    fn holds_logins(&self, settled: &[(&'static str, ModuleStatus)]) -> bool {
        settled.iter().any(|(name, ms)| {
            ms.state == ModState::Deferred
                && self
                    .modules
                    .iter()
                    .map(|m| m.spec())
                    .any(|s| s.name == *name && s.before_logins)
        })
    }

    fn finish(
        &self,
        p: &Planned,
        result: Result<Report, ModuleError>,
        took: Duration,
        status: &mut Status,
        results: &mut BTreeMap<String, Published>,
    ) {
        let ms_took = took.as_secs_f64() * 1000.0;
        let mut vars = BTreeMap::new();
        let (ok, summary, details, warnings, error) = match result {
            Ok(r) => {
                tracing::info!("{}: ok in {ms_took:.1} ms: {}", p.name, r.summary);
                for w in &r.warnings {
                    tracing::warn!("{}: {w}", p.name);
                }
                vars = r.vars;
                (true, r.summary, r.details, r.warnings, None)
            }
            Err(ModuleError::Partial { message, report }) => {
                tracing::error!("{}: failed after {ms_took:.1} ms: {message}", p.name);
                for w in &report.warnings {
                    tracing::warn!("{}: {w}", p.name);
                }
                (
                    false,
                    report.summary,
                    report.details,
                    report.warnings,
                    Some(message),
                )
            }
            Err(e) => {
                tracing::error!("{}: failed after {ms_took:.1} ms: {e}", p.name);
                (
                    false,
                    String::new(),
                    serde_json::Value::Null,
                    Vec::new(),
                    Some(e.to_string()),
                )
            }
        };
        if ok {
            let published = Published {
                details: details.clone(),
                vars: vars.clone(),
            };
            results.insert(p.name.to_string(), published);
        }
        let sem = Semaphore {
            module: p.name.to_string(),
            frequency: p.frequency,
            when_unix: now_unix(),
            boot_id: self.boot_id.clone(),
            instance_id: self.iid().cloned(),
            config_sha256: sha256_json(&p.section),
            ok,
            summary: summary.clone(),
            details: details.clone(),
            vars,
            duration_ms: took.as_millis() as u64,
        };
        if let Err(e) = State::new(self.paths).write_sem(&sem) {
            tracing::error!("{}: cannot record its run: {e}", p.name);
        }
        if let Some(ms) = status.modules.get_mut(p.name) {
            ms.state = if ok { ModState::Ok } else { ModState::Failed };
            ms.stage = p.stage;
            ms.summary = summary;
            ms.details = details;
            ms.warnings = warnings;
            ms.error = error;
            ms.duration_ms = Some(ms_took);
        }
    }
}

pub fn sha256_json(v: &serde_json::Value) -> String {
    stoke_api::sha256_hex(&serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner over `modules` for instance i-1 in boot b1, with a fake system.
    fn test_runner<'a>(
        paths: &'a Paths,
        modules: &'a [Arc<dyn Module>],
        loaded: &'a Loaded,
        engine: &'a EngineConfig,
    ) -> Runner<'a> {
        Runner {
            paths,
            modules,
            system: stoke_api::fake::FakeSystem::new(),
            loaded,
            engine,
            instance: Instance::Described(Arc::new(InstanceData {
                instance_id: InstanceId::new("i-1").unwrap(),
                ..InstanceData::default()
            })),
            boot_id: Some("b1".into()),
            env: Arc::default(),
            self_exe: PathBuf::from("/usr/bin/stoke"),
            user_scripts: Default::default(),
        }
    }
    use schemars::JsonSchema;
    use serde::Deserialize;
    use stoke_api::{ModuleSpec, Root, config_spec};

    #[derive(Deserialize, JsonSchema, Default)]
    struct NoConfig {}

    struct Test {
        name: &'static str,
        after: &'static [&'static str],
        panics: bool,
        despite: &'static [&'static str],
    }

    /// Records when it starts and ends in a shared log; may fail.
    struct Ordered {
        name: &'static str,
        order: Order,
        fails: bool,
        log: Arc<std::sync::Mutex<Vec<String>>>,
    }

    #[stoke_api::async_trait]
    impl Module for Ordered {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec {
                name: self.name,
                stage: Stage::Local,
                frequency: Frequency::PerBoot,
                after: &[],
                needs_metadata: false,
                before_logins: false,
                timeout: Duration::from_secs(10),
                config: config_spec::<NoConfig>(),
                order: self.order,
            }
        }

        async fn run(&self, _ctx: &Context) -> Result<Report, ModuleError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("start {}", self.name));
            // Give the runtime a chance to start anything it (wrongly) would alongside.
            tokio::task::yield_now().await;
            self.log.lock().unwrap().push(format!("end {}", self.name));
            if self.fails {
                return Err(ModuleError::Other("no".into()));
            }
            Ok(Report::new("fine"))
        }
    }

    #[tokio::test]
    async fn first_and_last_modules_bracket_the_stage_whatever_became_of_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(Root::new(dir.path()), None, None);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = |name, order, fails| -> Arc<dyn Module> {
            Arc::new(Ordered {
                name,
                order,
                fails,
                log: log.clone(),
            })
        };
        // Listed out of order on purpose: the order comes from the spec, not the list.
        let modules = vec![
            m("last", Order::Last, false),
            m("a", Order::Normal, true),
            m("late", Order::Late, true),
            m("first", Order::First, true),
            m("b", Order::Normal, false),
        ];
        let loaded = Loaded::default();
        let engine = EngineConfig::default();
        let runner = test_runner(&paths, &modules, &loaded, &engine);
        let mut status = Status::default();
        runner.run(Stage::Local, &mut status).await;
        let log = log.lock().unwrap().clone();
        let at = |e: &str| log.iter().position(|l| l == e).unwrap_or(usize::MAX);
        assert!(
            at("end first") < at("start a") && at("end first") < at("start b"),
            "{log:?}"
        );
        assert!(
            at("end a") < at("start last") && at("end b") < at("start last"),
            "{log:?}"
        );
        assert_eq!(status.modules["first"].state, ModState::Failed);
        assert_eq!(status.modules["a"].state, ModState::Failed);
        assert_eq!(
            status.modules["b"].state,
            ModState::Ok,
            "a failed first module holds nothing back"
        );
        assert_eq!(
            status.modules["last"].state,
            ModState::Ok,
            "nor does a failed normal one"
        );
    }

    #[stoke_api::async_trait]
    impl Module for Test {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec {
                name: self.name,
                stage: Stage::Local,
                frequency: Frequency::PerBoot,
                after: self.after,
                needs_metadata: false,
                before_logins: false,
                timeout: Duration::from_secs(10),
                config: config_spec::<NoConfig>(),
                order: stoke_api::Order::Normal,
            }
        }

        async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
            if self.panics {
                panic!("a bug in a module");
            }
            // What it was given of the modules it runs after.
            let mut prior: Vec<&String> = ctx.prior.keys().collect();
            prior.sort();
            Ok(Report::new(format!("fine, after {prior:?}")).with_details(serde_json::json!(1)))
        }

        fn runs_despite(&self) -> &'static [&'static str] {
            self.despite
        }
    }

    #[tokio::test]
    async fn a_panicking_module_fails_alone_and_holds_back_only_its_dependents() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(Root::new(dir.path()), None, None);
        let modules: Vec<Arc<dyn Module>> = vec![
            Arc::new(Test {
                name: "buggy",
                after: &[],
                panics: true,
                despite: &[],
            }),
            Arc::new(Test {
                name: "fine",
                after: &[],
                panics: false,
                despite: &[],
            }),
            Arc::new(Test {
                name: "needs-buggy",
                after: &["buggy"],
                panics: false,
                despite: &[],
            }),
            Arc::new(Test {
                name: "despite-buggy",
                after: &["buggy", "fine"],
                panics: false,
                despite: &["buggy"],
            }),
        ];
        let loaded = Loaded::default();
        let engine = EngineConfig::default();
        let runner = test_runner(&paths, &modules, &loaded, &engine);
        let mut status = Status::default();
        runner.run(Stage::Local, &mut status).await;
        let state = |n: &str| status.modules[n].state;
        assert_eq!(state("buggy"), ModState::Failed);
        assert!(
            status.modules["buggy"]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("panicked")
        );
        assert_eq!(state("fine"), ModState::Ok);
        assert_eq!(state("needs-buggy"), ModState::Blocked);
        // One that runs despite it runs, without its output.
        assert_eq!(state("despite-buggy"), ModState::Ok);
        assert_eq!(
            status.modules["despite-buggy"].summary,
            r#"fine, after ["fine"]"#
        );
        // The failure is recorded, so the next run retries it.
        let sem = State::new(&paths)
            .read_sem("buggy", Frequency::PerBoot, Some(&"i-1".parse().unwrap()))
            .unwrap();
        assert!(!sem.ok);
    }
}
