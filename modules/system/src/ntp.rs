//! cloud-init's `ntp` (`enabled`, `ntp_client`, `servers`, `pools`): a drop-in for
//! the NTP client the image has, never a rewrite of its own configuration.
//!
//! - chrony: `stoke.sources` in the first `sourcedir` of `chrony.conf` that is under
//!   `/etc` (chrony 4 reads it with `chronyc reload sources` or a restart), else
//!   `stoke.conf` in its `confdir` or in the directory of an `include` glob;
//! - systemd-timesyncd: `/etc/systemd/timesyncd.conf.d/stoke.conf`.
//!
//! The client is then restarted only if it is running (`systemctl try-restart`).
//! Installing a client is not done: bake it in. With no `servers` and no `pools`
//! nothing is written: on EC2 the Amazon Time Sync Service (169.254.169.123, and
//! fd00:ec2::123 over IPv6) is the documented suggestion, never a silent default.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage,
    config_spec, tools,
};

use crate::{Family, exists, open_root, read_text, write_file};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct NtpConfig {
    /// NTP servers and pools for the image's client.
    pub ntp: Option<NtpSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NtpSection {
    /// `false`: the module does nothing.
    pub enabled: bool,
    /// `auto` (default), `chrony` or `systemd-timesyncd`.
    pub ntp_client: String,
    pub servers: Vec<String>,
    pub pools: Vec<String>,
    /// cloud-init keys stoke does not implement (a warning each).
    #[schemars(with = "Option<serde_json::Value>")]
    pub peers: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub allow: Option<serde_json::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub config: Option<serde_json::Value>,
}

impl Default for NtpSection {
    fn default() -> Self {
        NtpSection {
            enabled: true,
            ntp_client: "auto".into(),
            servers: Vec::new(),
            pools: Vec::new(),
            peers: None,
            allow: None,
            config: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Client {
    Chrony,
    Timesyncd,
}

const CHRONY_CONFS: [&str; 2] = ["/etc/chrony/chrony.conf", "/etc/chrony.conf"];
const TIMESYNCD_BINS: [&str; 2] = [
    "/usr/lib/systemd/systemd-timesyncd",
    "/lib/systemd/systemd-timesyncd",
];
const TIMESYNCD_DROPIN: &str = "/etc/systemd/timesyncd.conf.d/stoke.conf";

pub struct Ntp;

#[stoke_api::async_trait]
impl Module for Ntp {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "ntp",
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: Duration::from_secs(60),
            config: config_spec::<NtpConfig>(),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: NtpConfig = ctx.config()?;
        let Some(ntp) = cfg.ntp else {
            return Ok(Report::new("no ntp configured"));
        };
        if !ntp.enabled {
            return Ok(Report::new("ntp: enabled is false: nothing done"));
        }
        for (i, s) in ntp.servers.iter().chain(ntp.pools.iter()).enumerate() {
            let ok = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:_[]".contains(c));
            if !ok {
                return Err(ModuleError::Invalid(format!(
                    "ntp: `{s}` (entry {i} of servers then pools) is not a host name or address"
                )));
            }
        }
        let mut warnings: Vec<String> = [
            ("peers", ntp.peers.is_some()),
            ("allow", ntp.allow.is_some()),
            ("config", ntp.config.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| format!("ntp.{k} is not supported by stoke: ignored"))
        .collect();
        let dir = open_root(ctx)?;
        let client = choose(ctx, &ntp.ntp_client).map_err(ModuleError::Invalid)?;
        if ntp.servers.is_empty() && ntp.pools.is_empty() {
            let hint = if ctx.instance.datasource == "ec2" {
                " (on EC2, `servers: [169.254.169.123]` uses the Amazon Time Sync Service)"
            } else {
                ""
            };
            return Ok(Report::new(format!(
                "no servers or pools given: the image's {} configuration is kept{hint}",
                client_name(client)
            )));
        }
        let (path, text, unit) = match client {
            Client::Chrony => {
                let (path, text) =
                    chrony_dropin(&dir, &ntp.servers, &ntp.pools).map_err(ModuleError::Other)?;
                let family = Family::detect(&dir);
                // Debian names the unit chrony.service; the RHEL family chronyd.service.
                let unit = if family == Family::Debian {
                    "chrony.service"
                } else {
                    "chronyd.service"
                };
                (path, text, unit)
            }
            Client::Timesyncd => {
                let mut line = String::from("NTP=");
                line.push_str(
                    &ntp.servers
                        .iter()
                        .chain(ntp.pools.iter())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                (
                    TIMESYNCD_DROPIN.to_string(),
                    format!("# Written by stoke from user-data (ntp)\n[Time]\n{line}\n"),
                    "systemd-timesyncd.service",
                )
            }
        };
        write_file(ctx, &dir, &path, text.as_bytes(), 0o644).map_err(ModuleError::Other)?;
        // try-restart: a client that is not running stays stopped.
        let cmd = Cmd::new(ctx.tool(tools::SYSTEMCTL), ["try-restart", unit])
            .timeout(Duration::from_secs(30));
        let out = ctx.system.run(&cmd).await?;
        if !out.success() {
            warnings.push(format!(
                "`{}` failed ({}): {}",
                cmd.display(),
                out.status_text(),
                out.stderr.trim()
            ));
        }
        let mut report = Report::new(format!(
            "{}: {} server(s), {} pool(s) in {path}",
            client_name(client),
            ntp.servers.len(),
            ntp.pools.len()
        ))
        .with_details(json!({
            "client": client_name(client),
            "file": path,
            "servers": ntp.servers,
            "pools": ntp.pools,
            "restart": cmd.display(),
        }));
        report.warnings = std::mem::take(&mut warnings);
        Ok(report)
    }
}

fn client_name(c: Client) -> &'static str {
    match c {
        Client::Chrony => "chrony",
        Client::Timesyncd => "systemd-timesyncd",
    }
}

/// The client to configure: the one named, if the image has it, or the one it has.
fn choose(ctx: &Context, wanted: &str) -> Result<Client, String> {
    let chrony = CHRONY_CONFS.iter().any(|p| exists(ctx, p));
    let timesyncd = TIMESYNCD_BINS.iter().any(|p| exists(ctx, p));
    match wanted {
        "auto" if chrony => Ok(Client::Chrony),
        "auto" if timesyncd => Ok(Client::Timesyncd),
        "auto" => {
            Err("ntp: the image has neither chrony nor systemd-timesyncd (bake one in)".into())
        }
        "chrony" if chrony => Ok(Client::Chrony),
        "chrony" => {
            Err("ntp: ntp_client chrony: no chrony.conf in the image (bake chrony in)".into())
        }
        "systemd-timesyncd" if timesyncd => Ok(Client::Timesyncd),
        "systemd-timesyncd" => Err("ntp: ntp_client systemd-timesyncd: not in the image".into()),
        other => Err(format!(
            "ntp: ntp_client `{other}` is not supported by stoke (auto, chrony, systemd-timesyncd)"
        )),
    }
}

/// Where and what to write for chrony, from the directives of its configuration.
pub(crate) fn chrony_dropin(
    dir: &RootDir,
    servers: &[String],
    pools: &[String],
) -> Result<(String, String), String> {
    let mut conf = None;
    for p in CHRONY_CONFS {
        if let Some(text) = read_text(dir, p)? {
            conf = Some((p, text));
            break;
        }
    }
    let Some((conf_path, text)) = conf else {
        return Err("ntp: no chrony.conf".into());
    };
    let directive = |name: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name))
                    .then(|| w.next().map(str::to_string))
                    .flatten()
            })
            .collect()
    };
    let mut body = String::from("# Written by stoke from user-data (ntp)\n");
    for s in servers {
        body.push_str(&format!("server {s} iburst\n"));
    }
    for p in pools {
        body.push_str(&format!("pool {p} iburst\n"));
    }
    // A sourcedir under /etc (not /run's, which the DHCP hooks own) takes server lines.
    if let Some(d) = directive("sourcedir")
        .into_iter()
        .find(|d| d.starts_with("/etc/"))
    {
        return Ok((format!("{}/stoke.sources", d.trim_end_matches('/')), body));
    }
    if let Some(d) = directive("confdir")
        .into_iter()
        .find(|d| d.starts_with('/'))
    {
        return Ok((format!("{}/stoke.conf", d.trim_end_matches('/')), body));
    }
    if let Some(d) = directive("include").into_iter().find_map(|g| {
        g.strip_suffix("/*.conf")
            .filter(|d| d.starts_with('/'))
            .map(str::to_string)
    }) {
        return Ok((format!("{d}/stoke.conf"), body));
    }
    Err(format!(
        "ntp: {conf_path} has no sourcedir, confdir or include directory: stoke adds a drop-in, \
         it does not rewrite the image's chrony.conf"
    ))
}
