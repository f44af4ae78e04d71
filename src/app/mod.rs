//! One stoke invocation: paths, the system, the modules, and the steps that
//! every command shares (load config, find the instance).

pub mod lineage;
pub mod registry;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use anyhow::Context as _;
use stoke_api::{InstanceId, Module, Root, Stage, System, UserScript};

use crate::config::{self, EngineConfig, Loaded, Source};
use crate::datasource::{self, Answer, KnownIds};
use crate::paths::Paths;
use crate::runner::{Instance, Runner};
use crate::state::status::{PrepareStep, StageStatus, Status};
use crate::state::{self, RunLock, State};

pub struct App {
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub modules: Vec<Arc<dyn Module>>,
    /// Read once per process (see [`App::boot_id`]).
    boot_id: OnceLock<Option<String>>,
    /// The process environment, read once: modules get it through their Context.
    env: Arc<std::collections::BTreeMap<String, String>>,
}

/// Configuration and instance, as far as this stage can know them.
pub struct Prepared {
    pub loaded: Loaded,
    pub engine: EngineConfig,
    pub instance: Instance,
    /// Problems with the datasource (the stage goes on without it).
    pub datasource_errors: Vec<String>,
    /// Scripts and boothooks from user-data.
    pub user_scripts: Arc<Vec<UserScript>>,
    /// When each part of the preparation ended, from its start (`stoke analyze` shows them).
    pub steps: Vec<PrepareStep>,
}

impl App {
    /// The app for a root: the real system on `/`, the recording sandbox anywhere else.
    pub fn for_root(
        root: PathBuf,
        config: Option<PathBuf>,
        seed: Option<PathBuf>,
        execute: bool,
    ) -> Self {
        let root = Root::new(root);
        let paths = Paths::new(root.clone(), config, seed);
        let system: Arc<dyn System> = if root.is_host() {
            Arc::new(crate::system::RealSystem)
        } else {
            Arc::new(crate::system::Sandbox::new(
                paths.actions_file(),
                paths.run_dir.join("console.log"),
                execute,
            ))
        };
        App::new(paths, system, registry::modules())
    }

    /// The engine's keys from the image's own configuration layers (no datasource).
    pub fn image_engine(&self) -> EngineConfig {
        let mut loaded = Loaded::default();
        if let Ok(sources) = config::image_sources(&self.paths.config()) {
            let groups: Vec<Vec<Source>> = sources.into_iter().map(|s| vec![s]).collect();
            config::load_into(&mut loaded, &groups, &self.modules);
        }
        loaded.engine()
    }

    /// `stoke clean`: instance state removed (under the run lock); the removed paths.
    pub fn clean(&self, logs: bool, seed: bool) -> anyhow::Result<Vec<PathBuf>> {
        let _lock = RunLock::acquire(&self.paths, Duration::from_secs(30))?;
        Ok(State::new(&self.paths).clean(logs, seed)?)
    }

    /// The end of a bake: the image's layers get the build facts (docs/ready.md); the facts
    /// and the layers that got them.
    pub async fn record_build(
        &self,
    ) -> (
        crate::state::lineage::BuildFacts,
        std::io::Result<Vec<String>>,
    ) {
        let imds = self.image_engine().imds.unwrap_or_default();
        let facts = lineage::build_facts(&self.paths, &imds).await;
        let recorded = lineage::record(&self.paths.config(), &facts, self.system.as_ref());
        (facts, recorded)
    }

    /// The current instance's cached metadata (`stoke query`).
    pub fn cached_instance(&self) -> anyhow::Result<datasource::Found> {
        let iid = State::new(&self.paths)
            .current_instance_id()
            .context("no instance known yet (stoke has not found its datasource)")?;
        datasource::load_cache(&self.paths, &iid)
            .with_context(|| format!("no cached metadata for {iid}"))
    }

    /// A user-data read as `run` reads it (rendered with example instance data: a template
    /// that needs a metadata key this machine lacks may still render at boot), for `stoke schema`.
    pub fn check_user_data(&self, name: &str, bytes: &[u8]) -> (Loaded, Vec<UserScript>) {
        let instance = stoke_api::InstanceData {
            datasource: "ec2".into(),
            instance_id: InstanceId::new("i-0123456789abcdef0").unwrap_or_default(),
            ..Default::default()
        };
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("uuid".into(), "00000000-0000-4000-8000-000000000000".into());
        vars.insert("uuid8".into(), "00000000".into());
        let template = datasource::jinja::template_context(&instance, &vars);
        let layer = datasource::decode_layer(name, bytes, &template);
        let mut loaded = Loaded::default();
        loaded.errors.extend(layer.errors);
        loaded.warnings.extend(layer.warnings);
        config::load_into(&mut loaded, &layer.documents, &self.modules);
        (loaded, layer.scripts)
    }

    /// The context module `name` gets to check the image (`stoke verify`): the image's
    /// configuration, no instance.
    pub fn image_context(
        &self,
        loaded: &Loaded,
        engine: &EngineConfig,
        name: &str,
        section: serde_json::Value,
    ) -> stoke_api::Context {
        let image = Instance::Unknown {
            why: format!("stoke {name} checks the image, not an instance"),
        };
        self.runner_with(loaded, engine, image, self.boot_id().map(str::to_string))
            .context_for(name, &[], section, &Default::default())
    }

    /// The image's lineage (`stoke query image`): no instance needed.
    pub fn image_lineage(&self) -> anyhow::Result<(Vec<crate::state::lineage::Layer>, Loaded)> {
        let mut loaded = Loaded::default();
        let groups: Vec<Vec<Source>> = config::image_sources(&self.paths.config())
            .with_context(|| format!("reading {}", self.paths.config_dir.display()))?
            .into_iter()
            .map(|s| vec![s])
            .collect();
        config::load_into(&mut loaded, &groups, &self.modules);
        Ok((lineage::of(&self.paths.config(), &loaded.images), loaded))
    }

    pub fn new(paths: Paths, system: Arc<dyn System>, modules: Vec<Arc<dyn Module>>) -> Self {
        App {
            paths,
            system,
            modules,
            boot_id: OnceLock::new(),
            env: Arc::new(std::env::vars().collect()),
        }
    }

    /// This boot's id, read once. A `run` in a root without a kernel one makes one up and
    /// keeps it for the later stages (`state::boot_id_or_make`); other commands only read.
    pub fn boot_id(&self) -> Option<&str> {
        self.boot_id
            .get_or_init(|| state::boot_id(&self.paths))
            .as_deref()
    }

    fn boot_id_for_run(&self) -> Option<&str> {
        self.boot_id
            .get_or_init(|| state::boot_id_or_make(&self.paths))
            .as_deref()
    }

    /// Loads config and finds the instance. `network` allows the network
    /// (EC2 refresh); without it only local sources and caches are used.
    pub async fn prepare(&self, stage: Stage, this_boot_iid: Option<&InstanceId>) -> Prepared {
        self.prepare_with(stage, this_boot_iid, false).await
    }

    /// `run`: may create the instance's UUID when a user-data template asks for it.
    async fn prepare_for_run(&self, stage: Stage, this_boot_iid: Option<&InstanceId>) -> Prepared {
        self.prepare_with(stage, this_boot_iid, true).await
    }

    async fn prepare_with(
        &self,
        stage: Stage,
        this_boot_iid: Option<&InstanceId>,
        run: bool,
    ) -> Prepared {
        let started = Instant::now();
        let mut loaded = Loaded::default();
        // Kept for what the metadata service must be asked beyond the base (`fetch_extras`).
        let mut image_layers: Vec<Vec<Source>> = Vec::new();
        match config::image_sources(&self.paths.config()) {
            Ok(sources) => image_layers = sources.into_iter().map(|s| vec![s]).collect(),
            Err(e) => loaded.errors.push(stoke_api::ConfigError::new(format!(
                "reading {}: {e}",
                self.paths.config_dir.display()
            ))),
        }
        // The local stage's datasource reads only what the engine's `datasource:` and
        // `nocloud:` keys choose. When no image layer names them, their defaults hold
        // whatever the layers say, so the seed is read while the layers are parsed and checked
        // (on the blocking pool: the NoCloud volume's mount blocks too, in its own thread).
        let layers = image_layers.clone();
        let modules = self.modules.clone();
        let parse = tokio::task::spawn_blocking(move || {
            let mut loaded = Loaded::default();
            config::load_into(&mut loaded, &layers, &modules);
            (loaded, started.elapsed())
        });
        let early = stage == Stage::Local
            && !image_layers
                .iter()
                .flatten()
                .any(|s| s.text.contains("datasource") || s.text.contains("nocloud"));
        let last_iid = State::new(&self.paths).current_instance_id();
        let known = KnownIds {
            this_boot: this_boot_iid,
            last: last_iid.as_ref(),
        };
        let ask = |engine| datasource::ask(&self.paths, engine, self.system.as_ref(), stage, known);
        let defaults = EngineConfig::default();
        let (parsed, early_answer) = tokio::join!(parse, async {
            match early {
                true => Some((ask(&defaults).await, started.elapsed())),
                false => None,
            }
        });
        let mut steps = Vec::new();
        match parsed {
            Ok((parsed, took)) => {
                steps.push(PrepareStep::new("image layers", took));
                loaded.merged = parsed.merged;
                loaded.errors.extend(parsed.errors);
                loaded.warnings.extend(parsed.warnings);
                loaded.images = parsed.images;
            }
            Err(e) => loaded
                .errors
                .push(stoke_api::ConfigError::new(format!("image layers: {e}"))),
        }
        let engine = loaded.engine();
        tracing::debug!(
            "config: image layers loaded after {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        let mut datasource_errors = Vec::new();
        let (answer, answered) = match early_answer {
            Some(d) => d,
            None => (ask(&engine).await, started.elapsed()),
        };
        steps.push(PrepareStep::new("datasource", answered));
        let mut instance = Instance::Unknown { why: String::new() };
        let found = match answer {
            Answer::Found(f) => Some(*f),
            Answer::Pending {
                why,
                instance_id: Some(id),
            } => {
                instance = Instance::IdOnly { id, why };
                None
            }
            Answer::Pending { why, .. } | Answer::Nothing(why) => {
                instance = Instance::Unknown { why };
                None
            }
            Answer::Failed(why) => {
                tracing::error!("datasource: {why}");
                datasource_errors.push(format!("datasource: {why}"));
                instance = Instance::Unknown { why };
                None
            }
        };
        tracing::debug!(
            "datasource: {} after {:.1} ms",
            found
                .as_ref()
                .map_or("none", |f| f.instance.datasource.as_str()),
            started.elapsed().as_secs_f64() * 1000.0
        );
        let mut user_scripts = Vec::new();
        if let Some(mut found) = found {
            if found.imds.is_some() {
                // What the configuration uses is known only now (user-data came with the
                // metadata): tags and interfaces are fetched when it names them.
                let unrendered = |raw: &Option<Vec<u8>>| {
                    raw.as_deref()
                        .and_then(|r| {
                            datasource::userdata::decode_rendering(r, &|b| Ok(b.to_string())).ok()
                        })
                        .map(|u| u.cloud_configs)
                        .unwrap_or_default()
                };
                let data: Vec<String> = unrendered(&found.vendor_data)
                    .into_iter()
                    .chain(unrendered(&found.user_data))
                    .collect();
                let texts = image_layers
                    .iter()
                    .flatten()
                    .map(|s| s.text.as_str())
                    .chain(data.iter().map(String::as_str));
                match datasource::fetch_extras(&mut found, texts).await {
                    Ok(warnings) => loaded.warnings.extend(warnings),
                    Err(e) => {
                        tracing::error!("datasource: {e}");
                        datasource_errors.push(format!("datasource: {e}"));
                    }
                }
                found.imds = None;
                steps.push(PrepareStep::new("metadata extras", started.elapsed()));
            }
            // The instance's record and cache are durable writes (fsyncs): made on the blocking
            // pool while the user-data is decoded and merged, and awaited before any module runs.
            let mut record = Some(tokio::task::spawn_blocking({
                let paths = self.paths.clone();
                let iid = found.instance.instance_id.clone();
                let cache = (!found.from_cache).then(|| found.clone());
                move || {
                    let recorded = State::new(&paths).set_instance_id(&iid);
                    if let Some(f) = cache
                        && let Err(e) = datasource::store_cache(&paths, &f)
                    {
                        tracing::warn!("cannot cache metadata: {e}");
                    }
                    (recorded, started.elapsed())
                }
            }));
            let mut recorded = async |record: &mut Option<JoinHandle<_>>| {
                let Some(handle) = record.take() else { return };
                let (result, took) = match handle.await {
                    Ok(r) => r,
                    Err(e) => (Err(std::io::Error::other(e)), started.elapsed()),
                };
                if let Err(e) = result {
                    datasource_errors.push(format!("recording instance id: {e}"));
                }
                steps.push(PrepareStep::new("instance recorded", took));
            };
            let mut groups = Vec::new();
            // Templates see the image's `vars:` (user-data cannot define what it is rendered with),
            // and the instance's UUID (`uuid`, `uuid8`) that the hostname module uses too.
            let mut template_vars = engine.vars.clone();
            let wants_template = [&found.user_data, &found.vendor_data]
                .iter()
                .filter_map(|d| d.as_deref())
                .any(|d| d.windows(18).any(|w| w == b"## template: jinja"));
            if wants_template {
                // The UUID is kept in the instance's directory, which the record makes.
                recorded(&mut record).await;
            }
            if wants_template
                && let Some(u) = instance_uuid(&self.paths, &found.instance.instance_id, run)
            {
                template_vars.insert("uuid8".into(), u[..8].to_string());
                template_vars.insert("uuid".into(), u);
            }
            let template = datasource::jinja::template_context(&found.instance, &template_vars);
            for (name, raw) in [
                ("vendor-data", &found.vendor_data),
                ("user-data", &found.user_data),
            ] {
                let Some(raw) = raw else { continue };
                let layer = datasource::decode_layer(name, raw, &template);
                loaded.errors.extend(layer.errors);
                loaded.warnings.extend(layer.warnings);
                if name == "user-data" {
                    user_scripts = layer.scripts;
                } else {
                    for s in &layer.scripts {
                        loaded.warnings.push(format!(
                            "{name}: script {}: stoke runs scripts from user-data only; ignored",
                            s.name
                        ));
                    }
                }
                groups.extend(layer.documents);
            }
            let image_layers = loaded.images.len();
            config::load_into(&mut loaded, &groups, &self.modules);
            // `image:` says who an image layer is: user-data and vendor-data are no layer.
            for (name, _) in loaded.images.drain(image_layers..) {
                loaded.warnings.push(format!(
                    "{name}: `image:` describes an image layer (stoke.d/*.yaml); ignored here"
                ));
            }
            let merged = started.elapsed();
            recorded(&mut record).await;
            steps.push(PrepareStep::new("user-data", merged));
            instance = Instance::Described(Arc::new(found.instance));
        }
        let engine = loaded.engine();
        Prepared {
            loaded,
            engine,
            instance,
            datasource_errors,
            user_scripts: Arc::new(user_scripts),
            steps,
        }
    }

    fn runner<'a>(&'a self, prep: &'a Prepared, boot_id: Option<String>) -> Runner<'a> {
        self.runner_with(&prep.loaded, &prep.engine, prep.instance.clone(), boot_id)
            .user_scripts(prep.user_scripts.clone())
    }

    /// A runner over given configuration (`stoke verify`: the image's layers, no instance).
    pub fn runner_with<'a>(
        &'a self,
        loaded: &'a Loaded,
        engine: &'a EngineConfig,
        instance: Instance,
        boot_id: Option<String>,
    ) -> Runner<'a> {
        Runner {
            paths: &self.paths,
            modules: &self.modules,
            system: self.system.clone(),
            loaded,
            engine,
            instance,
            boot_id,
            self_exe: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/stoke".into()),
            env: self.env.clone(),
            user_scripts: Arc::default(),
        }
    }

    /// `stoke run --stage S`.
    pub async fn run_stage(&self, stage: Stage) -> anyhow::Result<Status> {
        let _lock = RunLock::acquire_off_runtime(&self.paths, Duration::from_secs(120)).await?;
        let started = Instant::now();
        // What a killed stoke left is swept while the stage prepares (the sweep lists
        // directories; a temp file of this process is never taken for one), and before any
        // module runs.
        let sweep = tokio::task::spawn_blocking({
            let paths = self.paths.clone();
            move || State::new(&paths).remove_stale_temp_files()
        });
        let boot_id = self.boot_id_for_run().map(str::to_string);
        let mut status = Status::load(&self.paths, boot_id.as_deref());
        if status.kernel_started_unix.is_none() && self.paths.root.is_host() {
            status.kernel_started_unix = state::kernel_started_unix();
        }
        status.start_stage(
            stage,
            StageStatus {
                started_unix: state::now_unix(),
                finished_unix: None,
                duration_ms: None,
                startup_ms: state::process_age_ms(),
                main_ms: state::main_reached_ms(),
                prepare_ms: None,
                prepare_steps: Vec::new(),
                reruns: Vec::new(),
            },
        );
        let prep = self
            .prepare_for_run(stage, status.instance_id.clone().as_ref())
            .await;
        if let Err(e) = sweep.await {
            tracing::warn!("stale temp files: {e}");
        }
        if let Some(s) = status.stages.get_mut(&stage) {
            s.prepare_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            s.prepare_steps = prep.steps.clone();
        }
        status.instance_id = prep.instance.described().map(|i| i.instance_id.clone());
        status.datasource = prep.instance.described().map(|i| i.datasource.clone());
        status.lineage = lineage::of(&self.paths.config(), &prep.loaded.images);
        let errors = prep
            .loaded
            .errors
            .iter()
            .map(|e| e.to_string())
            .chain(prep.datasource_errors.iter().cloned());
        for e in errors {
            if !status.errors.contains(&e) {
                tracing::error!("{e}");
                status.errors.push(e);
            }
        }
        for w in &prep.loaded.warnings {
            if !status.warnings.contains(w) {
                tracing::warn!("{w}");
                status.warnings.push(w.clone());
            }
        }
        self.runner(&prep, boot_id).run(stage, &mut status).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        status.finish_stage(stage, ms, state::now_unix());
        if stage == Stage::Final {
            status.done = true;
        }
        status.save(&self.paths);
        if let Some(file) = prep
            .engine
            .metrics
            .as_ref()
            .and_then(|m| m.textfile.as_ref())
        {
            let path = self.paths.root.host_path(file);
            // Metrics are an observer's: a failure to write them is logged, never a failed boot.
            if let Err(e) = crate::state::metrics::write(&self.paths, &path, &status) {
                tracing::warn!("metrics: cannot write {}: {e}", path.display());
            }
        }
        let line = summary_line(stage, ms, &status);
        tracing::info!("{line}");
        if let Err(e) = self.system.console(&format!("{line}\n")) {
            tracing::debug!("console: {e}");
        }
        Ok(status)
    }

    /// `stoke plan`: every stage, from local knowledge only.
    pub async fn plan(&self) -> Plan {
        let boot_id = self.boot_id().map(str::to_string);
        let status = Status::load(&self.paths, boot_id.as_deref());
        let prep = self
            .prepare(Stage::Local, status.instance_id.as_ref())
            .await;
        let instance = prep.instance.described().map_or_else(
            || format!("unknown: {}", prep.instance.why_not_described()),
            |i| format!("{} ({})", i.instance_id, i.datasource),
        );
        let runner = self.runner(&prep, boot_id);
        let lines = Stage::ALL
            .into_iter()
            .flat_map(|stage| {
                runner
                    .plan(stage, &status)
                    .into_iter()
                    .filter(move |l| l.stage == stage)
            })
            .collect();
        Plan {
            instance,
            errors: prep.loaded.errors.iter().map(|e| e.to_string()).collect(),
            warnings: prep.loaded.warnings.clone(),
            lines,
        }
    }

    /// `stoke shutdown`: modules' shutdown work (e.g. DNS deregistration).
    pub async fn shutdown(&self) -> anyhow::Result<bool> {
        let _lock = RunLock::acquire_off_runtime(&self.paths, Duration::from_secs(30)).await?;
        let boot_id = self.boot_id().map(str::to_string);
        let status = Status::load(&self.paths, boot_id.as_deref());
        // At shutdown the instance is the one this boot ran as (or the last one recorded).
        let iid = status
            .instance_id
            .clone()
            .or_else(|| State::new(&self.paths).current_instance_id());
        let prep = self.prepare(Stage::Final, iid.as_ref()).await;
        let runner = self.runner(&prep, boot_id);
        let mut ok = true;
        for module in &self.modules {
            let ctx = runner.shutdown_context(module.as_ref());
            match module.shutdown(&ctx).await {
                Ok(Some(report)) => tracing::info!("{}: {}", module.spec().name, report.summary),
                Ok(None) => {}
                Err(e) => {
                    ok = false;
                    tracing::error!("{}: shutdown failed: {e}", module.spec().name);
                }
            }
        }
        Ok(ok)
    }
}

/// What `stoke plan` found.
pub struct Plan {
    pub instance: String,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub lines: Vec<crate::runner::PlanLine>,
}

impl Plan {
    pub fn render(&self) -> String {
        let mut out = format!("instance: {}\n", self.instance);
        for e in &self.errors {
            out.push_str(&format!("config error: {e}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        for line in &self.lines {
            out.push_str(&format!(
                "{:<8} {:<22} {:<13} {:<9} {}\n",
                line.stage.as_str(),
                line.name,
                line.frequency.as_str(),
                line.verdict(),
                line.reason
            ));
            if let Some(d) = &line.detail {
                out.push_str(&format!("         {:<22} {d}\n", ""));
            }
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let modules: serde_json::Map<String, serde_json::Value> = self
            .lines
            .iter()
            .map(|l| {
                (
                    l.name.to_string(),
                    serde_json::json!({
                        "stage": l.stage,
                        "frequency": l.frequency,
                        "verdict": l.verdict(),
                        "due": l.verdict() == "due",
                        "reason": l.reason,
                        "detail": l.detail,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "instance": self.instance,
            "errors": self.errors,
            "warnings": self.warnings,
            "modules": modules,
        })
    }
}

fn summary_line(stage: Stage, ms: f64, status: &Status) -> String {
    use crate::state::status::ModState;
    let count = |s: ModState| {
        status
            .modules
            .values()
            .filter(|m| m.state == s && (m.stage == stage || s == ModState::Deferred))
            .count()
    };
    format!(
        "stoke: stage {stage} finished in {ms:.1} ms: {} ok, {} failed, {} skipped, {} deferred; status {}",
        count(ModState::Ok),
        count(ModState::Failed) + count(ModState::Blocked),
        count(ModState::Skipped),
        count(ModState::Deferred),
        status.overall_line()
    )
}

/// The instance's UUID as the hostname module keeps it (`instances/<id>/data/hostname/uuid`):
/// read, or made and kept when `create` (a run, not `plan`) and there is none yet.
fn instance_uuid(paths: &Paths, iid: &InstanceId, create: bool) -> Option<String> {
    let path = paths
        .instance_dir(iid)
        .join("data")
        .join("hostname")
        .join("uuid");
    if let Ok(Some(text)) = stoke_api::read_capped(&path, 128)
        && let Ok(u) = uuid::Uuid::parse_str(String::from_utf8_lossy(&text).trim())
        && !u.is_nil()
    {
        return Some(u.hyphenated().to_string());
    }
    if !create {
        return None;
    }
    let u = uuid::Uuid::new_v4().hyphenated().to_string();
    match stoke_api::atomic_write(&path, format!("{u}\n").as_bytes(), 0o644) {
        Ok(()) => Some(u),
        Err(e) => {
            tracing::warn!("cannot keep the instance UUID at {}: {e}", path.display());
            None
        }
    }
}
