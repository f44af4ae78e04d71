//! `stoke analyze [--svg F] [--html F] [--from STATUS]`: where the boot's time went.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use stoke_api::System;

use super::svg;
use crate::app::App;
use crate::state::status::Status;

pub fn analyze(
    app: &App,
    rt: &tokio::runtime::Runtime,
    svg: Option<PathBuf>,
    html: Option<PathBuf>,
    from: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let file = from.clone().unwrap_or_else(|| app.paths.status_file());
    let Some(status) = Status::read(&app.paths, &file) else {
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
