//! The lifecycle module against a local Auto Scaling double (moto has no
//! CompleteLifecycleAction / RecordLifecycleActionHeartbeat) that checks the
//! action, every parameter and the SigV4 signature (botocore's signer).

mod support;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use stoke_api::fake::{FakeSystem, context};
use stoke_api::{BootSoFar, Context, InstanceData, Module};
use stoke_lifecycle::{Heartbeat, Lifecycle};
use support::{Double, GROUP, HOOK, INSTANCE, KEY, REGION, SECRET, assert_clean, of};

fn double(throttle: u32) -> Option<Double> {
    match Double::start(throttle) {
        Ok(d) => Some(d),
        Err(why) => {
            stoke_api::testing::skip(&why);
            None
        }
    }
}

fn section(d: &Double, extra: Value) -> Value {
    let mut s = json!({
        "hook_name": HOOK,
        "group_name": GROUP,
        "endpoint_url": d.url(),
        "access_key_id": KEY,
        "secret_access_key": SECRET,
        "max_backoff_seconds": 0.2,
        "budget_seconds": 20,
    });
    if let (Some(s), Value::Object(extra)) = (s.as_object_mut(), extra) {
        s.extend(extra);
    }
    json!({ "lifecycle": s })
}

/// The module's context, with its state where the engine puts it (siblings
/// under the instance's `data/`).
fn ctx(root: &Path, name: &str, config: Value) -> Context {
    let instance = InstanceData {
        datasource: "ec2".into(),
        instance_id: INSTANCE.parse().unwrap(),
        region: Some(REGION.into()),
        ..Default::default()
    };
    let mut c = context(root, config, instance, FakeSystem::new());
    c.state_dir = root
        .join("var/lib/stoke/instances")
        .join(INSTANCE)
        .join("data")
        .join(name);
    c
}

#[tokio::test]
async fn completes_once_with_continue_on_the_launch_boot_only() {
    let Some(mut d) = double(0) else { return };
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path(), "lifecycle", section(&d, json!({})));
    let r = Lifecycle.run(&c).await.unwrap();
    assert!(
        r.summary.contains("CompleteLifecycleAction CONTINUE"),
        "{}",
        r.summary
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // A later boot of the same instance (same state): nothing is sent.
    let again = Lifecycle.run(&c).await.unwrap();
    assert!(
        again.summary.contains("not the launch boot"),
        "{}",
        again.summary
    );
    assert!(
        again.summary.contains("completed with CONTINUE"),
        "{}",
        again.summary
    );

    let events = d.settle();
    assert_clean(&events);
    let done = of(&events, "CompleteLifecycleAction");
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["params"]["LifecycleActionResult"], "CONTINUE");
    assert_eq!(done[0]["answer"], "ok");
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn a_failed_module_abandons() {
    let Some(mut d) = double(0) else { return };
    let root = tempfile::tempdir().unwrap();
    let mut c = ctx(
        root.path(),
        "lifecycle",
        section(&d, json!({"on_failure": "ABANDON"})),
    );
    let mut boot = BootSoFar::default();
    boot.failed.insert(
        "checks".into(),
        "failed: 1 of 3 checks failed: nginx-listens".into(),
    );
    c.boot = Arc::new(boot);
    let r = Lifecycle.run(&c).await.unwrap();
    assert!(
        r.summary.contains("ABANDON") && r.summary.contains("checks"),
        "{}",
        r.summary
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("abandoned")),
        "{:?}",
        r.warnings
    );

    let events = d.settle();
    assert_clean(&events);
    let done = of(&events, "CompleteLifecycleAction");
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["params"]["LifecycleActionResult"], "ABANDON");

    // on_failure: CONTINUE is honoured too (a fleet that prefers a degraded machine).
    let Some(mut d) = double(0) else { return };
    let root = tempfile::tempdir().unwrap();
    let mut c2 = ctx(
        root.path(),
        "lifecycle",
        section(&d, json!({"on_failure": "CONTINUE"})),
    );
    c2.boot = c.boot.clone();
    Lifecycle.run(&c2).await.unwrap();
    let events = d.settle();
    assert_clean(&events);
    assert_eq!(
        of(&events, "CompleteLifecycleAction")[0]["params"]["LifecycleActionResult"],
        "CONTINUE"
    );
}

#[tokio::test]
async fn throttling_is_retried_within_the_budget() {
    let Some(mut d) = double(2) else { return };
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path(), "lifecycle", section(&d, json!({})));
    let r = Lifecycle.run(&c).await.unwrap();
    assert_eq!(r.details["attempts"], 3, "{}", r.details);
    assert_eq!(r.details["retried"]["Throttling"], 2, "{}", r.details);
    let events = d.settle();
    assert_clean(&events);
    let answers: Vec<&Value> = events.iter().map(|e| &e["answer"]).collect();
    assert_eq!(
        answers,
        [&json!("Throttling"), &json!("Throttling"), &json!("ok")]
    );

    // Throttled for longer than the budget: the module fails, saying so, within it.
    let Some(mut d) = double(10_000) else { return };
    let root = tempfile::tempdir().unwrap();
    let c = ctx(
        root.path(),
        "lifecycle",
        section(&d, json!({"budget_seconds": 2})),
    );
    let started = std::time::Instant::now();
    let err = Lifecycle.run(&c).await.unwrap_err().to_string();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("budget ran out") && err.contains("Throttling"),
        "{err}"
    );
    let events = d.settle();
    assert_clean(&events);
    assert!(events.len() > 1, "{events:?}");
    assert!(
        of(&events, "CompleteLifecycleAction")
            .iter()
            .all(|e| e["answer"] == "Throttling")
    );
}

// Multi-threaded: the heartbeat task runs while the test thread waits on the double.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_while_the_network_stage_runs_stop_at_completion() {
    let Some(mut d) = double(0) else { return };
    let root = tempfile::tempdir().unwrap();
    let config = section(&d, json!({"heartbeat_seconds": 1}));
    let hb = ctx(root.path(), "lifecycle-heartbeat", config.clone());
    let r = Heartbeat.run(&hb).await.unwrap();
    assert!(r.summary.contains("every 1 s"), "{}", r.summary);

    // The slow work of the stage: it lasts until the hook has had two heartbeats.
    tokio::task::block_in_place(|| {
        d.wait_for(|e| of(e, "RecordLifecycleActionHeartbeat").len() >= 2);
    });
    let c = ctx(root.path(), "lifecycle", config);
    Lifecycle.run(&c).await.unwrap();

    let events = d.settle();
    assert_clean(&events);
    let beats = of(&events, "RecordLifecycleActionHeartbeat");
    assert!(beats.len() >= 2, "{events:?}");
    assert!(beats.iter().all(|b| b["answer"] == "ok"), "{events:?}");
    let done = events
        .iter()
        .position(|e| e["action"] == "CompleteLifecycleAction")
        .expect("completed");
    assert_eq!(events[done]["answer"], "ok");

    // A later boot: no heartbeat task at all.
    let r = Heartbeat.run(&hb).await.unwrap();
    assert!(r.summary.contains("not the launch boot"), "{}", r.summary);
}

#[tokio::test]
async fn config_errors_come_before_any_request() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(
        root.path(),
        "lifecycle",
        json!({"lifecycle": {"hook_name": HOOK, "endpoint_url": "http://127.0.0.1:9"}}),
    );
    let err = Lifecycle.run(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("no `group_name`") && err.contains("aws:autoscaling:groupName"),
        "{err}"
    );
    assert!(
        !root.path().join("var/lib/stoke").exists(),
        "no launch state for a run that sent nothing"
    );
    let c = ctx(root.path(), "lifecycle", json!({}));
    assert!(Lifecycle.nothing_configured(&c.config, &[]).is_some());
    let c = ctx(
        root.path(),
        "lifecycle",
        json!({"lifecycle": {"hook_name": "h", "group_name": "g"}}),
    );
    assert!(Heartbeat.nothing_configured(&c.config, &[]).is_some());
    assert!(Lifecycle.nothing_configured(&c.config, &[]).is_none());
}

#[tokio::test]
async fn the_double_refuses_a_wrong_signature_and_the_module_says_why() {
    let Some(mut d) = double(0) else { return };
    let root = tempfile::tempdir().unwrap();
    let c = ctx(
        root.path(),
        "lifecycle",
        section(&d, json!({"secret_access_key": "not-the-secret"})),
    );
    let err = Lifecycle.run(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("DoubleRejected") && err.contains("HTTP 400"),
        "{err}"
    );
    let events = d.settle();
    assert_eq!(events.len(), 1, "a refusal is not retried: {events:?}");
    let problem = events[0]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("signature mismatch"), "{problem}");
}

#[tokio::test]
async fn the_group_defaults_to_the_instance_tag() {
    let Some(mut d) = double(0) else { return };
    let root = tempfile::tempdir().unwrap();
    let mut config = section(&d, json!({}));
    config["lifecycle"]
        .as_object_mut()
        .unwrap()
        .remove("group_name");
    let mut c = ctx(root.path(), "lifecycle", config);
    let mut instance = (*c.instance).clone();
    instance
        .tags
        .insert(stoke_lifecycle::GROUP_TAG.into(), GROUP.into());
    c.instance = Arc::new(instance);
    Lifecycle.run(&c).await.unwrap();
    let events = d.settle();
    assert_clean(&events);
    let done = of(&events, "CompleteLifecycleAction");
    assert_eq!(done[0]["params"]["AutoScalingGroupName"], GROUP);
}
