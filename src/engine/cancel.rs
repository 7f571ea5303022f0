//! [`CancelHandle`]: stops the steps that are running when it is used.

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
    wakers: Mutex<Vec<Waker>>,
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
            &mut *self
                .inner
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for waker in wakers {
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
        }
    }
}

/// The future of [`CancelHandle::cancelled`].
#[derive(Debug)]
pub(crate) struct Cancelled {
    handle: CancelHandle,
    generation: u64,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.handle.inner;
        if inner.generation.load(Ordering::SeqCst) != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = inner.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock, so a cancel between the two checks is not missed.
        if inner.generation.load(Ordering::SeqCst) != self.generation {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
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
}
