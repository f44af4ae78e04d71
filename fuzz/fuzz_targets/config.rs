//! Configuration: two YAML layers parsed as the loader parses them (duplicate keys noted),
//! merged (later over earlier), then every module's typed parse of the merged document, and
//! the error-locating pass over each layer's text when a section does not parse.
#![no_main]

use std::sync::OnceLock;

use serde_json::Value;
use stoke_api::{ConfigSpec, Positions};

/// stoke's own list of modules.
#[path = "../../src/app/registry.rs"]
mod registry;

fn specs() -> &'static [ConfigSpec] {
    static SPECS: OnceLock<Vec<ConfigSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        registry::modules()
            .iter()
            .map(|m| m.spec().config)
            .collect()
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two layers, split at a `---\n` line (the first one only).
    let layers: Vec<&str> = match text.split_once("\n---\n") {
        Some((a, b)) => vec![a, b],
        None => vec![text],
    };
    let mut merged = serde_json::Map::new();
    for layer in &layers {
        let Ok((value, _duplicates)) = stoke_api::parse_yaml_with_duplicates(layer) else {
            continue;
        };
        if let Value::Object(doc) = value {
            stoke_api::merge_config(&mut merged, doc);
        }
    }
    let merged = Value::Object(merged);
    for spec in specs() {
        if (spec.check_value)(&merged).is_err() {
            for layer in &layers {
                let _ = (spec.validate)(layer);
                let _ = Positions::of(layer);
            }
        }
    }
});
