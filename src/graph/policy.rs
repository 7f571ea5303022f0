//! Per-stage run policy that is plain data: [`RetryPolicy`] and its [`Backoff`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        #[serde(with = "crate::time::millis")]
        delay: Duration,
    },
    /// `initial`, then multiplied by `factor` after every retry, never above `max`.
    Exponential {
        /// The delay before the first retry.
        #[serde(with = "crate::time::millis")]
        initial: Duration,
        /// The multiplier (2 doubles the delay each time).
        factor: u32,
        /// The cap.
        #[serde(with = "crate::time::millis")]
        max: Duration,
    },
}

impl Backoff {
    /// The delay before attempt `next` (2 for the first retry), before jitter.
    #[must_use]
    pub fn delay(&self, next: u32) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => {
                let exp = next.saturating_sub(2);
                let mult = factor.checked_pow(exp).unwrap_or(u32::MAX);
                initial.checked_mul(mult).unwrap_or(max).min(max)
            }
        }
    }
}

/// How often a stage is tried and how long to wait in between.
///
/// Whether a particular failure is worth retrying is decided by the pipeline stage's
/// predicate ([`Stage::retry_if`](crate::pipeline::Stage::retry_if)); by default every
/// failure and every attempt timeout is. A stage is never retried after it was cancelled.
///
/// ```
/// use std::time::Duration;
/// use tollgate::graph::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::attempts(4)
///     .backoff(Backoff::Exponential {
///         initial: Duration::from_secs(1),
///         factor: 2,
///         max: Duration::from_secs(5),
///     })
///     .jitter(0);
/// assert_eq!(policy.backoff.delay(2), Duration::from_secs(1));
/// assert_eq!(policy.backoff.delay(3), Duration::from_secs(2));
/// assert_eq!(policy.backoff.delay(5), Duration::from_secs(5)); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// How many attempts in all (1 = no retry). Zero is rejected when the graph is built.
    pub max_attempts: u32,
    /// The delay between attempts. A stage waiting out its backoff gives its worker (and its
    /// group slot) back, and queues for one again when the delay is over, as a retried job
    /// does in GitLab or GitHub Actions.
    pub backoff: Backoff,
    /// The percentage of each delay that is randomised, 0 (none) to 100: a delay `d` becomes
    /// a value in `[d × (100 − jitter) / 100, d]` (rounded down to whole milliseconds, the
    /// clock's unit), drawn from the engine's seeded source so runs are reproducible.
    #[serde(default)]
    pub jitter_percent: u8,
}

impl RetryPolicy {
    /// `max_attempts` attempts, one second apart, no jitter.
    #[must_use]
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed {
                delay: Duration::from_secs(1),
            },
            jitter_percent: 0,
        }
    }

    /// Sets the backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the jitter percentage, capped at 100.
    #[must_use]
    pub fn jitter(mut self, percent: u8) -> Self {
        self.jitter_percent = percent.min(100);
        self
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::attempts(1)
    }
}
