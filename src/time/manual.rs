//! [`ManualClock`]: virtual time that moves only when told to, with a list of pending sleeps
//! and a count of the holds that keep [`run_virtual`](super::run_virtual) from jumping it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::{Clock, ClockHold, Timestamp, duration_millis};

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
/// Work that happens outside virtual time (a real process, a network call) takes a
/// [`hold`](ManualClock::hold) while it runs: as long as any hold lives, `run_virtual` does
/// not jump the clock to the next deadline but lets it follow real time, so a timeout still
/// fires, after as much real time as it allows.
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
/// the earliest deadline is first; and the holds, kept under the same lock so that a driver
/// that finds the clock held and asks to be told of its release cannot miss the release.
#[derive(Default)]
struct Timers {
    next_id: u64,
    waiting: BTreeMap<(u64, u64), Waker>,
    /// How many [`ClockHold`]s of this clock are alive.
    holds: usize,
    /// When the first of the live holds was taken: the real instant and the clock's time.
    held_since: Option<(Instant, u64)>,
    /// Drivers to wake when the last hold is released.
    on_release: Vec<Waker>,
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

    /// Holds virtual time back until the returned guard is dropped: while any hold of this
    /// clock lives, [`run_virtual`](super::run_virtual) does not jump the clock to the next
    /// deadline, but moves it with real time. Take one around work that happens in real time
    /// (a process, a request), so that its timeouts mean what they say.
    ///
    /// Holding changes nothing else: [`advance`](Self::advance) and [`set`](Self::set) still
    /// move a held clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::channel::oneshot;
    /// use futures::future::{self, Either};
    /// use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};
    ///
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let (done, finished) = oneshot::channel();
    /// let hold = clock.hold();
    /// // Real work on another thread, raced against an hour's timeout on the virtual clock.
    /// let worker = std::thread::spawn(move || done.send(()).unwrap());
    /// let timeout = clock.sleep(Duration::from_secs(3600));
    /// let outcome = run_virtual(&clock, async {
    ///     let outcome = future::select(finished, timeout).await;
    ///     drop(hold);
    ///     match outcome {
    ///         Either::Left(_) => "finished",
    ///         Either::Right(_) => "timed out",
    ///     }
    /// });
    /// worker.join().unwrap();
    /// // Without the hold, the clock could have jumped an hour ahead before the work finished.
    /// assert_eq!(outcome, "finished");
    /// assert!(clock.now() < Timestamp::from_millis(3_600_000));
    /// ```
    pub fn hold(&self) -> ClockHold {
        let mut timers = self.timers();
        if timers.holds == 0 {
            timers.held_since = Some((Instant::now(), self.now().0));
        }
        timers.holds += 1;
        ClockHold::manual(self.clone())
    }

    /// Whether a [`hold`](Self::hold) of this clock is alive.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.timers().holds > 0
    }

    /// Ends one hold, waking the drivers waiting for the last one to end.
    pub(super) fn release(&self) {
        let woken = {
            let mut timers = self.timers();
            timers.holds = timers.holds.saturating_sub(1);
            if timers.holds > 0 {
                return;
            }
            timers.held_since = None;
            std::mem::take(&mut timers.on_release)
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// If the clock is held, arranges for `waker` to be woken when the last hold ends and
    /// returns when the clock was first held (the real instant, and the time it read then);
    /// returns `None` if it is not held.
    pub(super) fn wake_on_release(&self, waker: &Waker) -> Option<(Instant, Timestamp)> {
        let mut timers = self.timers();
        let (real, time) = timers.held_since.filter(|_| timers.holds > 0)?;
        if !timers.on_release.iter().any(|w| w.will_wake(waker)) {
            timers.on_release.push(waker.clone());
        }
        Some((real, Timestamp(time)))
    }

    /// How many drivers wait for the last hold to end.
    #[cfg(test)]
    pub(super) fn release_watchers(&self) -> usize {
        self.timers().on_release.len()
    }

    /// Moves the clock forward to `t`, never back, and wakes the sleeps that are due.
    pub(super) fn advance_to(&self, t: Timestamp) {
        let mut timers = self.timers();
        if t.0 > self.now().0 {
            self.move_to(&mut timers, t.0);
        }
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
        let timers = self.timers();
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("pending_sleeps", &timers.waiting.len())
            .field("holds", &timers.holds)
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

    fn hold(&self) -> ClockHold {
        ManualClock::hold(self)
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
    fn holds_count_until_the_last_one_is_dropped() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        assert!(!clock.is_held());
        let first = clock.hold();
        let second = Clock::hold(&clock);
        assert!(clock.is_held());
        drop(first);
        assert!(clock.is_held());
        drop(second);
        assert!(!clock.is_held());
    }

    #[test]
    fn the_last_release_wakes_the_waiting_drivers_once() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let clock = ManualClock::new(Timestamp::EPOCH);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(
            clock.wake_on_release(&waker).is_none(),
            "an unheld clock has nothing to wait for"
        );
        let (a, b) = (clock.hold(), clock.hold());
        assert!(clock.wake_on_release(&waker).is_some());
        assert!(
            clock.wake_on_release(&waker).is_some(),
            "registered twice, woken once"
        );
        drop(a);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn advance_to_never_moves_back() {
        let clock = ManualClock::new(Timestamp::from_millis(100));
        clock.advance_to(Timestamp::from_millis(50));
        assert_eq!(clock.now(), Timestamp::from_millis(100));
        clock.advance_to(Timestamp::from_millis(150));
        assert_eq!(clock.now(), Timestamp::from_millis(150));
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
