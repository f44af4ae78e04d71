//! `route53`: registers the instance's name in a Route53 hosted zone at boot
//! (UPSERT, so a re-run is harmless) and, if asked, deletes it at shutdown
//! when it still holds this instance's values.
//!
//! Every request goes through one [`stoke_aws::Retrier`]: throttling and other
//! transient errors are retried with full-jitter backoff inside one time
//! budget; wrong requests fail at once with the AWS message and what to fix.
//!
//! Files: `aws` the requests the module makes; `client` one signed request
//! (SigV4, credentials and retry are `stoke-aws`'s); `endpoint` the URL and
//! signing region; `xml` bodies and answers; `config` the section.

#![forbid(unsafe_code)]

mod aws;
mod client;
mod config;
mod endpoint;
mod xml;

/// The parsers of Route53's answers, for the fuzz targets (`fuzz/`): each must answer any
/// body with a value or an error, never a panic or a hang.
#[cfg(feature = "fuzz")]
pub fn fuzz_answers(body: &str) {
    let _ = xml::hosted_zones(body);
    let _ = xml::hosted_zone(body);
    let _ = xml::change_info(body);
    let _ = xml::record_sets(body);
    let _ = stoke_aws::xml::error(body);
}

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use stoke_api::{
    Context, Frequency, Module, ModuleError, ModuleSpec, Report, Stage, StateScope, config_spec,
};

use config::ZoneRef;
pub use config::{RecordSet, Route53Config, Section};
use stoke_aws::{Failure, GaveUp, Retrier};

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(Route53)]
}

pub struct Route53;

/// What this instance registered, kept for deregistration (state_dir).
const STATE_FILE: &str = "registration.json";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Registration {
    instance_id: String,
    zone_id: String,
    records: Vec<RecordSet>,
    change_id: String,
}

#[stoke_api::async_trait]
impl Module for Route53 {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "route53",
            stage: Stage::Network,
            frequency: Frequency::PerInstance,
            after: &["hostname"],
            needs_metadata: true,
            before_logins: false,
            // The default budget (120 s) plus the client set-up and slack.
            timeout: Duration::from_secs(300),
            config: config_spec::<Route53Config>(),
            order: stoke_api::Order::Normal,
        }
    }

    /// The retry budget plus a minute for client set-up and the last attempt.
    fn timeout_for(&self, config: &serde_json::Value) -> Duration {
        serde_json::from_value::<Route53Config>(config.clone())
            .ok()
            .and_then(|c| c.route53)
            .map(|s| Duration::from_secs(s.budget_seconds.max(s.shutdown_budget_seconds) + 60))
            .unwrap_or_else(|| self.spec().timeout)
    }

    /// A record deleted at every shutdown must come back at every boot.
    fn frequency_for(&self, config: &serde_json::Value) -> Frequency {
        let deregisters = serde_json::from_value::<Route53Config>(config.clone())
            .ok()
            .and_then(|c| c.route53)
            .is_some_and(|s| s.deregister_on_shutdown);
        if deregisters {
            Frequency::PerBoot
        } else {
            Frequency::PerInstance
        }
    }

    fn nothing_configured(
        &self,
        config: &serde_json::Value,
        _scripts: &[stoke_api::UserScript],
    ) -> Option<String> {
        config
            .get("route53")
            .is_none_or(serde_json::Value::is_null)
            .then(|| "no `route53:` section".to_string())
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let sec = ctx.config::<Route53Config>().ok()?.route53?;
        let zone = match sec.zone_ref() {
            ZoneRef::Id { id, .. } => id,
            ZoneRef::Name { name, .. } => name,
        };
        let types: Vec<_> = sec
            .types
            .to_vec()
            .iter()
            .map(|t| format!("{t:?}").to_uppercase())
            .collect();
        Some(format!(
            "UPSERT {} {} in zone {zone}{}",
            types.join("+"),
            sec.record_name,
            if sec.deregister_on_shutdown {
                "; delete at shutdown if unchanged"
            } else {
                ""
            }
        ))
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let Some(sec) = ctx.config::<Route53Config>()?.route53 else {
            return Ok(Report::new("not configured (no `route53:` section)"));
        };
        sec.check()?;
        let vars = template_vars(ctx);
        let zref = sec.zone_ref();
        // Fail on templates and addresses before building a client or sending anything.
        let known_zone = match &zref {
            ZoneRef::Id { name, .. } => name.clone(),
            ZoneRef::Name { name, .. } => Some(name.clone()),
        };
        if known_zone.is_some() || !sec.uses_zone_name() {
            sec.record_sets(&ctx.instance, &vars, known_zone.as_deref())?;
        }

        let client = aws::Client::new(&sec.access(), &region(&sec, ctx), ctx).map_err(invalid)?;
        let mut retrier = sec
            .access()
            .retrier(Duration::from_secs(sec.budget_seconds));
        let (zone_id, zone_name) = match zref {
            ZoneRef::Id { id, name: Some(n) } => (id, Some(n)),
            ZoneRef::Id { id, name: None } if sec.uses_zone_name() => {
                let n = aws::zone_name(&client, &mut retrier, &id)
                    .await
                    .map_err(|e| failed(&format!("GetHostedZone {id}"), e, &retrier))?;
                (id, Some(n))
            }
            ZoneRef::Id { id, name: None } => (id, None),
            ZoneRef::Name { name, private } => {
                let z = aws::zone_by_name(&client, &mut retrier, &name, private)
                    .await
                    .map_err(|e| failed(&format!("looking up zone {name}"), e, &retrier))?;
                (z.id, Some(z.name))
            }
        };
        let sets = sec.record_sets(&ctx.instance, &vars, zone_name.as_deref())?;
        let what = format!("UPSERT {} in {zone_id}", describe(&sets));

        let info = aws::change(&client, &mut retrier, &zone_id, aws::Action::Upsert, &sets)
            .await
            .map_err(|e| failed(&what, e, &retrier))?;
        // Recorded before waiting for sync: the records exist from here on.
        let reg = Registration {
            instance_id: ctx.instance.instance_id.to_string(),
            zone_id: zone_id.clone(),
            records: sets.clone(),
            change_id: info.id.clone(),
        };
        let path = state_path(ctx);
        let body = serde_json::to_vec_pretty(&reg)
            .map_err(|e| ModuleError::Other(format!("route53: encoding state: {e}")))?;
        ctx.write_state_in(StateScope::Instance, STATE_FILE, &body, 0o600)
            .map_err(|e| ModuleError::io("writing registration state", &path, e))?;

        let mut warnings = Vec::new();
        let insync = if sec.wait_for_sync && !info.insync {
            let synced = aws::wait_insync(&client, &mut retrier, &info.id)
                .await
                .map_err(|e| failed(&format!("GetChange {}", info.id), e, &retrier))?;
            if !synced {
                warnings.push(format!(
                    "change {} accepted but not INSYNC within the {} s budget; it will still apply",
                    info.id, sec.budget_seconds
                ));
            }
            synced
        } else {
            info.insync
        };
        let status = if insync { "INSYNC" } else { "PENDING" };
        tracing::info!(change = %info.id, status, attempts = retrier.attempts, "route53: {what}");
        let mut report = Report::new(format!(
            "{what}: change {} {status} ({})",
            info.id,
            tally(&retrier)
        ))
        .with_details(json!({
            "zone_id": zone_id,
            "zone_name": zone_name,
            "records": sets,
            "change_id": info.id,
            "status": status,
            "attempts": retrier.attempts,
            "retried": retrier.retried,
            "elapsed_ms": retrier.elapsed().as_millis() as u64,
        }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }

    async fn shutdown(&self, ctx: &Context) -> Result<Option<Report>, ModuleError> {
        let Some(sec) = ctx.config::<Route53Config>()?.route53 else {
            return Ok(None);
        };
        if !sec.deregister_on_shutdown {
            return Ok(None);
        }
        sec.check()?;
        let path = state_path(ctx);
        let Some(raw) = ctx
            .read_state_in(StateScope::Instance, STATE_FILE)
            .map_err(|e| ModuleError::io("reading registration state", &path, e))?
        else {
            return Ok(Some(Report::new(
                "nothing to deregister: this instance has registered no record",
            )));
        };
        let reg: Registration = serde_json::from_slice(&raw).map_err(|e| {
            ModuleError::Other(format!(
                "route53: state {} is unreadable: {e}",
                path.display()
            ))
        })?;

        let client = aws::Client::new(&sec.access(), &region(&sec, ctx), ctx).map_err(invalid)?;
        let mut retrier = sec
            .access()
            .retrier(Duration::from_secs(sec.shutdown_budget_seconds));
        let mut ours = Vec::new();
        let mut gone = Vec::new();
        let mut left = Vec::new();
        for set in &reg.records {
            let now = aws::current(&client, &mut retrier, &reg.zone_id, &set.name, &set.kind)
                .await
                .map_err(|e| failed(&format!("reading {} {}", set.name, set.kind), e, &retrier))?;
            match now {
                None => gone.push(format!("{} {}", set.name, set.kind)),
                // Still this instance's values: delete exactly what is there
                // (a DELETE must match the record set, TTL included).
                Some(cur) if same_values(&cur.values, &set.values) => ours.push(cur),
                Some(cur) => {
                    tracing::warn!(
                        record = %set.name, kind = %set.kind, now = ?cur.values, ours = ?set.values,
                        "route53: the name now holds another value (a successor owns it): left alone"
                    );
                    left.push(json!({"name": cur.name, "type": cur.kind, "values": cur.values, "ours": set.values}));
                }
            }
        }

        let mut warnings = Vec::new();
        let mut change_id = None;
        if !ours.is_empty() {
            let what = format!("DELETE {} in {}", describe(&ours), reg.zone_id);
            match aws::change(
                &client,
                &mut retrier,
                &reg.zone_id,
                aws::Action::Delete,
                &ours,
            )
            .await
            {
                Ok(info) => change_id = Some(info.id),
                // The record changed between our read and the DELETE: someone
                // else owns it now, which is what a mismatch means.
                Err(GaveUp::Rejected(f)) if f.code == "InvalidChangeBatch" => {
                    warnings.push(format!(
                        "{what}: the records changed before the delete ({}); left alone",
                        f.message
                    ));
                    ours.clear();
                }
                Err(e) => return Err(failed(&what, e, &retrier)),
            }
        }
        // Nothing of ours is left in the zone: forget the registration.
        ctx.remove_state(StateScope::Instance, STATE_FILE)
            .map_err(|e| ModuleError::io("removing registration state", &path, e))?;

        let mut parts = Vec::new();
        if !ours.is_empty() {
            parts.push(format!(
                "deleted {} (change {})",
                describe(&ours),
                change_id.as_deref().unwrap_or("?")
            ));
        }
        if !left.is_empty() {
            parts.push(format!(
                "left {} record(s) now holding other values",
                left.len()
            ));
        }
        if !gone.is_empty() {
            parts.push(format!("already gone: {}", gone.join(", ")));
        }
        if parts.is_empty() {
            parts.push("nothing deleted".into());
        }
        let mut report = Report::new(format!("{} ({})", parts.join("; "), tally(&retrier)))
            .with_details(json!({
                "zone_id": reg.zone_id,
                "deleted": ours,
                "left": left,
                "already_gone": gone,
                "change_id": change_id,
                "attempts": retrier.attempts,
                "retried": retrier.retried,
                "elapsed_ms": retrier.elapsed().as_millis() as u64,
            }));
        for w in warnings {
            report.warn(w);
        }
        Ok(Some(report))
    }
}

fn invalid(e: String) -> ModuleError {
    ModuleError::Invalid(format!("route53: {e}"))
}

/// The registration file's host path, for messages (read and written through the root).
fn state_path(ctx: &Context) -> PathBuf {
    ctx.resolved_state_path(StateScope::Instance, STATE_FILE)
}

/// Route53 is a global service: any region of the partition signs right.
fn region(sec: &Section, ctx: &Context) -> String {
    sec.region
        .clone()
        .or_else(|| ctx.instance.region.clone())
        .unwrap_or_else(|| "us-east-1".into())
}

/// The engine's variables; the hostname module's outputs from `prior` fill
/// any the engine did not pass on.
fn template_vars(ctx: &Context) -> BTreeMap<String, String> {
    let mut vars = ctx.vars.clone();
    if let Some(serde_json::Value::Object(h)) = ctx.prior.get("hostname") {
        for (k, v) in h {
            if let Some(s) = v.as_str() {
                vars.entry(k.clone()).or_insert_with(|| s.to_string());
            }
        }
    }
    vars
}

fn same_values(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

fn describe(sets: &[RecordSet]) -> String {
    sets.iter()
        .map(|s| format!("{} {} {}", s.name, s.kind, s.values.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn tally(r: &Retrier) -> String {
    let retried: u32 = r.retried.values().sum();
    let mut s = format!(
        "{} request{} in {:.1} s",
        r.attempts,
        if r.attempts == 1 { "" } else { "s" },
        r.elapsed().as_secs_f64()
    );
    if retried > 0 {
        let why: Vec<_> = r.retried.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        s.push_str(&format!(", retried: {}", why.join(", ")));
    }
    s
}

/// What to do about a permanent failure, for the person reading the status.
fn hint(f: &Failure) -> &'static str {
    match f.code.as_str() {
        "NoSuchHostedZone" => {
            "check `hosted_zone_id` / `zone_name`, and that the zone is in the account of the credentials"
        }
        "InvalidChangeBatch" => {
            "Route53 rejected the records: check `record_name` is inside the zone and the values/types"
        }
        "AccessDenied" | "AccessDeniedException" => {
            "grant the instance role the actions in docs/route53.md on this hosted zone"
        }
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "InvalidAccessKeyId"
        | "ExpiredToken"
        | "MissingAuthenticationToken"
        | "IncompleteSignature" => {
            "the AWS credentials were refused: check the instance profile, or `access_key_id`/`secret_access_key`/`session_token`"
        }
        "InvalidInput" | "InvalidArgument" => {
            "a value in the `route53:` section is not valid for Route53"
        }
        "credentials" => {
            "fix the credentials named above, or give `access_key_id`/`secret_access_key`, or use an instance profile"
        }
        _ if f.status == Some(403) => {
            "access denied: check the credentials and the IAM policy in docs/route53.md"
        }
        _ => "see the AWS message",
    }
}

/// The module error for a request that gave up, with the AWS message, what
/// to fix, and the attempts and time spent.
fn failed(what: &str, e: GaveUp, r: &Retrier) -> ModuleError {
    match e {
        GaveUp::Rejected(f) => ModuleError::Other(format!(
            "route53: {what}: {}{}: {} — {} [{}]",
            f.code,
            f.status.map_or(String::new(), |s| format!(" (HTTP {s})")),
            f.message,
            hint(&f),
            tally(r)
        )),
        GaveUp::Budget(f) => ModuleError::Other(format!(
            "route53: {what}: gave up when the time budget ran out [{}]; last error {}: {} — \
             Route53 kept answering with retryable errors (raise `budget_seconds` if the fleet is large)",
            tally(r),
            f.code,
            f.message
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoke_api::InstanceData;
    use stoke_api::fake::{FakeSystem, context};

    fn ctx(root: &std::path::Path, config: serde_json::Value) -> Context {
        let instance = InstanceData {
            datasource: "ec2".into(),
            instance_id: "i-1".parse().unwrap(),
            local_ipv4: Some("10.0.0.1".into()),
            ..Default::default()
        };
        let mut c = context(root, config, instance, FakeSystem::new());
        c.vars.insert("hostname".into(), "web1".into());
        c
    }

    #[tokio::test]
    async fn without_a_section_nothing_happens() {
        let root = tempfile::tempdir().unwrap();
        let c = ctx(root.path(), json!({}));
        let r = Route53.run(&c).await.unwrap();
        assert!(r.summary.contains("not configured"), "{}", r.summary);
        assert!(Route53.shutdown(&c).await.unwrap().is_none());
        assert!(Route53.plan(&c).is_none());
    }

    #[tokio::test]
    async fn config_and_metadata_errors_come_before_any_request() {
        let root = tempfile::tempdir().unwrap();
        // Port 9 on localhost: nothing listens; a request would be retried, not fail at once.
        let c = ctx(
            root.path(),
            json!({"route53": {"zone_name": "example.com", "type": "AAAA", "endpoint_url": "http://127.0.0.1:9"}}),
        );
        let err = Route53.run(&c).await.unwrap_err();
        assert!(matches!(err, ModuleError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("IPv6"), "{err}");
        let c = ctx(
            root.path(),
            json!({"route53": {"zone_name": "example.com", "record_name": "{{ role }}.{{ zone_name }}"}}),
        );
        let err = Route53.run(&c).await.unwrap_err();
        assert!(err.to_string().contains("unknown variable `role`"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_without_a_registration_sends_nothing() {
        let root = tempfile::tempdir().unwrap();
        let c = ctx(
            root.path(),
            json!({"route53": {"hosted_zone_id": "Z1", "deregister_on_shutdown": true, "endpoint_url": "http://127.0.0.1:9"}}),
        );
        let r = Route53.shutdown(&c).await.unwrap().unwrap();
        assert!(r.summary.contains("nothing to deregister"), "{}", r.summary);
        let plan = Route53.plan(&c).unwrap();
        assert_eq!(
            plan,
            "UPSERT A {{ hostname }}.{{ zone_name }} in zone Z1; delete at shutdown if unchanged"
        );
    }

    #[test]
    fn permanent_failures_say_what_to_fix() {
        let body = |code: &str| {
            format!(
                "<ErrorResponse><Error><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>"
            )
        };
        let f = Failure::from_response(404, &body("NoSuchHostedZone"));
        assert!(hint(&f).contains("hosted_zone_id"));
        let f = Failure::from_response(403, &body("AccessDenied"));
        assert!(hint(&f).contains("grant the instance role"));
        let f = Failure::from_response(403, &body("SignatureDoesNotMatch"));
        assert!(hint(&f).contains("credentials were refused"));
    }

    #[test]
    fn spec_declares_network_after_hostname() {
        let s = Route53.spec();
        assert_eq!(
            (s.name, s.stage, s.frequency),
            ("route53", Stage::Network, Frequency::PerInstance)
        );
        assert_eq!(s.after, ["hostname"]);
        assert!(s.needs_metadata);
        assert!(same_values(&["10.0.0.1".into()], &[" 10.0.0.1".into()]));
        assert!(!same_values(&["10.0.0.1".into()], &["10.0.0.2".into()]));
    }
}
