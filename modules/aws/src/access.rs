//! The keys every module that calls AWS has in its section — where to send, as whom, for how
//! long — checked and turned into a client and a retrier in one place. They stay flat in each
//! section (as users write them): serde's `flatten` does not combine with the
//! `deny_unknown_fields` that config checking relies on, so a section lends them as an [`Access`].

use std::time::Duration;

use crate::credentials::StaticCredentials;
use crate::endpoint::Resolved;
use crate::{Client, Env, Retrier, Service};

/// A section's AWS keys, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// Another endpoint (tests, proxies); else the service's environment variable, else the
    /// region's endpoint.
    pub endpoint_url: Option<&'a str>,
    /// Static credentials; without them, the standard chain (instance profile through IMDS).
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
    pub session_token: Option<&'a str>,
    /// Total time for the module's requests, retries included.
    pub budget_seconds: u64,
    /// Upper bound of one backoff sleep (full jitter).
    pub max_backoff_seconds: f64,
}

impl Access<'_> {
    /// Everything about these keys that can be checked without a request.
    pub fn check(&self) -> Result<(), String> {
        if self.budget_seconds == 0 {
            return Err("`budget_seconds` must be > 0".into());
        }
        if !(self.max_backoff_seconds.is_finite() && self.max_backoff_seconds > 0.0) {
            return Err("`max_backoff_seconds` must be a positive number".into());
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err("`access_key_id` and `secret_access_key` go together".into());
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err("`session_token` needs `access_key_id` and `secret_access_key`".into());
        }
        Ok(())
    }

    pub fn static_credentials(&self) -> Option<StaticCredentials> {
        Some(StaticCredentials {
            access_key_id: self.access_key_id?.to_string(),
            secret_access_key: self.secret_access_key?.to_string(),
            session_token: self.session_token.map(str::to_string),
        })
    }

    /// A retrier for `budget` (the section's `budget_seconds`, or another of its budgets).
    pub fn retrier(&self, budget: Duration) -> Retrier {
        Retrier::new(budget, Duration::from_secs_f64(self.max_backoff_seconds))
    }

    /// The client for `service` (its signing name) at `endpoint` (resolved from
    /// [`Access::endpoint_url`]), as `stoke-<module>/<version>`: call it only when there is work
    /// (reading the CA store for https costs a few ms). `Err` is a configuration error.
    pub fn client(
        &self,
        service: &'static str,
        endpoint: Resolved,
        user_agent: String,
        ctx: &stoke_api::Context,
    ) -> Result<Client, String> {
        Client::new(
            Service {
                endpoint,
                name: service,
                user_agent,
                credentials: self.static_credentials(),
                root: ctx.root.clone(),
                // The endpoint the datasource raced for and found (IPv4 or IPv6): the same one.
                imds_endpoint: ctx.instance.imds_endpoint.clone(),
            },
            Env::from_vars(&ctx.env),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Access<'static> {
        Access {
            endpoint_url: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            budget_seconds: 60,
            max_backoff_seconds: 5.0,
        }
    }

    #[test]
    fn every_rule_is_checked_and_credentials_come_in_pairs() {
        assert_eq!(keys().check(), Ok(()));
        assert!(keys().static_credentials().is_none());
        let bad = [
            Access {
                budget_seconds: 0,
                ..keys()
            },
            Access {
                max_backoff_seconds: f64::NAN,
                ..keys()
            },
            Access {
                max_backoff_seconds: 0.0,
                ..keys()
            },
            Access {
                access_key_id: Some("AKID"),
                ..keys()
            },
            Access {
                secret_access_key: Some("s"),
                ..keys()
            },
            Access {
                session_token: Some("t"),
                ..keys()
            },
        ];
        for a in bad {
            assert!(a.check().is_err(), "{a:?} passed");
        }
        let full = Access {
            access_key_id: Some("AKID"),
            secret_access_key: Some("s"),
            session_token: Some("t"),
            ..keys()
        };
        assert_eq!(full.check(), Ok(()));
        let c = full.static_credentials().expect("static credentials");
        assert_eq!(
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.session_token.as_deref()
            ),
            ("AKID", "s", Some("t"))
        );
    }
}
