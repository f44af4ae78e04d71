//! YAML documents to `serde_json::Value`, keeping `!!binary` bytes.
//!
//! serde-saphyr decodes a `!!binary` scalar into a *string* when the target is
//! untyped (as `serde_json::Value` is), and fails the whole document when the
//! bytes are not UTF-8 — gzip data, for instance, as cloud-init's `write_files`
//! examples use. [`parse_yaml`] reads such a scalar itself: bytes that are UTF-8
//! become the same string as before; other bytes become `{"$binary": "<base64>"}`
//! (standard alphabet, padded), which [`TextOrBinary`] turns back into the exact bytes.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::yaml_options;

/// The key of the one-entry map that carries bytes which are not UTF-8.
pub const BINARY_KEY: &str = "$binary";

/// The YAML tags serde-saphyr treats as `!!binary` (mirrors its tag table).
fn is_binary_tag(tag: &str) -> bool {
    let core = tag
        .strip_prefix("tag:yaml.org,2002:")
        .map(|s| s.strip_prefix('!').unwrap_or(s));
    core == Some("binary") || tag == "!binary"
}

/// YAML allows whitespace (line breaks) inside base64; the padding is optional.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let cleaned: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(cleaned)
}

/// [`yaml_options`], except that a `!!binary` scalar read as a string is its
/// base64 text (not decoded, so bytes that are not UTF-8 are no error): for
/// readers that look at the tag themselves, or that only want positions.
pub fn yaml_options_raw_binary() -> serde_saphyr::Options {
    let mut o = yaml_options();
    o.ignore_binary_tag_for_string = true;
    o
}

/// Parses one YAML document (with [`yaml_options`]) into a JSON value; a
/// `!!binary` scalar becomes its text when UTF-8, else `{"$binary": base64}`.
pub fn parse_yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
    // Fast path (every boot reads the image's config): with no `binary` and no `%`
    // (a %TAG directive or a %-escaped tag) in the text there is no binary tag.
    if !text.contains("binary") && !text.contains('%') {
        return serde_saphyr::from_str_with_options(text, yaml_options());
    }
    let node: Option<Node> = serde_saphyr::from_str_with_options(text, yaml_options_raw_binary())?;
    Ok(node.map_or(Value::Null, |n| n.0))
}

/// Like [`parse_yaml`], and the mapping keys the document repeats (PyYAML, and so
/// cloud-init, keeps the last one, as [`parse_yaml`] does; a person wants to hear of it).
/// The common case costs one parse: the document is scanned for repeats only when a
/// parse that refuses them fails.
pub fn parse_yaml_with_duplicates(
    text: &str,
) -> Result<(Value, Vec<DuplicateKey>), serde_saphyr::Error> {
    let mut strict = yaml_options();
    strict.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    let first = if !text.contains("binary") && !text.contains('%') {
        serde_saphyr::from_str_with_options::<Value>(text, strict)
    } else {
        strict.ignore_binary_tag_for_string = true;
        serde_saphyr::from_str_with_options::<Option<Node>>(text, strict)
            .map(|n| n.map_or(Value::Null, |n| n.0))
    };
    match first {
        Ok(v) => Ok((v, Vec::new())),
        Err(e) if is_duplicate_key(&e) => Ok((parse_yaml(text)?, duplicate_keys(text))),
        Err(e) => Err(e),
    }
}

fn is_duplicate_key(mut err: &serde_saphyr::Error) -> bool {
    loop {
        match err {
            serde_saphyr::Error::DuplicateMappingKey { .. } => return true,
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => err = error,
            _ => return false,
        }
    }
}

/// A mapping key given twice in one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Where the mapping is: `puppet`, `users[2]`; empty at the top level.
    pub parent: String,
    pub key: String,
    /// Line and column of the earlier occurrence, and of the later one (which wins).
    pub first: (u64, u64),
    pub later: (u64, u64),
}

/// Every repeated mapping key of the document, at any depth (none when it does not parse).
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    scan(text).duplicates
}

/// Where each key and list item of a document is, by path, to locate errors found
/// in the parsed value. Read only when there is an error to report.
#[derive(Debug, Default)]
pub struct Positions {
    /// `puppet.mode`, `users[2]`, `users[2].name` → line, column (1-based) of the key
    /// or of the item.
    at: std::collections::HashMap<String, (u64, u64)>,
    /// The same paths → where their values start.
    values: std::collections::HashMap<String, (u64, u64)>,
    duplicates: Vec<DuplicateKey>,
}

impl Positions {
    pub fn of(text: &str) -> Positions {
        scan(text)
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &[crate::PathStep]) -> Option<(u64, u64)> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.at.get(&path_text(&path[..n])).copied())
    }

    /// Where the value at `path` starts (an error about a value points there), when known.
    pub fn locate_value(&self, path: &[crate::PathStep]) -> Option<(u64, u64)> {
        self.values.get(&path_text(path)).copied()
    }
}

/// `a.b[2].c` for the steps a, b, 2, c.
pub fn path_text(path: &[crate::PathStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            crate::PathStep::Key(k) if out.is_empty() => out.push_str(k),
            crate::PathStep::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            crate::PathStep::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

thread_local! {
    /// The scan in progress on this thread: the path so far and what was found.
    static SCAN: std::cell::RefCell<(String, Positions)> = Default::default();
}

fn scan(text: &str) -> Positions {
    let mut options = yaml_options_raw_binary();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    SCAN.with(|s| *s.borrow_mut() = Default::default());
    let _ = serde_saphyr::from_str_with_options::<ScanNode>(text, options);
    SCAN.with(|s| std::mem::take(&mut s.borrow_mut().1))
}

/// Runs `f` with the scan's path extended by `step`.
fn under<R>(step: &str, f: impl FnOnce() -> R) -> R {
    let len = SCAN.with(|s| {
        let mut s = s.borrow_mut();
        let len = s.0.len();
        if !s.0.is_empty() && !step.starts_with('[') {
            s.0.push('.');
        }
        s.0.push_str(step);
        len
    });
    let r = f();
    SCAN.with(|s| s.borrow_mut().0.truncate(len));
    r
}

fn note_position(at: (u64, u64)) {
    SCAN.with(|s| {
        let mut s = s.borrow_mut();
        let path = s.0.clone();
        s.1.at.entry(path).or_insert(at);
    });
}

fn note_value_position(at: (u64, u64)) {
    SCAN.with(|s| {
        let mut s = s.borrow_mut();
        let path = s.0.clone();
        s.1.values.insert(path, at);
    });
}

/// A node walked for its keys' and items' positions.
struct ScanNode;

impl<'de> Deserialize<'de> for ScanNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScanVisitor).map(|()| ScanNode)
    }
}

struct ScanVisitor;

impl<'de> Visitor<'de> for ScanVisitor {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        ScanNode::deserialize(d).map(|_| ())
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        ScanNode::deserialize(d).map(|_| ())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let item = under(&format!("[{i}]"), || {
                let item = seq.next_element::<serde_saphyr::Spanned<ScanNode>>()?;
                if let Some(item) = &item {
                    let at = (item.referenced.line(), item.referenced.column());
                    note_position(at);
                    note_value_position(at);
                }
                Ok::<_, A::Error>(item.is_some())
            })?;
            if !item {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: std::collections::HashMap<String, (u64, u64)> = Default::default();
        while let Some(key) = map.next_key::<serde_saphyr::Spanned<KeyText>>()? {
            let at = (key.referenced.line(), key.referenced.column());
            let name = key.value.0;
            under(&name, || {
                note_position(at);
                let value = map.next_value::<serde_saphyr::Spanned<ScanNode>>()?;
                note_value_position((value.referenced.line(), value.referenced.column()));
                Ok::<_, A::Error>(())
            })?;
            if let Some(first) = seen.insert(name.clone(), at) {
                SCAN.with(|s| {
                    let mut s = s.borrow_mut();
                    let parent = s.0.clone();
                    s.1.duplicates.push(DuplicateKey {
                        parent,
                        key: name,
                        first,
                        later: at,
                    });
                });
            }
        }
        Ok(())
    }
}

/// A mapping key as text, whatever scalar it is (`1`, `true`, `name`).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One YAML node, read with its tag.
struct Node(Value);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let serde_saphyr::Tagged(Untyped(value), tag) = Deserialize::deserialize(d)?;
        match (value, tag) {
            (Value::String(text), Some(tag)) if is_binary_tag(&tag) => {
                let bytes = decode_base64(&text)
                    .map_err(|e| de::Error::custom(format!("!!binary: invalid base64: {e}")))?;
                Ok(Node(binary_value(bytes)))
            }
            (value, _) => Ok(Node(value)),
        }
    }
}

/// Bytes as a JSON value: a string when they are UTF-8, else the `$binary` map.
fn binary_value(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => Value::String(text),
        Err(e) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
            let mut m = Map::new();
            m.insert(BINARY_KEY.to_string(), Value::String(b64));
            Value::Object(m)
        }
    }
}

/// The node's value as serde_json's own `Value` visitor would build it, with
/// sequence items and mapping values read as [`Node`]s (so nested tags are seen).
struct Untyped(Value);

impl<'de> Deserialize<'de> for Untyped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UntypedVisitor).map(Untyped)
    }
}

struct UntypedVisitor;

impl<'de> Visitor<'de> for UntypedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json: a NaN or an infinity has no JSON form and becomes null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(binary_value(v.to_vec()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Node::deserialize(d).map(|n| n.0)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Node::deserialize(d).map(|n| n.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Node(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let Node(v) = map.next_value()?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

/// Keys as serde_json reads them (`deserialize_str`).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        struct K;
        impl Visitor<'_> for K {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_string<E>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
        }
        d.deserialize_str(K)
    }
}

/// A config value that is text or bytes: a string (which may come from a
/// UTF-8 `!!binary`), `null` (empty text), or `{"$binary": base64}` from
/// [`parse_yaml`]. Also reads YAML text directly (how the loader locates an
/// error), where it sees the `!!binary` tag itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TextOrBinary {
    Text(String),
    Binary(Vec<u8>),
}

impl Default for TextOrBinary {
    fn default() -> Self {
        TextOrBinary::Text(String::new())
    }
}

impl TextOrBinary {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            TextOrBinary::Text(s) => s.as_bytes(),
            TextOrBinary::Binary(b) => b,
        }
    }
}

enum Raw {
    Text(String),
    Null,
    Base64(String),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "text (a string, `!!binary` or {{\"{BINARY_KEY}\": base64}})"
                )
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Text(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Text(v))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let key: Option<String> = map.next_key()?;
                if key.as_deref() != Some(BINARY_KEY) {
                    return Err(de::Error::custom(format!(
                        "expected text, `!!binary` or {{\"{BINARY_KEY}\": base64}}, found a mapping"
                    )));
                }
                let b64: String = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(format!(
                        "{{\"{BINARY_KEY}\": base64}} takes no other key"
                    )));
                }
                Ok(Raw::Base64(b64))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for TextOrBinary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // From a JSON value `Tagged` is transparent (no tag); from YAML text it
        // gives the tag, and the `!!binary` scalar's base64 text.
        let serde_saphyr::Tagged(raw, tag) = serde_saphyr::Tagged::<Raw>::deserialize(d)?;
        let decode = |b64: &str| {
            decode_base64(b64)
                .map(TextOrBinary::Binary)
                .map_err(|e| de::Error::custom(format!("invalid base64: {e}")))
        };
        match raw {
            Raw::Text(s) if tag.as_deref().is_some_and(is_binary_tag) => decode(&s),
            Raw::Text(s) => Ok(TextOrBinary::Text(s)),
            Raw::Null => Ok(TextOrBinary::default()),
            Raw::Base64(b64) => decode(&b64),
        }
    }
}

impl JsonSchema for TextOrBinary {
    fn schema_name() -> Cow<'static, str> {
        "TextOrBinary".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Text, or bytes: YAML `!!binary` (read as {\"$binary\": base64} when not UTF-8).",
            "anyOf": [
                {"type": ["string", "null"]},
                {
                    "type": "object",
                    "properties": {"$binary": {"type": "string"}},
                    "required": ["$binary"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tagged reader against serde-saphyr's own `Value`, on a document without
    /// `!!binary` but with everything else the loader meets: both must agree.
    #[test]
    fn the_tagged_reader_reads_like_the_plain_one() {
        let doc = "%YAML 1.1\n---\nbase: &b {x: 1, y: [a, b]}\nderived:\n  <<: *b\n  y: [c]\n\
                   mode: 0644\nflag: yes\noff: off\nnothing: ~\nempty:\nfloat: 1.5\n\
                   neg: -3\nbig: 18446744073709551615\nquoted: \"0644\"\ncustom: !thing word\n\
                   block: |\n  line 1\n  line 2\nlist:\n  - {a: 1}\n  - [1, 2]\n  - !!str 12\n";
        let plain: Value = serde_saphyr::from_str_with_options(doc, yaml_options()).unwrap();
        let tagged: Option<Node> =
            serde_saphyr::from_str_with_options(doc, yaml_options_raw_binary()).unwrap();
        assert_eq!(tagged.unwrap().0, plain);
        assert_eq!(
            parse_yaml(doc).unwrap(),
            plain,
            "the `%` selects the tagged reader"
        );
        assert_eq!(parse_yaml("").unwrap(), Value::Null);
        assert_eq!(parse_yaml("# binary\n").unwrap(), Value::Null);
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value_and_is_reported() {
        let doc = "packages: [a]\nhostname: h\npuppet:\n  mode: apply\n  mode: agent\n\
                   packages: [b]\nusers:\n  - {name: x, shell: a, shell: b}\n";
        let (v, dups) = parse_yaml_with_duplicates(doc).unwrap();
        assert_eq!(v["packages"], serde_json::json!(["b"]), "PyYAML: last wins");
        assert_eq!(v["puppet"]["mode"], "agent");
        assert_eq!(v["users"][0]["shell"], "b");
        let mut dups: Vec<_> = dups
            .iter()
            .map(|d| (d.parent.as_str(), d.key.as_str(), d.first.0, d.later.0))
            .collect();
        dups.sort();
        assert_eq!(
            dups,
            vec![
                ("", "packages", 1, 6),
                ("puppet", "mode", 4, 5),
                ("users[0]", "shell", 8, 8)
            ]
        );
        // A document without repeats: one parse, nothing reported.
        let (v, dups) = parse_yaml_with_duplicates("a: 1\nb: {a: 2}\n").unwrap();
        assert_eq!(v["b"]["a"], 2);
        assert!(dups.is_empty());
        // Merge keys are not repeats: `<<` then an override is YAML's own way.
        let (v, dups) =
            parse_yaml_with_duplicates("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n").unwrap();
        assert_eq!(v["d"], serde_json::json!({"x": 1, "y": 3}));
        assert!(dups.is_empty(), "{dups:?}");
        let p = Positions::of(doc);
        use crate::PathStep::{Index, Key};
        assert_eq!(
            p.locate(&[Key("puppet".into()), Key("mode".into())]),
            Some((4, 3))
        );
        assert_eq!(p.locate(&[Key("users".into()), Index(0)]), Some((8, 5)));
        assert_eq!(
            p.locate(&[Key("users".into()), Index(0), Key("nope".into())]),
            Some((8, 5)),
            "an unknown path: its nearest ancestor"
        );
        assert_eq!(
            path_text(&[Key("users".into()), Index(0), Key("name".into())]),
            "users[0].name"
        );
        // The plain reader agrees on the value.
        assert_eq!(
            parse_yaml(doc).unwrap()["packages"],
            serde_json::json!(["b"])
        );
    }

    #[test]
    fn binary_scalars_keep_their_bytes() {
        let doc = "a: !!binary SGVsbG8=\nb: !!binary /w==\nc: !!binary |\n  //79\n  AA==\n\
                   d: [!!binary gAE=]\ne: !binary SGk\n";
        let v = parse_yaml(doc).unwrap();
        assert_eq!(v["a"], "Hello", "UTF-8 bytes read as before");
        assert_eq!(v["b"], serde_json::json!({"$binary": "/w=="}));
        assert_eq!(v["c"], serde_json::json!({"$binary": "//79AA=="}));
        assert_eq!(v["d"][0], serde_json::json!({"$binary": "gAE="}));
        assert_eq!(v["e"], "Hi", "unpadded, `!binary` as serde-saphyr reads it");
        let err = parse_yaml("a: !!binary '#not base64'\n").unwrap_err();
        assert!(err.to_string().contains("invalid base64"), "{err}");
        // The error is located (the loader reports line:column).
        assert!(err.location().is_some(), "{err}");
    }

    #[derive(Deserialize, Debug)]
    struct Doc {
        content: TextOrBinary,
    }

    #[test]
    fn text_or_binary_reads_the_value_and_the_yaml_text_alike() {
        for (yaml, want) in [
            ("content: plain\n", TextOrBinary::Text("plain".into())),
            ("content:\n", TextOrBinary::Text(String::new())),
            ("content: !!binary /w==\n", TextOrBinary::Binary(vec![0xff])),
        ] {
            let via_value: Doc = serde_json::from_value(parse_yaml(yaml).unwrap()).unwrap();
            assert_eq!(via_value.content, want, "{yaml}");
            let direct: Doc =
                serde_saphyr::from_str_with_options(yaml, yaml_options_raw_binary()).unwrap();
            assert_eq!(direct.content, want, "{yaml}");
        }
        // A UTF-8 `!!binary` is text in the value and bytes in the text: the same bytes.
        let v: Doc =
            serde_json::from_value(parse_yaml("content: !!binary SGk=\n").unwrap()).unwrap();
        assert_eq!(v.content.as_bytes(), b"Hi");
        let bad = serde_json::from_value::<Doc>(serde_json::json!({"content": {"x": 1}}));
        assert!(bad.is_err());
        let bad = serde_json::from_value::<Doc>(serde_json::json!({"content": 12}));
        assert!(bad.is_err());
    }
}
