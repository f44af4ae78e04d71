//! `ssh-authorized-keys`: the operators' public keys into `authorized_keys`.
//!
//! Keys come from metadata (the instance's key pair) and configuration. stoke
//! owns one marked block per file; everything else in the file stays
//! byte-identical. Every line is validated; a bad line is reported with where it
//! came from and skipped. Homes are treated as hostile: see [`crate::safefs`].

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Report, Stage, config_spec, lookup_user,
    managed_block,
};

use crate::keyline;
use crate::safefs::{self, Owner};

/// cloud-init's default: root logins with these keys print which account to use, then exit.
pub const DEFAULT_DISABLE_ROOT_OPTS: &str = r#"no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo 'Please login as the user \"$USER\" rather than the user \"$DISABLE_USER\".';echo;sleep 10;exit 142""#;

/// Markers of stoke's block in `authorized_keys`.
pub const BEGIN: &str =
    "# BEGIN stoke managed keys (rewritten by stoke at boot; add your own keys outside this block)";
pub const END: &str = "# END stoke managed keys";

/// At most this many bad-line warnings are listed one by one.
const MAX_LINE_WARNINGS: usize = 20;

/// Configuration keys (cloud-init names).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AuthorizedKeysConfig {
    /// Extra keys for the default user (and root, see `disable_root`), besides metadata's.
    pub ssh_authorized_keys: Vec<String>,
    /// The account that gets the instance's keys (e.g. `admin`, `ec2-user`): a name, or
    /// cloud-init's map with `name` (users-groups creates it when missing).
    pub default_user: Option<DefaultUserName>,
    /// cloud-init's `system_info`: `default_user` is read when `default_user` is not set.
    pub system_info: Option<SystemInfoUser>,
    /// Users and their own keys (`users-groups` creates the missing ones first).
    /// `users: []` means no default user: the instance's keys go to nobody.
    pub users: Option<Vec<UserEntry>>,
    /// Root's copy of the keys only tells the user which account to use. Default true.
    pub disable_root: bool,
    /// Options forced on root's keys when `disable_root` is true; `$USER` is the
    /// default user, `$DISABLE_USER` is `root`.
    pub disable_root_opts: String,
    /// Do not print the fingerprints of each user's authorized keys to the console. Default false.
    pub no_ssh_fingerprints: bool,
    /// Install the metadata's public keys (the instance's key pair). Default true; `false`:
    /// only `ssh_authorized_keys` and the `users` entries' keys.
    pub allow_public_ssh_keys: bool,
}

impl Default for AuthorizedKeysConfig {
    fn default() -> Self {
        AuthorizedKeysConfig {
            ssh_authorized_keys: Vec::new(),
            default_user: None,
            system_info: None,
            users: None,
            disable_root: true,
            disable_root_opts: DEFAULT_DISABLE_ROOT_OPTS.to_string(),
            no_ssh_fingerprints: false,
            allow_public_ssh_keys: true,
        }
    }
}

/// `default_user`: a name or cloud-init's map; only `name` matters here (the
/// `users-groups` module checks the other settings).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DefaultUserName {
    Name(String),
    Spec {
        name: Option<String>,
        #[serde(flatten)]
        #[schemars(skip)]
        rest: serde_json::Map<String, serde_json::Value>,
    },
}

impl DefaultUserName {
    pub fn name(&self) -> Option<&str> {
        match self {
            DefaultUserName::Name(n) => Some(n),
            DefaultUserName::Spec { name, .. } => name.as_deref(),
        }
    }
}

impl<'de> Deserialize<'de> for DefaultUserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::String(n) => Ok(DefaultUserName::Name(n)),
            serde_json::Value::Object(mut m) => {
                let name = match m.remove("name") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(n)) => Some(n),
                    Some(_) => {
                        return Err(de::Error::custom("default_user: `name` must be a string"));
                    }
                };
                Ok(DefaultUserName::Spec { name, rest: m })
            }
            _ => Err(de::Error::custom(
                "default_user must be a user name or a map with `name`",
            )),
        }
    }
}

/// cloud-init's `system_info`, for its `default_user` only.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfoUser {
    pub default_user: Option<DefaultUserName>,
}

impl AuthorizedKeysConfig {
    /// The account that gets the instance's keys: `default_user`, else
    /// `system_info.default_user`; none when `users: []`.
    pub fn effective_default_user(&self) -> Option<String> {
        if self.users.as_ref().is_some_and(Vec::is_empty) {
            return None;
        }
        self.configured_default_user()
    }

    /// The default user the image or user-data names, whether or not `users: []` removes it.
    fn configured_default_user(&self) -> Option<String> {
        self.default_user
            .as_ref()
            .or_else(|| self.system_info.as_ref()?.default_user.as_ref())
            .and_then(|d| d.name())
            .map(str::to_string)
    }
}

/// An entry of `users`: a name (cloud-init's `default` or a user name: no keys to
/// install) or a user with keys.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum UserEntry {
    Name(String),
    User(Box<UserSpec>),
}

// By hand rather than `untagged`, so an error inside a user (a typo) keeps its message.
impl<'de> Deserialize<'de> for UserEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UserEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a user name or a map with `name` and `ssh_authorized_keys`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserEntry, E> {
                Ok(UserEntry::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UserEntry, A::Error> {
                UserSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|u| UserEntry::User(Box::new(u)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Declares [`UserSpec`]: `name`, `ssh_authorized_keys`, and cloud-init's other
/// user settings, accepted here and done by the `users-groups` module (which
/// checks their types and values).
macro_rules! user_spec {
    ($($(#[$m:meta])* $field:ident),* $(,)?) => {
        /// A user from `users:`; this module installs its keys.
        #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct UserSpec {
            /// Absent only in cloud-init's `snapuser` form (skipped).
            #[serde(default)]
            pub name: Option<String>,
            #[serde(default, alias = "ssh-authorized-keys")]
            pub ssh_authorized_keys: Vec<String>,
            $(
                /// cloud-init user setting (done by `users-groups`).
                $(#[$m])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<serde_json::Value>,
            )*
        }
    };
}

user_spec!(
    create_groups,
    doas,
    expiredate,
    gecos,
    groups,
    hashed_passwd,
    homedir,
    inactive,
    #[serde(alias = "lock-passwd")]
    lock_passwd,
    no_create_home,
    no_log_init,
    no_user_group,
    passwd,
    plain_text_passwd,
    primary_group,
    selinux_user,
    shell,
    snapuser,
    ssh_import_id,
    ssh_redirect_user,
    sudo,
    system,
    uid,
);

pub struct AuthorizedKeys;

/// A key wanted for a user, with where it came from.
struct Wanted {
    source: String,
    text: String,
    /// Options replacing the line's own (root under `disable_root`).
    force_options: Option<String>,
}

struct Target {
    name: String,
    keys: Vec<Wanted>,
    /// Configured explicitly (default user or `users:`), so a missing account is worth a warning.
    explicit: bool,
}

/// What happened for one user.
#[derive(Serialize)]
struct Applied {
    user: String,
    keys: usize,
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// `ssh-keygen -l` lines of every key in the file (stoke's and others'), each with
    /// `, with options` when it has options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fingerprints: Vec<String>,
}

#[stoke_api::async_trait]
impl Module for AuthorizedKeys {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "ssh-authorized-keys",
            // Where the keys are local (a NoCloud seed, cached metadata) they are
            // in place before sshd starts; on a new EC2 instance this waits for
            // the network stage, and logins wait with it.
            stage: Stage::Local,
            frequency: Frequency::PerInstance,
            // users-groups creates the accounts (the default user too) first.
            after: &["users-groups"],
            needs_metadata: true,
            before_logins: true,
            timeout: Duration::from_secs(60),
            config: config_spec::<AuthorizedKeysConfig>().lenient(&["users"]),
            order: stoke_api::Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: AuthorizedKeysConfig = ctx.config()?;
        let mut warnings = Vec::new();
        let targets = targets(ctx, &cfg, &mut warnings);

        let mut applied = Vec::new();
        let mut failures = Vec::new();
        let mut bad_lines = Vec::new();
        for t in &targets {
            match apply(ctx, t, &mut bad_lines) {
                Ok(Some(a)) => applied.push(a),
                Ok(None) if t.explicit => warnings.push(format!(
                    "user {} does not exist or has no home; nothing to do (no keys for it)",
                    t.name
                )),
                Ok(None) => {}
                Err(e) => failures.push(format!("{}: {e}", t.name)),
            }
        }
        let bad_count = bad_lines.len();
        if bad_count > MAX_LINE_WARNINGS {
            let more = bad_count - MAX_LINE_WARNINGS;
            bad_lines.truncate(MAX_LINE_WARNINGS);
            bad_lines.push(format!("... and {more} more bad key lines skipped"));
        }
        warnings.extend(bad_lines);
        for w in &warnings {
            tracing::warn!("{w}");
        }
        if cfg.no_ssh_fingerprints {
            for a in &mut applied {
                a.fingerprints.clear();
            }
        } else {
            let text = fingerprint_text(&applied);
            if !text.is_empty()
                && let Err(e) = ctx.system.console(&text)
            {
                warnings.push(format!(
                    "printing authorized key fingerprints to the console: {e}"
                ));
            }
        }

        let done: Vec<String> = applied
            .iter()
            .filter(|a| a.keys > 0 || a.changed)
            .map(|a| {
                format!(
                    "{} ({} keys{})",
                    a.user,
                    a.keys,
                    if a.changed { "" } else { ", unchanged" }
                )
            })
            .collect();
        if !failures.is_empty() {
            for f in &failures {
                tracing::error!("authorized keys for {f}");
            }
            return Err(ModuleError::Other(format!(
                "authorized keys failed for {}; applied for: {}{}",
                failures.join("; "),
                if done.is_empty() {
                    "nobody".to_string()
                } else {
                    done.join(", ")
                },
                if bad_count > 0 {
                    format!("; {bad_count} bad key lines skipped")
                } else {
                    String::new()
                }
            )));
        }
        let mut summary = if done.is_empty() {
            "authorized keys: nothing to install".to_string()
        } else {
            format!("authorized keys: {}", done.join(", "))
        };
        if !cfg.allow_public_ssh_keys && !ctx.instance.public_keys.is_empty() {
            summary.push_str(&format!(
                "; {} metadata keys not installed (allow_public_ssh_keys: false)",
                ctx.instance.public_keys.len()
            ));
        }
        let mut report = Report::new(summary).with_details(json!({
            "users": applied,
            "bad_lines": bad_count,
        }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: AuthorizedKeysConfig = ctx.config().ok()?;
        let meta = if cfg.allow_public_ssh_keys {
            ctx.instance.public_keys.len()
        } else {
            0
        };
        let n = meta + cfg.ssh_authorized_keys.len();
        Some(match &cfg.effective_default_user() {
            Some(u) => format!(
                "{n} keys for {u} and root (disable_root: {})",
                cfg.disable_root
            ),
            None => format!(
                "no default_user; {n} keys; users: {}",
                cfg.users.as_ref().map_or(0, Vec::len)
            ),
        })
    }
}

/// Who gets which keys: the default user, root, then `users:` (merged by name).
fn targets(ctx: &Context, cfg: &AuthorizedKeysConfig, warnings: &mut Vec<String>) -> Vec<Target> {
    let shared = || {
        let meta = ctx
            .instance
            .public_keys
            .iter()
            .filter(|_| cfg.allow_public_ssh_keys)
            .enumerate()
            .map(|(i, k)| Wanted {
                source: format!("metadata public-keys[{i}]"),
                text: k.clone(),
                force_options: None,
            });
        let conf = cfg
            .ssh_authorized_keys
            .iter()
            .enumerate()
            .map(|(i, k)| Wanted {
                source: format!("config ssh_authorized_keys[{i}]"),
                text: k.clone(),
                force_options: None,
            });
        meta.chain(conf).collect::<Vec<_>>()
    };
    let mut targets = Vec::new();
    let default_user = cfg.effective_default_user();
    let root_keys = match (&default_user, cfg.disable_root) {
        // Root as the default user: plain keys, once (redirecting root to root is nonsense).
        (Some(du), _) if du == "root" => shared(),
        (Some(du), disable) => {
            targets.push(Target {
                name: du.clone(),
                keys: shared(),
                explicit: true,
            });
            let force = disable.then(|| {
                cfg.disable_root_opts
                    .replace("$USER", du)
                    .replace("$DISABLE_USER", "root")
            });
            shared()
                .into_iter()
                .map(|w| Wanted {
                    force_options: force.clone(),
                    ..w
                })
                .collect()
        }
        (None, false) => shared(),
        (None, true) => {
            let n = shared().len();
            let why = if cfg.users.as_ref().is_some_and(Vec::is_empty) {
                "`users: []`"
            } else {
                "no default_user is set"
            };
            if n > 0 {
                warnings.push(format!(
                    "{n} keys from metadata/ssh_authorized_keys not installed: no default user ({why}; \
                     set default_user, or disable_root: false to install them for root)"
                ));
            }
            Vec::new()
        }
    };
    targets.push(Target {
        name: "root".into(),
        keys: root_keys,
        explicit: default_user.as_deref() == Some("root"),
    });
    // `users: []` removes the image's default user: no instance keys for it, and none left
    // from an earlier instance either (its stoke block goes, as root's does).
    if default_user.is_none()
        && let Some(du) = cfg.configured_default_user()
        && du != "root"
    {
        targets.push(Target {
            name: du,
            keys: Vec::new(),
            explicit: false,
        });
    }
    for (j, entry) in cfg.users.iter().flatten().enumerate() {
        let UserEntry::User(u) = entry else { continue };
        // The snapuser form has no name: users-groups warns and skips it.
        let Some(name) = u.name.as_deref() else {
            continue;
        };
        if name == "default" {
            continue;
        }
        let keys = u
            .ssh_authorized_keys
            .iter()
            .enumerate()
            .map(|(i, k)| Wanted {
                source: format!("config users[{j}] ({name}) ssh_authorized_keys[{i}]"),
                text: k.clone(),
                force_options: None,
            });
        match targets.iter_mut().find(|t| t.name == name) {
            Some(t) => {
                t.keys.extend(keys);
                t.explicit = true;
            }
            None => targets.push(Target {
                name: name.to_string(),
                keys: keys.collect(),
                explicit: true,
            }),
        }
    }
    targets
}

/// The validated, de-duplicated lines for a target; bad lines go to `bad`.
fn render_lines(t: &Target, bad: &mut Vec<String>) -> Result<Vec<String>, ModuleError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for w in &t.keys {
        if let Some(opts) = &w.force_options {
            keyline::check_options(opts)
                .map_err(|e| ModuleError::Invalid(format!("disable_root_opts: {e}")))?;
        }
        // Unicode's line and paragraph separators end a line too: a second key hidden after
        // one would otherwise ride along in the first key's comment.
        let lines = || w.text.trim().split(['\n', '\u{2028}', '\u{2029}']);
        let multi = lines().count() > 1;
        for (n, line) in lines().enumerate() {
            match keyline::parse(line) {
                Ok(None) => {}
                Ok(Some(k)) => {
                    if seen.insert((k.key_type.clone(), k.base64.clone())) {
                        out.push(k.render(w.force_options.as_deref()));
                    }
                }
                Err(e) => {
                    let at = if multi {
                        format!(" line {}", n + 1)
                    } else {
                        String::new()
                    };
                    bad.push(format!("{}{at} (for {}): {e}; skipped", w.source, t.name));
                }
            }
        }
    }
    Ok(out)
}

/// Installs one user's keys. `Ok(None)`: nothing to do (no such user or home, and no keys).
fn apply(ctx: &Context, t: &Target, bad: &mut Vec<String>) -> Result<Option<Applied>, ModuleError> {
    let lines = render_lines(t, bad)?;
    let passwd = ctx.host_path("/etc/passwd");
    let user =
        lookup_user(&ctx.root, &t.name).map_err(|e| ModuleError::io("reading", &passwd, e))?;
    let Some(user) = user else {
        if lines.is_empty() {
            return Ok(None);
        }
        return Err(ModuleError::Other(format!(
            "no user `{}` in {} (users-groups did not create it); its {} keys were not installed",
            t.name,
            passwd.display(),
            lines.len()
        )));
    };
    let home_path = ctx.host_path(&user.home);
    let Some(home) = safefs::open_home(&ctx.root, &user)? else {
        if lines.is_empty() {
            return Ok(None);
        }
        return Err(ModuleError::Other(format!(
            "home directory {} does not exist (stoke does not create homes); {} keys not installed",
            home_path.display(),
            lines.len()
        )));
    };
    let owner = Owner {
        user: &user,
        also_uid: (!ctx.system.executes()).then(|| nix::unistd::geteuid().as_raw()),
    };
    let ssh_path = home_path.join(".ssh");
    let Some(ssh) = safefs::open_ssh_dir(
        &home,
        &ssh_path,
        !lines.is_empty(),
        &owner,
        ctx.system.as_ref(),
    )?
    else {
        return Ok(Some(Applied {
            user: user.name,
            keys: 0,
            changed: false,
            file: None,
            fingerprints: Vec::new(),
        }));
    };
    let file = ssh_path.join("authorized_keys");
    let existing = safefs::read_keys_file(&ssh, &file, &owner)?;
    let (text, mode) = match &existing {
        Some((text, mode)) => (text.as_str(), mode & 0o644),
        None if lines.is_empty() => {
            return Ok(Some(Applied {
                user: user.name,
                keys: 0,
                changed: false,
                file: None,
                fingerprints: Vec::new(),
            }));
        }
        None => ("", 0o600),
    };
    check_markers(text, &file)?;
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let updated = managed_block(text, BEGIN, END, &body);
    let changed = existing.is_none() || updated != text;
    if changed {
        safefs::write_keys_file(
            &ssh,
            &file,
            updated.as_bytes(),
            mode,
            &user,
            ctx.system.as_ref(),
        )?;
    }
    Ok(Some(Applied {
        user: user.name,
        keys: lines.len(),
        changed,
        file: Some(file.display().to_string()),
        fingerprints: file_fingerprints(&updated),
    }))
}

/// The fingerprint of every key line in an `authorized_keys` text (any line sshd would use,
/// not only stoke's).
fn file_fingerprints(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let key = keyline::parse(line).ok()??;
            let fp = crate::fingerprint::fingerprint(&key)?;
            Some(if key.options.is_some() {
                format!("{fp}, with options")
            } else {
                fp
            })
        })
        .collect()
}

/// The console lines for each user whose `authorized_keys` stoke handled, like cloud-init's
/// log of authorized key fingerprints, so the console (EC2's console output) shows which
/// keys can log in as whom.
fn fingerprint_text(applied: &[Applied]) -> String {
    let mut out = String::new();
    for a in applied {
        let Some(file) = &a.file else { continue };
        if a.fingerprints.is_empty() {
            out.push_str(&format!(
                "stoke: authorized keys for {} ({file}): none\n",
                a.user
            ));
            continue;
        }
        out.push_str(&format!(
            "stoke: authorized keys for {} ({file}):\n",
            a.user
        ));
        for fp in &a.fingerprints {
            out.push_str(&format!("stoke:   {fp}\n"));
        }
    }
    out
}

/// A block that is half there (one marker, or two of one) cannot be replaced
/// without guessing which lines are ours: refuse rather than eat foreign keys.
fn check_markers(text: &str, path: &Path) -> Result<(), ModuleError> {
    let begins: Vec<usize> = marker_lines(text, BEGIN);
    let ends: Vec<usize> = marker_lines(text, END);
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => Ok(()),
        ([b], [e]) if b < e => Ok(()),
        _ => Err(ModuleError::Refused(format!(
            "{} has a damaged stoke block ({} begin and {} end markers); fix it by hand",
            path.display(),
            begins.len(),
            ends.len()
        ))),
    }
}

fn marker_lines(text: &str, marker: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end() == marker)
        .map(|(i, _)| i)
        .collect()
}
