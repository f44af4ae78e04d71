//! cloud-init's `power_state`: reboot, power off or halt once the boot work is done.
//!
//! cloud-init forks a process that waits for cloud-init itself to end (at most
//! `timeout` seconds), checks `condition`, then runs `shutdown`. stoke must never
//! change the power state before `stoke.target` is reached and the status written, so
//! the work is handed to systemd: a short script (`/run/stoke/<unit>.sh`, readable, in
//! status) is started as the transient unit `stoke-power-state`, ordered
//! `After=stoke.target`. It waits for `stoke status --wait` (at most `timeout`
//! seconds: the unit may also be started by a manual `stoke run`), runs the
//! condition, then `shutdown <-r|-P|-H> <now|+N> [message]`. Without systemd the
//! script is started detached.
//!
//! `packages`' `package_reboot_if_required` schedules its reboot the same way.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage, config_spec,
    tools,
};

use crate::{exists, open_root, write_file};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PowerStateConfig {
    /// Reboot, power off or halt after the boot work is done (once per instance).
    pub power_state: Option<PowerStateSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerStateSection {
    /// `reboot`, `poweroff` or `halt`.
    pub mode: PowerMode,
    /// `now` (default), `+N` or `N`: minutes, as `shutdown` takes them.
    #[serde(default)]
    pub delay: Option<Delay>,
    /// Shown to logged-in users by `shutdown`.
    #[serde(default)]
    pub message: Option<String>,
    /// Seconds to wait for the boot work to be done before going on anyway (default 30).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// `true` (default), `false`, or a command (a string for the shell, or an argv
    /// list): the change happens only if it exits 0.
    #[serde(default)]
    pub condition: Option<Condition>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum PowerMode {
    Reboot,
    Poweroff,
    Halt,
}

impl PowerMode {
    fn flag(self) -> &'static str {
        match self {
            PowerMode::Reboot => "-r",
            PowerMode::Poweroff => "-P",
            PowerMode::Halt => "-H",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PowerMode::Reboot => "reboot",
            PowerMode::Poweroff => "poweroff",
            PowerMode::Halt => "halt",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Delay {
    Minutes(u64),
    Text(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Condition {
    Bool(bool),
    Shell(String),
    Argv(Vec<String>),
}

/// What to schedule.
pub(crate) struct Plan {
    pub unit: &'static str,
    pub what: &'static str,
    pub mode: PowerMode,
    /// `now` or `+N`.
    pub delay: String,
    pub message: Option<String>,
    pub wait_secs: u64,
    /// The condition command as a shell line (already quoted), if any.
    pub condition: Option<String>,
}

pub struct PowerState;

#[stoke_api::async_trait]
impl Module for PowerState {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "power-state",
            stage: Stage::Final,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(60),
            config: config_spec::<PowerStateConfig>(),
            // Last, with the user's scripts; the change itself waits for stoke.target.
            order: Order::Last,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: PowerStateConfig = ctx.config()?;
        let Some(ps) = cfg.power_state else {
            return Ok(Report::new("no power_state configured"));
        };
        let plan = plan_of(&ps).map_err(ModuleError::Invalid)?;
        let Some(plan) = plan else {
            return Ok(
                Report::new("power_state condition is false: nothing scheduled")
                    .with_details(json!({"scheduled": false})),
            );
        };
        schedule(ctx, &plan).await
    }
}

/// The plan for a `power_state` section; `None` when its condition is `false`.
pub(crate) fn plan_of(ps: &PowerStateSection) -> Result<Option<Plan>, String> {
    let delay = match &ps.delay {
        None => "now".to_string(),
        Some(Delay::Minutes(n)) => format!("+{n}"),
        Some(Delay::Text(t)) => {
            let t = t.trim();
            let digits = t.strip_prefix('+').unwrap_or(t);
            if t == "now" {
                "now".to_string()
            } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                format!("+{digits}")
            } else {
                return Err(format!(
                    "power_state.delay `{t}`: use `now`, `+N` or `N` (minutes)"
                ));
            }
        }
    };
    let condition = match &ps.condition {
        None | Some(Condition::Bool(true)) => None,
        Some(Condition::Bool(false)) => return Ok(None),
        Some(Condition::Shell(line)) => Some(format!("/bin/sh -c {}", quote(line))),
        Some(Condition::Argv(argv)) if argv.is_empty() => {
            return Err("power_state.condition: an empty command".into());
        }
        Some(Condition::Argv(argv)) => {
            Some(argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "))
        }
    };
    if let Some(m) = &ps.message
        && m.contains(['\n', '\0'])
    {
        return Err("power_state.message: one line, please".into());
    }
    Ok(Some(Plan {
        unit: "stoke-power-state",
        what: "power_state",
        mode: ps.mode,
        delay,
        message: ps.message.clone(),
        wait_secs: ps.timeout.unwrap_or(30),
        condition,
    }))
}

/// Writes the plan's script and hands it to systemd (or starts it detached).
pub(crate) async fn schedule(ctx: &Context, plan: &Plan) -> Result<Report, ModuleError> {
    let script_guest = format!("/run/stoke/{}.sh", plan.unit);
    let script = script_text(ctx, plan);
    let dir = open_root(ctx)?;
    write_file(ctx, &dir, &script_guest, script.as_bytes(), 0o700).map_err(ModuleError::Other)?;
    // Resolved inside the root: sh opens it on the host, where a link would lead out.
    let script_host = dir
        .resolved_host_path(std::path::Path::new(&script_guest))
        .display()
        .to_string();
    let sh = ctx.tool(tools::SH);
    let mut details = json!({
        "scheduled": true,
        "mode": plan.mode.as_str(),
        "delay": plan.delay,
        "message": plan.message,
        "wait_seconds": plan.wait_secs,
        "condition": plan.condition,
        "script": script_guest,
    });
    let how = if exists(ctx, "/run/systemd/system") {
        let args = vec![
            format!("--unit={}", plan.unit),
            format!(
                "--description=stoke: {} ({})",
                plan.what,
                plan.mode.as_str()
            ),
            "--collect".to_string(),
            // Never wait for the unit to start: it waits for stoke.target, which waits
            // for this very stage to end.
            "--no-block".to_string(),
            "--property=After=stoke.target".to_string(),
            "--service-type=oneshot".to_string(),
            // The wait and the condition are bounded; shutdown itself returns at once.
            format!("--property=TimeoutStartSec={}", plan.wait_secs + 600),
            "--".to_string(),
            sh,
            script_host,
        ];
        let cmd = Cmd::new(ctx.tool(tools::SYSTEMD_RUN), args).timeout(Duration::from_secs(30));
        ctx.system.run(&cmd).await?.check(&cmd)?;
        details["unit"] = json!(plan.unit);
        format!("unit {} after stoke.target", plan.unit)
    } else {
        let log = ctx.open_log(format!("/var/log/stoke/{}.log", plan.unit), true)?;
        let cmd = Cmd::new(sh, [script_host]);
        let pid = ctx.system.spawn_detached(&cmd, &log)?;
        details["pid"] = json!(pid);
        format!("detached pid {pid} (no systemd)")
    };
    let recorded = if ctx.system.executes() {
        ""
    } else {
        "recorded, not run: "
    };
    Ok(Report::new(format!(
        "{recorded}{} {} once the boot work is done ({how})",
        plan.mode.as_str(),
        if plan.delay == "now" {
            "now".to_string()
        } else {
            format!("in {} min", plan.delay.trim_start_matches('+'))
        },
    ))
    .with_details(details))
}

/// The script the unit runs: every word quoted, nothing read from outside at run time.
fn script_text(ctx: &Context, plan: &Plan) -> String {
    let stoke = quote(&ctx.self_exe.display().to_string());
    let mut s = format!(
        "#!/bin/sh\n\
         # Written by stoke ({what}); run once by the unit {unit}, after stoke.target.\n\
         # As cloud-init: wait for the boot work to be done (at most {wait} s), then the\n\
         # condition, then shutdown.\n\
         {stoke} status --wait --timeout {wait} >/dev/null 2>&1\n",
        what = plan.what,
        unit = plan.unit,
        wait = plan.wait_secs,
    );
    if let Some(cond) = &plan.condition {
        s.push_str(&format!(
            "{cond}\n\
             rc=$?\n\
             if [ \"$rc\" -eq 1 ]; then echo 'stoke {what}: condition not met (exit 1): nothing done'; exit 0; fi\n\
             if [ \"$rc\" -ne 0 ]; then echo \"stoke {what}: condition failed (exit $rc): nothing done\" >&2; exit 0; fi\n",
            what = plan.what
        ));
    }
    let mut words = vec![
        quote(&ctx.tool(tools::SHUTDOWN)),
        plan.mode.flag().to_string(),
        quote(&plan.delay),
    ];
    if let Some(m) = &plan.message {
        words.push(quote(m));
    }
    s.push_str(&format!("exec {}\n", words.join(" ")));
    s
}

/// One word for `sh`: single-quoted unless plainly safe.
pub(crate) fn quote(word: &str) -> String {
    stoke_api::shell_quote(word)
}
