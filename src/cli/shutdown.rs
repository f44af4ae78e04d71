//! `stoke shutdown`: the modules' work at shutdown (e.g. DNS deregistration).

use std::process::ExitCode;

use crate::app::App;

pub fn shutdown(app: &App, rt: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let ok = rt.block_on(app.shutdown())?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
