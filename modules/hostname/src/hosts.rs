//! `/etc/hosts`: stoke's managed block by default, or cloud-init's `manage_etc_hosts`.
//!
//! | `manage_etc_hosts` | /etc/hosts |
//! |---|---|
//! | absent | stoke's block `# BEGIN stoke hostname` … `# END stoke hostname` holding `127.0.1.1 <fqdn> <hostname>` |
//! | `false` | untouched (cloud-init's meaning and default) |
//! | `true` (or the deprecated `template`) | the whole file rendered from `/etc/cloud/templates/hosts.<family>.tmpl` when the image has one, else from stoke's built-in one, at every boot |
//! | `localhost` | the `127.0.1.1` line set to `127.0.1.1 <fqdn> <hostname>`; every other line kept byte for byte |

use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use stoke_api::{Context, ModuleError, managed_block};

use crate::{Names, read_etc, write_etc};

pub(crate) const HOSTS_BEGIN: &str = "# BEGIN stoke hostname";
pub(crate) const HOSTS_END: &str = "# END stoke hostname";
/// The address the machine's own names map to (Debian's and cloud-init's convention): it
/// resolves before the network is up and does not go stale when the private address changes.
pub(crate) const HOSTS_ADDR: &str = "127.0.1.1";

/// cloud-init's `manage_etc_hosts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManageEtcHosts {
    /// `true`: the whole file rendered from a template at every boot.
    Template,
    /// `template`: cloud-init's deprecated spelling of `true`.
    TemplateDeprecated,
    /// `false`: /etc/hosts is left alone.
    Off,
    /// `localhost`: only the 127.0.1.1 line is kept up to date.
    Localhost,
}

impl<'de> Deserialize<'de> for ManageEtcHosts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bad = |shown: &dyn fmt::Display| {
            // The loader puts the key's name and position in front.
            serde::de::Error::custom(format!("{shown}: expected true, false or \"localhost\""))
        };
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(ManageEtcHosts::Template),
            serde_json::Value::Bool(false) => Ok(ManageEtcHosts::Off),
            // cloud-init reads the value as text and accepts these spellings too.
            serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "localhost" => Ok(ManageEtcHosts::Localhost),
                "template" => Ok(ManageEtcHosts::TemplateDeprecated),
                "true" | "yes" | "on" | "1" => Ok(ManageEtcHosts::Template),
                "false" | "no" | "off" | "0" => Ok(ManageEtcHosts::Off),
                _ => Err(bad(&format_args!("{s:?}"))),
            },
            other => Err(bad(&other)),
        }
    }
}

impl JsonSchema for ManageEtcHosts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ManageEtcHosts".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "cloud-init's manage_etc_hosts: true (render the whole file from a template), false (leave it alone) or \"localhost\" (keep the 127.0.1.1 line); absent: stoke's managed block",
            "oneOf": [
                {"type": "boolean"},
                {"enum": ["localhost", "template"]}
            ]
        })
    }
}

/// What was done to /etc/hosts, for the summary.
pub(crate) enum HostsOutcome {
    Unchanged,
    Written(String),
    LeftAlone(&'static str),
}

/// Brings /etc/hosts in line with `mode` for `names`. `vars` are the template variables of
/// `manage_etc_hosts: true` (besides `hostname` and `fqdn`).
pub(crate) fn update_hosts(
    ctx: &Context,
    mode: Option<ManageEtcHosts>,
    names: &Names,
    vars: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<HostsOutcome, ModuleError> {
    let existing = read_etc(ctx, "/etc/hosts")?;
    let (updated, how) = match mode {
        None => {
            let text = existing.clone().unwrap_or_default();
            (
                managed_block(&text, HOSTS_BEGIN, HOSTS_END, &host_line(names)),
                "stoke's block".to_string(),
            )
        }
        Some(ManageEtcHosts::Off) => {
            return Ok(HostsOutcome::LeftAlone("manage_etc_hosts: false"));
        }
        Some(ManageEtcHosts::Localhost) => (
            localhost_line(existing.as_deref().unwrap_or(""), names),
            "manage_etc_hosts: localhost".to_string(),
        ),
        Some(m @ (ManageEtcHosts::Template | ManageEtcHosts::TemplateDeprecated)) => {
            if m == ManageEtcHosts::TemplateDeprecated {
                warnings.push(
                    "manage_etc_hosts: \"template\" is deprecated (as in cloud-init): use true"
                        .into(),
                );
            }
            let (text, source) = render_template(ctx, names, vars)?;
            (text, format!("manage_etc_hosts: true, from {source}"))
        }
    };
    if existing.as_deref() == Some(updated.as_str()) {
        return Ok(HostsOutcome::Unchanged);
    }
    write_etc(ctx, "/etc/hosts", updated.as_bytes())?;
    Ok(HostsOutcome::Written(how))
}

/// `127.0.1.1 <fqdn> <hostname>`, or `127.0.1.1 <hostname>` when they are the same.
fn host_line(names: &Names) -> String {
    if names.fqdn == names.hostname {
        format!("{HOSTS_ADDR} {}", names.hostname)
    } else {
        format!("{HOSTS_ADDR} {} {}", names.fqdn, names.hostname)
    }
}

/// `manage_etc_hosts: localhost`: the file with one `127.0.1.1` line for `names`, where the
/// first one was (else at the end). Every 127.0.1.1 line names this machine, so the others
/// (an earlier name) go: a stale first entry would be what the address resolves back to.
/// stoke's block, from a boot without the key, goes too (it is another 127.0.1.1 line).
fn localhost_line(existing: &str, names: &Names) -> String {
    let text = managed_block(existing, HOSTS_BEGIN, HOSTS_END, "");
    let wanted = host_line(names);
    let mut out = String::with_capacity(text.len() + wanted.len() + 1);
    let mut placed = false;
    for line in text.split_inclusive('\n') {
        let fields: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.first() != Some(&HOSTS_ADDR) {
            out.push_str(line);
            continue;
        }
        if placed {
            continue;
        }
        placed = true;
        // A line that already names the machine as wanted is kept as it is (its comment too).
        if fields[1..] == wanted.split_whitespace().collect::<Vec<_>>()[1..] {
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(&wanted);
            out.push('\n');
        }
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&wanted);
        out.push('\n');
    }
    out
}

/// cloud-init's name for the distribution family, which names its hosts template.
fn os_family(ctx: &Context) -> Option<&'static str> {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| read_etc(ctx, p).ok().flatten())?;
    let mut words = Vec::new();
    // ID first: a derivative's own family wins over what it is like.
    for key in ["ID", "ID_LIKE"] {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == key
            {
                let v = v.trim().trim_matches(['"', '\'']);
                words.extend(v.split_whitespace().map(str::to_ascii_lowercase));
            }
        }
    }
    words.iter().find_map(|w| {
        Some(match w.as_str() {
            "debian" | "ubuntu" => "debian",
            "rhel" | "fedora" | "centos" | "amzn" | "rocky" | "almalinux" | "ol" | "cloudlinux"
            | "eurolinux" | "miraclelinux" | "virtuozzo" => "redhat",
            "suse" | "opensuse" | "sles" | "sle_hpc" | "opensuse-leap" | "opensuse-tumbleweed" => {
                "suse"
            }
            "arch" => "arch",
            "alpine" => "alpine",
            "gentoo" => "gentoo",
            "photon" => "photon",
            "mariner" => "mariner",
            "azurelinux" => "azurelinux",
            "openeuler" => "openeuler",
            "aosc" => "aosc",
            _ => return None,
        })
    })
}

/// The whole /etc/hosts for `manage_etc_hosts: true`, and where its template came from.
fn render_template(
    ctx: &Context,
    names: &Names,
    vars: &BTreeMap<String, String>,
) -> Result<(String, String), ModuleError> {
    let family = os_family(ctx);
    let mut vars = vars.clone();
    vars.insert("hostname".into(), names.hostname.clone());
    vars.insert("fqdn".into(), names.fqdn.clone());
    vars.insert("domain".into(), names.domain.clone());
    if let Some(f) = family {
        let path = format!("/etc/cloud/templates/hosts.{f}.tmpl");
        if let Some(text) = read_etc(ctx, &path)? {
            let out = render_cloud_template(&text, &vars)
                .map_err(|e| ModuleError::Invalid(format!("{path}: {e}")))?;
            return Ok((out, path));
        }
    }
    Ok((builtin(family, names), "stoke's built-in template".into()))
}

/// stoke's hosts file when the image has no cloud-init template: the machine's names on
/// the distribution's usual address (127.0.0.1 on Red Hat's family, 127.0.1.1 elsewhere),
/// the loopback names and, on Debian's layout, the IPv6 multicast names.
fn builtin(family: Option<&str>, names: &Names) -> String {
    let both = if names.fqdn == names.hostname {
        names.hostname.clone()
    } else {
        format!("{} {}", names.fqdn, names.hostname)
    };
    let mut out = String::from(
        "# Written by stoke at every boot (manage_etc_hosts: true): changes made here are lost.\n\
         # To change it for good, set manage_etc_hosts to false or \"localhost\", or give the image\n\
         # a template in /etc/cloud/templates/.\n",
    );
    if family == Some("redhat") {
        out.push_str(&format!(
            "127.0.0.1 {both}\n\
             127.0.0.1 localhost.localdomain localhost\n\
             127.0.0.1 localhost4.localdomain4 localhost4\n\
             \n\
             ::1 {both}\n\
             ::1 localhost.localdomain localhost\n\
             ::1 localhost6.localdomain6 localhost6\n"
        ));
    } else {
        out.push_str(&format!(
            "127.0.0.1 localhost\n\
             {HOSTS_ADDR} {both}\n\
             \n\
             ::1 localhost ip6-localhost ip6-loopback\n\
             ff02::1 ip6-allnodes\n\
             ff02::2 ip6-allrouters\n"
        ));
    }
    out
}

/// Renders a cloud-init template file: `## template: jinja` on the first line selects
/// jinja (blocks trimmed, the final newline kept, as cloud-init renders it); `## template:
/// basic` or no header, `$name` / `${name}` substitution. A variable the template uses and
/// stoke does not have is an error naming it and its line (cloud-init writes a placeholder
/// into the file instead).
pub(crate) fn render_cloud_template(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let header = first
        .trim_start()
        .strip_prefix("##")
        .map(str::trim_start)
        .and_then(|h| {
            h.get(..9)
                .filter(|p| p.eq_ignore_ascii_case("template:"))
                .map(|_| h[9..].trim().to_ascii_lowercase())
        });
    match header.as_deref() {
        Some("jinja") => render_jinja(rest, vars),
        Some("basic") => render_basic(rest, vars, 2),
        None => render_basic(text, vars, 1),
        Some(other) => Err(format!(
            "line 1: unknown template type {other:?} (jinja or basic)"
        )),
    }
}

fn render_jinja(body: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let describe = |e: minijinja::Error| {
        let what = match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        // +1: the header line the file starts with.
        match e.line() {
            Some(l) => format!("line {}: {what}", l + 1),
            None => what,
        }
    };
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(describe)?;
    env.set_syntax(syntax);
    let tmpl = env.template_from_str(body).map_err(describe)?;
    tmpl.render(minijinja::value::Serde(vars)).map_err(describe)
}

/// `$name` and `${name}` (names of letters, digits, `_` and `.`), as cloud-init's basic
/// renderer. `first_line`: the file's line number of `text`'s first line.
fn render_basic(
    text: &str,
    vars: &BTreeMap<String, String>,
    first_line: usize,
) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, used) = match after.strip_prefix('{') {
                Some(inner) => match inner.find('}') {
                    Some(end) if !inner[..end].is_empty() && inner[..end].chars().all(is_name) => {
                        (&inner[..end], end + 2)
                    }
                    _ => ("", 0),
                },
                None => {
                    let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
                    (&after[..end], end)
                }
            };
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            let value = vars.get(name).ok_or_else(|| {
                format!(
                    "line {}: unknown variable `{name}` (known: {})",
                    n + first_line,
                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            out.push_str(value);
            rest = &after[used..];
        }
        out.push_str(rest);
    }
    Ok(out)
}
