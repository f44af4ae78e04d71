//! The `puppet:` section: stoke's own keys and the cloud-init keys that map cleanly.
//!
//! cloud-init keys that would make stoke install software, start services or
//! write certificates are rejected with a message at load time (with line:col),
//! never silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Default blocking timeout: 30 minutes.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;
/// Default bound on waiting for another Puppet run's lock: 5 minutes.
pub const DEFAULT_WAIT_FOR_LOCK_SECS: u64 = 5 * 60;
/// Upper bounds, so that the module's own timeout stays the real bound of a boot.
pub const MAX_TIMEOUT_SECS: u64 = 6 * 60 * 60;
pub const MAX_WAIT_FOR_LOCK_SECS: u64 = 60 * 60;

/// The module's top-level keys.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PuppetConfig {
    /// The boot-time Puppet run. Absent: nothing to do.
    pub puppet: Option<Puppet>,
}

/// How the delta run is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "ModeRepr")]
pub enum Mode {
    /// The network stage waits for the run; failure fails the module.
    Blocking,
    /// Started in the final stage; boot does not wait; result in `background.json`.
    NonBlocking,
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Blocking => "blocking",
            Mode::NonBlocking => "non-blocking",
            Mode::Off => "off",
        }
    }
}

/// `mode: off` is a YAML 1.1 boolean (false) by the time it reaches us, so the
/// booleans are accepted too: false = off, true = blocking.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum ModeRepr {
    Bool(bool),
    Name(ModeName),
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum ModeName {
    Blocking,
    NonBlocking,
    Off,
}

impl TryFrom<ModeRepr> for Mode {
    type Error = String;
    fn try_from(r: ModeRepr) -> Result<Self, String> {
        Ok(match r {
            ModeRepr::Bool(false) | ModeRepr::Name(ModeName::Off) => Mode::Off,
            ModeRepr::Bool(true) | ModeRepr::Name(ModeName::Blocking) => Mode::Blocking,
            ModeRepr::Name(ModeName::NonBlocking) => Mode::NonBlocking,
        })
    }
}

/// A command line: a list, or a string split on whitespace (no shell quoting).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Argv {
    Line(String),
    List(Vec<String>),
}

impl Argv {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Argv::Line(s) => s.split_whitespace().map(str::to_string).collect(),
            Argv::List(v) => v.clone(),
        }
    }
}

/// A puppet.conf or csr_attributes value as YAML gives it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

/// One entry of cloud-init's `conf`: a puppet.conf section's settings, or
/// (cloud-init's `ca_cert`) text, which is rejected with a message.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ConfEntry {
    Settings(BTreeMap<String, Scalar>),
    Text(String),
}

impl ConfEntry {
    pub fn settings(&self) -> Option<&BTreeMap<String, Scalar>> {
        match self {
            ConfEntry::Settings(s) => Some(s),
            ConfEntry::Text(_) => None,
        }
    }
}

/// cloud-init's `install_type`: only which paths an existing install uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstallType {
    /// Distribution packages: `puppet`, /etc/puppet.
    Packages,
    /// Puppet's all-in-one package: /opt/puppetlabs/bin/puppet, /etc/puppetlabs/puppet.
    Aio,
}

/// cloud-init's `csr_attributes`, written to csr_attributes.yaml.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CsrAttributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_attributes: BTreeMap<String, Scalar>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extension_requests: BTreeMap<String, Scalar>,
}

/// The `puppet:` section as written (every key, before cross-key checks).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PuppetKeys {
    /// blocking | non-blocking | off. Default: blocking when the section is
    /// present (or `off` when cloud-init's `exec: false` is given).
    pub mode: Option<Mode>,
    /// The command (list, or a string split on whitespace). A first word
    /// `puppet` is the `puppet` tool (config `tools:`). Default:
    /// `puppet agent --onetime --no-daemonize --detailed-exitcodes --verbose`.
    pub command: Option<Argv>,
    /// Appended to the command.
    pub extra_args: Vec<String>,
    /// `--environment` for this run.
    pub environment: Option<String>,
    /// `--server` for this run.
    pub server: Option<String>,
    /// `--certname` for this run: a template (`{{ hostname }}`, `{{ instance_id }}`...), lowercased.
    pub certname: Option<String>,
    /// Seconds; the run is killed past it (both modes). Default 1800.
    pub timeout: Option<u64>,
    /// Seconds to wait (blocking mode) while another Puppet run holds the agent lock. Default 300; 0: fail at once.
    pub wait_for_lock: Option<u64>,
    /// The agent lock file. Default: the AIO and the Debian locations.
    pub lock_file: Option<String>,

    // cloud-init keys.
    /// cloud-init: run `puppet agent` (true: blocking, false: off).
    pub exec: Option<bool>,
    /// cloud-init: arguments to `puppet agent` (default there: `--test`).
    pub exec_args: Option<Argv>,
    /// cloud-init: only `false` (stoke runs a baked Puppet, it does not install one).
    #[serde(deserialize_with = "install")]
    #[schemars(with = "Option<bool>")]
    pub install: Option<bool>,
    /// cloud-init: `packages` or `aio`, selecting paths of the baked install.
    pub install_type: Option<InstallType>,
    /// cloud-init: puppet.conf to edit for `conf`.
    pub conf_file: Option<String>,
    /// cloud-init: puppet.conf settings by section; only the named keys are
    /// changed, the rest of the file is kept. `certname` expands `%i`, `%f` and templates.
    pub conf: Option<BTreeMap<String, ConfEntry>>,
    /// cloud-init: where `csr_attributes` is written.
    pub csr_attributes_path: Option<String>,
    pub csr_attributes: Option<CsrAttributes>,
    /// cloud-init: only `false` (stoke does not enable or start puppet.service).
    #[serde(deserialize_with = "start_service")]
    #[schemars(with = "Option<bool>")]
    pub start_service: Option<bool>,
    #[serde(deserialize_with = "install_only")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub version: Option<serde_json::Value>,
    #[serde(deserialize_with = "install_only")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub collection: Option<serde_json::Value>,
    #[serde(deserialize_with = "install_only")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub aio_install_url: Option<serde_json::Value>,
    #[serde(deserialize_with = "install_only")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub cleanup: Option<serde_json::Value>,
    #[serde(deserialize_with = "install_only")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub package_name: Option<serde_json::Value>,
    #[serde(deserialize_with = "ssl_dir")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub ssl_dir: Option<serde_json::Value>,
}

fn install<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match bool::deserialize(d)? {
        true => Err(serde::de::Error::custom(
            "puppet.install: true is not supported: stoke does not install Puppet; \
             bake it into the image and set `install: false` (or remove the key)",
        )),
        false => Ok(Some(false)),
    }
}

fn start_service<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match bool::deserialize(d)? {
        true => Err(serde::de::Error::custom(
            "puppet.start_service: true is not supported: stoke does not enable or start \
             puppet.service; enable it in the image, or set `start_service: false`",
        )),
        false => Ok(Some(false)),
    }
}

fn install_only<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    let _ = serde::de::IgnoredAny::deserialize(d)?;
    Err(serde::de::Error::custom(
        "this puppet key only applies to installing Puppet, which stoke does not do \
         (bake Puppet into the image); remove it",
    ))
}

fn ssl_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    let _ = serde::de::IgnoredAny::deserialize(d)?;
    Err(serde::de::Error::custom(
        "puppet.ssl_dir is only used to write conf.ca_cert, which stoke does not do; remove it",
    ))
}

/// The checked `puppet:` section.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(try_from = "PuppetKeys")]
pub struct Puppet(pub PuppetKeys);

impl TryFrom<PuppetKeys> for Puppet {
    type Error = String;
    fn try_from(k: PuppetKeys) -> Result<Self, String> {
        if let (Some(mode), Some(exec)) = (k.mode, k.exec)
            && (mode == Mode::Off) == exec
        {
            return Err(format!(
                "puppet: `mode: {}` and cloud-init's `exec: {exec}` disagree; keep one",
                mode.as_str()
            ));
        }
        if k.command.is_some() && k.exec_args.is_some() {
            return Err(
                "puppet: give either `command` or cloud-init's `exec_args` (arguments to \
                 `puppet agent`), not both"
                    .into(),
            );
        }
        if let Some(c) = &k.command
            && c.to_vec().is_empty()
        {
            return Err("puppet.command is empty".into());
        }
        if let Some(t) = k.timeout
            && !(1..=MAX_TIMEOUT_SECS).contains(&t)
        {
            return Err(format!(
                "puppet.timeout is {t} s; it must be between 1 and {MAX_TIMEOUT_SECS} seconds"
            ));
        }
        if let Some(w) = k.wait_for_lock
            && w > MAX_WAIT_FOR_LOCK_SECS
        {
            return Err(format!(
                "puppet.wait_for_lock is {w} s; at most {MAX_WAIT_FOR_LOCK_SECS} seconds"
            ));
        }
        if let Some(conf) = &k.conf {
            if conf.contains_key("ca_cert") {
                return Err(
                    "puppet.conf.ca_cert is not supported: stoke does not write \
                            Puppet's CA certificate; bake it into the image or let the agent \
                            fetch it on first contact"
                        .into(),
                );
            }
            for (section, entry) in conf {
                let Some(settings) = entry.settings() else {
                    return Err(format!(
                        "puppet.conf.{section} must be a mapping of puppet.conf settings"
                    ));
                };
                for name in std::iter::once(section).chain(settings.keys()) {
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!(
                            "puppet.conf: `{name}` is not a puppet.conf section or setting name"
                        ));
                    }
                }
                for (key, value) in settings {
                    if value.to_string().contains('\n') {
                        return Err(format!(
                            "puppet.conf.{section}.{key}: a value must be one line"
                        ));
                    }
                }
            }
        }
        Ok(Puppet(k))
    }
}

impl Puppet {
    /// The mode in effect: `mode`, else cloud-init's `exec`, else blocking.
    pub fn mode(&self) -> Mode {
        match (self.0.mode, self.0.exec) {
            (Some(m), _) => m,
            (None, Some(false)) => Mode::Off,
            (None, _) => Mode::Blocking,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<PuppetConfig, stoke_api::ConfigError> {
        serde_saphyr::from_str_with_options::<PuppetConfig>(yaml, stoke_api::yaml_options())
            .map_err(|e| stoke_api::ConfigError::from_yaml(&e))
    }

    #[test]
    fn loader_accepts_stoke_and_cloud_init_keys() {
        let spec = stoke_api::config_spec::<PuppetConfig>();
        assert_eq!((spec.keys)(), &["puppet"]);
        (spec.validate)(
            "hostname: x\npuppet:\n  mode: non-blocking\n  server: puppet.example\n  \
             certname: '{{ hostname }}'\n  timeout: 600\n  extra_args: [--noop]\n  \
             install: false\n  start_service: no\n  install_type: aio\n  conf:\n    agent:\n      \
             splay: true\n      runinterval: 30m\n  csr_attributes:\n    extension_requests:\n      \
             pp_role: web\n",
        )
        .unwrap();
        let c = parse("puppet:\n  mode: off\n").unwrap();
        assert_eq!(c.puppet.unwrap().mode(), Mode::Off, "YAML 1.1 `off`");
        let c = parse("puppet: {}\n").unwrap();
        assert_eq!(c.puppet.unwrap().mode(), Mode::Blocking, "section present");
        let c = parse("puppet:\n  exec: false\n").unwrap();
        assert_eq!(
            c.puppet.unwrap().mode(),
            Mode::Off,
            "cloud-init exec: false"
        );
        assert!(parse("other: 1\n").unwrap().puppet.is_none());
    }

    #[test]
    fn unsupported_cloud_init_keys_are_rejected_with_a_reason_and_location() {
        let err = parse("puppet:\n  exec: true\n  install: true\n").unwrap_err();
        assert!(err.message.contains("does not install Puppet"), "{err}");
        assert_eq!(err.line, Some(3), "{err}");
        let err = parse("puppet:\n  version: '7.1'\n").unwrap_err();
        assert!(err.message.contains("only applies to installing"), "{err}");
        let err = parse("puppet:\n  start_service: true\n").unwrap_err();
        assert!(err.message.contains("puppet.service"), "{err}");
        let err = parse("puppet:\n  ssl_dir: /x\n").unwrap_err();
        assert!(err.message.contains("ca_cert"), "{err}");
        let err = parse("puppet:\n  conf:\n    ca_cert: |\n      PEM\n").unwrap_err();
        assert!(err.message.contains("CA certificate"), "{err}");
        let err = parse("puppet:\n  servr: x\n").unwrap_err();
        assert!(err.message.contains("did you mean `server`"), "{err}");
    }

    #[test]
    fn json_schema_names_the_keys() {
        let mut g = schemars::SchemaGenerator::default();
        let schema = (stoke_api::config_spec::<PuppetConfig>().schema)(&mut g);
        let text = format!("{}{}", serde_json::to_string(&schema).unwrap(), {
            let defs: Vec<String> = g.definitions().keys().cloned().collect();
            serde_json::to_string(&g.definitions()).unwrap() + &defs.join(",")
        });
        for key in [
            "wait_for_lock",
            "exec_args",
            "non-blocking",
            "csr_attributes",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn cross_key_conflicts_are_errors() {
        let err = parse("puppet:\n  mode: off\n  exec: true\n").unwrap_err();
        assert!(err.message.contains("disagree"), "{err}");
        let err = parse("puppet:\n  command: puppet agent -t\n  exec_args: [-t]\n").unwrap_err();
        assert!(err.message.contains("not both"), "{err}");
        let err = parse("puppet:\n  timeout: 0\n").unwrap_err();
        assert!(err.message.contains("between 1"), "{err}");
        let err = parse("puppet:\n  command: []\n").unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
        let err = parse("puppet:\n  conf:\n    'agent]': {a: b}\n").unwrap_err();
        assert!(err.message.contains("not a puppet.conf"), "{err}");
    }

    #[test]
    fn json_from_the_merged_config_reads_the_same() {
        // The engine hands modules JSON: YAML `off` arrives as `false`.
        let c: PuppetConfig = serde_json::from_value(serde_json::json!({
            "puppet": {"mode": false, "conf": {"agent": {"splay": true, "port": 8140}}}
        }))
        .unwrap();
        let p = c.puppet.unwrap();
        assert_eq!(p.mode(), Mode::Off);
        let agent = p.0.conf.as_ref().unwrap()["agent"].settings().unwrap();
        assert_eq!(agent["splay"].to_string(), "true");
        assert_eq!(agent["port"].to_string(), "8140");
        let err = serde_json::from_value::<PuppetConfig>(
            serde_json::json!({"puppet": {"install": true}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not install"), "{err}");
    }
}
