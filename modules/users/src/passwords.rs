//! `set-passwords`: cloud-init's `ssh_pwauth` and `chpasswd` (its set_passwords module).
//!
//! Per instance, stage `local`, after `users-groups` (the accounts exist) and before
//! logins (sshd starts with the setting in place). Everything is checked before the
//! first change: a bad entry fails the module naming it, with nothing set.
//!
//! - `ssh_pwauth: true|false|unchanged`: `PasswordAuthentication yes|no` in the drop-in
//!   `/etc/ssh/sshd_config.d/50-stoke-pwauth.conf` when the image's sshd_config includes
//!   `sshd_config.d/*.conf`, else a managed block at the top of sshd_config (sshd takes
//!   the first value it reads). sshd is reloaded with `systemctl try-reload-or-restart`,
//!   which does nothing unless it runs, and only when the file changed.
//! - `chpasswd: {users: [{name, password, type: hash|text|RANDOM}], expire: true}`:
//!   hashes through `chpasswd --encrypted`, text through `chpasswd`, both on stdin
//!   (never in an argv); RANDOM passwords are generated here and printed to the
//!   console only; `expire` makes each user change it at first login
//!   (`passwd --expire`). The old `list:` string form is read with a warning.

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage,
    config_spec, lookup_user, managed_block, tools,
};

use crate::{check_name, root_args, run_checked};

const CMD_TIMEOUT: Duration = Duration::from_secs(30);
const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
const DROP_IN_DIR: &str = "/etc/ssh/sshd_config.d";
const DROP_IN: &str = "/etc/ssh/sshd_config.d/50-stoke-pwauth.conf";
const BEGIN: &str = "# BEGIN stoke ssh_pwauth";
const END: &str = "# END stoke ssh_pwauth";
/// cloud-init's alphabet for random passwords: letters and digits without the
/// look-alikes `l o L O I 0 1`.
const RANDOM_SET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
const RANDOM_LEN: usize = 20;

pub struct SetPasswords;

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PasswordsConfig {
    /// `true`, `false` or `unchanged` (default): sshd's PasswordAuthentication.
    pub ssh_pwauth: Option<PwAuth>,
    /// cloud-init's `chpasswd`: `{users: [{name, password, type}], expire: true}`.
    pub chpasswd: Option<Chpasswd>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PwAuth {
    Yes,
    No,
    Unchanged,
    /// Any other string or a number, read as cloud-init reads it (deprecated there): `yes`,
    /// `on`, `1`… set it, `no`, `off`, `0`… unset it, anything else leaves sshd unchanged
    /// with a warning.
    Text(String),
}

impl PwAuth {
    /// `Some(true|false)`: PasswordAuthentication yes|no; `None`: sshd left as it is.
    pub fn setting(&self) -> Option<bool> {
        match self {
            PwAuth::Yes => Some(true),
            PwAuth::No => Some(false),
            PwAuth::Unchanged => None,
            PwAuth::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" => Some(true),
                "false" | "0" | "off" | "no" => Some(false),
                _ => None,
            },
        }
    }
}

impl<'de> Deserialize<'de> for PwAuth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(PwAuth::Yes),
            serde_json::Value::Bool(false) => Ok(PwAuth::No),
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("unchanged") => {
                Ok(PwAuth::Unchanged)
            }
            serde_json::Value::String(s) => Ok(PwAuth::Text(s)),
            serde_json::Value::Number(n) => Ok(PwAuth::Text(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "ssh_pwauth {other}: expected true, false or unchanged"
            ))),
        }
    }
}

impl JsonSchema for PwAuth {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PwAuth".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "true, false or \"unchanged\" (cloud-init's other strings, deprecated there, are read as it reads them)",
            "oneOf": [{"type": "boolean"}, {"type": "string"}]
        })
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chpasswd {
    /// Make each user whose password is set change it at the next login. Default true.
    #[serde(default = "yes")]
    pub expire: bool,
    #[serde(default)]
    pub users: Vec<PasswordEntry>,
    /// Deprecated (cloud-init too): `name:password` lines (a string or a list).
    #[serde(default)]
    pub list: Option<ListForm>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ListForm {
    Text(String),
    Lines(Vec<String>),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordEntry {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    /// `hash` (default), `text` or `RANDOM`.
    #[serde(default, rename = "type")]
    pub kind: Option<PwType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize, JsonSchema)]
pub enum PwType {
    #[serde(rename = "hash")]
    Hash,
    #[serde(rename = "text")]
    Text,
    #[serde(rename = "RANDOM")]
    Random,
}

/// One password to set, checked.
struct Want {
    label: String,
    name: String,
    kind: PwType,
    /// The hash or the text; for RANDOM, generated.
    secret: String,
}

/// A crypt(3) hash as chpasswd --encrypted takes it: `$id$...`, no `:` or whitespace.
fn looks_hashed(p: &str) -> bool {
    p.starts_with('$')
        && p.matches('$').count() >= 3
        && !p.contains(|c: char| c == ':' || c.is_whitespace())
}

fn random_password() -> Result<String, ModuleError> {
    let mut out = String::with_capacity(RANDOM_LEN);
    let mut buf = [0u8; 64];
    // Rejection sampling: only bytes below a multiple of the alphabet's size, so
    // every character is equally likely.
    let limit = 256 - 256 % RANDOM_SET.len();
    while out.len() < RANDOM_LEN {
        getrandom::fill(&mut buf)
            .map_err(|e| ModuleError::Other(format!("chpasswd: no random bytes: {e}")))?;
        for b in buf {
            if (b as usize) < limit && out.len() < RANDOM_LEN {
                out.push(RANDOM_SET[b as usize % RANDOM_SET.len()] as char);
            }
        }
    }
    Ok(out)
}

fn wants(
    ctx: &Context,
    c: &Chpasswd,
    warnings: &mut Vec<String>,
) -> Result<Vec<Want>, ModuleError> {
    let bad = |label: &str, why: String| ModuleError::Invalid(format!("{label}: {why}"));
    let mut out: Vec<Want> = Vec::new();
    let mut entries: Vec<(String, String, Option<String>, Option<PwType>)> = c
        .users
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                format!("chpasswd.users[{i}] ({})", e.name),
                e.name.clone(),
                e.password.clone(),
                e.kind,
            )
        })
        .collect();
    if let Some(list) = &c.list {
        warnings
            .push("chpasswd.list is deprecated (as in cloud-init): use chpasswd.users".to_string());
        let lines: Vec<String> = match list {
            ListForm::Text(t) => t.lines().map(str::to_string).collect(),
            ListForm::Lines(l) => l.clone(),
        };
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let label = format!("chpasswd.list line {}", i + 1);
            let Some((name, pw)) = line.split_once(':') else {
                return Err(bad(&label, "expected `name:password`".into()));
            };
            // cloud-init's reading: R/RANDOM is random, a crypt hash is a hash, else text.
            let kind = if pw == "R" || pw == "RANDOM" {
                PwType::Random
            } else if looks_hashed(pw) {
                PwType::Hash
            } else {
                PwType::Text
            };
            entries.push((
                format!("{label} ({name})"),
                name.into(),
                Some(pw.into()),
                Some(kind),
            ));
        }
    }
    for (label, name, password, kind) in entries {
        check_name(&name).map_err(|e| bad(&label, e))?;
        if out.iter().any(|w| w.name == name) {
            return Err(bad(&label, "a second password for the same user".into()));
        }
        match lookup_user(&ctx.root, &name) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(bad(&label, format!("no user `{name}` in /etc/passwd"))),
            Err(e) => return Err(bad(&label, format!("reading /etc/passwd: {e}"))),
        }
        let kind = kind.unwrap_or(PwType::Hash);
        let secret = match (kind, password) {
            (PwType::Random, _) => random_password()?,
            (_, None) => return Err(bad(&label, "no `password` (or `type: RANDOM`)".into())),
            (PwType::Hash, Some(p)) if !looks_hashed(&p) => {
                return Err(bad(
                    &label,
                    "type hash, but the password is not a crypt(3) hash (`$6$...`); \
                     say `type: text` for a clear-text password"
                        .into(),
                ));
            }
            (PwType::Text, Some(p)) if p.is_empty() || p.contains(['\n', '\r']) => {
                return Err(bad(
                    &label,
                    "an empty password or one with a newline".into(),
                ));
            }
            (_, Some(p)) => p,
        };
        if kind == PwType::Text {
            warnings.push(format!(
                "{label}: a clear-text password stays in the state copy of user-data"
            ));
        }
        out.push(Want {
            label,
            name,
            kind,
            secret,
        });
    }
    Ok(out)
}

/// Whether sshd_config reads `sshd_config.d/*.conf` (relative names are under /etc/ssh).
fn includes_drop_ins(sshd_config: &str) -> bool {
    sshd_config.lines().any(|l| {
        let mut words = l.split_whitespace();
        words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("include"))
            && words.any(|w| w == "/etc/ssh/sshd_config.d/*.conf" || w == "sshd_config.d/*.conf")
    })
}

/// Sets PasswordAuthentication; returns where, and whether it changed.
async fn set_pwauth(
    ctx: &Context,
    rd: &RootDir,
    yes: bool,
    notes: &mut Vec<String>,
) -> Result<Option<(String, bool)>, ModuleError> {
    let cfg_path = Path::new(SSHD_CONFIG);
    let io = |what: &'static str, p: &str| {
        let host = ctx.host_path(p);
        move |e| ModuleError::io(what, host, e)
    };
    let Some(main) = rd
        .read_regular(cfg_path, 1 << 20)
        .map_err(io("reading", SSHD_CONFIG))?
    else {
        notes.push(format!(
            "ssh_pwauth: no {SSHD_CONFIG}: sshd is not installed; nothing set"
        ));
        return Ok(None);
    };
    let main = String::from_utf8(main)
        .map_err(|_| ModuleError::Other(format!("{SSHD_CONFIG} is not UTF-8")))?;
    let line = format!(
        "PasswordAuthentication {}\n",
        if yes { "yes" } else { "no" }
    );
    let (path, changed) = if includes_drop_ins(&main) {
        let text = format!("# Written by stoke from ssh_pwauth (per instance).\n{line}");
        let old = rd
            .read_regular(Path::new(DROP_IN), 1 << 20)
            .map_err(io("reading", DROP_IN))?;
        let changed = old.as_deref() != Some(text.as_bytes());
        if changed {
            rd.create_dir_all(Path::new(DROP_IN_DIR), 0o755)
                .map_err(io("creating", DROP_IN_DIR))?;
            rd.write_atomic(
                Path::new(DROP_IN),
                text.as_bytes(),
                0o644,
                None,
                &*ctx.system,
            )
            .map_err(io("writing", DROP_IN))?;
        }
        (DROP_IN, changed)
    } else {
        // First value wins in sshd_config: the block goes to the top, before any
        // PasswordAuthentication or Match line of the image's.
        let without = managed_block(&main, BEGIN, END, "");
        let text = format!("{BEGIN}\n{line}{END}\n{without}");
        let changed = text != main;
        if changed {
            rd.write_atomic(cfg_path, text.as_bytes(), 0o644, None, &*ctx.system)
                .map_err(io("writing", SSHD_CONFIG))?;
        }
        (SSHD_CONFIG, changed)
    };
    if changed {
        // Debian's unit is ssh.service, the others' sshd.service; try-reload-or-restart
        // does nothing when it is not running (as during boot, before sshd starts).
        let unit = if [
            "/usr/lib/systemd/system",
            "/lib/systemd/system",
            "/etc/systemd/system",
        ]
        .iter()
        .any(|d| {
            ctx.root
                .fs()
                .is_ok_and(|rd| rd.exists(Path::new(&format!("{d}/ssh.service"))))
        }) {
            "ssh.service"
        } else {
            "sshd.service"
        };
        let cmd = Cmd::new(ctx.tool(tools::SYSTEMCTL), ["try-reload-or-restart", unit])
            .timeout(CMD_TIMEOUT);
        match ctx.system.run(&cmd).await {
            Ok(o) if o.success() => {}
            Ok(o) => notes.push(format!("reloading {unit}: {}", o.stderr.trim())),
            Err(e) => notes.push(format!("reloading {unit}: {e}")),
        }
    }
    Ok(Some((path.to_string(), changed)))
}

#[stoke_api::async_trait]
impl Module for SetPasswords {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "set-passwords",
            stage: Stage::Local,
            frequency: Frequency::PerInstance,
            after: &["users-groups"],
            needs_metadata: false,
            before_logins: true,
            timeout: Duration::from_secs(120),
            config: config_spec::<PasswordsConfig>(),
            order: Order::Normal,
        }
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        let cfg: PasswordsConfig = serde_json::from_value(config.clone()).ok()?;
        let pw = matches!(
            cfg.ssh_pwauth,
            Some(PwAuth::Yes | PwAuth::No | PwAuth::Text(_))
        );
        let ch = cfg
            .chpasswd
            .is_some_and(|c| !c.users.is_empty() || c.list.is_some());
        (!pw && !ch).then(|| "no `ssh_pwauth` or `chpasswd` entries".to_string())
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: PasswordsConfig = ctx.config()?;
        let rd =
            RootDir::open(&ctx.root).map_err(|e| ModuleError::io("opening", ctx.root.dir(), e))?;
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        let (want, expire) = match &cfg.chpasswd {
            Some(c) => (wants(ctx, c, &mut warnings)?, c.expire),
            None => (Vec::new(), false),
        };
        if let Some(PwAuth::Text(text)) = &cfg.ssh_pwauth {
            warnings.push(match cfg.ssh_pwauth.as_ref().and_then(PwAuth::setting) {
                Some(b) => format!(
                    "ssh_pwauth: {text:?} read as {b}; a string here is deprecated (as in cloud-init): use true or false"
                ),
                None => format!(
                    "ssh_pwauth: unrecognized value {text:?} (true, false or unchanged); sshd's PasswordAuthentication left unchanged"
                ),
            });
        }
        let pwauth = match cfg.ssh_pwauth.as_ref().and_then(PwAuth::setting) {
            Some(b) => set_pwauth(ctx, &rd, b, &mut notes).await?,
            None => None,
        };
        let root = root_args(ctx);
        let tool = |t: &str| ctx.tool(t);
        // One chpasswd per kind, every user's line on stdin.
        for (encrypted, kinds) in [
            (true, &[PwType::Hash][..]),
            (false, &[PwType::Text, PwType::Random][..]),
        ] {
            let lines: String = want
                .iter()
                .filter(|w| kinds.contains(&w.kind))
                .map(|w| format!("{}:{}\n", w.name, w.secret))
                .collect();
            if lines.is_empty() {
                continue;
            }
            let mut args = root.clone();
            if encrypted {
                args.push("--encrypted".into());
            }
            let who: Vec<&str> = want
                .iter()
                .filter(|w| kinds.contains(&w.kind))
                .map(|w| w.label.as_str())
                .collect();
            run_checked(
                ctx,
                Cmd::new(tool(tools::CHPASSWD), args)
                    .stdin(lines)
                    .timeout(CMD_TIMEOUT),
                &format!("setting the passwords of {}", who.join(", ")),
            )
            .await?;
        }
        let random: Vec<&Want> = want.iter().filter(|w| w.kind == PwType::Random).collect();
        if !random.is_empty() {
            // The console only (EC2's console output): never the log, status or report.
            let mut text = String::from("stoke: set the following 'random' passwords\n");
            for w in &random {
                text.push_str(&format!("{}:{}\n", w.name, w.secret));
            }
            ctx.system.console(&text)?;
        }
        if expire {
            for w in &want {
                let mut args = root.clone();
                args.extend(["--expire".into(), w.name.clone()]);
                run_checked(
                    ctx,
                    Cmd::new(tool(tools::PASSWD), args).timeout(CMD_TIMEOUT),
                    &format!("{}: expiring the password", w.label),
                )
                .await?;
            }
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let mut summary = Vec::new();
        if let Some((path, changed)) = &pwauth {
            summary.push(format!(
                "PasswordAuthentication {} in {path}{}",
                if cfg.ssh_pwauth.as_ref().and_then(PwAuth::setting) == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                if *changed { "" } else { " (unchanged)" }
            ));
        }
        if !want.is_empty() {
            summary.push(format!(
                "{} passwords set{}",
                want.len(),
                if expire { ", expired" } else { "" }
            ));
        }
        if summary.is_empty() {
            summary.push("nothing to do".into());
        }
        let mut report = Report::new(format!("set-passwords: {}", summary.join("; ")))
            .with_details(json!({
                "ssh_pwauth": pwauth.as_ref().map(|(p, c)| json!({"file": p, "changed": c})),
                "passwords_set": want.iter().map(|w| &w.name).collect::<Vec<_>>(),
                "random": random.iter().map(|w| &w.name).collect::<Vec<_>>(),
                "expired": expire && !want.is_empty(),
                "notes": notes,
            }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }
}

#[cfg(test)]
pub fn tests_alphabet() -> &'static [u8] {
    RANDOM_SET
}
