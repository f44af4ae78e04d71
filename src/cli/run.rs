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
