use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// A configuration error, located in its source where that is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or "user-data", "vendor-data") the error is in; filled in by the loader.
    pub source_name: Option<String>,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            source_name: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error found after merging all layers (no single source to point at).
    pub fn merged(message: impl Into<String>) -> Self {
        ConfigError {
            source_name: Some("merged configuration".into()),
            ..ConfigError::new(message)
        }
    }

    pub fn at(mut self, line: u64, column: u64) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn in_source(mut self, name: impl Into<String>) -> Self {
        self.source_name = Some(name.into());
        self
    }

    /// From a YAML deserialisation error: location plus a "did you mean" for unknown keys.
    pub fn from_yaml(err: &serde_saphyr::Error) -> Self {
        let mut e = ConfigError::new(with_suggestion(&yaml_message(err)));
        if let Some(loc) = err.location() {
            e = e.at(loc.line(), loc.column());
        }
        e
    }
}

/// A YAML error's message for the person who wrote the document: the parser's
/// user-facing wording (never advice about the parser library's own options), one
/// line, without the location (reported on its own).
pub fn yaml_message(err: &serde_saphyr::Error) -> String {
    let raw = err.render_with_formatter(&serde_saphyr::UserMessageFormatter);
    strip_location_suffix(raw.lines().next().unwrap_or("").trim())
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source_name, self.line, self.column) {
            (Some(s), Some(l), Some(c)) => write!(f, "{s}:{l}:{c}: {}", self.message),
            (Some(s), _, _) => write!(f, "{s}: {}", self.message),
            (None, Some(l), Some(c)) => write!(f, "{l}:{c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

fn strip_location_suffix(msg: &str) -> String {
    // "... at line 3, column 5" → the location is reported separately.
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Adds "did you mean `x`?" to serde's "unknown field `y`, expected one of ..." messages.
pub(crate) fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message.to_string();
    };
    let Some(name) = rest.split('`').next() else {
        return message.to_string();
    };
    let expected = rest.split("expected one of ").nth(1).unwrap_or("");
    let candidates = expected.split(", ").map(|c| c.trim_matches('`'));
    match nearest(name, candidates) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message.to_string(),
    }
}

/// The candidate closest to `word` by edit distance, if it is plausibly a typo. A candidate
/// also matches by its last words (`zone_idd` → `hosted_zone_id` through `zone_id`): people
/// half-remember long names.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .filter_map(|c| {
            let tails = c
                .match_indices(['_', '-'])
                .map(|(i, _)| &c[i + 1..])
                .filter(|t| t.contains(['_', '-']) && t.len() >= 5);
            std::iter::once(c)
                .chain(tails)
                .map(|t| (edit_distance(word, t), t.len()))
                .filter(|(d, len)| *d <= 2.max(len / 3))
                .map(|(d, _)| d)
                .min()
                .map(|d| (d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The YAML reading rules for every config source: YAML 1.1 scalars as
/// cloud-init's PyYAML reads them (`yes`/`off` booleans, `0644` octal), a repeated
/// mapping key as PyYAML reads it (the last one wins; the loader warns, see
/// [`crate::duplicate_keys`]), and bounds so that an alias bomb or a huge document
/// fails fast instead of eating memory.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        strict_booleans: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 64,
            max_total_scalar_bytes: 4 * 1024 * 1024,
        },
    }
}

/// How the loader learns a module's configuration: its top-level keys, its
/// JSON Schema, and a strict check of one YAML document.
#[derive(Clone, Copy)]
pub struct ConfigSpec {
    pub keys: fn() -> &'static [&'static str],
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Deserialises `yaml` into the module's config type (other modules' keys ignored).
    pub validate: fn(&str) -> Result<(), ConfigError>,
    /// The same check on an already parsed document: the fast path at boot (one
    /// YAML parse per document); `validate` re-reads the text only to locate an error.
    pub check_value: fn(&serde_json::Value) -> Result<(), ValueError>,
    /// Top-level keys holding lists of independent entries (`users`): an entry with
    /// an error is dropped with a warning naming it, and the other entries still
    /// apply, as cloud-init skips an entry it cannot use. Set with [`ConfigSpec::lenient`].
    pub lenient_lists: &'static [&'static str],
}

impl ConfigSpec {
    /// Marks `keys` as lists whose entries stand alone (see `lenient_lists`).
    pub fn lenient(mut self, keys: &'static [&'static str]) -> Self {
        self.lenient_lists = keys;
        self
    }
}

/// One step of the path to a value in a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

/// An error in a parsed document, with the path to the value it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueError {
    pub path: Vec<PathStep>,
    pub message: String,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The [`ConfigSpec`] of a module whose config type is `T`.
///
/// `T` is a struct of the module's top-level keys. It must not use
/// `deny_unknown_fields` itself (the document holds other modules' keys too);
/// its nested structs should, so typos inside a section are errors.
pub fn config_spec<T: DeserializeOwned + JsonSchema>() -> ConfigSpec {
    ConfigSpec {
        keys: struct_fields::<T>,
        schema: |g| g.subschema_for::<T>(),
        validate: |yaml| {
            // `!!binary` as its base64 text: the type sees the tag (`TextOrBinary`).
            serde_saphyr::from_str_with_options::<T>(yaml, crate::yaml::yaml_options_raw_binary())
                .map(|_| ())
                .map_err(|e| {
                    let mut err = ConfigError::from_yaml(&e);
                    err.message =
                        crate::config_words::reword(&yaml_message(&e), yaml, err.line, err.column);
                    err
                })
        },
        check_value: |v| {
            serde_path_to_error::deserialize::<_, T>(v)
                .map(|_| ())
                .map_err(|e| ValueError {
                    path: path_steps(e.path()),
                    message: with_suggestion(&e.inner().to_string()),
                })
        },
        lenient_lists: &[],
    }
}

fn path_steps(path: &serde_path_to_error::Path) -> Vec<PathStep> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Map { key } => Some(PathStep::Key(key.clone())),
            Segment::Seq { index } => Some(PathStep::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// The field names serde knows for struct `T`, read off `deserialize_struct`.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Top {
        hostname: Option<String>,
        disks: Option<Disks>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Disks {
        mode: Option<String>,
        chunk_size: Option<u32>,
    }

    #[test]
    fn keys_come_from_the_type() {
        assert_eq!((config_spec::<Top>().keys)(), &["hostname", "disks"]);
    }

    #[test]
    fn nested_unknown_key_is_located_and_suggested() {
        let spec = config_spec::<Top>();
        let err = (spec.validate)("hostname: a\nother: 1\ndisks:\n  chunk_sise: 4\n").unwrap_err();
        assert_eq!((err.line, err.column), (Some(4), Some(3)), "{err}");
        assert!(err.message.contains("did you mean `chunk_size`?"), "{err}");
    }

    #[test]
    fn wrong_type_is_located() {
        let spec = config_spec::<Top>();
        let err = (spec.validate)("disks:\n  chunk_size: big\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(!err.message.contains("did you mean"), "{err}");
    }

    #[test]
    fn nearest_only_suggests_plausible_typos() {
        let keys = ["hostname", "fqdn", "preserve_hostname"];
        assert_eq!(nearest("hostnme", keys.iter().copied()), Some("hostname"));
        assert_eq!(nearest("zzzzzzzzzz", keys.iter().copied()), None);
        let keys = ["hosted_zone_id", "zone_name", "ttl"];
        assert_eq!(
            nearest("zone_idd", keys.iter().copied()),
            Some("hosted_zone_id")
        );
        assert_eq!(
            nearest("id", keys.iter().copied()),
            None,
            "a short tail is no match"
        );
    }
}

/// Reads a YAML scalar — text, number or boolean — as its text, as cloud-init does for keys
/// such as `hostname: 12345`. A list or mapping is still a type error, with its location.
/// Use with `#[serde(deserialize_with = "stoke_api::scalar_text")]` on an `Option<String>`.
pub fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a text (or a number), e.g. web-1")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_option(V)
}

#[cfg(test)]
mod scalar_tests {
    #[derive(serde::Deserialize)]
    struct H {
        #[serde(default, deserialize_with = "super::scalar_text")]
        hostname: Option<String>,
    }

    #[test]
    fn numbers_and_text_are_text_lists_are_not() {
        let h: H = serde_json::from_str(r#"{"hostname": 12345}"#).unwrap();
        assert_eq!(h.hostname.as_deref(), Some("12345"));
        let h: H = serde_json::from_str(r#"{"hostname": "web"}"#).unwrap();
        assert_eq!(h.hostname.as_deref(), Some("web"));
        let h: H = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(h.hostname, None);
        assert!(serde_json::from_str::<H>(r#"{"hostname": [1]}"#).is_err());
    }
}

/// How layers combine (later over earlier): maps merge key by key, anything else is replaced.
pub fn merge_config(
    into: &mut serde_json::Map<String, serde_json::Value>,
    from: serde_json::Map<String, serde_json::Value>,
) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) => {
                merge_config(a, b)
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}
