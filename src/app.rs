//! One stoke invocation: paths, the system, the modules, and the steps that
//! every command shares (load config, find the instance).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoke_api::{InstanceData, Module, Stage, System, UserScript};

use crate::config::{self, EngineConfig, Loaded, Source};
use crate::datasource::{self, Discovery};
use crate::paths::Paths;
use crate::runner::Runner;
use crate::state::{self, RunLock, State};
use crate::status::{StageStatus, Status};

pub struct App {
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub modules: Vec<Arc<dyn Module>>,
}

/// Configuration and instance, as far as this stage can know them.
pub struct Prepared {
    pub loaded: Loaded,
    pub engine: EngineConfig,
    pub instance: Option<Arc<InstanceData>>,
    pub no_instance_reason: String,
    /// The instance id known before its metadata (EC2 Nitro: DMI), when the metadata is not.
    pub pending_instance_id: Option<String>,
    /// Problems with the datasource (the stage goes on without it).
    pub datasource_errors: Vec<String>,
    /// Scripts and boothooks from user-data.
    pub user_scripts: Arc<Vec<UserScript>>,
}

impl App {
    /// Loads config and finds the instance. `network` allows the network
    /// (EC2 refresh); without it only local sources and caches are used.
    pub async fn prepare(&self, stage: Stage, this_boot_iid: Option<&str>) -> Prepared {
        self.prepare_with(stage, this_boot_iid, false).await
    }

    /// `run`: may create the instance's UUID when a user-data template asks for it.
    async fn prepare_for_run(&self, stage: Stage, this_boot_iid: Option<&str>) -> Prepared {
        self.prepare_with(stage, this_boot_iid, true).await
    }

    async fn prepare_with(&self, stage: Stage, this_boot_iid: Option<&str>, run: bool) -> Prepared {
        let started = Instant::now();
        let mut loaded = Loaded::default();
        // Kept for what the metadata service must be asked beyond the base (`fetch_extras`).
        let mut image_layers: Vec<Vec<Source>> = Vec::new();
        match config::image_sources(&self.paths.config_dir) {
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
            loaded
        });
        let early = stage == Stage::Local
            && !image_layers
                .iter()
                .flatten()
                .any(|s| s.text.contains("datasource") || s.text.contains("nocloud"));
        let discover =
            |engine| datasource::discover(&self.paths, engine, &self.system, stage, this_boot_iid);
        let defaults = EngineConfig::default();
        let (parsed, early_discovery) = tokio::join!(parse, async {
            match early {
                true => Some(discover(&defaults).await),
                false => None,
            }
        });
        match parsed {
            Ok(parsed) => {
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
        let mut pending_instance_id = None;
        let discovery = match early_discovery {
            Some(d) => d,
            None => discover(&engine).await,
        };
        let (found, no_instance_reason) = match discovery {
            Discovery::Found(f) => (Some(*f), String::new()),
            Discovery::Pending { why, instance_id } => {
                pending_instance_id = instance_id;
                (None, why)
            }
            Discovery::Nothing(why) => (None, why),
            Discovery::Failed(why) => {
                tracing::error!("datasource: {why}");
                datasource_errors.push(format!("datasource: {why}"));
                (None, why)
            }
        };
        tracing::debug!(
            "datasource: {} after {:.1} ms",
            found
                .as_ref()
                .map_or("none", |f| f.instance.datasource.as_str()),
            started.elapsed().as_secs_f64() * 1000.0
        );
        let mut instance = None;
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
            }
            let st = State::new(&self.paths);
            if let Err(e) = st.set_instance_id(&found.instance.instance_id) {
                datasource_errors.push(format!("recording instance id: {e}"));
            }
            if !found.from_cache
                && let Err(e) = datasource::store_cache(&self.paths, &found)
            {
                tracing::warn!("cannot cache metadata: {e}");
            }
            let mut groups = Vec::new();
            // Templates see the image's `vars:` (user-data cannot define what it is rendered with),
            // and the instance's UUID (`uuid`, `uuid8`) that the hostname module uses too.
            let mut template_vars = engine.vars.clone();
            let wants_template = [&found.user_data, &found.vendor_data]
                .iter()
                .filter_map(|d| d.as_deref())
                .any(|d| d.windows(18).any(|w| w == b"## template: jinja"));
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
            instance = Some(Arc::new(found.instance));
        }
        let engine = loaded.engine();
        Prepared {
            loaded,
            engine,
            instance,
            no_instance_reason,
            pending_instance_id,
            datasource_errors,
            user_scripts: Arc::new(user_scripts),
        }
    }

    fn runner<'a>(&'a self, prep: &'a Prepared, boot_id: Option<String>) -> Runner<'a> {
        Runner {
            paths: &self.paths,
            modules: &self.modules,
            system: self.system.clone(),
            loaded: &prep.loaded,
            engine: &prep.engine,
            instance: prep.instance.clone(),
            no_instance_reason: prep.no_instance_reason.clone(),
            pending_instance_id: prep.pending_instance_id.clone(),
            boot_id,
            self_exe: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/stoke".into()),
            user_scripts: prep.user_scripts.clone(),
        }
    }

    /// `stoke run --stage S`.
    pub async fn run_stage(&self, stage: Stage) -> anyhow::Result<Status> {
        let _lock = RunLock::acquire(&self.paths, Duration::from_secs(120))?;
        let started = Instant::now();
        State::new(&self.paths).remove_stale_temp_files();
        let boot_id = state::boot_id(&self.paths);
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
                prepare_ms: None,
                reruns: Vec::new(),
            },
        );
        let prep = self
            .prepare_for_run(stage, status.instance_id.clone().as_deref())
            .await;
        if let Some(s) = status.stages.get_mut(&stage) {
            s.prepare_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        status.instance_id = prep.instance.as_ref().map(|i| i.instance_id.clone());
        status.datasource = prep.instance.as_ref().map(|i| i.datasource.clone());
        status.lineage = crate::lineage::of(&self.paths.config_dir, &prep.loaded.images);
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
            let path = self.paths.root.path(file);
            // Metrics are an observer's: a failure to write them is logged, never a failed boot.
            if let Err(e) = crate::metrics::write(&path, &status) {
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
        let boot_id = state::boot_id(&self.paths);
        let status = Status::load(&self.paths, boot_id.as_deref());
        let prep = self
            .prepare(Stage::Local, status.instance_id.as_deref())
            .await;
        let instance = prep
            .instance
            .as_ref()
            .map(|i| format!("{} ({})", i.instance_id, i.datasource))
            .unwrap_or_else(|| format!("unknown: {}", prep.no_instance_reason));
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
        let _lock = RunLock::acquire(&self.paths, Duration::from_secs(30))?;
        let boot_id = state::boot_id(&self.paths);
        let status = Status::load(&self.paths, boot_id.as_deref());
        // At shutdown the instance is the one this boot ran as (or the last one recorded).
        let iid = status
            .instance_id
            .clone()
            .or_else(|| State::new(&self.paths).current_instance_id());
        let prep = self.prepare(Stage::Final, iid.as_deref()).await;
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
    use crate::status::ModState;
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
fn instance_uuid(paths: &Paths, iid: &str, create: bool) -> Option<String> {
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
