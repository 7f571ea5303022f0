//! The scheduler behind a step run: one poll function per phase that starts ready stages as
//! workers and groups allow, settles ended attempts (success, retry, give up), applies the
//! failure policy, stops on a cancel or the step's timeout, and runs finally stages last.
//! The ready queue ([`ready`](super::ready)), the slots ([`limits`](super::limits)), the retry
//! decision ([`retry`](super::retry)), deadlines and stops ([`deadline`](super::deadline))
//! and panic text ([`panic`](super::panic)) each live in their own file.
//!
//! A stage's run is a small state machine kept in the step's own tables (its [`Phase`] and
//! its [`StageReport`], which collects attempts as they happen); only an attempt itself is a
//! future: the executor's, raced against the attempt's deadline. Between attempts the
//! scheduler decides synchronously what comes next (success, retry, give up), so a stage
//! costs one small future per attempt and no lock, hash or copy of its state. When a step is
//! stopped, dropping the futures is all the cancelling there is: the tables already say which
//! attempts were under way.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::{self, BoxFuture};
use futures::stream::FuturesUnordered;

use super::deadline::{STAGE_TIMED_OUT, Stop, Stopper, attempt_limit, stage_deadline};
use super::limits::Slots;
use super::panic::{message, panicked};
use super::ready::Ready;
use super::retry::{self, Retry, Wake};
use super::{
    Attempt, AttemptFailure, Engine, Event, FailurePolicy, ObserverPanic, StageHooks, StageReport,
    StepOutcome, StepReport, StepRun, Superseded, Warning,
};
use crate::executor::{
    ExecutorError, NOT_IN_STEP, Outputs, PartialLogs, SharedError, StageContext, StageOutcome,
    StageStatus, StepOutputs, TimeoutKind,
};
// The graph's `Settled` (how a dependency ended, as a condition sees it) under another
// name: this file has its own `Settled` (what comes after an attempt) and `Ended` (an
// attempt under way that ended).
use crate::graph::{Settled as DependencyEnd, SkipReason, StageId};
use crate::time::{Clock, Timestamp};

/// A dependency count no decrement reaches zero from: stages outside the phase being run
/// start with it, so finishing their dependencies never makes them ready.
const OTHER_PHASE: u32 = u32::MAX;

/// Where a stage of the step stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started: waiting for dependencies or a worker, or never to run (skipped).
    Waiting,
    /// An attempt is under way: its report's last attempt is the one running.
    Running,
    /// Between attempts: waiting out a retry backoff, or for a worker to try again.
    Backoff,
    /// Finished: its report is final.
    Done,
}

/// How one attempt ended, before the retry policy looks at it.
enum AttemptEnd {
    /// The executor returned an outcome (which may still be a failure).
    Finished(StageOutcome),
    /// The executor returned an error.
    Errored(ExecutorError),
    /// The executor panicked: why.
    Panicked(String),
    /// The attempt's or the stage's time ran out (which limit); the executor's future was
    /// dropped.
    TimedOut(TimeoutKind),
    /// The executor returned, but its own poll took it past the attempt's or the stage's
    /// deadline (which limit): it blocked its thread, and is timed out whatever it returned.
    Late(TimeoutKind, Result<StageOutcome, ExecutorError>),
    /// The stage's time ran out while it waited to try again: no attempt was started.
    Expired,
}

/// One attempt of a stage under way: the executor's future raced against the earlier of the
/// attempt's and the stage's deadline. A panic while polling ends the attempt as a failure;
/// a panic while the executor's future is dropped is contained (and told, when the engine
/// drops it).
///
/// Each poll is timed on the clock: the longest one is how long the executor blocked its
/// thread, and an outcome returned by a poll that began by the deadline and ended after it
/// came too late. The work wins a tie with its deadline: an outcome returned at the deadline,
/// or found ready when the engine comes to it after the deadline (another stage held the
/// thread), counts.
struct Running<'a> {
    slot: u32,
    /// The executor's future; `None` once it has been dropped (the attempt ended).
    work: Option<BoxFuture<'a, Result<StageOutcome, ExecutorError>>>,
    /// Boxed: most stages have no timeout, and a smaller attempt moves more cheaply.
    limit: Option<Box<Limit>>,
    clock: &'a dyn Clock,
    /// When the executor got the thread for its first poll: the attempt's start, as making
    /// its future counts too. `None` once polled.
    entered: Option<Timestamp>,
    /// The longest the executor held the thread in one poll, in milliseconds of the clock.
    blocked: u64,
}

/// The deadline an attempt runs against.
struct Limit {
    sleep: BoxFuture<'static, ()>,
    at: Timestamp,
    kind: TimeoutKind,
}

/// How an attempt under way ended, and what the engine saw of it.
struct Ended {
    slot: usize,
    end: AttemptEnd,
    /// When it ended, on the clock.
    at: Timestamp,
    /// The longest the executor held the thread in one poll, in milliseconds.
    blocked: u64,
    /// The text of a panic while the executor's future was dropped.
    /// Boxed text: it is rare, and `Ended` then stays small enough to move without a copy
    /// loop.
    drop_panic: Option<Box<str>>,
}

impl Running<'_> {
    /// Drops the executor's future now, if it is still there, so that what it leaves in its
    /// partial log is there when the attempt is settled; returns the text of a panic it
    /// raised while dropped.
    fn drop_work(&mut self) -> Option<Box<str>> {
        let work = self.work.take()?;
        std::panic::catch_unwind(AssertUnwindSafe(move || drop(work)))
            .err()
            .map(|payload| message(payload.as_ref()).into())
    }
}

impl Drop for Running<'_> {
    /// A step dropped by its host drops its attempts here: a panic in an executor's drop is
    /// contained (there is no report left to tell it to).
    fn drop(&mut self) {
        if self.work.is_some() {
            let _ = self.drop_work();
        }
    }
}

impl Future for Running<'_> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        self.get_mut().poll_attempt(cx)
    }
}

impl Running<'_> {
    /// Polls the attempt: [`Future::poll`], and the scheduler's first poll as the attempt
    /// starts, into which it is inlined so that an attempt that ends at once is never moved.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn poll_attempt(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self;
        let Some(work) = this.work.as_mut() else {
            // Ended already: the running set never polls it again.
            return Poll::Pending;
        };
        let before = this.entered.take().unwrap_or_else(|| this.clock.now());
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx)));
        let after = this.clock.now();
        this.blocked = this
            .blocked
            .max(after.as_millis().saturating_sub(before.as_millis()));
        let end = match polled {
            Ok(Poll::Ready(result)) => match &this.limit {
                Some(limit) if before <= limit.at && after > limit.at => {
                    AttemptEnd::Late(limit.kind, result)
                }
                _ => match result {
                    Ok(outcome) => AttemptEnd::Finished(outcome),
                    Err(error) => AttemptEnd::Errored(error),
                },
            },
            Err(panic) => AttemptEnd::Panicked(panicked(panic.as_ref())),
            Ok(Poll::Pending) => match &mut this.limit {
                Some(limit) => match limit.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => AttemptEnd::TimedOut(limit.kind),
                    Poll::Pending => return Poll::Pending,
                },
                None => return Poll::Pending,
            },
        };
        let drop_panic = this.drop_work();
        Poll::Ready(Ended {
            slot: this.slot as usize,
            end,
            at: after,
            blocked: this.blocked,
            drop_panic,
        })
    }
}

/// What starting an attempt gave.
enum Started<'a> {
    /// The attempt runs.
    Running(Running<'a>),
    /// The attempt ended before it could run (the executor panicked while making its future,
    /// or the stage's time had run out).
    Ended(AttemptEnd),
}

/// What the scheduler makes of an ended attempt.
enum Settled {
    /// The stage is finished; whether it succeeded.
    Done(bool),
    /// The stage tries again once the clock reads this.
    Retry(Timestamp),
}

/// One step run's tables, indexed by slot (a stage's position among the step's stages).
struct StepState<'a> {
    engine: &'a Engine,
    run: &'a StepRun<'a>,
    hooks: &'a (dyn Fn(usize) -> StageHooks<'a> + Sync),
    /// The graph index of each slot's stage.
    members: Vec<usize>,
    /// The slot of each graph index (or [`NOT_IN_STEP`]), and the outputs of finished
    /// stages that produced any, shared with every later stage's context (which may read
    /// any earlier stage's outputs).
    table: &'a StepOutputs,
    phase: Vec<Phase>,
    /// Each stage's report, filled in as it runs: a stage that never starts keeps the
    /// "skipped" report it begins with.
    reports: Vec<StageReport>,
    /// Each started stage's span (feature `tracing`), the parent of its attempts' spans;
    /// closed when the stage finishes.
    #[cfg(feature = "tracing")]
    spans: Vec<Option<tracing::Span>>,
    /// Host code that misbehaved, contained.
    warnings: Warnings,
}

/// The warnings of a step, as they happen (see [`Warning`]).
#[derive(Default)]
struct Warnings {
    list: Vec<Warning>,
    /// Where the step's [`Warning::ObserverPanicked`] is in `list`, once the observer panicked.
    observer: Option<usize>,
    /// The slots already warned about for blocking.
    blocked: Vec<u32>,
}

impl Warnings {
    /// Tells the observer the event `event` makes, containing a panic.
    #[inline]
    fn emit(&mut self, engine: &Engine, clock: &dyn Clock, event: impl FnOnce() -> Event) {
        if let Err(panic) = engine.emit(event) {
            self.observer_panicked(engine, clock, panic);
        }
    }

    /// Keeps `warning` and tells the observer.
    #[cold]
    fn warn(&mut self, engine: &Engine, clock: &dyn Clock, warning: Warning) {
        self.list.push(warning.clone());
        let at = clock.now();
        if let Err(panic) = engine.emit(|| Event::Warning { warning, at }) {
            self.observer_panicked(engine, clock, panic);
        }
    }

    /// The observer panicked: the first time, a warning (told to the observer, which may
    /// panic again: that only counts); after that, one more time counted.
    #[cold]
    fn observer_panicked(&mut self, engine: &Engine, clock: &dyn Clock, panic: ObserverPanic) {
        if let Some(at) = self.observer {
            if let Some(Warning::ObserverPanicked { times, .. }) = self.list.get_mut(at) {
                *times += 1;
            }
            return;
        }
        self.observer = Some(self.list.len());
        self.warn(
            engine,
            clock,
            Warning::ObserverPanicked {
                event: panic.event.to_owned(),
                message: panic.message,
                times: 1,
            },
        );
    }
}

impl Engine {
    /// Runs every stage of `run.step`, calling `hooks(stage index)` for each stage's executor
    /// and retry predicate, and reports what happened. Never fails: failures are in the report.
    pub(crate) async fn run_step<'a>(
        &'a self,
        run: &'a StepRun<'a>,
        hooks: &'a (dyn Fn(usize) -> StageHooks<'a> + Sync),
    ) -> StepReport {
        let running = self.run_step_untraced(run, hooks);
        #[cfg(feature = "tracing")]
        let running = tracing::Instrument::instrument(
            running,
            tracing::info_span!("step", release = %run.labels.release, step = %run.step),
        );
        running.await
    }

    async fn run_step_untraced<'a>(
        &'a self,
        run: &'a StepRun<'a>,
        hooks: &'a (dyn Fn(usize) -> StageHooks<'a> + Sync),
    ) -> StepReport {
        let graph = run.graph;
        let generation = self.cancel.generation();
        let started_at = run.clock.now();
        let members: Vec<usize> = (0..graph.len())
            .filter(|&i| graph.step_of(i) == run.step)
            .collect();
        let mut warnings = Warnings::default();
        warnings.emit(self, run.clock, || Event::StepStarted {
            release: run.labels.release.clone(),
            step: run.step,
            stages: members.len(),
            at: started_at,
        });
        let mut slot_of = vec![NOT_IN_STEP; graph.len()];
        for (slot, &i) in members.iter().enumerate() {
            slot_of[i] = slot as u32;
        }
        let n = members.len();
        let has_finally = members.iter().any(|&i| graph.is_finally(i));
        let mut state = StepState {
            engine: self,
            run,
            hooks,
            reports: members
                .iter()
                .map(|&i| StageReport::not_run(graph.spec(i).id.clone(), StageStatus::Skipped))
                .collect(),
            members,
            // Made here, in the run's own cell, so that every context reads it through the
            // labels it already holds: a context stays small enough to move cheaply.
            table: run.labels.outputs.get_or_init(|| StepOutputs {
                outputs: (0..n).map(|_| OnceLock::new()).collect(),
                slot_of,
                partial_logs: PartialLogs::default(),
            }),
            phase: vec![Phase::Waiting; n],
            #[cfg(feature = "tracing")]
            spans: vec![None; n],
            warnings,
        };
        if !run.done.is_empty() {
            state.take_done();
        }

        let mut stop = Stopper::new(self, run, generation, started_at);
        let outcome = state.run_phase(None, Some(&mut stop)).await;
        drop(stop);
        if has_finally {
            state.run_phase(Some(outcome), None).await;
        }

        let finished_at = run.clock.now();
        for (slot, phase) in state.phase.iter().enumerate() {
            if *phase == Phase::Waiting {
                // Never decided: the step stopped (a cancel or its timeout) first.
                state.reports[slot].skipped = Some(SkipReason::StepStopped);
                state
                    .warnings
                    .emit(self, run.clock, || Event::StageFinished {
                        stage: state.reports[slot].id.clone(),
                        status: StageStatus::Skipped,
                        attempts: 0,
                        at: finished_at,
                    });
            }
        }
        // As `StepReport::succeeded` says: allowed failures and condition skips count.
        let succeeded = state.reports.iter().all(StageReport::is_ok);
        state
            .warnings
            .emit(self, run.clock, || Event::StepFinished {
                release: run.labels.release.clone(),
                step: run.step,
                succeeded,
                at: finished_at,
            });
        StepReport {
            step: run.step,
            started_at,
            finished_at,
            outcome,
            stages: state.reports,
            warnings: state.warnings.list,
        }
    }
}

/// How many attempts a step settles in one poll before it yields to the executor that drives
/// it, so that a long run of stages that finish at once (cache hits, no-ops) does not hold a
/// runtime thread for the whole step.
const SETTLE_BUDGET: u32 = 256;

/// The scheduler's state for one phase of a step (the ordinary stages, or the finally ones).
struct PhaseRun<'a> {
    /// `Some(how the ordinary stages ended)` in the finally phase.
    finally_of: Option<StepOutcome>,
    /// Dependencies inside this phase still to finish, per slot; dependencies elsewhere
    /// (earlier steps, or ordinary stages for a finally stage) are already settled.
    waiting_on: Vec<u32>,
    ready: Ready,
    slots: Slots<'a>,
    /// Ready stages whose group is full, put back once the start loop is done.
    held_back: Vec<(usize, usize)>,
    /// Whether a dependency of each slot settled other than by succeeding: its condition
    /// is then decided in full.
    upset: Vec<bool>,
    /// Whether a failure stopped the phase under fail-fast: only stages whose condition is
    /// not the default may still start.
    stopped: bool,
    /// Attempts under way that did not finish when first polled.
    running: FuturesUnordered<Running<'a>>,
    /// Stages waiting out a retry backoff; they hold no worker.
    sleeping: FuturesUnordered<Wake>,
    outcome: StepOutcome,
}

impl<'a> StepState<'a> {
    /// Runs the ordinary stages (`finally_of == None`) or the finally stages (`Some(outcome
    /// of the ordinary ones)`), and returns how the phase ended.
    async fn run_phase(
        &mut self,
        finally_of: Option<StepOutcome>,
        mut stop: Option<&mut Stopper<'a>>,
    ) -> StepOutcome {
        let mut phase = self.begin_phase(finally_of);
        future::poll_fn(|cx| self.poll_phase(&mut phase, stop.as_deref_mut(), cx)).await
    }

    /// Counts every stage's dependencies in the phase and makes the stages without any ready.
    fn begin_phase(&mut self, finally_of: Option<StepOutcome>) -> PhaseRun<'a> {
        let engine = self.engine;
        let graph = self.run.graph;
        let finally = finally_of.is_some();
        let waiting_on: Vec<u32> = self
            .members
            .iter()
            .zip(&self.phase)
            .map(|(&i, phase)| {
                // A stage done before the phase began (in a run cut off by a crash) never
                // becomes ready, and does not hold up its dependents.
                if graph.is_finally(i) != finally || *phase == Phase::Done {
                    return OTHER_PHASE;
                }
                graph
                    .deps_of(i)
                    .iter()
                    .filter(|&&d| {
                        let slot = self.table.slot_of[d as usize];
                        slot != NOT_IN_STEP
                            && graph.is_finally(d as usize) == finally
                            && self.phase[slot as usize] != Phase::Done
                    })
                    .count() as u32
            })
            .collect();
        let n = waiting_on.len();
        let mut phase = PhaseRun {
            finally_of,
            waiting_on,
            ready: Ready::new(engine.workers.is_some() || !engine.group_limits.is_empty()),
            slots: Slots::new(engine.workers, &engine.group_limits),
            held_back: Vec::new(),
            upset: vec![false; n],
            stopped: false,
            running: FuturesUnordered::new(),
            sleeping: FuturesUnordered::new(),
            outcome: StepOutcome::Succeeded,
        };
        let mut skipped = Vec::new();
        for slot in 0..n {
            if phase.waiting_on[slot] == 0 {
                self.unblocked(&mut phase, slot, &mut skipped);
            }
        }
        self.propagate(&mut phase, skipped);
        phase
    }

    /// Every dependency of the stage in `slot` has settled: it is ready if its condition
    /// says so (at once for the default condition after successes), or it is skipped, and
    /// then pushed on `skipped` for its own dependents to hear of.
    fn unblocked(&mut self, phase: &mut PhaseRun<'a>, slot: usize, skipped: &mut Vec<usize>) {
        let graph = self.run.graph;
        let i = self.members[slot];
        let verdict = if phase.upset[slot] || graph.is_conditional(i) {
            self.decide(slot)
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) if !phase.stopped || graph.is_conditional(i) => {
                phase.ready.push(graph, i, slot);
                let clock = self.run.clock;
                self.warnings
                    .emit(self.engine, clock, || Event::StageReady {
                        stage: graph.spec(i).id.clone(),
                        at: clock.now(),
                    });
            }
            Ok(()) => {
                self.skip(slot, SkipReason::StepStopped);
                skipped.push(slot);
            }
            Err(reason) => {
                self.skip(slot, reason);
                skipped.push(slot);
            }
        }
    }

    /// The condition of the stage in `slot`, over how its dependencies in this phase
    /// settled (those elsewhere succeeded before it).
    fn decide(&self, slot: usize) -> Result<(), SkipReason> {
        let graph = self.run.graph;
        let i = self.members[slot];
        let finally = graph.is_finally(i);
        let dependencies = graph.deps_of(i).iter().filter_map(|&d| {
            let d = d as usize;
            let d_slot = self.table.slot_of[d];
            (d_slot != NOT_IN_STEP && graph.is_finally(d) == finally)
                .then(|| (&graph.spec(d).id, settled(&self.reports[d_slot as usize])))
        });
        graph.spec(i).when.decide(dependencies)
    }

    /// The stage in `slot` is skipped for `reason` without running.
    fn skip(&mut self, slot: usize, reason: SkipReason) {
        let now = self.run.clock.now();
        let report = &mut self.reports[slot];
        report.skipped = Some(reason);
        self.phase[slot] = Phase::Done;
        self.warnings
            .emit(self.engine, self.run.clock, || Event::StageFinished {
                stage: report.id.clone(),
                status: StageStatus::Skipped,
                attempts: 0,
                at: now,
            });
    }

    /// The stages in `settled` ended (other than by succeeding, or were skipped): each of
    /// their dependents in this phase hears of it, and those skipped in turn pass it on.
    fn propagate(&mut self, phase: &mut PhaseRun<'a>, mut settled: Vec<usize>) {
        let graph = self.run.graph;
        while let Some(slot) = settled.pop() {
            for &d in graph.dependents_row(self.members[slot]) {
                let d_slot = self.table.slot_of[d as usize];
                if d_slot == NOT_IN_STEP {
                    continue;
                }
                let d_slot = d_slot as usize;
                phase.upset[d_slot] = true;
                let waiting = &mut phase.waiting_on[d_slot];
                *waiting -= 1;
                if *waiting == 0 {
                    self.unblocked(phase, d_slot, &mut settled);
                }
            }
        }
    }

    /// A stage failed under fail-fast: attempts under way and backoffs are dropped (their
    /// stages end cancelled), and from now on only stages with a condition of their own
    /// start; the others are skipped as their turn comes.
    fn fail_fast(&mut self, phase: &mut PhaseRun<'a>) {
        phase.stopped = true;
        self.drop_running(phase);
        drop(std::mem::take(&mut phase.sleeping));
        let graph = self.run.graph;
        let cut: Vec<usize> = (0..self.members.len())
            .filter(|&slot| matches!(self.phase[slot], Phase::Running | Phase::Backoff))
            .collect();
        if phase.slots.holds_group_places() {
            for &slot in &cut {
                if self.phase[slot] == Phase::Running {
                    if let Some(group) = graph.spec(self.members[slot]).group.as_deref() {
                        phase.slots.leave(group);
                    }
                }
            }
        }
        self.stop_running(&StageStatus::Cancelled);
        self.propagate(phase, cut);
    }

    /// Drives the phase: starts what may start, settles what ended, and returns the phase's
    /// outcome once nothing is left to run (or the step was stopped).
    ///
    /// A new attempt is polled once as it starts; only if it is still pending does it join
    /// the running set. Stages that finish at once (no-ops, cache hits) so cost no task.
    fn poll_phase(
        &mut self,
        phase: &mut PhaseRun<'a>,
        mut stop: Option<&mut Stopper<'a>>,
        cx: &mut Context<'_>,
    ) -> Poll<StepOutcome> {
        let graph = self.run.graph;
        let mut budget = SETTLE_BUDGET;
        loop {
            // A stop that came while the last stage finished (that stage may have cancelled
            // the step itself) wins over starting new stages.
            if let Some(why) = stop
                .as_deref()
                .and_then(|stop| stop.check(self.engine, self.run.clock))
            {
                // Work that finished by now still counts, as it does against an attempt's
                // own deadline; nothing new starts.
                while let Poll::Ready(Some(ended)) = phase.running.poll_next_unpin(cx) {
                    self.ended(phase, ended);
                }
                return Poll::Ready(self.halt(phase, why));
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Every attempt that has finished, and every backoff that has ended, is settled
            // before any worker is handed out: when several attempts end at the same instant,
            // the stages the later ones release compete for the freed workers with those
            // already ready, by priority, instead of the first freed worker going to whatever
            // was ready before the rest were settled.
            if let Poll::Ready(Some(ended)) = phase.running.poll_next_unpin(cx) {
                self.ended(phase, ended);
                budget -= 1;
                continue;
            }
            if let Poll::Ready(Some(slot)) = phase.sleeping.poll_next_unpin(cx) {
                phase.ready.push(graph, self.members[slot], slot);
                continue;
            }
            let mut recheck = false;
            let mut started = false;
            while phase.slots.worker_free(phase.running.len()) {
                let Some(slot) = phase.ready.pop() else {
                    break;
                };
                let i = self.members[slot];
                if self.phase[slot] == Phase::Done {
                    // Queued after its backoff, then ended by fail-fast before it started.
                    continue;
                }
                if phase.stopped && !graph.is_conditional(i) {
                    // Ready before fail-fast stopped the phase, and not allowed to start now.
                    self.skip(slot, SkipReason::StepStopped);
                    self.propagate(phase, vec![slot]);
                    continue;
                }
                let group = phase
                    .slots
                    .limits_groups()
                    .then(|| graph.spec(i).group.as_deref())
                    .flatten();
                if group.is_some_and(|group| !phase.slots.enter(group)) {
                    phase.held_back.push((i, slot));
                    continue;
                }
                let ended = match self.start(slot, phase.finally_of) {
                    Started::Running(mut attempt) => match attempt.poll_attempt(cx) {
                        Poll::Ready(ended) => ended,
                        Poll::Pending => {
                            phase.running.push(attempt);
                            started = true;
                            continue;
                        }
                    },
                    Started::Ended(end) => Ended {
                        slot,
                        end,
                        at: self.run.clock.now(),
                        blocked: 0,
                        drop_panic: None,
                    },
                };
                started = true;
                self.ended(phase, ended);
                budget -= 1;
                // Back to the top if the budget is spent, or if the stage that just ended
                // cancelled the step or used up its time.
                let stopped = stop
                    .as_deref()
                    .is_some_and(|stop| stop.check(self.engine, self.run.clock).is_some());
                if budget == 0 || stopped {
                    recheck = true;
                    break;
                }
            }
            for (i, slot) in phase.held_back.drain(..) {
                phase.ready.push(graph, i, slot);
            }
            if phase.running.is_empty() && phase.sleeping.is_empty() && phase.ready.is_empty() {
                return Poll::Ready(phase.outcome);
            }
            // Attempts just started joined the running set, and those that ended at once may
            // have queued a backoff: polling both sets once more lets them track what is new
            // (and settles whatever ended meanwhile).
            if recheck || started {
                continue;
            }
            if let Some(stop) = stop.as_deref_mut() {
                if let Poll::Ready(why) = stop.future.as_mut().poll(cx) {
                    return Poll::Ready(self.halt(phase, why));
                }
            }
            return Poll::Pending;
        }
    }

    /// Settles the attempt of `slot` that ended as `end`: frees its group place, then either
    /// tells its dependents (which start or are skipped by their conditions), queues its
    /// retry, or (fail-fast) stops the phase.
    fn ended(&mut self, phase: &mut PhaseRun<'a>, ended: Ended) {
        let graph = self.run.graph;
        let Ended {
            slot,
            end,
            at,
            blocked,
            drop_panic,
        } = ended;
        self.misbehaved(slot, blocked, drop_panic);
        let i = self.members[slot];
        if phase.slots.holds_group_places() {
            if let Some(group) = graph.spec(i).group.as_deref() {
                phase.slots.leave(group);
            }
        }
        match self.settle(slot, end, at) {
            Settled::Retry(until) => {
                // The backoff is the scheduler's to wait out, so that the worker serves
                // another stage meanwhile.
                phase.sleeping.push(Wake {
                    sleep: self.run.clock.sleep_until(until),
                    slot,
                });
            }
            Settled::Done(true) => {
                let outputs = &self.reports[slot].outputs;
                if !outputs.is_empty() {
                    let _ = self.table.outputs[slot].set(Arc::new(outputs.clone()));
                }
                let clock = self.run.clock;
                let mut skipped = Vec::new();
                for &d in graph.dependents_row(i) {
                    let d_slot = self.table.slot_of[d as usize];
                    if d_slot == NOT_IN_STEP {
                        continue;
                    }
                    let d_slot = d_slot as usize;
                    let waiting = &mut phase.waiting_on[d_slot];
                    *waiting -= 1;
                    if *waiting == 0 {
                        // The common case, a dependent after successes only, needs no
                        // decision.
                        if phase.upset[d_slot] || phase.stopped || graph.is_conditional(d as usize)
                        {
                            self.unblocked(phase, d_slot, &mut skipped);
                        } else {
                            phase.ready.push(graph, d as usize, d_slot);
                            self.warnings
                                .emit(self.engine, clock, || Event::StageReady {
                                    stage: graph.spec(d as usize).id.clone(),
                                    at: clock.now(),
                                });
                        }
                    }
                }
                if !skipped.is_empty() {
                    self.propagate(phase, skipped);
                }
            }
            Settled::Done(false) => {
                if !self.reports[slot].continued {
                    phase.outcome = StepOutcome::Failed;
                    if phase.finally_of.is_none()
                        && self.engine.failure_policy == FailurePolicy::FailFast
                        && !phase.stopped
                    {
                        self.fail_fast(phase);
                    }
                }
                self.propagate(phase, vec![slot]);
            }
        }
    }

    /// The step was cancelled or ran out of time: ends the phase.
    fn halt(&mut self, phase: &mut PhaseRun<'a>, why: Stop) -> StepOutcome {
        match why {
            Stop::Cancelled => self.abandon(phase, &StageStatus::Cancelled, StepOutcome::Cancelled),
            Stop::TimedOut => self.abandon(
                phase,
                &StageStatus::TimedOut {
                    limit: TimeoutKind::Step,
                },
                StepOutcome::TimedOut,
            ),
        }
    }

    /// Stops the phase: drops the attempts under way and the backoffs (which cancels them;
    /// nothing new starts), ends their stages with `status`, and returns `outcome`.
    fn abandon(
        &mut self,
        phase: &mut PhaseRun<'a>,
        status: &StageStatus,
        outcome: StepOutcome,
    ) -> StepOutcome {
        self.drop_running(phase);
        drop(std::mem::take(&mut phase.sleeping));
        self.stop_running(status);
        outcome
    }

    /// Drops the attempts under way (which cancels them), telling what their executors did:
    /// blocked their thread, or panicked while dropped.
    fn drop_running(&mut self, phase: &mut PhaseRun<'a>) {
        for mut attempt in std::mem::take(&mut phase.running) {
            let drop_panic = attempt.drop_work();
            self.misbehaved(attempt.slot as usize, attempt.blocked, drop_panic);
        }
    }

    /// Warns about what the executor of the attempt under way in `slot` did: blocked its
    /// thread for `blocked` ms in one poll (told once per stage and step, past the engine's
    /// threshold), or panicked while its future was dropped.
    #[inline]
    fn misbehaved(&mut self, slot: usize, blocked: u64, drop_panic: Option<Box<str>>) {
        let threshold = self.engine.blocking_threshold;
        let blocked_too_long = Duration::from_millis(blocked) > threshold;
        if !blocked_too_long && drop_panic.is_none() {
            return;
        }
        self.warn_misbehaved(slot, blocked_too_long.then_some(blocked), drop_panic);
    }

    #[cold]
    fn warn_misbehaved(&mut self, slot: usize, blocked: Option<u64>, drop_panic: Option<Box<str>>) {
        let stage = self.reports[slot].id.clone();
        let attempt = self.reports[slot].attempts.len() as u32;
        let (engine, clock) = (self.engine, self.run.clock);
        if let Some(blocked) = blocked {
            if !self.warnings.blocked.contains(&(slot as u32)) {
                self.warnings.blocked.push(slot as u32);
                let warning = Warning::ExecutorBlocked {
                    stage: stage.clone(),
                    attempt,
                    blocked: Duration::from_millis(blocked),
                };
                self.warnings.warn(engine, clock, warning);
            }
        }
        if let Some(message) = drop_panic {
            let warning = Warning::DropPanicked {
                stage,
                attempt,
                message: message.into(),
            };
            self.warnings.warn(engine, clock, warning);
        }
    }

    /// Starts the next attempt of the stage in `slot` (its first, or the one after a backoff).
    fn start(&mut self, slot: usize, step_outcome: Option<StepOutcome>) -> Started<'a> {
        let run = self.run;
        let i = self.members[slot];
        let spec = run.graph.spec(i);
        let now = run.clock.now();
        let report = &mut self.reports[slot];
        self.phase[slot] = Phase::Running;
        let number = report.attempts.len() as u32 + 1;
        report.started_at.get_or_insert(now);
        // The spec's timeouts are read only for stages that have one (the graph knows which):
        // the scheduler itself then reads no spec for most stages.
        let timed = run.graph.is_timed(i);
        let stage_deadline = if timed {
            stage_deadline(spec, report)
        } else {
            None
        };
        // A stage that waited for a worker after its backoff may have run out of time.
        if number > 1 && stage_deadline.is_some_and(|d| now >= d) {
            return Started::Ended(AttemptEnd::Expired);
        }
        // The attempt is polled as soon as it starts (see `poll_phase`): the executor's code
        // runs now.
        self.warnings
            .emit(self.engine, run.clock, || Event::AttemptStarted {
                stage: spec.id.clone(),
                attempt: number,
                at: now,
            });
        // Until it ends, the attempt reads as cancelled: what it is if the step stops first.
        report.attempts.push(Attempt {
            number,
            started_at: now,
            finished_at: now,
            status: StageStatus::Cancelled,
        });
        let ctx = StageContext {
            spec,
            labels: &run.labels,
            inputs: inputs_of(run, self.table, i),
            attempt: number,
            slot: slot as u32,
            step_outcome,
            dependencies: if step_outcome.is_some() {
                dependency_statuses(run, &self.table.slot_of, &self.reports, i)
            } else {
                Vec::new()
            },
            partial_log: std::sync::OnceLock::new(),
            key: std::sync::OnceLock::new(),
        };
        let limit = if timed {
            attempt_limit(spec, now, stage_deadline)
        } else {
            None
        };
        // An executor may panic while making its future as well as while it runs: both fail
        // the attempt, neither escapes the engine.
        let executor = (self.hooks)(i).executor;
        // The executor's time starts here: an observer's, told of the attempt above, is not
        // the executor's to answer for.
        let entered = if self.engine.observer.is_some() {
            run.clock.now()
        } else {
            now
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| executor.run(ctx))) {
            Ok(work) => {
                // A stage in a concurrency group runs inside it: waiting for it, holding it,
                // and cut off if a newer run takes it.
                // The packed flag first: most stages never read their spec here.
                let work = match run.graph.is_exclusive(i).then_some(&spec.concurrency) {
                    Some(Some(concurrency)) => {
                        let who = format!("release `{}` stage `{}`", run.labels.release, spec.id);
                        self.engine.concurrency.run(concurrency, &who, work)
                    }
                    _ => work,
                };
                #[cfg(feature = "tracing")]
                let work = self.traced(slot, number, work);
                Started::Running(Running {
                    slot: slot as u32,
                    work: Some(work),
                    limit: limit.map(|(at, kind)| {
                        Box::new(Limit {
                            sleep: run.clock.sleep_until(at),
                            at,
                            kind,
                        })
                    }),
                    clock: run.clock,
                    entered: Some(entered),
                    blocked: 0,
                })
            }
            Err(panic) => Started::Ended(AttemptEnd::Panicked(panicked(panic.as_ref()))),
        }
    }

    /// Records how the attempt under way in `slot` ended and decides what comes next: the
    /// stage is done, or it tries again after a backoff.
    fn settle(&mut self, slot: usize, end: AttemptEnd, now: Timestamp) -> Settled {
        let engine = self.engine;
        let run = self.run;
        let i = self.members[slot];
        let spec = run.graph.spec(i);
        let report = &mut self.reports[slot];
        let number = report.attempts.len() as u32;
        let (status, timed_out) = match end {
            AttemptEnd::Expired => return self.finish(slot, STAGE_TIMED_OUT, now),
            AttemptEnd::Finished(outcome) => {
                let StageOutcome {
                    status,
                    logs,
                    outputs,
                    artifact,
                } = outcome;
                if !logs.is_empty() {
                    report.logs.extend(logs);
                }

                if status.is_success() {
                    if let Some(attempt) = report.attempts.last_mut() {
                        attempt.finished_at = now;
                        attempt.status = StageStatus::Succeeded;
                    }
                    // Moved in whether empty or not, so that the outcome's map is not
                    // dropped here (a call and an iterator a stage): it is dropped with
                    // the report instead, which drops its map anyway. The report's own map
                    // is the empty one it was made with (only a success sets outputs, and
                    // a success ends the stage), which owns nothing, so forgetting it leaks
                    // nothing.
                    debug_assert!(report.outputs.is_empty());
                    std::mem::forget(std::mem::replace(&mut report.outputs, outputs));
                    if let Some(artifact) = artifact {
                        report.artifact = Some(artifact);
                    }
                    return self.finish(slot, StageStatus::Succeeded, now);
                }
                (status, false)
            }
            AttemptEnd::Errored(error) if error.is::<Superseded>() => {
                return self.superseded(slot, error, now);
            }
            AttemptEnd::Errored(error) => {
                let reason = format!("executor error: {error}");
                // Kept for the host to downcast; cleared again if the stage tries once more,
                // so that a stage's error is always its last attempt's.
                report.error.0 = Some(SharedError::new(error));
                (StageStatus::Failed { reason }, false)
            }
            AttemptEnd::Panicked(reason) => (StageStatus::Failed { reason }, false),
            AttemptEnd::TimedOut(limit) => {
                // The attempt's future is gone: its log is what it left behind.
                report
                    .logs
                    .extend(self.table.partial_logs.take(slot as u32, number));
                (StageStatus::TimedOut { limit }, true)
            }
            AttemptEnd::Late(limit, result) => {
                // It returned, too late: its log is what it returned, else what it left.
                match result {
                    Ok(outcome) => report.logs.extend(outcome.logs),
                    Err(_) => report
                        .logs
                        .extend(self.table.partial_logs.take(slot as u32, number)),
                }
                (StageStatus::TimedOut { limit }, true)
            }
        };
        if let Some(attempt) = report.attempts.last_mut() {
            attempt.finished_at = now;
            attempt.status = status.clone();
        }
        let failure = AttemptFailure {
            attempt: number,
            reason: match &status {
                StageStatus::Failed { reason } => reason.clone(),
                other => other.to_string(),
            },
            timed_out,
        };
        self.warnings
            .emit(engine, run.clock, || Event::AttemptFailed {
                stage: spec.id.clone(),
                attempt: number,
                status: status.clone(),
                at: now,
            });
        let decision = self.decide_retry(slot, &failure, now);
        let (delay, until) = match decision {
            Retry::After { delay, until } => (delay, until),
            Retry::GiveUp => return self.finish(slot, status, now),
            Retry::OutOfTime => {
                // The stage timed out: the last attempt's error is not why it ended.
                self.reports[slot].error.0 = None;
                return self.finish(slot, STAGE_TIMED_OUT, now);
            }
        };
        self.reports[slot].error.0 = None;
        self.warnings.emit(engine, run.clock, || Event::Retrying {
            stage: spec.id.clone(),
            next_attempt: number + 1,
            delay,
            at: now,
        });
        self.phase[slot] = Phase::Backoff;
        Settled::Retry(until)
    }

    /// A newer run took the concurrency group of the stage in `slot`: it ends cancelled,
    /// not retried, with the reason in its log and `error` kept.
    fn superseded(&mut self, slot: usize, error: ExecutorError, now: Timestamp) -> Settled {
        let report = &mut self.reports[slot];
        report.logs.push(crate::executor::LogLine {
            stream: crate::executor::Stream::Stderr,
            text: error.to_string(),
        });
        report.error.0 = Some(SharedError::new(error));
        if let Some(attempt) = report.attempts.last_mut() {
            attempt.finished_at = now;
            attempt.status = StageStatus::Cancelled;
        }
        self.finish(slot, StageStatus::Cancelled, now)
    }

    /// Whether the stage in `slot` tries again after `failure` at `now` (see
    /// [`retry::decide`]). A retry predicate that panics is taken as "no": the stage ends with
    /// this failure, and the panic is told.
    fn decide_retry(&mut self, slot: usize, failure: &AttemptFailure, now: Timestamp) -> Retry {
        let (engine, run, hooks) = (self.engine, self.run, self.hooks);
        let i = self.members[slot];
        let spec = run.graph.spec(i);
        let mut predicate_panic = None;
        let decision = retry::decide(
            spec.retry.unwrap_or_default(),
            failure,
            |failure| {
                hooks(i).retry_if.is_none_or(|wanted| {
                    std::panic::catch_unwind(AssertUnwindSafe(|| wanted(failure))).unwrap_or_else(
                        |payload| {
                            predicate_panic = Some(message(payload.as_ref()).to_owned());
                            false
                        },
                    )
                })
            },
            engine.seed,
            i,
            now,
            stage_deadline(spec, &self.reports[slot]),
        );
        if let Some(message) = predicate_panic {
            let warning = Warning::RetryPredicatePanicked {
                stage: spec.id.clone(),
                attempt: failure.attempt,
                message,
            };
            self.warnings.warn(engine, run.clock, warning);
        }
        decision
    }

    /// The attempt's work inside its span, a child of its stage's span (opened with the
    /// stage's first attempt, as a child of the step's).
    #[cfg(feature = "tracing")]
    fn traced(
        &mut self,
        slot: usize,
        number: u32,
        work: BoxFuture<'a, Result<StageOutcome, ExecutorError>>,
    ) -> BoxFuture<'a, Result<StageOutcome, ExecutorError>> {
        let run = self.run;
        let stage = self.spans[slot].get_or_insert_with(|| {
            let id = &run.graph.spec(self.members[slot]).id;
            tracing::info_span!("stage", stage = %id, step = %run.step)
        });
        let attempt = tracing::info_span!(parent: &*stage, "attempt", attempt = number);
        Box::pin(tracing::Instrument::instrument(work, attempt))
    }

    /// The stage in `slot` ended with `status` at `now`.
    ///
    /// Always inlined: where the status is a constant (every success), it is then written into the
    /// report directly instead of being built on the stack and read back, which stalled on
    /// every stage (the read of a value just written in other widths).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn finish(&mut self, slot: usize, status: StageStatus, now: Timestamp) -> Settled {
        #[cfg(feature = "tracing")]
        if let Some(span) = self.spans[slot].take() {
            span.in_scope(|| tracing::info!(status = %status, "stage finished"));
        }
        let report = &mut self.reports[slot];
        let succeeded = status.is_success();
        self.warnings
            .emit(self.engine, self.run.clock, || Event::StageFinished {
                stage: report.id.clone(),
                status: status.clone(),
                attempts: report.attempts.len() as u32,
                at: now,
            });
        // A failure the stage is allowed is still its status; the flag says it is allowed.
        // Read only on failure, through a call the compiler cannot hoist: as a field read
        // behind `&&`, the spec's byte was loaded for every stage (a cache miss per stage on
        // big graphs).
        report.continued = !succeeded && allowed_to_fail(self.run.graph, self.members[slot]);
        report.status = status;
        report.finished_at = Some(now);
        self.phase[slot] = Phase::Done;
        if let Some(settled) = self.run.on_settled {
            settled(report);
        }
        Settled::Done(succeeded)
    }

    /// Marks the stages of [`StepRun::done`] (those of this step that succeeded) as done
    /// with their reports and outputs, before anything starts. A finally stage is kept only
    /// if every ordinary stage of the step is: it ran after them, and seeing them run again
    /// is its job.
    fn take_done(&mut self) {
        let graph = self.run.graph;
        for report in self.run.done {
            let Some(i) = graph.index_of(report.id.as_str()) else {
                continue;
            };
            let slot = self.table.slot_of[i];
            if slot == NOT_IN_STEP || !report.status.is_success() {
                continue;
            }
            let slot = slot as usize;
            self.phase[slot] = Phase::Done;
            self.reports[slot] = report.clone();
        }
        let ordinary_left = self
            .members
            .iter()
            .zip(&self.phase)
            .any(|(&i, phase)| !graph.is_finally(i) && *phase != Phase::Done);
        if ordinary_left {
            for (slot, &i) in self.members.iter().enumerate() {
                if graph.is_finally(i) && self.phase[slot] == Phase::Done {
                    self.phase[slot] = Phase::Waiting;
                    self.reports[slot] =
                        StageReport::not_run(graph.spec(i).id.clone(), StageStatus::Skipped);
                }
            }
        }
        // The outputs of the stages kept, which their dependents read.
        for (slot, phase) in self.phase.iter().enumerate() {
            let outputs = &self.reports[slot].outputs;
            if *phase == Phase::Done && !outputs.is_empty() {
                let _ = self.table.outputs[slot].set(Arc::new(outputs.clone()));
            }
        }
    }

    /// Ends every started, unfinished stage with `status` (its attempt's future was just
    /// dropped, or it was between attempts).
    fn stop_running(&mut self, status: &StageStatus) {
        let now = self.run.clock.now();
        for slot in 0..self.members.len() {
            match self.phase[slot] {
                Phase::Running => {
                    let report = &mut self.reports[slot];
                    if let Some(attempt) = report.attempts.last_mut() {
                        attempt.finished_at = now;
                        attempt.status = status.clone();
                        // The attempt's future was just dropped: its log is what it left.
                        let kept = self.table.partial_logs.take(slot as u32, attempt.number);
                        report.logs.extend(kept);
                    }
                }
                Phase::Backoff => {}
                Phase::Waiting | Phase::Done => continue,
            }
            self.finish(slot, status.clone(), now);
        }
    }
}

/// Whether stage `i` may fail without failing its step (its spec's `continue_on_error`).
#[cold]
#[inline(never)]
fn allowed_to_fail(graph: &crate::graph::StageGraph, i: usize) -> bool {
    graph.spec(i).continue_on_error
}

/// How a settled stage ended, as its dependents' conditions see it.
pub(super) fn settled(report: &StageReport) -> DependencyEnd {
    match &report.status {
        StageStatus::Succeeded => DependencyEnd::Succeeded,
        StageStatus::Skipped => DependencyEnd::Skipped {
            after_failure: report
                .skipped
                .as_ref()
                .is_none_or(SkipReason::after_failure),
        },
        _ => DependencyEnd::Failed {
            allowed: report.continued,
        },
    }
}

/// The outputs of stage `i`'s direct dependencies, from this step or earlier ones.
fn inputs_of<'a>(
    run: &StepRun<'a>,
    table: &StepOutputs,
    i: usize,
) -> Vec<(&'a StageId, Arc<Outputs>)> {
    let graph = run.graph;
    // A dependency without outputs has nothing to hand over: leaving it out spares most
    // stages an allocation, and its spec (for its id) is read only when it has some.
    let mut inputs = Vec::new();
    for &d in graph.deps_of(i) {
        let d = d as usize;
        let outputs = match table.slot_of[d] {
            NOT_IN_STEP if run.prior_outputs.is_empty() => None,
            NOT_IN_STEP => run.prior_outputs.get(&graph.spec(d).id),
            slot => table.outputs[slot as usize].get(),
        };
        if let Some(outputs) = outputs.filter(|o| !o.is_empty()) {
            inputs.push((&graph.spec(d).id, Arc::clone(outputs)));
        }
    }
    inputs
}

/// How each direct dependency of stage `i` ended, for a finally stage: those in this step from
/// their reports (finished, or skipped), those in earlier steps succeeded with their step.
fn dependency_statuses<'a>(
    run: &StepRun<'a>,
    slot_of: &[u32],
    reports: &[StageReport],
    i: usize,
) -> Vec<(&'a StageId, StageStatus)> {
    let graph = run.graph;
    graph
        .deps_of(i)
        .iter()
        .map(|&d| {
            let id = &graph.spec(d as usize).id;
            let status = match slot_of[d as usize] {
                NOT_IN_STEP => StageStatus::Succeeded,
                slot => reports[slot as usize].status.clone(),
            };
            (id, status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, PoisonError};

    use crate::artifact::ArtifactRef;
    use crate::engine::{Engine, StageHooks, StageReport, StepReport, StepRun};
    use crate::executor::{self, StageOutcome, StageStatus, StepLabels, idempotency_key};
    use crate::graph::{StageGraph, StageSpec, Step};
    use crate::id::ReleaseId;
    use crate::time::{ManualClock, Timestamp, run_virtual};

    /// `fetch` → `compile` → `package` → `publish` in the build step, `notify` (finally)
    /// after `publish`, and `unit` in the test step.
    fn graph() -> StageGraph {
        StageGraph::builder()
            .stage(StageSpec::build("fetch"))
            .stage(StageSpec::build("compile").after("fetch"))
            .stage(StageSpec::build("package").after("compile"))
            .stage(StageSpec::build("publish").after("package"))
            .stage(StageSpec::build("notify").after("publish").finally())
            .stage(StageSpec::test("unit").after("compile"))
            .build()
            .unwrap()
    }

    /// Runs the build step of [`graph`] with `done` carried over, in the run claimed at 7.
    /// Returns the report, the stages the executor ran (in order), and the stages the
    /// settle hook was told about (in order).
    fn run_with(done: &[StageReport]) -> (StepReport, Vec<String>, Vec<String>) {
        let graph = graph();
        let clock = ManualClock::new(Timestamp::EPOCH);
        let release = ReleaseId::new("r1").unwrap();
        let ran = Mutex::new(Vec::new());
        let executor = executor::from_fn(|ctx| {
            ran.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ctx.stage().to_string());
            let seen: Vec<String> = ctx
                .inputs()
                .filter_map(|(id, outputs)| outputs.get("v").map(|v| format!("{id}={v}")))
                .collect();
            let mut outcome = StageOutcome::success()
                .output("v", format!("{}[{}]", ctx.stage(), seen.join(",")))
                .output("key", ctx.idempotency_key());
            if ctx.stage() == "compile" {
                outcome = outcome.artifact(ArtifactRef::from_bytes("app", b"app"));
            }
            Ok(outcome)
        });
        let settled = Mutex::new(Vec::new());
        let on_settled = |report: &StageReport| {
            settled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(report.id.to_string());
        };
        let prior = BTreeMap::new();
        let step_outputs = std::sync::OnceLock::new();
        let run = StepRun {
            graph: &graph,
            step: Step::Build,
            labels: StepLabels {
                graph: &graph,
                clock: &clock,
                prior_outputs: &prior,
                outputs: &step_outputs,
                release: &release,
                revision: "4f2a9c1",
                artifact: None,
                environment: None,
                claim: 7,
            },
            prior_outputs: &prior,
            clock: &clock,
            cancel: None,
            done,
            on_settled: Some(&on_settled),
        };
        let hooks = |_: usize| StageHooks {
            executor: &executor,
            retry_if: None,
        };
        let engine = Engine::new();
        let report = run_virtual(&clock, engine.run_step(&run, &hooks));
        let ran = ran.into_inner().unwrap_or_else(PoisonError::into_inner);
        let settled = settled.into_inner().unwrap_or_else(PoisonError::into_inner);
        (report, ran, settled)
    }

    #[test]
    fn stages_done_before_are_not_run_and_feed_their_dependents_as_they_were() {
        let (full, ran, settled) = run_with(&[]);
        assert!(full.succeeded());
        assert_eq!(ran, ["fetch", "compile", "package", "publish", "notify"]);
        assert_eq!(settled, ran, "every stage is told as it settles");

        // `fetch` and `compile` carried over from the run a crash cut off.
        let done: Vec<StageReport> = full.stages[..2].to_vec();
        let (resumed, ran, settled) = run_with(&done);
        assert_eq!(ran, ["package", "publish", "notify"]);
        assert_eq!(settled, ran, "stages done before are not settled again");
        assert_eq!(resumed.stages[..2], done[..], "reported as they were");
        assert_eq!(resumed.stages, full.stages, "the same run, up to times");
        assert_eq!(
            resumed.stage("package").unwrap().outputs["v"],
            "package[compile=compile[fetch=fetch[]]]",
            "the outputs of a stage done before reach its dependents"
        );
        assert!(resumed.stage("compile").unwrap().artifact.is_some());
        let release = ReleaseId::new("r1").unwrap();
        assert_eq!(
            resumed.stage("package").unwrap().outputs["key"],
            idempotency_key(&release, Step::Build, &"package".parse().unwrap(), 7, 1)
        );
    }

    #[test]
    fn a_finally_stage_is_carried_over_only_with_every_ordinary_stage() {
        let (full, _, _) = run_with(&[]);
        let notify = full.stage("notify").unwrap().clone();
        let (_, ran, _) = run_with(&[full.stages[0].clone(), notify.clone()]);
        assert_eq!(ran, ["compile", "package", "publish", "notify"]);
        let mut all = full.stages[..4].to_vec();
        all.push(notify);
        let (resumed, ran, _) = run_with(&all);
        assert!(ran.is_empty(), "{ran:?}");
        assert!(resumed.succeeded());
        assert_eq!(resumed.stages, full.stages);
    }

    #[test]
    fn reports_that_are_not_successes_of_the_step_are_not_carried_over() {
        let (full, _, _) = run_with(&[]);
        let mut failed = full.stages[0].clone();
        failed.status = StageStatus::Failed {
            reason: "flaky".to_owned(),
        };
        let mut other_step = full.stages[1].clone();
        other_step.id = "unit".parse().unwrap();
        let mut unknown = full.stages[1].clone();
        unknown.id = "nowhere".parse().unwrap();
        let (resumed, ran, _) = run_with(&[failed, other_step, unknown]);
        assert_eq!(ran, ["fetch", "compile", "package", "publish", "notify"]);
        assert_eq!(resumed.stages, full.stages);
    }
}
