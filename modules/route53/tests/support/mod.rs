//! Shared by the moto tests and the burst example: moto_server, the
//! throttling proxy, plain HTTP calls to moto's REST API for set-up and checks
//! (independent of the module's own client, so they check it), and a module
//! context for one simulated instance.
#![allow(dead_code)]

pub mod moto;
pub mod proxy;

use std::path::Path;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Context, InstanceData};

/// moto serves every AWS service on one port and routes by the service named
/// in the credential scope of `Authorization`. It checks no signature unless
/// asked to (INITIAL_NO_AUTH_ACTION_COUNT), so set-up requests carry only this.
fn routing_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// Plain HTTP to moto, for setting up and checking what the module did.
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

pub fn admin_client(endpoint: &str) -> Admin {
    Admin {
        http: stoke_api::http::client_builder()
            .build()
            .expect("HTTP client"),
        base: format!("{}/2013-04-01", endpoint.trim_end_matches('/')),
    }
}

impl Admin {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<String>) -> String {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", routing_auth("route53"));
        if let Some(b) = body {
            req = req.header("content-type", "application/xml").body(b);
        }
        let resp = req.send().await.expect("request to moto");
        let status = resp.status();
        let text = resp.text().await.expect("moto's answer");
        assert!(status.is_success(), "{method} {path}: {status}: {text}");
        text
    }

    /// An IAM user with full Route53 rights and an access key: for requests
    /// that moto checks the signature of. Returns (key id, secret).
    pub async fn iam_user_with_key(&self, user: &str) -> (String, String) {
        let root = self.base.trim_end_matches("/2013-04-01");
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"route53:*","Resource":"*"}]}"#;
        let mut answers = Vec::new();
        for form in [
            vec![("Action", "CreateUser"), ("UserName", user)],
            vec![
                ("Action", "PutUserPolicy"),
                ("UserName", user),
                ("PolicyName", "route53"),
                ("PolicyDocument", policy),
            ],
            vec![("Action", "CreateAccessKey"), ("UserName", user)],
        ] {
            let body: String = form
                .iter()
                .chain([("Version", "2010-05-08")].iter())
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let resp = self
                .http
                .post(format!("{root}/"))
                .header("authorization", routing_auth("iam"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .expect("IAM request to moto");
            let status = resp.status();
            let text = resp.text().await.expect("moto's IAM answer");
            assert!(status.is_success(), "IAM {form:?}: {status}: {text}");
            answers.push(text);
        }
        let doc = roxmltree::Document::parse(&answers[2]).expect("CreateAccessKey XML");
        let field = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(name))
                .and_then(|n| n.text())
                .expect(name)
                .to_string()
        };
        (field("AccessKeyId"), field("SecretAccessKey"))
    }
}

fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn text_of(n: roxmltree::Node, name: &str) -> Option<String> {
    n.children().find(|c| c.has_tag_name(name)).map(|c| {
        c.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect()
    })
}

/// Creates a public zone; returns its bare id.
pub async fn create_zone(admin: &Admin, name: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <Name>{}</Name><CallerReference>stoke-test-{}-{}</CallerReference></CreateHostedZoneRequest>",
        xml_escape(name),
        xml_escape(name),
        std::process::id()
    );
    let answer = admin
        .call(reqwest::Method::POST, "/hostedzone", Some(body))
        .await;
    let doc = roxmltree::Document::parse(&answer).expect("CreateHostedZone XML");
    let zone = doc
        .descendants()
        .find(|n| n.has_tag_name("HostedZone"))
        .expect("zone in answer");
    text_of(zone, "Id")
        .expect("zone id")
        .trim_start_matches("/hostedzone/")
        .to_string()
}

/// Every record set of the zone as (name, type, ttl, values), all pages.
pub async fn all_records(admin: &Admin, zone: &str) -> Vec<(String, String, i64, Vec<String>)> {
    let mut out = Vec::new();
    let mut start: Option<(String, String)> = None;
    // Pages of moto's default size: bounded by the zone's size.
    for _ in 0..10_000 {
        let query = match start.take() {
            Some((n, t)) => format!("?name={}&type={}", form_encode(&n), form_encode(&t)),
            None => String::new(),
        };
        let answer = admin
            .call(
                reqwest::Method::GET,
                &format!("/hostedzone/{zone}/rrset{query}"),
                None,
            )
            .await;
        let doc = roxmltree::Document::parse(&answer).expect("ListResourceRecordSets XML");
        let root = doc.root_element();
        for s in root
            .descendants()
            .filter(|n| n.has_tag_name("ResourceRecordSet"))
        {
            let values = s
                .descendants()
                .filter(|n| n.has_tag_name("Value"))
                .map(|v| {
                    v.descendants()
                        .filter(|d| d.is_text())
                        .filter_map(|d| d.text())
                        .collect()
                })
                .collect();
            out.push((
                text_of(s, "Name").unwrap_or_default(),
                text_of(s, "Type").unwrap_or_default(),
                text_of(s, "TTL")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_default(),
                values,
            ));
        }
        match (
            text_of(root, "IsTruncated").as_deref(),
            text_of(root, "NextRecordName"),
            text_of(root, "NextRecordType"),
        ) {
            (Some("true"), Some(n), Some(t)) => start = Some((n, t)),
            _ => break,
        }
    }
    out
}

/// All record sets of `kind` named `name` (FQDN with dot), as (ttl, values).
pub async fn records(admin: &Admin, zone: &str, name: &str, kind: &str) -> Vec<(i64, Vec<String>)> {
    all_records(admin, zone)
        .await
        .into_iter()
        .filter(|(n, k, _, _)| n.eq_ignore_ascii_case(name) && k == kind)
        .map(|(_, _, ttl, values)| (ttl, values))
        .collect()
}

/// UPSERTs a record directly (another instance taking the name).
pub async fn upsert(admin: &Admin, zone: &str, name: &str, kind: &str, ttl: i64, value: &str) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <ChangeBatch><Changes><Change><Action>UPSERT</Action><ResourceRecordSet>\
         <Name>{}</Name><Type>{kind}</Type><TTL>{ttl}</TTL><ResourceRecords><ResourceRecord>\
         <Value>{}</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes>\
         </ChangeBatch></ChangeResourceRecordSetsRequest>",
        xml_escape(name),
        xml_escape(value)
    );
    admin
        .call(
            reqwest::Method::POST,
            &format!("/hostedzone/{zone}/rrset"),
            Some(body),
        )
        .await;
}

/// The module's context for an instance named `hostname` with `ip`, the
/// `route53:` section `section` (endpoint and static credentials added when absent).
pub fn instance_ctx(
    root: &Path,
    endpoint: &str,
    hostname: &str,
    ip: &str,
    mut section: Value,
) -> Context {
    // The root exists, as a boot's does: state is written through it.
    std::fs::create_dir_all(root).expect("make the root");
    let sec = section.as_object_mut().expect("section is a map");
    sec.entry("endpoint_url").or_insert(json!(endpoint));
    sec.entry("access_key_id").or_insert(json!("testing"));
    sec.entry("secret_access_key").or_insert(json!("testing"));
    let instance = InstanceData {
        datasource: "ec2".into(),
        instance_id: format!("i-{hostname}").parse().unwrap(),
        local_ipv4: Some(ip.into()),
        region: Some("eu-west-1".into()),
        ..Default::default()
    };
    let mut ctx = context(
        root,
        json!({ "route53": section }),
        instance,
        FakeSystem::new(),
    );
    ctx.vars.insert("hostname".into(), hostname.into());
    ctx
}
