//! One signed Route53 request, one attempt, through the shared AWS client
//! (`stoke-aws`): Route53's REST paths under its API version.

use reqwest::Method;
use stoke_aws::{Access, Env, Failure};

use crate::endpoint;

const API_VERSION: &str = "2013-04-01";
const SERVICE: &str = "route53";

pub struct Client(stoke_aws::Client);

impl Client {
    /// Builds the client for `access` signing for `region` (the module's: config, else the
    /// instance's, else us-east-1): call it only when there is work. `Err` is a configuration
    /// error.
    pub fn new(access: &Access, region: &str, ctx: &stoke_api::Context) -> Result<Client, String> {
        let endpoint = endpoint::resolve(access.endpoint_url, region, &Env::from_vars(&ctx.env))?;
        let user_agent = concat!("stoke-route53/", env!("CARGO_PKG_VERSION")).into();
        access
            .client(SERVICE, endpoint, user_agent, ctx)
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
