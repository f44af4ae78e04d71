//! `checks:`: named acceptance checks. A map by name (not a list) so that the image's
//! layers merge them as they merge everything else: a later layer adds checks, or
//! replaces one by giving its name again.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stoke_api::Stage;

/// The module's top-level keys.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ChecksConfig {
    /// Acceptance checks by name (docs/ready.md). A failed `error` check fails the boot.
    pub checks: Option<BTreeMap<String, Check>>,
}

/// A check, read and found well-formed (one kind, only that kind's options, patterns that
/// compile): a wrong one is a config error at load time, with its line.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(try_from = "CheckSpec")]
pub struct Check(pub CheckSpec);

impl TryFrom<CheckSpec> for Check {
    type Error = String;
    fn try_from(spec: CheckSpec) -> Result<Self, String> {
        spec.kind()?;
        Ok(Check(spec))
    }
}

impl std::ops::Deref for Check {
    type Target = CheckSpec;
    fn deref(&self) -> &CheckSpec {
        &self.0
    }
}

/// One check: exactly one kind key (`file`, `service`, `command`, `port`, `mount`, `user`,
/// `group`, `package`) and that kind's options.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// A path: exists (or not, with `exists: false`), of `type`, `mode`, `owner`, `contains`.
    pub file: Option<String>,
    /// A systemd unit (`.service` may be left out): `active`, `enabled`.
    pub service: Option<String>,
    /// A program and its arguments (no shell): `exit_status`, `stdout`, `timeout_seconds`.
    pub command: Option<Vec<String>>,
    /// A TCP port something listens on (IPv4 or IPv6, any address).
    pub port: Option<u16>,
    /// A mount point: mounted (or not), `fstype`, `options`.
    pub mount: Option<String>,
    /// A local account: exists (or not), member of `groups`.
    pub user: Option<String>,
    /// A local group: exists (or not).
    pub group: Option<String>,
    /// A package: installed (or not), asked of dpkg-query or rpm.
    pub package: Option<String>,

    /// file, mount, user, group, package: whether it must be there (default true).
    pub exists: Option<bool>,
    /// file: `file`, `directory` or `symlink`.
    #[serde(rename = "type")]
    pub file_type: Option<FileType>,
    /// file: the permission bits, e.g. `"0644"` (quote it, or YAML 1.1 reads 0644 as octal: both work).
    pub mode: Option<Mode>,
    /// file: `user` or `user:group`.
    pub owner: Option<String>,
    /// file: a regular expression some line of the file matches.
    pub contains: Option<String>,
    /// service: the unit is active (default true).
    pub active: Option<bool>,
    /// service: the unit is enabled.
    pub enabled: Option<bool>,
    /// command: the exit status expected (default 0).
    pub exit_status: Option<i32>,
    /// command: a regular expression its standard output matches.
    pub stdout: Option<String>,
    /// command: seconds before it is killed and the check fails (default 30).
    pub timeout_seconds: Option<u64>,
    /// mount: the filesystem type.
    pub fstype: Option<String>,
    /// mount: options the mount must have (`noatime`, `ro`).
    pub options: Option<Vec<String>>,
    /// user: groups it must be a member of.
    pub groups: Option<Vec<String>>,

    /// When it runs at boot: at the end of this stage (default final, after every module).
    pub stage: Option<Stage>,
    /// `false`: only at boot, never by `stoke verify` (it needs an instance of the finished
    /// image: its data volume, its DNS name). Default true.
    pub verify: Option<bool>,
    /// `error` (default): a failure fails the boot; `warning`: it makes the boot degraded.
    pub severity: Option<Severity>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Directory,
    Symlink,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warning,
}

/// The kind of a check, with its subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    File(&'a str),
    Service(&'a str),
    Command(&'a [String]),
    Port(u16),
    Mount(&'a str),
    User(&'a str),
    Group(&'a str),
    Package(&'a str),
}

impl Kind<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Service(_) => "service",
            Kind::Command(_) => "command",
            Kind::Port(_) => "port",
            Kind::Mount(_) => "mount",
            Kind::User(_) => "user",
            Kind::Group(_) => "group",
            Kind::Package(_) => "package",
        }
    }
}

/// Permission bits: `"0644"` (octal text) or a YAML 1.1 octal number (`0644`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(into = "String")]
#[schemars(with = "serde_json::Value")]
pub struct Mode(pub u32);

impl From<Mode> for String {
    fn from(m: Mode) -> String {
        format!("{:04o}", m.0)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u32),
            Text(String),
        }
        let bits = match Repr::deserialize(d)? {
            Repr::Number(n) => n,
            Repr::Text(t) => {
                u32::from_str_radix(t.trim().trim_start_matches("0o"), 8).map_err(|_| {
                    serde::de::Error::custom(format!("mode `{t}` is not octal (e.g. \"0644\")"))
                })?
            }
        };
        if bits > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "mode {bits:o} is more than 7777"
            )));
        }
        Ok(Mode(bits))
    }
}

impl CheckSpec {
    /// The check's one kind, or what is wrong with it (none, several, options of another kind).
    pub fn kind(&self) -> Result<Kind<'_>, String> {
        let mut kinds = Vec::new();
        if let Some(p) = &self.file {
            kinds.push(Kind::File(p));
        }
        if let Some(s) = &self.service {
            kinds.push(Kind::Service(s));
        }
        if let Some(c) = &self.command {
            kinds.push(Kind::Command(c));
        }
        if let Some(p) = self.port {
            kinds.push(Kind::Port(p));
        }
        if let Some(m) = &self.mount {
            kinds.push(Kind::Mount(m));
        }
        if let Some(u) = &self.user {
            kinds.push(Kind::User(u));
        }
        if let Some(g) = &self.group {
            kinds.push(Kind::Group(g));
        }
        if let Some(p) = &self.package {
            kinds.push(Kind::Package(p));
        }
        let kind = match kinds.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(
                    "needs one of file, service, command, port, mount, user, group, \
                            package"
                        .into(),
                );
            }
            several => {
                let names: Vec<&str> = several.iter().map(Kind::name).collect();
                return Err(format!(
                    "has several kinds ({}); give each its own check",
                    names.join(", ")
                ));
            }
        };
        let options: [(&str, bool, &[&str]); 13] = [
            (
                "exists",
                self.exists.is_some(),
                &["file", "mount", "user", "group", "package"],
            ),
            ("type", self.file_type.is_some(), &["file"]),
            ("mode", self.mode.is_some(), &["file"]),
            ("owner", self.owner.is_some(), &["file"]),
            ("contains", self.contains.is_some(), &["file"]),
            ("active", self.active.is_some(), &["service"]),
            ("enabled", self.enabled.is_some(), &["service"]),
            ("exit_status", self.exit_status.is_some(), &["command"]),
            ("stdout", self.stdout.is_some(), &["command"]),
            (
                "timeout_seconds",
                self.timeout_seconds.is_some(),
                &["command"],
            ),
            ("fstype", self.fstype.is_some(), &["mount"]),
            ("options", self.options.is_some(), &["mount"]),
            ("groups", self.groups.is_some(), &["user"]),
        ];
        for (option, given, kinds) in options {
            if given && !kinds.contains(&kind.name()) {
                return Err(format!(
                    "`{option}` does not apply to a {} check (it is for: {})",
                    kind.name(),
                    kinds.join(", ")
                ));
            }
        }
        if let Kind::Command([]) = kind {
            return Err("command: give the program and its arguments".into());
        }
        for (what, pattern) in [("contains", &self.contains), ("stdout", &self.stdout)] {
            if let Some(p) = pattern {
                regex_lite::Regex::new(p).map_err(|e| format!("{what}: {e}"))?;
            }
        }
        Ok(kind)
    }

    pub fn stage(&self) -> Stage {
        self.stage.unwrap_or(Stage::Final)
    }

    pub fn severity(&self) -> Severity {
        self.severity.unwrap_or_default()
    }
}
