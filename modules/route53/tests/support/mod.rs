//! Shared by the moto tests and the burst example: moto_server, the
//! throttling proxy, a plain SDK client for set-up and checks, and a module
//! context for one simulated instance.
#![allow(dead_code)]

pub mod moto;
pub mod proxy;

use std::path::Path;

use aws_sdk_route53::Client;
use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{Context, InstanceData};

/// A direct client (no proxy, SDK defaults) for setting up and checking moto.
pub fn admin_client(endpoint: &str) -> Client {
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    Client::from_conf(conf)
}

/// Creates a public zone; returns its bare id.
pub async fn create_zone(client: &Client, name: &str) -> String {
    let out = client
        .create_hosted_zone()
        .name(name)
        .caller_reference(format!("stoke-test-{name}-{}", std::process::id()))
        .send()
        .await
        .expect("CreateHostedZone");
    out.hosted_zone()
        .expect("zone in answer")
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string()
}

/// All record sets of `kind` named `name` (FQDN with dot), as (ttl, values).
pub async fn records(
    client: &Client,
    zone: &str,
    name: &str,
    kind: &str,
) -> Vec<(i64, Vec<String>)> {
    let out = client
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .expect("ListResourceRecordSets");
    out.resource_record_sets()
        .iter()
        .filter(|s| s.name().eq_ignore_ascii_case(name) && s.r#type().as_str() == kind)
        .map(|s| {
            (
                s.ttl().unwrap_or_default(),
                s.resource_records()
                    .iter()
                    .map(|r| r.value().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// UPSERTs a record directly (another instance taking the name).
pub async fn upsert(client: &Client, zone: &str, name: &str, kind: &str, ttl: i64, value: &str) {
    use aws_sdk_route53::types::*;
    let set = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::from(kind))
        .ttl(ttl)
        .resource_records(ResourceRecord::builder().value(value).build().unwrap())
        .build()
        .unwrap();
    let change = Change::builder()
        .action(ChangeAction::Upsert)
        .resource_record_set(set)
        .build()
        .unwrap();
    client
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
        .send()
        .await
        .expect("UPSERT");
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
    let sec = section.as_object_mut().expect("section is a map");
    sec.entry("endpoint_url").or_insert(json!(endpoint));
    sec.entry("access_key_id").or_insert(json!("testing"));
    sec.entry("secret_access_key").or_insert(json!("testing"));
    let instance = InstanceData {
        datasource: "ec2".into(),
        instance_id: format!("i-{hostname}"),
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
