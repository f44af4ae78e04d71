//! `lifecycle`: tells the Auto Scaling group that this instance's launch is
//! done. On the first boot of a new instance, when every other module of the
//! boot has ended (acceptance checks included), `CompleteLifecycleAction`
//! with `CONTINUE` if none failed, else the configured `on_failure`; while the
//! network stage runs (a blocking Puppet), `RecordLifecycleActionHeartbeat`
//! every `heartbeat_seconds` so the hook does not time out.
//!
//! Requests go through the shared AWS client (`stoke-aws`): SigV4, the same
//! credentials chain as route53, throttling retried inside one budget.
//!
//! Files: `config` the section; `api` the two requests.

#![forbid(unsafe_code)]

mod api;
mod config;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage, config_spec,
};
use stoke_aws::{GaveUp, Retrier};

pub use config::{GROUP_TAG, HookResult, LifecycleConfig, Section, Target};

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(Lifecycle), Box::new(Heartbeat)]
}

/// The record of the instance's launch boot, in lifecycle's per-instance state:
/// written before the first request, so no later boot of the instance acts again.
const LAUNCH_FILE: &str = "launch.json";
/// A heartbeat request gives up after this, or the interval if shorter: the next
/// one comes anyway.
const HEARTBEAT_BUDGET: Duration = Duration::from_secs(30);
/// Auto Scaling keeps an instance in Pending:Wait at most 100 heartbeat timeouts
/// (and 48 hours): more heartbeats than that cannot help.
const MAX_HEARTBEATS: u32 = 100;

#[derive(Serialize, Deserialize, Debug, Default)]
struct Launch {
    instance_id: String,
    /// The result sent, once it was accepted.
    #[serde(default)]
    completed: Option<HookResult>,
}

fn nothing(config: &serde_json::Value) -> Option<String> {
    config
        .get("lifecycle")
        .is_none_or(serde_json::Value::is_null)
        .then(|| "no `lifecycle:` section".to_string())
}

/// lifecycle's state directory, from either module's context (they are siblings:
/// the engine gives each module `<instance>/data/<name>`).
fn launch_path(ctx: &Context, own_name: &str) -> PathBuf {
    let dir = if own_name == "lifecycle" {
        ctx.state_dir.clone()
    } else {
        ctx.state_dir
            .parent()
            .map_or_else(|| ctx.state_dir.clone(), |p| p.join("lifecycle"))
    };
    dir.join(LAUNCH_FILE)
}

/// The launch file (a host path, from [`launch_path`]) as the instance sees it: read and
/// written through the root, so a link in a `--root` tree's state cannot lead out.
fn launch_guest(ctx: &Context, path: &Path) -> Result<PathBuf, ModuleError> {
    let rel = path.strip_prefix(ctx.root.dir()).map_err(|_| {
        ModuleError::Other(format!(
            "lifecycle: state {} is not under the root",
            path.display()
        ))
    })?;
    Ok(Path::new("/").join(rel))
}

/// Far more than a launch record holds.
const MAX_LAUNCH: u64 = 1 << 20;

fn read_launch(ctx: &Context, path: &Path) -> Result<Option<Launch>, ModuleError> {
    read_launch_at(&*ctx.fs()?, &launch_guest(ctx, path)?, path)
}

/// [`read_launch`] with the root and the guest path at hand (from a detached task).
fn read_launch_at(rd: &RootDir, guest: &Path, path: &Path) -> Result<Option<Launch>, ModuleError> {
    let Some(raw) = rd
        .read_regular(guest, MAX_LAUNCH)
        .map_err(|e| ModuleError::io("reading launch state", path, e))?
    else {
        return Ok(None);
    };
    // Unreadable state still means a launch boot was seen: never act twice.
    Ok(Some(serde_json::from_slice(&raw).unwrap_or_default()))
}

fn write_launch(ctx: &Context, path: &Path, l: &Launch) -> Result<(), ModuleError> {
    let guest = launch_guest(ctx, path)?;
    let rd = ctx.fs()?;
    if let Some(dir) = guest.parent() {
        rd.create_dir_all(dir, 0o755)
            .map_err(|e| ModuleError::io("creating the state directory", path, e))?;
    }
    let body = serde_json::to_vec_pretty(l)
        .map_err(|e| ModuleError::Other(format!("lifecycle: encoding state: {e}")))?;
    rd.write_atomic(&guest, &body, 0o600, None, ctx.system.as_ref())
        .map_err(|e| ModuleError::io("writing launch state", path, e))
}

fn tally(r: &Retrier) -> String {
    let retried: u32 = r.retried.values().sum();
    let mut s = format!(
        "{} request{} in {:.1} s",
        r.attempts,
        if r.attempts == 1 { "" } else { "s" },
        r.elapsed().as_secs_f64()
    );
    if retried > 0 {
        let why: Vec<_> = r.retried.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        s.push_str(&format!(", retried: {}", why.join(", ")));
    }
    s
}

fn failed(what: &str, e: GaveUp, r: &Retrier) -> ModuleError {
    match e {
        GaveUp::Rejected(f) => ModuleError::Other(format!(
            "lifecycle: {what}: {}{}: {} — {} [{}]",
            f.code,
            f.status.map_or(String::new(), |s| format!(" (HTTP {s})")),
            f.message,
            api::hint(&f),
            tally(r)
        )),
        GaveUp::Budget(f) => ModuleError::Other(format!(
            "lifecycle: {what}: gave up when the time budget ran out [{}]; last error {}: {} — \
             the hook's own timeout will apply its default result (raise `budget_seconds`)",
            tally(r),
            f.code,
            f.message
        )),
    }
}

/// Completes the launch hook at the very end of the boot.
pub struct Lifecycle;

#[stoke_api::async_trait]
impl Module for Lifecycle {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "lifecycle",
            stage: Stage::Final,
            // Per boot, acting only on the launch boot (the state file): a per-instance module
            // that failed would be due again at the next boot, long after the hook timed out.
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            // The default budget plus the client set-up and slack.
            timeout: Duration::from_secs(120),
            config: config_spec::<LifecycleConfig>(),
            // Last: after the user's scripts and the acceptance checks (rank Checks), whose
            // outcome decides the result; alongside the final message and power state, which
            // do not judge the boot (power state acts after stoke.target).
            order: Order::Last,
        }
    }

    fn timeout_for(&self, config: &serde_json::Value) -> Duration {
        serde_json::from_value::<LifecycleConfig>(config.clone())
            .ok()
            .and_then(|c| c.lifecycle)
            .map(|s| Duration::from_secs(s.budget_seconds.saturating_add(60)))
            .unwrap_or_else(|| self.spec().timeout)
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        nothing(config)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let sec = ctx.config::<LifecycleConfig>().ok()?.lifecycle?;
        Some(format!(
            "CompleteLifecycleAction {} of group {} on the launch boot: CONTINUE, or {} if a module failed",
            sec.hook_name,
            sec.group_name.as_deref().unwrap_or("(group_name missing)"),
            sec.on_failure.as_str()
        ))
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let Some(sec) = ctx.config::<LifecycleConfig>()?.lifecycle else {
            return Ok(Report::new("not configured (no `lifecycle:` section)"));
        };
        let target = sec.target(&ctx.instance)?;
        let path = launch_path(ctx, "lifecycle");
        if let Some(prev) = read_launch(ctx, &path)? {
            return Ok(Report::new(format!(
                "not the launch boot of {}: the hook was {} then; nothing sent",
                target.instance_id,
                prev.completed.map_or("not completed".into(), |r| format!(
                    "completed with {}",
                    r.as_str()
                ))
            ))
            .with_details(json!({"launch_boot": false})));
        }
        let mut launch = Launch {
            instance_id: target.instance_id.clone(),
            completed: None,
        };
        write_launch(ctx, &path, &launch)?;

        let (result, why) = if ctx.boot.ok() {
            (HookResult::CONTINUE, "every module succeeded".to_string())
        } else {
            let names: Vec<&str> = ctx.boot.failed.keys().map(String::as_str).collect();
            (
                sec.on_failure,
                format!("failed this boot: {}", names.join(", ")),
            )
        };
        let client = api::client(&sec, &target, ctx)
            .map_err(|e| ModuleError::Invalid(format!("lifecycle: {e}")))?;
        let mut retrier = sec
            .access()
            .retrier(Duration::from_secs(sec.budget_seconds));
        let what = format!(
            "CompleteLifecycleAction {} for hook {} of group {} ({})",
            result.as_str(),
            target.hook_name,
            target.group_name,
            target.instance_id
        );
        api::complete(&client, &mut retrier, &target, result)
            .await
            .map_err(|e| failed(&what, e, &retrier))?;
        launch.completed = Some(result);
        write_launch(ctx, &path, &launch)?;
        tracing::info!(attempts = retrier.attempts, "lifecycle: {what}");
        let mut report =
            Report::new(format!("{what}: {why} ({})", tally(&retrier))).with_details(json!({
                "launch_boot": true,
                "result": result.as_str(),
                "hook_name": target.hook_name,
                "group_name": target.group_name,
                "failed_modules": ctx.boot.failed,
                "attempts": retrier.attempts,
                "retried": retrier.retried,
            }));
        if result == HookResult::ABANDON {
            report.warn(format!(
                "the launch was abandoned ({why}): Auto Scaling terminates this instance"
            ));
        }
        Ok(report)
    }
}

/// Keeps the launch hook alive while the network stage's work (a blocking
/// Puppet run) goes on: a task of the stage's process, so it ends with the
/// stage at the latest, and sooner when the hook is completed.
pub struct Heartbeat;

#[stoke_api::async_trait]
impl Module for Heartbeat {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "lifecycle-heartbeat",
            stage: Stage::Network,
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(30),
            config: config_spec::<LifecycleConfig>(),
            // Before the stage's other work, which is what it keeps the hook alive through.
            order: Order::First,
        }
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        nothing(config).or_else(|| {
            let beats = config
                .get("lifecycle")
                .and_then(|l| l.get("heartbeat_seconds"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            (beats == 0).then(|| "no `lifecycle.heartbeat_seconds`".to_string())
        })
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let Some(sec) = ctx.config::<LifecycleConfig>()?.lifecycle else {
            return Ok(Report::new("not configured (no `lifecycle:` section)"));
        };
        if sec.heartbeat_seconds == 0 {
            return Ok(Report::new("no heartbeats (`heartbeat_seconds` is 0)"));
        }
        let target = sec.target(&ctx.instance)?;
        let path = launch_path(ctx, "lifecycle-heartbeat");
        if read_launch(ctx, &path)?.is_some() {
            return Ok(Report::new(format!(
                "not the launch boot of {}: no heartbeats",
                target.instance_id
            )));
        }
        let client = api::client(&sec, &target, ctx)
            .map_err(|e| ModuleError::Invalid(format!("lifecycle: {e}")))?;
        let every = Duration::from_secs(sec.heartbeat_seconds);
        let max_backoff = Duration::from_secs_f64(sec.max_backoff_seconds);
        let what = format!(
            "RecordLifecycleActionHeartbeat every {} s for hook {} of group {}",
            sec.heartbeat_seconds, target.hook_name, target.group_name
        );
        // Detached: the stage's other modules run meanwhile. Bounded by MAX_HEARTBEATS, by the
        // completion (the launch state records it), by a permanent refusal, and by the
        // stage's process, which ends the task with it.
        let (rd, guest) = (ctx.fs()?, launch_guest(ctx, &path)?);
        tokio::spawn(async move {
            for n in 1..=MAX_HEARTBEATS {
                if read_launch_at(&rd, &guest, &path)
                    .ok()
                    .flatten()
                    .is_some_and(|l| l.completed.is_some())
                {
                    break;
                }
                let mut retrier = Retrier::new(every.min(HEARTBEAT_BUDGET), max_backoff);
                match api::heartbeat(&client, &mut retrier, &target).await {
                    Ok(()) => tracing::debug!(n, "lifecycle: heartbeat sent"),
                    Err(GaveUp::Rejected(f)) => {
                        tracing::warn!(
                            "lifecycle: heartbeat refused, no more sent: {}: {} — {}",
                            f.code,
                            f.message,
                            api::hint(&f)
                        );
                        break;
                    }
                    Err(GaveUp::Budget(f)) => tracing::warn!(
                        "lifecycle: heartbeat {n} not sent: {}: {}",
                        f.code,
                        f.message
                    ),
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(Report::new(format!("{what} while this stage runs"))
            .with_details(json!({"heartbeat_seconds": sec.heartbeat_seconds})))
    }
}
