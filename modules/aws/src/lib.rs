//! stoke's AWS client, shared by the modules that call AWS (route53, lifecycle):
//! a hand-signed SigV4 request instead of the SDK (docs/dependencies.md: a
//! fraction of the build time and binary size).
//!
//! Files: `access` the keys a module's section has for AWS; `client` one signed request; `sigv4` the signature; `credentials`
//! where they come from (`env`, `profile`, `imds`); `endpoint` the URL and
//! signing region; `retry` the budget, backoff and error classes; `xml` error
//! answers; `time` UTC dates.

#![forbid(unsafe_code)]

mod access;
pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod env;
mod imds;

/// The parser of the instance profile's credentials (an IMDS JSON leaf), for the fuzz targets
/// (`fuzz/`): any body gives credentials or an error, never a panic.
#[cfg(feature = "fuzz")]
pub fn fuzz_imds_credentials(body: &str) -> bool {
    imds::parse(body).is_ok()
}
mod profile;
pub mod retry;
pub mod sigv4;
pub mod time;
pub mod xml;

pub use access::Access;
pub use client::{Client, Service, unreadable};
pub use credentials::StaticCredentials;
pub use env::Env;
pub use retry::{Class, Failure, GaveUp, Retrier};
