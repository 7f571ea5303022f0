//! Time limits and stops: the [`Stopper`] that ends a step's ordinary phase when a cancel
//! handle is used (the engine's or the move's) or the step's time is up, and the deadlines
//! of a stage and of each of its attempts.

use std::future::Future;
use std::pin::Pin;

use futures::future::{Either, select};

use super::{CancelHandle, Engine, StageReport, StepRun};
use crate::executor::{StageStatus, TimeoutKind};
use crate::graph::StageSpec;
use crate::time::{Clock, Timestamp};

/// Why the ordinary phase was stopped from outside.
#[derive(Clone, Copy)]
pub(super) enum Stop {
    Cancelled,
    TimedOut,
}

/// What stops a step's ordinary phase from outside: the future that resolves on a cancel or
/// at the step's deadline, for waiting, and what it waits for, for a cheap check between
/// stages (an atomic load and a clock read instead of polling the future).
pub(super) struct Stopper<'a> {
    pub(super) future: Pin<Box<dyn Future<Output = Stop> + Send + 'a>>,
    generation: u64,
    /// The move's own handle and its generation when the step began, when it has one.
    move_cancel: Option<(&'a CancelHandle, u64)>,
    deadline: Option<Timestamp>,
}

impl<'a> Stopper<'a> {
    /// The stopper of a step of `run` that began at `started_at`, when the engine's handle
    /// was at `generation`.
    pub(super) fn new(
        engine: &Engine,
        run: &'a StepRun<'a>,
        generation: u64,
        started_at: Timestamp,
    ) -> Self {
        let deadline = engine.step_timeout.map(|d| started_at.saturating_add(d));
        let move_cancel = run.cancel.map(|handle| (handle, handle.generation()));
        let engine_cancelled = engine.cancel.cancelled(generation);
        let move_cancelled = move_cancel.map(|(handle, generation)| handle.cancelled(generation));
        // Either handle stops the step: the engine's (every move) or the move's own.
        let cancelled = Box::pin(async move {
            match move_cancelled {
                None => engine_cancelled.await,
                Some(move_cancelled) => {
                    select(engine_cancelled, move_cancelled).await;
                }
            }
        });
        Stopper {
            future: Box::pin(async move {
                match deadline {
                    None => {
                        cancelled.await;
                        Stop::Cancelled
                    }
                    Some(deadline) => {
                        match select(cancelled, run.clock.sleep_until(deadline)).await {
                            Either::Left(_) => Stop::Cancelled,
                            Either::Right(_) => Stop::TimedOut,
                        }
                    }
                }
            }),
            generation,
            move_cancel,
            deadline,
        }
    }

    /// Whether the step has been stopped by now, and why; a cancel outranks the deadline.
    #[inline]
    pub(super) fn check(&self, engine: &Engine, clock: &dyn Clock) -> Option<Stop> {
        if engine.cancel.generation() != self.generation
            || self
                .move_cancel
                .is_some_and(|(handle, generation)| handle.generation() != generation)
        {
            Some(Stop::Cancelled)
        } else if self.deadline.is_some_and(|d| clock.now() >= d) {
            Some(Stop::TimedOut)
        } else {
            None
        }
    }
}

/// When the stage of `report` runs out of time: its timeout after it first started.
#[inline]
pub(super) fn stage_deadline(spec: &StageSpec, report: &StageReport) -> Option<Timestamp> {
    spec.timeout
        .zip(report.started_at)
        .map(|(limit, started_at)| started_at.saturating_add(limit))
}

/// The limit an attempt starting at `now` runs against, and which one it is: the earlier of
/// the spec's attempt timeout and the stage's deadline (the stage's on a tie).
#[inline]
pub(super) fn attempt_limit(
    spec: &StageSpec,
    now: Timestamp,
    stage_deadline: Option<Timestamp>,
) -> Option<(Timestamp, TimeoutKind)> {
    let attempt_deadline = spec.attempt_timeout.map(|d| now.saturating_add(d));
    match (attempt_deadline, stage_deadline) {
        (Some(a), Some(s)) if a < s => Some((a, TimeoutKind::Attempt)),
        (Some(a), None) => Some((a, TimeoutKind::Attempt)),
        (_, Some(s)) => Some((s, TimeoutKind::Stage)),
        (None, None) => None,
    }
}

/// The status of a stage whose own time limit ran out.
pub(super) const STAGE_TIMED_OUT: StageStatus = StageStatus::TimedOut {
    limit: TimeoutKind::Stage,
};
