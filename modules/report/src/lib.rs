//! Boot reports, at the end of the final stage (after the acceptance checks): cloud-init's
//! `phone_home` (a form of the instance id, hostname, fqdn and host public keys) and stoke's
//! own `report:` (the whole `stoke status --json`, image lineage included, as JSON).
//!
//! Both are bounded: retries end with their time budget, and a report that was not
//! delivered is a warning (the boot is degraded, still ready), never a hung boot.
#![forbid(unsafe_code)]

mod http;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage, config_spec,
};

pub use http::{Delivery, form_encode};

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(PhoneHome), Box::new(BootReport)]
}

/// cloud-init's `phone_home`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PhoneHomeConfig {
    /// cloud-init's `phone_home`: POST the instance's identity to a URL once per instance.
    pub phone_home: Option<PhoneHomeSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneHomeSection {
    /// Where to POST; `$INSTANCE_ID` (or `${INSTANCE_ID}`) becomes the instance id.
    pub url: String,
    /// `all` (default) or a list of: pub_key_rsa, pub_key_ecdsa, pub_key_ed25519,
    /// instance_id, hostname, fqdn.
    #[serde(default)]
    pub post: Option<PostKeys>,
    /// Attempts in all (default 10; cloud-init's). Not an integer: a warning, and 10.
    #[serde(default)]
    pub tries: Option<Tries>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PostKeys {
    Keys(Vec<String>),
    Word(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Tries {
    Number(i64),
    Text(String),
}

/// The keys `post: all` sends, in cloud-init's order.
pub const POST_ALL: &[&str] = &[
    "pub_key_rsa",
    "pub_key_ecdsa",
    "pub_key_ed25519",
    "instance_id",
    "hostname",
    "fqdn",
];

const DEFAULT_TRIES: u32 = 10;
/// cloud-init pauses 3 s between tries.
const PHONE_HOME_PAUSE: Duration = Duration::from_secs(3);
/// One try's bound (cloud-init has none: a silent server would hold its boot).
const PHONE_HOME_PER_TRY: Duration = Duration::from_secs(10);
/// However many tries are asked for, phone_home ends within this.
const PHONE_HOME_MAX_BUDGET: Duration = Duration::from_secs(300);

/// stoke's `report:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ReportConfig {
    /// POST this boot's `stoke status --json` (with the image lineage) to a URL at the end
    /// of every boot.
    pub report: Option<ReportSection>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// Where to POST (http or https); `$INSTANCE_ID` becomes the instance id.
    pub url: String,
    /// Extra request headers (`Authorization: Bearer ...`). Their values are never shown in
    /// `stoke status`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds for the whole delivery, retries included (default 30).
    #[serde(default = "default_report_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout: u64,
}

fn default_report_timeout() -> u64 {
    30
}

const REPORT_MAX_TIMEOUT: u64 = 600;

/// `$INSTANCE_ID` and `${INSTANCE_ID}` in a URL (cloud-init's template variable).
pub fn expand_url(url: &str, instance_id: &str) -> String {
    url.replace("${INSTANCE_ID}", instance_id)
        .replace("$INSTANCE_ID", instance_id)
}

/// A module's bound: the delivery's budget and a margin to build the client and read keys.
fn module_timeout(budget: Duration) -> Duration {
    budget + Duration::from_secs(10)
}

pub struct PhoneHome;

impl PhoneHome {
    fn tries(section: &PhoneHomeSection, report: &mut Report) -> u32 {
        match &section.tries {
            None => DEFAULT_TRIES,
            Some(Tries::Number(n)) if *n >= 1 => (*n).min(1000) as u32,
            Some(Tries::Text(t)) if t.trim().parse::<u32>().is_ok_and(|n| n >= 1) => {
                t.trim().parse::<u32>().unwrap_or(DEFAULT_TRIES)
            }
            Some(other) => {
                report.warn(format!(
                    "phone_home.tries: {other:?} is not a positive integer; {DEFAULT_TRIES} tries"
                ));
                DEFAULT_TRIES
            }
        }
    }

    fn budget(tries: u32) -> Duration {
        ((PHONE_HOME_PER_TRY + PHONE_HOME_PAUSE) * tries).min(PHONE_HOME_MAX_BUDGET)
    }
}

/// The first line of a file under the root, if it is there and readable.
fn read_text(dir: &RootDir, path: &str) -> Option<String> {
    match dir.read_regular(Path::new(path), 64 * 1024) {
        Ok(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).trim().to_string()),
        _ => None,
    }
}

#[stoke_api::async_trait]
impl Module for PhoneHome {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "phone-home",
            stage: Stage::Final,
            frequency: Frequency::PerInstance,
            // For the hostname and fqdn the boot gave the instance.
            after: &["hostname"],
            needs_metadata: true,
            before_logins: false,
            timeout: module_timeout(PhoneHome::budget(DEFAULT_TRIES)),
            config: config_spec::<PhoneHomeConfig>(),
            order: Order::Report,
        }
    }

    fn timeout_for(&self, config: &serde_json::Value) -> Duration {
        let tries = serde_json::from_value::<PhoneHomeConfig>(config.clone())
            .ok()
            .and_then(|c| c.phone_home)
            .map(|s| PhoneHome::tries(&s, &mut Report::default()))
            .unwrap_or(DEFAULT_TRIES);
        module_timeout(PhoneHome::budget(tries))
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        config
            .get("phone_home")
            .is_none_or(|v| v.is_null())
            .then(|| "no `phone_home:` section".to_string())
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: PhoneHomeConfig = ctx.config()?;
        let Some(section) = cfg.phone_home else {
            return Ok(Report::new("nothing configured"));
        };
        let mut report = Report::default();
        let tries = PhoneHome::tries(&section, &mut report);
        let keys: Vec<String> = match &section.post {
            None => POST_ALL.iter().map(|s| s.to_string()).collect(),
            Some(PostKeys::Word(w)) if w == "all" => {
                POST_ALL.iter().map(|s| s.to_string()).collect()
            }
            Some(PostKeys::Word(w)) => {
                report.warn(format!(
                    "phone_home.post: {w:?} is neither `all` nor a list; posting all"
                ));
                POST_ALL.iter().map(|s| s.to_string()).collect()
            }
            Some(PostKeys::Keys(k)) => k.clone(),
        };
        let dir = RootDir::open(&ctx.root)
            .map_err(|e| ModuleError::io("opening the root", ctx.root.dir(), e))?;
        let iid = ctx.instance.instance_id.to_string();
        let hostname = ctx
            .vars
            .get("hostname")
            .cloned()
            .or_else(|| read_text(&dir, "/etc/hostname"));
        let fqdn = ctx.vars.get("fqdn").cloned().or_else(|| hostname.clone());
        let mut pairs = Vec::new();
        for k in &keys {
            let value = match k.as_str() {
                "instance_id" => Some(iid.clone()),
                "hostname" => hostname.clone(),
                "fqdn" => fqdn.clone(),
                "pub_key_rsa" | "pub_key_ecdsa" | "pub_key_ed25519" => {
                    let algo = &k["pub_key_".len()..];
                    let path = format!("/etc/ssh/ssh_host_{algo}_key.pub");
                    let key = read_text(&dir, &path);
                    if key.is_none() {
                        report.warn(format!("phone_home: {path}: not readable; sent as N/A"));
                    }
                    key
                }
                other => {
                    report.warn(format!(
                        "phone_home.post: `{other}` is not a key stoke knows ({}); sent as N/A",
                        POST_ALL.join(", ")
                    ));
                    None
                }
            };
            // cloud-init sends what it cannot have as "N/A".
            pairs.push((k.clone(), value.unwrap_or_else(|| "N/A".to_string())));
        }
        let url = expand_url(&section.url, &iid);
        let client = http::client(&url).map_err(ModuleError::Invalid)?;
        let delivery = http::deliver(
            &client,
            &http::Post {
                url: &url,
                content_type: "application/x-www-form-urlencoded",
                body: form_encode(&pairs),
                headers: &[],
                attempts: Some(tries),
                budget: PhoneHome::budget(tries),
                per_try: PHONE_HOME_PER_TRY,
                pause: http::Pause::Fixed(PHONE_HOME_PAUSE),
            },
        )
        .await;
        let sent: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        report.details = serde_json::json!({ "delivery": delivery, "posted": sent });
        if delivery.delivered {
            report.summary = format!(
                "posted {} to {url} (attempt {})",
                sent.join(", "),
                delivery.attempts
            );
        } else {
            let why = delivery.error.as_deref().unwrap_or("?");
            report.summary = format!("not delivered to {url}");
            report.warn(format!(
                "phone_home: not delivered to {url} after {} of {tries} tries: {why}",
                delivery.attempts
            ));
        }
        Ok(report)
    }
}

pub struct BootReport;

impl BootReport {
    fn budget(section: &ReportSection) -> Duration {
        Duration::from_secs(section.timeout.clamp(1, REPORT_MAX_TIMEOUT))
    }
}

#[stoke_api::async_trait]
impl Module for BootReport {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "report",
            stage: Stage::Final,
            frequency: Frequency::PerBoot,
            after: &[],
            needs_metadata: true,
            before_logins: false,
            timeout: module_timeout(Duration::from_secs(default_report_timeout())),
            config: config_spec::<ReportConfig>(),
            order: Order::Report,
        }
    }

    fn timeout_for(&self, config: &serde_json::Value) -> Duration {
        let budget = serde_json::from_value::<ReportConfig>(config.clone())
            .ok()
            .and_then(|c| c.report)
            .map(|s| BootReport::budget(&s))
            .unwrap_or(Duration::from_secs(default_report_timeout()));
        module_timeout(budget)
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        config
            .get("report")
            .is_none_or(|v| v.is_null())
            .then(|| "no `report:` section".to_string())
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: ReportConfig = ctx.config()?;
        let Some(section) = cfg.report else {
            return Ok(Report::new("nothing configured"));
        };
        let Some(status) = ctx.boot.status.as_ref() else {
            return Err(ModuleError::Other(
                "the boot's status was not given to the report module (a bug in stoke)".into(),
            ));
        };
        let body = serde_json::to_vec(status)
            .map_err(|e| ModuleError::Other(format!("encoding the status: {e}")))?;
        let url = expand_url(&section.url, &ctx.instance.instance_id);
        let headers: Vec<(String, String)> = section.headers.clone().into_iter().collect();
        for (k, v) in &headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                return Err(ModuleError::Invalid(format!(
                    "report.headers: `{k}` is not a valid HTTP header name and value"
                )));
            }
        }
        let client = http::client(&url).map_err(ModuleError::Invalid)?;
        let budget = BootReport::budget(&section);
        let delivery = http::deliver(
            &client,
            &http::Post {
                url: &url,
                content_type: "application/json",
                body,
                headers: &headers,
                attempts: None,
                budget,
                per_try: budget,
                pause: http::Pause::Doubling {
                    start: Duration::from_millis(500),
                    max: Duration::from_secs(5),
                },
            },
        )
        .await;
        let mut report = Report::default();
        let word = status.get("status").and_then(|s| s.as_str()).unwrap_or("?");
        report.details = serde_json::json!({
            "delivery": delivery,
            "reported_status": word,
            "headers": section.headers.keys().collect::<Vec<_>>(),
        });
        if delivery.delivered {
            report.summary = format!(
                "status `{word}` reported to {url} (HTTP {}, attempt {})",
                delivery.http_status.unwrap_or(0),
                delivery.attempts
            );
        } else {
            report.summary = format!("not delivered to {url}");
            report.warn(format!(
                "report: not delivered to {url} within {budget:?} ({} attempts): {}",
                delivery.attempts,
                delivery.error.as_deref().unwrap_or("?")
            ));
        }
        Ok(report)
    }
}
