//! Runs a list of scripts in order, each bounded, recorded, and started at most once at
//! its frequency: a per-instance or per-once script leaves a start record (written and
//! synced before it starts) and is not started again, even when it failed or the machine
//! stopped under it, unless `scripts.retry_failed` says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use stoke_api::{
    Cmd, Context, FileKind, Frequency, RootDir, ScriptOutcome, ScriptRun, StateScope, SysError,
    tools,
};

/// Output lines kept in status.
const TAIL_LINES: usize = 10;
/// The environment every script gets (plus `INSTANCE_ID`).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One script to run.
pub struct Job {
    /// A file name, unique within its source.
    pub name: String,
    /// Where it came from ("bootcmd", "boothook", "runcmd", "user-data", "image", "cloud-image").
    pub source: &'static str,
    pub frequency: Frequency,
    pub body: Body,
    pub timeout: Duration,
}

pub enum Body {
    /// Written (0700) under the module's state directory, then run.
    Content(Vec<u8>),
    /// A file baked into the image (host path), run where it is.
    File(PathBuf),
}

/// The start record of a per-instance or per-once script.
#[derive(Debug, Serialize, Deserialize)]
struct StartRecord {
    started_unix: f64,
    #[serde(default)]
    finished_unix: Option<f64>,
    #[serde(default)]
    outcome: Option<ScriptOutcome>,
    #[serde(default)]
    exit: Option<i32>,
}

pub struct Scripts<'a> {
    pub ctx: &'a Context,
    pub retry_failed: bool,
}

/// Whether a job runs now, and if not, why.
pub enum Due {
    Yes,
    No(String),
}

impl Scripts<'_> {
    /// Runs the jobs one after another; a failure does not stop the next ones.
    pub async fn run_all(&self, jobs: &[Job]) -> Vec<ScriptRun> {
        let mut runs = Vec::with_capacity(jobs.len());
        for job in jobs {
            runs.push(self.run_one(job).await);
        }
        runs
    }

    /// Where a job's start record is kept: which state directory, and the name in it.
    fn record_path(&self, job: &Job) -> Option<(StateScope, String)> {
        let scope = match job.frequency {
            Frequency::PerBoot => return None,
            Frequency::PerInstance => StateScope::Instance,
            Frequency::Once => StateScope::Shared,
        };
        Some((scope, format!("started/{}-{}.json", job.source, job.name)))
    }

    /// Due unless a start record says it was started before at its frequency.
    pub fn due(&self, job: &Job) -> Due {
        let Some((scope, name)) = self.record_path(job) else {
            return Due::Yes;
        };
        let text = match self.ctx.read_state_in(scope, &name) {
            Ok(Some(t)) => t,
            Ok(None) => return Due::Yes,
            // Cannot tell whether it ran: not running a script twice is the safe side.
            Err(e) => return Due::No(format!("start record unreadable ({e}); not run again")),
        };
        let Ok(rec) = serde_json::from_slice::<StartRecord>(&text) else {
            return Due::No("start record unreadable; not run again".into());
        };
        let failed = matches!(
            rec.outcome,
            Some(ScriptOutcome::Failed | ScriptOutcome::TimedOut)
        );
        if failed && self.retry_failed {
            return Due::Yes;
        }
        let when = format!("started at {:.0} (unix)", rec.started_unix);
        let scope = if job.frequency == Frequency::Once {
            "once"
        } else {
            "per instance"
        };
        Due::No(match rec.outcome {
            None => format!(
                "{when} and never finished (the machine stopped under it?); at most once {scope}"
            ),
            Some(o) => format!("{when}, {}; at most once {scope}", o.as_str()),
        })
    }

    async fn run_one(&self, job: &Job) -> ScriptRun {
        let mut run = ScriptRun {
            name: job.name.clone(),
            source: job.source.to_string(),
            frequency: Some(job.frequency),
            ..ScriptRun::default()
        };
        if let Due::No(why) = self.due(job) {
            tracing::info!("{}/{}: not run: {why}", job.source, job.name);
            run.outcome = ScriptOutcome::Skipped;
            run.note = why;
            return run;
        }
        let cmd = match self.prepare(job) {
            Ok(cmd) => cmd,
            Err(note) => {
                tracing::warn!("{}/{}: {note}", job.source, job.name);
                run.outcome = ScriptOutcome::Failed;
                run.note = note;
                return run;
            }
        };
        // Opened before the start is recorded: a script that cannot log is not started.
        let log_guest = format!("/var/log/stoke/scripts/{}-{}.log", job.source, job.name);
        let cmd = match self.ctx.open_log(&log_guest, false) {
            Ok(log) => cmd.output_log(log),
            Err(e) => {
                tracing::warn!("{}/{}: not started: {e}", job.source, job.name);
                run.outcome = ScriptOutcome::Failed;
                run.note = format!("not started: cannot open its log: {e}");
                return run;
            }
        };
        let record = self.record_path(job);
        let started_unix = now_unix();
        if let Some(path) = &record {
            let rec = StartRecord {
                started_unix,
                finished_unix: None,
                outcome: None,
                exit: None,
            };
            // Durable before the script starts: a crash from here on means "started".
            if let Err(e) = self.write_record(path, &rec) {
                run.outcome = ScriptOutcome::Failed;
                run.note = format!("not started: cannot record its start: {e}");
                return run;
            }
        }
        tracing::info!("{}/{}: starting", job.source, job.name);
        let started = Instant::now();
        let result = self.ctx.system.run(&cmd).await;
        run.started_unix = Some(started_unix);
        run.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        match result {
            Ok(_) if !self.ctx.system.executes() => {
                run.outcome = ScriptOutcome::Recorded;
                run.note = "not run (sandbox)".into();
            }
            Ok(out) => {
                run.exit = out.code;
                run.output_tail = out.tail(TAIL_LINES);
                run.log = Some(log_guest);
                if out.success() {
                    run.outcome = ScriptOutcome::Ok;
                } else {
                    run.outcome = ScriptOutcome::Failed;
                    run.note = out.status_text();
                }
            }
            Err(SysError::Timeout { after, .. }) => {
                run.outcome = ScriptOutcome::TimedOut;
                run.note = format!(
                    "killed, with everything it started, after {} s",
                    after.as_secs()
                );
                run.log = Some(log_guest);
            }
            Err(e) => {
                run.outcome = ScriptOutcome::Failed;
                run.note = e.to_string();
            }
        }
        tracing::info!(
            "{}/{}: {} {}",
            job.source,
            job.name,
            run.outcome.as_str(),
            run.note
        );
        if let Some(path) = &record {
            let rec = StartRecord {
                started_unix,
                finished_unix: Some(now_unix()),
                outcome: Some(run.outcome),
                exit: run.exit,
            };
            if let Err(e) = self.write_record(path, &rec) {
                tracing::warn!("{}/{}: recording its end: {e}", job.source, job.name);
            }
        }
        run
    }

    /// The command for a job: its file written first when it comes from user-data.
    fn prepare(&self, job: &Job) -> Result<Cmd, String> {
        let (file, shebang) = match &job.body {
            Body::Content(content) => {
                let name = format!("scripts/{}-{}", job.source, job.name);
                // Resolved inside the root: the kernel runs it by this host path.
                let shown = || self.ctx.resolved_state_path(StateScope::Instance, &name);
                self.ctx
                    .create_state_dir(StateScope::Instance, "scripts", 0o700)
                    .map_err(|e| format!("creating {}: {e}", shown().display()))?;
                self.ctx
                    .write_state_in(StateScope::Instance, &name, content, 0o700)
                    .map_err(|e| format!("writing {}: {e}", shown().display()))?;
                (shown(), content.starts_with(b"#!"))
            }
            Body::File(guest) => (check_image_script(self.ctx, guest)?, true),
        };
        let cmd = if shebang {
            Cmd::new(file.display().to_string(), Vec::<String>::new())
        } else {
            Cmd::new(self.ctx.tool(tools::SH), [file.display().to_string()])
        };
        Ok(cmd
            .timeout(job.timeout)
            .clean_env()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("INSTANCE_ID", self.ctx.instance.instance_id.as_str())
            .stream_output())
    }
}

/// A baked script runs only from a place nobody but root can change; its links are
/// followed inside the root only. The host path to run is returned.
fn check_image_script(ctx: &Context, guest: &Path) -> Result<PathBuf, String> {
    let shown = guest.display();
    let dir = RootDir::open(&ctx.root).map_err(|e| format!("{shown}: {e}"))?;
    let (host, st) = dir
        .real_path(guest)
        .map_err(|e| format!("{shown}: {e}"))?
        .ok_or_else(|| format!("{shown}: gone"))?;
    if st.kind != FileKind::File {
        return Err(format!("{shown} is not a regular file: not run"));
    }
    if st.mode & 0o002 != 0 {
        return Err(format!("{shown} is world-writable: not run"));
    }
    if let Some(parent) = guest.parent()
        && let Ok(Some((_, d))) = dir.real_path(parent)
        && d.mode & 0o002 != 0
    {
        return Err(format!("{shown} is in a world-writable directory: not run"));
    }
    Ok(host)
}

impl Scripts<'_> {
    fn write_record(
        &self,
        (scope, name): &(StateScope, String),
        rec: &StartRecord,
    ) -> std::io::Result<()> {
        let json = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        self.ctx.write_state_in(*scope, name, &json, 0o600)
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The executable files of an image script directory (`guest`, inside the root), as the
/// instance names them, in lexical order; a missing directory is an empty one. As run-parts:
/// regular executable files, a symlink counted by what it leads to inside the root.
pub fn dir_scripts(ctx: &Context, guest: &Path) -> Vec<(String, PathBuf)> {
    let Ok(dir) = RootDir::open(&ctx.root) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = dir
        .list_dir(guest)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, _)| {
            let path = guest.join(&name);
            let (_, st) = dir.real_path(&path).ok()??;
            (st.kind == FileKind::File && st.mode & 0o111 != 0).then_some((name, path))
        })
        .collect();
    out.sort();
    out
}
