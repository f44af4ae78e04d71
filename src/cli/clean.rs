//! `stoke clean`: the end of a bake — instance state removed, the build recorded in the
//! image's lineage.

use std::process::ExitCode;

use crate::app::App;

pub fn clean(
    app: &App,
    rt: &tokio::runtime::Runtime,
    logs: bool,
    seed: bool,
) -> anyhow::Result<ExitCode> {
    let removed = app.clean(logs, seed)?;
    for p in &removed {
        println!("removed {}", p.display());
    }
    if removed.is_empty() {
        println!("nothing to clean");
    }
    // The end of a bake: the new layers get the build facts (docs/ready.md).
    let (facts, recorded) = rt.block_on(app.record_build());
    match recorded {
        Ok(layers) => {
            for l in layers {
                println!(
                    "lineage: {l} built {} by stoke {}{}",
                    facts.cleaned_at,
                    facts.stoke_version,
                    facts
                        .source_ami
                        .as_deref()
                        .map(|a| format!(" from {a}"))
                        .unwrap_or_default()
                );
            }
        }
        Err(e) => eprintln!(
            "stoke: lineage: cannot record the build in {}: {e}",
            app.paths.config_dir.join("lineage.json").display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
