//! EC2 instance metadata over IMDSv2.
//!
//! One session token (`PUT /latest/api/token`), then a handful of concurrent GETs, all
//! inside one total time budget: every attempt's timeout is cut to what is left of it,
//! and retries (5xx, 429, timeouts, refused connections) back off exponentially with
//! jitter until the budget runs out. A 403 on the token PUT means IMDS is disabled for
//! the instance: that fails at once. A 401 on a GET refreshes the token once.
//!
//! Everything IMDS answers is treated as untrusted input: sizes are capped, values must
//! be UTF-8 single tokens, HTML (a proxy or captive portal answering in IMDS's place) is
//! rejected, and the instance id must be safe to use as a directory name.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stoke_api::InstanceData;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Where IMDS is and how long stoke may spend on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ImdsConfig {
    /// Base URL of the metadata service.
    pub endpoint: String,
    /// Total time for everything (token, metadata, user-data, retries), in seconds.
    /// When it runs out the stage goes on without EC2 metadata and reports why.
    #[serde(rename = "budget_seconds", with = "seconds")]
    #[schemars(rename = "budget_seconds", with = "f64", range(min = 0))]
    pub budget: Duration,
    /// Timeout of one HTTP attempt, in seconds (cut to what is left of the budget).
    #[serde(rename = "request_timeout_seconds", with = "seconds")]
    #[schemars(rename = "request_timeout_seconds", with = "f64", range(min = 0))]
    pub request_timeout: Duration,
    /// Lifetime requested for the IMDSv2 session token (1 to 21600 seconds).
    #[serde(rename = "token_ttl_seconds")]
    #[schemars(rename = "token_ttl_seconds", range(min = 1, max = 21600))]
    pub token_ttl_secs: u32,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            endpoint: "http://169.254.169.254".to_string(),
            budget: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
            token_ttl_secs: 21600,
        }
    }
}

/// Durations as (fractional) seconds in configuration.
mod seconds {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(|e| {
            serde::de::Error::custom(format!("{v} is not a usable number of seconds: {e}"))
        })
    }
}

/// What EC2 told us: instance data (datasource `"ec2"`) and the raw user-data, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Ec2Metadata {
    pub instance: InstanceData,
    /// Raw bytes as served (may be gzip or MIME: see `userdata::decode`); `None` when
    /// the instance has no user-data (404).
    pub user_data: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error(
        "EC2 IMDS at {endpoint} refused to issue a session token (HTTP 403 on PUT /latest/api/token): \
         the metadata service is disabled for this instance (or blocked); not retrying"
    )]
    Disabled { endpoint: String },
    #[error(
        "EC2 IMDS at {endpoint}: gave up after {after:.1?} (time budget {budget:?}); last error: {last_error}"
    )]
    BudgetExceeded {
        endpoint: String,
        after: Duration,
        budget: Duration,
        last_error: String,
    },
    #[error("EC2 IMDS: reading {path}: {reason}")]
    BadResponse { path: String, reason: String },
    #[error(
        "EC2 IMDS: instance-id {id:?} is not a valid instance id \
         (expected 1 to 128 of A-Z a-z 0-9 . _ -, and not \".\" or \"..\")"
    )]
    InvalidInstanceId { id: String },
    #[error("EC2 IMDS: {method} {path}: HTTP {status}{detail}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("EC2 IMDS: {what}: {reason}")]
    Http { what: String, reason: String },
}

pub use crate::state::valid_instance_id;

const TOKEN_PATH: &str = "api/token";
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Cap on one metadata value or listing.
const LEAF_CAP: usize = 16 * 1024;
/// Cap on user-data (EC2 allows 16 KiB; NoCloud-style seeds and proxies may serve more).
const USER_DATA_CAP: usize = 16 * 1024 * 1024;
/// Cap on the entries of `public-keys/` and `block-device-mapping/`.
const MAX_ENTRIES: usize = 64;
const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Fetches instance data and user-data from IMDS, within `cfg.budget` in total.
pub async fn fetch(cfg: &ImdsConfig) -> Result<Ec2Metadata, ImdsError> {
    let started = Instant::now();
    // A budget beyond a day is a typo, and a huge one would overflow Instant.
    let budget = cfg.budget.min(MAX_BUDGET);
    let deadline = started + budget;
    let base = cfg.endpoint.trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&format!("{base}/latest/")).map_err(|e| ImdsError::Http {
        what: format!("endpoint {:?}", cfg.endpoint),
        reason: format!("not a URL: {e}"),
    })?;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(cfg.request_timeout);
    if url.scheme() == "http" {
        // IMDS is plain HTTP: skip loading the system CA store (milliseconds at boot).
        builder = builder.tls_certs_only([]);
    }
    let client = builder.build().map_err(|e| ImdsError::Http {
        what: "building the HTTP client".into(),
        reason: chain(&e),
    })?;
    let session = Arc::new(Session {
        client,
        base,
        ttl: cfg.token_ttl_secs.clamp(1, 21600).to_string(),
        request_timeout: cfg.request_timeout,
        budget,
        started,
        deadline,
        token: Mutex::new(None),
        last_error: std::sync::Mutex::new(String::new()),
    });
    match tokio::time::timeout_at(deadline, session.clone().collect()).await {
        Ok(result) => result,
        Err(_) => Err(session.out_of_time()),
    }
}

struct Session {
    client: reqwest::Client,
    base: String,
    ttl: String,
    request_timeout: Duration,
    budget: Duration,
    started: Instant,
    deadline: Instant,
    /// The current token; held across a PUT so concurrent 401s refresh it once.
    token: Mutex<Option<String>>,
    last_error: std::sync::Mutex<String>,
}

enum Body {
    TooLarge(String),
    Failed(String),
}

impl Session {
    async fn collect(self: Arc<Self>) -> Result<Ec2Metadata, ImdsError> {
        // One token before fanning out, so the GETs share it.
        self.token(None).await?;
        let (id, itype, ipv4, ipv6, hostname, region, az, keys, bdm, user_data) = tokio::try_join!(
            self.get("meta-data/instance-id", LEAF_CAP),
            self.value("meta-data/instance-type"),
            self.value("meta-data/local-ipv4"),
            self.value("meta-data/ipv6"),
            self.value("meta-data/local-hostname"),
            self.value("meta-data/placement/region"),
            self.value("meta-data/placement/availability-zone"),
            self.public_keys(),
            self.block_devices(),
            self.get("user-data", USER_DATA_CAP),
        )?;

        let id_path = "meta-data/instance-id";
        let Some(id) = id else {
            return Err(bad(
                id_path,
                "missing (HTTP 404); every EC2 instance has one",
            ));
        };
        let id = text(id_path, &id)?.trim().to_string();
        if !valid_instance_id(&id) {
            return Err(ImdsError::InvalidInstanceId {
                id: id.chars().take(80).collect(),
            });
        }
        if let Some(ip) = &ipv4 {
            ip.parse::<Ipv4Addr>().map_err(|_| {
                bad(
                    "meta-data/local-ipv4",
                    format!("{ip:?} is not an IPv4 address"),
                )
            })?;
        }
        if let Some(ip) = &ipv6 {
            ip.parse::<Ipv6Addr>()
                .map_err(|_| bad("meta-data/ipv6", format!("{ip:?} is not an IPv6 address")))?;
        }
        let region = region.or_else(|| az.as_deref().and_then(region_of_zone));
        Ok(Ec2Metadata {
            instance: InstanceData {
                datasource: "ec2".into(),
                instance_id: id,
                instance_type: itype,
                local_ipv4: ipv4,
                ipv6,
                local_hostname: hostname,
                region,
                availability_zone: az,
                public_keys: keys,
                block_device_mapping: bdm,
            },
            user_data,
        })
    }

    /// A single-token value (`m6id.large`, `10.1.2.3`, ...); absent when 404 or empty.
    async fn value(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let Some(body) = self.get(path, LEAF_CAP).await? else {
            return Ok(None);
        };
        let v = text(path, &body)?.trim();
        if v.is_empty() {
            return Ok(None);
        }
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                path,
                format!("expected a single value, got {:?}", cut(v)),
            ));
        }
        Ok(Some(v.to_string()))
    }

    /// Lines of a directory listing; empty when 404.
    async fn listing(&self, path: &str) -> Result<Vec<String>, ImdsError> {
        let Some(body) = self.get(path, LEAF_CAP).await? else {
            return Ok(Vec::new());
        };
        let lines: Vec<String> = text(path, &body)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if lines.len() > MAX_ENTRIES {
            return Err(bad(
                path,
                format!("{} entries (at most {MAX_ENTRIES} expected)", lines.len()),
            ));
        }
        Ok(lines)
    }

    /// `public-keys/` lists `N=name`; each key is at `public-keys/N/openssh-key`.
    async fn public_keys(self: &Arc<Self>) -> Result<Vec<String>, ImdsError> {
        let list = "meta-data/public-keys/";
        let mut indexes = Vec::new();
        for line in self.listing(list).await? {
            let n = line
                .split_once('=')
                .map_or(line.trim_end_matches('/'), |(n, _)| n);
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    list,
                    format!("unexpected entry {:?} (expected N=name)", cut(&line)),
                ));
            }
            indexes.push(n.to_string());
        }
        let bodies = self
            .get_all(
                indexes
                    .iter()
                    .map(|n| format!("meta-data/public-keys/{n}/openssh-key")),
            )
            .await?;
        let mut keys = Vec::new();
        for (path, body) in bodies {
            let Some(body) = body else { continue };
            for line in text(&path, &body)?.lines().map(str::trim) {
                if line.is_empty() {
                    continue;
                }
                if line.chars().any(char::is_control) {
                    return Err(bad(&path, "control characters in a public key"));
                }
                keys.push(line.to_string());
            }
        }
        Ok(keys)
    }

    /// `block-device-mapping/` lists names (`ami`, `root`, `ephemeral0`, ...); each
    /// entry's value is the device.
    async fn block_devices(self: &Arc<Self>) -> Result<BTreeMap<String, String>, ImdsError> {
        let list = "meta-data/block-device-mapping/";
        let mut names = Vec::new();
        for line in self.listing(list).await? {
            let name = line.trim_end_matches('/');
            if !valid_instance_id(name) {
                return Err(bad(list, format!("unexpected entry {:?}", cut(&line))));
            }
            names.push(name.to_string());
        }
        let paths = names.iter().map(|n| format!("{list}{n}"));
        let bodies = self.get_all(paths).await?;
        let mut map = BTreeMap::new();
        for (name, (path, body)) in names.into_iter().zip(bodies) {
            let Some(body) = body else { continue };
            let dev = text(&path, &body)?.trim();
            if dev.is_empty() {
                continue;
            }
            if !dev.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    &path,
                    format!("expected a device name, got {:?}", cut(dev)),
                ));
            }
            map.insert(name, dev.to_string());
        }
        Ok(map)
    }

    /// GETs several leaves concurrently; results in the order of `paths`.
    async fn get_all(
        self: &Arc<Self>,
        paths: impl Iterator<Item = String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, ImdsError> {
        let mut set = tokio::task::JoinSet::new();
        let mut n = 0;
        for (i, path) in paths.enumerate() {
            let me = self.clone();
            set.spawn(async move {
                let body = me.get(&path, LEAF_CAP).await;
                (i, path, body)
            });
            n += 1;
        }
        let mut out: Vec<Option<(String, Option<Vec<u8>>)>> = vec![None; n];
        while let Some(joined) = set.join_next().await {
            let (i, path, body) = match joined {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(bad("meta-data", format!("a request task ended: {e}"))),
            };
            out[i] = Some((path, body?));
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// The current token, or a new one when there is none or `stale` is the current one.
    async fn token(&self, stale: Option<&str>) -> Result<String, ImdsError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_deref()
            && Some(t) != stale
        {
            return Ok(t.to_string());
        }
        let t = self.put_token().await?;
        *slot = Some(t.clone());
        Ok(t)
    }

    async fn put_token(&self) -> Result<String, ImdsError> {
        let url = format!("{}/latest/{TOKEN_PATH}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let timeout = self.attempt_timeout()?;
            let sent = self
                .client
                .put(&url)
                .header(TTL_HEADER, &self.ttl)
                .timeout(timeout)
                .send()
                .await;
            match sent {
                Ok(resp) => match resp.status().as_u16() {
                    200 => match read_capped(resp, 4096, timeout).await {
                        Ok(body) => return token_text(&body),
                        Err(Body::TooLarge(why)) => return Err(bad(TOKEN_PATH, why)),
                        Err(Body::Failed(why)) => self.note(format!("PUT {TOKEN_PATH}: {why}")),
                    },
                    403 => {
                        return Err(ImdsError::Disabled {
                            endpoint: self.base.clone(),
                        });
                    }
                    s if retryable(s) => self.note(format!("PUT {TOKEN_PATH}: HTTP {s}")),
                    s => return Err(status_error("PUT", TOKEN_PATH, s, "")),
                },
                Err(e) => self.transport_error("PUT", TOKEN_PATH, e, timeout)?,
            }
            self.backoff(attempt).await?;
        }
    }

    /// GET `/latest/{path}`: `Ok(None)` on 404; retries within the budget.
    async fn get(&self, path: &str, cap: usize) -> Result<Option<Vec<u8>>, ImdsError> {
        let url = format!("{}/latest/{path}", self.base);
        let mut token = self.token(None).await?;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let timeout = self.attempt_timeout()?;
            let sent = self
                .client
                .get(&url)
                .header(TOKEN_HEADER, &token)
                .timeout(timeout)
                .send()
                .await;
            match sent {
                Ok(resp) => match resp.status().as_u16() {
                    200 => match read_capped(resp, cap, timeout).await {
                        Ok(body) => return Ok(Some(body)),
                        Err(Body::TooLarge(why)) => return Err(bad(path, why)),
                        Err(Body::Failed(why)) => self.note(format!("GET {path}: {why}")),
                    },
                    404 => return Ok(None),
                    401 if !refreshed => {
                        // The token expired or was revoked: one fresh one, retried at once.
                        refreshed = true;
                        token = self.token(Some(&token)).await?;
                        continue;
                    }
                    401 => {
                        return Err(status_error(
                            "GET",
                            path,
                            401,
                            " (the session token was refused again right after refreshing it)",
                        ));
                    }
                    s if retryable(s) => self.note(format!("GET {path}: HTTP {s}")),
                    s => return Err(status_error("GET", path, s, "")),
                },
                Err(e) => self.transport_error("GET", path, e, timeout)?,
            }
            self.backoff(attempt).await?;
        }
    }

    /// Records a retryable transport failure, or returns the error when retrying is
    /// pointless (a request that cannot even be built).
    fn transport_error(
        &self,
        method: &str,
        path: &str,
        e: reqwest::Error,
        timeout: Duration,
    ) -> Result<(), ImdsError> {
        if e.is_builder() {
            return Err(ImdsError::Http {
                what: format!("building {method} {path}"),
                reason: chain(&e),
            });
        }
        if e.is_timeout() {
            // An attempt the budget cut short says less than the failure before it.
            if timeout < self.request_timeout && !self.last_error().is_empty() {
                return Ok(());
            }
            self.note(format!("{method} {path}: no answer within {timeout:?}"));
        } else {
            self.note(format!("{method} {path}: {}", chain(&e.without_url())));
        }
        Ok(())
    }

    /// The timeout for the next attempt, or BudgetExceeded when nothing is left.
    fn attempt_timeout(&self) -> Result<Duration, ImdsError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.out_of_time());
        }
        Ok(left.min(self.request_timeout))
    }

    /// Sleeps before attempt `attempt + 1`: 50 ms doubling to 1 s, jittered to 50–100 %;
    /// gives up at once when the wait would not leave time for another attempt.
    async fn backoff(&self, attempt: u32) -> Result<(), ImdsError> {
        let exp = BACKOFF_START.saturating_mul(1 << attempt.saturating_sub(1).min(10));
        let wait = jitter(exp.min(BACKOFF_MAX));
        if Instant::now() + wait >= self.deadline {
            return Err(self.out_of_time());
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn note(&self, error: String) {
        tracing::debug!(%error, "IMDS request failed; retrying within the budget");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn out_of_time(&self) -> ImdsError {
        let last = self.last_error();
        ImdsError::BudgetExceeded {
            endpoint: self.base.clone(),
            after: self.started.elapsed(),
            budget: self.budget,
            last_error: if last.is_empty() {
                "no answer yet (a request was still waiting when the budget ran out)".into()
            } else {
                last
            },
        }
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

fn status_error(method: &'static str, path: &str, status: u16, detail: &str) -> ImdsError {
    ImdsError::Status {
        method,
        path: path.to_string(),
        status,
        detail: detail.to_string(),
    }
}

fn bad(path: &str, reason: impl Into<String>) -> ImdsError {
    ImdsError::BadResponse {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Reads a body of at most `cap` bytes.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Body> {
    if let Some(len) = resp.content_length()
        && len > cap as u64
    {
        return Err(Body::TooLarge(format!(
            "{len} bytes (at most {cap} accepted)"
        )));
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > cap {
                    return Err(Body::TooLarge(format!("more than {cap} bytes")));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) if e.is_timeout() => {
                return Err(Body::Failed(format!(
                    "body not complete within {timeout:?}"
                )));
            }
            Err(e) => return Err(Body::Failed(chain(&e.without_url()))),
        }
    }
}

/// A response body as text: UTF-8, and not an HTML page.
fn text<'a>(path: &str, body: &'a [u8]) -> Result<&'a str, ImdsError> {
    let s = std::str::from_utf8(body).map_err(|e| {
        bad(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let head = s
        .trim_start()
        .get(..15)
        .unwrap_or(s.trim_start())
        .to_ascii_lowercase();
    if head.starts_with("<!doctype") || head.starts_with("<html") || head.starts_with("<?xml") {
        return Err(bad(
            path,
            "an HTML/XML page, not metadata (is a proxy or captive portal answering for IMDS?)",
        ));
    }
    Ok(s)
}

fn token_text(body: &[u8]) -> Result<String, ImdsError> {
    let t = text(TOKEN_PATH, body)?.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            TOKEN_PATH,
            "the session token is empty or not printable ASCII",
        ));
    }
    Ok(t.to_string())
}

/// `us-east-1a` → `us-east-1` (for IMDS versions without `placement/region`).
fn region_of_zone(az: &str) -> Option<String> {
    let region = az.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    region
        .ends_with(|c: char| c.is_ascii_digit())
        .then(|| region.to_string())
}

/// The first 80 characters, for error messages about untrusted text.
fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An error and its sources, `: `-separated (reqwest puts the detail in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

fn jitter(d: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    d.mul_f64(0.5 + (r % 1000) as f64 / 2000.0)
}

#[cfg(test)]
#[path = "../../tests/support/imds.rs"]
mod imds_double;

#[cfg(test)]
mod tests {
    use super::imds_double::{ImdsServer, Knobs, Tree};
    use super::*;
    use std::time::Instant as StdInstant;

    fn cfg(srv: &ImdsServer) -> ImdsConfig {
        ImdsConfig {
            endpoint: srv.url(),
            budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            token_ttl_secs: 21600,
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn with(mut tree: Tree, path: &str, v: &[u8]) -> Tree {
        tree.insert(path.to_string(), v.to_vec());
        tree
    }

    #[test]
    fn region_from_zone() {
        assert_eq!(region_of_zone("us-east-1a").as_deref(), Some("us-east-1"));
        assert_eq!(region_of_zone("eu-west-3c").as_deref(), Some("eu-west-3"));
        assert_eq!(region_of_zone("us-east-1"), None);
        assert_eq!(region_of_zone(""), None);
    }

    #[test]
    fn config_from_yaml_style_json() {
        let c: ImdsConfig = serde_json::from_str(
            r#"{"endpoint":"http://127.0.0.1:1","budget_seconds":0.5,"request_timeout_seconds":1}"#,
        )
        .expect("parses");
        assert_eq!(c.budget, Duration::from_millis(500));
        assert_eq!(c.request_timeout, Duration::from_secs(1));
        assert_eq!(c.token_ttl_secs, 21600);
        assert_eq!(
            serde_json::from_str::<ImdsConfig>("{}").expect("defaults"),
            ImdsConfig::default()
        );
        assert!(serde_json::from_str::<ImdsConfig>(r#"{"budget":3}"#).is_err());
        assert!(serde_json::from_str::<ImdsConfig>(r#"{"budget_seconds":-1}"#).is_err());
        let schema = serde_json::to_string(&schemars::schema_for!(ImdsConfig)).expect("schema");
        assert!(schema.contains("budget_seconds") && schema.contains("token_ttl_seconds"));
        let back: ImdsConfig =
            serde_json::from_value(serde_json::to_value(&c).expect("ser")).expect("de");
        assert_eq!(back, c);
    }

    #[test]
    fn happy_path_fetches_everything_concurrently() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                // Long enough that concurrent requests overlap in the server.
                delay: Duration::from_millis(30),
                ..Knobs::default()
            },
        );
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        let i = &md.instance;
        assert_eq!(i.datasource, "ec2");
        assert_eq!(i.instance_id, "i-0123456789abcdef0");
        assert_eq!(i.instance_type.as_deref(), Some("m6id.large"));
        assert_eq!(i.local_ipv4.as_deref(), Some("10.1.2.3"));
        assert_eq!(i.ipv6.as_deref(), Some("2600:1f18:aaaa:bbbb::10"));
        assert_eq!(
            i.local_hostname.as_deref(),
            Some("ip-10-1-2-3.ec2.internal")
        );
        assert_eq!(i.region.as_deref(), Some("us-east-1"));
        assert_eq!(i.availability_zone.as_deref(), Some("us-east-1a"));
        assert_eq!(
            i.public_keys,
            [
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice alice@example",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob bob@example"
            ]
        );
        let bdm: Vec<_> = i.block_device_mapping.iter().collect();
        assert_eq!(
            bdm,
            [
                (&"ami".to_string(), &"/dev/xvda".to_string()),
                (&"ephemeral0".to_string(), &"sdb".to_string()),
                (&"root".to_string(), &"/dev/xvda".to_string())
            ]
        );
        assert_eq!(
            md.user_data.as_deref(),
            Some(&b"#cloud-config\nhostname: web-1\n"[..])
        );
        assert_eq!(srv.tokens_issued(), 1);
        assert_eq!(srv.requests("/latest/api/token"), 1);
        // Every path fetched exactly once, and not one after the other.
        assert!(srv.counts().values().all(|&n| n == 1), "{:?}", srv.counts());
        assert!(
            srv.max_in_flight() >= 5,
            "max in flight {}",
            srv.max_in_flight()
        );
    }

    #[test]
    fn absurd_budget_is_capped_not_a_panic() {
        let srv = ImdsServer::happy();
        let c: ImdsConfig = serde_json::from_value(serde_json::json!({
            "endpoint": srv.url(),
            "budget_seconds": 1e15,
            "request_timeout_seconds": 1e15,
        }))
        .expect("parses");
        let md = run(fetch(&c)).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");
    }

    #[test]
    fn optional_paths_absent_and_region_from_zone() {
        let mut tree = Tree::new();
        tree.insert("meta-data/instance-id".into(), b"i-1".to_vec());
        tree.insert(
            "meta-data/placement/availability-zone".into(),
            b"eu-west-3c".to_vec(),
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-1");
        assert_eq!(md.instance.region.as_deref(), Some("eu-west-3"));
        assert_eq!(md.instance.local_ipv4, None);
        assert!(md.instance.public_keys.is_empty());
        assert!(md.instance.block_device_mapping.is_empty());
        assert_eq!(md.user_data, None, "404 user-data is none");
    }

    #[test]
    fn expired_token_is_refreshed_once() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                reject_first_token: true,
                ..Knobs::default()
            },
        );
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");
        // Concurrent GETs that all hit the revoked token share one refresh.
        assert_eq!(srv.tokens_issued(), 2);
    }

    #[test]
    fn forbidden_token_means_disabled_without_retries() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                token_forbidden: true,
                ..Knobs::default()
            },
        );
        let t = StdInstant::now();
        let err = run(fetch(&cfg(&srv))).expect_err("disabled");
        assert!(matches!(err, ImdsError::Disabled { .. }), "{err}");
        assert!(err.to_string().contains("disabled"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(srv.total_requests(), 1);
    }

    #[test]
    fn server_errors_are_retried() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                leading_500s: 3,
                ..Knobs::default()
            },
        );
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");
        // The first three requests were all the token PUT.
        assert_eq!(srv.requests("/latest/api/token"), 4);
        assert_eq!(srv.tokens_issued(), 1);
    }

    /// Runs against a misbehaving server with a 300 ms budget and checks that fetch
    /// gives up with BudgetExceeded soon after it (the margin absorbs a loaded machine).
    fn assert_budget_kept(knobs: Knobs, request_timeout: Duration) -> ImdsError {
        let srv = ImdsServer::start(ImdsServer::default_tree(), knobs);
        let budget = Duration::from_millis(300);
        let c = ImdsConfig {
            budget,
            request_timeout,
            ..cfg(&srv)
        };
        let t = StdInstant::now();
        let err = run(fetch(&c)).expect_err("out of time");
        let took = t.elapsed();
        // Generous for a loaded CI machine; without the budget this would never end
        // (endless retries) or take the 10 s attempt timeout.
        assert!(took < budget + Duration::from_secs(2), "took {took:?}");
        assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
        err
    }

    #[test]
    fn hanging_server_respects_the_budget() {
        let err = assert_budget_kept(
            Knobs {
                hang: true,
                ..Knobs::default()
            },
            Duration::from_millis(100),
        );
        assert!(err.to_string().contains("no answer within"), "{err}");
    }

    #[test]
    fn attempt_timeout_is_cut_to_the_budget() {
        // One attempt may take 10 s, but only 300 ms are left for everything.
        assert_budget_kept(
            Knobs {
                hang_path: Some("/latest/user-data".into()),
                ..Knobs::default()
            },
            Duration::from_secs(10),
        );
    }

    #[test]
    fn slow_server_respects_the_budget() {
        assert_budget_kept(
            Knobs {
                delay: Duration::from_millis(200),
                ..Knobs::default()
            },
            Duration::from_millis(100),
        );
    }

    #[test]
    fn endless_500s_respect_the_budget() {
        let err = assert_budget_kept(
            Knobs {
                leading_500s: usize::MAX,
                ..Knobs::default()
            },
            Duration::from_secs(1),
        );
        assert!(err.to_string().contains("HTTP 500"), "{err}");
    }

    #[test]
    fn connection_refused_respects_the_budget() {
        let endpoint = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let c = ImdsConfig {
            endpoint,
            budget: Duration::from_millis(300),
            ..ImdsConfig::default()
        };
        let t = StdInstant::now();
        let err = run(fetch(&c)).expect_err("refused");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
    }

    #[test]
    fn traversal_instance_id_is_rejected() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/instance-id",
            b"../../etc",
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&cfg(&srv))).expect_err("rejected");
        assert!(
            matches!(err, ImdsError::InvalidInstanceId { ref id } if id == "../../etc"),
            "{err}"
        );
    }

    #[test]
    fn non_utf8_leaf_is_a_bad_response() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/local-hostname",
            b"ip-\xff\xfe",
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&cfg(&srv))).expect_err("bad");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "meta-data/local-hostname"),
            "{err}"
        );
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn html_bodies_are_rejected() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                garbage_bodies: true,
                ..Knobs::default()
            },
        );
        let err = run(fetch(&cfg(&srv))).expect_err("bad");
        assert!(matches!(err, ImdsError::BadResponse { .. }), "{err}");
        assert!(err.to_string().contains("HTML"), "{err}");
    }

    #[test]
    fn oversized_leaf_and_user_data_are_rejected() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/instance-type",
            &[b'x'; 17 * 1024],
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&cfg(&srv))).expect_err("too big");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "meta-data/instance-type"),
            "{err}"
        );

        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                huge_user_data: Some(USER_DATA_CAP + 1),
                ..Knobs::default()
            },
        );
        let err = run(fetch(&cfg(&srv))).expect_err("too big");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "user-data"),
            "{err}"
        );
    }

    #[test]
    fn malformed_values_and_listings_are_rejected() {
        for (path, body) in [
            ("meta-data/local-ipv4", &b"10.1.2"[..]),
            ("meta-data/instance-type", b"m6id large"),
            ("meta-data/public-keys/", b"zero=alice"),
            ("meta-data/block-device-mapping/", b"../../user-data"),
        ] {
            let srv = ImdsServer::start(
                with(ImdsServer::default_tree(), path, body),
                Knobs::default(),
            );
            let err = run(fetch(&cfg(&srv))).expect_err(path);
            assert!(
                matches!(err, ImdsError::BadResponse { path: ref p, .. } if p == path),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn gzip_multipart_user_data_round_trips() {
        use std::io::Write;
        let mime = b"Content-Type: multipart/mixed; boundary=\"XX\"\n\
MIME-Version: 1.0\n\n--XX\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: a\n\
--XX\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--XX--\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(mime).expect("gzip");
        let raw = gz.finish().expect("gzip");
        let srv = ImdsServer::start(
            with(ImdsServer::default_tree(), "user-data", &raw),
            Knobs::default(),
        );
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(
            md.user_data.as_deref(),
            Some(&raw[..]),
            "served bytes unchanged"
        );
        let ud = super::super::userdata::decode(&raw).expect("decode");
        assert_eq!(ud.cloud_configs, ["#cloud-config\nhostname: a"]);
        assert_eq!(ud.scripts.len(), 1);
    }

    #[test]
    fn bad_endpoint_is_a_clear_error() {
        let c = ImdsConfig {
            endpoint: "not a url".into(),
            ..ImdsConfig::default()
        };
        let err = run(fetch(&c)).expect_err("bad endpoint");
        assert!(matches!(err, ImdsError::Http { .. }), "{err}");
    }
}
