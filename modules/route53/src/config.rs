//! The `route53:` section and what it resolves to for one instance.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stoke_api::{InstanceData, ModuleError, render};

/// The module's top-level keys (other modules' keys are ignored here).
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
pub struct Route53Config {
    /// Register this instance in a Route53 hosted zone.
    pub route53: Option<Section>,
}

/// `route53:`. Typos inside the section are errors.
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Section {
    /// The hosted zone, e.g. `Z0123456789ABC` (a `/hostedzone/` prefix is accepted).
    pub hosted_zone_id: Option<String>,
    /// The zone's DNS name, e.g. `example.com`. Looked up once when `hosted_zone_id` is absent.
    pub zone_name: Option<String>,
    /// With only `zone_name`: pick the private (true) or public (false) zone of that name.
    pub private_zone: Option<bool>,
    /// Template of the record name; variables are the engine's (`hostname`, `instance_id`,
    /// `vars:` ...) plus `zone_name`.
    pub record_name: String,
    /// A (the primary interface's IPv4), AAAA (its IPv6), or both: `[A, AAAA]`.
    #[serde(rename = "type", alias = "types", alias = "record_types")]
    pub types: OneOrMany<AddrType>,
    /// Extra CNAME/TXT records (names and values are templates).
    pub records: Vec<ExtraRecord>,
    /// Record TTL in seconds.
    pub ttl: u32,
    /// Poll GetChange until the change is INSYNC (bounded by the budget).
    pub wait_for_sync: bool,
    /// At `stoke shutdown`, delete what this instance registered if it still holds its values.
    pub deregister_on_shutdown: bool,
    /// Total time for a boot-time registration, retries included.
    pub budget_seconds: u64,
    /// Total time for deregistration at shutdown, retries included.
    pub shutdown_budget_seconds: u64,
    /// Upper bound of one backoff sleep (full jitter: each sleep is uniform in 0..bound).
    pub max_backoff_seconds: f64,
    /// Another Route53 endpoint (tests, other partitions).
    pub endpoint_url: Option<String>,
    /// Signing region; default: the instance's region, else us-east-1 (Route53 is global).
    pub region: Option<String>,
    /// Static credentials; default: the standard AWS chain (instance profile through IMDS).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            hosted_zone_id: None,
            zone_name: None,
            private_zone: None,
            record_name: DEFAULT_RECORD_NAME.to_string(),
            types: OneOrMany::One(AddrType::A),
            records: Vec::new(),
            ttl: 60,
            wait_for_sync: false,
            deregister_on_shutdown: false,
            budget_seconds: 120,
            shutdown_budget_seconds: 30,
            max_backoff_seconds: DEFAULT_MAX_BACKOFF,
            endpoint_url: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

pub const DEFAULT_RECORD_NAME: &str = "{{ hostname }}.{{ zone_name }}";
/// Full-jitter sleeps average half of this once backoff has grown: 200 throttled
/// clients then offer ~40 requests/s against a 5/s limit, enough to keep it busy
/// without letting the last clients sleep long after the limit has freed up.
pub const DEFAULT_MAX_BACKOFF: f64 = 10.0;

#[derive(Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

#[derive(Deserialize, JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExtraRecord {
    /// Record name template, e.g. `{{ instance_id }}.{{ zone_name }}`.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ExtraType,
    /// One value or a list (CNAME: exactly one). TXT values are quoted for you.
    #[serde(alias = "values")]
    pub value: OneOrMany<String>,
    /// Default: the section's `ttl`.
    pub ttl: Option<u32>,
}

#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraType {
    #[serde(rename = "CNAME")]
    Cname,
    #[serde(rename = "TXT")]
    Txt,
}

/// One record set as sent to (and compared with) Route53.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// Fully qualified, lower case, with the trailing dot.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ttl: i64,
    pub values: Vec<String>,
}

/// The zone the records go into, as far as it is known before any request.
#[derive(Clone, Debug, PartialEq)]
pub enum ZoneRef {
    /// Id known; name given too, or not needed.
    Id { id: String, name: Option<String> },
    /// Only the name: look the id up (ListHostedZonesByName).
    Name { name: String, private: Option<bool> },
}

impl Section {
    /// Everything that can be checked without a request.
    pub fn check(&self) -> Result<(), ModuleError> {
        let invalid = |m: String| Err(ModuleError::Invalid(format!("route53: {m}")));
        if self.hosted_zone_id.as_deref().is_none_or(str::is_empty)
            && self.zone_name.as_deref().is_none_or(str::is_empty)
        {
            return invalid("set `hosted_zone_id` or `zone_name`".into());
        }
        if self.types.to_vec().is_empty() {
            return invalid("`type` is empty: use A, AAAA or [A, AAAA]".into());
        }
        // Route53 accepts TTLs up to 2^31-1 seconds.
        if self.ttl > i32::MAX as u32 || self.records.iter().any(|r| r.ttl > Some(i32::MAX as u32))
        {
            return invalid(format!("`ttl` must be at most {}", i32::MAX));
        }
        if self.shutdown_budget_seconds == 0 {
            return invalid("`shutdown_budget_seconds` must be > 0".into());
        }
        self.access()
            .check()
            .map_err(|e| ModuleError::Invalid(format!("route53: {e}")))?;
        for r in &self.records {
            let n = r.value.to_vec().len();
            if n == 0 || (r.kind == ExtraType::Cname && n != 1) {
                return invalid(format!(
                    "record `{}`: a CNAME takes exactly one value, a TXT at least one",
                    r.name
                ));
            }
        }
        Ok(())
    }

    pub fn zone_ref(&self) -> ZoneRef {
        let name = self
            .zone_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(normalize_zone);
        match self.hosted_zone_id.as_deref().filter(|i| !i.is_empty()) {
            Some(id) => ZoneRef::Id {
                id: bare_zone_id(id).to_string(),
                name,
            },
            None => ZoneRef::Name {
                name: name.unwrap_or_default(),
                private: self.private_zone,
            },
        }
    }

    /// True when some template refers to `zone_name` (then an id-only config
    /// needs the zone's name from GetHostedZone).
    pub fn uses_zone_name(&self) -> bool {
        std::iter::once(&self.record_name)
            .chain(self.records.iter().map(|r| &r.name))
            .chain(self.records.iter().flat_map(|r| match &r.value {
                OneOrMany::One(v) => std::slice::from_ref(v).iter(),
                OneOrMany::Many(v) => v.iter(),
            }))
            .any(|t| t.contains("zone_name"))
    }

    /// The keys every AWS-calling section has.
    pub fn access(&self) -> stoke_aws::Access<'_> {
        stoke_aws::Access {
            endpoint_url: self.endpoint_url.as_deref(),
            access_key_id: self.access_key_id.as_deref(),
            secret_access_key: self.secret_access_key.as_deref(),
            session_token: self.session_token.as_deref(),
            budget_seconds: self.budget_seconds,
            max_backoff_seconds: self.max_backoff_seconds,
        }
    }

    /// The record sets this instance should own, for a zone named `zone_name`
    /// (without the trailing dot; `None` when unknown and not needed).
    pub fn record_sets(
        &self,
        instance: &InstanceData,
        vars: &BTreeMap<String, String>,
        zone_name: Option<&str>,
    ) -> Result<Vec<RecordSet>, ModuleError> {
        let mut vars = vars.clone();
        if let Some(z) = zone_name {
            vars.insert("zone_name".into(), z.trim_end_matches('.').to_string());
        }
        let ttl = i64::from(self.ttl);
        let name = fqdn(&render(&self.record_name, &vars)?, zone_name)?;
        let mut sets = Vec::new();
        for t in dedup(self.types.to_vec()) {
            let (kind, value) = match t {
                AddrType::A => ("A", address_v4(instance)?),
                AddrType::Aaaa => ("AAAA", address_v6(instance)?),
            };
            sets.push(RecordSet {
                name: name.clone(),
                kind: kind.into(),
                ttl,
                values: vec![value],
            });
        }
        for r in &self.records {
            let values = r
                .value
                .to_vec()
                .iter()
                .map(|v| render(v, &vars))
                .collect::<Result<Vec<_>, _>>()?;
            let (kind, values) = match r.kind {
                ExtraType::Cname => ("CNAME", values),
                ExtraType::Txt => ("TXT", values.iter().map(|v| txt_value(v)).collect()),
            };
            sets.push(RecordSet {
                name: fqdn(&render(&r.name, &vars)?, zone_name)?,
                kind: kind.into(),
                ttl: r.ttl.map_or(ttl, i64::from),
                values,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &sets {
            if !seen.insert((s.name.clone(), s.kind.clone())) {
                return Err(ModuleError::Invalid(format!(
                    "route53: two records named {} of type {}: give each name/type once",
                    s.name, s.kind
                )));
            }
        }
        Ok(sets)
    }
}

fn dedup(types: Vec<AddrType>) -> Vec<AddrType> {
    let mut out = Vec::new();
    for t in types {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn address_v4(instance: &InstanceData) -> Result<String, ModuleError> {
    let raw = instance.local_ipv4.as_deref().ok_or_else(|| {
        ModuleError::Invalid(
            "route53: type A needs the instance's local-ipv4, and the metadata has none".into(),
        )
    })?;
    raw.trim()
        .parse::<Ipv4Addr>()
        .map(|a| a.to_string())
        .map_err(|_| {
            ModuleError::Other(format!(
                "route53: metadata local-ipv4 {raw:?} is not an IPv4 address"
            ))
        })
}

/// The primary interface's IPv6 (`local-ipv6`), else the instance's `ipv6`.
fn address_v6(instance: &InstanceData) -> Result<String, ModuleError> {
    let raw = instance
        .local_ipv6
        .as_deref()
        .or(instance.ipv6.as_deref())
        .ok_or_else(|| {
            ModuleError::Invalid(
                "route53: type AAAA needs the instance's IPv6 address, and the metadata has none \
                 (use `type: A`, or give the instance an IPv6 address)"
                    .into(),
            )
        })?;
    raw.trim()
        .parse::<Ipv6Addr>()
        .map(|a| a.to_string())
        .map_err(|_| {
            ModuleError::Other(format!(
                "route53: metadata ipv6 {raw:?} is not an IPv6 address"
            ))
        })
}

/// A zone name as Route53 spells it: lower case, trailing dot.
pub fn normalize_zone(name: &str) -> String {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    format!("{n}.")
}

/// `Z123` from `/hostedzone/Z123` or `Z123`.
pub fn bare_zone_id(id: &str) -> &str {
    id.trim().trim_start_matches("/hostedzone/")
}

/// A rendered record name as a checked FQDN (lower case, trailing dot), inside
/// the zone when the zone's name is known.
fn fqdn(rendered: &str, zone_name: Option<&str>) -> Result<String, ModuleError> {
    let bad = |why: &str| {
        Err(ModuleError::Invalid(format!(
            "route53: record name {rendered:?} {why}"
        )))
    };
    let name = normalize_zone(rendered);
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    if name == "." || labels.iter().any(|l| l.is_empty()) {
        return bad("has an empty label");
    }
    if labels.iter().any(|l| l.len() > 63) || name.len() > 254 {
        return bad("is too long for DNS (labels ≤ 63, name ≤ 253 characters)");
    }
    if let Some(zone) = zone_name {
        let zone = normalize_zone(zone);
        if name != zone && !name.ends_with(&format!(".{zone}")) {
            return bad(&format!(
                "is not inside the hosted zone {zone}: fix `record_name` or the zone"
            ));
        }
    }
    Ok(name)
}

/// A TXT value as Route53 wants it: quoted strings of at most 255 bytes each.
/// A value the user already quoted is passed through.
pub fn txt_value(v: &str) -> String {
    if v.starts_with('"') && v.ends_with('"') && v.len() >= 2 {
        return v.to_string();
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    for c in v.chars() {
        if cur.len() + c.len_utf8() > 255 {
            parts.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> Section {
        let c: Route53Config =
            serde_saphyr::from_str_with_options(yaml, stoke_api::yaml_options()).unwrap();
        c.route53.unwrap()
    }

    fn instance() -> InstanceData {
        InstanceData {
            datasource: "ec2".into(),
            instance_id: "i-0abc".parse().unwrap(),
            local_ipv4: Some("10.0.0.5".into()),
            ipv6: Some("2001:db8::5".into()),
            ..Default::default()
        }
    }

    fn vars() -> BTreeMap<String, String> {
        let mut v = instance().vars();
        v.insert("hostname".into(), "web1".into());
        v
    }

    #[test]
    fn record_types_and_the_primary_interfaces_ipv6() {
        let s = section("route53:\n  zone_name: example.com\n  record_types: [A, AAAA]\n");
        let mut i = instance();
        i.local_ipv6 = Some("2600:1f18::30".into());
        let sets = s.record_sets(&i, &vars(), Some("example.com")).unwrap();
        let got: Vec<(&str, &str)> = sets
            .iter()
            .map(|r| (r.kind.as_str(), r.values[0].as_str()))
            .collect();
        // local-ipv6 (the primary interface's) before the instance-level ipv6.
        assert_eq!(got, [("A", "10.0.0.5"), ("AAAA", "2600:1f18::30")]);
    }

    #[test]
    fn defaults_render_an_a_record_in_the_zone() {
        let s = section("route53:\n  zone_name: Example.COM\n");
        s.check().unwrap();
        assert_eq!(
            s.zone_ref(),
            ZoneRef::Name {
                name: "example.com.".into(),
                private: None
            }
        );
        let sets = s
            .record_sets(&instance(), &vars(), Some("example.com."))
            .unwrap();
        assert_eq!(
            sets,
            vec![RecordSet {
                name: "web1.example.com.".into(),
                kind: "A".into(),
                ttl: 60,
                values: vec!["10.0.0.5".into()]
            }]
        );
    }

    #[test]
    fn both_types_extras_and_txt_quoting() {
        let s = section(
            "route53:\n  hosted_zone_id: /hostedzone/Z1\n  type: [A, AAAA]\n  ttl: 30\n  records:\n    - {name: '{{ instance_id }}.{{ zone_name }}', type: TXT, value: 'id {{ instance_id }}'}\n    - {name: 'www.{{ zone_name }}', type: CNAME, value: '{{ hostname }}.{{ zone_name }}', ttl: 300}\n",
        );
        s.check().unwrap();
        assert!(s.uses_zone_name());
        assert_eq!(
            s.zone_ref(),
            ZoneRef::Id {
                id: "Z1".into(),
                name: None
            }
        );
        let sets = s
            .record_sets(&instance(), &vars(), Some("example.com"))
            .unwrap();
        let kinds: Vec<_> = sets.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["A", "AAAA", "TXT", "CNAME"]);
        assert_eq!(sets[1].values, ["2001:db8::5"]);
        assert_eq!(sets[2].name, "i-0abc.example.com.");
        assert_eq!(sets[2].values, ["\"id i-0abc\""]);
        assert_eq!(sets[3].values, ["web1.example.com"]);
        assert_eq!((sets[0].ttl, sets[3].ttl), (30, 300));
    }

    #[test]
    fn typos_and_bad_combinations_are_config_errors() {
        let spec = stoke_api::config_spec::<Route53Config>();
        let err = (spec.validate)("route53:\n  zone_name: a.b\n  tll: 5\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("did you mean `ttl`"), "{err}");
        assert!((spec.validate)("route53:\n  type: MX\n").is_err());
        assert!(section("route53: {}\n").check().is_err());
        assert!(
            section("route53:\n  zone_name: a.b\n  access_key_id: x\n")
                .check()
                .is_err()
        );
        assert!(
            section(
                "route53:\n  zone_name: a.b\n  records: [{name: x, type: CNAME, value: [a, b]}]\n"
            )
            .check()
            .is_err()
        );
    }

    #[test]
    fn names_outside_the_zone_or_missing_addresses_fail_early() {
        let s = section(
            "route53:\n  zone_name: example.com\n  record_name: '{{ hostname }}.other.org'\n",
        );
        let err = s
            .record_sets(&instance(), &vars(), Some("example.com"))
            .unwrap_err();
        assert!(
            err.to_string().contains("not inside the hosted zone"),
            "{err}"
        );
        let s = section("route53:\n  zone_name: example.com\n  type: AAAA\n");
        let no_v6 = InstanceData {
            ipv6: None,
            ..instance()
        };
        let err = s
            .record_sets(&no_v6, &vars(), Some("example.com"))
            .unwrap_err();
        assert!(err.to_string().contains("IPv6"), "{err}");
        let s = section(
            "route53:\n  zone_name: example.com\n  record_name: '{{ hostnam }}.{{ zone_name }}'\n",
        );
        let err = s
            .record_sets(&instance(), &vars(), Some("example.com"))
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown variable `hostnam`"),
            "{err}"
        );
    }

    #[test]
    fn long_txt_is_split_into_quoted_strings() {
        let v = "x".repeat(300);
        let t = txt_value(&v);
        assert_eq!(t, format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45)));
        assert_eq!(txt_value("a\"b"), "\"a\\\"b\"");
        assert_eq!(txt_value("\"pre\""), "\"pre\"");
    }
}
