//! `stoke status [--wait] [--json]`: this boot's outcome, every module's and script's.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{disabled, exit, wait};
use crate::app::App;
use crate::paths::Paths;
use crate::state::status::{Overall, Status};

pub fn status(
    app: &App,
    rt: &tokio::runtime::Runtime,
    wait: bool,
    timeout: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (status, ended) = if wait {
        let systemctl = app
            .image_engine()
            .tools
            .get(stoke_api::tools::SYSTEMCTL)
            .cloned()
            .unwrap_or_else(|| stoke_api::tools::SYSTEMCTL.to_string());
        rt.block_on(wait_for_done(app, &systemctl, Duration::from_secs(timeout)))
    } else {
        (
            Status::read(&app.paths, &app.paths.status_file()),
            Ended::No,
        )
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
        let status = Status::read(&app.paths, &app.paths.status_file());
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
                let status = Status::read(&app.paths, &app.paths.status_file());
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
                paths
                    .root
                    .fs()
                    .is_ok_and(|rd| rd.exists(std::path::Path::new(&format!("/proc/{pid}"))))
            })
        });
    }
}
