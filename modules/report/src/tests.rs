//! Against a local HTTP server on a free port: one that answers, one that fails with 500
//! first, one that closes the connection, one that never answers.

use std::sync::Arc;
use std::time::Duration;

use stoke_api::fake::{FakeSystem, context};
use stoke_api::{BootSoFar, InstanceData, Module};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 with an empty body.
    Ok,
    /// 500 for the first N requests, then 200.
    FailFirst(usize),
    /// Every connection closed without an answer.
    Close,
    /// Reads the request and never answers (the connection stays open).
    Silent,
}

/// A request as the server read it: request line, lower-cased headers, body.
#[derive(Debug)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        line,
        headers,
        body,
    })
}

/// Serves on 127.0.0.1 (a free port); every request read is sent to the returned channel.
async fn serve(b: Behaviour) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut count = 0usize;
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            if let Behaviour::Close = b {
                drop(s);
                let _ = tx.send(Seen {
                    line: "closed".into(),
                    headers: Vec::new(),
                    body: Vec::new(),
                });
                continue;
            }
            let Some(seen) = read_request(&mut s).await else {
                continue;
            };
            let _ = tx.send(seen);
            count += 1;
            let answer: &[u8] = match b {
                Behaviour::FailFirst(n) if count <= n => {
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                }
                Behaviour::Silent => {
                    held.push(s);
                    continue;
                }
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            };
            let _ = s.write_all(answer).await;
            let _ = s.shutdown().await;
        }
    });
    (url, rx)
}

fn instance() -> InstanceData {
    InstanceData {
        datasource: "nocloud".into(),
        instance_id: "i-0abc".parse().unwrap(),
        ..InstanceData::default()
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'+' => out.push(b' '),
                    b'%' if i + 2 < b.len() + 1 => {
                        let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            (k.to_string(), String::from_utf8(out).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn phone_home_posts_cloud_inits_form_to_the_instances_url() {
    let (url, mut seen) = serve(Behaviour::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("etc/ssh");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(
        keys.join("ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAAC3Nza host\n",
    )
    .unwrap();
    let config = serde_json::json!({"phone_home": {"url": format!("{url}/$INSTANCE_ID/ready")}});
    let mut ctx = context(dir.path(), config, instance(), FakeSystem::new());
    ctx.vars.insert("hostname".into(), "web-1".into());
    ctx.vars.insert("fqdn".into(), "web-1.example.com".into());
    let report = PhoneHome.run(&ctx).await.unwrap();
    let req = seen.recv().await.unwrap();
    assert_eq!(req.line, "POST /i-0abc/ready HTTP/1.1");
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let posted = form(&req.body);
    let get = |k: &str| posted.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        posted.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        POST_ALL
    );
    assert_eq!(get("instance_id"), Some("i-0abc"));
    assert_eq!(get("hostname"), Some("web-1"));
    assert_eq!(get("fqdn"), Some("web-1.example.com"));
    assert_eq!(get("pub_key_ed25519"), Some("ssh-ed25519 AAAAC3Nza host"));
    assert_eq!(
        get("pub_key_rsa"),
        Some("N/A"),
        "as cloud-init: missing is N/A"
    );
    assert_eq!(report.details["delivery"]["delivered"], true);
    // The two missing host keys are said.
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
}

#[tokio::test]
async fn phone_home_posts_only_the_listed_keys_and_names_unknown_ones() {
    let (url, mut seen) = serve(Behaviour::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"phone_home": {
        "url": format!("{url}/${{INSTANCE_ID}}"), "post": ["instance_id", "pub_key_dsa"], "tries": "x"
    }});
    let ctx = context(dir.path(), config, instance(), FakeSystem::new());
    let report = PhoneHome.run(&ctx).await.unwrap();
    let req = seen.recv().await.unwrap();
    assert_eq!(req.line, "POST /i-0abc HTTP/1.1");
    assert_eq!(
        form(&req.body),
        vec![
            ("instance_id".to_string(), "i-0abc".to_string()),
            ("pub_key_dsa".to_string(), "N/A".to_string())
        ]
    );
    let w = report.warnings.join("\n");
    assert!(w.contains("`pub_key_dsa` is not a key"), "{w}");
    assert!(w.contains("tries") && w.contains("10 tries"), "{w}");
}

#[tokio::test]
async fn tries_bound_the_attempts_and_a_500_is_tried_again() {
    let (url, mut seen) = serve(Behaviour::FailFirst(100)).await;
    let client = http::client(&url).unwrap();
    let d = http::deliver(
        &client,
        &http::Post {
            url: &url,
            content_type: "text/plain",
            body: b"x".to_vec(),
            headers: &[],
            attempts: Some(3),
            budget: Duration::from_secs(30),
            per_try: Duration::from_secs(5),
            pause: http::Pause::Fixed(Duration::from_millis(10)),
        },
    )
    .await;
    assert!(!d.delivered);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.http_status, Some(500));
    for _ in 0..3 {
        seen.recv().await.unwrap();
    }
    assert!(seen.try_recv().is_err(), "no fourth attempt");
}

fn status_json() -> serde_json::Value {
    serde_json::json!({
        "status": "done",
        "instance_id": "i-0abc",
        "modules": {"checks": {"state": "ok"}},
        "lineage": [{"layer": "50-app.yaml", "name": "app", "version": "1.4"}],
    })
}

#[tokio::test]
async fn report_posts_the_status_with_headers_after_a_500() {
    let (url, mut seen) = serve(Behaviour::FailFirst(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"report": {
        "url": format!("{url}/boot"), "headers": {"Authorization": "Bearer s3cret"}, "timeout": 20
    }});
    let mut ctx = context(dir.path(), config, instance(), FakeSystem::new());
    ctx.boot = Arc::new(BootSoFar {
        failed: Default::default(),
        status: Some(status_json()),
    });
    let report = BootReport.run(&ctx).await.unwrap();
    let first = seen.recv().await.unwrap();
    let second = seen.recv().await.unwrap();
    assert_eq!(second.line, "POST /boot HTTP/1.1");
    assert_eq!(second.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(second.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(body, status_json());
    assert_eq!(first.body, second.body);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.details["delivery"]["attempts"], 2);
    assert_eq!(report.details["reported_status"], "done");
    assert!(
        !report.details.to_string().contains("s3cret"),
        "header values stay out of status"
    );
}

#[tokio::test]
async fn a_closed_connection_is_retried_until_the_budget_ends_then_a_warning() {
    let (url, mut seen) = serve(Behaviour::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"report": {"url": url, "timeout": 2}});
    let mut ctx = context(dir.path(), config, instance(), FakeSystem::new());
    ctx.boot = Arc::new(BootSoFar {
        failed: Default::default(),
        status: Some(status_json()),
    });
    let started = std::time::Instant::now();
    let report = BootReport.run(&ctx).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by its budget"
    );
    assert_eq!(report.details["delivery"]["delivered"], false);
    let attempts = report.details["delivery"]["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "retried: {attempts}");
    for _ in 0..attempts {
        assert_eq!(seen.recv().await.unwrap().line, "closed");
    }
    assert!(
        report.warnings[0].contains("not delivered"),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn a_silent_server_costs_the_budget_and_no_more() {
    let (url, mut seen) = serve(Behaviour::Silent).await;
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"report": {"url": url, "timeout": 1}});
    let mut ctx = context(dir.path(), config, instance(), FakeSystem::new());
    ctx.boot = Arc::new(BootSoFar {
        failed: Default::default(),
        status: Some(status_json()),
    });
    let started = std::time::Instant::now();
    let report = BootReport.run(&ctx).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    seen.recv().await.unwrap();
    assert_eq!(report.details["delivery"]["delivered"], false);
    assert!(
        report.details["delivery"]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{}",
        report.details
    );
}

#[test]
fn nothing_to_do_without_a_section() {
    assert!(
        PhoneHome
            .nothing_configured(&serde_json::json!({}), &[])
            .is_some()
    );
    assert!(
        BootReport
            .nothing_configured(&serde_json::json!({"report": {"url": "http://x"}}), &[])
            .is_none()
    );
}

#[test]
fn urls_and_forms_are_as_cloud_init_sends_them() {
    assert_eq!(
        expand_url("http://h/$INSTANCE_ID/${INSTANCE_ID}", "i-1"),
        "http://h/i-1/i-1"
    );
    assert_eq!(
        form_encode(&[("k".into(), "ssh-rsa A+B/C= x@y".into())]),
        b"k=ssh-rsa+A%2BB%2FC%3D+x%40y".to_vec()
    );
    assert!(http::client("ftp://x").is_err());
}
