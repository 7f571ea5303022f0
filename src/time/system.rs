//! [`SystemClock`]: the operating system's wall clock, sleeping on `futures-timer`'s helper
//! thread.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{self, BoxFuture, FutureExt};
use futures_timer::Delay;

use super::{Clock, Timestamp, duration_millis};

/// The operating system's wall clock.
///
/// Sleeps run on one helper thread shared by the whole process (from the `futures-timer`
/// crate), so they work under any executor, `futures::executor::block_on` included, and
/// tollgate needs no async runtime.
///
/// ```no_run
/// use std::time::Duration;
/// use futures::future::{self, Either};
/// use tollgate::time::{Clock, SystemClock};
///
/// // Give a step thirty seconds of real time.
/// let step = future::pending::<()>();
/// let timeout = SystemClock.sleep(Duration::from_secs(30));
/// match futures::executor::block_on(future::select(Box::pin(step), timeout)) {
///     Either::Left(((), _)) => println!("step finished"),
///     Either::Right(((), _)) => println!("step timed out"),
/// }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock set before 1970 reads as the epoch rather than failing.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(duration_millis(since))
    }

    /// Sleeps until the wall clock reads `deadline`.
    ///
    /// The remaining time is measured once, at the call, and then counted on the monotonic
    /// clock, so setting the wall clock while a sleep is pending does not move its wake-up.
    /// `now` rounds down to the millisecond, so the sleep never ends before `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let remaining = deadline.saturating_since(self.now());
        if remaining.is_zero() {
            // Past deadlines resolve on the first poll without touching the timer thread.
            future::ready(()).boxed()
        } else {
            Delay::new(remaining).boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use futures::task::noop_waker;

    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp::from_millis(1_577_836_800_000));
    }

    #[test]
    fn past_deadline_resolves_on_first_poll() {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let earlier = Timestamp::from_millis(SystemClock.now().as_millis() - 1_000);
        let mut sleep = SystemClock.sleep_until(earlier);
        assert_eq!(sleep.poll_unpin(&mut cx), Poll::Ready(()));
        let mut zero = SystemClock.sleep(Duration::ZERO);
        assert_eq!(zero.poll_unpin(&mut cx), Poll::Ready(()));
    }

    // The one test in the crate that waits for real: it checks the wall clock against itself.
    #[test]
    fn sleep_ends_at_or_after_its_deadline() {
        let deadline = SystemClock.now().saturating_add(Duration::from_millis(20));
        futures::executor::block_on(SystemClock.sleep_until(deadline));
        assert!(SystemClock.now() >= deadline);
    }
}
