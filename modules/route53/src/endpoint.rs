//! Which URL to send Route53 requests to and which region signs them.
//! Route53 is global: each partition has one endpoint, signed for one region
//! whatever the instance's region (the SDK's endpoint rules say the same).
//! A configured endpoint (`endpoint_url`, else `AWS_ENDPOINT_URL_ROUTE_53`,
//! else `AWS_ENDPOINT_URL`) is signed for the configured region.

use stoke_aws::Env;
pub use stoke_aws::endpoint::Resolved;

/// `region` is the module's (config, else the instance's, else us-east-1).
pub fn resolve(configured: Option<&str>, region: &str, env: &Env) -> Result<Resolved, String> {
    stoke_aws::endpoint::resolve(
        configured,
        "AWS_ENDPOINT_URL_ROUTE_53",
        region,
        partition_endpoint(region),
        env,
    )
}

/// The partition's endpoint and signing region, from the region's prefix.
fn partition_endpoint(region: &str) -> (&'static str, &'static str) {
    let prefixes: &[(&str, &str, &str)] = &[
        ("cn-", "https://route53.amazonaws.com.cn", "cn-northwest-1"),
        (
            "us-gov-",
            "https://route53.us-gov.amazonaws.com",
            "us-gov-west-1",
        ),
        (
            "us-isob-",
            "https://route53.sc2s.sgov.gov",
            "us-isob-east-1",
        ),
        (
            "us-isof-",
            "https://route53.csp.hci.ic.gov",
            "us-isof-south-1",
        ),
        ("us-iso-", "https://route53.c2s.ic.gov", "us-iso-east-1"),
        (
            "eu-isoe-",
            "https://route53.cloud.adc-e.uk",
            "eu-isoe-west-1",
        ),
        ("eusc-", "https://route53.amazonaws.eu", "eusc-de-east-1"),
    ];
    prefixes
        .iter()
        .find(|(p, _, _)| region.starts_with(p))
        .map_or(
            ("https://route53.amazonaws.com", "us-east-1"),
            |(_, u, r)| (*u, *r),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_overrides() {
        let none = Env::default();
        let r = resolve(None, "eu-west-1", &none).unwrap();
        assert_eq!(
            r,
            Resolved {
                host: "route53.amazonaws.com".into(),
                prefix: String::new(),
                signing_region: "us-east-1".into(),
                https: true,
            }
        );
        let r = resolve(None, "cn-north-1", &none).unwrap();
        assert_eq!(
            (r.host.as_str(), r.signing_region.as_str()),
            ("route53.amazonaws.com.cn", "cn-northwest-1")
        );
        let r = resolve(None, "us-gov-east-1", &none).unwrap();
        assert_eq!(r.signing_region, "us-gov-west-1");

        let r = resolve(Some("http://127.0.0.1:5000/"), "eu-west-1", &none).unwrap();
        assert_eq!(
            (
                r.prefix.as_str(),
                r.host.as_str(),
                r.signing_region.as_str(),
                r.https
            ),
            ("", "127.0.0.1:5000", "eu-west-1", false)
        );
        let r = resolve(Some("https://proxy.internal:443/r53/"), "us-east-1", &none).unwrap();
        assert_eq!(
            (r.prefix.as_str(), r.host.as_str()),
            ("/r53", "proxy.internal")
        );

        let env = Env::of(&[
            ("AWS_ENDPOINT_URL", "http://generic:1"),
            ("AWS_ENDPOINT_URL_ROUTE_53", "http://route53-only:2"),
        ]);
        assert_eq!(
            resolve(None, "us-east-1", &env).unwrap().host,
            "route53-only:2"
        );
        assert_eq!(
            resolve(Some("http://cfg:3"), "us-east-1", &env)
                .unwrap()
                .host,
            "cfg:3"
        );
        let env = Env::of(&[("AWS_ENDPOINT_URL", "http://generic:1")]);
        assert_eq!(resolve(None, "us-east-1", &env).unwrap().host, "generic:1");
        let env = Env::of(&[
            ("AWS_ENDPOINT_URL", "http://generic:1"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]);
        assert_eq!(
            resolve(None, "us-east-1", &env).unwrap().host,
            "route53.amazonaws.com"
        );

        assert!(
            resolve(Some("ftp://x"), "us-east-1", &none)
                .unwrap_err()
                .contains("scheme")
        );
        assert!(resolve(Some("not a url"), "us-east-1", &none).is_err());
    }
}
