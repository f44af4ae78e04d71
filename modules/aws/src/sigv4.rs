//! AWS Signature Version 4 (header form): canonical request, string to sign,
//! signing key and the `Authorization` header. Pure functions: the caller
//! passes the time, so the published AWS test vectors check it exactly.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::credentials::Credentials;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What is signed of one request.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent: already percent-encoded.
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign besides `x-amz-date` and `x-amz-security-token`
    /// (`host` at least), with the values as sent.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token`
/// when there is a session token, and `authorization`.
/// `amz_date` is `YYYYMMDD'T'HHMMSS'Z'` (see [`crate::time::amz_date`]).
pub fn sign(
    req: &Request,
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Vec<(&'static str, String)> {
    let mut added = vec![("x-amz-date", amz_date.to_string())];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token", token.clone()));
    }
    let canonical = canonical_request(req, &added, true);
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let signature = signature(&canonical.text, creds, amz_date, &scope, region, service);
    added.push((
        "authorization",
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            creds.access_key_id, canonical.signed_headers
        ),
    ));
    added
}

/// The canonical request and the names of the headers it signs.
struct Canonical {
    text: String,
    signed_headers: String,
}

/// `normalize`: remove `.`/`..` segments and empty ones from the path first, as every service
/// but S3 does (stoke signs for those only; the test suite has S3's cases too).
fn canonical_request(req: &Request, added: &[(&str, String)], normalize: bool) -> Canonical {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), canonical_value(v)))
        .chain(added.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .collect();
    // By name only (a stable sort): a header sent more than once is signed once, its values
    // joined by commas in the order they were sent.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        match merged.last_mut() {
            Some((last, values)) if *last == k => {
                values.push(',');
                values.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let signed_headers = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = merged.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let path = if normalize {
        normalize_path(req.path)
    } else {
        req.path.to_string()
    };
    let text = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        canonical_uri(&path),
        canonical_query(req.query),
        hex(&Sha256::digest(req.body)),
    );
    Canonical {
        text,
        signed_headers,
    }
}

fn string_to_sign(canonical_request: &str, amz_date: &str, scope: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

fn signature(
    canonical_request: &str,
    creds: &Credentials,
    amz_date: &str,
    scope: &str,
    region: &str,
    service: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let key = signing_key(&creds.secret_access_key, date, region, service);
    let to_sign = string_to_sign(canonical_request, amz_date, scope);
    hex(&hmac(&key, to_sign.as_bytes()))
}

/// RFC 3986's dot-segment removal, and empty segments dropped (`//a//` is `/a/`); a trailing
/// slash is kept.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let ends_in_dir = matches!(path.rsplit('/').next(), Some("" | "." | ".."));
    let mut p = format!("/{}", out.join("/"));
    if ends_in_dir && !out.is_empty() {
        p.push('/');
    }
    p
}

/// The query string as sent, in the given order (the signature sorts its own copy).
pub fn query_string(query: &[(&str, &str)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes all but the unreserved characters (`A-Za-z0-9-._~`), and
/// `/` too unless `slash` says otherwise (SigV4's UriEncode).
pub fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Services other than S3 sign the path encoded once more than it was sent.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    uri_encode(path, false)
}

fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trimmed, inner runs of spaces collapsed to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            session_token: token.map(str::to_string),
            expires: None,
        }
    }

    fn authorization<'a>(added: &'a [(&'static str, String)]) -> &'a str {
        &added
            .iter()
            .find(|(k, _)| *k == "authorization")
            .expect("an authorization header")
            .1
    }

    /// AWS's published example, "Add the signature to the HTTP request" (IAM
    /// ListUsers): https://docs.aws.amazon.com/general/latest/gr/sigv4-add-signature-to-request.html
    /// (inputs from the same guide's "Create a canonical request" page).
    #[test]
    fn aws_docs_iam_list_users_example() {
        let req = Request {
            method: "GET",
            path: "/",
            query: &[("Action", "ListUsers"), ("Version", "2010-05-08")],
            headers: &[
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("Host", "iam.amazonaws.com"),
            ],
            body: b"",
        };
        let added = sign(&req, &creds(None), "us-east-1", "iam", "20150830T123600Z");
        assert_eq!(
            authorization(&added),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert_eq!(added[0], ("x-amz-date", "20150830T123600Z".to_string()));
        assert_eq!(added.len(), 2, "no session token, no token header");
    }

    /// The AWS SigV4 test suite, `get-vanilla-query-order-key-case`:
    /// https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html
    /// (query parameters given out of order must be sorted before signing).
    #[test]
    fn aws_test_suite_get_vanilla_query_order_key_case() {
        let req = Request {
            method: "GET",
            path: "/",
            query: &[("Param2", "value2"), ("Param1", "value1")],
            headers: &[("Host", "example.amazonaws.com")],
            body: b"",
        };
        let added = sign(
            &req,
            &creds(None),
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            authorization(&added),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    /// The same test suite, `post-sts-header-before`: a session token is sent
    /// as `x-amz-security-token` and signed.
    #[test]
    fn aws_test_suite_post_sts_header_before() {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let req = Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &[("Host", "example.amazonaws.com")],
            body: b"",
        };
        let added = sign(
            &req,
            &creds(Some(token)),
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert!(added.contains(&("x-amz-security-token", token.to_string())));
        assert_eq!(
            authorization(&added),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        );
    }

    #[test]
    fn a_changed_input_changes_the_signature() {
        let req = |body: &'static [u8]| Request {
            method: "POST",
            path: "/2013-04-01/hostedzone/Z1/rrset",
            query: &[],
            headers: &[("host", "route53.amazonaws.com")],
            body,
        };
        let a = sign(
            &req(b"<a/>"),
            &creds(None),
            "us-east-1",
            "route53",
            "20260101T000000Z",
        );
        let b = sign(
            &req(b"<b/>"),
            &creds(None),
            "us-east-1",
            "route53",
            "20260101T000000Z",
        );
        assert_ne!(authorization(&a), authorization(&b));
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~*", true), "a%20b%2Fc~%2A");
        assert_eq!(uri_encode("/x y/", false), "/x%20y/");
        assert_eq!(
            query_string(&[("name", "*.example.com."), ("type", "A")]),
            "name=%2A.example.com.&type=A"
        );
        // Sent once encoded, signed twice encoded (non-S3 services).
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
        assert_eq!(canonical_value("  a   b  "), "a b");
    }
}

#[cfg(test)]
#[path = "sigv4_suite.rs"]
mod suite;
