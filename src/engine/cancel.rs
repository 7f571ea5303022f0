//! [`CancelHandle`]: stops the steps that are running when it is used.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// Cancels running steps. Clones share one handle.
///
/// [`cancel`](CancelHandle::cancel) stops every step that is running at that moment: nothing
/// new starts, running stages are dropped (a process executor kills its process) and reported
/// as cancelled, and finally stages still run. Steps started afterwards are not affected, so
/// one handle serves a pipeline for its whole life.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: AtomicU64,
    /// The wakers of the `Cancelled` futures waiting now, by their id; each removes its own
    /// when it is dropped, so a handle that lives as long as its pipeline does not collect
    /// one waker per step run.
    wakers: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
}

impl CancelHandle {
    /// A fresh handle.
    #[must_use]
    pub fn new() -> Self {
        CancelHandle::default()
    }

    /// Cancels every step running now.
    pub fn cancel(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let wakers = std::mem::take(
            &mut self
                .inner
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wakers,
        );
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// The generation a step starting now belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Resolves once [`cancel`](CancelHandle::cancel) is called after `generation`.
    pub(crate) fn cancelled(&self, generation: u64) -> Cancelled {
        Cancelled {
            handle: self.clone(),
            generation,
            id: None,
        }
    }

    /// How many futures wait on this handle now (for tests of the bookkeeping).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wakers
            .len()
    }
}

/// The future of [`CancelHandle::cancelled`].
#[derive(Debug)]
pub(crate) struct Cancelled {
    handle: CancelHandle,
    generation: u64,
    /// Where its waker is registered, once it has been polled.
    id: Option<u64>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let inner = &this.handle.inner;
        if inner.generation.load(Ordering::SeqCst) != this.generation {
            return Poll::Ready(());
        }
        let mut waiting = inner.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock, so a cancel between the two checks is not missed.
        if inner.generation.load(Ordering::SeqCst) != this.generation {
            return Poll::Ready(());
        }
        let id = *this.id.get_or_insert_with(|| {
            waiting.next_id += 1;
            waiting.next_id
        });
        match waiting.wakers.get_mut(&id) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                waiting.wakers.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.handle
                .inner
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wakers
                .remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[test]
    fn cancel_affects_only_steps_running_at_that_moment() {
        let handle = CancelHandle::new();
        let mut before = handle.cancelled(handle.generation());
        assert!((&mut before).now_or_never().is_none());
        handle.cancel();
        assert!(before.now_or_never().is_some());
        let after = handle.cancelled(handle.generation());
        assert!(after.now_or_never().is_none());
    }

    #[test]
    fn finished_waits_leave_no_waker_behind() {
        let handle = CancelHandle::new();
        for _ in 0..100 {
            let mut waiting = handle.cancelled(handle.generation());
            assert!((&mut waiting).now_or_never().is_none());
            assert_eq!(handle.waiting(), 1);
        }
        assert_eq!(handle.waiting(), 0);
    }
}
