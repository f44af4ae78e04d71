//! The `puppet` module: a delta Puppet run at boot, blocking or in the background,
//! with its exit code read right (`--detailed-exitcodes`: 0 and 2 are success).
//!
//! - blocking (stage network): the stage waits; output streams to the journal;
//!   a failure fails the module with the exit code, its meaning and the last lines.
//! - non-blocking (stage final): started so that it outlives stoke — a transient
//!   systemd unit where systemd runs, else a detached process — wrapped in
//!   `stoke exec-record`, which writes `background.json` in this module's state
//!   directory (running, then succeeded/failed with code and last lines).
//!
//! See docs/puppet.md for configuration and the exit-code table.

#![forbid(unsafe_code)]

mod config;
mod lock;
mod puppet_conf;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Report, RunRecord, RunState, Stage,
    StateScope, SysError, config_spec, render, tools,
};

pub use config::{
    Argv, ConfEntry, CsrAttributes, DEFAULT_TIMEOUT_SECS, DEFAULT_WAIT_FOR_LOCK_SECS, InstallType,
    MAX_TIMEOUT_SECS, MAX_WAIT_FOR_LOCK_SECS, Mode, Puppet, PuppetConfig, PuppetKeys, Scalar,
};
pub use lock::DEFAULT_LOCK_FILES;

pub const NAME: &str = "puppet";
/// The transient unit of a non-blocking run (systemd).
pub const UNIT: &str = "stoke-puppet-delta";
/// In the module's state directory: the non-blocking run's record, written by `stoke exec-record`.
pub use stoke_api::BACKGROUND_FILE;
/// In the module's state directory: the last blocking run's record (same shape).
pub const LAST_RUN_FILE: &str = "last-run.json";
/// Exit codes that mean success with `--detailed-exitcodes`.
pub const SUCCESS_CODES: [i32; 2] = [0, 2];
/// How many output lines a record keeps.
pub const TAIL_LINES: usize = 20;
/// The default command.
pub const DEFAULT_COMMAND: &[&str] = &[
    "puppet",
    "agent",
    "--onetime",
    "--no-daemonize",
    "--detailed-exitcodes",
    "--verbose",
];
/// Where a detached run (no systemd) writes its output.
pub const DELTA_LOG: &str = "/var/log/stoke/puppet-delta.log";
/// A background run past its timeout gets SIGTERM, then SIGKILL this much later.
const KILL_AFTER_SECS: u64 = 60;
const AIO_PUPPET: &str = "/opt/puppetlabs/bin/puppet";

/// What a Puppet exit code means: (success, meaning). With `--detailed-exitcodes`
/// 2 is "changes applied", a success (cloud-init reads it as a failure).
/// Codes above 128 are a shell's "killed by signal N" (exec-record reports signals so).
pub fn meaning(code: i32) -> (bool, &'static str) {
    match code {
        0 => (true, "no changes"),
        2 => (true, "changes applied"),
        4 => (false, "failures"),
        6 => (false, "changes applied, with failures"),
        1 => (
            false,
            "run failed (catalog not compiled or applied, no server, or another run in progress)",
        ),
        124 => (false, "timed out and was killed"),
        126 => (false, "command not executable"),
        127 => (false, "command not found"),
        129..=192 => (false, "killed by a signal"),
        _ => (false, "unexpected exit code"),
    }
}

/// Removes terminal colour sequences (Puppet colours its output even into a pipe).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The last `TAIL_LINES` lines of a finished command (stdout, then stderr).
pub fn tail(stdout: &str, stderr: &str) -> Vec<String> {
    let lines: Vec<String> = stdout
        .lines()
        .chain(stderr.lines())
        .map(strip_ansi)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].to_vec()
}

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(PuppetModule)]
}

pub struct PuppetModule;

#[stoke_api::async_trait]
impl Module for PuppetModule {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: NAME,
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &["hostname"],
            needs_metadata: true,
            before_logins: false,
            // The largest configurable bound; `timeout_for` gives the configured one.
            timeout: Duration::from_secs(MAX_TIMEOUT_SECS + MAX_WAIT_FOR_LOCK_SECS + 300),
            config: config_spec::<PuppetConfig>(),
            order: stoke_api::Order::Normal,
        }
    }

    /// The run's own timeout plus the lock wait, and a minute for the rest:
    /// the module kills the run itself first; this is the runner's backstop.
    fn timeout_for(&self, config: &Value) -> Duration {
        match serde_json::from_value::<PuppetConfig>(config.clone()) {
            Ok(PuppetConfig {
                puppet: Some(p), ..
            }) => Duration::from_secs(
                p.0.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)
                    + p.0.wait_for_lock.unwrap_or(DEFAULT_WAIT_FOR_LOCK_SECS)
                    + 60,
            ),
            _ => self.spec().timeout,
        }
    }

    fn stage_for(&self, config: &Value) -> Stage {
        match serde_json::from_value::<PuppetConfig>(config.clone()) {
            Ok(PuppetConfig {
                puppet: Some(p), ..
            }) if p.mode() == Mode::NonBlocking => Stage::Final,
            // Invalid config: run early so the error shows early.
            _ => Stage::Network,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: PuppetConfig = ctx.config()?;
        let Some(p) = cfg.puppet else {
            return Ok(Report::new("no puppet: section; nothing to do"));
        };
        let mode = p.mode();
        if mode == Mode::Off {
            return Ok(Report::new("mode off; Puppet not run").with_details(json!({"mode": "off"})));
        }
        // Everything checked before anything is written.
        let run = resolve(ctx, &p)?;
        let files = write_files(ctx, &p)?;
        let mut report = match mode {
            Mode::NonBlocking => background(ctx, &run).await?,
            _ => blocking(ctx, &run).await?,
        };
        if let Value::Object(m) = &mut report.details {
            m.insert("files_changed".into(), json!(files));
        }
        report.warnings.extend(run.warnings);
        Ok(report)
    }

    fn nothing_configured(
        &self,
        config: &Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        config
            .get("puppet")
            .is_none_or(Value::is_null)
            .then(|| "no `puppet:` section".to_string())
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: PuppetConfig = ctx.config().ok()?;
        let p = cfg.puppet?;
        if p.mode() == Mode::Off {
            return Some("mode off".into());
        }
        let run = resolve(ctx, &p).ok()?;
        Some(format!(
            "{}: `{}` (timeout {} s)",
            p.mode().as_str(),
            Cmd::new(&run.argv[0], &run.argv[1..]).display(),
            run.timeout.as_secs()
        ))
    }
}

/// The run worked out from configuration and the instance.
struct Run {
    argv: Vec<String>,
    timeout: Duration,
    wait_for_lock: Duration,
    lock_files: Vec<String>,
    warnings: Vec<String>,
}

/// True when the instance has Puppet's all-in-one layout.
fn is_aio(ctx: &Context, p: &Puppet) -> bool {
    match p.0.install_type {
        Some(t) => t == InstallType::Aio,
        None => ctx
            .root
            .fs()
            .is_ok_and(|rd| rd.is_dir(Path::new("/etc/puppetlabs/puppet"))),
    }
}

fn resolve(ctx: &Context, p: &Puppet) -> Result<Run, ModuleError> {
    let k = &p.0;
    let mut argv = match (&k.command, &k.exec_args) {
        (Some(c), _) => c.to_vec(),
        // cloud-init: `puppet agent` plus exec_args.
        (None, Some(a)) => ["puppet".to_string(), "agent".to_string()]
            .into_iter()
            .chain(a.to_vec())
            .collect(),
        (None, None) => DEFAULT_COMMAND.iter().map(|s| s.to_string()).collect(),
    };
    if argv.is_empty() {
        return Err(ModuleError::Invalid("puppet.command is empty".into()));
    }
    if argv[0] == "puppet" {
        // An AIO install is not on systemd's PATH: use its full path unless `tools:` says otherwise.
        argv[0] = if ctx.tools.contains_key(tools::PUPPET) {
            ctx.tool(tools::PUPPET)
        } else if k.install_type == Some(InstallType::Aio)
            || (k.install_type.is_none()
                && ctx
                    .root
                    .fs()
                    .is_ok_and(|rd| rd.exists(Path::new(AIO_PUPPET))))
        {
            AIO_PUPPET.to_string()
        } else {
            ctx.tool(tools::PUPPET)
        };
    }
    if let Some(e) = &k.environment {
        argv.extend(["--environment".to_string(), e.clone()]);
    }
    if let Some(s) = &k.server {
        argv.extend(["--server".to_string(), s.clone()]);
    }
    if let Some(t) = &k.certname {
        argv.extend(["--certname".to_string(), certname(ctx, t)?]);
    }
    argv.extend(k.extra_args.iter().cloned());

    let mut warnings = Vec::new();
    let detailed = argv[1..]
        .iter()
        .any(|a| a == "--detailed-exitcodes" || a == "--test" || a == "-t");
    if !detailed {
        warnings.push(format!(
            "puppet command `{}` has neither --detailed-exitcodes nor --test: a failed \
             resource then exits 0 and reads as success",
            argv.join(" ")
        ));
    }
    let lock_files = match &k.lock_file {
        Some(f) => vec![f.clone()],
        None => DEFAULT_LOCK_FILES.iter().map(|s| s.to_string()).collect(),
    };
    Ok(Run {
        argv,
        timeout: Duration::from_secs(k.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
        wait_for_lock: Duration::from_secs(k.wait_for_lock.unwrap_or(DEFAULT_WAIT_FOR_LOCK_SECS)),
        lock_files,
        warnings,
    })
}

/// A certname: cloud-init's `%i` (instance id) and `%f` (fqdn), stoke templates,
/// lowercased (Puppet refuses uppercase certnames).
fn certname(ctx: &Context, template: &str) -> Result<String, ModuleError> {
    let mut s = template.replace("%i", &ctx.instance.instance_id);
    if s.contains("%f") {
        let fqdn = ctx.vars.get("fqdn").ok_or_else(|| {
            ModuleError::Invalid(format!(
                "certname {template:?} uses %f but no fqdn is known (the hostname module reports it)"
            ))
        })?;
        s = s.replace("%f", fqdn);
    }
    Ok(render(&s, &ctx.vars)?.to_lowercase())
}

/// cloud-init's `conf` (puppet.conf keys) and `csr_attributes`. Returns the files changed.
fn write_files(ctx: &Context, p: &Puppet) -> Result<Vec<String>, ModuleError> {
    let k = &p.0;
    let aio = is_aio(ctx, p);
    let etc = if aio {
        "/etc/puppetlabs/puppet"
    } else {
        "/etc/puppet"
    };
    let mut changed = Vec::new();
    if let Some(conf) = &k.conf {
        let guest = k
            .conf_file
            .clone()
            .unwrap_or_else(|| format!("{etc}/puppet.conf"));
        let old = read_file(ctx, &guest)?.unwrap_or_default();
        let mut new = old.clone();
        for (section, entry) in conf {
            // Checked at load: every entry is a section's settings.
            for (key, value) in entry.settings().into_iter().flatten() {
                let value = match key.as_str() {
                    "certname" => certname(ctx, &value.to_string())?,
                    _ => value.to_string(),
                };
                new = puppet_conf::set(&new, section, key, &value);
            }
        }
        if new != old {
            write_file(ctx, &guest, new.as_bytes(), 0o644)?;
            changed.push(guest);
        }
    }
    if let Some(csr) = &k.csr_attributes {
        let guest = k
            .csr_attributes_path
            .clone()
            .unwrap_or_else(|| format!("{etc}/csr_attributes.yaml"));
        // JSON is YAML: Puppet reads this file with its YAML parser.
        let mut text = serde_json::to_string_pretty(csr)
            .map_err(|e| ModuleError::Other(format!("encoding csr_attributes: {e}")))?;
        text.push('\n');
        let old = read_file(ctx, &guest)?;
        if old.as_deref() != Some(text.as_str()) {
            // May hold a pre-shared key: not world-readable.
            write_file(ctx, &guest, text.as_bytes(), 0o640)?;
            changed.push(guest);
        }
    }
    Ok(changed)
}

/// Puppet's own configuration files are at most this big; a larger one is not theirs.
const MAX_CONF: u64 = 1 << 20;

/// Reads one of Puppet's files, resolved inside the root; `None` if absent.
fn read_file(ctx: &Context, guest: &str) -> Result<Option<String>, ModuleError> {
    ctx.fs()?
        .read_string(Path::new(guest), MAX_CONF)
        .map_err(|e| ModuleError::io("reading", ctx.host_path(guest), e))
}

/// Replaces one of Puppet's files atomically with exactly `mode`, resolved inside the
/// root (missing directories made 0755).
fn write_file(ctx: &Context, guest: &str, data: &[u8], mode: u32) -> Result<(), ModuleError> {
    let rd = ctx.fs()?;
    let guest = Path::new(guest);
    guest
        .parent()
        .map_or(Ok(()), |dir| rd.create_dir_all(dir, 0o755).map(drop))
        .and_then(|()| rd.write_atomic(guest, data, mode, None, ctx.system.as_ref()))
        .map_err(|e| ModuleError::io("writing", ctx.host_path(guest), e))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Writes a run record; a failure to write is a warning, not the run's failure.
fn record(ctx: &Context, file: &str, rec: &RunRecord, warnings: &mut Vec<String>) {
    let written = rec
        .to_json()
        .and_then(|json| ctx.write_state_in(StateScope::Instance, file, &json, 0o644));
    if let Err(e) = written {
        let path = ctx.resolved_state_path(StateScope::Instance, file);
        warnings.push(format!("cannot write {}: {e}", path.display()));
    }
}

async fn blocking(ctx: &Context, run: &Run) -> Result<Report, ModuleError> {
    let waited = lock::wait(ctx, &run.lock_files, run.wait_for_lock).await?;
    let cmd = Cmd::new(&run.argv[0], &run.argv[1..])
        .timeout(run.timeout)
        .stream_output();
    let mut warnings = Vec::new();
    if waited >= Duration::from_secs(1) {
        warnings.push(format!(
            "waited {} for another Puppet run to release its lock",
            secs(waited)
        ));
    }
    let mut rec = RunRecord::running(run.argv.clone(), None, ctx.boot_id.clone());
    let start = Instant::now();
    let result = ctx.system.run(&cmd).await;
    let duration = start.elapsed();
    let duration_ms = duration.as_millis() as u64;
    let out = match result {
        Ok(out) => out,
        Err(SysError::Timeout { after, .. }) => {
            rec.finish(
                false,
                None,
                "timed out and was killed",
                duration_ms,
                Vec::new(),
            );
            record(ctx, LAST_RUN_FILE, &rec, &mut warnings);
            return Err(ModuleError::Command {
                argv: cmd.display(),
                status: format!(
                    "timed out after {} s (puppet.timeout) and was killed",
                    after.as_secs()
                ),
                stderr: "its output is in the journal".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if !ctx.system.executes() {
        return Ok(Report::new(format!(
            "would run `{}` (commands are recorded, not run)",
            cmd.display()
        ))
        .with_details(json!({"mode": "blocking", "argv": run.argv, "executed": false})));
    }
    let (ok, what) = match out.code {
        Some(c) => meaning(c),
        None => (false, "killed by a signal"),
    };
    let lines = tail(&out.stdout, &out.stderr);
    rec.finish(ok, out.code, what, duration_ms, lines.clone());
    record(ctx, LAST_RUN_FILE, &rec, &mut warnings);
    if !ok {
        return Err(ModuleError::Command {
            argv: cmd.display(),
            status: format!("{}: {what}, after {}", out.status_text(), secs(duration)),
            stderr: lines.join("\n"),
        });
    }
    let mut details = serde_json::to_value(&rec).unwrap_or_default();
    details["mode"] = json!("blocking");
    let mut report = Report::new(format!(
        "{what} (exit {}) in {}",
        out.code.unwrap_or_default(),
        secs(duration)
    ))
    .with_details(details);
    report.warnings = warnings;
    Ok(report)
}

/// The previous background run's record, as it stands now (a "running" one of another boot,
/// or whose process is gone, was interrupted).
/// The background run's result file on the host (resolved inside the root).
fn result_host(ctx: &Context) -> PathBuf {
    ctx.resolved_state_path(StateScope::Instance, BACKGROUND_FILE)
}

fn previous_run(ctx: &Context) -> Option<RunRecord> {
    let text = ctx
        .read_state_in(StateScope::Instance, BACKGROUND_FILE)
        .ok()??;
    let rec = RunRecord::parse(&text)?;
    Some(rec.as_of_now(ctx.boot_id.as_deref(), |pid| {
        ctx.root
            .fs()
            .is_ok_and(|rd| rd.is_dir(Path::new(&format!("/proc/{pid}"))))
    }))
}

async fn background(ctx: &Context, run: &Run) -> Result<Report, ModuleError> {
    let systemd = ctx
        .root
        .fs()
        .is_ok_and(|rd| rd.is_dir(Path::new("/run/systemd/system")));
    let previous = previous_run(ctx);
    let unit = format!("{UNIT}.service");

    // Never a second run while one is going.
    let still = if systemd {
        let cmd = Cmd::new(ctx.tool(tools::SYSTEMCTL), ["is-active", unit.as_str()])
            .timeout(Duration::from_secs(10));
        let state = ctx.system.run(&cmd).await?.stdout.trim().to_string();
        matches!(
            state.as_str(),
            "active" | "activating" | "deactivating" | "reloading"
        )
        .then(|| format!("unit {unit} is {state}"))
    } else {
        previous
            .as_ref()
            .filter(|r| r.state == RunState::Running)
            .map(|r| format!("pid {} is still running", r.pid.unwrap_or_default()))
    };
    if let Some(why) = still {
        return Ok(Report::new(format!(
            "a background Puppet run is still going ({why}); not starting another"
        ))
        .with_details(json!({
            "mode": "non-blocking",
            "already_running": true,
            "result_file": result_host(ctx),
        })));
    }
    let mut warnings = Vec::new();
    if let Some(prev) = previous
        .as_ref()
        .filter(|r| r.state == RunState::Interrupted)
    {
        warnings.push(format!(
            "the previous background run (pid {}, started {}) ended without recording a result",
            prev.pid.unwrap_or_default(),
            prev.started_unix
        ));
    }
    // A stale record must not stand for the run about to start.
    ctx.remove_state(StateScope::Instance, BACKGROUND_FILE)
        .map_err(|e| ModuleError::io("removing", result_host(ctx), e))?;
    ctx.create_state_dir(StateScope::Instance, "", 0o755)
        .map_err(|e| ModuleError::io("creating", &ctx.state_dir, e))?;
    // `stoke exec-record` resolves the instance's path inside the root itself (it opens the
    // directory once, so nothing swapped in meanwhile is followed); the host path is shown.
    let result = result_host(ctx);
    let mut inner: Vec<String> = vec![ctx.self_exe.display().to_string()];
    let result_arg = match ctx.state_path_in_root(StateScope::Instance, BACKGROUND_FILE) {
        Some(guest) => {
            if !ctx.root.is_host() {
                inner.extend(["--root".into(), ctx.root.dir().display().to_string()]);
            }
            guest
        }
        None => result.clone(),
    };
    let success: Vec<String> = SUCCESS_CODES.iter().map(|c| c.to_string()).collect();
    inner.extend([
        "exec-record".into(),
        "--result".into(),
        result_arg.display().to_string(),
        "--success-codes".into(),
        success.join(","),
        "--".into(),
        // Bounded like a blocking run: SIGTERM at the timeout, SIGKILL a minute later (exit 124).
        ctx.tool(tools::TIMEOUT),
        "-k".into(),
        KILL_AFTER_SECS.to_string(),
        run.timeout.as_secs().to_string(),
    ]);
    inner.extend(run.argv.iter().cloned());

    let mut details = json!({
        "mode": "non-blocking",
        "argv": run.argv,
        "timeout_secs": run.timeout.as_secs(),
        "result_file": result,
    });
    // The last finished run's record stays visible in this run's details.
    if let Some(prev) = previous.filter(|r| r.state != RunState::Running) {
        details["previous"] = serde_json::to_value(prev).unwrap_or_default();
    }
    let summary = if systemd {
        let mut args = vec![
            format!("--unit={UNIT}"),
            "--description=stoke: background Puppet delta run".to_string(),
            "--collect".to_string(),
            "--service-type=exec".to_string(),
            // exec-record exits with Puppet's code: 2 (changes applied) is not a unit failure.
            "--property=SuccessExitStatus=2".to_string(),
            "--".to_string(),
        ];
        args.extend(inner);
        let cmd = Cmd::new(ctx.tool(tools::SYSTEMD_RUN), args).timeout(Duration::from_secs(30));
        ctx.system.run(&cmd).await?.check(&cmd)?;
        details["unit"] = json!(unit);
        format!("started in background (unit {unit}; journalctl -u {unit})")
    } else {
        let log = ctx.open_log(DELTA_LOG, true)?;
        let cmd = Cmd::new(&inner[0], &inner[1..]);
        let pid = ctx.system.spawn_detached(&cmd, &log)?;
        details["pid"] = json!(pid);
        details["log"] = json!(log.path());
        format!(
            "started in background (pid {pid}, log {})",
            log.path().display()
        )
    };
    let summary = if ctx.system.executes() {
        summary
    } else {
        details["executed"] = json!(false);
        format!("recorded, not run: {summary}")
    };
    let mut report = Report::new(summary).with_details(details);
    report.warnings = warnings;
    Ok(report)
}

#[cfg(test)]
mod tests;
