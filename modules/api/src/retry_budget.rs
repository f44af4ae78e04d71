//! One time budget shared by every attempt of a retried operation (the IMDS client, the AWS
//! client): each attempt's timeout is cut to what is left, and a pause before the next attempt
//! is taken only when the attempt after it still fits. Tokio's clock, so tests can pause time.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct RetryBudget {
    start: Instant,
    deadline: Instant,
}

impl RetryBudget {
    pub fn new(budget: Duration) -> Self {
        let start = Instant::now();
        RetryBudget {
            start,
            deadline: start + budget,
        }
    }

    /// A budget that began at `start` (several attempts racing under one budget).
    pub fn starting_at(start: Instant, budget: Duration) -> Self {
        RetryBudget {
            start,
            deadline: start + budget,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The next attempt's timeout: `per_attempt`, cut to what is left; None when nothing is.
    pub fn attempt_timeout(&self, per_attempt: Duration) -> Option<Duration> {
        let left = self.remaining();
        (!left.is_zero()).then(|| left.min(per_attempt))
    }

    /// Sleeps `delay` before another attempt; false, at once, when the delay would use up
    /// what is left (no time for the attempt after it).
    pub async fn pause(&self, delay: Duration) -> bool {
        if delay >= self.remaining() {
            return false;
        }
        tokio::time::sleep(delay).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn attempts_are_cut_to_the_budget_and_a_pause_that_leaves_nothing_is_not_taken() {
        let b = RetryBudget::new(Duration::from_secs(3));
        assert_eq!(
            b.attempt_timeout(Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        assert!(b.pause(Duration::from_millis(2500)).await);
        assert_eq!(
            b.attempt_timeout(Duration::from_secs(1)),
            Some(Duration::from_millis(500))
        );
        assert!(
            !b.pause(Duration::from_millis(500)).await,
            "nothing left after it"
        );
        assert_eq!(
            b.elapsed(),
            Duration::from_millis(2500),
            "a refused pause does not sleep"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.attempt_timeout(Duration::from_secs(1)), None);
    }
}
