//! EC2 instance metadata over IMDSv2.
//!
//! One session token (`PUT /latest/api/token`), then a handful of concurrent GETs, all
//! inside one total time budget: every attempt's timeout is cut to what is left of it,
//! and retries (5xx, 429, timeouts, refused connections) back off exponentially with
//! jitter until the budget runs out. A 403 on the token PUT means IMDS is disabled for
//! the instance: that fails at once. A 401 on a GET refreshes the token once.
//!
//! Everything IMDS answers is treated as untrusted input: sizes are capped, values must
//! be UTF-8 single tokens, HTML (a proxy or captive portal answering in IMDS's place) is
//! rejected, and the instance id must be safe to use as a directory name.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use stoke_api::InstanceData;

/// What EC2 told us: instance data (datasource `"ec2"`) and the raw user-data, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Ec2Metadata {
    pub instance: InstanceData,
    /// Raw bytes as served (may be gzip or MIME: see `userdata::decode`); `None` when
    /// the instance has no user-data (404).
    pub user_data: Option<Vec<u8>>,
}

pub use crate::state::valid_instance_id;
pub use stoke_imds::{ImdsConfig, ImdsError};
use stoke_imds::{LEAF_CAP, Session, USER_DATA_CAP, bad, cut, text};

/// Fetches instance data and user-data from IMDS, within `cfg.budget` in total.
pub async fn fetch(cfg: &ImdsConfig) -> Result<Ec2Metadata, ImdsError> {
    let session = Session::new(cfg)?;
    session.within_budget(collect(&session)).await
}

async fn collect(s: &Arc<Session>) -> Result<Ec2Metadata, ImdsError> {
    // One token before fanning out, so the GETs share it.
    s.token(None).await?;
    let (id, itype, ipv4, ipv6, hostname, region, az, keys, bdm, user_data) = tokio::try_join!(
        s.get("meta-data/instance-id", LEAF_CAP),
        s.value("meta-data/instance-type"),
        s.value("meta-data/local-ipv4"),
        s.value("meta-data/ipv6"),
        s.value("meta-data/local-hostname"),
        s.value("meta-data/placement/region"),
        s.value("meta-data/placement/availability-zone"),
        public_keys(s),
        block_devices(s),
        s.get("user-data", USER_DATA_CAP),
    )?;

    let id_path = "meta-data/instance-id";
    let Some(id) = id else {
        return Err(bad(
            id_path,
            "missing (HTTP 404); every EC2 instance has one",
        ));
    };
    let id = text(id_path, &id)?.trim().to_string();
    if !valid_instance_id(&id) {
        return Err(ImdsError::InvalidInstanceId {
            id: id.chars().take(80).collect(),
        });
    }
    if let Some(ip) = &ipv4 {
        ip.parse::<Ipv4Addr>().map_err(|_| {
            bad(
                "meta-data/local-ipv4",
                format!("{ip:?} is not an IPv4 address"),
            )
        })?;
    }
    if let Some(ip) = &ipv6 {
        ip.parse::<Ipv6Addr>()
            .map_err(|_| bad("meta-data/ipv6", format!("{ip:?} is not an IPv6 address")))?;
    }
    let region = region.or_else(|| az.as_deref().and_then(region_of_zone));
    Ok(Ec2Metadata {
        instance: InstanceData {
            datasource: "ec2".into(),
            instance_id: id,
            instance_type: itype,
            local_ipv4: ipv4,
            ipv6,
            local_hostname: hostname,
            region,
            availability_zone: az,
            public_keys: keys,
            block_device_mapping: bdm,
        },
        user_data,
    })
}

/// `public-keys/` lists `N=name`; each key is at `public-keys/N/openssh-key`.
async fn public_keys(s: &Arc<Session>) -> Result<Vec<String>, ImdsError> {
    let list = "meta-data/public-keys/";
    let mut indexes = Vec::new();
    for line in s.listing(list).await? {
        let n = line
            .split_once('=')
            .map_or(line.trim_end_matches('/'), |(n, _)| n);
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                list,
                format!("unexpected entry {:?} (expected N=name)", cut(&line)),
            ));
        }
        indexes.push(n.to_string());
    }
    let bodies = s
        .get_all(
            indexes
                .iter()
                .map(|n| format!("meta-data/public-keys/{n}/openssh-key")),
        )
        .await?;
    let mut keys = Vec::new();
    for (path, body) in bodies {
        let Some(body) = body else { continue };
        for line in text(&path, &body)?.lines().map(str::trim) {
            if line.is_empty() {
                continue;
            }
            // A bad key is the ssh module's to skip with a warning (as on NoCloud): it must
            // not cost every other key, the hostname and the user-data of the instance.
            keys.push(line.to_string());
        }
    }
    Ok(keys)
}

/// `block-device-mapping/` lists names (`ami`, `root`, `ephemeral0`, ...); each
/// entry's value is the device.
async fn block_devices(s: &Arc<Session>) -> Result<BTreeMap<String, String>, ImdsError> {
    let list = "meta-data/block-device-mapping/";
    let mut names = Vec::new();
    for line in s.listing(list).await? {
        let name = line.trim_end_matches('/');
        if !valid_instance_id(name) {
            return Err(bad(list, format!("unexpected entry {:?}", cut(&line))));
        }
        names.push(name.to_string());
    }
    let paths = names.iter().map(|n| format!("{list}{n}"));
    let bodies = s.get_all(paths).await?;
    let mut map = BTreeMap::new();
    for (name, (path, body)) in names.into_iter().zip(bodies) {
        let Some(body) = body else { continue };
        let dev = text(&path, &body)?.trim();
        if dev.is_empty() {
            continue;
        }
        if !dev.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                &path,
                format!("expected a device name, got {:?}", cut(dev)),
            ));
        }
        map.insert(name, dev.to_string());
    }
    Ok(map)
}

/// `us-east-1a` → `us-east-1` (for IMDS versions without `placement/region`).
fn region_of_zone(az: &str) -> Option<String> {
    let region = az.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    region
        .ends_with(|c: char| c.is_ascii_digit())
        .then(|| region.to_string())
}

#[cfg(test)]
#[path = "../../tests/support/imds.rs"]
mod imds_double;

#[cfg(test)]
mod tests {
    use super::imds_double::{ImdsServer, Knobs, Tree};
    use super::*;
    use std::time::Duration;
    use std::time::Instant as StdInstant;

    fn cfg(srv: &ImdsServer) -> ImdsConfig {
        ImdsConfig {
            endpoint: srv.url(),
            budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            token_ttl_secs: 21600,
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn with(mut tree: Tree, path: &str, v: &[u8]) -> Tree {
        tree.insert(path.to_string(), v.to_vec());
        tree
    }

    #[test]
    fn region_from_zone() {
        assert_eq!(region_of_zone("us-east-1a").as_deref(), Some("us-east-1"));
        assert_eq!(region_of_zone("eu-west-3c").as_deref(), Some("eu-west-3"));
        assert_eq!(region_of_zone("us-east-1"), None);
        assert_eq!(region_of_zone(""), None);
    }

    #[test]
    fn config_from_yaml_style_json() {
        let c: ImdsConfig = serde_json::from_str(
            r#"{"endpoint":"http://127.0.0.1:1","budget_seconds":0.5,"request_timeout_seconds":1}"#,
        )
        .expect("parses");
        assert_eq!(c.budget, Duration::from_millis(500));
        assert_eq!(c.request_timeout, Duration::from_secs(1));
        assert_eq!(c.token_ttl_secs, 21600);
        assert_eq!(
            serde_json::from_str::<ImdsConfig>("{}").expect("defaults"),
            ImdsConfig::default()
        );
        assert!(serde_json::from_str::<ImdsConfig>(r#"{"budget":3}"#).is_err());
        assert!(serde_json::from_str::<ImdsConfig>(r#"{"budget_seconds":-1}"#).is_err());
        let schema = serde_json::to_string(&schemars::schema_for!(ImdsConfig)).expect("schema");
        assert!(schema.contains("budget_seconds") && schema.contains("token_ttl_seconds"));
        let back: ImdsConfig =
            serde_json::from_value(serde_json::to_value(&c).expect("ser")).expect("de");
        assert_eq!(back, c);
    }

    #[test]
    fn happy_path_fetches_everything_concurrently() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                // Long enough that concurrent requests overlap in the server.
                delay: Duration::from_millis(30),
                ..Knobs::default()
            },
        );
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        let i = &md.instance;
        assert_eq!(i.datasource, "ec2");
        assert_eq!(i.instance_id, "i-0123456789abcdef0");
        assert_eq!(i.instance_type.as_deref(), Some("m6id.large"));
        assert_eq!(i.local_ipv4.as_deref(), Some("10.1.2.3"));
        assert_eq!(i.ipv6.as_deref(), Some("2600:1f18:aaaa:bbbb::10"));
        assert_eq!(
            i.local_hostname.as_deref(),
            Some("ip-10-1-2-3.ec2.internal")
        );
        assert_eq!(i.region.as_deref(), Some("us-east-1"));
        assert_eq!(i.availability_zone.as_deref(), Some("us-east-1a"));
        assert_eq!(
            i.public_keys,
            [
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice alice@example",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob bob@example"
            ]
        );
        let bdm: Vec<_> = i.block_device_mapping.iter().collect();
        assert_eq!(
            bdm,
            [
                (&"ami".to_string(), &"/dev/xvda".to_string()),
                (&"ephemeral0".to_string(), &"sdb".to_string()),
                (&"root".to_string(), &"/dev/xvda".to_string())
            ]
        );
        assert_eq!(
            md.user_data.as_deref(),
            Some(&b"#cloud-config\nhostname: web-1\n"[..])
        );
        assert_eq!(srv.tokens_issued(), 1);
        assert_eq!(srv.requests("/latest/api/token"), 1);
        // Every path fetched exactly once, and not one after the other.
        assert!(srv.counts().values().all(|&n| n == 1), "{:?}", srv.counts());
        assert!(
            srv.max_in_flight() >= 5,
            "max in flight {}",
            srv.max_in_flight()
        );
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
        let md = run(fetch(&c)).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");
    }

    #[test]
    fn optional_paths_absent_and_region_from_zone() {
        let mut tree = Tree::new();
        tree.insert("meta-data/instance-id".into(), b"i-1".to_vec());
        tree.insert(
            "meta-data/placement/availability-zone".into(),
            b"eu-west-3c".to_vec(),
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-1");
        assert_eq!(md.instance.region.as_deref(), Some("eu-west-3"));
        assert_eq!(md.instance.local_ipv4, None);
        assert!(md.instance.public_keys.is_empty());
        assert!(md.instance.block_device_mapping.is_empty());
        assert_eq!(md.user_data, None, "404 user-data is none");
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
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");
        // Concurrent GETs that all hit the revoked token share one refresh.
        assert_eq!(srv.tokens_issued(), 2);
    }

    #[test]
    fn forbidden_token_means_disabled_without_retries() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                token_forbidden: true,
                ..Knobs::default()
            },
        );
        let t = StdInstant::now();
        let err = run(fetch(&cfg(&srv))).expect_err("disabled");
        assert!(matches!(err, ImdsError::Disabled { .. }), "{err}");
        assert!(err.to_string().contains("disabled"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
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
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");
        // The first three requests were all the token PUT.
        assert_eq!(srv.requests("/latest/api/token"), 4);
        assert_eq!(srv.tokens_issued(), 1);
    }

    /// Runs against a misbehaving server with a 300 ms budget and checks that fetch
    /// gives up with BudgetExceeded soon after it (the margin absorbs a loaded machine).
    fn assert_budget_kept(knobs: Knobs, request_timeout: Duration) -> ImdsError {
        let srv = ImdsServer::start(ImdsServer::default_tree(), knobs);
        let budget = Duration::from_millis(300);
        let c = ImdsConfig {
            budget,
            request_timeout,
            ..cfg(&srv)
        };
        let t = StdInstant::now();
        let err = run(fetch(&c)).expect_err("out of time");
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
        let endpoint = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let c = ImdsConfig {
            endpoint,
            budget: Duration::from_millis(300),
            ..ImdsConfig::default()
        };
        let t = StdInstant::now();
        let err = run(fetch(&c)).expect_err("refused");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
    }

    #[test]
    fn traversal_instance_id_is_rejected() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/instance-id",
            b"../../etc",
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&cfg(&srv))).expect_err("rejected");
        assert!(
            matches!(err, ImdsError::InvalidInstanceId { ref id } if id == "../../etc"),
            "{err}"
        );
    }

    #[test]
    fn non_utf8_leaf_is_a_bad_response() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/local-hostname",
            b"ip-\xff\xfe",
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&cfg(&srv))).expect_err("bad");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "meta-data/local-hostname"),
            "{err}"
        );
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn html_bodies_are_rejected() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                garbage_bodies: true,
                ..Knobs::default()
            },
        );
        let err = run(fetch(&cfg(&srv))).expect_err("bad");
        assert!(matches!(err, ImdsError::BadResponse { .. }), "{err}");
        assert!(err.to_string().contains("HTML"), "{err}");
    }

    #[test]
    fn oversized_leaf_and_user_data_are_rejected() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/instance-type",
            &[b'x'; 17 * 1024],
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&cfg(&srv))).expect_err("too big");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "meta-data/instance-type"),
            "{err}"
        );

        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                huge_user_data: Some(USER_DATA_CAP + 1),
                ..Knobs::default()
            },
        );
        let err = run(fetch(&cfg(&srv))).expect_err("too big");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "user-data"),
            "{err}"
        );
    }

    #[test]
    fn malformed_values_and_listings_are_rejected() {
        for (path, body) in [
            ("meta-data/local-ipv4", &b"10.1.2"[..]),
            ("meta-data/instance-type", b"m6id large"),
            ("meta-data/public-keys/", b"zero=alice"),
            ("meta-data/block-device-mapping/", b"../../user-data"),
        ] {
            let srv = ImdsServer::start(
                with(ImdsServer::default_tree(), path, body),
                Knobs::default(),
            );
            let err = run(fetch(&cfg(&srv))).expect_err(path);
            assert!(
                matches!(err, ImdsError::BadResponse { path: ref p, .. } if p == path),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn gzip_multipart_user_data_round_trips() {
        use std::io::Write;
        let mime = b"Content-Type: multipart/mixed; boundary=\"XX\"\n\
MIME-Version: 1.0\n\n--XX\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: a\n\
--XX\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--XX--\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(mime).expect("gzip");
        let raw = gz.finish().expect("gzip");
        let srv = ImdsServer::start(
            with(ImdsServer::default_tree(), "user-data", &raw),
            Knobs::default(),
        );
        let md = run(fetch(&cfg(&srv))).expect("fetch");
        assert_eq!(
            md.user_data.as_deref(),
            Some(&raw[..]),
            "served bytes unchanged"
        );
        let ud = super::super::userdata::decode(&raw).expect("decode");
        assert_eq!(ud.cloud_configs, ["#cloud-config\nhostname: a"]);
        assert_eq!(ud.scripts.len(), 1);
    }

    #[test]
    fn bad_endpoint_is_a_clear_error() {
        let c = ImdsConfig {
            endpoint: "not a url".into(),
            ..ImdsConfig::default()
        };
        let err = run(fetch(&c)).expect_err("bad endpoint");
        assert!(matches!(err, ImdsError::Http { .. }), "{err}");
    }
}
