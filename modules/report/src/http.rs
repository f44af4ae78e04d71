//! One POST, retried within a budget: what both boot reports share.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// A request to deliver.
pub struct Post<'a> {
    pub url: &'a str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: &'a [(String, String)],
    /// At most this many attempts (`None`: as many as the budget allows).
    pub attempts: Option<u32>,
    /// Everything, retries and pauses included, ends by then.
    pub budget: Duration,
    /// One attempt's bound (cut to what is left of the budget).
    pub per_try: Duration,
    /// Pause before the next attempt: fixed (cloud-init's 3 s) or doubling from this.
    pub pause: Pause,
}

#[derive(Clone, Copy)]
pub enum Pause {
    Fixed(Duration),
    Doubling { start: Duration, max: Duration },
}

/// How the delivery went, for `stoke status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    pub url: String,
    pub delivered: bool,
    pub attempts: u32,
    /// The HTTP status of the last answer, if any came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it was not delivered (the last attempt's error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

enum Attempt {
    Done(u16),
    /// Worth another try (no answer, 5xx, 429).
    Retry(Option<u16>, String),
    /// Another try would get the same answer (4xx).
    Final(u16, String),
}

pub fn client(url: &str) -> Result<reqwest::Client, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    let mut b = stoke_api::http::client_builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("stoke/", env!("CARGO_PKG_VERSION")));
    match parsed.scheme() {
        "https" => {}
        // Plain HTTP: skip reading the CA store.
        "http" => b = b.tls_certs_only([]),
        s => return Err(format!("url {url:?}: scheme {s:?} is not http or https")),
    }
    b.build()
        .map_err(|e| format!("building the HTTP client: {}", chain(&e)))
}

pub async fn deliver(client: &reqwest::Client, post: &Post<'_>) -> Delivery {
    let started = Instant::now();
    let deadline = started + post.budget;
    let mut attempts = 0u32;
    let mut pause = match post.pause {
        Pause::Fixed(d) => d,
        Pause::Doubling { start, .. } => start,
    };
    let mut last_status = None;
    let mut last_error = String::from("no attempt made (no time budget)");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || post.attempts.is_some_and(|max| attempts >= max) {
            break;
        }
        attempts += 1;
        match attempt(client, post, post.per_try.min(left)).await {
            Attempt::Done(code) => {
                return Delivery {
                    url: post.url.to_string(),
                    delivered: true,
                    attempts,
                    http_status: Some(code),
                    error: None,
                    duration_ms: started.elapsed().as_millis() as u64,
                };
            }
            Attempt::Final(code, why) => {
                last_status = Some(code);
                last_error = why;
                break;
            }
            Attempt::Retry(code, why) => {
                tracing::debug!("report: {}: attempt {attempts}: {why}", post.url);
                last_status = code;
                last_error = why;
            }
        }
        if post.attempts.is_some_and(|max| attempts >= max) {
            break;
        }
        // A pause that would end past the budget leaves no time to try again.
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        if let Pause::Doubling { max, .. } = post.pause {
            pause = (pause * 2).min(max);
        }
    }
    Delivery {
        url: post.url.to_string(),
        delivered: false,
        attempts,
        http_status: last_status,
        error: Some(last_error),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

async fn attempt(client: &reqwest::Client, post: &Post<'_>, timeout: Duration) -> Attempt {
    let mut req = client
        .post(post.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, post.content_type)
        .body(post.body.clone());
    for (k, v) in post.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Attempt::Retry(None, format!("no answer within {timeout:.1?}"));
        }
        Err(e) => return Attempt::Retry(None, chain(&e)),
    };
    let code = resp.status().as_u16();
    if resp.status().is_success() {
        return Attempt::Done(code);
    }
    let why = format!("HTTP {code}");
    if resp.status().is_server_error() || code == 429 || code == 408 {
        Attempt::Retry(Some(code), why)
    } else {
        Attempt::Final(code, why)
    }
}

/// An error and its sources (reqwest puts the detail there).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// `application/x-www-form-urlencoded`, as browsers and cloud-init's requests send forms.
pub fn form_encode(pairs: &[(String, String)]) -> Vec<u8> {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}
