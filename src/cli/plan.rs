//! `stoke plan`: what each stage would do, from local knowledge only.

use std::process::ExitCode;

use crate::app::App;

pub fn plan(app: &App, rt: &tokio::runtime::Runtime, json: bool) -> anyhow::Result<ExitCode> {
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
