//! The scheduler behind a step run: readiness, workers and groups, failure policy,
//! cancellation and step timeout, finally stages; and the per-stage driver with retries,
//! backoff, jitter and timeouts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::{self, Either, select};
use futures::stream::FuturesUnordered;

use super::{
    Attempt, AttemptFailure, Engine, Event, StageHooks, StageReport, StepOutcome, StepReport,
    StepRun,
};
use crate::executor::{Executor, LogLine, Outputs, StageContext, StageOutcome, StageStatus};
use crate::graph::StageId;
use crate::time::{Clock, Timestamp};

const NOT_IN_STEP: u32 = u32::MAX;

/// Why the ordinary phase was stopped from outside.
#[derive(Clone, Copy)]
enum Stop {
    Cancelled,
    TimedOut,
}

/// The attempts of stages whose futures were dropped before they finished (cancel, step
/// timeout, fail-fast), so that their reports still list every attempt they made. Stages
/// that finish on their own never touch it.
#[derive(Default)]
struct InFlight(Mutex<HashMap<usize, Progress>>);

/// One stage's finished attempts, and the number and start of the attempt under way.
type Progress = (Vec<Attempt>, Option<(u32, Timestamp)>);

impl InFlight {
    /// Every attempt of `slot`, the one under way (if any) ending now with `status`.
    fn take(&self, slot: usize, now: Timestamp, status: &StageStatus) -> Vec<Attempt> {
        let (mut attempts, current) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&slot)
            .unwrap_or_default();
        attempts.extend(current.map(|(number, started_at)| Attempt {
            number,
            started_at,
            finished_at: now,
            status: status.clone(),
        }));
        attempts
    }
}

/// A running stage's attempts, kept in the stage's own future. If that future is dropped
/// before the stage finishes, `Drop` hands them to [`InFlight`]; a stage that finishes on its
/// own takes no lock and no hash, which matters when a step runs 100,000 stages.
struct Tracker<'a> {
    sink: &'a InFlight,
    slot: usize,
    progress: Progress,
    finished: bool,
}

impl<'a> Tracker<'a> {
    /// Attempt `number` started `at`.
    fn begin(&mut self, number: u32, at: Timestamp) {
        self.progress.1 = Some((number, at));
    }

    /// The attempt under way ended as `attempt` says.
    fn end(&mut self, attempt: Attempt) {
        self.progress.0.push(attempt);
        self.progress.1 = None;
    }

    /// The stage finished on its own: its attempts go to its report.
    fn finish(mut self) -> Vec<Attempt> {
        self.finished = true;
        std::mem::take(&mut self.progress.0)
    }

    /// The stage gives its worker back for a retry backoff: its attempts wait in the shared
    /// map, where a stop finds them, until [`Tracker::resume`] takes them back.
    fn suspend(mut self) {
        self.finished = true;
        let progress = std::mem::take(&mut self.progress);
        self.sink
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.slot, progress);
    }

    /// The tracker of a stage that starts (or, after a backoff, resumes) in `slot`.
    fn resume(sink: &'a InFlight, slot: usize) -> Self {
        let progress = sink
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&slot)
            .unwrap_or_default();
        Tracker {
            sink,
            slot,
            progress,
            finished: false,
        }
    }
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let progress = std::mem::take(&mut self.progress);
            self.sink
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.slot, progress);
        }
    }
}

/// What stops a step's ordinary phase from outside: the future that resolves on a cancel or
/// at the step's deadline, for waiting, and what it waits for, for a cheap check between
/// stages (an atomic load and a clock read instead of polling the future).
struct Stopper<'a> {
    future: Pin<Box<dyn Future<Output = Stop> + Send + 'a>>,
    generation: u64,
    deadline: Option<Timestamp>,
}

impl Stopper<'_> {
    fn check(&self, engine: &Engine, clock: &dyn Clock) -> Option<Stop> {
        if engine.cancel.generation() != self.generation {
            Some(Stop::Cancelled)
        } else if self.deadline.is_some_and(|d| clock.now() >= d) {
            Some(Stop::TimedOut)
        } else {
            None
        }
    }
}

/// Where a stage's run stands while it waits out a retry backoff without a worker.
struct Resume<'a> {
    next_attempt: u32,
    started_at: Timestamp,
    stage_deadline: Option<Timestamp>,
    logs: Vec<LogLine>,
    inputs: Vec<(&'a StageId, Arc<Outputs>)>,
}

/// How a stage's driver hands control back to the scheduler.
enum Driven<'a> {
    /// The stage reached its final status.
    Done(usize, StageReport),
    /// The stage will try again at `until`; meanwhile its worker is free.
    Backoff {
        slot: usize,
        until: Timestamp,
        resume: Resume<'a>,
    },
}

/// How a driver starts: afresh with the stage's inputs at a time the scheduler read, or
/// after a backoff.
enum Start<'a> {
    Fresh(Vec<(&'a StageId, Arc<Outputs>)>, Timestamp),
    Resumed(Resume<'a>),
}

/// What the scheduler waits for next.
#[allow(
    clippy::large_enum_variant,
    reason = "lives for one loop turn; boxing the report would cost an allocation per stage"
)]
enum Next<'a> {
    Driven(Driven<'a>),
    Woke(usize),
    Stop(Stop),
}

/// Resolves to `slot` when `sleep` ends: a stage's backoff, held by the scheduler.
async fn wake_at(sleep: futures::future::BoxFuture<'static, ()>, slot: usize) -> usize {
    sleep.await;
    slot
}

/// Per-step bookkeeping, indexed by slot (a stage's position among the step's stages).
struct StepState {
    members: Vec<usize>,
    slot_of: Vec<u32>,
    results: Vec<Option<StageReport>>,
    outputs: Vec<Option<Arc<Outputs>>>,
    started: Vec<Option<Timestamp>>,
}

impl Engine {
    /// Runs every stage of `run.step`, calling `hooks(stage index)` for each stage's executor
    /// and retry predicate, and reports what happened. Never fails: failures are in the report.
    pub(crate) async fn run_step<'a>(
        &'a self,
        run: &'a StepRun<'a>,
        hooks: &'a (dyn Fn(usize) -> StageHooks<'a> + Sync),
    ) -> StepReport {
        let graph = run.graph;
        let generation = self.cancel.generation();
        let started_at = run.clock.now();
        let members: Vec<usize> = (0..graph.len())
            .filter(|&i| graph.spec(i).step == run.step)
            .collect();
        self.emit(|| Event::StepStarted {
            release: run.release.clone(),
            step: run.step,
            stages: members.len(),
            at: started_at,
        });
        let mut slot_of = vec![NOT_IN_STEP; graph.len()];
        for (slot, &i) in members.iter().enumerate() {
            slot_of[i] = slot as u32;
        }
        let n = members.len();
        let mut state = StepState {
            members,
            slot_of,
            results: vec![None; n],
            outputs: vec![None; n],
            started: vec![None; n],
        };

        let deadline = self.step_timeout.map(|d| started_at.saturating_add(d));
        let cancelled = self.cancel.cancelled(generation);
        let mut stop = Stopper {
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
            deadline,
        };
        let in_flight = InFlight::default();
        let outcome = self
            .run_phase(run, hooks, &mut state, &in_flight, None, Some(&mut stop))
            .await;
        drop(stop);
        self.run_phase(run, hooks, &mut state, &in_flight, Some(outcome), None)
            .await;

        let finished_at = run.clock.now();
        let stages: Vec<StageReport> = state
            .results
            .into_iter()
            .enumerate()
            .map(|(slot, report)| {
                report.unwrap_or_else(|| {
                    let id = graph.spec(state.members[slot]).id.clone();
                    self.emit(|| Event::StageFinished {
                        stage: id.clone(),
                        status: StageStatus::Skipped,
                        attempts: 0,
                        at: finished_at,
                    });
                    StageReport::not_run(id, StageStatus::Skipped)
                })
            })
            .collect();
        let report = StepReport {
            step: run.step,
            started_at,
            finished_at,
            outcome,
            stages,
        };
        self.emit(|| Event::StepFinished {
            release: run.release.clone(),
            step: run.step,
            succeeded: report.succeeded(),
            at: finished_at,
        });
        report
    }

    /// Runs the ordinary stages (`finally_of == None`) or the finally stages (`Some(outcome
    /// of the ordinary ones)`), and returns how the phase ended.
    #[allow(clippy::too_many_lines)] // One scheduling loop; splitting it would scatter its state.
    async fn run_phase<'a>(
        &'a self,
        run: &'a StepRun<'a>,
        hooks: &'a (dyn Fn(usize) -> StageHooks<'a> + Sync),
        state: &mut StepState,
        in_flight: &InFlight,
        finally_of: Option<StepOutcome>,
        mut stop: Option<&mut Stopper<'a>>,
    ) -> StepOutcome {
        let graph = run.graph;
        let finally = finally_of.is_some();
        let in_phase = |i: usize| graph.spec(i).finally == finally;
        // Dependencies inside this phase still to finish, per slot; dependencies elsewhere
        // (earlier steps, or ordinary stages for a finally stage) are already settled.
        let mut waiting_on: Vec<u32> = state
            .members
            .iter()
            .map(|&i| {
                graph
                    .deps_of(i)
                    .iter()
                    .filter(|&&d| state.slot_of[d as usize] != NOT_IN_STEP && in_phase(d as usize))
                    .count() as u32
            })
            .collect();
        let mut ready: BinaryHeap<(u64, Reverse<usize>)> = BinaryHeap::new();
        let now = run.clock.now();
        for (slot, &i) in state.members.iter().enumerate() {
            if in_phase(i) && waiting_on[slot] == 0 {
                ready.push((graph.priority_of(i), Reverse(slot)));
                self.emit(|| Event::StageReady {
                    stage: graph.spec(i).id.clone(),
                    at: now,
                });
            }
        }

        let workers = self.workers.unwrap_or(usize::MAX);
        let mut group_running: HashMap<&str, usize> = HashMap::new();
        let mut held_back = Vec::new();
        let mut running = FuturesUnordered::new();
        // Stages waiting out a retry backoff, and the runs they resume; neither holds a worker.
        let mut sleeping = FuturesUnordered::new();
        let mut resumes: HashMap<usize, Resume<'a>> = HashMap::new();
        let mut outcome = StepOutcome::Succeeded;
        let no_outputs: Arc<Outputs> = Arc::default();

        loop {
            // A stop that came while the last stage finished (that stage may have cancelled
            // the step itself) wins over starting new stages.
            let stopped = stop.as_deref().and_then(|stop| stop.check(self, run.clock));
            while stopped.is_none() && running.len() < workers {
                let Some((priority, Reverse(slot))) = ready.pop() else {
                    break;
                };
                let i = state.members[slot];
                let spec = graph.spec(i);
                if let Some(group) = spec.group.as_deref() {
                    if let Some(&limit) = self.group_limits.get(group) {
                        let count = group_running.entry(group).or_insert(0);
                        if *count >= limit {
                            held_back.push((priority, Reverse(slot)));
                            continue;
                        }
                        *count += 1;
                    }
                }
                let start = if let Some(resume) = resumes.remove(&slot) {
                    Start::Resumed(resume)
                } else {
                    let now = run.clock.now();
                    state.started[slot] = Some(now);
                    Start::Fresh(inputs_of(run, state, i), now)
                };
                running.push(self.drive(run, i, slot, hooks(i), start, finally_of, in_flight));
            }
            ready.extend(held_back.drain(..));

            let next = match stopped {
                Some(why) => Next::Stop(why),
                None if running.is_empty() && sleeping.is_empty() => break,
                None => {
                    future::poll_fn(|cx| {
                        if let Poll::Ready(Some(driven)) = running.poll_next_unpin(cx) {
                            return Poll::Ready(Next::Driven(driven));
                        }
                        if let Poll::Ready(Some(slot)) = sleeping.poll_next_unpin(cx) {
                            return Poll::Ready(Next::Woke(slot));
                        }
                        match stop.as_deref_mut() {
                            Some(stop) => stop.future.as_mut().poll(cx).map(Next::Stop),
                            None => Poll::Pending,
                        }
                    })
                    .await
                }
            };
            let (slot, report) = match next {
                Next::Driven(Driven::Done(slot, report)) => (slot, report),
                Next::Driven(Driven::Backoff {
                    slot,
                    until,
                    resume,
                }) => {
                    let i = state.members[slot];
                    if let Some(group) = graph.spec(i).group.as_deref() {
                        if let Some(count) = group_running.get_mut(group) {
                            *count -= 1;
                        }
                    }
                    resumes.insert(slot, resume);
                    sleeping.push(wake_at(run.clock.sleep_until(until), slot));
                    continue;
                }
                Next::Woke(slot) => {
                    let i = state.members[slot];
                    ready.push((graph.priority_of(i), Reverse(slot)));
                    continue;
                }
                Next::Stop(why) => {
                    // Dropping the futures cancels the running stages and ends the backoffs;
                    // nothing new starts.
                    drop(std::mem::take(&mut running));
                    drop(std::mem::take(&mut sleeping));
                    resumes.clear();
                    let (status, step_outcome) = match why {
                        Stop::Cancelled => (StageStatus::Cancelled, StepOutcome::Cancelled),
                        Stop::TimedOut => (
                            StageStatus::TimedOut {
                                limit: "step timeout".to_owned(),
                            },
                            StepOutcome::TimedOut,
                        ),
                    };
                    self.stop_running(run, state, in_flight, &status);
                    outcome = step_outcome;
                    break;
                }
            };
            let i = state.members[slot];
            if let Some(group) = graph.spec(i).group.as_deref() {
                if let Some(count) = group_running.get_mut(group) {
                    *count -= 1;
                }
            }
            let succeeded = report.status.is_success();
            if succeeded {
                // Most stages have no outputs: they share one empty map instead of each
                // allocating their own.
                state.outputs[slot] = Some(if report.outputs.is_empty() {
                    Arc::clone(&no_outputs)
                } else {
                    Arc::new(report.outputs.clone())
                });
                let now = run.clock.now();
                for &d in graph.dependents_of(i) {
                    let d_slot = state.slot_of[d as usize];
                    if d_slot == NOT_IN_STEP || !in_phase(d as usize) {
                        continue;
                    }
                    let waiting = &mut waiting_on[d_slot as usize];
                    *waiting -= 1;
                    if *waiting == 0 {
                        ready.push((graph.priority_of(d as usize), Reverse(d_slot as usize)));
                        self.emit(|| Event::StageReady {
                            stage: graph.spec(d as usize).id.clone(),
                            at: now,
                        });
                    }
                }
            } else {
                outcome = StepOutcome::Failed;
            }
            state.results[slot] = Some(report);
            if !succeeded && !finally && self.failure_policy == super::FailurePolicy::FailFast {
                drop(std::mem::take(&mut running));
                drop(std::mem::take(&mut sleeping));
                resumes.clear();
                self.stop_running(run, state, in_flight, &StageStatus::Cancelled);
                break;
            }
        }
        outcome
    }

    /// Marks every started, unfinished stage with `status` (its future was just dropped).
    fn stop_running(
        &self,
        run: &StepRun<'_>,
        state: &mut StepState,
        in_flight: &InFlight,
        status: &StageStatus,
    ) {
        let now = run.clock.now();
        for slot in 0..state.members.len() {
            if state.results[slot].is_none() && state.started[slot].is_some() {
                let id = run.graph.spec(state.members[slot]).id.clone();
                let attempts = in_flight.take(slot, now, status);
                self.emit(|| Event::StageFinished {
                    stage: id.clone(),
                    status: status.clone(),
                    attempts: attempts.last().map_or(0, |a| a.number),
                    at: now,
                });
                let mut report = StageReport::not_run(id, status.clone());
                report.started_at = state.started[slot];
                report.finished_at = Some(now);
                report.attempts = attempts;
                state.results[slot] = Some(report);
            }
        }
    }

    /// Runs a stage's next attempt (its first, or the one after a backoff) with its timeouts,
    /// and returns its final status or, when the retry policy asks for another attempt, the
    /// backoff to wait out: the scheduler waits for it without holding a worker.
    #[allow(
        clippy::too_many_lines,
        reason = "one loop over attempts that reads top to bottom; running an attempt and jitter are separate functions"
    )]
    #[allow(
        clippy::too_many_arguments,
        reason = "the stage's place in the step run; bundling them would only move the list"
    )]
    async fn drive<'a>(
        &'a self,
        run: &'a StepRun<'a>,
        i: usize,
        slot: usize,
        hooks: StageHooks<'a>,
        start: Start<'a>,
        step_outcome: Option<StepOutcome>,
        in_flight: &InFlight,
    ) -> Driven<'a> {
        let spec = run.graph.spec(i);
        let clock = run.clock;
        let policy = spec.retry.unwrap_or_default();
        let (number, started_at, stage_deadline, mut logs, mut inputs, mut progress) = match start {
            Start::Fresh(inputs, started_at) => {
                let progress = Tracker {
                    sink: in_flight,
                    slot,
                    progress: Progress::default(),
                    finished: false,
                };
                let deadline = spec.timeout.map(|d| started_at.saturating_add(d));
                (1, started_at, deadline, Vec::new(), inputs, progress)
            }
            Start::Resumed(r) => (
                r.next_attempt,
                r.started_at,
                r.stage_deadline,
                r.logs,
                r.inputs,
                Tracker::resume(in_flight, slot),
            ),
        };
        // A fresh stage's first attempt starts when the stage does: no second clock read.
        let mut fresh_start = (number == 1).then_some(started_at);
        let (status, outputs, artifact, finished_at) = 'attempt: {
            let attempt_start = fresh_start.take().unwrap_or_else(|| clock.now());
            // A stage that waited for a worker after its backoff may have run out of time.
            if number > 1 && stage_deadline.is_some_and(|d| attempt_start >= d) {
                let status = StageStatus::TimedOut {
                    limit: "stage timeout".to_owned(),
                };
                break 'attempt (status, Outputs::new(), None, attempt_start);
            }
            self.emit(|| Event::AttemptStarted {
                stage: spec.id.clone(),
                attempt: number,
                at: attempt_start,
            });
            progress.begin(number, attempt_start);
            let ctx = StageContext {
                spec,
                release: run.release,
                revision: run.revision,
                artifact: run.artifact,
                environment: run.environment,
                // The last attempt the policy allows takes the inputs; earlier ones copy them.
                inputs: if number < policy.max_attempts {
                    inputs.clone()
                } else {
                    std::mem::take(&mut inputs)
                },
                attempt: number,
                clock,
                step_outcome,
            };
            let attempt_deadline = spec
                .attempt_timeout
                .map(|d| attempt_start.saturating_add(d));
            let result =
                attempt(hooks.executor, ctx, clock, attempt_deadline, stage_deadline).await;
            let finished_at = clock.now();
            let (status, timed_out) = match result {
                AttemptEnd::Finished(outcome) => {
                    let StageOutcome {
                        status,
                        logs: more,
                        outputs,
                        artifact,
                    } = outcome;
                    logs.extend(more);
                    if status.is_success() {
                        progress.end(Attempt {
                            number,
                            started_at: attempt_start,
                            finished_at,
                            status: StageStatus::Succeeded,
                        });
                        break 'attempt (StageStatus::Succeeded, outputs, artifact, finished_at);
                    }
                    (status, false)
                }
                AttemptEnd::Failed(status) => (status, false),
                AttemptEnd::TimedOut(status) => (status, true),
            };
            progress.end(Attempt {
                number,
                started_at: attempt_start,
                finished_at,
                status: status.clone(),
            });
            let failure = AttemptFailure {
                attempt: number,
                reason: match &status {
                    StageStatus::Failed { reason } => reason.clone(),
                    other => other.to_string(),
                },
                timed_out,
            };
            self.emit(|| Event::AttemptFailed {
                stage: spec.id.clone(),
                attempt: number,
                reason: failure.reason.clone(),
                timed_out,
                at: finished_at,
            });
            let stage_time_up = stage_deadline.is_some_and(|d| finished_at >= d);
            let retry = number < policy.max_attempts
                && !stage_time_up
                && hooks.retry_if.is_none_or(|wanted| wanted(&failure));
            if !retry {
                break 'attempt (status, Outputs::new(), None, finished_at);
            }
            let delay = jittered(
                policy.backoff.delay(number + 1),
                policy.jitter_percent,
                self.seed,
                i,
                number,
            );
            if let Some(d) = stage_deadline {
                if finished_at.saturating_add(delay) >= d {
                    let status = StageStatus::TimedOut {
                        limit: "stage timeout".to_owned(),
                    };
                    break 'attempt (status, Outputs::new(), None, finished_at);
                }
            }
            self.emit(|| Event::Retrying {
                stage: spec.id.clone(),
                next_attempt: number + 1,
                delay,
                at: finished_at,
            });
            // The backoff is the scheduler's to wait out, so that the worker serves another
            // stage meanwhile.
            progress.suspend();
            return Driven::Backoff {
                slot,
                until: finished_at.saturating_add(delay),
                resume: Resume {
                    next_attempt: number + 1,
                    started_at,
                    stage_deadline,
                    logs,
                    inputs,
                },
            };
        };
        let attempts = progress.finish();
        self.emit(|| Event::StageFinished {
            stage: spec.id.clone(),
            status: status.clone(),
            attempts: attempts.last().map_or(0, |a| a.number),
            at: finished_at,
        });
        let report = StageReport {
            id: spec.id.clone(),
            status,
            started_at: Some(started_at),
            finished_at: Some(finished_at),
            attempts,
            logs,
            outputs,
            artifact,
        };
        Driven::Done(slot, report)
    }
}

/// How one attempt ended, before the retry policy looks at it.
enum AttemptEnd {
    /// The executor returned an outcome (which may still be a failure).
    Finished(StageOutcome),
    /// The executor returned an error or panicked.
    Failed(StageStatus),
    /// The attempt's or the stage's time ran out; the executor's future was dropped.
    TimedOut(StageStatus),
}

/// Runs one attempt of a stage, racing it against the earlier of its deadlines.
async fn attempt(
    executor: &dyn Executor,
    ctx: StageContext<'_>,
    clock: &dyn Clock,
    attempt_deadline: Option<Timestamp>,
    stage_deadline: Option<Timestamp>,
) -> AttemptEnd {
    // An executor may panic while making its future as well as while it runs: both fail the
    // attempt, neither escapes the engine.
    let work = match std::panic::catch_unwind(AssertUnwindSafe(|| executor.run(ctx))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind(),
        Err(panic) => {
            return AttemptEnd::Failed(StageStatus::Failed {
                reason: format!("executor panicked: {}", panic_message(panic.as_ref())),
            });
        }
    };
    let deadline = match (attempt_deadline, stage_deadline) {
        (Some(a), Some(s)) => Some(a.min(s)),
        (a, s) => a.or(s),
    };
    let result = match deadline {
        None => work.await,
        Some(deadline) => match select(work, clock.sleep_until(deadline)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => {
                let limit = if stage_deadline == Some(deadline) {
                    "stage timeout"
                } else {
                    "attempt timeout"
                };
                return AttemptEnd::TimedOut(StageStatus::TimedOut {
                    limit: limit.to_owned(),
                });
            }
        },
    };
    match result {
        Ok(Ok(outcome)) => AttemptEnd::Finished(outcome),
        Ok(Err(error)) => AttemptEnd::Failed(StageStatus::Failed {
            reason: format!("executor error: {error}"),
        }),
        Err(panic) => AttemptEnd::Failed(StageStatus::Failed {
            reason: format!("executor panicked: {}", panic_message(panic.as_ref())),
        }),
    }
}

/// The outputs of stage `i`'s direct dependencies, from this step or earlier ones.
fn inputs_of<'a>(
    run: &StepRun<'a>,
    state: &StepState,
    i: usize,
) -> Vec<(&'a StageId, Arc<Outputs>)> {
    let graph = run.graph;
    graph
        .deps_of(i)
        .iter()
        .filter_map(|&d| {
            let d = d as usize;
            let id = &graph.spec(d).id;
            let outputs = match state.slot_of[d] {
                NOT_IN_STEP => run.prior_outputs.get(id).cloned(),
                slot => state.outputs[slot as usize].clone(),
            };
            // A dependency without outputs has nothing to hand over: leaving it out spares most
            // stages an allocation.
            outputs.filter(|o| !o.is_empty()).map(|o| (id, o))
        })
        .collect()
}

/// `delay` shortened by up to `percent`%, by a deterministic draw from (seed, stage, attempt),
/// in whole milliseconds: clocks and the serde form of events count milliseconds, so a finer
/// delay would be announced as one value and slept as another.
fn jittered(delay: Duration, percent: u8, seed: u64, stage: usize, attempt: u32) -> Duration {
    if percent == 0 || delay.is_zero() {
        return delay;
    }
    let draw = splitmix64(seed ^ (stage as u64).rotate_left(32) ^ u64::from(attempt));
    // A fraction of the allowed reduction, in parts per million.
    let reduction_ppm = (draw % 1_000_001) * u64::from(percent) / 100;
    let nanos = delay.as_nanos();
    let cut = nanos * u128::from(reduction_ppm) / 1_000_000;
    Duration::from_millis(u64::try_from((nanos - cut) / 1_000_000).unwrap_or(u64::MAX))
}

/// One step of the splitmix64 generator: a fast, well-mixed hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_share_and_is_reproducible() {
        let d = Duration::from_secs(10);
        for attempt in 1..50 {
            let j = jittered(d, 30, 7, 3, attempt);
            assert!(j <= d && j >= Duration::from_secs(7), "{j:?}");
            assert_eq!(j, jittered(d, 30, 7, 3, attempt));
        }
        assert_eq!(jittered(d, 0, 7, 3, 1), d);
        assert_ne!(jittered(d, 100, 1, 3, 1), jittered(d, 100, 2, 3, 1));
    }
}
