//! The Route53 requests the module makes, each retried inside the run's budget.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_route53::Client;
use aws_sdk_route53::config::{Credentials, Region};
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};

use crate::config::{RecordSet, StaticCredentials, bare_zone_id, normalize_zone};
use crate::retry::{ATTEMPT_TIMEOUT, Class, Failure, GaveUp, Retrier};

/// Connecting to Route53 (or the configured endpoint) takes no longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and as whom to talk to Route53.
pub struct Endpoint<'a> {
    pub region: String,
    pub endpoint_url: Option<&'a str>,
    pub credentials: Option<StaticCredentials>,
}

/// Builds the client. This loads the AWS configuration (a few ms): call it only
/// when there is work to do. The SDK's own retries are off: [`Retrier`] is the
/// only retry loop, so the budget is the whole truth about time spent.
pub async fn client(ep: Endpoint<'_>) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(ep.region))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(url) = ep.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(c) = ep.credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            c.session_token,
            None,
            "stoke-config",
        ));
    }
    Client::new(&loader.load().await)
}

/// Reduces an SDK error to a [`Failure`].
fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: SdkError<E, aws_sdk_route53::config::http::HttpResponse>,
) -> Failure {
    let detail = aws_sdk_route53::error::DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(se) => Failure::from_response(
            se.raw().status().as_u16(),
            se.err().code(),
            se.err().message(),
            se.raw().body().bytes().unwrap_or_default(),
        ),
        SdkError::ResponseError(re) => {
            let status = re.raw().status().as_u16();
            let mut f = Failure::from_response(
                status,
                None,
                None,
                re.raw().body().bytes().unwrap_or_default(),
            );
            // An unreadable answer to a successful status is a broken
            // connection or proxy more likely than a wrong request.
            if status < 400 {
                f.class = Class::Transient;
                f.message = detail;
            }
            f
        }
        SdkError::TimeoutError(_) => Failure::transient("timeout", detail),
        // Credentials are resolved just before sending, so a chain that found
        // none shows up as a dispatch failure. At boot the instance profile
        // may appear a little later: retried within the budget, and named.
        SdkError::DispatchFailure(_) if detail.contains("credentials") => {
            Failure::transient("credentials", detail)
        }
        SdkError::DispatchFailure(d) if d.is_user() => Failure::permanent("request", detail),
        SdkError::DispatchFailure(_) => Failure::transient("dispatch", detail),
        // Not sent: the request could not be built (e.g. no region).
        _ => Failure::permanent("request", detail),
    }
}

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
    let out = retrier
        .run(|| async {
            client
                .list_hosted_zones_by_name()
                .dns_name(name.clone())
                .max_items(20)
                .send()
                .await
                .map_err(failure)
        })
        .await?;
    let matches: Vec<_> = out
        .hosted_zones()
        .iter()
        .filter(|z| normalize_zone(z.name()) == name)
        .filter(|z| match private {
            Some(p) => z.config().is_some_and(|c| c.private_zone()) == p,
            None => true,
        })
        .collect();
    match matches.as_slice() {
        [z] => Ok(Zone {
            id: bare_zone_id(z.id()).to_string(),
            name: normalize_zone(z.name()),
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
                    .map(|z| bare_zone_id(z.id()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))),
    }
}

/// The name of zone `id` (GetHostedZone).
pub async fn zone_name(client: &Client, retrier: &mut Retrier, id: &str) -> Result<String, GaveUp> {
    let out = retrier
        .run(|| async {
            client
                .get_hosted_zone()
                .id(id)
                .send()
                .await
                .map_err(failure)
        })
        .await?;
    out.hosted_zone()
        .map(|z| normalize_zone(z.name()))
        .ok_or_else(|| {
            GaveUp::Rejected(Failure::permanent(
                "NoSuchHostedZone",
                format!("GetHostedZone {id} answered without a zone"),
            ))
        })
}

/// A submitted change.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeInfo {
    /// Without the `/change/` prefix.
    pub id: String,
    pub insync: bool,
}

fn change_info(info: Option<&aws_sdk_route53::types::ChangeInfo>) -> ChangeInfo {
    match info {
        Some(c) => ChangeInfo {
            id: c.id().trim_start_matches("/change/").to_string(),
            insync: *c.status() == ChangeStatus::Insync,
        },
        None => ChangeInfo {
            id: String::new(),
            insync: false,
        },
    }
}

fn to_sdk(set: &RecordSet) -> Result<ResourceRecordSet, Failure> {
    let build =
        |e: aws_sdk_route53::error::BuildError| Failure::permanent("request", e.to_string());
    let records = set
        .values
        .iter()
        .map(|v| ResourceRecord::builder().value(v).build().map_err(build))
        .collect::<Result<Vec<_>, _>>()?;
    ResourceRecordSet::builder()
        .name(&set.name)
        .r#type(RrType::from(set.kind.as_str()))
        .ttl(set.ttl)
        .set_resource_records(Some(records))
        .build()
        .map_err(build)
}

/// One ChangeResourceRecordSets request with `action` on every set (one batch:
/// Route53 applies all or none).
pub async fn change(
    client: &Client,
    retrier: &mut Retrier,
    zone_id: &str,
    action: ChangeAction,
    sets: &[RecordSet],
) -> Result<ChangeInfo, GaveUp> {
    let build = |e: aws_sdk_route53::error::BuildError| {
        GaveUp::Rejected(Failure::permanent("request", e.to_string()))
    };
    let changes = sets
        .iter()
        .map(|s| {
            let rrs = to_sdk(s).map_err(GaveUp::Rejected)?;
            Change::builder()
                .action(action.clone())
                .resource_record_set(rrs)
                .build()
                .map_err(build)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = ChangeBatch::builder()
        .comment("stoke route53")
        .set_changes(Some(changes))
        .build()
        .map_err(build)?;
    let out = retrier
        .run(|| async {
            client
                .change_resource_record_sets()
                .hosted_zone_id(zone_id)
                .change_batch(batch.clone())
                .send()
                .await
                .map_err(failure)
        })
        .await?;
    Ok(change_info(out.change_info()))
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
                client
                    .get_change()
                    .id(change_id)
                    .send()
                    .await
                    .map_err(failure)
            })
            .await;
        match out {
            Ok(o) if change_info(o.change_info()).insync => return Ok(true),
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
    let out = retrier
        .run(|| async {
            client
                .list_resource_record_sets()
                .hosted_zone_id(zone_id)
                .start_record_name(name)
                .start_record_type(RrType::from(kind))
                .max_items(1)
                .send()
                .await
                .map_err(failure)
        })
        .await?;
    Ok(out
        .resource_record_sets()
        .iter()
        .find(|s| {
            // Weighted/latency sets (with an identifier) are never ours.
            normalize_zone(s.name()) == normalize_zone(name)
                && s.r#type().as_str() == kind
                && s.set_identifier().is_none()
        })
        .map(|s| RecordSet {
            name: normalize_zone(s.name()),
            kind: kind.to_string(),
            ttl: s.ttl().unwrap_or_default(),
            values: s
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect(),
        }))
}
