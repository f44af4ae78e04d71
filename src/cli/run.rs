//! `stoke run --stage S`: the boot's work (the systemd units run it).

use std::process::ExitCode;

use anyhow::Context as _;
use stoke_api::Stage;

use super::{StageArg, disabled, exit};
use crate::app::App;

pub fn run(app: &App, rt: &tokio::runtime::Runtime, stage: StageArg) -> anyhow::Result<ExitCode> {
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

/// At boot the binary is cold: each code page is read from disk when first run, one fault at a
/// time (on a new EC2 volume each first read of a block is fetched from its snapshot). Asking
/// for the whole file at once, from a thread of its own, turns those reads into page-cache hits
/// while the stage starts. Best effort: a failure only leaves the faults as they were.
pub fn prefetch_own_binary() {
    let spawned = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(|| {
            if let Ok(exe) = std::fs::File::open("/proc/self/exe") {
                let _ = nix::fcntl::posix_fadvise(
                    &exe,
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                );
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("prefetch: no thread: {e}");
    }
}
