//! `stoke schema [FILE] [--user-data] [--json-schema] [--cloud-init]`: checks a configuration
//! layer or a user-data as `run` would read it; prints the JSON Schema or the cloud-init table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::app::App;
use crate::config;

pub fn schema(
    app: &App,
    file: Option<PathBuf>,
    user_data: bool,
    json_schema: bool,
    cloud_init: bool,
) -> anyhow::Result<ExitCode> {
    if json_schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_schema_of(&app.modules))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if cloud_init {
        print!("{}", config::cloud_init_table(&app.modules));
        return Ok(ExitCode::SUCCESS);
    }
    let file = file.context("give a FILE to validate, or --json-schema")?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let mut loaded = config::Loaded::default();
    if user_data || looks_like_user_data(&bytes) {
        let (checked, scripts) = app.check_user_data(&name, &bytes);
        loaded = checked;
        for s in &scripts {
            let when = match s.kind {
                stoke_api::ScriptKind::Boothook => "boothook, every boot".to_string(),
                stoke_api::ScriptKind::Script(f) => format!("script, {f}"),
            };
            println!("script: {} ({when})", s.name);
        }
    } else {
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", file.display()))?;
        config::load_into(
            &mut loaded,
            &[vec![config::Source { name, text }]],
            &app.modules,
        );
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    if loaded.errors.is_empty() {
        println!("{}: valid", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &loaded.errors {
            println!("{e}");
        }
        Ok(ExitCode::from(1))
    }
}

/// A user-data's first bytes: gzip, MIME, or a cloud-init type line (`#cloud-config`,
/// `#!`, `## template: jinja`, ...). An image config file is plain YAML.
fn looks_like_user_data(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return true;
    }
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first).to_ascii_lowercase();
    [
        "#cloud-",
        "#!",
        "## template:",
        "#include",
        "#part-handler",
        "content-type:",
        "mime-version:",
    ]
    .iter()
    .any(|p| first.starts_with(p))
}

/// One JSON Schema for the whole document: the engine's keys and every module's.
fn json_schema_of(modules: &[Arc<dyn stoke_api::Module>]) -> serde_json::Value {
    let mut generator = schemars::SchemaGenerator::default();
    let mut properties = serde_json::Map::new();
    let mut specs = vec![config::engine_spec()];
    specs.extend(modules.iter().map(|m| m.spec().config));
    for spec in specs {
        let schema = (spec.schema)(&mut generator);
        let v = schema.to_value();
        let resolved = resolve_ref(&v, &generator);
        if let Some(props) = resolved.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                properties.entry(k.clone()).or_insert_with(|| p.clone());
            }
        }
    }
    let defs = generator.definitions().clone();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "stoke configuration",
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "$defs": defs,
    })
}

fn resolve_ref(v: &serde_json::Value, g: &schemars::SchemaGenerator) -> serde_json::Value {
    if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
        let name = r.rsplit('/').next().unwrap_or("");
        if let Some(def) = g.definitions().get(name) {
            return def.clone();
        }
    }
    v.clone()
}
