//! One time budget for all of a run's requests, exponential backoff with full
//! jitter, and the classification of AWS errors into "retry" and "fix this".

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use stoke_api::RetryBudget;

/// First backoff bound; doubles per failed attempt of one operation up to the cap.
const BASE_DELAY: Duration = Duration::from_millis(200);
/// One attempt never waits longer than this (nor past the budget).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Throttling, a change still in progress, a server error, a timeout, no connection.
    Transient,
    /// The request is wrong or not allowed: retrying cannot help.
    Permanent,
}

/// A failed request, reduced to what decides and explains the failure.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub class: Class,
    /// AWS error code (`Throttling`, `NoSuchHostedZone` ...) or a local kind (`timeout`, `dispatch`).
    pub code: String,
    pub message: String,
    pub status: Option<u16>,
}

impl Failure {
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Failure {
            class: Class::Transient,
            code: code.into(),
            message: message.into(),
            status: None,
        }
    }

    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Failure {
            class: Class::Permanent,
            ..Failure::transient(code, message)
        }
    }

    /// From an HTTP error answer: the AWS code and message in its XML body,
    /// else the HTTP status and the start of the body.
    pub fn from_response(status: u16, body: &str) -> Self {
        let (code, message) = crate::xml::error(body).unwrap_or_default();
        let class = classify(status, &code);
        let code = if code.is_empty() {
            format!("HTTP {status}")
        } else {
            code
        };
        Failure {
            class,
            code,
            message: message.unwrap_or_else(|| snippet(body)),
            status: Some(status),
        }
    }
}

/// Retry or not, from the AWS error code (when there is one) and the HTTP status.
pub fn classify(status: u16, code: &str) -> Class {
    const TRANSIENT: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    ];
    if TRANSIENT.contains(&code) || status >= 500 || status == 429 {
        Class::Transient
    } else {
        Class::Permanent
    }
}

fn snippet(body: &str) -> String {
    let t = body.trim();
    if t.is_empty() {
        return "(empty response body)".into();
    }
    let mut s: String = t.chars().take(300).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    s
}

/// Why an operation gave up.
#[derive(Debug)]
pub enum GaveUp {
    /// A permanent error: no retry.
    Rejected(Failure),
    /// The budget ran out while errors were transient; the last one.
    Budget(Failure),
}

/// The budget and the counts of one run (all operations share it).
pub struct Retrier {
    budget: RetryBudget,
    max_delay: Duration,
    /// Requests sent, all operations.
    pub attempts: u32,
    /// Retried failures by code.
    pub retried: BTreeMap<String, u32>,
}

impl Retrier {
    pub fn new(budget: Duration, max_delay: Duration) -> Self {
        Retrier {
            budget: RetryBudget::new(budget),
            max_delay,
            attempts: 0,
            retried: BTreeMap::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.budget.elapsed()
    }

    pub fn remaining(&self) -> Duration {
        self.budget.remaining()
    }

    /// Runs `op` until it succeeds, fails permanently, or the next try would
    /// start past the budget. Each attempt is cut at [`ATTEMPT_TIMEOUT`] or the
    /// budget, whichever is first.
    pub async fn run<T, F, Fut>(&mut self, mut op: F) -> Result<T, GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut failures = 0u32;
        loop {
            let Some(timeout) = self.budget.attempt_timeout(ATTEMPT_TIMEOUT) else {
                return Err(GaveUp::Budget(Failure::transient(
                    "budget",
                    "no time left in the budget for this request",
                )));
            };
            self.attempts += 1;
            let last = match tokio::time::timeout(timeout, op()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(f)) if f.class == Class::Permanent => return Err(GaveUp::Rejected(f)),
                Ok(Err(f)) => f,
                Err(_) => Failure::transient(
                    "timeout",
                    format!("no answer within {:.1} s", timeout.as_secs_f64()),
                ),
            };
            failures += 1;
            let delay = full_jitter(failures, self.max_delay);
            if delay >= self.remaining() {
                return Err(GaveUp::Budget(last));
            }
            tracing::debug!(code = %last.code, delay_ms = delay.as_millis() as u64, "aws: retrying");
            *self.retried.entry(last.code.clone()).or_default() += 1;
            self.budget.pause(delay).await;
        }
    }

    /// Sleeps `d` if that ends within the budget; false (no sleep) otherwise.
    pub async fn pause(&self, d: Duration) -> bool {
        self.budget.pause(d).await
    }
}

/// "Full jitter" (AWS Architecture Blog, Exponential Backoff And Jitter):
/// uniform in `0..min(cap, base·2^(n-1))`. Clients that collided once spread
/// out over the whole window instead of colliding again in lockstep.
pub fn full_jitter(failures: u32, cap: Duration) -> Duration {
    let exp = BASE_DELAY.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let bound = exp.min(cap);
    bound.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_classify() {
        assert_eq!(classify(400, "Throttling"), Class::Transient);
        assert_eq!(classify(400, "PriorRequestNotComplete"), Class::Transient);
        assert_eq!(classify(503, ""), Class::Transient);
        assert_eq!(classify(500, "Whatever"), Class::Transient);
        assert_eq!(classify(400, "InvalidChangeBatch"), Class::Permanent);
        assert_eq!(classify(404, "NoSuchHostedZone"), Class::Permanent);
        assert_eq!(classify(403, ""), Class::Permanent);
    }

    fn error_body(code: &str, message: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>x</RequestId></ErrorResponse>"
        )
    }

    #[test]
    fn error_answers_give_code_message_and_class() {
        let f = Failure::from_response(400, &error_body("Throttling", "Rate exceeded &amp; more"));
        assert_eq!(f.class, Class::Transient);
        assert_eq!(f.code, "Throttling");
        assert_eq!(f.message, "Rate exceeded & more");
        assert_eq!(f.status, Some(400));
        let f = Failure::from_response(400, &error_body("PriorRequestNotComplete", "busy"));
        assert_eq!(f.class, Class::Transient);

        let f = Failure::from_response(
            404,
            &error_body("NoSuchHostedZone", "No hosted zone found with ID: Z9"),
        );
        assert_eq!(
            (f.class, f.code.as_str()),
            (Class::Permanent, "NoSuchHostedZone")
        );
        assert_eq!(f.message, "No hosted zone found with ID: Z9");
        let f = Failure::from_response(403, &error_body("AccessDenied", "not authorized"));
        assert_eq!(
            (f.class, f.code.as_str()),
            (Class::Permanent, "AccessDenied")
        );
        let f = Failure::from_response(403, &error_body("SignatureDoesNotMatch", "no"));
        assert_eq!(f.code, "SignatureDoesNotMatch");
        let f = Failure::from_response(
            400,
            &error_body("InvalidChangeBatch", "[Tried to delete x]"),
        );
        assert_eq!(
            (f.class, f.message.as_str()),
            (Class::Permanent, "[Tried to delete x]")
        );

        // No XML to read: the status decides, the body is shown.
        let f = Failure::from_response(502, "");
        assert_eq!((f.class, f.code.as_str()), (Class::Transient, "HTTP 502"));
        assert_eq!(f.message, "(empty response body)");
        let f = Failure::from_response(400, "<html>bad gateway</html>");
        assert_eq!((f.class, f.code.as_str()), (Class::Permanent, "HTTP 400"));
        assert_eq!(f.message, "<html>bad gateway</html>");
        let f = Failure::from_response(429, "slow down");
        assert_eq!(f.class, Class::Transient);
    }

    #[test]
    fn full_jitter_stays_under_the_growing_bound() {
        let cap = Duration::from_secs(10);
        for n in 1..40 {
            let bound = BASE_DELAY.saturating_mul(1 << (n - 1).min(20)).min(cap);
            for _ in 0..50 {
                assert!(full_jitter(n, cap) <= bound);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_bounds_retries_and_permanent_stops_at_once() {
        let mut r = Retrier::new(Duration::from_secs(5), Duration::from_secs(1));
        let out: Result<(), _> = r
            .run(|| async { Err(Failure::transient("Throttling", "slow down")) })
            .await;
        assert!(matches!(out, Err(GaveUp::Budget(ref f)) if f.code == "Throttling"));
        assert!(r.elapsed() <= Duration::from_secs(5), "{:?}", r.elapsed());
        assert!(r.attempts > 3, "{}", r.attempts);
        assert_eq!(r.retried["Throttling"], r.attempts - 1);

        let mut r = Retrier::new(Duration::from_secs(5), Duration::from_secs(1));
        let out: Result<(), _> = r
            .run(|| async { Err(Failure::permanent("AccessDenied", "no")) })
            .await;
        assert!(matches!(out, Err(GaveUp::Rejected(_))));
        assert_eq!(r.attempts, 1);
    }
}
