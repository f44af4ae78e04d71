//! The Route53 requests the module makes, each retried inside the run's budget.

use std::time::Duration;

pub use crate::client::Client;
use crate::client::unreadable;
use crate::config::{RecordSet, bare_zone_id, normalize_zone};
use crate::xml;
pub use crate::xml::Action;
use stoke_aws::{Class, Failure, GaveUp, Retrier};

/// A zone's id and name.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub id: String,
    /// With the trailing dot.
    pub name: String,
}

/// The hosted zone named `name` (ListHostedZonesByName, one request).
pub async fn zone_by_name(
    client: &Client,
    retrier: &mut Retrier,
    name: &str,
    private: Option<bool>,
) -> Result<Zone, GaveUp> {
    let name = normalize_zone(name);
    let zones = retrier
        .run(|| async {
            let body = client
                .get(
                    &["hostedzonesbyname"],
                    &[("dnsname", &name), ("maxitems", "20")],
                )
                .await?;
            xml::hosted_zones(&body).map_err(|e| unreadable("ListHostedZonesByName", e))
        })
        .await?;
    let matches: Vec<_> = zones
        .iter()
        .filter(|z| normalize_zone(&z.name) == name)
        .filter(|z| private.is_none_or(|p| z.private == p))
        .collect();
    match matches.as_slice() {
        [z] => Ok(Zone {
            id: bare_zone_id(&z.id).to_string(),
            name: normalize_zone(&z.name),
        }),
        [] => Err(GaveUp::Rejected(Failure {
            class: Class::Permanent,
            code: "NoSuchHostedZone".into(),
            message: format!(
                "no {}hosted zone named {name} is visible to these credentials",
                match private {
                    Some(true) => "private ",
                    Some(false) => "public ",
                    None => "",
                }
            ),
            status: None,
        })),
        many => Err(GaveUp::Rejected(Failure::permanent(
            "AmbiguousZone",
            format!(
                "{} hosted zones are named {name} ({}): set `hosted_zone_id`, or `private_zone`",
                many.len(),
                many.iter()
                    .map(|z| bare_zone_id(&z.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))),
    }
}

/// The name of zone `id` (GetHostedZone).
pub async fn zone_name(client: &Client, retrier: &mut Retrier, id: &str) -> Result<String, GaveUp> {
    let zone = retrier
        .run(|| async {
            let body = client.get(&["hostedzone", id], &[]).await?;
            xml::hosted_zone(&body).map_err(|e| unreadable("GetHostedZone", e))
        })
        .await?;
    Ok(normalize_zone(&zone.name))
}

/// A submitted change.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeInfo {
    /// Without the `/change/` prefix.
    pub id: String,
    pub insync: bool,
}

fn change_info(c: xml::ChangeStatus) -> ChangeInfo {
    ChangeInfo {
        id: c.id.trim_start_matches("/change/").to_string(),
        insync: c.insync,
    }
}

/// One ChangeResourceRecordSets request with `action` on every set (one batch:
/// Route53 applies all or none).
pub async fn change(
    client: &Client,
    retrier: &mut Retrier,
    zone_id: &str,
    action: Action,
    sets: &[RecordSet],
) -> Result<ChangeInfo, GaveUp> {
    let body = xml::change_batch(action, sets, "stoke route53");
    let info = retrier
        .run(|| async {
            let answer = client
                .post(&["hostedzone", zone_id, "rrset"], &body)
                .await?;
            xml::change_info(&answer).map_err(|e| unreadable("ChangeResourceRecordSets", e))
        })
        .await?;
    Ok(change_info(info))
}

/// Polls GetChange until INSYNC. `Ok(false)` when the budget ran out first
/// (the change is accepted and will still apply).
pub async fn wait_insync(
    client: &Client,
    retrier: &mut Retrier,
    change_id: &str,
) -> Result<bool, GaveUp> {
    // Route53 usually syncs within a minute: poll every 1, 2, 4, 5, 5 ... s.
    let mut interval = Duration::from_secs(1);
    loop {
        if !retrier.pause(interval).await {
            return Ok(false);
        }
        let out = retrier
            .run(|| async {
                let body = client.get(&["change", change_id], &[]).await?;
                xml::change_info(&body).map_err(|e| unreadable("GetChange", e))
            })
            .await;
        match out {
            Ok(c) if c.insync => return Ok(true),
            Ok(_) => {}
            Err(GaveUp::Budget(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        interval = (interval * 2).min(Duration::from_secs(5));
    }
}

/// The record set named `name` of type `kind` as it is now, if any
/// (ListResourceRecordSets starting at it, one item).
pub async fn current(
    client: &Client,
    retrier: &mut Retrier,
    zone_id: &str,
    name: &str,
    kind: &str,
) -> Result<Option<RecordSet>, GaveUp> {
    let sets = retrier
        .run(|| async {
            let body = client
                .get(
                    &["hostedzone", zone_id, "rrset"],
                    &[("name", name), ("type", kind), ("maxitems", "1")],
                )
                .await?;
            xml::record_sets(&body).map_err(|e| unreadable("ListResourceRecordSets", e))
        })
        .await?;
    Ok(sets
        .into_iter()
        .find(|s| {
            // Weighted/latency sets (with an identifier) are never ours.
            normalize_zone(&s.name) == normalize_zone(name)
                && s.kind == kind
                && s.set_identifier.is_none()
        })
        .map(|s| RecordSet {
            name: normalize_zone(&s.name),
            kind: kind.to_string(),
            ttl: s.ttl.unwrap_or_default(),
            values: s.values,
        }))
}
