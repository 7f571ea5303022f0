//! [`run_virtual`]: drive a future to completion on a [`ManualClock`], moving the clock to the
//! next deadline whenever the future is idle.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use super::ManualClock;

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
    loop {
        signal.woken.store(false, Ordering::Release);
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // Woken while polling (a ready channel, a completed sleep): poll again at this time.
        while !signal.woken.load(Ordering::Acquire) {
            if clock.advance_to_next().is_none() {
                // Nothing waits on the clock: only the outside world can make progress.
                thread::park();
            }
        }
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
