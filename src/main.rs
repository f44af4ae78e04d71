//! stoke: a fast, small boot-time instance initializer.

mod app;
mod cli;
mod config;
mod datasource;
mod exec_record;
mod lineage;
mod logging;
mod logins;
mod metrics;
mod paths;
mod registry;
mod runner;
mod state;
mod status;
mod svg;
mod system;
mod verify;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use stoke_api::{Root, Stage, System};

use crate::app::App;
use crate::cli::{Cli, Command, EXIT_USAGE, StageArg};
use crate::paths::Paths;
use crate::status::{Overall, Status};

/// The command lines the systemd units run (`[-v] run --stage S`), read without building clap's
/// command tree. At boot every page of the binary is cold, and clap's parser is a large part of
/// what start-up touches. Anything else goes to clap.
fn unit_command_line(args: &[std::ffi::OsString]) -> Option<Cli> {
    let args: Vec<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.to_str())
        .collect::<Option<_>>()?;
    let (verbose, rest) = match args.as_slice() {
        [v, rest @ ..]
            if v.len() > 1 && v.starts_with('-') && v[1..].bytes().all(|b| b == b'v') =>
        {
            (u8::try_from(v.len() - 1).ok()?, rest)
        }
        rest => (0, rest),
    };
    let stage = match rest {
        ["run", "--stage", "local"] => StageArg::Local,
        ["run", "--stage", "network"] => StageArg::Network,
        ["run", "--stage", "final"] => StageArg::Final,
        ["run", "--stage", "all"] => StageArg::All,
        _ => return None,
    };
    Some(Cli {
        root: None,
        config: None,
        seed: None,
        execute: false,
        verbose,
        command: Command::Run { stage },
    })
}

fn main() -> ExitCode {
    let at_main = state::process_age_ms();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match unit_command_line(&args).map_or_else(|| Cli::try_parse_from(&args), Ok) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    logging::init(cli.verbose);
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            "stoke {}: main reached {:.0} ms after exec, arguments and logging ready after {:.0} ms",
            env!("CARGO_PKG_VERSION"),
            at_main.unwrap_or(0.0),
            state::process_age_ms().unwrap_or(0.0)
        );
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            // Once, on stderr: under systemd stderr is the journal too.
            eprintln!("stoke: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--help` and `--version` go to stdout with 0; anything else clap rejects is a usage error,
/// with its own exit code (never one of the boot states `run` and `status` report).
fn usage_error(e: &clap::Error) -> ExitCode {
    // Printing fails only when stdout/stderr are gone; the exit code still says it all.
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    // Outlives the stoke that started it: no lock, no config, no root.
    if let Command::ExecRecord {
        result,
        success_codes,
        argv,
    } = &cli.command
    {
        let code = exec_record::exec_record(result, success_codes, argv);
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    if matches!(
        cli.command,
        Command::Status { .. }
            | Command::Schema { .. }
            | Command::Plan { .. }
            | Command::Analyze { .. }
            | Command::Query { .. }
            | Command::Verify { .. }
            | Command::Clean { .. }
    ) {
        default_sigpipe();
    }
    let root = Root::new(cli.root.clone().unwrap_or_else(|| PathBuf::from("/")));
    let paths = Paths::new(root.clone(), cli.config.clone(), cli.seed.clone());
    let system: Arc<dyn System> = if root.is_host() {
        Arc::new(system::Host)
    } else {
        Arc::new(system::Sandbox::new(
            paths.actions_file(),
            paths.run_dir.join("console.log"),
            cli.execute,
        ))
    };
    let app = App::new(paths, system, registry::modules());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run { stage } => {
            if let Some(why) = disabled(&app.paths) {
                println!("stoke is disabled ({why}); nothing to do");
                return Ok(ExitCode::SUCCESS);
            }
            let stages: Vec<Stage> = match stage {
                StageArg::Local => vec![Stage::Local],
                StageArg::Network => vec![Stage::Network],
                StageArg::Final => vec![Stage::Final],
                StageArg::All => Stage::ALL.to_vec(),
            };
            let mut last = None;
            for s in stages {
                last = Some(rt.block_on(app.run_stage(s))?);
            }
            let status = last.context("no stage ran")?;
            Ok(exit(status.overall()))
        }
        Command::Status {
            wait,
            timeout,
            json,
        } => {
            let (status, ended) = if wait {
                let systemctl = image_engine(&app)
                    .tools
                    .get(stoke_api::tools::SYSTEMCTL)
                    .cloned()
                    .unwrap_or_else(|| stoke_api::tools::SYSTEMCTL.to_string());
                rt.block_on(wait_for_done(
                    &app,
                    &systemctl,
                    Duration::from_secs(timeout),
                ))
            } else {
                (Status::read(&app.paths.status_file()), Ended::No)
            };
            let finished = status.as_ref().is_some_and(|s| s.done);
            // A boot that will not run stoke says so, whether asked to wait or not.
            let ended = match (ended, finished) {
                (Ended::No, false) => disabled(&app.paths).map_or(Ended::No, Ended::WillNotRun),
                (e, _) => e,
            };
            let (word, why, code) = match &ended {
                Ended::No => (None, None, None),
                Ended::WillNotRun(why) => (Some("disabled"), Some(why), Some(EXIT_DISABLED)),
                Ended::Unfinished(why) => (Some("error"), Some(why), Some(1)),
            };
            let Some(mut status) = status else {
                let word = word.unwrap_or("not started");
                if json {
                    let mut v = serde_json::json!({ "status": word });
                    if let Some(why) = why {
                        v["reason"] = why.as_str().into();
                    }
                    println!("{v}");
                } else {
                    match why {
                        Some(why) => println!("status: {word} ({why})"),
                        None => println!(
                            "status: not started (no {})",
                            app.paths.status_file().display()
                        ),
                    }
                }
                return Ok(code.map_or(exit(Overall::NotFinished), ExitCode::from));
            };
            attach_background(&app.paths, app.boot_id(), &mut status);
            if json {
                let mut v = serde_json::to_value(&status)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "status".into(),
                        word.unwrap_or(status.overall_word()).into(),
                    );
                    if let Some(why) = why {
                        o.insert("reason".into(), why.as_str().into());
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", status.render());
                if let (Some(word), Some(why)) = (word, why) {
                    println!("status: {word}: stoke did not finish this boot ({why})");
                }
            }
            Ok(code.map_or(exit(status.overall()), ExitCode::from))
        }
        Command::Clean { logs, seed } => {
            let _lock = state::RunLock::acquire(&app.paths, Duration::from_secs(30))?;
            let removed = state::State::new(&app.paths).clean(logs, seed)?;
            for p in &removed {
                println!("removed {}", p.display());
            }
            if removed.is_empty() {
                println!("nothing to clean");
            }
            // The end of a bake: the new layers get the build facts (docs/ready.md).
            let imds = image_engine(&app).imds.unwrap_or_default();
            let facts = rt.block_on(lineage::build_facts(&app.paths, &imds));
            match lineage::record(&app.paths.config_dir, &facts, app.system.as_ref()) {
                Ok(layers) => {
                    for l in layers {
                        println!(
                            "lineage: {l} built {} by stoke {}{}",
                            facts.cleaned_at,
                            facts.stoke_version,
                            facts
                                .source_ami
                                .as_deref()
                                .map(|a| format!(" from {a}"))
                                .unwrap_or_default()
                        );
                    }
                }
                Err(e) => eprintln!(
                    "stoke: lineage: cannot record the build in {}: {e}",
                    app.paths.config_dir.join("lineage.json").display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema {
            file,
            user_data,
            json_schema,
            cloud_init,
        } => schema(&app, file, user_data, json_schema, cloud_init),
        Command::Plan { json } => {
            let plan = rt.block_on(app.plan());
            if json {
                println!("{}", serde_json::to_string_pretty(&plan.to_json())?);
            } else {
                print!("{}", plan.render());
            }
            // As `run` would end: a rejected config layer or user-data makes the boot degraded.
            Ok(if plan.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Analyze { svg, html, from } => {
            let file = from.clone().unwrap_or_else(|| app.paths.status_file());
            let Some(status) = Status::read(&file) else {
                match from {
                    Some(_) => anyhow::bail!("no readable status in {}", file.display()),
                    None => anyhow::bail!("no status for this boot ({})", file.display()),
                }
            };
            if svg.is_none() && html.is_none() {
                print!("{}", status.analyze());
                return Ok(ExitCode::SUCCESS);
            }
            // The spans before stoke belong to this machine's boot: not for --from.
            let spans = if from.is_none() {
                rt.block_on(boot_spans(app.system.as_ref()))
            } else {
                None
            };
            let timeline = svg::Timeline::of(&status, spans.as_ref());
            for (path, text) in [
                (svg, timeline.svg()),
                (html, timeline.html(&status.analyze())),
            ] {
                if let Some(path) = path {
                    // The temporary file goes next to it: a bare name needs its directory.
                    let path = std::path::absolute(&path).unwrap_or(path);
                    stoke_api::atomic_write_volatile(&path, text.as_bytes(), 0o644)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { key } => query(&app, &key),
        Command::Verify { junit, json, layer } => {
            verify::run(&app, &rt, junit.as_deref(), json, layer.as_deref())
        }
        Command::ExecRecord { .. } => unreachable!("handled before the runtime starts"),
        Command::Shutdown => {
            let ok = rt.block_on(app.shutdown())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Commands that only print die of SIGPIPE when their reader goes away (`stoke status | head`),
/// as `cat` does, instead of panicking in `println!`. Rust ignores SIGPIPE by default, which
/// `run` and `shutdown` keep: a peer closing a socket must be an error there, not death.
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler, and no other thread exists yet to race with.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!("SIGPIPE: {e}");
    }
}

fn exit(o: Overall) -> ExitCode {
    ExitCode::from(o as u8)
}

/// `stoke=disabled` on the kernel command line, or `/etc/stoke/disabled`.
fn disabled(paths: &Paths) -> Option<String> {
    let marker = paths.config_dir.join("disabled");
    if marker.exists() {
        return Some(format!("{} exists", marker.display()));
    }
    let cmdline = std::fs::read_to_string(paths.root.path("/proc/cmdline")).unwrap_or_default();
    cmdline
        .split_whitespace()
        .any(|w| w == "stoke=disabled")
        .then(|| "stoke=disabled on the kernel command line".to_string())
}

/// `systemd-analyze`'s firmware/loader/kernel/initrd/userspace times, asked once; `None`
/// where it says nothing (no systemd, boot not finished, a sandbox).
async fn boot_spans(system: &dyn System) -> Option<svg::BootSpans> {
    let out = system
        .run(
            &stoke_api::Cmd::new(stoke_api::tools::SYSTEMD_ANALYZE, Vec::<String>::new())
                .timeout(Duration::from_secs(10)),
        )
        .await
        .ok()?;
    svg::parse_systemd_analyze(&out.stdout)
}

/// `status` when stoke will not finish this boot, and why.
enum Ended {
    No,
    /// Disabled, masked, or its unit skipped: exit [`EXIT_DISABLED`].
    WillNotRun(String),
    /// Its unit failed or exited, or the boot's start-up ended, without stoke finishing: exit 1.
    Unfinished(String),
}

/// `status --wait` exit code when stoke will not run this boot.
const EXIT_DISABLED: u8 = 4;

/// Waits for the final stage, until `timeout`, or until the disabled marker or systemd says
/// it is not coming. systemd is asked about once a second (two `systemctl show` calls).
async fn wait_for_done(app: &App, systemctl: &str, timeout: Duration) -> (Option<Status>, Ended) {
    let deadline = Instant::now() + timeout;
    let mut next_ask = Instant::now();
    loop {
        let status = Status::read(&app.paths.status_file());
        let finished = status
            .as_ref()
            .is_some_and(|s| s.overall() != Overall::NotFinished && s.done);
        if finished {
            return (status, Ended::No);
        }
        if let Some(why) = disabled(&app.paths) {
            return (status, Ended::WillNotRun(why));
        }
        if Instant::now() >= next_ask {
            next_ask = Instant::now() + Duration::from_secs(1);
            let verdict = wait::Systemd::ask(app.system.as_ref(), systemctl)
                .await
                .verdict();
            let ended = match verdict {
                wait::Verdict::Wait => None,
                wait::Verdict::WillNotRun(why) => Some(Ended::WillNotRun(why)),
                wait::Verdict::Ended(why) => Some(Ended::Unfinished(why)),
            };
            if let Some(ended) = ended {
                // The unit may have ended just after the status was read: read it once more.
                let status = Status::read(&app.paths.status_file());
                if status.as_ref().is_some_and(|s| s.done) {
                    return (status, Ended::No);
                }
                return (status, ended);
            }
        }
        if Instant::now() >= deadline {
            return (status, Ended::No);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The engine's keys from the image's own configuration layers (no datasource).
fn image_engine(app: &App) -> config::EngineConfig {
    let mut loaded = config::Loaded::default();
    if let Ok(sources) = config::image_sources(&app.paths.config_dir) {
        let groups: Vec<Vec<config::Source>> = sources.into_iter().map(|s| vec![s]).collect();
        config::load_into(&mut loaded, &groups, &app.modules);
    }
    loaded.engine()
}

/// Results of work modules left running (e.g. non-blocking puppet), from their state dirs.
/// A record still saying "running" whose process is gone (or from another boot) was interrupted.
fn attach_background(paths: &Paths, boot_id: Option<&str>, status: &mut Status) {
    let Some(iid) = status.instance_id.clone() else {
        return;
    };
    for (name, m) in status.modules.iter_mut() {
        let file = paths
            .instance_dir(&iid)
            .join("data")
            .join(name)
            .join(stoke_api::BACKGROUND_FILE);
        m.background = stoke_api::RunRecord::read(&file).map(|r| {
            r.as_of_now(boot_id, |pid| {
                paths.root.path(format!("/proc/{pid}")).exists()
            })
        });
    }
}

fn schema(
    app: &App,
    file: Option<PathBuf>,
    user_data: bool,
    json_schema: bool,
    cloud_init: bool,
) -> anyhow::Result<ExitCode> {
    if json_schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_schema_of(&app.modules))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if cloud_init {
        print!("{}", config::cloud_init_table(&app.modules));
        return Ok(ExitCode::SUCCESS);
    }
    let file = file.context("give a FILE to validate, or --json-schema")?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let mut loaded = config::Loaded::default();
    if user_data || looks_like_user_data(&bytes) {
        // Rendered with example instance data: a template that needs more (a metadata key
        // this machine does not have) may still render at boot.
        let instance = stoke_api::InstanceData {
            datasource: "ec2".into(),
            instance_id: "i-0123456789abcdef0".parse()?,
            ..Default::default()
        };
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("uuid".into(), "00000000-0000-4000-8000-000000000000".into());
        vars.insert("uuid8".into(), "00000000".into());
        let template = datasource::jinja::template_context(&instance, &vars);
        let layer = datasource::decode_layer(&name, &bytes, &template);
        for s in &layer.scripts {
            let when = match s.kind {
                stoke_api::ScriptKind::Boothook => "boothook, every boot".to_string(),
                stoke_api::ScriptKind::Script(f) => format!("script, {f}"),
            };
            println!("script: {} ({when})", s.name);
        }
        loaded.errors.extend(layer.errors);
        loaded.warnings.extend(layer.warnings);
        config::load_into(&mut loaded, &layer.documents, &app.modules);
    } else {
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", file.display()))?;
        config::load_into(
            &mut loaded,
            &[vec![config::Source { name, text }]],
            &app.modules,
        );
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    if loaded.errors.is_empty() {
        println!("{}: valid", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &loaded.errors {
            println!("{e}");
        }
        Ok(ExitCode::from(1))
    }
}

/// A user-data's first bytes: gzip, MIME, or a cloud-init type line (`#cloud-config`,
/// `#!`, `## template: jinja`, ...). An image config file is plain YAML.
fn looks_like_user_data(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return true;
    }
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first).to_ascii_lowercase();
    [
        "#cloud-",
        "#!",
        "## template:",
        "#include",
        "#part-handler",
        "content-type:",
        "mime-version:",
    ]
    .iter()
    .any(|p| first.starts_with(p))
}

/// One JSON Schema for the whole document: the engine's keys and every module's.
fn json_schema_of(modules: &[Arc<dyn stoke_api::Module>]) -> serde_json::Value {
    let mut generator = schemars::SchemaGenerator::default();
    let mut properties = serde_json::Map::new();
    let mut specs = vec![config::engine_spec()];
    specs.extend(modules.iter().map(|m| m.spec().config));
    for spec in specs {
        let schema = (spec.schema)(&mut generator);
        let v = schema.to_value();
        let resolved = resolve_ref(&v, &generator);
        if let Some(props) = resolved.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                properties.entry(k.clone()).or_insert_with(|| p.clone());
            }
        }
    }
    let defs = generator.definitions().clone();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "stoke configuration",
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "$defs": defs,
    })
}

fn resolve_ref(v: &serde_json::Value, g: &schemars::SchemaGenerator) -> serde_json::Value {
    if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
        let name = r.rsplit('/').next().unwrap_or("");
        if let Some(def) = g.definitions().get(name) {
            return def.clone();
        }
    }
    v.clone()
}

fn query(app: &App, key: &str) -> anyhow::Result<ExitCode> {
    if key == "image" {
        // The image's own record: no instance needed (an image being built has none yet).
        let mut loaded = config::Loaded::default();
        let groups: Vec<Vec<config::Source>> = config::image_sources(&app.paths.config_dir)
            .with_context(|| format!("reading {}", app.paths.config_dir.display()))?
            .into_iter()
            .map(|s| vec![s])
            .collect();
        config::load_into(&mut loaded, &groups, &app.modules);
        for e in &loaded.errors {
            eprintln!("stoke: {e}");
        }
        let layers = lineage::of(&app.paths.config_dir, &loaded.images);
        println!("{}", serde_json::to_string_pretty(&layers)?);
        return Ok(ExitCode::SUCCESS);
    }
    let st = state::State::new(&app.paths);
    let iid = st
        .current_instance_id()
        .context("no instance known yet (stoke has not found its datasource)")?;
    let found = datasource::load_cache(&app.paths, &iid)
        .with_context(|| format!("no cached metadata for {iid}"))?;
    // Tag keys are the instance's own spelling: not normalised.
    if key == "tags" {
        println!("{}", serde_json::to_string_pretty(&found.instance.tags)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(tag) = key.strip_prefix(stoke_api::TAG_PREFIX) {
        let Some(v) = found.instance.tags.get(tag) else {
            anyhow::bail!(
                "no tag `{tag}` in the cached metadata (stoke reads the tags its configuration \
                 uses; known: {})",
                found
                    .instance
                    .tags
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let norm = key.replace('-', "_");
    match norm.as_str() {
        "user_data" => {
            let ud = found.user_data.unwrap_or_default();
            print!("{}", String::from_utf8_lossy(&ud));
            return Ok(ExitCode::SUCCESS);
        }
        "vendor_data" => {
            print!(
                "{}",
                String::from_utf8_lossy(&found.vendor_data.unwrap_or_default())
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let v = serde_json::to_value(&found.instance)?;
    match v.get(&norm) {
        Some(serde_json::Value::String(s)) => println!("{s}"),
        Some(other) => println!("{}", serde_json::to_string_pretty(other)?),
        None => {
            let keys: Vec<String> = v
                .as_object()
                .map(|o| o.keys().map(|k| k.replace('_', "-")).collect())
                .unwrap_or_default();
            anyhow::bail!(
                "no metadata key `{key}` (known: {}, user-data, vendor-data)",
                keys.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_units_command_lines_read_as_clap_reads_them() {
        for stage in ["local", "network", "final", "all"] {
            for v in ["", "-v ", "-vv "] {
                let args = argv(&format!("stoke {v}run --stage {stage}"));
                let fast = unit_command_line(&args);
                assert!(fast.is_some(), "{args:?}");
                assert_eq!(fast, Some(Cli::parse_from(&args)), "{args:?}");
            }
        }
    }

    #[test]
    fn every_other_command_line_goes_to_clap() {
        for line in [
            "stoke",
            "stoke -v",
            "stoke run --stage nope",
            "stoke run --stage=local",
            "stoke --root /tmp/x run --stage local",
            "stoke run --stage local --execute",
            "stoke -x run --stage local",
            "stoke -- run --stage local",
            "stoke status --wait",
        ] {
            assert_eq!(unit_command_line(&argv(line)), None, "{line}");
        }
    }
}
