//! [`ClockHold`]: the guard that holds virtual time back while real work runs.

use std::fmt;

use super::ManualClock;

/// Holds a clock's virtual time back while it lives; see [`Clock::hold`](super::Clock::hold).
///
/// On a [`ManualClock`] driven by [`run_virtual`](super::run_virtual), the clock follows real
/// time instead of jumping to the next deadline until every hold is dropped. On a real clock
/// such as [`SystemClock`](super::SystemClock) a hold does nothing: real time passes anyway.
///
/// ```
/// use tollgate::time::{Clock, ClockHold, ManualClock, SystemClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let hold: ClockHold = Clock::hold(&clock);
/// assert!(clock.is_held());
/// drop(hold);
/// assert!(!clock.is_held());
/// let _nothing_to_hold = SystemClock.hold();
/// ```
#[must_use = "the clock is held only while the hold lives"]
pub struct ClockHold(Inner);

enum Inner {
    /// A clock that needs no holding.
    Free,
    /// One hold counted by a virtual clock.
    Manual(ManualClock),
    /// A clock of the host's own, released by calling this.
    Custom(Option<Box<dyn FnOnce() + Send + Sync>>),
}

impl ClockHold {
    /// A hold that holds nothing: what clocks without virtual time return.
    pub fn none() -> Self {
        ClockHold(Inner::Free)
    }

    /// A hold for a clock of your own: `release` runs once, when the hold is dropped.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tollgate::time::ClockHold;
    ///
    /// let holds = Arc::new(AtomicUsize::new(1));
    /// let hold = ClockHold::on_release({
    ///     let holds = Arc::clone(&holds);
    ///     move || {
    ///         holds.fetch_sub(1, Ordering::SeqCst);
    ///     }
    /// });
    /// drop(hold);
    /// assert_eq!(holds.load(Ordering::SeqCst), 0);
    /// ```
    pub fn on_release(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        ClockHold(Inner::Custom(Some(Box::new(release))))
    }

    /// A hold already counted by `clock`.
    pub(super) fn manual(clock: ManualClock) -> Self {
        ClockHold(Inner::Manual(clock))
    }
}

impl Drop for ClockHold {
    fn drop(&mut self) {
        match &mut self.0 {
            Inner::Free => {}
            Inner::Manual(clock) => clock.release(),
            Inner::Custom(release) => {
                if let Some(release) = release.take() {
                    release();
                }
            }
        }
    }
}

impl fmt::Debug for ClockHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Inner::Free => "none",
            Inner::Manual(_) => "manual",
            Inner::Custom(_) => "custom",
        };
        f.debug_tuple("ClockHold").field(&kind).finish()
    }
}
