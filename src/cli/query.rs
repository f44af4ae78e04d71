//! `stoke query KEY`: one metadata value from the cache, or the image's lineage.

use std::process::ExitCode;

use crate::app::App;

pub fn query(app: &App, key: &str) -> anyhow::Result<ExitCode> {
    if key == "image" {
        // The image's own record: no instance needed (an image being built has none yet).
        let (layers, loaded) = app.image_lineage()?;
        for e in &loaded.errors {
            eprintln!("stoke: {e}");
        }
        println!("{}", serde_json::to_string_pretty(&layers)?);
        return Ok(ExitCode::SUCCESS);
    }
    let found = app.cached_instance()?;
    // Tag keys are the instance's own spelling: not normalised.
    if key == "tags" {
        println!("{}", serde_json::to_string_pretty(&found.instance.tags)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(tag) = key.strip_prefix(stoke_api::TAG_PREFIX) {
        let Some(v) = found.instance.tags.get(tag) else {
            anyhow::bail!(
                "no tag `{tag}` in the cached metadata (stoke reads the tags its configuration \
                 uses; known: {})",
                found
                    .instance
                    .tags
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let norm = key.replace('-', "_");
    match norm.as_str() {
        "user_data" => {
            let ud = found.user_data.unwrap_or_default();
            print!("{}", String::from_utf8_lossy(&ud));
            return Ok(ExitCode::SUCCESS);
        }
        "vendor_data" => {
            print!(
                "{}",
                String::from_utf8_lossy(&found.vendor_data.unwrap_or_default())
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let v = serde_json::to_value(&found.instance)?;
    match v.get(&norm) {
        Some(serde_json::Value::String(s)) => println!("{s}"),
        Some(other) => println!("{}", serde_json::to_string_pretty(other)?),
        None => {
            let keys: Vec<String> = v
                .as_object()
                .map(|o| o.keys().map(|k| k.replace('_', "-")).collect())
                .unwrap_or_default();
            anyhow::bail!(
                "no metadata key `{key}` (known: {}, user-data, vendor-data)",
                keys.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
