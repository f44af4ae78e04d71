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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use stoke_api::{InstanceData, InstanceId};

/// What EC2 told us: instance data (datasource `"ec2"`) and the raw user-data, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Ec2Metadata {
    pub instance: InstanceData,
    /// Raw bytes as served (may be gzip or MIME: see `userdata::decode`); `None` when
    /// the instance has no user-data (404).
    pub user_data: Option<Vec<u8>>,
}

pub use stoke_imds::{ImdsConfig, ImdsError};
use stoke_imds::{LEAF_CAP, Session, USER_DATA_CAP, bad, cut, text};

/// Fetches instance data and user-data from IMDS, within `cfg.budget` in total.
#[cfg(test)]
pub async fn fetch(cfg: &ImdsConfig) -> Result<Ec2Metadata, ImdsError> {
    connect_and_fetch(cfg, None).await.map(|(md, _)| md)
}

/// Finds the endpoint that answers (`preferred`, the one a previous boot used, tried first),
/// then fetches instance data and user-data from it, all within `cfg.budget`. The session is
/// returned for what only the configuration can say is needed ([`fetch_extras`]).
pub async fn connect_and_fetch(
    cfg: &ImdsConfig,
    preferred: Option<&str>,
) -> Result<(Ec2Metadata, Arc<Session>), ImdsError> {
    // The token comes with the endpoint: the GETs share it.
    let s = Session::connect(cfg, preferred).await?;
    let mut md = s.within_budget(collect(&s)).await?;
    md.instance.imds_endpoint = Some(s.endpoint().to_string());
    Ok((md, s))
}

async fn collect(s: &Arc<Session>) -> Result<Ec2Metadata, ImdsError> {
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
    let id = InstanceId::new(text(id_path, &id)?.trim())
        .map_err(|e| ImdsError::InvalidInstanceId { id: e.shown })?;
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
            ..InstanceData::default()
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

/// A listing entry used in a metadata path: `[A-Za-z0-9._-]`, not `.` or `..`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `block-device-mapping/` lists names (`ami`, `root`, `ephemeral0`, ...); each
/// entry's value is the device.
async fn block_devices(s: &Arc<Session>) -> Result<BTreeMap<String, String>, ImdsError> {
    let list = "meta-data/block-device-mapping/";
    let mut names = Vec::new();
    for line in s.listing(list).await? {
        let name = line.trim_end_matches('/');
        if !is_plain_name(name) {
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

/// What the configuration uses beyond the base metadata (see `datasource::needs`).
#[derive(Debug, Default, PartialEq)]
pub struct Extras {
    /// Instance tag keys a template or config refers to.
    pub tags: BTreeSet<String>,
    /// The network interfaces (primary interface's addresses, `local-ipv6`).
    pub interfaces: bool,
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && !self.interfaces
    }
}

/// Fetches what `want` asks for into `instance`, with the session (and within the budget) of
/// the base metadata. Returns warnings (a used tag the instance does not have).
pub async fn fetch_extras(
    s: &Arc<Session>,
    want: &Extras,
    instance: &mut InstanceData,
) -> Result<Vec<String>, ImdsError> {
    let (primary, (listed, tags)) = s
        .within_budget(async {
            let interfaces = async {
                if want.interfaces {
                    primary_interface(s).await
                } else {
                    Ok(None)
                }
            };
            let tags = async {
                if want.tags.is_empty() {
                    Ok((None, BTreeMap::new()))
                } else {
                    tags(s, &want.tags).await
                }
            };
            tokio::try_join!(interfaces, tags)
        })
        .await?;
    if let Some(p) = primary {
        // The primary interface's, not whichever IMDS or the kernel lists first.
        if p.ipv4.is_some() {
            instance.local_ipv4 = p.ipv4;
        }
        instance.local_ipv6 = p.ipv6;
    }
    let mut warnings = Vec::new();
    let missing: Vec<&str> = want
        .tags
        .iter()
        .filter(|k| !tags.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let why = match listed {
            None => "IMDS lists no tags: instance metadata tags are off for this instance \
                     (instance metadata options: InstanceMetadataTags=enabled)"
                .to_string(),
            Some(n) => format!("the instance has no such tag ({n} tags listed)"),
        };
        warnings.push(format!(
            "ec2: tag{} {} used by the configuration: {why}",
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    instance.tags = tags;
    Ok(warnings)
}

/// Tag keys as IMDS can serve them: letters, digits and `+-=._:@`, not `.` or `..`.
pub fn valid_tag_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-=._:@".contains(&b))
}

/// One request for the list, one per used tag that is in it. `None` for the count when
/// IMDS has no tag listing (404: tags are not enabled in the instance's metadata options).
async fn tags(
    s: &Arc<Session>,
    want: &BTreeSet<String>,
) -> Result<(Option<usize>, BTreeMap<String, String>), ImdsError> {
    let list = "meta-data/tags/instance";
    let Some(body) = s.get(list, LEAF_CAP).await? else {
        return Ok((None, BTreeMap::new()));
    };
    let listed: BTreeSet<String> = text(list, &body)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let used: Vec<&String> = want
        .iter()
        .filter(|k| listed.contains(*k) && valid_tag_key(k))
        .collect();
    let bodies = s
        .get_all(used.iter().map(|k| format!("{list}/{k}")))
        .await?;
    let mut out = BTreeMap::new();
    for (key, (path, body)) in used.into_iter().zip(bodies) {
        let Some(body) = body else { continue };
        out.insert(key.clone(), text(&path, &body)?.to_string());
    }
    Ok((Some(listed.len()), out))
}

/// The primary interface's first addresses.
#[derive(Debug, PartialEq)]
struct Primary {
    ipv4: Option<String>,
    ipv6: Option<String>,
}

/// The interface on network card 0 with device number 0 (an instance with several network
/// cards has a device 0 on each), found among all the MACs IMDS lists, in whatever order.
async fn primary_interface(s: &Arc<Session>) -> Result<Option<Primary>, ImdsError> {
    let list = "meta-data/network/interfaces/macs/";
    let mut macs = Vec::new();
    for line in s.listing(list).await? {
        let mac = line.trim_end_matches('/');
        if !valid_mac(mac) {
            return Err(bad(list, format!("unexpected entry {:?}", cut(&line))));
        }
        macs.push(mac.to_ascii_lowercase());
    }
    let paths = macs.iter().flat_map(|m| {
        [
            format!("{list}{m}/network-card"),
            format!("{list}{m}/device-number"),
        ]
    });
    let answers = s.get_all(paths).await?;
    let number = |(path, body): &(String, Option<Vec<u8>>)| -> Result<u32, ImdsError> {
        // No network-card key: an instance type with one card (it is card 0).
        let Some(body) = body else { return Ok(0) };
        let t = text(path, body)?.trim();
        t.parse()
            .map_err(|_| bad(path, format!("expected a number, got {:?}", cut(t))))
    };
    let mut primary = None;
    for (mac, pair) in macs.iter().zip(answers.chunks(2)) {
        let [card, dev] = pair else { continue };
        if dev.1.is_none() {
            continue; // an interface being detached
        }
        if (number(card)?, number(dev)?) == (0, 0) {
            if primary.is_some() {
                return Err(bad(
                    list,
                    "two interfaces claim network-card 0, device-number 0",
                ));
            }
            primary = Some(mac.clone());
        }
    }
    let Some(mac) = primary else {
        return Ok(None);
    };
    let first = |path: &str, body: &Option<Vec<u8>>| -> Result<Option<String>, ImdsError> {
        let Some(body) = body else { return Ok(None) };
        Ok(text(path, body)?
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from))
    };
    let got = s
        .get_all(
            [
                format!("{list}{mac}/local-ipv4s"),
                format!("{list}{mac}/ipv6s"),
            ]
            .into_iter(),
        )
        .await?;
    let [(p4, b4), (p6, b6)] = got.as_slice() else {
        return Ok(None);
    };
    let ipv4 = first(p4, b4)?;
    if let Some(ip) = &ipv4 {
        ip.parse::<Ipv4Addr>()
            .map_err(|_| bad(p4, format!("{:?} is not an IPv4 address", cut(ip))))?;
    }
    let ipv6 = first(p6, b6)?;
    if let Some(ip) = &ipv6 {
        ip.parse::<Ipv6Addr>()
            .map_err(|_| bad(p6, format!("{:?} is not an IPv6 address", cut(ip))))?;
    }
    Ok(Some(Primary { ipv4, ipv6 }))
}

/// `0e:1a:2b:3c:4d:5e`: the MAC becomes part of request paths.
fn valid_mac(m: &str) -> bool {
    m.len() == 17
        && m.split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `us-east-1a` → `us-east-1` (for IMDS versions without `placement/region`).
fn region_of_zone(az: &str) -> Option<String> {
    let region = az.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    region
        .ends_with(|c: char| c.is_ascii_digit())
        .then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use std::time::Instant as StdInstant;
    use stoke_imds::double::{ImdsServer, Knobs, Tree, nobody, run, with};

    #[test]
    fn region_from_zone() {
        assert_eq!(region_of_zone("us-east-1a").as_deref(), Some("us-east-1"));
        assert_eq!(region_of_zone("eu-west-3c").as_deref(), Some("eu-west-3"));
        assert_eq!(region_of_zone("us-east-1"), None);
        assert_eq!(region_of_zone(""), None);
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
        let md = run(fetch(&srv.config())).expect("fetch");
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
        assert_eq!(i.imds_endpoint.as_deref(), Some(srv.url().as_str()));
        // Every path fetched exactly once, and not one after the other.
        srv.assert_one_token_each_path_once(5);
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
        let md = run(fetch(&srv.config())).expect("fetch");
        assert_eq!(md.instance.instance_id, "i-1");
        assert_eq!(md.instance.region.as_deref(), Some("eu-west-3"));
        assert_eq!(md.instance.local_ipv4, None);
        assert!(md.instance.public_keys.is_empty());
        assert!(md.instance.block_device_mapping.is_empty());
        assert_eq!(md.user_data, None, "404 user-data is none");
    }

    #[test]
    fn traversal_instance_id_is_rejected() {
        let tree = with(
            ImdsServer::default_tree(),
            "meta-data/instance-id",
            b"../../etc",
        );
        let srv = ImdsServer::start(tree, Knobs::default());
        let err = run(fetch(&srv.config())).expect_err("rejected");
        assert!(
            matches!(err, ImdsError::InvalidInstanceId { ref id } if id == "../../etc"),
            "{err}"
        );
    }

    #[test]
    fn user_data_has_its_own_cap() {
        // Over the cap of a metadata value, well under user-data's.
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                huge_user_data: Some(LEAF_CAP + 1),
                ..Knobs::default()
            },
        );
        let md = run(fetch(&srv.config())).expect("fetch");
        assert_eq!(md.user_data.map(|u| u.len()), Some(LEAF_CAP + 1));

        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                huge_user_data: Some(USER_DATA_CAP + 1),
                ..Knobs::default()
            },
        );
        let err = run(fetch(&srv.config())).expect_err("too big");
        assert!(
            matches!(err, ImdsError::BadResponse { ref path, .. } if path == "user-data"),
            "{err}"
        );
    }

    #[test]
    fn malformed_values_and_listings_are_rejected() {
        for (path, body) in [
            ("meta-data/local-ipv4", &b"10.1.2"[..]),
            ("meta-data/ipv6", b"2600:1f18::zz"),
            ("meta-data/public-keys/", b"zero=alice"),
            ("meta-data/block-device-mapping/", b"../../user-data"),
        ] {
            let srv = ImdsServer::start(
                with(ImdsServer::default_tree(), path, body),
                Knobs::default(),
            );
            let err = run(fetch(&srv.config())).expect_err(path);
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
        let md = run(fetch(&srv.config())).expect("fetch");
        assert_eq!(
            md.user_data.as_deref(),
            Some(&raw[..]),
            "served bytes unchanged"
        );
        let ud = super::super::userdata::decode(&raw).expect("decode");
        assert_eq!(ud.cloud_configs, ["#cloud-config\nhostname: a"]);
        assert_eq!(ud.scripts.len(), 1);
    }

    fn raced(v4: &str, v6: &str) -> ImdsConfig {
        ImdsConfig {
            endpoint: stoke_imds::Endpoint::Many(vec![v4.to_string(), v6.to_string()]),
            budget: Duration::from_secs(5),
            request_timeout: Duration::from_millis(500),
            token_ttl_secs: 21600,
        }
    }

    /// The race itself is stoke-imds's (modules/imds/tests/session.rs); here: the winner is
    /// what the instance data records, and a previous boot's endpoint is passed on.
    #[test]
    fn the_endpoint_that_answered_is_recorded() {
        let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), Knobs::default());
        let c = raced(&nobody("127.0.0.1"), &v6.url());
        let (md, s) = run(connect_and_fetch(&c, None)).expect("fetch");
        assert_eq!(
            md.instance.imds_endpoint.as_deref(),
            Some(v6.url().as_str())
        );
        assert_eq!(s.endpoint(), v6.url());
        assert_eq!(md.instance.instance_id, "i-0123456789abcdef0");

        let v4 = ImdsServer::happy();
        let v6 = ImdsServer::start_on("[::1]:0", ImdsServer::default_tree(), Knobs::default());
        let c = raced(&v4.url(), &v6.url());
        let (md, _) = run(connect_and_fetch(&c, Some(&v6.url()))).expect("fetch");
        assert_eq!(
            md.instance.imds_endpoint.as_deref(),
            Some(v6.url().as_str())
        );
        assert_eq!(v4.total_requests(), 0);
    }

    fn extras_of(srv: &ImdsServer, want: Extras) -> (InstanceData, Vec<String>) {
        run(async {
            let (mut md, s) = connect_and_fetch(&srv.config(), None).await.expect("fetch");
            let warnings = fetch_extras(&s, &want, &mut md.instance)
                .await
                .expect("extras");
            (md.instance, warnings)
        })
    }

    #[test]
    fn the_primary_interface_of_several_network_cards() {
        let srv = ImdsServer::start(ImdsServer::multi_nic_tree(), Knobs::default());
        let (i, warnings) = extras_of(
            &srv,
            Extras {
                interfaces: true,
                ..Extras::default()
            },
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(i.local_ipv4.as_deref(), Some("10.1.2.30"));
        assert_eq!(i.local_ipv6.as_deref(), Some("2600:1f18:aaaa:bbbb::30"));
        assert_eq!(i.vars()["local_ipv6"], "2600:1f18:aaaa:bbbb::30");
        let macs = "/latest/meta-data/network/interfaces/macs/";
        assert_eq!(srv.requests(macs), 1);
        assert_eq!(srv.requests(&format!("{macs}0e:00:00:00:00:03/ipv6s")), 0);

        // Without interfaces in the metadata (an older IMDS): the top-level values stay.
        let srv = ImdsServer::happy();
        let (i, _) = extras_of(
            &srv,
            Extras {
                interfaces: true,
                ..Extras::default()
            },
        );
        assert_eq!(i.local_ipv4.as_deref(), Some("10.1.2.3"));
        assert_eq!(i.local_ipv6, None);

        // Nothing asked for, nothing fetched.
        let srv = ImdsServer::start(ImdsServer::multi_nic_tree(), Knobs::default());
        let (i, _) = extras_of(&srv, Extras::default());
        assert_eq!(i.local_ipv4.as_deref(), Some("10.1.2.3"), "top-level");
        assert_eq!(srv.requests(macs), 0);

        // A MAC that would walk the request path is refused.
        let mut t = ImdsServer::multi_nic_tree();
        t.insert(
            "meta-data/network/interfaces/macs/".into(),
            b"../../user-data/\n".to_vec(),
        );
        let srv = ImdsServer::start(t, Knobs::default());
        let err = run(async {
            let (mut md, s) = connect_and_fetch(&srv.config(), None).await.expect("fetch");
            let want = Extras {
                interfaces: true,
                ..Extras::default()
            };
            fetch_extras(&s, &want, &mut md.instance).await
        })
        .expect_err("bad mac");
        assert!(err.to_string().contains("unexpected entry"), "{err}");
    }

    #[test]
    fn what_the_configuration_uses_is_fetched_inside_the_one_budget() {
        let srv = ImdsServer::start(
            ImdsServer::default_tree(),
            Knobs {
                hang_path: Some("/latest/meta-data/tags/instance".into()),
                ..Knobs::default()
            },
        );
        let c = ImdsConfig {
            budget: Duration::from_millis(600),
            request_timeout: Duration::from_secs(5),
            ..srv.config()
        };
        let t = StdInstant::now();
        let err = run(async {
            let (mut md, s) = connect_and_fetch(&c, None).await.expect("base metadata");
            let want = Extras {
                tags: ["role".to_string()].into(),
                interfaces: true,
            };
            fetch_extras(&s, &want, &mut md.instance).await
        })
        .expect_err("out of time");
        let took = t.elapsed();
        assert!(matches!(err, ImdsError::BudgetExceeded { .. }), "{err}");
        assert!(
            took < Duration::from_secs(2),
            "the base budget, not 5 s: {took:?}"
        );
    }

    #[test]
    fn tags_one_request_for_the_list_and_one_per_used_tag() {
        let mut t = ImdsServer::default_tree();
        t.insert(
            "meta-data/tags/instance".into(),
            b"Name\nrole\nteam".to_vec(),
        );
        t.insert("meta-data/tags/instance/Name".into(), b"web 1".to_vec());
        t.insert("meta-data/tags/instance/role".into(), b"web".to_vec());
        t.insert("meta-data/tags/instance/team".into(), b"infra".to_vec());
        let srv = ImdsServer::start(t, Knobs::default());
        let want = Extras {
            tags: ["role".to_string(), "nope".to_string()].into(),
            ..Extras::default()
        };
        let (i, warnings) = extras_of(&srv, want);
        assert_eq!(i.tags, BTreeMap::from([("role".into(), "web".into())]));
        assert_eq!(i.vars()["tags.role"], "web");
        assert_eq!(srv.requests("/latest/meta-data/tags/instance"), 1);
        assert_eq!(srv.requests("/latest/meta-data/tags/instance/role"), 1);
        assert_eq!(srv.requests("/latest/meta-data/tags/instance/Name"), 0);
        assert_eq!(srv.requests("/latest/meta-data/tags/instance/nope"), 0);
        assert!(
            warnings.len() == 1
                && warnings[0].contains("`nope`")
                && warnings[0].contains("no such tag"),
            "{warnings:?}"
        );

        // Tags not enabled in the instance's metadata options: 404, said once.
        let srv = ImdsServer::happy();
        let want = Extras {
            tags: ["role".to_string()].into(),
            ..Extras::default()
        };
        let (i, warnings) = extras_of(&srv, want);
        assert!(i.tags.is_empty());
        assert!(warnings[0].contains("tags are off"), "{warnings:?}");
    }
}
