//! One signed Route53 request, one attempt: credentials, SigV4, send, read.
//! Whatever fails comes back as a [`Failure`] that says whether to retry;
//! retrying is the [`crate::retry::Retrier`]'s job alone.

use std::time::{Duration, SystemTime};

use reqwest::Method;

use crate::config::StaticCredentials;
use crate::credentials::Chain;
use crate::endpoint::{self, Resolved};
use crate::env::Env;
use crate::retry::{Class, Failure};
use crate::sigv4;
use stoke_imds::chain as error_chain;

/// Connecting to Route53 (or the configured endpoint) takes no longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const API_VERSION: &str = "2013-04-01";
const SERVICE: &str = "route53";

/// Where and as whom to talk to Route53.
pub struct Endpoint<'a> {
    /// The module's region: config, else the instance's, else us-east-1.
    pub region: String,
    pub endpoint_url: Option<&'a str>,
    pub credentials: Option<StaticCredentials>,
    /// The instance's root, for the credentials file.
    pub root: stoke_api::Root,
    /// The metadata endpoint the boot found answering (instance-profile credentials ask it).
    pub imds_endpoint: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    endpoint: Resolved,
    credentials: Chain,
}

impl Client {
    /// Builds the HTTP client (reading the CA store for https costs a few ms:
    /// call it only when there is work). `Err` is a configuration error.
    pub fn new(ep: Endpoint<'_>, env: Env) -> Result<Client, String> {
        let endpoint = endpoint::resolve(ep.endpoint_url, &ep.region, &env)?;
        let mut b = reqwest::Client::builder()
            // As with the SDK before: no proxy from the environment; a proxy
            // is configured as `endpoint_url`.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("stoke-route53/", env!("CARGO_PKG_VERSION")));
        if !endpoint.https {
            b = b.tls_certs_only([]);
        }
        let http = b
            .build()
            .map_err(|e| format!("building the HTTP client: {}", error_chain(&e)))?;
        Ok(Client {
            http,
            endpoint,
            credentials: Chain::new(ep.credentials, env, ep.root).with_imds(ep.imds_endpoint),
        })
    }

    /// `GET /2013-04-01/<segments…>?<query>`: the body of a 2xx answer.
    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<String, Failure> {
        self.send(Method::GET, segments, query, None).await
    }

    /// `POST /2013-04-01/<segments…>` with an XML body.
    pub async fn post(&self, segments: &[&str], body: &str) -> Result<String, Failure> {
        self.send(Method::POST, segments, &[], Some(body)).await
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&str>,
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
        let mut path = format!("{}/{API_VERSION}", ep.prefix);
        for s in segments {
            path.push('/');
            path.push_str(&sigv4::uri_encode(s, true));
        }
        let qs = sigv4::query_string(query);
        let url = format!(
            "{}://{}{path}{}{qs}",
            if ep.https { "https" } else { "http" },
            ep.host,
            if qs.is_empty() { "" } else { "?" }
        );
        let mut headers = vec![("host", ep.host.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/xml"));
        }
        let signed = sigv4::sign(
            &sigv4::Request {
                method: method.as_str(),
                path: &path,
                query,
                headers: &headers,
                body: body.unwrap_or("").as_bytes(),
            },
            &creds,
            &ep.signing_region,
            SERVICE,
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
        if let Some(b) = body {
            req = req.body(b.to_string());
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
