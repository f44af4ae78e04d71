//! The IMDSv2 client (`Session`) against the crate's double (`stoke_imds::double`): the token
//! protocol, retries, the one time budget, the endpoint race, and the checks on what IMDS
//! answers. What the EC2 datasource makes of the answers is tested in src/datasource/ec2.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoke_imds::double::{ImdsServer, Knobs, Tree, nobody, run, with};
use stoke_imds::{Endpoint, ImdsConfig, ImdsError, LEAF_CAP, MAX_ENTRIES, Session, USER_DATA_CAP};

const IID: &str = "i-0123456789abcdef0";

fn connect(c: &ImdsConfig) -> Arc<Session> {
    run(Session::connect(c, None)).expect("connect")
}

/// `err` is a BadResponse about `path`.
fn assert_bad_at(err: &ImdsError, path: &str) {
    assert!(
        matches!(err, ImdsError::BadResponse { path: p, .. } if p == path),
        "{err}"
    );
}

/// The error of reading `path` as a value from a server with `tree` and `knobs`.
fn value_error(tree: Tree, knobs: Knobs, path: &str) -> ImdsError {
    let srv = ImdsServer::start(tree, knobs);
    run(async {
        Session::connect(&srv.config(), None)
            .await?
            .value(path)
            .await
    })
    .expect_err("refused")
}

#[test]
fn values_listings_and_leaves() {
    let mut tree = ImdsServer::default_tree();
    tree.insert("meta-data/blank".into(), b" \n".to_vec());
    let srv = ImdsServer::start(tree, Knobs::default());
    let s = connect(&srv.config());
    run(async {
        let v = s.value("meta-data/instance-type").await.expect("value");
        assert_eq!(v.as_deref(), Some("m6id.large"));
        assert_eq!(s.value("meta-data/nope").await.expect("404"), None);
        assert_eq!(s.value("meta-data/blank").await.expect("blank"), None);
        let keys = s.listing("meta-data/public-keys/").await.expect("listing");
        assert_eq!(keys, ["0=alice", "1=bob"]);
        let none = s.listing("meta-data/nope/").await.expect("404");
        assert!(none.is_empty());
        let ud = s.get("user-data", USER_DATA_CAP).await.expect("get");
        assert_eq!(
            ud.as_deref(),
            Some(&b"#cloud-config\nhostname: web-1\n"[..])
        );
        assert_eq!(s.get("nope", LEAF_CAP).await.expect("404"), None);
    });
    assert_eq!(s.endpoint(), srv.url());
    assert_eq!(srv.tokens_issued(), 1);
}

#[test]
fn get_all_is_concurrent_in_order_and_shares_one_token() {
    let srv = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            // Long enough that concurrent requests overlap in the server.
            delay: Duration::from_millis(30),
            ..Knobs::default()
        },
    );
    let s = connect(&srv.config());
    let paths = [
        "meta-data/instance-id",
        "meta-data/instance-type",
        "meta-data/nope",
        "meta-data/local-ipv4",
        "meta-data/ipv6",
        "meta-data/local-hostname",
        "meta-data/placement/region",
        "meta-data/placement/availability-zone",
    ];
    let got = run(s.get_all(paths.iter().map(|p| p.to_string()))).expect("get_all");
    let got: Vec<(&str, Option<&[u8]>)> = got
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (paths[0], Some(IID.as_bytes())),
            (paths[1], Some(&b"m6id.large"[..])),
            (paths[2], None),
            (paths[3], Some(&b"10.1.2.3"[..])),
            (paths[4], Some(&b"2600:1f18:aaaa:bbbb::10"[..])),
            (paths[5], Some(&b"ip-10-1-2-3.ec2.internal"[..])),
            (paths[6], Some(&b"us-east-1"[..])),
            (paths[7], Some(&b"us-east-1a"[..])),
        ]
    );
    srv.assert_one_token_each_path_once(5);
}

#[test]
fn absurd_budget_is_capped_not_a_panic() {
    let srv = ImdsServer::happy();
    let c: ImdsConfig = serde_json::from_value(serde_json::json!({
        "endpoint": srv.url(),
        "budget_seconds": 1e15,
        "request_timeout_seconds": 1e15,
    }))
    .expect("parses");
    let id = run(async {
        Session::connect(&c, None)
            .await?
            .value("meta-data/instance-id")
            .await
    });
    assert_eq!(id.expect("value").as_deref(), Some(IID));
}

#[test]
fn expired_token_is_refreshed_once() {
    let srv = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            reject_first_token: true,
            ..Knobs::default()
        },
    );
    let s = connect(&srv.config());
    let paths = (0..6).map(|_| "meta-data/instance-id".to_string());
    let got = run(s.get_all(paths)).expect("get_all");
    assert!(
        got.iter()
            .all(|(_, b)| b.as_deref() == Some(IID.as_bytes())),
        "{got:?}"
    );
    // Concurrent GETs that all hit the revoked token share one refresh.
    assert_eq!(srv.tokens_issued(), 2);
}

#[test]
fn forbidden_token_means_disabled_without_retries() {
    let forbidden = Knobs {
        token_forbidden: true,
        ..Knobs::default()
    };
    let srv = ImdsServer::start(ImdsServer::default_tree(), forbidden.clone());
    let t = Instant::now();
    let err = run(Session::connect(&srv.config(), None))
        .err()
        .expect("disabled");
    assert!(matches!(err, ImdsError::Disabled { .. }), "{err}");
    assert!(err.to_string().contains("disabled"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(srv.total_requests(), 1);

    // The same when the token is first asked for by a GET (Session::new asks nothing).
    let srv = ImdsServer::start(ImdsServer::default_tree(), forbidden);
    let s = Session::new(&srv.config()).expect("session");
    assert_eq!(srv.total_requests(), 0);
    let err = run(s.value("meta-data/instance-id")).expect_err("disabled");
    assert!(matches!(err, ImdsError::Disabled { .. }), "{err}");
    assert_eq!(srv.total_requests(), 1);
}

#[test]
fn server_errors_are_retried() {
    let srv = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            leading_500s: 3,
            ..Knobs::default()
        },
    );
    let s = connect(&srv.config());
    let id = run(s.value("meta-data/instance-id")).expect("value");
    assert_eq!(id.as_deref(), Some(IID));
    // The first three requests were all the token PUT.
    assert_eq!(srv.requests("/latest/api/token"), 4);
    assert_eq!(srv.tokens_issued(), 1);
}

/// Connects to a misbehaving server with a 300 ms budget and reads user-data, and checks that
/// it gives up with BudgetExceeded soon after the budget (the margin absorbs a loaded machine).
fn assert_budget_kept(knobs: Knobs, request_timeout: Duration) -> ImdsError {
    let srv = ImdsServer::start(ImdsServer::default_tree(), knobs);
    let budget = Duration::from_millis(300);
    let c = ImdsConfig {
        budget,
        request_timeout,
        ..srv.config()
    };
    let t = Instant::now();
    let err = run(async {
        let s = Session::connect(&c, None).await?;
        s.get("user-data", USER_DATA_CAP).await
    })
    .expect_err("out of time");
    let took = t.elapsed();
    // Generous for a loaded CI machine; without the budget this would never end
    // (endless retries) or take the 10 s attempt timeout.
    assert!(took < budget + Duration::from_secs(2), "took {took:?}");
    assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
    err
}

#[test]
fn hanging_server_respects_the_budget() {
    let err = assert_budget_kept(
        Knobs {
            hang: true,
            ..Knobs::default()
        },
        Duration::from_millis(100),
    );
    assert!(err.to_string().contains("no answer within"), "{err}");
}

#[test]
fn attempt_timeout_is_cut_to_the_budget() {
    // One attempt may take 10 s, but only 300 ms are left for everything.
    assert_budget_kept(
        Knobs {
            hang_path: Some("/latest/user-data".into()),
            ..Knobs::default()
        },
        Duration::from_secs(10),
    );
}

#[test]
fn slow_server_respects_the_budget() {
    assert_budget_kept(
        Knobs {
            delay: Duration::from_millis(200),
            ..Knobs::default()
        },
        Duration::from_millis(100),
    );
}

#[test]
fn endless_500s_respect_the_budget() {
    let err = assert_budget_kept(
        Knobs {
            leading_500s: usize::MAX,
            ..Knobs::default()
        },
        Duration::from_secs(1),
    );
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[test]
fn connection_refused_respects_the_budget() {
    let c = ImdsConfig {
        endpoint: nobody("127.0.0.1").into(),
        budget: Duration::from_millis(300),
        ..ImdsConfig::default()
    };
    let t = Instant::now();
    let err = run(Session::connect(&c, None)).err().expect("refused");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
}

#[test]
fn within_budget_ends_any_work_when_the_budget_does() {
    let c = ImdsConfig {
        endpoint: nobody("127.0.0.1").into(),
        budget: Duration::from_millis(300),
        ..ImdsConfig::default()
    };
    let s = Session::new(&c).expect("session");
    let t = Instant::now();
    let err = run(s.within_budget(std::future::pending::<Result<(), ImdsError>>()))
        .expect_err("out of time");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
    assert!(err.to_string().contains("no answer yet"), "{err}");
}

#[test]
fn non_utf8_leaf_is_a_bad_response() {
    let path = "meta-data/local-hostname";
    let tree = with(ImdsServer::default_tree(), path, b"ip-\xff\xfe");
    let err = value_error(tree, Knobs::default(), path);
    assert_bad_at(&err, path);
    assert!(err.to_string().contains("UTF-8"), "{err}");
}

#[test]
fn html_bodies_are_rejected() {
    let garbage = Knobs {
        garbage_bodies: true,
        ..Knobs::default()
    };
    let err = value_error(
        ImdsServer::default_tree(),
        garbage.clone(),
        "meta-data/instance-type",
    );
    assert!(matches!(err, ImdsError::BadResponse { .. }), "{err}");
    assert!(err.to_string().contains("HTML"), "{err}");

    let srv = ImdsServer::start(ImdsServer::default_tree(), garbage);
    let s = connect(&srv.config());
    let err = run(s.listing("meta-data/public-keys/")).expect_err("html");
    assert!(err.to_string().contains("HTML"), "{err}");
}

#[test]
fn a_value_is_one_token() {
    let path = "meta-data/instance-type";
    let tree = with(ImdsServer::default_tree(), path, b"m6id large");
    let err = value_error(tree, Knobs::default(), path);
    assert_bad_at(&err, path);
}

#[test]
fn a_listing_has_at_most_max_entries() {
    let path = "meta-data/public-keys/";
    let long: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("{i}=k{i}")).collect();
    let srv = ImdsServer::start(
        with(ImdsServer::default_tree(), path, long.join("\n").as_bytes()),
        Knobs::default(),
    );
    let s = connect(&srv.config());
    let err = run(s.listing(path)).expect_err("too many");
    assert_bad_at(&err, path);
    let at_most = with(
        ImdsServer::default_tree(),
        path,
        long[..MAX_ENTRIES].join("\n").as_bytes(),
    );
    let srv = ImdsServer::start(at_most, Knobs::default());
    let s = connect(&srv.config());
    assert_eq!(run(s.listing(path)).expect("listing").len(), MAX_ENTRIES);
}

#[test]
fn answers_over_their_cap_are_rejected() {
    // With a Content-Length over the cap.
    let path = "meta-data/instance-type";
    let tree = with(ImdsServer::default_tree(), path, &[b'x'; LEAF_CAP + 1]);
    let err = value_error(tree, Knobs::default(), path);
    assert_bad_at(&err, path);

    // Chunked, without a length: cut once past the cap; exactly the cap is accepted.
    for (size, ok) in [(LEAF_CAP, true), (LEAF_CAP + 1, false)] {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                huge_user_data: Some(size),
                ..Knobs::default()
            },
        );
        let s = connect(&srv.config());
        match run(s.get("user-data", LEAF_CAP)) {
            Ok(body) if ok => assert_eq!(body.map(|b| b.len()), Some(size)),
            Err(ImdsError::BadResponse { path, .. }) if !ok => assert_eq!(path, "user-data"),
            other => panic!("{size} bytes: {other:?}"),
        }
    }
}

#[test]
fn bad_endpoint_is_a_clear_error() {
    let c = ImdsConfig {
        endpoint: "not a url".into(),
        ..ImdsConfig::default()
    };
    let err = run(Session::connect(&c, None)).err().expect("bad endpoint");
    assert!(err.to_string().contains("nor auto, ipv4, ipv6"), "{err}");
    assert!(matches!(err, ImdsError::Http { .. }), "{err}");
}

fn raced(v4: &str, v6: &str, budget: Duration) -> ImdsConfig {
    ImdsConfig {
        endpoint: Endpoint::Many(vec![v4.to_string(), v6.to_string()]),
        budget,
        request_timeout: Duration::from_millis(500),
        token_ttl_secs: 21600,
    }
}

/// Connects (the race), then reads the instance id from the winner: the winner's URL, and
/// how long both took.
fn connected(c: &ImdsConfig, preferred: Option<&str>) -> (String, Duration) {
    let t = Instant::now();
    let (endpoint, id) = run(async {
        let s = Session::connect(c, preferred).await?;
        let id = s.value("meta-data/instance-id").await?;
        Ok::<_, ImdsError>((s.endpoint().to_string(), id))
    })
    .expect("connect");
    assert_eq!(id.as_deref(), Some(IID));
    (endpoint, t.elapsed())
}

#[test]
fn ipv6_only_ipv4_only_and_one_slow() {
    // IMDS on ::1 only: IPv4 is refused, IPv6 answers and is used for everything.
    let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), Knobs::default());
    let c = raced(&nobody("127.0.0.1"), &v6.url(), Duration::from_secs(5));
    let (endpoint, took) = connected(&c, None);
    assert_eq!(endpoint, v6.url());
    assert!(took < Duration::from_secs(2), "{took:?}");

    // On 127.0.0.1 only: IPv4 answers before IPv6 is even tried.
    let v4 = ImdsServer::happy();
    let c = raced(&v4.url(), &nobody("[::1]"), Duration::from_secs(5));
    assert_eq!(connected(&c, None).0, v4.url());

    // Both, IPv4 slow: IPv6 wins and gets every GET; IPv4 saw at most its token PUT.
    let slow = Knobs {
        delay: Duration::from_millis(700),
        ..Knobs::default()
    };
    let v4 = ImdsServer::start(ImdsServer::default_tree(), slow.clone());
    let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), Knobs::default());
    let (endpoint, took) = connected(&raced(&v4.url(), &v6.url(), Duration::from_secs(5)), None);
    assert_eq!(endpoint, v6.url());
    assert!(
        took < Duration::from_millis(700),
        "not held up by IPv4: {took:?}"
    );
    assert!(v4.total_requests() <= 1, "{:?}", v4.counts());
    assert_eq!(v4.requests("/latest/meta-data/instance-id"), 0);

    // Both, IPv6 slow: IPv4 first, and IPv6 never asked.
    let v4 = ImdsServer::happy();
    let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), slow);
    let (endpoint, _) = connected(&raced(&v4.url(), &v6.url(), Duration::from_secs(5)), None);
    assert_eq!(endpoint, v4.url());
    assert_eq!(v6.total_requests(), 0, "{:?}", v6.counts());

    // The endpoint a previous boot used goes first.
    let v4 = ImdsServer::happy();
    let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), Knobs::default());
    let c = raced(&v4.url(), &v6.url(), Duration::from_secs(5));
    assert_eq!(connected(&c, Some(&v6.url())).0, v6.url());
    assert_eq!(v4.total_requests(), 0);
}

#[test]
fn racing_endpoints_keep_one_budget() {
    let hang = Knobs {
        hang: true,
        ..Knobs::default()
    };
    let v4 = ImdsServer::start(ImdsServer::default_tree(), hang.clone());
    let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), hang);
    let budget = Duration::from_millis(400);
    let t = Instant::now();
    let err = run(Session::connect(&raced(&v4.url(), &v6.url(), budget), None))
        .err()
        .expect("out of time");
    let took = t.elapsed();
    assert!(
        took < budget + Duration::from_secs(1),
        "one budget for both: {took:?}"
    );
    assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&v4.url()) && msg.contains(&v6.url()), "{msg}");

    // IMDS disabled (403 on IPv4) ends the race at once, whatever IPv6 does.
    let v4 = ImdsServer::start(
        ImdsServer::default_tree(),
        Knobs {
            token_forbidden: true,
            ..Knobs::default()
        },
    );
    let t = Instant::now();
    let c = raced(&v4.url(), &nobody("[::1]"), Duration::from_secs(10));
    let err = run(Session::connect(&c, None)).err().expect("disabled");
    assert!(matches!(err, ImdsError::Disabled { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
