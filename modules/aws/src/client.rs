//! One signed request, one attempt: credentials, SigV4, send, read. Whatever
//! fails comes back as a [`Failure`] that says whether to retry; retrying is
//! the [`crate::retry::Retrier`]'s job alone.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use stoke_api::Root;

use crate::credentials::{Chain, StaticCredentials};
use crate::endpoint::Resolved;
use crate::env::Env;
use crate::retry::{Class, Failure};
use crate::sigv4;
use stoke_imds::chain as error_chain;

/// Connecting to the service (or the configured endpoint) takes no longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and as whom to talk to one AWS service.
pub struct Service {
    pub endpoint: Resolved,
    /// The signing name (`route53`, `autoscaling`).
    pub name: &'static str,
    /// `stoke-<module>/<version>`.
    pub user_agent: String,
    /// From the module's config; the chain's first source when set.
    pub credentials: Option<StaticCredentials>,
    /// The instance's root, for the credentials file.
    pub root: Root,
    /// The metadata endpoint the boot found answering (instance-profile credentials ask it).
    pub imds_endpoint: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    endpoint: Resolved,
    service: &'static str,
    credentials: Chain,
}

impl Client {
    /// Builds the HTTP client (reading the CA store for https costs a few ms:
    /// call it only when there is work). `Err` is a configuration error.
    pub fn new(svc: Service, env: Env) -> Result<Client, String> {
        // As with the SDK before: no proxy from the environment; a proxy
        // is configured as the endpoint URL.
        let mut b = stoke_api::http::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(svc.user_agent);
        if !svc.endpoint.https {
            b = b.tls_certs_only([]);
        }
        let http = b
            .build()
            .map_err(|e| format!("building the HTTP client: {}", error_chain(&e)))?;
        Ok(Client {
            http,
            endpoint: svc.endpoint,
            service: svc.name,
            credentials: Chain::new(svc.credentials, env, svc.root).with_imds(svc.imds_endpoint),
        })
    }

    pub fn endpoint(&self) -> &Resolved {
        &self.endpoint
    }

    /// One signed request to `<endpoint prefix><path>?<query>` (`path` starts
    /// with `/` and is already URI-encoded): the body of a 2xx answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> Result<String, Failure> {
        let creds = self.credentials.get().await.map_err(|e| Failure {
            class: if e.transient {
                Class::Transient
            } else {
                Class::Permanent
            },
            code: "credentials".into(),
            message: e.message,
            status: None,
        })?;
        let ep = &self.endpoint;
        let path = format!("{}{path}", ep.prefix);
        let qs = sigv4::query_string(query);
        let url = format!(
            "{}://{}{path}{}{qs}",
            if ep.https { "https" } else { "http" },
            ep.host,
            if qs.is_empty() { "" } else { "?" }
        );
        let mut headers = vec![("host", ep.host.as_str())];
        if let Some((content_type, _)) = body {
            headers.push(("content-type", content_type));
        }
        let payload = body.map_or("", |(_, b)| b);
        let signed = sigv4::sign(
            &sigv4::Request {
                method: method.as_str(),
                path: &path,
                query,
                headers: &headers,
                body: payload.as_bytes(),
            },
            &creds,
            &ep.signing_region,
            self.service,
            &crate::time::amz_date(SystemTime::now()),
        );
        let mut req = self.http.request(method, &url);
        for (k, v) in headers
            .iter()
            .copied()
            .chain(signed.iter().map(|(k, v)| (*k, v.as_str())))
        {
            req = req.header(k, v);
        }
        if body.is_some() {
            req = req.body(payload.to_string());
        }
        let resp = req.send().await.map_err(|e| send_failure(&e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| send_failure(&e))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(Failure::from_response(status, &text))
        }
    }
}

/// A request that got no (complete) answer.
fn send_failure(e: &reqwest::Error) -> Failure {
    let detail = error_chain(e);
    if e.is_timeout() {
        Failure::transient("timeout", detail)
    } else if e.is_builder() {
        // Not sent: the request could not be built (a bad endpoint, say).
        Failure::permanent("request", detail)
    } else {
        Failure::transient("dispatch", detail)
    }
}

/// An answer with a success status that could not be read: a broken
/// connection or proxy more likely than a wrong request, so retried.
pub fn unreadable(what: &str, why: String) -> Failure {
    Failure::transient("unreadable answer", format!("{what}: {why}"))
}
