//! [`run_virtual`]: drive a future to completion on a [`ManualClock`], moving the clock to the
//! next deadline whenever the future is idle, or with real time while the clock is held.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{ManualClock, Timestamp, duration_millis};

/// Wakes the driving thread and remembers that it did.
struct Signal {
    woken: AtomicBool,
    thread: Thread,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Runs `future` to completion on the calling thread in virtual time, and returns its output.
///
/// The future is polled whenever it is woken. When it is idle (pending, not woken) and a sleep
/// on `clock` is waiting, the clock jumps to the earliest deadline, so hours of backoff and
/// timeouts pass in microseconds and every run of the same future reads the same times. When
/// it is idle and no sleep waits, the thread parks until something outside (another thread, a
/// child process) wakes the future.
///
/// While the clock is [held](ManualClock::hold) (real work is under way), the clock does not
/// jump: it follows real time, counted from when the first of the live holds was taken, so a
/// sleep whose deadline is 2 s away completes after 2 s of real time unless the future is
/// woken first, and work that took 300 ms of real time is seen to take 300 ms. Once the last
/// hold is dropped the driver jumps again.
///
/// Like [`futures::executor::block_on`], this blocks the calling thread: call it from a test,
/// a simulation or `main`, never from inside an async task.
///
/// ```
/// use std::time::Duration;
/// use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let waited = run_virtual(&clock, async {
///     clock.sleep(Duration::from_secs(3 * 3600)).await;
///     clock.now()
/// });
/// assert_eq!(waited, Timestamp::from_millis(3 * 3600 * 1000));
/// ```
pub fn run_virtual<F: Future>(clock: &ManualClock, future: F) -> F::Output {
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(false),
        thread: thread::current(),
    });
    let waker = Waker::from(Arc::clone(&signal));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    // While the clock is held: when it was first held, in real and in virtual time.
    let mut following: Option<RealTime> = None;
    loop {
        signal.woken.store(false, Ordering::Release);
        if let Some(real) = following {
            // The work that held the clock took real time: the future sees it pass.
            real.catch_up(clock);
            if !clock.is_held() {
                following = None;
            }
        }
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // Woken while polling (a ready channel, a completed sleep): poll again at this time.
        while !signal.woken.load(Ordering::Acquire) {
            if let Some((real, virtual_time)) = clock.wake_on_release(&waker) {
                let real = RealTime { real, virtual_time };
                following = Some(real);
                // Wait for the next deadline in real time, or until something wakes the
                // future or the last hold is released (both unpark this thread).
                match clock.next_deadline() {
                    Some(deadline) => {
                        let left = real.until(deadline);
                        if !left.is_zero() {
                            thread::park_timeout(left);
                        }
                    }
                    None => thread::park(),
                }
                real.catch_up(clock);
            } else {
                following = None;
                if clock.advance_to_next().is_none() {
                    // Nothing waits on the clock: only the outside world can make progress.
                    thread::park();
                }
            }
        }
    }
}

/// A point where virtual and real time were lined up, from which virtual time follows real
/// time while the clock is held.
#[derive(Clone, Copy)]
struct RealTime {
    real: Instant,
    virtual_time: Timestamp,
}

impl RealTime {
    /// How much real time is left until the clock should read `deadline`.
    fn until(self, deadline: Timestamp) -> Duration {
        let wanted = self.real + deadline.saturating_since(self.virtual_time);
        wanted.saturating_duration_since(Instant::now())
    }

    /// Moves the clock to the virtual time matching the real time now (never back: someone
    /// may have moved it further meanwhile).
    fn catch_up(self, clock: &ManualClock) {
        let elapsed = duration_millis(self.real.elapsed());
        clock.advance_to(Timestamp::from_millis(
            self.virtual_time.as_millis().saturating_add(elapsed),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::channel::oneshot;
    use futures::future::{Either, select};

    use super::*;
    use crate::time::{Clock, Timestamp};

    #[test]
    fn a_timeout_beats_a_longer_sleep() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let winner = run_virtual(&clock, async {
            match select(
                clock.sleep(Duration::from_secs(60)),
                clock.sleep(Duration::from_secs(5)),
            )
            .await
            {
                Either::Left(_) => "long",
                Either::Right(_) => "short",
            }
        });
        assert_eq!(winner, "short");
        assert_eq!(clock.now(), Timestamp::from_millis(5_000));
        // The losing sleep was dropped and left the timer list.
        assert_eq!(clock.next_deadline(), None);
    }

    /// Blocks until a driver of `clock` is idle on the held clock, without sleeping.
    fn until_the_driver_waits_on_the_hold(clock: &ManualClock) {
        while clock.release_watchers() == 0 {
            thread::yield_now();
        }
    }

    #[test]
    fn a_held_clock_does_not_jump_past_a_timeout_while_work_is_under_way() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let hold = clock.hold();
        let (tx, rx) = oneshot::channel();
        // The outside world answers once the driver has gone idle with the hour-long timeout
        // pending: unheld, the clock would have jumped to it.
        let worker = thread::spawn({
            let clock = clock.clone();
            move || {
                until_the_driver_waits_on_the_hold(&clock);
                tx.send(()).expect("receiver alive");
            }
        });
        let winner = run_virtual(&clock, async {
            match select(rx, clock.sleep(Duration::from_secs(3600))).await {
                Either::Left(_) => "work",
                Either::Right(_) => "timeout",
            }
        });
        worker.join().expect("worker thread");
        drop(hold);
        assert_eq!(winner, "work");
        assert!(clock.now() < Timestamp::from_millis(3_600_000));
    }

    // Waits for real, briefly: what it checks is that a held clock follows real time.
    #[test]
    fn a_held_clock_reaches_a_near_deadline_after_that_much_real_time() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let hold = clock.hold();
        let started = Instant::now();
        run_virtual(&clock, clock.sleep(Duration::from_millis(20)));
        drop(hold);
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(clock.now() >= Timestamp::from_millis(20));
    }

    #[test]
    fn releasing_the_last_hold_lets_the_clock_jump_again() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let hold = clock.hold();
        let (tx, rx) = oneshot::channel::<()>();
        // Released from another thread once the driver waits on the held clock.
        let releaser = thread::spawn({
            let clock = clock.clone();
            move || {
                until_the_driver_waits_on_the_hold(&clock);
                drop(hold);
                drop(tx);
            }
        });
        let slept = run_virtual(&clock, async {
            let _ = rx.await;
            clock.sleep(Duration::from_secs(3600)).await;
            clock.now()
        });
        releaser.join().expect("releaser thread");
        assert!(slept >= Timestamp::from_millis(3_600_000));
    }

    #[test]
    fn waits_for_the_outside_world_when_no_sleep_is_pending() {
        let clock = ManualClock::new(Timestamp::EPOCH);
        let (tx, rx) = oneshot::channel();
        let sender = thread::spawn(move || tx.send(7).expect("receiver alive"));
        let got = run_virtual(&clock, rx).expect("sender sent");
        sender.join().expect("sender thread");
        assert_eq!(got, 7);
        assert_eq!(clock.now(), Timestamp::EPOCH);
    }
}
