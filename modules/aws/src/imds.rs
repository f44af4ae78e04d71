//! The instance profile's credentials from EC2 instance metadata, through the shared IMDSv2
//! session (`stoke-imds`): a token, the role's name, then the role's credentials, with the
//! session's bounded retries. The budget is short so that a machine that is not on EC2 (or
//! whose IMDS is blocked) fails within it instead of holding up the run.

use std::time::Duration;

use serde::Deserialize;
use stoke_imds::{ImdsConfig, ImdsError, LEAF_CAP, Session};

use crate::credentials::Credentials;
use crate::env::Env;

pub const DEFAULT_ENDPOINT: &str = stoke_imds::IPV4_URL;
const IPV6_ENDPOINT: &str = stoke_imds::IPV6_URL;
/// Everything (token, role, credentials, retries) within this.
pub const BUDGET: Duration = Duration::from_secs(5);
/// One IMDS request (connect included) takes no longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const ROLES_PATH: &str = "meta-data/iam/security-credentials/";

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the IPv6 address when
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` (what the operator set for the process wins),
/// else the endpoint this boot's datasource found answering (`chosen`: IPv4 or IPv6, per
/// `imds.endpoint`), else the usual IPv4 one.
pub fn endpoint(env: &Env, chosen: Option<&str>) -> String {
    if let Some(e) = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        return e.trim_end_matches('/').to_string();
    }
    match env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
        Some(m) if m.eq_ignore_ascii_case("ipv6") => IPV6_ENDPOINT.into(),
        Some(m) if m.eq_ignore_ascii_case("ipv4") => DEFAULT_ENDPOINT.into(),
        _ => chosen.map_or_else(|| DEFAULT_ENDPOINT.into(), str::to_string),
    }
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

/// The instance profile's current credentials, or why there are none. The session cuts every
/// attempt (and its backoff) to what is left of `budget`, so the whole lookup stays within it.
pub async fn credentials(endpoint: &str, budget: Duration) -> Result<Credentials, String> {
    let cfg = ImdsConfig {
        endpoint: stoke_imds::Endpoint::url(endpoint),
        budget,
        request_timeout: REQUEST_TIMEOUT.min(budget),
        ..ImdsConfig::default()
    };
    let imds = |e: ImdsError| e.to_string();
    let session = Session::new(&cfg).map_err(imds)?;
    let Some(roles) = session.get(ROLES_PATH, LEAF_CAP).await.map_err(imds)? else {
        return Err(
            "no IAM role is attached to this instance (no instance profile, or not yet)".into(),
        );
    };
    let roles = stoke_imds::text(ROLES_PATH, &roles).map_err(imds)?;
    let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Err("instance metadata lists no IAM role for this instance".into());
    };
    // IAM role names: letters, digits and +=,.@_- (the name goes into a URL path).
    if !role
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        return Err(format!(
            "instance metadata lists {:?} as the role, not an IAM role name",
            stoke_imds::cut(role)
        ));
    }
    let path = format!("{ROLES_PATH}{role}");
    let Some(body) = session.get(&path, LEAF_CAP).await.map_err(imds)? else {
        return Err(format!(
            "credentials of role `{role}`: not found (HTTP 404)"
        ));
    };
    let body = stoke_imds::text(&path, &body).map_err(imds)?;
    parse(body).map_err(|e| format!("credentials of role `{role}`: {e}"))
}

pub(crate) fn parse(body: &str) -> Result<Credentials, String> {
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

    const TOKEN_PATH: &str = "/latest/api/token";
    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";

    #[tokio::test]
    async fn token_then_role_then_credentials() {
        let (url, seen) = imds(vec![
            ("PUT", TOKEN_PATH, 200, TOKEN.into()),
            ("GET", ROLES, 200, "stoke-role\n".into()),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/stoke-role",
                200,
                creds_json("Success"),
            ),
        ])
        .await;
        let c = credentials(&url, BUDGET).await.unwrap();
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
                format!("GET {ROLES} [token]"),
                format!("GET {ROLES}stoke-role [token]"),
            ]
        );
    }

    #[tokio::test]
    async fn no_role_and_failed_codes_say_why() {
        let (url, _) = imds(vec![("PUT", TOKEN_PATH, 200, TOKEN.into())]).await;
        let e = credentials(&url, BUDGET).await.unwrap_err();
        assert!(e.contains("no IAM role is attached"), "{e}");

        let (url, _) = imds(vec![
            ("PUT", TOKEN_PATH, 200, TOKEN.into()),
            ("GET", ROLES, 200, "r\n".into()),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/r",
                200,
                creds_json("AssumeRoleUnauthorizedAccess"),
            ),
        ])
        .await;
        let e = credentials(&url, BUDGET).await.unwrap_err();
        assert!(
            e.contains("role `r`") && e.contains("AssumeRoleUnauthorizedAccess"),
            "{e}"
        );

        // A role "name" that would walk the URL path is not used.
        let (url, seen) = imds(vec![
            ("PUT", TOKEN_PATH, 200, TOKEN.into()),
            ("GET", ROLES, 200, "../../user-data\n".into()),
        ])
        .await;
        let e = credentials(&url, BUDGET).await.unwrap_err();
        assert!(e.contains("not an IAM role name"), "{e}");
        assert_eq!(seen.lock().unwrap().len(), 2, "{:?}", seen.lock().unwrap());

        // 403 on the token: IMDS is off for this instance; said at once, not retried.
        let (url, seen) = imds(vec![("PUT", TOKEN_PATH, 403, String::new())]).await;
        let e = credentials(&url, BUDGET).await.unwrap_err();
        assert!(
            e.contains("refused to issue a session token") && e.contains("HTTP 403"),
            "{e}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn nothing_listening_or_no_answer_ends_within_the_budget() {
        // A port that was free a moment ago: connection refused, retried until the budget.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let t = std::time::Instant::now();
        let e = credentials(&url, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("gave up") && e.contains("api/token"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

        // Accepts, never answers: cut at the budget.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let t = std::time::Instant::now();
        let e = credentials(&url, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.contains("gave up"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        drop(silent);
    }

    #[test]
    fn endpoint_from_the_environment() {
        assert_eq!(endpoint(&Env::default(), None), DEFAULT_ENDPOINT);
        let env = Env::of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/")]);
        assert_eq!(endpoint(&env, Some(IPV6_ENDPOINT)), "http://127.0.0.1:9");
        let env = Env::of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]);
        assert_eq!(endpoint(&env, None), IPV6_ENDPOINT);
        // The boot's choice (an IPv6-only instance) is the one used, unless the environment says.
        assert_eq!(
            endpoint(&Env::default(), Some(IPV6_ENDPOINT)),
            IPV6_ENDPOINT
        );
        let env = Env::of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4")]);
        assert_eq!(endpoint(&env, Some(IPV6_ENDPOINT)), DEFAULT_ENDPOINT);
    }
}
