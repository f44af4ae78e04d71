//! The environment variables the AWS tools agree on, read once when the client
//! is built. Passed around as a value so tests give their own instead of
//! changing the process environment (racy across test threads).

use std::collections::BTreeMap;

/// The variables this client reads.
const NAMES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "HOME",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ROUTE_53",
    "AWS_ENDPOINT_URL_AUTO_SCALING",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
];

#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The variables this client reads, from an environment the engine read once
    /// (`Context::env`).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Env {
        Env(NAMES
            .iter()
            .filter_map(|n| Some((n.to_string(), vars.get(*n)?.clone())))
            .collect())
    }

    /// Exactly these variables (tests give their own environment this way).
    pub fn of(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// The value, if set and not blank (an empty variable counts as unset,
    /// as it does for the AWS CLI and SDKs).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}
