//! Layered configuration: built-in defaults < /etc/stoke/stoke.yaml <
//! /etc/stoke/stoke.d/*.yaml (lexical) < vendor-data < user-data. Maps merge
//! deeply, everything else (lists too) is replaced by the later layer.
//!
//! Each layer is checked on its own, strictly, so an error names the file,
//! line and column. A layer with errors is dropped whole (never half-applied);
//! the others still apply and the run is reported degraded.

mod cloud_init;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stoke_api::{ConfigError, ConfigSpec, Frequency, Module, config_spec};

use stoke_api::InputDir;

/// The engine's own keys (modules declare theirs).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EngineConfig {
    /// Datasources to consider, in order of preference. Default: detect (nocloud, then ec2).
    pub datasource: Option<Vec<DatasourceKind>>,
    /// EC2 instance metadata service client.
    pub imds: Option<stoke_imds::ImdsConfig>,
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
    /// Who this image layer is (docs/ready.md, "Image lineage"): each layer's own section is
    /// kept, in layer order, instead of being merged with the others'.
    pub image: Option<ImageSection>,
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
    /// Each accepted document's `image:` section, in load order, with its source's name:
    /// the image lineage (the merge would blend the layers' sections into one).
    pub images: Vec<(String, Value)>,
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

/// The largest image layer read: a layer is the image's own, but a file that size is no
/// configuration (the cap keeps a mistaken device or FIFO from being read whole).
const MAX_LAYER: u64 = 16 * 1024 * 1024;

/// Reads the image's layers: `stoke.yaml`, then `stoke.d/*.yaml` in lexical order, resolved
/// inside the root (see [`InputDir`]).
pub fn image_sources(config: &InputDir) -> std::io::Result<Vec<Source>> {
    let mut files = Vec::new();
    if config.is_file("stoke.yaml") {
        files.push(PathBuf::from("stoke.yaml"));
    }
    let mut layer: Vec<PathBuf> = config
        .list("stoke.d")?
        .into_iter()
        .map(|(name, _)| Path::new("stoke.d").join(name))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    layer.sort();
    files.extend(layer);
    files
        .into_iter()
        .map(|p| {
            let shown = config.shown(&p);
            let bytes = config.read(&p, MAX_LAYER)?.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{}: vanished while read", shown.display()),
                )
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not UTF-8", shown.display()),
                )
            })?;
            Ok(Source {
                name: shown.display().to_string(),
                text,
            })
        })
        .collect()
}

/// Every cloud-init key and what stoke does with it: a Markdown table, from the same
/// data the loader uses (docs/configuration.md holds a copy, kept equal by a test).
pub fn cloud_init_table(modules: &[Arc<dyn Module>]) -> String {
    cloud_init::compat_table(&Checker::new(modules).known)
}

/// Checks every source and merges the good ones in order, on top of what is loaded
/// already. Each group holds documents that stand or fall together (the parts of one
/// user-data).
pub fn load_into(loaded: &mut Loaded, groups: &[Vec<Source>], modules: &[Arc<dyn Module>]) {
    let checker = Checker::new(modules);
    for group in groups {
        let mut docs = Vec::new();
        let mut errors = Vec::new();
        for src in group {
            // Warnings are worth reading even when the document is rejected.
            let (doc, warnings) = checker.check(src);
            loaded.warnings.extend(warnings);
            match doc {
                Ok(doc) => docs.push(doc),
                Err(errs) => errors.extend(errs),
            }
        }
        if errors.is_empty() {
            for (src, doc) in group.iter().zip(docs) {
                if let Some(image) = doc.get("image") {
                    loaded.images.push((src.name.clone(), image.clone()));
                }
                stoke_api::merge_config(&mut loaded.merged, doc);
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

/// The document (cloud-init-only keys removed) or every error found; and the warnings.
type Checked = (Result<Map<String, Value>, Vec<ConfigError>>, Vec<String>);

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

    fn check(&self, src: &Source) -> Checked {
        let located = |e: ConfigError| e.in_source(src.name.clone());
        // `!!binary` bytes that are not UTF-8 arrive as {"$binary": base64} (stoke_api::parse_yaml).
        let (value, duplicates) = match stoke_api::parse_yaml_with_duplicates(&src.text) {
            Ok(v) => v,
            Err(e) => return (Err(vec![located(ConfigError::from_yaml(&e))]), Vec::new()),
        };
        let mut doc = match value {
            Value::Object(m) => m,
            Value::Null => return (Ok(Map::new()), Vec::new()),
            _ => {
                let e = ConfigError::new("the document must be a mapping of keys to values");
                return (Err(vec![located(e)]), Vec::new());
            }
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for d in &duplicates {
            let key = if d.parent.is_empty() {
                d.key.clone()
            } else {
                format!("{}.{}", d.parent, d.key)
            };
            warnings.push(format!(
                "{}:{}:{}: `{key}` is given twice (also at line {}); the last one is used, as cloud-init does",
                src.name, d.later.0, d.later.1, d.first.0
            ));
        }
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
            if cloud_init::is_cloud_init_key(name) {
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
        let mut positions = None;
        for (_, spec) in &self.specs {
            // Without any of its keys a section is all defaults: nothing to check. (Checking it
            // anyway runs that module's deserializer: more cold code to page in at boot.)
            if !(spec.keys)().iter().any(|k| doc.contains_key(*k)) {
                continue;
            }
            if (spec.check_value)(&Value::Object(doc.clone())).is_ok() {
                continue;
            }
            let positions = positions.get_or_insert_with(|| stoke_api::Positions::of(&src.text));
            let found = section_errors(spec, &mut doc, src, positions, &mut warnings);
            errors.extend(found.into_iter().map(located));
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
            (Ok(doc), warnings)
        } else {
            (Err(errors), warnings)
        }
    }
}

/// Every error of one module's section, each located: serde stops at the first, so the
/// value at its path is taken out and the section checked again (a person fixes all of
/// them in one round). An entry of a lenient list (`users`) with an error is dropped from
/// `doc` with a warning instead: the other entries still apply.
fn section_errors(
    spec: &stoke_api::ConfigSpec,
    doc: &mut Map<String, Value>,
    src: &Source,
    positions: &stoke_api::Positions,
    warnings: &mut Vec<String>,
) -> Vec<ConfigError> {
    use stoke_api::PathStep;
    let mut scratch = Value::Object(doc.clone());
    let mut errors: Vec<ConfigError> = Vec::new();
    // Per lenient list, the original indices of the entries dropped so far.
    let mut dropped: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    while errors.len() < MAX_ERRORS_PER_DOCUMENT {
        let Err(e) = (spec.check_value)(&scratch) else {
            break;
        };
        // Paths into a lenient list name the entries as they were in the text.
        let mut path = e.path.clone();
        if let [PathStep::Key(list), PathStep::Index(i), ..] = path.as_mut_slice()
            && let Some(gone) = dropped.get(list.as_str())
        {
            *i = original_index(gone, *i);
        }
        if let [PathStep::Key(list), PathStep::Index(orig), ..] = path.as_slice()
            && spec.lenient_lists.contains(&list.as_str())
        {
            let list = list.clone();
            let current = e.path.get(1).and_then(|s| match s {
                PathStep::Index(i) => Some(*i),
                PathStep::Key(_) => None,
            });
            // The entry's own position, not the key inside it that is wrong.
            let where_ = match positions.locate(&path[..2]) {
                Some((l, c)) => format!("{}:{l}:{c}", src.name),
                None => src.name.clone(),
            };
            let why = located_error(&e.message, &path, positions, &src.text).message;
            warnings.push(format!(
                "{where_}: {list} entry {} ignored ({why}); the other entries apply",
                orig + 1,
            ));
            let removed = current.is_some_and(|i| {
                remove_item(doc, &list, i) && remove_item_value(&mut scratch, &list, i)
            });
            if !removed {
                break;
            }
            dropped.entry(list).or_default().push(*orig);
            continue;
        }
        errors.push(located_error(&e.message, &path, positions, &src.text));
        if e.path.is_empty() || !remove_path(&mut scratch, &e.path) {
            break;
        }
    }
    if errors.is_empty() && (spec.check_value)(&scratch).is_err() {
        errors.push(ConfigError::new(
            "too many errors in this section; fix the ones listed",
        ));
    }
    if errors.len() == 1 {
        // One error: the strict reader of the text words and places it best.
        if let Err(e) = (spec.validate)(&src.text)
            && e.line.is_some()
        {
            errors = vec![e];
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

/// An error found at `path` of the parsed document, placed and worded from the text.
fn located_error(
    message: &str,
    path: &[stoke_api::PathStep],
    positions: &stoke_api::Positions,
    text: &str,
) -> ConfigError {
    let key_at = positions.locate(path);
    let (message, at) = if message.starts_with("unknown field `") {
        // Worded from the key's own position, as the strict reader words it.
        let (l, c) = key_at.unzip();
        (stoke_api::config_words::reword(message, text, l, c), key_at)
    } else {
        let value_at = positions.locate_value(path).or(key_at);
        let (l, c) = value_at.unzip();
        (
            stoke_api::config_words::reword(message, text, l, c),
            value_at,
        )
    };
    let err = ConfigError::new(message);
    match at {
        Some((l, c)) => err.at(l, c),
        None => err,
    }
}

/// The index an entry had before the entries at `gone` (original indices) were dropped.
fn original_index(gone: &[usize], current: usize) -> usize {
    let mut orig = current;
    let mut sorted = gone.to_vec();
    sorted.sort_unstable();
    for g in sorted {
        if g <= orig {
            orig += 1;
        }
    }
    orig
}

fn remove_item(doc: &mut Map<String, Value>, list: &str, i: usize) -> bool {
    match doc.get_mut(list) {
        Some(Value::Array(items)) if i < items.len() => {
            items.remove(i);
            true
        }
        _ => false,
    }
}

fn remove_item_value(v: &mut Value, list: &str, i: usize) -> bool {
    v.as_object_mut().is_some_and(|m| remove_item(m, list, i))
}

/// Takes the value at `path` out of `v`; false when there is nothing there.
fn remove_path(v: &mut Value, path: &[stoke_api::PathStep]) -> bool {
    use stoke_api::PathStep;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = v;
    for step in parents {
        node = match (step, node) {
            (PathStep::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(n) => n,
                None => return false,
            },
            (PathStep::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (PathStep::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (PathStep::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
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

/// `image:` in an image layer: who this layer is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSection {
    /// The layer's image name (`app-web`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its version (`1.4.2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The image it was built on (`base-2.0`, an AMI id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestor: Option<String>,
    /// When it was built, as the build pipeline says (free text, e.g. RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built_at: Option<String>,
    /// Who or what built it (a pipeline, a job URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Free-form labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}
