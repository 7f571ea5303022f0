//! Time as tollgate sees it: [`Timestamp`], and the [`Clock`] trait with a real
//! ([`SystemClock`]) and a virtual ([`ManualClock`]) implementation.
//!
//! Everything that reads the time or waits (approval expiry, step durations, retry backoff,
//! timeouts) asks a `Clock`, so tests and simulations can run in virtual time and never
//! sleep. [`run_virtual`] drives a future on a [`ManualClock`], jumping the clock to the next
//! pending deadline whenever the future has nothing else to do: hours of pipeline time pass
//! in milliseconds, and the same run always reads the same times.
//!
//! Real work breaks that jump: a process that runs for 300 ms while the driver moves the
//! clock past its 30-minute timeout would be "timed out" at once. So work done in real time
//! takes a [`ClockHold`] ([`Clock::hold`]) while it runs, and while any hold lives
//! `run_virtual` lets the clock follow real time instead of jumping it: the 300 ms process
//! succeeds, and a hung one with a one-second timeout is stopped after about one real second.
//! [`ProcessExecutor`](crate::executor::ProcessExecutor) holds the clock while its program
//! runs; any executor can do the same with `ctx.clock().hold()`.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};
//!
//! /// Runs `step` up to three times, backing off 1 then 2 then 4 minutes after each failure.
//! async fn with_retries(clock: &dyn Clock, mut step: impl FnMut() -> bool) -> bool {
//!     let mut backoff = Duration::from_secs(60);
//!     for _ in 0..3 {
//!         if step() {
//!             return true;
//!         }
//!         clock.sleep(backoff).await;
//!         backoff *= 2;
//!     }
//!     false
//! }
//!
//! let clock = ManualClock::new(Timestamp::EPOCH);
//! let succeeded = run_virtual(&clock, with_retries(&clock, || false));
//! assert!(!succeeded);
//! // Seven minutes passed on the clock; none passed for real.
//! assert_eq!(clock.now(), Timestamp::EPOCH.saturating_add(Duration::from_secs(7 * 60)));
//! ```

// One file per implementation: the wall clock, the virtual clock with its timer list, and the
// virtual-time driver; plus the hold that real work takes on virtual time.
mod driver;
mod hold;
mod manual;
mod system;
mod text;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::forward::forward_impls;

pub use driver::run_virtual;
pub use hold::ClockHold;
pub use manual::ManualClock;
pub use system::SystemClock;
pub use text::{DurationError, format_duration, parse_duration};
pub(crate) use text::{deserialize_opt_duration, human, opt_human};

/// A point in time: whole milliseconds since the Unix epoch, UTC.
///
/// Plain integer milliseconds keep records portable and comparisons exact, and spare the
/// crate a date-time dependency.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The timestamp `millis` milliseconds after the epoch.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This timestamp plus `d`, saturating at the end of time.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    /// Shows the time as `@<millis>ms`; hosts that want calendar dates convert with their own
    /// date-time crate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}ms", self.0)
    }
}

pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serde for a `Duration` as whole milliseconds (`#[serde(with = "crate::time::millis")]`),
/// the unit of every duration in tollgate's records.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::duration_millis(*d))
    }

    /// Milliseconds, or a duration as people write it (`"10m"`, see
    /// [`parse_duration`](super::parse_duration)).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::text::deserialize_duration(d)
    }
}

/// Where tollgate reads the time and waits for it to pass.
///
/// Every wait in tollgate (retry backoff, step timeouts, approval expiry) goes through
/// [`sleep_until`](Clock::sleep_until) or [`sleep`](Clock::sleep), so a pipeline driven by a
/// [`ManualClock`] under [`run_virtual`] never waits for real. Use [`SystemClock`] in
/// production and [`ManualClock`] in tests; implement the trait to drive pipelines from your
/// own time source (a simulation, a replayed log).
///
/// The returned futures are `Send + 'static`: they own what they need, so callers can hold
/// them across `.await` points in spawned tasks and race them with
/// [`select`](futures::future::select) for timeouts.
///
/// ```
/// use std::time::Duration;
/// use futures::future::{self, BoxFuture, FutureExt};
/// use tollgate::time::{Clock, Timestamp};
///
/// /// A clock stuck at one instant, on which every deadline has already passed.
/// struct Frozen(Timestamp);
///
/// impl Clock for Frozen {
///     fn now(&self) -> Timestamp {
///         self.0
///     }
///
///     fn sleep_until(&self, _deadline: Timestamp) -> BoxFuture<'static, ()> {
///         future::ready(()).boxed()
///     }
/// }
///
/// let clock = Frozen(Timestamp::from_millis(42));
/// futures::executor::block_on(clock.sleep(Duration::from_secs(3600)));
/// assert_eq!(clock.now(), Timestamp::from_millis(42));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate clock",
    label = "this type does not implement `tollgate::time::Clock`",
    note = "use `SystemClock` for real time or `ManualClock` for virtual time, or implement `fn now(&self) -> Timestamp` and `fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>`"
)]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A future that completes once this clock reads `deadline` or later.
    ///
    /// A deadline that has already passed completes on the first poll. The wait is measured
    /// by this clock, not by the wall: on a [`ManualClock`] it completes when the clock is
    /// moved past `deadline`, however little real time that takes.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;

    /// A future that completes once `d` has passed on this clock, counted from the call.
    ///
    /// The deadline is fixed when `sleep` is called, not when the future is first polled.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.sleep_until(self.now().saturating_add(d))
    }

    /// Holds virtual time back while the returned guard lives: take it around work that
    /// happens in real time (a process, a request), so that a virtual clock does not jump past
    /// the work's timeouts while it runs. See [`ManualClock::hold`].
    ///
    /// The default, right for clocks that follow real time anyway, holds nothing.
    fn hold(&self) -> ClockHold {
        ClockHold::none()
    }
}

forward_impls! {
    impl Clock {
        fn now(&self) -> Timestamp;
        fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;
        fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
        fn hold(&self) -> ClockHold;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use futures::FutureExt;
    use futures::task::noop_waker;

    use super::*;

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_millis(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(5)).as_millis(),
            u64::MAX
        );
        assert_eq!(Timestamp::EPOCH.saturating_since(t), Duration::ZERO);
    }

    #[test]
    fn forwarding_impls_sleep_on_the_inner_clock() {
        let clock = ManualClock::new(Timestamp::from_millis(100));
        let clocks: Vec<Box<dyn Clock>> = vec![
            Box::new(clock.clone()),
            Box::new(Arc::new(clock.clone())),
            Box::new(Box::new(clock.clone())),
        ];
        let by_ref: &dyn Clock = &clock;
        let mut sleeps: Vec<_> = clocks
            .iter()
            .map(|c| c.sleep(Duration::from_millis(10)))
            .chain([(&by_ref).sleep_until(Timestamp::from_millis(110))])
            .collect();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        for sleep in &mut sleeps {
            assert_eq!(sleep.poll_unpin(&mut cx), Poll::Pending);
        }
        assert_eq!(clock.next_deadline(), Some(Timestamp::from_millis(110)));
        clock.advance(Duration::from_millis(10));
        for sleep in &mut sleeps {
            assert_eq!(sleep.poll_unpin(&mut cx), Poll::Ready(()));
        }
    }

    #[test]
    fn forwarding_impls_hold_the_inner_clock() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let clocks: Vec<Box<dyn Clock>> = vec![
            Box::new(clock.clone()),
            Box::new(Arc::new(clock.clone())),
            Box::new(Box::new(clock.clone())),
        ];
        for forwarded in &clocks {
            let hold = forwarded.hold();
            assert!(clock.is_held());
            drop(hold);
            assert!(!clock.is_held());
        }
        let by_ref: &dyn Clock = &clock;
        let hold = (&by_ref).hold();
        assert!(clock.is_held());
        drop(hold);
    }
}
