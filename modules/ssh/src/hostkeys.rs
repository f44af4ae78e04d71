//! `ssh-host-keys`: every instance gets its own SSH host keys.
//!
//! A baked image carries whatever host keys existed when it was built; if they
//! stayed, every instance of the fleet would share them and anyone with the image
//! could impersonate any instance. So, per instance and before sshd starts: delete
//! the image's keys, install provided ones, generate the rest (concurrently), and
//! print the fingerprints to the console where EC2's console output can show them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, FileKind, Frequency, Module, ModuleError, ModuleSpec, Report, RootDir, Stage,
    config_spec, managed_block, tools,
};

use crate::keyline;

/// Key generation can wait on the kernel's entropy pool early in boot.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(120);

const CERT_BEGIN: &str = "# BEGIN stoke host certificates (managed by stoke; rewritten at boot)";
const CERT_END: &str = "# END stoke host certificates";

/// Host key algorithms, by cloud-init's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Ecdsa,
    Ed25519,
    Rsa,
    /// Accepted so existing cloud-configs still load; OpenSSH no longer supports
    /// DSA host keys, so it is skipped with a warning.
    Dsa,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ecdsa => "ecdsa",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
            KeyType::Dsa => "dsa",
        }
    }

    /// `/etc/ssh/ssh_host_<type>_key`, as the instance sees it.
    pub fn private_path(self) -> String {
        format!("/etc/ssh/ssh_host_{}_key", self.name())
    }
}

/// Host keys supplied in configuration instead of generated (cloud-init `ssh_keys`).
/// Each type takes `<type>_private`, `<type>_public` (derived from the private
/// key when absent) and `<type>_certificate` (also configures `HostCertificate`).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidedKeys {
    pub ed25519_private: Option<String>,
    pub ed25519_public: Option<String>,
    pub ed25519_certificate: Option<String>,
    pub ecdsa_private: Option<String>,
    pub ecdsa_public: Option<String>,
    pub ecdsa_certificate: Option<String>,
    pub rsa_private: Option<String>,
    pub rsa_public: Option<String>,
    pub rsa_certificate: Option<String>,
    /// Accepted for compatibility; ignored with a warning (OpenSSH dropped DSA).
    pub dsa_private: Option<String>,
    /// Accepted for compatibility; ignored with a warning (OpenSSH dropped DSA).
    pub dsa_public: Option<String>,
}

struct Provided<'a> {
    key_type: KeyType,
    private: Option<&'a str>,
    public: Option<&'a str>,
    certificate: Option<&'a str>,
}

impl ProvidedKeys {
    fn by_type(&self) -> [Provided<'_>; 3] {
        fn p<'a>(
            key_type: KeyType,
            private: &'a Option<String>,
            public: &'a Option<String>,
            cert: &'a Option<String>,
        ) -> Provided<'a> {
            Provided {
                key_type,
                private: private.as_deref(),
                public: public.as_deref(),
                certificate: cert.as_deref(),
            }
        }
        [
            p(
                KeyType::Ecdsa,
                &self.ecdsa_private,
                &self.ecdsa_public,
                &self.ecdsa_certificate,
            ),
            p(
                KeyType::Ed25519,
                &self.ed25519_private,
                &self.ed25519_public,
                &self.ed25519_certificate,
            ),
            p(
                KeyType::Rsa,
                &self.rsa_private,
                &self.rsa_public,
                &self.rsa_certificate,
            ),
        ]
    }
}

/// Configuration keys (cloud-init names).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HostKeysConfig {
    /// Delete the image's `/etc/ssh/ssh_host_*key*` first. Default true.
    pub ssh_deletekeys: bool,
    /// Key types to generate (those not given in `ssh_keys`). Default ed25519, ecdsa, rsa.
    pub ssh_genkeytypes: Vec<KeyType>,
    /// Host keys to install instead of generating them.
    pub ssh_keys: ProvidedKeys,
    /// cloud-init's `ssh: {emit_keys_to_console: false}` turns the console host key block off.
    pub ssh: SshConsole,
    /// Key types whose fingerprints are left out of the console block (`ssh-rsa`, or `rsa`).
    pub ssh_fp_console_blacklist: Vec<String>,
    /// Key types whose public keys are left out of the console block (`ssh-rsa`, or `rsa`).
    pub ssh_key_console_blacklist: Vec<String>,
}

impl Default for HostKeysConfig {
    fn default() -> Self {
        HostKeysConfig {
            ssh_deletekeys: true,
            ssh_genkeytypes: vec![KeyType::Ed25519, KeyType::Ecdsa, KeyType::Rsa],
            ssh_keys: ProvidedKeys::default(),
            ssh: SshConsole::default(),
            ssh_fp_console_blacklist: Vec::new(),
            ssh_key_console_blacklist: Vec::new(),
        }
    }
}

/// cloud-init's `ssh:` section.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SshConsole {
    /// Print the host keys and their fingerprints to the console. Default true.
    pub emit_keys_to_console: bool,
}

impl Default for SshConsole {
    fn default() -> Self {
        SshConsole {
            emit_keys_to_console: true,
        }
    }
}

/// The key types of a console blacklist entry: the type as the `.pub` file names it (what
/// cloud-init compares), or stoke's short name for it (`rsa`; cloud-init's own documentation
/// uses those, though its comparison never matches them). `None`: no such type.
fn blacklisted_types(entry: &str) -> Option<&'static [&'static str]> {
    Some(match entry.trim() {
        "ssh-rsa" | "rsa" => &["ssh-rsa"],
        "ssh-ed25519" | "ed25519" => &["ssh-ed25519"],
        "ssh-dss" | "dsa" => &["ssh-dss"],
        "ecdsa" => &[
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
        ],
        "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
        "sk-ssh-ed25519@openssh.com" => &["sk-ssh-ed25519@openssh.com"],
        "sk-ecdsa-sha2-nistp256@openssh.com" => &["sk-ecdsa-sha2-nistp256@openssh.com"],
        _ => return None,
    })
}

/// The key types a blacklist leaves out; an entry that names no key type is a warning.
fn blacklist(key: &str, entries: &[String], warnings: &mut Vec<String>) -> Vec<&'static str> {
    let mut out = Vec::new();
    for e in entries {
        match blacklisted_types(e) {
            Some(types) => out.extend_from_slice(types),
            None => warnings.push(format!(
                "{key}: {e:?} is not an SSH key type (entries are types such as ssh-rsa, \
                 ssh-ed25519, ecdsa-sha2-nistp256, or rsa, ed25519, ecdsa); it leaves nothing out"
            )),
        }
    }
    out
}

pub struct HostKeys;

#[stoke_api::async_trait]
impl Module for HostKeys {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "ssh-host-keys",
            stage: Stage::Local,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: false,
            before_logins: true,
            timeout: Duration::from_secs(180),
            config: config_spec::<HostKeysConfig>(),
            order: stoke_api::Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: HostKeysConfig = ctx.config()?;
        let rd = ctx.fs()?;
        // For ssh-keygen's argv only: /etc/ssh as resolved inside the root.
        let etc_ssh = rd
            .host_dir(Path::new(ETC_SSH))
            .map_err(|e| ModuleError::io("creating", ctx.host_path(ETC_SSH), e))?;
        let mut warnings = Vec::new();

        // Check provided keys before deleting anything, so bad config leaves the image's keys.
        for p in cfg.ssh_keys.by_type() {
            validate_provided(&p)?;
        }
        let deleted = if cfg.ssh_deletekeys {
            delete_host_keys(ctx, &rd)?
        } else {
            Vec::new()
        };

        // Provided keys first: their types are then not generated.
        if cfg.ssh_keys.dsa_private.is_some() || cfg.ssh_keys.dsa_public.is_some() {
            warnings.push(
                "ssh_keys: dsa keys ignored (OpenSSH no longer supports DSA host keys)".into(),
            );
        }
        let mut installed = Vec::new();
        let mut certificates = Vec::new();
        for p in cfg.ssh_keys.by_type() {
            let t = p.key_type.name();
            let Some(private) = p.private else {
                if p.public.is_some() || p.certificate.is_some() {
                    warnings.push(format!(
                        "ssh_keys: {t}_public/{t}_certificate without {t}_private ignored (a {t} key is generated instead)"
                    ));
                }
                continue;
            };
            install_provided(ctx, &p, private, &mut warnings).await?;
            if let Some(cert) = p.certificate {
                let guest = format!("{}-cert.pub", p.key_type.private_path());
                write_root_file(ctx, &guest, &with_newline(cert), 0o644)?;
                certificates.push(guest);
            }
            installed.push(t);
        }
        configure_certificates(ctx, &certificates)?;

        // Generate the remaining types, all at once.
        let mut types = cfg.ssh_genkeytypes.clone();
        types.sort();
        types.dedup();
        let mut kept = Vec::new();
        let mut to_generate = Vec::new();
        for t in types {
            if t == KeyType::Dsa {
                warnings.push(
                    "ssh_genkeytypes: dsa skipped (OpenSSH no longer supports DSA host keys)"
                        .into(),
                );
            } else if installed.contains(&t.name()) {
                // Provided in ssh_keys.
            } else if rd
                .lstat(Path::new(&t.private_path()))
                .is_ok_and(|st| st.is_some())
            {
                kept.push(t.name());
            } else {
                to_generate.push(t);
            }
        }
        // RSA takes seconds (prime search), the others milliseconds: start it first.
        to_generate.sort_by_key(|t| *t != KeyType::Rsa);
        let cmds: Vec<Cmd> = to_generate
            .iter()
            .map(|t| {
                let file = etc_ssh.join(key_name(t)).display().to_string();
                Cmd::new(
                    ctx.tool(tools::SSH_KEYGEN),
                    ["-q", "-N", "", "-t", t.name(), "-f", file.as_str()],
                )
                .timeout(KEYGEN_TIMEOUT)
            })
            .collect();
        let results = crate::join_all(cmds.iter().map(|c| ctx.system.run(c)).collect()).await;
        let mut failures = Vec::new();
        let mut generated = Vec::new();
        for ((t, cmd), res) in to_generate.iter().zip(&cmds).zip(results) {
            match res.map_err(ModuleError::from).and_then(|o| o.check(cmd)) {
                Ok(_) => generated.push(t.name()),
                Err(e) => failures.push(e.to_string()),
            }
        }
        generated.sort_unstable();
        if ctx.system.executes() {
            for t in &to_generate {
                if generated.contains(&t.name()) {
                    let private = PathBuf::from(t.private_path());
                    fix_mode(ctx, &rd, &private, 0o600)?;
                    fix_mode(ctx, &rd, &pub_path(&private), 0o644)?;
                }
            }
        }

        // Fingerprints of every host key sshd will offer.
        // Under --root without --execute the keys were not made: nothing to fingerprint.
        let unavailable = !ctx.system.executes();
        let host_keys = if unavailable {
            Vec::new()
        } else {
            host_keys(ctx, &rd, &mut warnings)?
        };
        let fp_black = blacklist(
            "ssh_fp_console_blacklist",
            &cfg.ssh_fp_console_blacklist,
            &mut warnings,
        );
        let key_black = blacklist(
            "ssh_key_console_blacklist",
            &cfg.ssh_key_console_blacklist,
            &mut warnings,
        );
        let text = if cfg.ssh.emit_keys_to_console {
            console_text(&host_keys, &fp_black, &key_black)
        } else {
            String::new()
        };
        if !text.is_empty()
            && let Err(e) = ctx.system.console(&text)
        {
            warnings.push(format!("printing fingerprints to the console: {e}"));
        }
        let fingerprints: Vec<&str> = host_keys.iter().map(|k| k.fingerprint.as_str()).collect();

        if !failures.is_empty() {
            return Err(ModuleError::Other(format!(
                "host key generation failed: {}{}",
                failures.join("; "),
                if generated.is_empty() {
                    String::new()
                } else {
                    format!(" (generated: {})", generated.join(", "))
                }
            )));
        }
        let mut summary = format!(
            "host keys: generated {}; installed {}",
            list_or_none(&generated),
            list_or_none(&installed)
        );
        if !kept.is_empty() {
            summary.push_str(&format!("; kept existing {}", kept.join(", ")));
        }
        if unavailable {
            summary.push_str("; fingerprints unavailable (commands recorded, not run)");
        }
        let mut report = Report::new(summary).with_details(json!({
            "deleted": deleted,
            "generated": generated,
            "installed": installed,
            "kept": kept,
            "certificates": certificates,
            "fingerprints": if unavailable { serde_json::Value::Null } else { json!(fingerprints) },
            "fingerprints_printed": !text.is_empty(),
        }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: HostKeysConfig = ctx.config().ok()?;
        let types: Vec<&str> = cfg.ssh_genkeytypes.iter().map(|t| t.name()).collect();
        Some(format!(
            "{}generate {} host keys",
            if cfg.ssh_deletekeys {
                "delete the image's host keys, "
            } else {
                ""
            },
            types.join(", ")
        ))
    }
}

fn list_or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn with_newline(s: &str) -> String {
    let mut s = s.trim_end().to_string();
    s.push('\n');
    s
}

fn pub_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// `/etc/ssh` as the instance sees it.
const ETC_SSH: &str = "/etc/ssh";
const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
/// Larger text files under /etc/ssh are refused (a real one is a few KiB).
const MAX_TEXT: u64 = 4 * 1024 * 1024;

/// The file name of a key type's private key (`ssh_host_ed25519_key`).
fn key_name(t: &KeyType) -> String {
    let private = t.private_path();
    private
        .rsplit('/')
        .next()
        .unwrap_or(private.as_str())
        .to_string()
}

/// Removes `ssh_host_*key*` files (and symlinks, never what they point to) from `/etc/ssh`
/// (resolved inside the root).
fn delete_host_keys(ctx: &Context, rd: &RootDir) -> Result<Vec<String>, ModuleError> {
    let entries = rd
        .list_dir(Path::new(ETC_SSH))
        .map_err(|e| ModuleError::io("listing", ctx.host_path(ETC_SSH), e))?;
    let mut deleted = Vec::new();
    for (name, st) in entries {
        if !(name.starts_with("ssh_host_") && name["ssh_host_".len()..].contains("key")) {
            continue;
        }
        if st.kind != FileKind::Directory {
            let guest = Path::new(ETC_SSH).join(&name);
            rd.remove_file(&guest)
                .map_err(|e| ModuleError::io("deleting", ctx.host_path(&guest), e))?;
            deleted.push(name);
        }
    }
    deleted.sort();
    Ok(deleted)
}

/// Writes a file under `/etc/ssh` (resolved inside the root) atomically with exactly `mode`,
/// owned by root. A private key (0600) is never left readable under a temp name by a crash.
fn write_root_file(ctx: &Context, guest: &str, data: &str, mode: u32) -> Result<(), ModuleError> {
    ctx.fs()?
        .write_atomic(
            Path::new(guest),
            data.as_bytes(),
            mode,
            Some((0, 0)),
            ctx.system.as_ref(),
        )
        .map_err(|e| ModuleError::io("writing", ctx.host_path(guest), e))
}

/// Sets mode and root ownership of a generated key file (resolved inside the root),
/// without following a symlink.
fn fix_mode(ctx: &Context, rd: &RootDir, guest: &Path, mode: u32) -> Result<(), ModuleError> {
    let path = ctx.host_path(guest);
    let f = rd
        .open_regular_nofollow(guest)
        .and_then(|f| f.ok_or_else(|| std::io::ErrorKind::NotFound.into()))
        .map_err(|e| ModuleError::io("opening", &path, e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| ModuleError::io("setting mode of", &path, e))?;
    ctx.system.fchown(&f, &path, 0, 0)?;
    Ok(())
}

async fn install_provided(
    ctx: &Context,
    p: &Provided<'_>,
    private: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ModuleError> {
    let t = p.key_type.name();
    let private_guest = p.key_type.private_path();
    write_root_file(ctx, &private_guest, &with_newline(private), 0o600)?;
    // For ssh-keygen's argv: the key as resolved inside the root.
    let private_path = ctx
        .fs()?
        .host_dir(Path::new(ETC_SSH))
        .map_err(|e| ModuleError::io("opening", ctx.host_path(ETC_SSH), e))?
        .join(key_name(&p.key_type));
    let public = match p.public {
        Some(line) => Some(with_newline(line)),
        None => {
            // Derive the public half, as cloud-init does.
            let cmd = Cmd::new(
                ctx.tool(tools::SSH_KEYGEN),
                ["-y", "-f", private_path.display().to_string().as_str()],
            )
            .timeout(KEYGEN_TIMEOUT);
            let out = ctx.system.run(&cmd).await?.check(&cmd)?;
            if out.stdout.trim().is_empty() {
                if ctx.system.executes() {
                    warnings.push(format!("ssh_keys: no public key derived from {t}_private"));
                }
                None
            } else {
                Some(with_newline(&out.stdout))
            }
        }
    };
    if let Some(public) = public {
        write_root_file(ctx, &format!("{private_guest}.pub"), &public, 0o644)?;
    }
    Ok(())
}

/// A provided private key must look like one; a public key or certificate must be one line of its type.
fn validate_provided(p: &Provided<'_>) -> Result<(), ModuleError> {
    let t = p.key_type.name();
    if let Some(private) = p.private
        && !(private.trim_start().starts_with("-----BEGIN") && private.contains("PRIVATE KEY-----"))
    {
        return Err(ModuleError::Invalid(format!(
            "ssh_keys.{t}_private is not a PEM/OpenSSH private key"
        )));
    }
    if let Some(line) = p.public {
        match keyline::parse(line) {
            Ok(Some(k)) if k.options.is_none() => {}
            Ok(_) => {
                return Err(ModuleError::Invalid(format!(
                    "ssh_keys.{t}_public must be one public key line (type, base64, comment)"
                )));
            }
            Err(e) => return Err(ModuleError::Invalid(format!("ssh_keys.{t}_public: {e}"))),
        }
    }
    if let Some(cert) = p.certificate {
        let first = cert.split_whitespace().next().unwrap_or("");
        if !(first.ends_with("-cert-v01@openssh.com") && cert.trim().lines().count() == 1) {
            return Err(ModuleError::Invalid(format!(
                "ssh_keys.{t}_certificate is not an OpenSSH certificate line"
            )));
        }
    }
    Ok(())
}

/// Points sshd at installed host certificates: a managed block at the top of
/// sshd_config (the top, because lines after a `Match` would belong to it).
fn configure_certificates(ctx: &Context, certs: &[String]) -> Result<(), ModuleError> {
    let guest = Path::new(SSHD_CONFIG);
    let path = ctx.host_path(guest);
    let rd = ctx.fs()?;
    let existing = rd
        .read_string(guest, MAX_TEXT)
        .map_err(|e| ModuleError::io("reading", &path, e))?;
    let body: String = certs
        .iter()
        .map(|c| format!("HostCertificate {c}\n"))
        .collect();
    let updated = match &existing {
        None if body.is_empty() => return Ok(()),
        Some(text) if text.lines().any(|l| l.trim_end() == CERT_BEGIN) => {
            managed_block(text, CERT_BEGIN, CERT_END, &body)
        }
        _ if body.is_empty() => return Ok(()),
        other => {
            let block = managed_block("", CERT_BEGIN, CERT_END, &body);
            format!("{block}{}", other.as_deref().unwrap_or(""))
        }
    };
    if existing.as_deref() == Some(updated.as_str()) {
        return Ok(());
    }
    rd.replace_keeping(guest, updated.as_bytes(), 0o644, true)
        .map_err(|e| ModuleError::io("writing", &path, e))
}

/// A host public key as the console block shows it.
pub struct HostPub {
    /// The type as the file names it (`ssh-ed25519`): what the blacklists match.
    pub key_type: String,
    /// What `ssh-keygen -l` prints for it.
    pub fingerprint: String,
    /// The public key line.
    pub line: String,
}

/// Each `/etc/ssh/ssh_host_*_key.pub` (sorted, like the shell glob cloud-init uses): only
/// what parses as a public key counts, whatever the file holds.
fn host_keys(
    ctx: &Context,
    rd: &RootDir,
    warnings: &mut Vec<String>,
) -> Result<Vec<HostPub>, ModuleError> {
    let mut pubs: Vec<PathBuf> = rd
        .list_dir(Path::new(ETC_SSH))
        .map_err(|e| ModuleError::io("listing", ctx.host_path(ETC_SSH), e))?
        .into_iter()
        .filter(|(n, _)| n.starts_with("ssh_host_") && n.ends_with("_key.pub"))
        .map(|(n, _)| Path::new(ETC_SSH).join(n))
        .collect();
    pubs.sort();
    let mut keys = Vec::new();
    for path in &pubs {
        let text = match rd.read_string(path, MAX_TEXT) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                warnings.push(format!("fingerprint of {}: {e}", path.display()));
                continue;
            }
        };
        let mut found = false;
        for line in text.lines() {
            if let Ok(Some(key)) = keyline::parse(line)
                && let Some(fp) = crate::fingerprint::fingerprint(&key)
            {
                keys.push(HostPub {
                    key_type: key.key_type.clone(),
                    fingerprint: fp,
                    line: line.trim().to_string(),
                });
                found = true;
            }
        }
        if !found {
            warnings.push(format!(
                "fingerprint of {}: no public key in it",
                path.display()
            ));
        }
    }
    Ok(keys)
}

/// The console block, line for line what cloud-init prints (tag `ec2:`), so tools that
/// scrape EC2 console output for host keys keep working. A key whose type is in `fp_black`
/// has no fingerprint line, one in `key_black` no key line; a section left empty is not
/// printed at all (nor its markers), as with cloud-init. Empty: nothing to print.
pub fn console_text(keys: &[HostPub], fp_black: &[&str], key_black: &[&str]) -> String {
    let mut lines: Vec<&str> = Vec::new();
    let fps: Vec<&str> = keys
        .iter()
        .filter(|k| !fp_black.contains(&k.key_type.as_str()))
        .map(|k| k.fingerprint.as_str())
        .collect();
    if !fps.is_empty() {
        lines.push("#############################################################");
        lines.push("-----BEGIN SSH HOST KEY FINGERPRINTS-----");
        lines.extend(fps);
        lines.push("-----END SSH HOST KEY FINGERPRINTS-----");
        lines.push("#############################################################");
    }
    let shown: Vec<&str> = keys
        .iter()
        .filter(|k| !key_black.contains(&k.key_type.as_str()))
        .map(|k| k.line.as_str())
        .collect();
    if !shown.is_empty() {
        lines.push("-----BEGIN SSH HOST KEY KEYS-----");
        lines.extend(shown);
        lines.push("-----END SSH HOST KEY KEYS-----");
    }
    lines.iter().map(|l| format!("ec2: {l}\n")).collect()
}
