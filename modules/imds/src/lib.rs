//! EC2 instance metadata over IMDSv2, for the datasource and for anything else that asks
//! IMDS (route53's instance-profile credentials).
//!
//! One session token (`PUT /latest/api/token`), then GETs, all inside one total time budget:
//! every attempt's timeout is cut to what is left of it, and retries (5xx, 429, timeouts,
//! refused connections) back off exponentially with jitter until the budget runs out. A 403
//! on the token PUT means IMDS is disabled for the instance: that fails at once. A 401 on a
//! GET refreshes the token once.
//!
//! Everything IMDS answers is untrusted input: sizes are capped, text must be UTF-8, and HTML
//! (a proxy or captive portal answering in IMDS's place) is rejected.

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stoke_api::RetryBudget;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[cfg(feature = "double")]
pub mod double;

/// Where IMDS is and how long stoke may spend on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ImdsConfig {
    /// `auto` (IPv4 and IPv6 tried concurrently, IPv4 first), `ipv4`, `ipv6`, a base URL, or a
    /// list of base URLs tried the way `auto` tries its two (in order, each a little after the
    /// one before).
    pub endpoint: Endpoint,
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
            endpoint: Endpoint::One(AUTO.to_string()),
            budget: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
            token_ttl_secs: 21600,
        }
    }
}

/// IMDS's IPv4 address, on every EC2 instance that has IPv4.
pub const IPV4_URL: &str = "http://169.254.169.254";
/// IMDS's IPv6 address (Nitro, when the instance's metadata options enable it).
pub const IPV6_URL: &str = "http://[fd00:ec2::254]";
const AUTO: &str = "auto";
/// How long each candidate endpoint gets to itself before the next one is tried as well
/// (happy eyeballs: an IPv4 IMDS answers in well under a millisecond, so IPv6 costs an
/// IPv4 instance nothing, and an IPv6-only instance waits this much once).
pub const STAGGER: Duration = Duration::from_millis(50);

/// `endpoint:` as configured: a word or URL, or a list of URLs.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Endpoint {
    One(String),
    Many(Vec<String>),
}

/// Checked as it is read, so a typo is an error with its line and column, not a failed boot.
impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoint, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Endpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, ipv4, ipv6, a URL or a list of URLs")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Endpoint, E> {
                let e = Endpoint::One(v.to_string());
                e.candidates().map_err(|e| E::custom(e.to_string()))?;
                Ok(e)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Endpoint, A::Error> {
                let mut v = Vec::new();
                while let Some(u) = seq.next_element::<String>()? {
                    v.push(u);
                }
                let e = Endpoint::Many(v);
                e.candidates()
                    .map_err(|e| serde::de::Error::custom(e.to_string()))?;
                Ok(e)
            }
        }
        d.deserialize_any(V)
    }
}

impl Endpoint {
    /// A single base URL.
    pub fn url(url: impl Into<String>) -> Endpoint {
        Endpoint::One(url.into())
    }

    /// The base URLs to try, in order (without a trailing `/`).
    pub fn candidates(&self) -> Result<Vec<String>, ImdsError> {
        let list: Vec<String> = match self {
            Endpoint::One(w) => match w.trim().to_ascii_lowercase().as_str() {
                AUTO => vec![IPV4_URL.into(), IPV6_URL.into()],
                "ipv4" => vec![IPV4_URL.into()],
                "ipv6" => vec![IPV6_URL.into()],
                _ => vec![w.clone()],
            },
            Endpoint::Many(v) => v.clone(),
        };
        if list.is_empty() {
            return Err(ImdsError::Http {
                what: "endpoint []".into(),
                reason: "no endpoint to try (give auto, ipv4, ipv6 or URLs)".into(),
            });
        }
        let mut out: Vec<String> = Vec::new();
        for u in list {
            let base = u.trim().trim_end_matches('/').to_string();
            let url =
                reqwest::Url::parse(&format!("{base}/latest/")).map_err(|e| ImdsError::Http {
                    what: format!("endpoint {u:?}"),
                    reason: format!("not a URL (nor auto, ipv4, ipv6): {e}"),
                })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ImdsError::Http {
                    what: format!("endpoint {u:?}"),
                    reason: "not an http:// or https:// URL (nor auto, ipv4, ipv6)".into(),
                });
            }
            if !out.contains(&base) {
                out.push(base);
            }
        }
        Ok(out)
    }
}

impl From<&str> for Endpoint {
    fn from(s: &str) -> Endpoint {
        Endpoint::One(s.to_string())
    }
}

impl From<String> for Endpoint {
    fn from(s: String) -> Endpoint {
        Endpoint::One(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::One(s) => f.write_str(s),
            Endpoint::Many(v) => write!(f, "[{}]", v.join(", ")),
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

const TOKEN_PATH: &str = "api/token";
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Cap on one metadata value or listing.
pub const LEAF_CAP: usize = 16 * 1024;
/// Cap on user-data (EC2 allows 16 KiB; NoCloud-style seeds and proxies may serve more).
pub const USER_DATA_CAP: usize = 16 * 1024 * 1024;
/// Cap on the entries of `public-keys/` and `block-device-mapping/`.
pub const MAX_ENTRIES: usize = 64;
const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct Session {
    client: reqwest::Client,
    base: String,
    ttl: String,
    request_timeout: Duration,
    budget: Duration,
    /// Every attempt of this session shares it.
    retry: RetryBudget,
    /// The current token; held across a PUT so concurrent 401s refresh it once.
    token: Mutex<Option<String>>,
    last_error: std::sync::Mutex<String>,
}

enum Body {
    TooLarge(String),
    Failed(String),
}

impl Session {
    /// A session against `cfg.endpoint`, which must name one endpoint (`ipv4`, `ipv6` or a URL;
    /// [`Session::connect`] takes several); its budget starts now.
    pub fn new(cfg: &ImdsConfig) -> Result<Arc<Session>, ImdsError> {
        let started = Instant::now();
        let candidates = cfg.endpoint.candidates()?;
        let [base] = candidates.as_slice() else {
            return Err(ImdsError::Http {
                what: format!("endpoint {}", cfg.endpoint),
                reason: "several endpoints: Session::connect picks one of them".into(),
            });
        };
        Session::at(base, cfg, started).map(Arc::new)
    }

    /// A session with the endpoint that first answers the token PUT: the candidates of
    /// `cfg.endpoint` (`preferred` first when it is one of them, as the one a previous boot
    /// used) are tried concurrently, each [`STAGGER`] after the one before, all inside the one
    /// budget. The others are dropped at once. A 403 from any of them means IMDS is disabled
    /// for the instance: that ends the race.
    pub async fn connect(
        cfg: &ImdsConfig,
        preferred: Option<&str>,
    ) -> Result<Arc<Session>, ImdsError> {
        let started = Instant::now();
        let mut candidates = cfg.endpoint.candidates()?;
        if let Some(p) = preferred.map(|p| p.trim_end_matches('/'))
            && let Some(i) = candidates.iter().position(|c| c == p)
        {
            let c = candidates.remove(i);
            candidates.insert(0, c);
        }
        if let [only] = candidates.as_slice() {
            let s = Arc::new(Session::at(only, cfg, started)?);
            s.token(None).await?;
            return Ok(s);
        }
        // A candidate's client is built when its turn comes: a boot that IPv4 answers builds
        // one client, as with a single endpoint.
        let deadline = started + cfg.budget.min(MAX_BUDGET);
        let started_sessions: Arc<Vec<OnceLock<Arc<Session>>>> =
            Arc::new(candidates.iter().map(|_| OnceLock::new()).collect());
        let mut set = tokio::task::JoinSet::new();
        for (i, base) in candidates.iter().enumerate() {
            let (base, cfg, slots) = (base.clone(), cfg.clone(), started_sessions.clone());
            let delay = STAGGER.saturating_mul(i as u32);
            set.spawn(async move {
                tokio::time::sleep(delay).await;
                let s = Arc::new(Session::at(&base, &cfg, started)?);
                let _ = slots[i].set(s.clone());
                s.token(None).await?;
                Ok::<_, ImdsError>(s)
            });
        }
        let mut errors: Vec<ImdsError> = Vec::new();
        let race = async {
            while let Some(joined) = set.join_next().await {
                let r = match joined {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => {
                        return Err(Some(bad(TOKEN_PATH, format!("a request task ended: {e}"))));
                    }
                };
                match r {
                    Ok(s) => {
                        tracing::debug!(endpoint = %s.base, "IMDS: this endpoint answered first");
                        return Ok(s);
                    }
                    Err(e @ ImdsError::Disabled { .. }) => return Err(Some(e)),
                    Err(e) => errors.push(e),
                }
            }
            Err(None)
        };
        let raced = tokio::time::timeout_at(deadline, race).await;
        // The losers stop here (their requests are cancelled with their tasks).
        set.abort_all();
        match raced {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(Some(e))) => Err(e),
            Ok(Err(None)) | Err(_) => Err(all_failed(
                &candidates,
                &started_sessions,
                errors,
                started,
                cfg.budget.min(MAX_BUDGET),
            )),
        }
    }

    fn at(base: &str, cfg: &ImdsConfig, started: Instant) -> Result<Session, ImdsError> {
        // A budget beyond a day is a typo, and a huge one would overflow Instant.
        let budget = cfg.budget.min(MAX_BUDGET);
        let url = reqwest::Url::parse(&format!("{base}/latest/")).map_err(|e| ImdsError::Http {
            what: format!("endpoint {base:?}"),
            reason: format!("not a URL: {e}"),
        })?;
        let mut builder = stoke_api::http::client_builder().connect_timeout(cfg.request_timeout);
        if url.scheme() == "http" {
            // IMDS is plain HTTP: skip loading the system CA store (milliseconds at boot).
            builder = builder.tls_certs_only([]);
        }
        let client = builder.build().map_err(|e| ImdsError::Http {
            what: "building the HTTP client".into(),
            reason: chain(&e),
        })?;
        Ok(Session {
            client,
            base: base.to_string(),
            ttl: cfg.token_ttl_secs.clamp(1, 21600).to_string(),
            request_timeout: cfg.request_timeout,
            budget,
            retry: RetryBudget::starting_at(started, budget),
            token: Mutex::new(None),
            last_error: std::sync::Mutex::new(String::new()),
        })
    }

    /// The base URL this session talks to (`http://169.254.169.254`, ...).
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// Runs `work` (requests of this session) within what is left of the budget.
    pub async fn within_budget<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ImdsError>>,
    ) -> Result<T, ImdsError> {
        match tokio::time::timeout_at(self.retry.deadline(), work).await {
            Ok(result) => result,
            Err(_) => Err(self.out_of_time()),
        }
    }

    /// A single-token value (`m6id.large`, `10.1.2.3`, ...); absent when 404 or empty.
    pub async fn value(&self, path: &str) -> Result<Option<String>, ImdsError> {
        match self.get(path, LEAF_CAP).await? {
            Some(body) => value_of(path, &body),
            None => Ok(None),
        }
    }

    /// Lines of a directory listing; empty when 404.
    pub async fn listing(&self, path: &str) -> Result<Vec<String>, ImdsError> {
        match self.get(path, LEAF_CAP).await? {
            Some(body) => listing_of(path, &body),
            None => Ok(Vec::new()),
        }
    }

    /// GETs several leaves concurrently; results in the order of `paths`.
    pub async fn get_all(
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
    pub async fn token(&self, stale: Option<&str>) -> Result<String, ImdsError> {
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
    pub async fn get(&self, path: &str, cap: usize) -> Result<Option<Vec<u8>>, ImdsError> {
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
        self.retry
            .attempt_timeout(self.request_timeout)
            .ok_or_else(|| self.out_of_time())
    }

    /// Sleeps before attempt `attempt + 1`: 50 ms doubling to 1 s, jittered to 50–100 %;
    /// gives up at once when the wait would not leave time for another attempt.
    async fn backoff(&self, attempt: u32) -> Result<(), ImdsError> {
        let exp = BACKOFF_START.saturating_mul(1 << attempt.saturating_sub(1).min(10));
        let wait = jitter(exp.min(BACKOFF_MAX));
        match self.retry.pause(wait).await {
            true => Ok(()),
            false => Err(self.out_of_time()),
        }
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
            after: self.retry.elapsed(),
            budget: self.budget,
            last_error: if last.is_empty() {
                "no answer yet (a request was still waiting when the budget ran out)".into()
            } else {
                last
            },
        }
    }
}

/// Every candidate failed: one error for all of them, each candidate's last error in it.
fn all_failed(
    candidates: &[String],
    sessions: &[OnceLock<Arc<Session>>],
    errors: Vec<ImdsError>,
    started: Instant,
    budget: Duration,
) -> ImdsError {
    // A candidate that failed for good (not for want of time) says the most.
    if let Some(e) = errors
        .into_iter()
        .find(|e| !matches!(e, ImdsError::BudgetExceeded { .. }))
    {
        return e;
    }
    let last: Vec<String> = candidates
        .iter()
        .zip(sessions)
        .map(|(c, s)| {
            let e = s.get().map(|s| s.last_error()).unwrap_or_default();
            let e = if e.is_empty() {
                "no answer".to_string()
            } else {
                e
            };
            format!("{c}: {e}")
        })
        .collect();
    ImdsError::BudgetExceeded {
        endpoint: candidates.join(" and "),
        after: started.elapsed(),
        budget,
        last_error: last.join("; "),
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

pub fn bad(path: &str, reason: impl Into<String>) -> ImdsError {
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

/// A leaf's answer as one value (`None` when blank): text, printable, no spaces.
pub fn value_of(path: &str, body: &[u8]) -> Result<Option<String>, ImdsError> {
    let v = text(path, body)?.trim();
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

/// A directory listing's answer as its non-blank lines (at most `MAX_ENTRIES`).
pub fn listing_of(path: &str, body: &[u8]) -> Result<Vec<String>, ImdsError> {
    let lines: Vec<String> = text(path, body)?
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

/// A response body as text: UTF-8, and not an HTML page.
pub fn text<'a>(path: &str, body: &'a [u8]) -> Result<&'a str, ImdsError> {
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

/// The first 80 characters, for error messages about untrusted text.
pub fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An error and its sources, `: `-separated (reqwest puts the detail in the sources).
pub fn chain(e: &dyn std::error::Error) -> String {
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
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_as_they_are_read() {
        let read = |j: &str| serde_json::from_str::<ImdsConfig>(j).map_err(|e| e.to_string());
        assert!(read(r#"{"endpoint":"ipv6"}"#).is_ok());
        assert!(read(r#"{"endpoint":["http://127.0.0.1:1","http://[::1]:1"]}"#).is_ok());
        for (bad, says) in [
            (r#"{"endpoint":"htp:/x"}"#, "not an http"),
            (r#"{"endpoint":"ipv5"}"#, "nor auto, ipv4, ipv6"),
            (r#"{"endpoint":[]}"#, "no endpoint"),
            (r#"{"endpoint":42}"#, "a list of URLs"),
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
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
    fn endpoint_words_lists_and_urls() {
        let c = |e: Endpoint| e.candidates().map_err(|e| e.to_string());
        assert_eq!(
            c("auto".into()).unwrap(),
            ["http://169.254.169.254", "http://[fd00:ec2::254]"]
        );
        assert_eq!(c("IPv6".into()).unwrap(), ["http://[fd00:ec2::254]"]);
        assert_eq!(c("ipv4".into()).unwrap(), ["http://169.254.169.254"]);
        assert_eq!(
            c("http://10.0.0.1:8080/".into()).unwrap(),
            ["http://10.0.0.1:8080"]
        );
        assert!(
            c(Endpoint::Many(vec![]))
                .unwrap_err()
                .contains("no endpoint")
        );
        assert_eq!(ImdsConfig::default().endpoint, "auto".into());
        let parsed: ImdsConfig =
            serde_json::from_str(r#"{"endpoint":["http://127.0.0.1:1","http://[::1]:1"]}"#)
                .expect("a list");
        assert_eq!(parsed.endpoint.candidates().unwrap().len(), 2);
    }

    #[test]
    fn a_bad_endpoint_is_an_error_naming_it_and_text_rejects_html() {
        let cfg = ImdsConfig {
            endpoint: "not a url".into(),
            ..ImdsConfig::default()
        };
        let e = Session::new(&cfg).err().expect("refused").to_string();
        assert!(
            e.contains("\"not a url\"") && e.contains("not a URL"),
            "{e}"
        );

        assert_eq!(text("p", b" m6id.large\n").ok(), Some(" m6id.large\n"));
        let e = text("p", b"<!DOCTYPE html><p>login</p>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("captive portal"), "{e}");
        let e = text("p", &[0x66, 0xff]).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && e.contains("offset 1"), "{e}");
    }
}
