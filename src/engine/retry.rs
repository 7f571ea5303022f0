//! The retry decision: whether a failed attempt is tried again, and after what delay (the
//! policy's backoff, shortened by seeded jitter); and the backoff the scheduler waits out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{AttemptFailure, RetryPolicy};
use crate::time::Timestamp;

/// What follows a failed attempt.
pub(super) enum Retry {
    /// Try again after `delay`, once the clock reads `until`.
    After { delay: Duration, until: Timestamp },
    /// No more attempts: the failure is the stage's.
    GiveUp,
    /// Another attempt is allowed, but the stage's time would run out before it: the stage
    /// times out now.
    OutOfTime,
}

/// Decides what follows `failure` of the stage with graph index `stage` at `now`.
///
/// The stage tries again while `policy` allows more attempts, its own time is not up and
/// `wanted` (the stage's retry predicate, asked only when the rest allows a retry) agrees; the
/// delay is the policy's backoff, jittered by `seed`.
#[inline]
pub(super) fn decide(
    policy: RetryPolicy,
    failure: &AttemptFailure,
    wanted: impl FnOnce(&AttemptFailure) -> bool,
    seed: u64,
    stage: usize,
    now: Timestamp,
    stage_deadline: Option<Timestamp>,
) -> Retry {
    let number = failure.attempt;
    let stage_time_up = stage_deadline.is_some_and(|d| now >= d);
    if number >= policy.max_attempts || stage_time_up || !wanted(failure) {
        return Retry::GiveUp;
    }
    let delay = jittered(
        policy.backoff.delay(number + 1),
        policy.jitter_percent,
        seed,
        stage,
        number,
    );
    let until = now.saturating_add(delay);
    if stage_deadline.is_some_and(|d| until >= d) {
        return Retry::OutOfTime;
    }
    Retry::After { delay, until }
}

/// A stage's retry backoff, held by the scheduler: resolves to the stage's slot when it ends.
pub(super) struct Wake {
    pub(super) sleep: BoxFuture<'static, ()>,
    pub(super) slot: usize,
}

impl Future for Wake {
    type Output = usize;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        self.sleep.as_mut().poll(cx).map(|()| self.slot)
    }
}

/// `delay` shortened by up to `percent`%, by a deterministic draw from (seed, stage, attempt),
/// in whole milliseconds: clocks and the serde form of events count milliseconds, so a finer
/// delay would be announced as one value and slept as another.
fn jittered(delay: Duration, percent: u8, seed: u64, stage: usize, attempt: u32) -> Duration {
    if percent == 0 || delay.is_zero() {
        return delay;
    }
    let draw = splitmix64(seed ^ (stage as u64).rotate_left(32) ^ u64::from(attempt));
    // A fraction of the allowed reduction, in parts per million.
    let reduction_ppm = (draw % 1_000_001) * u64::from(percent) / 100;
    let nanos = delay.as_nanos();
    let cut = nanos * u128::from(reduction_ppm) / 1_000_000;
    Duration::from_millis(u64::try_from((nanos - cut) / 1_000_000).unwrap_or(u64::MAX))
}

/// One step of the splitmix64 generator: a fast, well-mixed hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Backoff;

    #[test]
    fn jitter_stays_within_its_share_and_is_reproducible() {
        let d = Duration::from_secs(10);
        for attempt in 1..50 {
            let j = jittered(d, 30, 7, 3, attempt);
            assert!(j <= d && j >= Duration::from_secs(7), "{j:?}");
            assert_eq!(j, jittered(d, 30, 7, 3, attempt));
        }
        assert_eq!(jittered(d, 0, 7, 3, 1), d);
        assert_ne!(jittered(d, 100, 1, 3, 1), jittered(d, 100, 2, 3, 1));
    }

    fn failure(attempt: u32) -> AttemptFailure {
        AttemptFailure {
            attempt,
            reason: "flaky".to_owned(),
            timed_out: false,
        }
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn a_stage_retries_after_its_backoff_until_its_attempts_are_spent() {
        let policy = RetryPolicy::attempts(3).backoff(Backoff::Fixed {
            delay: Duration::from_secs(5),
        });
        let yes = |_: &AttemptFailure| true;
        for attempt in 1..3 {
            match decide(policy, &failure(attempt), yes, 0, 0, at(10), None) {
                Retry::After { delay, until } => {
                    assert_eq!((delay, until), (Duration::from_secs(5), at(15)));
                }
                _ => panic!("attempt {attempt} is retried"),
            }
        }
        assert!(matches!(
            decide(policy, &failure(3), yes, 0, 0, at(10), None),
            Retry::GiveUp
        ));
    }

    #[test]
    fn the_predicate_and_the_stage_deadline_can_stop_a_retry() {
        let policy = RetryPolicy::attempts(3).backoff(Backoff::Fixed {
            delay: Duration::from_secs(5),
        });
        let mut asked = false;
        let refuses = |_: &AttemptFailure| {
            asked = true;
            false
        };
        assert!(matches!(
            decide(policy, &failure(1), refuses, 0, 0, at(10), None),
            Retry::GiveUp
        ));
        assert!(asked);
        let never = |_: &AttemptFailure| -> bool { unreachable!("time is up: nothing to ask") };
        assert!(matches!(
            decide(policy, &failure(1), never, 0, 0, at(10), Some(at(10))),
            Retry::GiveUp
        ));
        let yes = |_: &AttemptFailure| true;
        assert!(matches!(
            decide(policy, &failure(1), yes, 0, 0, at(10), Some(at(15))),
            Retry::OutOfTime
        ));
    }
}
