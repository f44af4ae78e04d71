//! Layered configuration: built-in defaults < /etc/stoke/stoke.yaml <
//! /etc/stoke/stoke.d/*.yaml (lexical) < vendor-data < user-data. Maps merge
//! deeply, everything else (lists too) is replaced by the later layer.
//!
//! Each layer is checked on its own, strictly, so an error names the file,
//! line and column. A layer with errors is dropped whole (never half-applied);
//! the others still apply and the run is reported degraded.

mod cloud_init;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use stoke_api::{ConfigError, ConfigSpec, Frequency, Module, config_spec};

/// The engine's own keys (modules declare theirs).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EngineConfig {
    /// Datasources to consider, in order of preference. Default: detect (nocloud, then ec2).
    pub datasource: Option<Vec<DatasourceKind>>,
    /// EC2 instance metadata service client.
    pub imds: Option<crate::datasource::ImdsSettings>,
    /// NoCloud datasource.
    pub nocloud: Option<NoCloudConfig>,
    /// Per-module overrides: `modules: {ssh-authorized-keys: {frequency: per-boot}}`.
    pub modules: BTreeMap<String, ModuleOverride>,
    /// Template variables for every module (e.g. `role: web` for `{{ role }}`).
    pub vars: BTreeMap<String, String>,
    /// External program paths by tool name (`mdadm: /usr/local/sbin/mdadm`).
    pub tools: BTreeMap<String, String>,
    /// Prometheus metrics: `textfile: /var/lib/node_exporter/textfile_collector/stoke.prom`
    /// is written at the end of each stage. Off by default.
    pub metrics: Option<MetricsConfig>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to write the metrics (Prometheus text format, for node_exporter's textfile
    /// collector). An absolute path.
    pub textfile: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasourceKind {
    Nocloud,
    Ec2,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NoCloudConfig {
    /// Look for a filesystem labelled cidata/CIDATA when the seed directory is absent.
    pub use_volume: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleOverride {
    pub frequency: Option<Frequency>,
    /// `false` turns the module off.
    pub enabled: Option<bool>,
    pub timeout_seconds: Option<u64>,
    /// On a new EC2 instance whose id DMI gives (Nitro), run in the local stage instead of
    /// waiting for the network stage's metadata: with the image's configuration only, so
    /// user-data cannot change this module on that boot. Only for modules that need no
    /// metadata (disks, mounts, ssh-host-keys).
    pub before_metadata: Option<bool>,
}

/// One configuration document and where it came from.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// The merged configuration and what was wrong on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    pub merged: Map<String, Value>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl Loaded {
    pub fn engine(&self) -> EngineConfig {
        serde_json::from_value(Value::Object(self.merged.clone())).unwrap_or_else(|e| {
            tracing::error!("engine configuration unreadable after merge: {e}");
            EngineConfig::default()
        })
    }

    /// The values of `keys` only: what one module sees, and what its semaphore hashes.
    pub fn section(&self, keys: &[&str]) -> Value {
        let mut m = Map::new();
        for k in keys {
            if let Some(v) = self.merged.get(*k) {
                m.insert((*k).to_string(), v.clone());
            }
        }
        Value::Object(m)
    }
}

pub fn engine_spec() -> ConfigSpec {
    config_spec::<EngineConfig>()
}

/// Reads the image's layers: `stoke.yaml`, then `stoke.d/*.yaml` in lexical order.
pub fn image_sources(config_dir: &Path) -> std::io::Result<Vec<Source>> {
    let mut files = Vec::new();
    let main = config_dir.join("stoke.yaml");
    if main.is_file() {
        files.push(main);
    }
    match std::fs::read_dir(config_dir.join("stoke.d")) {
        Ok(entries) => {
            let mut layer: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            layer.sort();
            files.extend(layer);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not UTF-8", p.display()),
                )
            })?;
            Ok(Source {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// Checks every source, merges the good ones in order. `sources` groups
/// documents that stand or fall together (all parts of one user-data).
pub fn load(groups: &[Vec<Source>], modules: &[Arc<dyn Module>]) -> Loaded {
    let mut loaded = Loaded::default();
    load_into(&mut loaded, groups, modules);
    loaded
}

/// Adds more layers on top of what is loaded already.
pub fn load_into(loaded: &mut Loaded, groups: &[Vec<Source>], modules: &[Arc<dyn Module>]) {
    let checker = Checker::new(modules);
    for group in groups {
        let mut docs = Vec::new();
        let mut errors = Vec::new();
        for src in group {
            match checker.check(src) {
                Ok((doc, warnings)) => {
                    docs.push(doc);
                    loaded.warnings.extend(warnings);
                }
                Err(errs) => errors.extend(errs),
            }
        }
        if errors.is_empty() {
            for doc in docs {
                merge(&mut loaded.merged, doc);
            }
        } else {
            let names: Vec<_> = group.iter().map(|s| s.name.as_str()).collect();
            loaded.errors.extend(errors);
            // Said once, in status and (by the stage, once per boot) in the log.
            loaded.errors.push(ConfigError::new(format!(
                "{} rejected as a whole: nothing in it was applied",
                names.join(", ")
            )));
        }
    }
}

/// Deep merge: maps merge key by key, anything else is replaced.
pub fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

type Checked = (Map<String, Value>, Vec<String>);

/// Errors listed per document; the rest are counted in one last line.
const MAX_ERRORS_PER_DOCUMENT: usize = 20;

struct Checker<'a> {
    known: BTreeMap<&'static str, &'static str>,
    specs: Vec<(&'static str, ConfigSpec)>,
    modules: &'a [Arc<dyn Module>],
}

impl<'a> Checker<'a> {
    fn new(modules: &'a [Arc<dyn Module>]) -> Self {
        let mut specs = vec![("stoke", engine_spec())];
        for m in modules {
            let s = m.spec();
            specs.push((s.name, s.config));
        }
        let mut known = BTreeMap::new();
        for (owner, spec) in &specs {
            for k in (spec.keys)() {
                known.entry(*k).or_insert(*owner);
            }
        }
        Checker {
            known,
            specs,
            modules,
        }
    }

    /// The document (cloud-init-only keys removed) and its warnings, or every error found.
    fn check(&self, src: &Source) -> Result<Checked, Vec<ConfigError>> {
        let located = |e: ConfigError| e.in_source(src.name.clone());
        // `!!binary` bytes that are not UTF-8 arrive as {"$binary": base64} (stoke_api::parse_yaml).
        let value: Value = stoke_api::parse_yaml(&src.text)
            .map_err(|e| vec![located(ConfigError::from_yaml(&e))])?;
        let mut doc = match value {
            Value::Object(m) => m,
            Value::Null => return Ok((Map::new(), Vec::new())),
            _ => {
                return Err(vec![located(ConfigError::new(
                    "the document must be a mapping of keys to values",
                ))]);
            }
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        // Positions are only needed to report a key: read them only then.
        let needs_spans = doc.keys().any(|k| !self.known.contains_key(k.as_str()));
        let keys = if needs_spans {
            top_level_keys(&src.text)
        } else {
            Vec::new()
        };
        let mut unknown_beyond_cap = 0usize;
        for key in &keys {
            let name = key.value.as_str();
            if self.known.contains_key(name) {
                continue;
            }
            let at = (key.referenced.line(), key.referenced.column());
            if cloud_init::UNSUPPORTED.contains(&name) {
                warnings.push(format!(
                    "{}:{}:{}: `{name}` is a cloud-init key not supported by stoke; ignored",
                    src.name, at.0, at.1
                ));
                doc.remove(name);
                continue;
            }
            // Linear whatever the input: past the cap, only count (99,000 typos must not
            // cost 99,000 suggestions and a status file of tens of megabytes).
            if errors.len() >= MAX_ERRORS_PER_DOCUMENT {
                unknown_beyond_cap += 1;
                continue;
            }
            let mut msg = format!("unknown key `{name}`");
            match stoke_api::nearest(name, self.known.keys().copied()) {
                Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
                None => msg.push_str(&format!(
                    " (known keys: {})",
                    self.known.keys().copied().collect::<Vec<_>>().join(", ")
                )),
            }
            errors.push(located(ConfigError::new(msg).at(at.0, at.1)));
        }
        let whole = Value::Object(doc.clone());
        for (_, spec) in &self.specs {
            // Without any of its keys a section is all defaults: nothing to check. (Checking it
            // anyway runs that module's deserializer: more cold code to page in at boot.)
            if !(spec.keys)().iter().any(|k| doc.contains_key(*k)) {
                continue;
            }
            if let Err(quick) = (spec.check_value)(&whole) {
                // Read the text again, this time for the line and column.
                match (spec.validate)(&src.text) {
                    Err(e) => errors.push(located(e)),
                    Ok(()) => errors.push(located(ConfigError::new(quick))),
                }
            }
        }
        if let Some(Value::Object(overrides)) = doc.get("modules") {
            for name in overrides.keys() {
                if !self.modules.iter().any(|m| m.spec().name == name) {
                    let names: Vec<&str> = self.modules.iter().map(|m| m.spec().name).collect();
                    let mut msg = format!("modules: unknown module `{name}`");
                    if let Some(best) = stoke_api::nearest(name, names.iter().copied()) {
                        msg.push_str(&format!("; did you mean `{best}`?"));
                    } else {
                        msg.push_str(&format!(" (modules: {})", names.join(", ")));
                    }
                    errors.push(located(ConfigError::new(msg)));
                }
            }
        }
        if unknown_beyond_cap > 0 {
            errors.push(located(ConfigError::new(format!(
                "and {unknown_beyond_cap} more unknown keys (only the first \
                 {MAX_ERRORS_PER_DOCUMENT} errors of a document are listed)"
            ))));
        }
        errors.dedup();
        if errors.is_empty() {
            Ok((doc, warnings))
        } else {
            Err(errors)
        }
    }
}

/// The top-level keys of a mapping document, with their positions.
fn top_level_keys(text: &str) -> Vec<serde_saphyr::Spanned<String>> {
    struct TopKeys(Vec<serde_saphyr::Spanned<String>>);
    impl<'de> Deserialize<'de> for TopKeys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = TopKeys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a mapping")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<TopKeys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = map.next_key::<serde_saphyr::Spanned<String>>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(TopKeys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    // Raw `!!binary`: bytes that are not UTF-8 must not cost the positions.
    serde_saphyr::from_str_with_options::<TopKeys>(text, stoke_api::yaml_options_raw_binary())
        .map(|k| k.0)
        .unwrap_or_default()
}
