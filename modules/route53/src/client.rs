//! One signed Route53 request, one attempt, through the shared AWS client
//! (`stoke-aws`): Route53's REST paths under its API version.

use reqwest::Method;
use stoke_aws::{Env, Failure, Service, StaticCredentials};

use crate::endpoint;

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

pub struct Client(stoke_aws::Client);

impl Client {
    /// Builds the HTTP client (reading the CA store for https costs a few ms:
    /// call it only when there is work). `Err` is a configuration error.
    pub fn new(ep: Endpoint<'_>, env: Env) -> Result<Client, String> {
        let endpoint = endpoint::resolve(ep.endpoint_url, &ep.region, &env)?;
        stoke_aws::Client::new(
            Service {
                endpoint,
                name: SERVICE,
                user_agent: concat!("stoke-route53/", env!("CARGO_PKG_VERSION")).into(),
                credentials: ep.credentials,
                root: ep.root,
                imds_endpoint: ep.imds_endpoint,
            },
            env,
        )
        .map(Client)
    }

    /// `GET /2013-04-01/<segments…>?<query>`: the body of a 2xx answer.
    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<String, Failure> {
        self.0.send(Method::GET, &path(segments), query, None).await
    }

    /// `POST /2013-04-01/<segments…>` with an XML body.
    pub async fn post(&self, segments: &[&str], body: &str) -> Result<String, Failure> {
        self.0
            .send(
                Method::POST,
                &path(segments),
                &[],
                Some(("application/xml", body)),
            )
            .await
    }
}

fn path(segments: &[&str]) -> String {
    let mut path = format!("/{API_VERSION}");
    for s in segments {
        path.push('/');
        path.push_str(&stoke_aws::sigv4::uri_encode(s, true));
    }
    path
}

pub use stoke_aws::unreadable;
