//! cloud-init's `ca_certs` (also spelled `ca-certs`): `trusted` PEM certificates added
//! to the system's trust store, `remove_defaults` to trust only those.
//!
//! Every entry is decoded as X.509 first; one that is not a certificate fails the
//! module, naming it, before anything is written. Each certificate goes in its own
//! file where the distribution expects local anchors (Debian:
//! `/usr/local/share/ca-certificates/stoke-ca-cert-N.crt`; RHEL family:
//! `/etc/pki/ca-trust/source/anchors/`), certificates stoke added for an earlier
//! configuration are removed, then `update-ca-certificates` / `update-ca-trust` runs.

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage,
    config_spec, tools,
};
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, EncodePem, pem::LineEnding};

use crate::{Family, open_root, plural, read_text, write_file};

const PREFIX: &str = "stoke-ca-cert-";
const DEBIAN_DIR: &str = "/usr/local/share/ca-certificates";
const REDHAT_DIR: &str = "/etc/pki/ca-trust/source/anchors";
const DEBIAN_CONF: &str = "/etc/ca-certificates.conf";
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct CaCertsConfig {
    /// Certificates to trust, and whether to drop the distribution's own.
    pub ca_certs: Option<CaCertsSection>,
    /// cloud-init's older spelling of `ca_certs`.
    #[serde(rename = "ca-certs")]
    pub ca_certs_dash: Option<CaCertsSection>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CaCertsSection {
    /// PEM certificates (one or more `BEGIN CERTIFICATE` blocks per entry).
    pub trusted: Vec<String>,
    /// Trust only `trusted`: the distribution's certificates are deselected (Debian family).
    pub remove_defaults: bool,
    /// cloud-init's older spelling of `remove_defaults`.
    #[serde(rename = "remove-defaults")]
    pub remove_defaults_dash: bool,
}

pub struct CaCerts;

#[stoke_api::async_trait]
impl Module for CaCerts {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "ca-certs",
            // cloud-init's init stage: before the config and final stages' downloads.
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(300),
            config: config_spec::<CaCertsConfig>(),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: CaCertsConfig = ctx.config()?;
        let mut warnings = Vec::new();
        let section = match (cfg.ca_certs, cfg.ca_certs_dash) {
            (Some(s), other) => {
                if other.is_some() {
                    warnings.push(
                        "both `ca_certs` and `ca-certs` given: `ca-certs` is ignored".to_string(),
                    );
                }
                s
            }
            (None, Some(s)) => s,
            (None, None) => return Ok(Report::new("no ca_certs configured")),
        };
        let remove_defaults = section.remove_defaults || section.remove_defaults_dash;
        let certs = parse_all(&section.trusted).map_err(ModuleError::Invalid)?;
        let dir = open_root(ctx)?;
        let family = match Family::detect(&dir) {
            Family::Unknown if crate::exists(ctx, "/etc/pki/ca-trust") => Family::RedHat,
            Family::Unknown if crate::exists(ctx, "/etc/ssl/certs") => Family::Debian,
            f => f,
        };
        let (anchors, update) = match family {
            Family::Debian => (DEBIAN_DIR, tools::UPDATE_CA_CERTIFICATES),
            Family::RedHat => (REDHAT_DIR, tools::UPDATE_CA_TRUST),
            Family::Unknown => {
                return Err(ModuleError::Other(
                    "ca_certs: unknown distribution (no os-release naming a Debian or RHEL family)"
                        .into(),
                ));
            }
        };
        if remove_defaults && family == Family::RedHat {
            return Err(ModuleError::Invalid(
                "ca_certs.remove_defaults is supported on Debian-family systems only; \
                 on this one the certificates were not changed"
                    .into(),
            ));
        }

        let mut written = Vec::new();
        for (i, pem) in certs.iter().enumerate() {
            let path = format!("{anchors}/{PREFIX}{}.crt", i + 1);
            write_file(ctx, &dir, &path, pem.as_bytes(), 0o644).map_err(ModuleError::Other)?;
            written.push(path);
        }
        let removed = remove_stale(&dir, anchors, certs.len()).map_err(ModuleError::Other)?;

        let mut commands = Vec::new();
        if remove_defaults {
            deselect_defaults(ctx, &dir).map_err(ModuleError::Other)?;
        }
        // debconf has no root option: under --root only the instance's own boot sets it.
        if remove_defaults && ctx.root.is_host() {
            // As cloud-init: a later ca-certificates upgrade must not trust the new defaults.
            let cmd = Cmd::new(
                ctx.tool(tools::DEBCONF_SET_SELECTIONS),
                Vec::<String>::new(),
            )
            .stdin("ca-certificates ca-certificates/trust_all_crts boolean false\n")
            .timeout(TIMEOUT);
            ctx.system.run(&cmd).await?.check(&cmd)?;
            commands.push(cmd.display());
        }
        let mut args: Vec<String> = Vec::new();
        if family == Family::Debian {
            if remove_defaults {
                args.push("--fresh".into());
            }
            // Under --root the store of the root is updated, never the host's.
            if !ctx.root.is_host() {
                for (flag, p) in [
                    ("--certsconf", DEBIAN_CONF),
                    ("--certsdir", "/usr/share/ca-certificates"),
                    ("--localcertsdir", DEBIAN_DIR),
                    ("--etccertsdir", "/etc/ssl/certs"),
                    ("--hooksdir", "/etc/ca-certificates/update.d"),
                ] {
                    args.push(flag.into());
                    args.push(ctx.host_path(p).display().to_string());
                }
            }
        }
        let cmd = Cmd::new(ctx.tool(update), args).timeout(TIMEOUT);
        ctx.system.run(&cmd).await?.check(&cmd)?;
        commands.push(cmd.display());

        let mut report = Report::new(format!(
            "{} trusted{}",
            plural(certs.len(), "certificate"),
            if remove_defaults {
                ", distribution defaults removed"
            } else {
                ""
            }
        ))
        .with_details(json!({
            "written": written,
            "removed": removed,
            "remove_defaults": remove_defaults,
            "commands": commands,
        }));
        report.warnings = warnings;
        Ok(report)
    }
}

/// Each entry's certificates, re-encoded as PEM; an entry that is not (only)
/// certificates is named in the error.
pub(crate) fn parse_all(trusted: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, entry) in trusted.iter().enumerate() {
        let blocks = pem_blocks(entry);
        if blocks.is_empty() {
            return Err(format!(
                "ca_certs.trusted[{i}]: no `-----BEGIN CERTIFICATE-----` block"
            ));
        }
        for (j, block) in blocks.iter().enumerate() {
            let cert = Certificate::from_pem(block.as_bytes()).map_err(|e| {
                format!(
                    "ca_certs.trusted[{i}] (block {}): not an X.509 certificate: {e}",
                    j + 1
                )
            })?;
            // Re-encoded from the parsed certificate: exactly one clean PEM block per file.
            let pem = cert
                .to_pem(LineEnding::LF)
                .map_err(|e| format!("ca_certs.trusted[{i}]: {e}"))?;
            out.push(pem);
        }
    }
    Ok(out)
}

/// The `-----BEGIN ...-----` to `-----END ...-----` blocks of `text`, whatever their label.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    // An unterminated block is still a block: decoding it gives the error.
    blocks.extend(current);
    blocks
}

/// Removes `stoke-ca-cert-N.crt` files beyond the `keep` written this time.
fn remove_stale(dir: &RootDir, anchors: &str, keep: usize) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    let Ok(entries) = dir.list_dir(std::path::Path::new(anchors)) else {
        return Ok(removed);
    };
    for (name, _) in entries {
        let Some(n) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_suffix(".crt"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if n > keep {
            let path = format!("{anchors}/{name}");
            dir.remove_file(Path::new(&path))
                .map_err(|e| format!("removing {path}: {e}"))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Marks every selected certificate of `/etc/ca-certificates.conf` deselected (`!`),
/// as the ca-certificates package itself records a deselection.
fn deselect_defaults(ctx: &Context, dir: &RootDir) -> Result<(), String> {
    let Some(text) = read_text(dir, DEBIAN_CONF)? else {
        return Ok(());
    };
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            out.push_str(line);
        } else {
            out.push('!');
            out.push_str(t);
        }
        out.push('\n');
    }
    write_file(ctx, dir, DEBIAN_CONF, out.as_bytes(), 0o644)
}
