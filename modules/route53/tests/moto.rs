//! The route53 module against a real Route53 API implementation (moto_server),
//! directly and through a proxy that throttles like Route53 does.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stoke_api::Module;
use support::moto::Moto;
use support::proxy::Proxy;
use support::{admin_client, create_zone, instance_ctx, records, upsert};

/// moto_server, or a printed reason and an early return when it is not installed.
macro_rules! moto_or_skip {
    () => {
        moto_or_skip!(&[])
    };
    ($env:expr) => {
        match Moto::start_with_env($env) {
            Ok(m) => m,
            Err(reason) => {
                stoke_api::testing::skip(&reason);
                return;
            }
        }
    };
}

fn module() -> Box<dyn Module> {
    stoke_route53::modules().remove(0)
}

#[tokio::test]
async fn registers_reruns_idempotently_and_deregisters() {
    let moto = moto_or_skip!();
    let admin = admin_client(&moto.url());
    create_zone(&admin, "example.com").await;
    let root = tempfile::tempdir().unwrap();
    let section = json!({
        "zone_name": "example.com",
        "wait_for_sync": true,
        "deregister_on_shutdown": true,
        "ttl": 120,
        "records": [{"name": "{{ instance_id }}.{{ zone_name }}", "type": "TXT", "value": "owner {{ hostname }}"}],
    });
    let ctx = instance_ctx(root.path(), &moto.url(), "web1", "10.0.0.5", section);
    let m = module();

    let report = m.run(&ctx).await.expect("first run");
    eprintln!("{report:?}");
    let zone = report.details["zone_id"].as_str().unwrap().to_string();
    assert_eq!(report.details["status"], "INSYNC", "{report:?}");
    assert!(!report.details["change_id"].as_str().unwrap().is_empty());
    assert!(
        report.summary.contains("web1.example.com. A 10.0.0.5"),
        "{}",
        report.summary
    );
    let a = records(&admin, &zone, "web1.example.com.", "A").await;
    assert_eq!(a, vec![(120, vec!["10.0.0.5".to_string()])]);
    let txt = records(&admin, &zone, "i-web1.example.com.", "TXT").await;
    assert_eq!(txt, vec![(120, vec!["\"owner web1\"".to_string()])]);

    // A re-run (reboot, retry after failure) is an UPSERT: still one record.
    m.run(&ctx).await.expect("second run");
    let a = records(&admin, &zone, "web1.example.com.", "A").await;
    assert_eq!(a, vec![(120, vec!["10.0.0.5".to_string()])]);

    let report = m.shutdown(&ctx).await.expect("shutdown").expect("a report");
    assert!(report.summary.starts_with("deleted"), "{}", report.summary);
    assert!(report.details["change_id"].is_string(), "{report:?}");
    assert!(
        records(&admin, &zone, "web1.example.com.", "A")
            .await
            .is_empty()
    );
    assert!(
        records(&admin, &zone, "i-web1.example.com.", "TXT")
            .await
            .is_empty()
    );

    // Nothing left to do on a second shutdown.
    let again = m.shutdown(&ctx).await.unwrap().unwrap();
    assert!(
        again.summary.contains("nothing to deregister"),
        "{}",
        again.summary
    );
}

#[tokio::test]
async fn shutdown_leaves_a_name_a_successor_took() {
    let moto = moto_or_skip!();
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "fleet.test").await;
    let root = tempfile::tempdir().unwrap();
    let section =
        json!({"hosted_zone_id": zone, "zone_name": "fleet.test", "deregister_on_shutdown": true});
    let ctx = instance_ctx(root.path(), &moto.url(), "db", "10.1.0.7", section);
    let m = module();
    m.run(&ctx).await.expect("run");

    // A replacement instance registered the same name with its own address.
    upsert(&admin, &zone, "db.fleet.test.", "A", 60, "10.1.0.99").await;
    let report = m.shutdown(&ctx).await.unwrap().unwrap();
    eprintln!("{report:?}");
    assert!(
        report.summary.contains("left 1 record"),
        "{}",
        report.summary
    );
    assert_eq!(report.details["left"][0]["values"], json!(["10.1.0.99"]));
    assert_eq!(
        records(&admin, &zone, "db.fleet.test.", "A").await,
        vec![(60, vec!["10.1.0.99".to_string()])]
    );
}

#[tokio::test]
async fn no_deregistration_unless_asked() {
    let moto = moto_or_skip!();
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "keep.test").await;
    let root = tempfile::tempdir().unwrap();
    let ctx = instance_ctx(
        root.path(),
        &moto.url(),
        "k",
        "10.2.0.1",
        json!({"hosted_zone_id": zone}),
    );
    // hosted_zone_id only, default template uses zone_name: looked up with GetHostedZone.
    let report = module().run(&ctx).await.expect("run");
    assert_eq!(report.details["zone_name"], "keep.test.");
    assert!(module().shutdown(&ctx).await.unwrap().is_none());
    assert_eq!(records(&admin, &zone, "k.keep.test.", "A").await.len(), 1);
}

#[tokio::test]
async fn a_missing_zone_fails_at_once_with_what_to_fix() {
    let moto = moto_or_skip!();
    let root = tempfile::tempdir().unwrap();
    let m = module();

    let ctx = instance_ctx(
        root.path(),
        &moto.url(),
        "w",
        "10.0.0.1",
        json!({"hosted_zone_id": "ZNOSUCHZONE", "zone_name": "nowhere.test"}),
    );
    let t = Instant::now();
    let err = m.run(&ctx).await.unwrap_err().to_string();
    eprintln!("{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(err.contains("NoSuchHostedZone"), "{err}");
    assert!(err.contains("check `hosted_zone_id`"), "{err}");
    assert!(err.contains("1 request"), "no retries expected: {err}");

    let ctx = instance_ctx(
        root.path(),
        &moto.url(),
        "w",
        "10.0.0.1",
        json!({"zone_name": "nowhere.test"}),
    );
    let err = m.run(&ctx).await.unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("no hosted zone named nowhere.test."), "{err}");
}

#[tokio::test]
async fn bad_credentials_fail_at_once() {
    // With INITIAL_NO_AUTH_ACTION_COUNT moto checks signatures against its own
    // IAM after that many requests; the first one creates the zone.
    let moto = moto_or_skip!(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "auth.test").await;
    let root = tempfile::tempdir().unwrap();
    let section = json!({
        "hosted_zone_id": zone, "zone_name": "auth.test",
        "access_key_id": "AKIANOTAREALKEY00000", "secret_access_key": "wrong",
    });
    let ctx = instance_ctx(root.path(), &moto.url(), "w", "10.0.0.1", section);
    let t = Instant::now();
    let err = module().run(&ctx).await.unwrap_err().to_string();
    eprintln!("{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(err.contains("InvalidClientTokenId"), "{err}");
    assert!(err.contains("credentials were refused"), "{err}");
}

#[tokio::test]
async fn moto_checks_and_accepts_the_signature() {
    // After 4 unchecked requests (the zone, the IAM user, its policy, its key)
    // moto recomputes each request's SigV4 signature with botocore and answers
    // SignatureDoesNotMatch to a mismatch. Its re-creation is only faithful
    // for a request with a body (it signs a GET's query parameters, or its
    // headers, as if they were the body), so the request checked here is
    // the ChangeResourceRecordSets POST: path, headers, body hash. Query
    // strings are covered by the AWS test vectors in src/sigv4.rs.
    let moto = moto_or_skip!(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "signed.test").await;
    let (key, secret) = admin.iam_user_with_key("stoke").await;
    let root = tempfile::tempdir().unwrap();
    let section = json!({
        "hosted_zone_id": zone, "zone_name": "signed.test",
        "records": [{"name": "t.{{ zone_name }}", "type": "TXT", "value": "a <b> & 'c' \"d\""}],
        "access_key_id": key, "secret_access_key": secret,
    });
    let ctx = instance_ctx(root.path(), &moto.url(), "sig", "10.5.0.1", section);
    let report = module().run(&ctx).await.expect("signed registration");
    assert_eq!(report.details["attempts"], 1, "{report:?}");

    // The same request with a wrong secret is refused: the check is real.
    let section = json!({"hosted_zone_id": zone, "zone_name": "signed.test", "access_key_id": key, "secret_access_key": "wrong"});
    let ctx = instance_ctx(root.path(), &moto.url(), "sig", "10.5.0.1", section);
    let err = module().run(&ctx).await.unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("SignatureDoesNotMatch (HTTP 403)"), "{err}");
    assert!(err.contains("credentials were refused"), "{err}");
    assert!(err.contains("1 request"), "not retried: {err}");
}

#[tokio::test]
async fn throttling_and_prior_request_not_complete_are_retried_to_success() {
    let moto = moto_or_skip!();
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "busy.test").await;
    // 4 requests/s, no burst beyond one: eight instances at once must queue.
    let proxy = Proxy::start(moto.addr, 4.0, 1.0);
    proxy.prior_request_not_complete(2);
    proxy.unavailable(1);
    let root = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let dir = root.path().join(format!("i{i}"));
        let section = json!({"hosted_zone_id": zone, "zone_name": "busy.test", "budget_seconds": 30, "max_backoff_seconds": 2});
        let ctx = instance_ctx(
            &dir,
            &proxy.url(),
            &format!("n{i}"),
            &format!("10.9.0.{i}"),
            section,
        );
        tasks.push(tokio::spawn(async move { module().run(&ctx).await }));
    }
    let mut retried = 0u64;
    for t in tasks {
        let report = t.await.unwrap().expect("every instance registers");
        retried += report.details["retried"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>();
    }
    let counts = proxy.counts();
    assert!(counts.throttled > 0, "{counts:?}");
    assert_eq!(counts.injected, 3, "{counts:?}");
    assert_eq!(retried, counts.throttled + counts.injected, "{counts:?}");
    assert_eq!(counts.actions["ChangeResourceRecordSets"], 8, "{counts:?}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    for i in 0..8 {
        let name = format!("n{i}.busy.test.");
        assert_eq!(
            records(&admin, &zone, &name, "A").await,
            vec![(60, vec![format!("10.9.0.{i}")])]
        );
    }
}

#[tokio::test]
async fn endless_throttling_gives_up_within_the_budget() {
    let moto = moto_or_skip!();
    let proxy = Proxy::start(moto.addr, 0.0, 1.0);
    proxy.throttle_all(true);
    let root = tempfile::tempdir().unwrap();
    let section = json!({"hosted_zone_id": "Z1", "zone_name": "x.test", "budget_seconds": 3, "max_backoff_seconds": 1});
    let ctx = instance_ctx(root.path(), &proxy.url(), "w", "10.0.0.1", section);
    let t = Instant::now();
    let err = module().run(&ctx).await.unwrap_err().to_string();
    eprintln!("{err}");
    let took = t.elapsed();
    // Budget 3 s; the margin absorbs a loaded CI machine (the retry count is asserted below).
    assert!(took <= Duration::from_secs(5), "{took:?}");
    assert!(err.contains("budget"), "{err}");
    assert!(err.contains("Throttling: Rate exceeded"), "{err}");
    assert!(proxy.counts().throttled >= 3, "{:?}", proxy.counts());
}

#[tokio::test]
async fn wait_for_sync_polls_get_change_within_the_budget() {
    let moto = moto_or_skip!();
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "sync.test").await;
    let proxy = Proxy::start(moto.addr, 0.0, 1.0);
    proxy.pending(true);
    let root = tempfile::tempdir().unwrap();
    let section = json!({"hosted_zone_id": zone, "zone_name": "sync.test", "wait_for_sync": true, "budget_seconds": 4});
    let ctx = instance_ctx(root.path(), &proxy.url(), "s", "10.3.0.1", section);

    // Never INSYNC: the module succeeds (the change is accepted) with a warning, within the budget.
    let t = Instant::now();
    let report = module().run(&ctx).await.expect("accepted change");
    assert!(t.elapsed() <= Duration::from_secs(6), "{:?}", t.elapsed());
    assert_eq!(report.details["status"], "PENDING", "{report:?}");
    assert_eq!(report.warnings.len(), 1, "{report:?}");
    assert!(report.warnings[0].contains("not INSYNC"), "{report:?}");
    let polls = proxy.counts().actions["GetChange"];
    assert!(polls >= 1, "{:?}", proxy.counts());

    // INSYNC (moto answers so at once when the proxy stops hiding it): no warning.
    proxy.pending(false);
    let report = module().run(&ctx).await.expect("run");
    assert_eq!(report.details["status"], "INSYNC", "{report:?}");
    assert!(report.warnings.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_and_aaaa_together() {
    let moto = moto_or_skip!();
    let admin = admin_client(&moto.url());
    let zone = create_zone(&admin, "dual.test").await;
    let root = tempfile::tempdir().unwrap();
    let section = json!({"hosted_zone_id": zone, "zone_name": "dual.test", "type": ["A", "AAAA"], "deregister_on_shutdown": true});
    let mut ctx = instance_ctx(root.path(), &moto.url(), "d", "10.4.0.1", section);
    ctx.instance = std::sync::Arc::new(stoke_api::InstanceData {
        ipv6: Some("2001:db8::41".into()),
        ..(*ctx.instance).clone()
    });
    module().run(&ctx).await.expect("run");
    assert_eq!(
        records(&admin, &zone, "d.dual.test.", "AAAA").await,
        vec![(60, vec!["2001:db8::41".to_string()])]
    );
    assert_eq!(records(&admin, &zone, "d.dual.test.", "A").await.len(), 1);
    module().shutdown(&ctx).await.unwrap().unwrap();
    assert!(
        records(&admin, &zone, "d.dual.test.", "AAAA")
            .await
            .is_empty()
    );
    assert!(records(&admin, &zone, "d.dual.test.", "A").await.is_empty());
}
