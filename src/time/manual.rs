//! [`ManualClock`]: virtual time that moves only when told to, with a list of pending sleeps.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Clock, Timestamp, duration_millis};

/// A virtual clock that moves only when told to. Clones share one time and one timer list.
///
/// Sleeps on a `ManualClock` complete when the clock is moved to or past their deadline, by
/// [`advance`](ManualClock::advance), [`set`](ManualClock::set),
/// [`advance_to_next`](ManualClock::advance_to_next), or by
/// [`run_virtual`](super::run_virtual), which moves the clock whenever the future it drives
/// has nothing else to do.
///
/// Drive pipelines that may wait (retry backoff, timeouts) with
/// [`run_virtual`](super::run_virtual), not `futures::executor::block_on`: under `block_on`
/// nothing moves the clock, so the first sleep never ends.
///
/// ```
/// use std::time::Duration;
/// use tollgate::time::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp::from_millis(3_000));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    shared: Arc<Shared>,
}

/// The time, readable without the lock (the engine reads it several times per stage), and
/// the timers. The time is only written while the timer lock is held, so a reader holding
/// the lock sees the time the timers were last woken for.
#[derive(Default)]
struct Shared {
    now: AtomicU64,
    timers: Mutex<Timers>,
}

/// The wakers of the sleeps that wait for a later time, keyed by `(deadline, sleep id)` so
/// the earliest deadline is first.
#[derive(Default)]
struct Timers {
    next_id: u64,
    waiting: BTreeMap<(u64, u64), Waker>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            shared: Arc::new(Shared {
                now: AtomicU64::new(start.0),
                timers: Mutex::new(Timers::default()),
            }),
        }
    }

    // Nothing user-supplied runs under the lock, so a poisoned lock still holds consistent data.
    fn timers(&self) -> MutexGuard<'_, Timers> {
        self.shared
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the clock to `to` under the held lock and wakes the sleeps that are due.
    fn move_to(&self, timers: &mut Timers, to: u64) {
        self.shared.now.store(to, Ordering::SeqCst);
        timers.wake_due(to);
    }

    /// Moves the clock forward by `d` and wakes every sleep whose deadline has come.
    pub fn advance(&self, d: Duration) {
        let mut timers = self.timers();
        let to = self.now().0.saturating_add(duration_millis(d));
        self.move_to(&mut timers, to);
    }

    /// Sets the clock to `t` and wakes every sleep whose deadline has come.
    ///
    /// `t` may be earlier than the current time: virtual clocks may jump back, and sleeps
    /// whose deadlines are then in the future keep waiting.
    pub fn set(&self, t: Timestamp) {
        let mut timers = self.timers();
        self.move_to(&mut timers, t.0);
    }

    /// The earliest deadline among the sleeps still waiting, if any.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers()
            .waiting
            .keys()
            .next()
            .map(|&(deadline, _)| Timestamp(deadline))
    }

    /// Moves the clock to the earliest pending deadline (never backwards) and wakes the sleeps
    /// due then; returns the new time, or `None` (leaving the clock alone) when nothing waits.
    #[allow(
        clippy::must_use_candidate,
        reason = "moving the clock is the point; the time is extra"
    )]
    pub fn advance_to_next(&self) -> Option<Timestamp> {
        let mut timers = self.timers();
        let &(deadline, _) = timers.waiting.keys().next()?;
        let to = deadline.max(self.now().0);
        self.move_to(&mut timers, to);
        Some(Timestamp(to))
    }

    /// How many sleeps are waiting for a later time.
    #[must_use]
    pub fn pending_sleeps(&self) -> usize {
        self.timers().waiting.len()
    }
}

impl Timers {
    /// Wakes every sleep due at `to`.
    fn wake_due(&mut self, to: u64) {
        // Everything at or before `to`: split off the rest, wake what remains.
        let later = self.waiting.split_off(&(to.saturating_add(1), 0));
        let due = std::mem::replace(&mut self.waiting, later);
        if to == u64::MAX {
            // `to + 1` saturated: the split kept deadlines equal to `u64::MAX` in `later`.
            let all = std::mem::take(&mut self.waiting);
            all.into_values().for_each(Waker::wake);
        }
        due.into_values().for_each(Waker::wake);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("pending_sleeps", &self.pending_sleeps())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.shared.now.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        Box::pin(Sleep {
            clock: self.clone(),
            deadline: deadline.0,
            id: None,
        })
    }
}

/// A sleep on a [`ManualClock`]: registered in the timer list while pending, removed when it
/// completes or is dropped.
struct Sleep {
    clock: ManualClock,
    deadline: u64,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut timers = this.clock.timers();
        if this.clock.now().0 >= this.deadline {
            if let Some(id) = this.id.take() {
                timers.waiting.remove(&(this.deadline, id));
            }
            return Poll::Ready(());
        }
        let id = *this.id.get_or_insert_with(|| {
            timers.next_id += 1;
            timers.next_id
        });
        timers
            .waiting
            .entry((this.deadline, id))
            .and_modify(|w| w.clone_from(cx.waker()))
            .or_insert_with(|| cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.clock.timers().waiting.remove(&(self.deadline, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use futures::task::noop_waker;

    use super::*;

    #[test]
    fn clones_share_time() {
        let a = ManualClock::new(Timestamp::from_millis(5));
        let b = a.clone();
        a.advance(Duration::from_millis(10));
        assert_eq!(b.now(), Timestamp::from_millis(15));
    }

    #[test]
    fn sleeps_complete_in_deadline_order() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut late = clock.sleep(Duration::from_millis(30));
        let mut early = clock.sleep(Duration::from_millis(10));
        assert!(late.poll_unpin(&mut cx).is_pending());
        assert!(early.poll_unpin(&mut cx).is_pending());
        assert_eq!(clock.pending_sleeps(), 2);
        assert_eq!(clock.advance_to_next(), Some(Timestamp::from_millis(10)));
        assert!(early.poll_unpin(&mut cx).is_ready());
        assert!(late.poll_unpin(&mut cx).is_pending());
        assert_eq!(clock.next_deadline(), Some(Timestamp::from_millis(30)));
        clock.set(Timestamp::from_millis(100));
        assert!(late.poll_unpin(&mut cx).is_ready());
        assert_eq!(clock.advance_to_next(), None);
        assert_eq!(clock.now(), Timestamp::from_millis(100));
    }

    #[test]
    fn dropped_sleeps_leave_the_timer_list() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sleep = clock.sleep(Duration::from_secs(1));
        assert!(sleep.poll_unpin(&mut cx).is_pending());
        drop(sleep);
        assert_eq!(clock.next_deadline(), None);
    }

    #[test]
    fn the_end_of_time_is_reachable() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sleep = clock.sleep_until(Timestamp::from_millis(u64::MAX));
        assert!(sleep.poll_unpin(&mut cx).is_pending());
        clock.advance(Duration::MAX);
        assert_eq!(clock.pending_sleeps(), 0);
        assert!(sleep.poll_unpin(&mut cx).is_ready());
    }
}
