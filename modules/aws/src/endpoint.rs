//! Which URL to send a service's requests to and which region signs them.

use crate::env::Env;

#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The `host` header as sent: with the port when it is not the default.
    pub host: String,
    /// The endpoint's path, if any (a proxy's), without the trailing slash.
    pub prefix: String,
    pub signing_region: String,
    pub https: bool,
}

/// The URL to send to and the region to sign for: `configured` (the module's
/// `endpoint_url`), else `service_var` (e.g. `AWS_ENDPOINT_URL_ROUTE_53`), else
/// `AWS_ENDPOINT_URL` — each signed for `region` —, else `default` (the
/// service's own endpoint for the region, and the region that signs for it).
pub fn resolve(
    configured: Option<&str>,
    service_var: &str,
    region: &str,
    default: (&str, &str),
    env: &Env,
) -> Result<Resolved, String> {
    let from_env = if env.is_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        None
    } else {
        env.get(service_var).or_else(|| env.get("AWS_ENDPOINT_URL"))
    };
    let (url, signing_region) = match configured.filter(|u| !u.trim().is_empty()).or(from_env) {
        Some(u) => (u.trim().to_string(), region.to_string()),
        None => (default.0.to_string(), default.1.to_string()),
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("endpoint {url:?}: {e}"))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        s => return Err(format!("endpoint {url:?}: scheme {s} is not http or https")),
    };
    let Some(host) = parsed.host_str() else {
        return Err(format!("endpoint {url:?} has no host"));
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "endpoint {url:?}: a query or fragment cannot be kept"
        ));
    }
    // `port()` is None for the scheme's default port: the host header then has none.
    let host = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(Resolved {
        prefix: parsed.path().trim_end_matches('/').to_string(),
        host,
        signing_region,
        https,
    })
}
