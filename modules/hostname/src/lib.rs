//! The `hostname` module: names the instance at every boot.
//!
//! Stage `local` (before networking, so every later service sees the final
//! name), default frequency `per-boot`: the kernel forgets its hostname at each
//! boot, so `sethostname(2)` is called every time; the files are only rewritten
//! when their content would change. A UUID (v4) is generated once per instance
//! and kept in the module's per-instance state (`<state_dir>/uuid`), so a
//! hostname such as `"{{ role }}-{{ uuid8 }}"` is stable across reboots and new
//! for a new instance launched from the same image.
//!
//! # Configuration (top-level keys, as in cloud-init)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `hostname` | metadata | template for the host name; a value with dots is taken as the fqdn and its first label as the host name (as cloud-init does) |
//! | `fqdn` | see below | template for the fully qualified name; when `hostname` is unset, the host name is its first label |
//! | `domain` | none | template for the domain (stoke's own key): fqdn = `<hostname>.<domain>` when `fqdn` is unset |
//! | `preserve_hostname` | `false` | `true`: touch nothing (no file, no syscall) but `/etc/hosts` when `manage_etc_hosts` is `true` or `localhost` (with the kept name); the current `/etc/hostname` is reported |
//! | `prefer_fqdn_over_hostname` | `false` | the fqdn, not the short name, goes to `/etc/hostname` and `sethostname` |
//! | `create_hostname_file` | `true` | `false`: do not create `/etc/hostname` when it does not exist |
//! | `manage_etc_hosts` | absent | cloud-init's: `true` renders the whole `/etc/hosts`, `localhost` keeps its 127.0.1.1 line, `false` leaves it alone ([`hosts`]); absent: stoke's block below |
//!
//! Templates use [`stoke_api::render`] (`{{ name }}`, nothing else) with the
//! engine's variables (metadata such as `instance_id`, `local_ipv4`, `region`;
//! config `vars:`) plus `uuid`, `uuid8` (its first 8 hex digits), `domain`
//! (when set) and `hostname` (in the `fqdn` template: the configured host name,
//! else the metadata default below).
//!
//! With no `hostname` and no `fqdn`, the name comes from the metadata: the
//! first label of `local-hostname` (its whole value is the fqdn, as on EC2:
//! `ip-10-0-0-1.ec2.internal`, or a resource name `i-0123….ec2.internal`), else
//! `ip-<local-ipv4 with dashes>`, else on EC2 (an IPv6-only instance) the resource name from
//! the instance id and region. With none of those either, the hostname is left alone and a
//! warning says so.
//!
//! When the fqdn is not given (by `fqdn`, a dotted `hostname`, `domain` or the
//! metadata default) it is the host name itself. Unlike cloud-init, a
//! configured short `hostname` is never paired with the metadata's domain.
//!
//! # Validation
//!
//! Every name is checked before anything is written: labels of ASCII letters,
//! digits and `-`, not starting or ending with `-`, 1–63 characters each, at
//! most 253 in all, and the name given to the kernel at most 64 (its limit).
//! Case is kept (Linux and cloud-init keep it). Surrounding whitespace and a
//! final `.` are dropped. An error names the key, its template, what it gave and
//! the offending label.
//!
//! # Files
//!
//! `/etc/hostname` holds the name and a newline. In `/etc/hosts` (when
//! `manage_etc_hosts` is not set), stoke owns only the lines between
//! `# BEGIN stoke hostname` and `# END stoke hostname`:
//! `127.0.1.1 <fqdn> <hostname>` (just `<hostname>` when they are equal).
//! 127.0.1.1 is the Debian and cloud-init convention: it resolves before the
//! network is up and does not go stale when the private address changes.
//! Every other line is kept byte for byte.
//!
//! # Report
//!
//! `details` is `{"hostname", "fqdn", "domain", "uuid", "uuid8"}`, all strings
//! (`domain` is `""` when there is none; `hostname` is always the short name).
//! The engine exposes them as variables to later modules (route53, puppet).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use stoke_api::{
    Context, Frequency, InstanceData, Module, ModuleError, ModuleSpec, Report, RootDir, Stage,
    config_spec, render,
};
use uuid::Uuid;

mod hosts;
pub use hosts::ManageEtcHosts;
use hosts::{HostsOutcome, update_hosts};

/// The kernel's limit on the hostname (HOST_NAME_MAX).
const KERNEL_MAX: usize = 64;
const UUID_FILE: &str = "uuid";

/// The stoke modules this crate provides.
pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(Hostname)]
}

/// The top-level configuration keys this module reads.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HostnameConfig {
    /// Template for the host name, e.g. `"{{ role }}-{{ uuid8 }}"`. A value
    /// with dots is the fqdn; its first label is the host name. Default: from
    /// the metadata (local-hostname, else `ip-<local-ipv4 dashed>`). A number is its text.
    #[serde(deserialize_with = "stoke_api::scalar_text")]
    pub hostname: Option<String>,
    /// Template for the fully qualified domain name, e.g. `"{{ hostname }}.example.com"`.
    #[serde(deserialize_with = "stoke_api::scalar_text")]
    pub fqdn: Option<String>,
    /// Template for the domain; the fqdn is `<hostname>.<domain>` when `fqdn` is not set.
    pub domain: Option<String>,
    /// Leave the hostname and /etc/hostname alone (and /etc/hosts, unless `manage_etc_hosts` is
    /// true or localhost: it then gets the kept name).
    pub preserve_hostname: bool,
    /// Give the fqdn (not the short name) to /etc/hostname and the kernel.
    pub prefer_fqdn_over_hostname: bool,
    /// Create /etc/hostname when it does not exist.
    pub create_hostname_file: bool,
    /// cloud-init's `manage_etc_hosts`: `true` renders the whole /etc/hosts from a template
    /// at every boot, `localhost` keeps its 127.0.1.1 line, `false` leaves it alone. Absent:
    /// stoke's managed block (a 127.0.1.1 line between markers).
    pub manage_etc_hosts: Option<ManageEtcHosts>,
}

impl Default for HostnameConfig {
    fn default() -> Self {
        HostnameConfig {
            hostname: None,
            fqdn: None,
            domain: None,
            preserve_hostname: false,
            prefer_fqdn_over_hostname: false,
            create_hostname_file: true,
            manage_etc_hosts: None,
        }
    }
}

/// The `hostname` module.
pub struct Hostname;

#[stoke_api::async_trait]
impl Module for Hostname {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "hostname",
            stage: Stage::Local,
            // The kernel forgets the hostname; the UUID is per instance (state_dir).
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(10),
            config: config_spec::<HostnameConfig>(),
            order: stoke_api::Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: HostnameConfig = ctx.config()?;
        let mut warnings = Vec::new();
        let uuid = instance_uuid(ctx, &mut warnings)?;

        let vars = vars_with_uuid(&ctx.vars, uuid);
        if cfg.preserve_hostname {
            let names = current_names(ctx)?;
            let mut summary = format!(
                "preserve_hostname: true: hostname left alone ({})",
                shown(&names.system)
            );
            // An explicit manage_etc_hosts still applies (as in cloud-init), to the name kept.
            if matches!(
                cfg.manage_etc_hosts,
                Some(m) if m != ManageEtcHosts::Off
            ) {
                if names.system.is_empty() {
                    warnings.push(
                        "manage_etc_hosts is set but /etc/hostname names no host: /etc/hosts left alone"
                            .into(),
                    );
                } else if let HostsOutcome::Written(how) =
                    update_hosts(ctx, cfg.manage_etc_hosts, &names, &vars, &mut warnings)?
                {
                    summary.push_str(&format!("; wrote /etc/hosts ({how})"));
                }
            }
            return Ok(report(summary, &names, uuid, warnings));
        }

        let Some(names) = resolve(&cfg, &vars, &ctx.instance, &mut warnings)? else {
            warnings.push(
                "no hostname or fqdn configured and the metadata has neither local-hostname \
                 nor local-ipv4: hostname left alone"
                    .to_string(),
            );
            let names = current_names(ctx)?;
            let summary = format!("hostname left alone ({})", shown(&names.system));
            return Ok(report(summary, &names, uuid, warnings));
        };

        let mut changed = Vec::new();
        if write_hostname_file(ctx, &names.system, cfg.create_hostname_file)? {
            changed.push("/etc/hostname".to_string());
        }
        let mut hosts_note = None;
        match update_hosts(ctx, cfg.manage_etc_hosts, &names, &vars, &mut warnings)? {
            HostsOutcome::Written(how) => changed.push(format!("/etc/hosts ({how})")),
            HostsOutcome::Unchanged => {}
            HostsOutcome::LeftAlone(why) => hosts_note = Some(why),
        }
        ctx.system.sethostname(&names.system)?;

        let mut summary = format!("hostname {}", names.hostname);
        if names.fqdn != names.hostname {
            summary.push_str(&format!(" (fqdn {})", names.fqdn));
        }
        if names.system != names.hostname {
            summary.push_str(&format!("; the system name is {}", names.system));
        }
        if changed.is_empty() {
            summary.push_str("; files already up to date");
        } else {
            summary.push_str(&format!("; wrote {}", changed.join(", ")));
        }
        if let Some(why) = hosts_note {
            summary.push_str(&format!("; /etc/hosts left alone ({why})"));
        }
        Ok(report(summary, &names, uuid, warnings))
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: HostnameConfig = match ctx.config() {
            Ok(c) => c,
            Err(e) => return Some(format!("would fail: configuration: {e}")),
        };
        let hosts = match cfg.manage_etc_hosts {
            None => "",
            Some(ManageEtcHosts::Off) => "; /etc/hosts left alone (manage_etc_hosts: false)",
            Some(ManageEtcHosts::Localhost) => {
                "; the 127.0.1.1 line of /etc/hosts kept (manage_etc_hosts: localhost)"
            }
            Some(_) => "; /etc/hosts rendered from a template (manage_etc_hosts: true)",
        };
        if cfg.preserve_hostname {
            return Some(format!(
                "preserve_hostname: true: would leave the hostname alone{}",
                if cfg.manage_etc_hosts.is_some() {
                    hosts
                } else {
                    ""
                }
            ));
        }
        // Plan must not write: show an existing UUID, or the nil one as a stand-in.
        let (uuid, note) = match read_uuid(ctx) {
            Some(u) => (u, ""),
            None => (Uuid::nil(), " (no uuid yet: shown as zeros)"),
        };
        let vars = vars_with_uuid(&ctx.vars, uuid);
        match resolve(&cfg, &vars, &ctx.instance, &mut Vec::new()) {
            Ok(Some(n)) if n.fqdn != n.hostname => Some(format!(
                "would set hostname {} (fqdn {}){note}{hosts}",
                n.hostname, n.fqdn
            )),
            Ok(Some(n)) => Some(format!("would set hostname {}{note}{hosts}", n.hostname)),
            Ok(None) => {
                Some("no hostname configured or in the metadata: would leave it alone".into())
            }
            Err(e) => Some(format!("would fail: {e}")),
        }
    }
}

/// The names the instance gets.
#[derive(Debug, Clone, PartialEq)]
struct Names {
    /// The short name (first label).
    hostname: String,
    fqdn: String,
    /// The fqdn without its first label; empty when there is none.
    domain: String,
    /// What /etc/hostname and the kernel get.
    system: String,
}

impl Names {
    fn from_parts(hostname: String, fqdn: String, prefer_fqdn: bool) -> Self {
        let domain = fqdn
            .split_once('.')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let system = if prefer_fqdn {
            fqdn.clone()
        } else {
            hostname.clone()
        };
        Names {
            hostname,
            fqdn,
            domain,
            system,
        }
    }
}

/// Where a name came from, for error messages.
enum Origin<'a> {
    Key {
        key: &'static str,
        template: &'a str,
    },
    Metadata(&'static str),
    /// The host name joined with `domain`.
    Joined,
    /// An instance tag used in a template.
    Tag {
        key: &'static str,
        tag: &'a str,
    },
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Key { key, template } => write!(f, "`{key}` template {template:?}"),
            Origin::Metadata(field) => write!(f, "metadata {field}"),
            Origin::Joined => f.write_str("the host name joined with `domain`"),
            Origin::Tag { key, tag } => write!(f, "`{key}`: instance tag `{tag}`"),
        }
    }
}

/// Works out the names from the configuration and metadata; `None` when
/// nothing names the instance. Every name is validated.
fn resolve(
    cfg: &HostnameConfig,
    vars: &BTreeMap<String, String>,
    instance: &InstanceData,
    warnings: &mut Vec<String>,
) -> Result<Option<Names>, ModuleError> {
    let mut vars = vars.clone();

    let domain = match &cfg.domain {
        Some(t) => {
            let origin = Origin::Key {
                key: "domain",
                template: t,
            };
            let d = render_key("domain", t, &vars)?;
            let d = d.trim_start_matches('.').to_string();
            check_name(&d, &origin)?;
            vars.insert("domain".into(), d.clone());
            Some(d)
        }
        None => None,
    };

    // From `hostname`: (short name, fqdn if the value was dotted).
    let configured = match &cfg.hostname {
        Some(t) => {
            let origin = Origin::Key {
                key: "hostname",
                template: t,
            };
            let h = render_key("hostname", t, &vars)?;
            check_name(&h, &origin)?;
            Some(split_name(&h))
        }
        None => None,
    };
    // The metadata's name, for `{{ hostname }}` in `fqdn` and as the default.
    let from_metadata = match (&configured, &cfg.fqdn) {
        (Some(_), _) => None,
        // With `fqdn` set the metadata name only fills `{{ hostname }}`: a bad
        // one must not fail a configuration that does not use it.
        (None, Some(_)) => metadata_name(instance).ok().flatten(),
        (None, None) => metadata_name(instance)?,
    };
    if let Some((short, _)) = configured.as_ref().or(from_metadata.as_ref()) {
        vars.insert("hostname".into(), short.clone());
    }

    let fqdn_cfg = match &cfg.fqdn {
        Some(t) => {
            let origin = Origin::Key {
                key: "fqdn",
                template: t,
            };
            let f = render_key("fqdn", t, &vars)?;
            check_name(&f, &origin)?;
            Some(f)
        }
        None => None,
    };

    let (hostname, fqdn) = match (configured, fqdn_cfg, from_metadata) {
        (Some((short, dotted)), fqdn, _) => {
            let fqdn = fqdn
                .or(dotted)
                .unwrap_or_else(|| with_domain(&short, &domain));
            (short, fqdn)
        }
        (None, Some(fqdn), _) => (split_name(&fqdn).0, fqdn),
        (None, None, Some((short, dotted))) => {
            // A configured domain wins over the metadata's.
            let fqdn = match (&domain, dotted) {
                (Some(_), _) | (None, None) => with_domain(&short, &domain),
                (None, Some(f)) => f,
            };
            (short, fqdn)
        }
        (None, None, None) => return Ok(None),
    };

    // Each part was checked; joined with `domain` they may still be too long.
    check_name(&fqdn, &Origin::Joined)?;

    let names = Names::from_parts(hostname, fqdn, cfg.prefer_fqdn_over_hostname);
    if let Some(d) = &domain
        && names.domain != *d
    {
        warnings.push(format!(
            "`domain` {d:?} ignored: the fqdn {:?} is in domain {:?}",
            names.fqdn, names.domain
        ));
    }
    if names.system.len() > KERNEL_MAX {
        return Err(ModuleError::Invalid(format!(
            "the fqdn {:?} is {} characters long; the kernel hostname holds at most {KERNEL_MAX} \
             (set by prefer_fqdn_over_hostname)",
            names.system,
            names.system.len()
        )));
    }
    Ok(Some(names))
}

fn render_key(
    key: &'static str,
    template: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, ModuleError> {
    check_tags(key, template, vars)?;
    let out = render(template, vars).map_err(|e| ModuleError::Invalid(format!("`{key}`: {e}")))?;
    // YAML block scalars and metadata values may carry a newline; an absolute
    // name may end in a dot. Neither is part of the name.
    Ok(out.trim().trim_end_matches('.').to_string())
}

/// An instance tag used in a name must be a name itself (in `hostname`, one label): said
/// naming the tag, since its value comes from whoever tagged the instance, not from the file.
fn check_tags(
    key: &'static str,
    template: &str,
    vars: &BTreeMap<String, String>,
) -> Result<(), ModuleError> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        rest = &after[end + 2..];
        let Some(tag) = name.strip_prefix(stoke_api::TAG_PREFIX) else {
            continue;
        };
        let Some(value) = vars.get(name) else {
            continue; // render says it is unknown
        };
        let origin = Origin::Tag { key, tag };
        let v = value.trim();
        if key == "hostname" && v.contains('.') {
            return Err(ModuleError::Invalid(format!(
                "{origin} is {v:?}: a hostname label cannot contain '.'"
            )));
        }
        check_name(v, &origin)?;
    }
    Ok(())
}

/// (first label, the whole name if it has more than one label).
fn split_name(name: &str) -> (String, Option<String>) {
    match name.split_once('.') {
        Some((short, _)) => (short.to_string(), Some(name.to_string())),
        None => (name.to_string(), None),
    }
}

fn with_domain(short: &str, domain: &Option<String>) -> String {
    match domain {
        Some(d) => format!("{short}.{d}"),
        None => short.to_string(),
    }
}

/// The default name from metadata: local-hostname, else `ip-<local-ipv4 dashed>`, else (an
/// IPv6-only EC2 instance, whose only hostname type is the resource name) the resource name
/// EC2 would give it: `<instance-id>.ec2.internal` in us-east-1, `<instance-id>.<region>.compute.internal`
/// elsewhere.
fn metadata_name(instance: &InstanceData) -> Result<Option<(String, Option<String>)>, ModuleError> {
    if let Some(h) = &instance.local_hostname {
        let h = h.trim().trim_end_matches('.');
        if !h.is_empty() {
            check_name(h, &Origin::Metadata("local-hostname"))?;
            return Ok(Some(split_name(h)));
        }
    }
    if let Some(ip) = &instance.local_ipv4 {
        let ip = ip.trim();
        if !ip.is_empty() {
            let name = format!("ip-{}", ip.replace('.', "-"));
            check_name(&name, &Origin::Metadata("local-ipv4"))?;
            return Ok(Some((name, None)));
        }
    }
    if instance.datasource == "ec2" && instance.instance_id.starts_with("i-") {
        let id = instance.instance_id.as_str();
        let fqdn = match instance.region.as_deref() {
            Some("us-east-1") => Some(format!("{id}.ec2.internal")),
            Some(r) if !r.is_empty() => Some(format!("{id}.{r}.compute.internal")),
            _ => None,
        };
        let name = fqdn.as_deref().unwrap_or(id);
        check_name(name, &Origin::Metadata("instance-id"))?;
        return Ok(Some((id.to_string(), fqdn)));
    }
    Ok(None)
}

/// Checks an RFC 1123 host name: letters, digits and `-` in labels of 1–63
/// characters that neither start nor end with `-`; at most 253 in all.
fn check_name(name: &str, origin: &Origin) -> Result<(), ModuleError> {
    let fail = |problem: String| {
        let source = match origin {
            // A literal needs no "template ... gave" around it.
            Origin::Key { key, template } if template.trim() == name => {
                format!("`{key}` {name:?}")
            }
            Origin::Tag { .. } => format!("{origin} is {name:?}, not a valid host name"),
            _ => format!("{origin} gave {name:?}"),
        };
        Err(ModuleError::Invalid(format!("{source}: {problem}")))
    };
    if name.is_empty() {
        return fail("the name is empty".into());
    }
    if name.len() > 253 {
        return fail(format!(
            "{} characters long; a host name has at most 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return fail("empty label (two dots in a row, or a leading dot)".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return fail(format!(
                "label {label:?} contains {c:?}; only letters, digits and '-' are allowed"
            ));
        }
        if label.len() > 63 {
            return fail(format!(
                "label {label:?} is {} characters long; at most 63 allowed",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

fn vars_with_uuid(vars: &BTreeMap<String, String>, uuid: Uuid) -> BTreeMap<String, String> {
    let mut vars = vars.clone();
    vars.insert("uuid".into(), uuid.hyphenated().to_string());
    vars.insert("uuid8".into(), uuid8(uuid));
    vars
}

fn uuid8(uuid: Uuid) -> String {
    let mut s = uuid.simple().to_string();
    s.truncate(8);
    s
}

/// The persisted UUID, if the state file holds a valid one.
fn read_uuid(ctx: &Context) -> Option<Uuid> {
    let text = ctx.read_state(UUID_FILE).ok()??;
    Uuid::parse_str(text.trim()).ok().filter(|u| !u.is_nil())
}

/// This instance's UUID: the persisted one, else a new v4 persisted now.
fn instance_uuid(ctx: &Context, warnings: &mut Vec<String>) -> Result<Uuid, ModuleError> {
    let path = ctx.resolved_state_path(stoke_api::StateScope::Instance, UUID_FILE);
    match ctx.read_state(UUID_FILE) {
        Ok(Some(text)) => match Uuid::parse_str(text.trim()) {
            Ok(u) if !u.is_nil() => return Ok(u),
            // A damaged file cannot give the old UUID back; a new one is the only way on.
            _ => warnings.push(format!(
                "{} did not hold a valid UUID; generated a new one",
                path.display()
            )),
        },
        Ok(None) => {}
        Err(e) => return Err(ModuleError::io("read", path, e)),
    }
    let uuid = Uuid::new_v4();
    ctx.write_state(UUID_FILE, format!("{}\n", uuid.hyphenated()).as_bytes())
        .map_err(|e| ModuleError::io("write", &path, e))?;
    Ok(uuid)
}

/// Most bytes read from /etc/hostname or /etc/hosts (a FIFO or a huge file there is refused).
const ETC_FILE_CAP: u64 = 4 * 1024 * 1024;

/// Reads an instance file through the root boundary: symlinks resolved inside the root, a FIFO
/// or device refused, size capped.
fn read_etc(ctx: &Context, guest: &str) -> Result<Option<String>, ModuleError> {
    let io = |e| ModuleError::io("read", guest, e);
    let rd = RootDir::open(&ctx.root).map_err(io)?;
    let Some(bytes) = rd
        .read_regular(Path::new(guest), ETC_FILE_CAP)
        .map_err(io)?
    else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ModuleError::Invalid(format!("{guest} is not UTF-8 text")))
}

/// Replaces an instance file atomically, resolved inside the root (never through a symlink
/// out of it).
fn write_etc(ctx: &Context, guest: &str, data: &[u8]) -> Result<(), ModuleError> {
    let io = |e| ModuleError::io("write", guest, e);
    let rd = RootDir::open(&ctx.root).map_err(io)?;
    let path = Path::new(guest);
    if let Some(parent) = path.parent() {
        rd.create_dir_all(parent, 0o755).map_err(io)?;
    }
    // An existing file keeps the mode it was given.
    let mode = rd.file_mode(path).map_err(io)?.unwrap_or(0o644);
    rd.write_atomic(path, data, mode, None, ctx.system.as_ref())
        .map_err(io)
}

/// Writes /etc/hostname unless it already holds `name`. True when written.
fn write_hostname_file(ctx: &Context, name: &str, create: bool) -> Result<bool, ModuleError> {
    match read_etc(ctx, "/etc/hostname")? {
        Some(text) if text.trim() == name => return Ok(false),
        None if !create => return Ok(false),
        _ => {}
    }
    write_etc(ctx, "/etc/hostname", format!("{name}\n").as_bytes())?;
    Ok(true)
}

/// The names as the instance has them now (from /etc/hostname), for when
/// stoke leaves the hostname alone.
fn current_names(ctx: &Context) -> Result<Names, ModuleError> {
    let text = read_etc(ctx, "/etc/hostname")?.unwrap_or_default();
    let name = text.lines().next().unwrap_or("").trim().to_string();
    let (short, dotted) = split_name(&name);
    let fqdn = dotted.unwrap_or_else(|| short.clone());
    let mut names = Names::from_parts(short, fqdn, false);
    names.system = name;
    Ok(names)
}

fn shown(name: &str) -> &str {
    if name.is_empty() { "unknown" } else { name }
}

/// The names are also the template variables of the modules that run after this one.
fn report(summary: String, names: &Names, uuid: Uuid, warnings: Vec<String>) -> Report {
    let vars = [
        ("hostname", names.hostname.clone()),
        ("fqdn", names.fqdn.clone()),
        ("domain", names.domain.clone()),
        ("uuid", uuid.hyphenated().to_string()),
        ("uuid8", uuid8(uuid)),
    ];
    let details = vars
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_str())))
        .collect::<serde_json::Map<_, _>>();
    let mut r = Report::new(summary).with_details(details.into());
    for (k, v) in vars {
        r = r.with_var(k, v);
    }
    r.warnings = warnings;
    r
}

#[cfg(test)]
mod tests;
