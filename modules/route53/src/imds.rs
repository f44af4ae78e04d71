//! The instance profile's credentials from EC2 instance metadata, IMDSv2:
//! a session token (PUT), the role's name, then the role's credentials.
//! Each request is cut after a short timeout so a machine that is not on EC2
//! (or whose IMDS is blocked) fails fast instead of hanging the boot.

use std::time::Duration;

use serde::Deserialize;

use crate::credentials::Credentials;
use crate::env::Env;

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
/// One IMDS request (connect included) takes no longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const TOKEN_PATH: &str = "/latest/api/token";
const ROLES_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// The token outlives any run of the module; it is not kept between runs.
const TOKEN_TTL_SECONDS: &str = "21600";

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the IPv6 address when
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`, else the usual IPv4 one.
pub fn endpoint(env: &Env) -> String {
    if let Some(e) = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        return e.trim_end_matches('/').to_string();
    }
    match env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
        Some(m) if m.eq_ignore_ascii_case("ipv6") => IPV6_ENDPOINT.into(),
        _ => DEFAULT_ENDPOINT.into(),
    }
}

/// A client for IMDS only: no proxy (IMDS is link-local), and no CA store to
/// load for a plain-HTTP endpoint.
pub fn http_client(endpoint: &str) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT);
    if endpoint.starts_with("http://") {
        b = b.tls_certs_only([]);
    }
    b.build()
        .map_err(|e| format!("building the IMDS HTTP client: {e}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

/// The instance profile's current credentials, or why there are none.
pub async fn credentials(
    http: &reqwest::Client,
    endpoint: &str,
    timeout: Duration,
) -> Result<Credentials, String> {
    let token = get(
        http.put(format!("{endpoint}{TOKEN_PATH}"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS),
        timeout,
    )
    .await
    .map_err(|e| match e.status {
        Some(403) => format!(
            "IMDSv2 token refused ({}): instance metadata is disabled, or the hop limit is too low",
            e.message
        ),
        _ => format!("IMDSv2 token: {}", e.message),
    })?;
    let roles = get(
        http.get(format!("{endpoint}{ROLES_PATH}"))
            .header("x-aws-ec2-metadata-token", &token),
        timeout,
    )
    .await
    .map_err(|e| match e.status {
        Some(404) => {
            "no IAM role is attached to this instance (no instance profile, or not yet)".to_string()
        }
        _ => format!("listing the instance profile's role: {}", e.message),
    })?;
    let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Err("instance metadata lists no IAM role for this instance".into());
    };
    let body = get(
        http.get(format!("{endpoint}{ROLES_PATH}{role}"))
            .header("x-aws-ec2-metadata-token", &token),
        timeout,
    )
    .await
    .map_err(|e| format!("credentials of role `{role}`: {}", e.message))?;
    parse(&body).map_err(|e| format!("credentials of role `{role}`: {e}"))
}

fn parse(body: &str) -> Result<Credentials, String> {
    let doc: Document =
        serde_json::from_str(body).map_err(|e| format!("not the expected JSON ({e})"))?;
    if let Some(code) = doc.code.as_deref().filter(|c| *c != "Success") {
        return Err(format!(
            "IMDS answered {code}: {}",
            doc.message.as_deref().unwrap_or("(no message)")
        ));
    }
    let need = |v: Option<String>, k: &str| v.filter(|s| !s.is_empty()).ok_or(format!("no {k}"));
    Ok(Credentials {
        access_key_id: need(doc.access_key_id, "AccessKeyId")?,
        secret_access_key: need(doc.secret_access_key, "SecretAccessKey")?,
        session_token: doc.token.filter(|t| !t.is_empty()),
        // Unreadable expiry: treated as "refresh when the run needs it again".
        expires: doc
            .expiration
            .as_deref()
            .and_then(crate::time::parse_rfc3339),
    })
}

struct HttpError {
    status: Option<u16>,
    message: String,
}

/// The body of a 200 answer; anything else is an error with the status.
async fn get(req: reqwest::RequestBuilder, timeout: Duration) -> Result<String, HttpError> {
    let fail = |e: reqwest::Error| HttpError {
        status: None,
        message: if e.is_timeout() {
            format!("no answer within {:.1} s", timeout.as_secs_f64())
        } else {
            error_chain(&e)
        },
    };
    let resp = req.timeout(timeout).send().await.map_err(fail)?;
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let body = resp.text().await.map_err(fail)?;
    if status != 200 {
        return Err(HttpError {
            status: Some(status),
            message: format!("HTTP {status} from {url}"),
        });
    }
    Ok(body)
}

/// An error with its causes: reqwest keeps the useful part (connection
/// refused, DNS ...) in the source chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    pub(crate) const TOKEN: &str = "tok-123";

    /// A tiny IMDSv2: one answer per (method, path); GETs need the token.
    /// Returns its URL and the requests it saw ("METHOD path [token]").
    pub(crate) async fn imds(
        routes: Vec<(&'static str, &'static str, u16, String)>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (
                    first.next().unwrap_or("").to_uppercase(),
                    first.next().unwrap_or("").to_string(),
                );
                let has_token = head.contains(&format!("x-aws-ec2-metadata-token: {TOKEN}"));
                let has_ttl = head.contains("x-aws-ec2-metadata-token-ttl-seconds: 21600");
                log.lock().unwrap().push(format!(
                    "{method} {path}{}",
                    if has_token { " [token]" } else { "" }
                ));
                let (status, body) = match routes.iter().find(|r| r.0 == method && r.1 == path) {
                    Some(_) if method == "PUT" && !has_ttl => (400, String::new()),
                    Some(_) if method == "GET" && !has_token => (401, String::new()),
                    Some((_, _, s, b)) => (*s, b.clone()),
                    None => (404, String::new()),
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            }
        });
        (url, seen)
    }

    pub(crate) fn creds_json(code: &str) -> String {
        format!(
            r#"{{"Code":"{code}","LastUpdated":"2026-11-25T10:00:00Z","Type":"AWS-HMAC",
               "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"sess",
               "Expiration":"2026-11-25T16:00:00Z"}}"#
        )
    }

    #[tokio::test]
    async fn token_then_role_then_credentials() {
        let (url, seen) = imds(vec![
            ("PUT", TOKEN_PATH, 200, TOKEN.into()),
            ("GET", ROLES_PATH, 200, "stoke-role\n".into()),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/stoke-role",
                200,
                creds_json("Success"),
            ),
        ])
        .await;
        let http = http_client(&url).unwrap();
        let c = credentials(&http, &url, REQUEST_TIMEOUT).await.unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key, "s3cr3t");
        assert_eq!(c.session_token.as_deref(), Some("sess"));
        assert_eq!(
            c.expires,
            crate::time::parse_rfc3339("2026-11-25T16:00:00Z")
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("PUT {TOKEN_PATH}"),
                format!("GET {ROLES_PATH} [token]"),
                format!("GET {ROLES_PATH}stoke-role [token]"),
            ]
        );
    }

    #[tokio::test]
    async fn no_role_and_failed_codes_say_why() {
        let (url, _) = imds(vec![("PUT", TOKEN_PATH, 200, TOKEN.into())]).await;
        let http = http_client(&url).unwrap();
        let e = credentials(&http, &url, REQUEST_TIMEOUT).await.unwrap_err();
        assert!(e.contains("no IAM role is attached"), "{e}");

        let (url, _) = imds(vec![
            ("PUT", TOKEN_PATH, 200, TOKEN.into()),
            ("GET", ROLES_PATH, 200, "r\n".into()),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/r",
                200,
                creds_json("AssumeRoleUnauthorizedAccess"),
            ),
        ])
        .await;
        let e = credentials(&http, &url, REQUEST_TIMEOUT).await.unwrap_err();
        assert!(
            e.contains("role `r`") && e.contains("AssumeRoleUnauthorizedAccess"),
            "{e}"
        );

        let (url, _) = imds(vec![("PUT", TOKEN_PATH, 403, String::new())]).await;
        let e = credentials(&http, &url, REQUEST_TIMEOUT).await.unwrap_err();
        assert!(e.contains("token refused") && e.contains("HTTP 403"), "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_or_no_answer_fails_fast() {
        // A port that was free a moment ago: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let http = http_client(&url).unwrap();
        let e = credentials(&http, &url, REQUEST_TIMEOUT).await.unwrap_err();
        assert!(e.starts_with("IMDSv2 token:"), "{e}");

        // Accepts, never answers: cut at the timeout.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let t = std::time::Instant::now();
        let e = credentials(&http, &url, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.contains("no answer within 0.2 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        drop(silent);
    }

    #[test]
    fn endpoint_from_the_environment() {
        assert_eq!(endpoint(&Env::default()), DEFAULT_ENDPOINT);
        let env = Env::of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")]);
        assert_eq!(endpoint(&env), "http://127.0.0.1:9");
        let env = Env::of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]);
        assert_eq!(endpoint(&env), IPV6_ENDPOINT);
    }
}
