//! The two Auto Scaling Query-API requests the module makes, each retried
//! inside the caller's budget.

use reqwest::Method;
use stoke_aws::{Env, Failure, GaveUp, Retrier};

use crate::config::{HookResult, Section, Target};

const API_VERSION: &str = "2011-01-01";
const SERVICE: &str = "autoscaling";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Builds the client: call it only when there is work to do. `Err` is a
/// configuration error (an unusable endpoint URL).
pub fn client(
    sec: &Section,
    t: &Target,
    ctx: &stoke_api::Context,
) -> Result<stoke_aws::Client, String> {
    let access = sec.access();
    let env = Env::from_vars(&ctx.env);
    let default = default_endpoint(&t.region);
    let endpoint = stoke_aws::endpoint::resolve(
        access.endpoint_url,
        "AWS_ENDPOINT_URL_AUTO_SCALING",
        &t.region,
        (&default, &t.region),
        &env,
    )?;
    let user_agent = concat!("stoke-lifecycle/", env!("CARGO_PKG_VERSION")).into();
    access.client(SERVICE, endpoint, user_agent, ctx)
}

/// The regional endpoint (China's regions are under `amazonaws.com.cn`).
fn default_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://autoscaling.{region}.{domain}")
}

/// `Action=...&Version=...&<params>`, form-encoded.
pub fn form(action: &str, params: &[(&str, &str)]) -> String {
    let mut all = vec![("Action", action), ("Version", API_VERSION)];
    all.extend_from_slice(params);
    stoke_aws::sigv4::query_string(&all)
}

async fn call(
    client: &stoke_aws::Client,
    retrier: &mut Retrier,
    action: &str,
    params: &[(&str, &str)],
) -> Result<(), GaveUp> {
    let body = form(action, params);
    retrier
        .run(|| async {
            client
                .send(Method::POST, "/", &[], Some((FORM, &body)))
                .await
                .map(|_| ())
        })
        .await
}

pub async fn complete(
    client: &stoke_aws::Client,
    retrier: &mut Retrier,
    t: &Target,
    result: HookResult,
) -> Result<(), GaveUp> {
    call(
        client,
        retrier,
        "CompleteLifecycleAction",
        &[
            ("AutoScalingGroupName", &t.group_name),
            ("InstanceId", &t.instance_id),
            ("LifecycleActionResult", result.as_str()),
            ("LifecycleHookName", &t.hook_name),
        ],
    )
    .await
}

pub async fn heartbeat(
    client: &stoke_aws::Client,
    retrier: &mut Retrier,
    t: &Target,
) -> Result<(), GaveUp> {
    call(
        client,
        retrier,
        "RecordLifecycleActionHeartbeat",
        &[
            ("AutoScalingGroupName", &t.group_name),
            ("InstanceId", &t.instance_id),
            ("LifecycleHookName", &t.hook_name),
        ],
    )
    .await
}

/// What to do about a permanent failure, for the person reading the status.
pub fn hint(f: &Failure) -> &'static str {
    match f.code.as_str() {
        "ValidationError" => {
            "Auto Scaling has no such pending launch action: check `group_name` and `hook_name`, \
             and that the hook had not timed out or been answered already"
        }
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            "grant the instance role autoscaling:CompleteLifecycleAction (and \
             autoscaling:RecordLifecycleActionHeartbeat) on this group (docs/ready.md)"
        }
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "credentials" => {
            "the AWS credentials were refused or missing: check the instance profile, or \
             `access_key_id`/`secret_access_key`"
        }
        _ => "see the AWS message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_is_encoded() {
        assert_eq!(
            form("CompleteLifecycleAction", &[("LifecycleHookName", "a b/c")]),
            "Action=CompleteLifecycleAction&Version=2011-01-01&LifecycleHookName=a%20b%2Fc"
        );
        assert_eq!(
            default_endpoint("eu-west-1"),
            "https://autoscaling.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            default_endpoint("cn-north-1"),
            "https://autoscaling.cn-north-1.amazonaws.com.cn"
        );
    }
}
