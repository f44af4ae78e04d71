//! The signer against AWS's SigV4 test suite, every header-signing case of it. The suite
//! ships in the `aws-sigv4` crate's package; `sigv4-suite/Cargo.toml` names it and cargo fetches
//! it from crates.io (a registry CI reaches), so the cases are read, not copied here.
//!
//! Each case is a raw HTTP request (`request.txt`), its signing context (`context.json`) and the
//! expected canonical request, string to sign and signature. Not run, with their reason:
//! - the `query-*` files: presigned URLs (the signature in the query string); stoke signs
//!   headers only;
//! - `get-space-normalized`, `get-space-unnormalized`: their expected path is encoded once, while
//!   every service but S3 (all stoke calls) encodes it twice — AWS's own Rust signer skips these
//!   two for the same reason.

use std::path::{Path, PathBuf};

use super::*;

const NOT_RUN: &[(&str, &str)] = &[
    (
        "get-space-normalized",
        "encoded once: S3's rule; stoke's services encode twice",
    ),
    (
        "get-space-unnormalized",
        "encoded once: S3's rule; stoke's services encode twice",
    ),
];

/// The suite's `v4` directory, from cargo's unpacked copy of the crate that carries it.
fn suite_dir() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("sigv4-suite/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata for {} failed (is crates.io reachable?): {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "aws-sigv4"))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cargo metadata names no aws-sigv4 package")?;
    let dir = Path::new(package)
        .parent()
        .ok_or("a manifest path without a directory")?
        .join("aws-signing-test-suite/v4");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!("{} is not there", dir.display()))
    }
}

/// `request.txt`: the request line, headers (a line starting with whitespace continues the
/// header before it), a blank line, the body.
struct RawRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse_request(text: &str) -> RawRequest {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b.as_bytes().to_vec()),
        None => (text.trim_end_matches('\n'), Vec::new()),
    };
    let mut lines = head.lines();
    let request_line = lines.next().expect("a request line");
    let (method, rest) = request_line.split_once(' ').expect("a method");
    let target = rest.strip_suffix(" HTTP/1.1").expect("HTTP/1.1");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a continued header");
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (k, v) = line.split_once(':').expect("a header");
            headers.push((k.to_string(), v.to_string()));
        }
    }
    RawRequest {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 after decoding")
}

/// `2015-08-30T12:36:00Z` → `20150830T123600Z`.
fn amz_date_of(rfc3339: &str) -> String {
    rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect()
}

struct Checked {
    name: String,
    compared: Vec<&'static str>,
}

fn check_case(dir: &Path) -> Checked {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let raw = parse_request(&read("request.txt").expect("request.txt"));
    let context: Option<serde_json::Value> =
        read("context.json").map(|c| serde_json::from_str(&c).expect("context.json"));
    let expected = read("header-canonical-request.txt").expect("a canonical request");
    let (amz_date, region, service, normalize) = match &context {
        Some(c) => (
            amz_date_of(c["timestamp"].as_str().expect("timestamp")),
            c["region"].as_str().expect("region").to_string(),
            c["service"].as_str().expect("service").to_string(),
            c["normalize"].as_bool().unwrap_or(true),
        ),
        // The two cases of the older format have no context (and no signature to compare):
        // their signing time is the expected canonical request's (`double-encode-path`'s
        // request says another).
        None => {
            let date = expected
                .lines()
                .find_map(|l| l.strip_prefix("x-amz-date:"))
                .expect("an x-amz-date line")
                .to_string();
            (date, String::new(), String::new(), true)
        }
    };
    let empty = serde_json::Value::Null;
    let c = context.as_ref().unwrap_or(&empty);
    let token = c["credentials"]["token"].as_str();
    // `omit_session_token`: the token is sent but not signed — signed as without one.
    let signed_token = token.filter(|_| c["omit_session_token"] != true);
    let creds = Credentials {
        access_key_id: c["credentials"]["access_key_id"]
            .as_str()
            .unwrap_or("")
            .into(),
        secret_access_key: c["credentials"]["secret_access_key"]
            .as_str()
            .unwrap_or("")
            .into(),
        session_token: signed_token.map(str::to_string),
        expires: None,
    };
    let mut headers: Vec<(&str, &str)> = raw
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-amz-date"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // `sign_body`: the body's hash goes in `x-amz-content-sha256`, which is signed.
    let body_hash = hex(&Sha256::digest(&raw.body));
    if c["sign_body"] == true {
        headers.push(("x-amz-content-sha256", body_hash.as_str()));
    }
    let query: Vec<(&str, &str)> = raw
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let req = Request {
        method: &raw.method,
        path: &raw.path,
        query: &query,
        headers: &headers,
        body: &raw.body,
    };
    let mut added = vec![("x-amz-date", amz_date.clone())];
    if let Some(t) = signed_token {
        added.push(("x-amz-security-token", t.to_string()));
    }
    let canonical = canonical_request(&req, &added, normalize);
    let mut compared = Vec::new();
    assert_eq!(canonical.text, expected, "{name}: canonical request");
    compared.push("canonical request");
    let scope = format!(
        "{}/{region}/{service}/aws4_request",
        amz_date.get(..8).unwrap_or("")
    );
    if let (Some(sts), Some(_)) = (read("header-string-to-sign.txt"), &context) {
        assert_eq!(
            string_to_sign(&canonical.text, &amz_date, &scope),
            sts,
            "{name}: string to sign"
        );
        compared.push("string to sign");
    }
    if let (Some(sig), Some(_)) = (read("header-signature.txt"), &context) {
        assert_eq!(
            signature(
                &canonical.text,
                &creds,
                &amz_date,
                &scope,
                &region,
                &service
            ),
            sig.trim(),
            "{name}: signature"
        );
        compared.push("signature");
        // And through the public entry point, when it signs the same way (it always
        // normalizes and signs a token it is given).
        if normalize && token == signed_token {
            let sent = sign(&req, &creds, &region, &service, &amz_date);
            let auth = &sent.iter().find(|(k, _)| *k == "authorization").unwrap().1;
            assert!(
                auth.ends_with(&format!("Signature={}", sig.trim())),
                "{name}: {auth}"
            );
            compared.push("sign()");
        }
    }
    Checked { name, compared }
}

#[test]
fn every_header_signing_case_of_the_aws_sigv4_test_suite() {
    let dir = match suite_dir() {
        Ok(d) => d,
        Err(why) => {
            stoke_api::testing::skip(&format!("AWS's SigV4 test suite is not at hand: {why}"));
            return;
        }
    };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the suite's directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.join("request.txt").is_file())
        .collect();
    cases.sort();
    let mut ran = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if let Some((_, why)) = NOT_RUN.iter().find(|(n, _)| *n == name) {
            println!("not run: {name}: {why}");
            continue;
        }
        let checked = check_case(case);
        println!("ok: {} ({})", checked.name, checked.compared.join(", "));
        ran.push(checked);
    }
    // The suite of aws-sigv4 1.6.4 has 40 cases: a suite that shrank would pass by running less.
    assert!(ran.len() >= 38, "only {} cases ran", ran.len());
    assert!(
        ran.iter()
            .filter(|c| c.compared.contains(&"signature"))
            .count()
            >= 36,
        "too few signatures compared"
    );
}
