//! Package sources, written before `packages` runs (cloud-init's config stage):
//!
//! - `apt-sources`: cloud-init's `apt: {sources: {NAME: {source, key, filename, append}}}`
//!   and `apt: {conf, proxy, http_proxy, https_proxy, ftp_proxy}`. An inline `key` (an
//!   armored OpenPGP public key) is written as `.asc` (apt reads armored keys by that
//!   extension: no gpg needed): `$KEY_FILE` in `source` names it
//!   (`[signed-by=$KEY_FILE]`), otherwise it goes to `/etc/apt/trusted.gpg.d/`, as
//!   cloud-init does. `$RELEASE` is the root's `VERSION_CODENAME`.
//! - `yum-repos`: cloud-init's `yum_repos: {ID: {baseurl, ...}}` as `ID.repo` in
//!   `yum_repo_dir` (default `/etc/yum.repos.d`); an inline armored `gpgkey` is written
//!   to `/etc/pki/rpm-gpg/` and referred to by `file://`.
//!
//! Every entry is checked before anything is written; a bad one fails the module naming it.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, Stage, config_spec,
};

use crate::{open_root, plural, read_text, write_file};

const PGP_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const PGP_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AptConfig {
    /// apt sources, keys, configuration and proxy.
    pub apt: Option<AptSection>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AptSection {
    /// Extra sources by name.
    pub sources: BTreeMap<String, AptSource>,
    /// apt configuration text, written to `/etc/apt/apt.conf.d/94stoke-config`.
    pub conf: Option<String>,
    /// Proxy for http (same as `http_proxy`).
    pub proxy: Option<String>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub ftp_proxy: Option<String>,
    /// stoke never rewrites `sources.list`; `true` is accepted, `false` is a warning.
    pub preserve_sources_list: Option<bool>,
    /// cloud-init keys stoke does not implement (a warning each): mirrors and debconf.
    #[schemars(with = "Option<serde_json::Value>")]
    pub primary: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub security: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub sources_list: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub disable_suites: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub debconf_selections: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub add_apt_repo_match: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AptSource {
    /// A one-line source (`deb [signed-by=$KEY_FILE] http://... $RELEASE main`).
    pub source: Option<String>,
    /// An armored OpenPGP public key, inline.
    pub key: Option<String>,
    /// Fetching keys from a keyserver is not supported (give `key` inline).
    pub keyid: Option<String>,
    pub keyserver: Option<String>,
    /// File under `/etc/apt/sources.list.d/` (default `NAME.list`).
    pub filename: Option<String>,
    /// Add to a file other entries also name (default true); false replaces it.
    pub append: Option<bool>,
}

pub struct AptSources;

#[stoke_api::async_trait]
impl Module for AptSources {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "apt-sources",
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(30),
            config: config_spec::<AptConfig>(),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: AptConfig = ctx.config()?;
        let Some(apt) = cfg.apt else {
            return Ok(Report::new("no apt configuration"));
        };
        let dir = open_root(ctx)?;
        let release = os_release_value(
            &read_text(&dir, "/etc/os-release")
                .ok()
                .flatten()
                .unwrap_or_default(),
            "VERSION_CODENAME",
        );
        let files = plan_apt(&apt, release.as_deref()).map_err(ModuleError::Invalid)?;
        let mut written = Vec::new();
        for (path, data) in &files {
            write_file(ctx, &dir, path, data.as_bytes(), 0o644).map_err(ModuleError::Other)?;
            written.push(path.clone());
        }
        let mut report = Report::new(format!(
            "{} ({})",
            plural(apt.sources.len(), "source"),
            plural(written.len(), "file")
        ))
        .with_details(json!({ "written": written }));
        for (key, set) in [
            ("primary", apt.primary.is_some()),
            ("security", apt.security.is_some()),
            ("sources_list", apt.sources_list.is_some()),
            ("disable_suites", apt.disable_suites.is_some()),
            ("debconf_selections", apt.debconf_selections.is_some()),
            ("add_apt_repo_match", apt.add_apt_repo_match.is_some()),
            (
                "preserve_sources_list: false",
                apt.preserve_sources_list == Some(false),
            ),
        ] {
            if set {
                report.warn(format!("apt.{key} is not supported by stoke: ignored (sources.list is left as the image has it)"));
            }
        }
        Ok(report)
    }
}

/// `KEY=value` of an os-release text, unquoted.
pub(crate) fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
        })
        .filter(|v| !v.is_empty())
}

/// A name usable as a file name: letters, digits, `.`, `_`, `-`, not starting with `.`.
fn file_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// An armored OpenPGP public key block, whole.
fn check_pgp(key: &str, label: &str) -> Result<String, String> {
    let t = key.trim();
    if !(t.starts_with(PGP_BEGIN) && t.ends_with(PGP_END)) {
        return Err(format!(
            "{label}: not an armored OpenPGP public key ({PGP_BEGIN} ... {PGP_END})"
        ));
    }
    Ok(format!("{t}\n"))
}

/// Every file `apt:` asks for, as (instance path, content), in a stable order.
pub(crate) fn plan_apt(
    apt: &AptSection,
    release: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for (name, src) in &apt.sources {
        let label = format!("apt.sources.{name}");
        if src.keyid.is_some() || src.keyserver.is_some() {
            return Err(format!(
                "{label}: `keyid`/`keyserver` (fetching a key from a keyserver at boot) is not \
                 supported by stoke; give the armored key inline as `key`"
            ));
        }
        if !file_name_ok(name) {
            return Err(format!(
                "{label}: the name must be letters, digits, `.`, `_`, `-`"
            ));
        }
        let mut key_file = None;
        if let Some(key) = &src.key {
            let armored = check_pgp(key, &label)?;
            let wants_path = src
                .source
                .as_deref()
                .is_some_and(|s| s.contains("$KEY_FILE"));
            let path = if wants_path {
                format!("/etc/apt/keyrings/stoke-{name}.asc")
            } else {
                // No signed-by: trusted for every source, as cloud-init adds it.
                format!("/etc/apt/trusted.gpg.d/stoke-{name}.asc")
            };
            files.insert(path.clone(), armored);
            key_file = Some(path);
        }
        let Some(source) = src.source.as_deref() else {
            if src.key.is_none() {
                return Err(format!("{label}: neither `source` nor `key`"));
            }
            continue;
        };
        let line = source.trim();
        if line.starts_with("ppa:") {
            return Err(format!(
                "{label}: PPA sources (`ppa:`) are not supported by stoke; give the deb line and key"
            ));
        }
        if line.contains(['\n', '\r']) {
            return Err(format!("{label}: `source` must be one line"));
        }
        let mut line = line.to_string();
        if line.contains("$KEY_FILE") {
            let Some(k) = &key_file else {
                return Err(format!(
                    "{label}: `source` uses $KEY_FILE but no `key` is given"
                ));
            };
            line = line.replace("$KEY_FILE", k);
        }
        if line.contains("$RELEASE") {
            let Some(r) = release else {
                return Err(format!(
                    "{label}: `source` uses $RELEASE but the root's /etc/os-release has no VERSION_CODENAME"
                ));
            };
            line = line.replace("$RELEASE", r);
        }
        if let Some(var) = ["$MIRROR", "$PRIMARY", "$SECURITY"]
            .iter()
            .find(|v| line.contains(**v))
        {
            return Err(format!(
                "{label}: {var} is not supported by stoke (write the mirror's URL)"
            ));
        }
        let mut file = src.filename.clone().unwrap_or_else(|| name.clone());
        if !file_name_ok(&file) {
            return Err(format!(
                "{label}: filename `{file}`: letters, digits, `.`, `_`, `-` only"
            ));
        }
        if !file.ends_with(".list") {
            file.push_str(".list");
        }
        let path = format!("/etc/apt/sources.list.d/{file}");
        let entry = files.entry(path).or_default();
        if src.append == Some(false) || entry.is_empty() {
            *entry = "# Written by stoke from user-data (apt.sources)\n".to_string();
        }
        entry.push_str(&line);
        entry.push('\n');
    }
    if let Some(conf) = &apt.conf {
        files.insert(
            "/etc/apt/apt.conf.d/94stoke-config".into(),
            format!("{}\n", conf.trim_end()),
        );
    }
    let mut proxy = String::new();
    for (scheme, value) in [
        ("http", apt.proxy.as_ref().or(apt.http_proxy.as_ref())),
        ("https", apt.https_proxy.as_ref()),
        ("ftp", apt.ftp_proxy.as_ref()),
    ] {
        if let Some(v) = value {
            if v.contains(['"', '\n', ';']) {
                return Err(format!("apt.{scheme}_proxy: not a URL"));
            }
            proxy.push_str(&format!("Acquire::{scheme}::Proxy \"{v}\";\n"));
        }
    }
    if !proxy.is_empty() {
        files.insert("/etc/apt/apt.conf.d/90stoke-aptproxy".into(), proxy);
    }
    Ok(files.into_iter().collect())
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct YumConfig {
    /// Repositories by id: each a map of `.repo` keys (`baseurl`, `name`, `enabled`, `gpgcheck`, `gpgkey`, ...).
    #[schemars(with = "Option<BTreeMap<String, BTreeMap<String, serde_json::Value>>>")]
    pub yum_repos: Option<BTreeMap<String, BTreeMap<String, serde_json::Value>>>,
    /// Where the `.repo` files go (default `/etc/yum.repos.d`).
    pub yum_repo_dir: Option<String>,
}

pub struct YumRepos;

#[stoke_api::async_trait]
impl Module for YumRepos {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "yum-repos",
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(30),
            config: config_spec::<YumConfig>(),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: YumConfig = ctx.config()?;
        let Some(repos) = cfg.yum_repos.as_ref().filter(|r| !r.is_empty()) else {
            return Ok(Report::new("no yum_repos configured"));
        };
        let files = plan_yum(repos, cfg.yum_repo_dir.as_deref()).map_err(ModuleError::Invalid)?;
        let dir = open_root(ctx)?;
        let mut written = Vec::new();
        for (path, data) in &files {
            write_file(ctx, &dir, path, data.as_bytes(), 0o644).map_err(ModuleError::Other)?;
            written.push(path.clone());
        }
        Ok(Report::new(plural(repos.len(), "repository"))
            .with_details(json!({ "written": written })))
    }
}

/// Every file `yum_repos` asks for, as (instance path, content).
pub(crate) fn plan_yum(
    repos: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    repo_dir: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let repo_dir = repo_dir.unwrap_or("/etc/yum.repos.d").trim_end_matches('/');
    if !repo_dir.starts_with('/') || repo_dir.split('/').any(|c| c == "..") {
        return Err(format!(
            "yum_repo_dir `{repo_dir}`: an absolute path, please"
        ));
    }
    let mut files = Vec::new();
    for (id, keys) in repos {
        let label = format!("yum_repos.{id}");
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
            || id.is_empty()
            || id.starts_with('.')
        {
            return Err(format!(
                "{label}: a repository id is letters, digits, `.`, `_`, `:`, `-`"
            ));
        }
        if !["baseurl", "metalink", "mirrorlist"]
            .iter()
            .any(|k| keys.contains_key(*k))
        {
            return Err(format!(
                "{label}: needs `baseurl`, `metalink` or `mirrorlist`"
            ));
        }
        let mut text = format!("# Written by stoke from user-data (yum_repos)\n[{id}]\n");
        if !keys.contains_key("name") {
            text.push_str(&format!("name={id}\n"));
        }
        for (key, value) in keys {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "{label}: key `{key}`: letters, digits, `_`, `-` only"
                ));
            }
            let mut v = match value {
                serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => Ok(s.clone()),
                        other => Ok(other.to_string()),
                    })
                    .collect::<Result<Vec<String>, String>>()?
                    // Continuation lines: dnf and yum read them as more values.
                    .join("\n    "),
                _ => return Err(format!("{label}.{key}: a string, number, boolean or list")),
            };
            if key == "gpgkey" && v.trim_start().starts_with(PGP_BEGIN) {
                let armored = check_pgp(&v, &format!("{label}.gpgkey"))?;
                let path = format!("/etc/pki/rpm-gpg/RPM-GPG-KEY-stoke-{id}");
                files.push((path.clone(), armored));
                v = format!("file://{path}");
            } else if v.split("\n    ").any(|part| part.contains(['\n', '\r'])) {
                return Err(format!("{label}.{key}: one line per value"));
            }
            text.push_str(&format!("{key}={v}\n"));
        }
        files.push((format!("{repo_dir}/{id}.repo"), text));
    }
    Ok(files)
}
