//! Retrying transient failures: exponential backoff with jitter and a cap, abandoned at shutdown.
//!
//! Jitter keeps many workers that failed together (a broker restart) from retrying in lockstep;
//! the cap keeps recovery quick once the dependency is back.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Delays between attempts: doubling from `initial` up to `max`, each drawn uniformly from the
/// upper half of the current step so that the delay never collapses to zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            step: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.max);
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=step - half)
    }

    /// Starts again from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `shutdown` is cancelled (then `Ok(None)`).
/// Every transient failure is logged with `what` and the delay before the next try.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut backoff: Backoff,
    is_retryable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            outcome = attempt() => outcome,
        };
        match outcome {
            Ok(value) => return Ok(Some(value)),
            Err(error) if is_retryable(&error) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %crate::errors::chain(&error), retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("{0}")]
    struct Failure(&'static str);

    #[test]
    fn delays_grow_stay_capped_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay <= Duration::from_millis(800), "{delay:?}");
        }
        let capped = backoff.next_delay();
        assert!(capped >= Duration::from_millis(400), "{capped:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let token = CancellationToken::new();
        let mut calls = 0;
        let result: Result<Option<u32>, Failure> = retry(
            "test",
            &token,
            Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            |e: &Failure| e.0 == "transient",
            || {
                calls += 1;
                let outcome = if calls < 3 {
                    Err(Failure("transient"))
                } else {
                    Ok(calls)
                };
                async move { outcome }
            },
        )
        .await;
        assert_eq!(result, Ok(Some(3)));
    }

    #[tokio::test]
    async fn permanent_errors_return_at_once() {
        let token = CancellationToken::new();
        let result: Result<Option<()>, Failure> = retry(
            "test",
            &token,
            Backoff::default(),
            |_: &Failure| false,
            || async { Err(Failure("permanent")) },
        )
        .await;
        assert_eq!(result, Err(Failure("permanent")));
    }

    #[tokio::test]
    async fn shutdown_abandons_the_retry() {
        let token = CancellationToken::new();
        token.cancel();
        let result: Result<Option<()>, Failure> = retry(
            "test",
            &token,
            Backoff::default(),
            |_: &Failure| true,
            || async { Err(Failure("transient")) },
        )
        .await;
        assert_eq!(result, Ok(None));
    }
}
