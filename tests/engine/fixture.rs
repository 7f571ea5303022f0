//! What the engine tests share: virtual-time runs of a graph's test step, scripted executors
//! that record what they saw (starts, drops, how many ran at once), and queries over reports
//! and events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future;
use tollgate::engine::{CancelHandle, Engine, Event, EventLog, StepOutcome, StepReport};
use tollgate::executor::{
    Executor, ExecutorError, StageContext, StageOutcome, StageStatus, from_async_fn,
};
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::id::ReleaseId;
use tollgate::lifecycle::Step;
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

use crate::support::START;

pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The instant `d` after the test clock's start.
pub fn at(d: Duration) -> Timestamp {
    START.saturating_add(d)
}

/// A graph of test-step stages.
pub fn graph_of(stages: impl IntoIterator<Item = StageSpec>) -> StageGraph {
    StageGraph::builder()
        .stages(stages)
        .build()
        .expect("the test graph is valid")
}

/// Runs the test step of `graph` with `executor` on `clock`, in virtual time.
pub fn run(
    engine: &Engine,
    graph: &StageGraph,
    executor: &dyn Executor,
    clock: &ManualClock,
) -> StepReport {
    let release = ReleaseId::new("shop-1.4.0").expect("valid release id");
    run_virtual(
        clock,
        engine.run_graph(graph, Step::Test, executor, clock, &release, "4f2a9c1"),
    )
}

/// An engine with an event log attached, configured further by `configure`.
pub fn logged(
    configure: impl FnOnce(tollgate::engine::EngineBuilder) -> tollgate::engine::EngineBuilder,
) -> (Engine, EventLog) {
    let log = EventLog::new();
    let engine = configure(Engine::builder().observer(log.clone()))
        .build()
        .expect("valid engine");
    (engine, log)
}

/// The status of stage `id` in `report`.
pub fn status<'a>(report: &'a StepReport, id: &str) -> &'a StageStatus {
    &report
        .stage(id)
        .unwrap_or_else(|| panic!("stage `{id}` is in the report"))
        .status
}

/// The attempts of `stage` that the events announced, as (attempt, time).
pub fn attempt_starts(events: &[Event], stage: &str) -> Vec<(u32, Timestamp)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptStarted {
                stage: s,
                attempt,
                at,
            } if s == stage => Some((*attempt, *at)),
            _ => None,
        })
        .collect()
}

/// The time of an event.
pub fn time_of(event: &Event) -> Timestamp {
    match event {
        Event::StepStarted { at, .. }
        | Event::StageReady { at, .. }
        | Event::AttemptStarted { at, .. }
        | Event::AttemptFailed { at, .. }
        | Event::Retrying { at, .. }
        | Event::StageFinished { at, .. }
        | Event::StepFinished { at, .. } => *at,
        other => panic!("an event this test does not know: {other:?}"),
    }
}

/// Each stage's final status, by id.
pub fn report_statuses(report: &StepReport) -> BTreeMap<String, StageStatus> {
    report
        .stages
        .iter()
        .map(|s| (s.id.to_string(), s.status.clone()))
        .collect()
}

/// How one attempt of a scripted stage ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The executor was entered.
    Start,
    /// The executor returned success.
    Succeeded,
    /// The executor returned a failure.
    Failed,
    /// The executor's future was dropped before it returned.
    Dropped,
}

/// One thing a scripted executor saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub stage: String,
    pub attempt: u32,
    pub mark: Mark,
    pub at: Timestamp,
    pub step_outcome: Option<StepOutcome>,
}

/// What scripted executors saw, in order, and how many ran at once (overall and per group).
#[derive(Debug, Clone, Default)]
pub struct Trace(Arc<Mutex<TraceState>>);

#[derive(Debug, Default)]
struct TraceState {
    seen: Vec<Seen>,
    running: BTreeMap<Option<String>, usize>,
    peak: BTreeMap<Option<String>, usize>,
}

impl Trace {
    fn state(&self) -> std::sync::MutexGuard<'_, TraceState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, ctx_stage: &str, attempt: u32, mark: Mark, at: Timestamp) {
        self.state().seen.push(Seen {
            stage: ctx_stage.to_owned(),
            attempt,
            mark,
            at,
            step_outcome: None,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// The stages whose executor was entered, in order (one entry per attempt).
    pub fn started(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.mark == Mark::Start)
            .map(|s| s.stage)
            .collect()
    }

    /// How many times the executor of `stage` was entered.
    pub fn starts_of(&self, stage: &str) -> usize {
        self.started().iter().filter(|s| *s == stage).count()
    }

    /// How many attempts of `stage` were dropped before they returned.
    pub fn drops_of(&self, stage: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.stage == stage && s.mark == Mark::Dropped)
            .count()
    }

    /// The step outcome that `stage` saw (finally stages see one).
    pub fn outcome_seen_by(&self, stage: &str) -> Option<StepOutcome> {
        self.seen()
            .iter()
            .find(|s| s.stage == stage && s.mark == Mark::Start)
            .and_then(|s| s.step_outcome)
    }

    /// The most executors that ran at once: all of them (`None`) or those of one group.
    pub fn peak(&self, group: Option<&str>) -> usize {
        self.state()
            .peak
            .get(&group.map(str::to_owned))
            .copied()
            .unwrap_or(0)
    }

    fn enter<'a>(&self, ctx: &StageContext<'a>) -> Running<'a> {
        let group = ctx.spec().group.clone();
        let mut state = self.state();
        state.seen.push(Seen {
            stage: ctx.stage().to_string(),
            attempt: ctx.attempt(),
            mark: Mark::Start,
            at: ctx.clock().now(),
            step_outcome: ctx.step_outcome(),
        });
        for key in [None, group.clone()].into_iter().collect::<BTreeSet<_>>() {
            let running = state.running.entry(key.clone()).or_insert(0);
            *running += 1;
            let now = *running;
            let peak = state.peak.entry(key).or_insert(0);
            *peak = (*peak).max(now);
        }
        Running {
            trace: self.clone(),
            stage: ctx.stage().to_string(),
            attempt: ctx.attempt(),
            group,
            clock: ctx.clock(),
            returned: None,
        }
    }
}

/// Counts one running executor; records how it ended when dropped, so that a future the
/// engine dropped shows up as [`Mark::Dropped`].
struct Running<'a> {
    trace: Trace,
    stage: String,
    attempt: u32,
    group: Option<String>,
    clock: &'a dyn Clock,
    returned: Option<Mark>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mark = self.returned.unwrap_or(Mark::Dropped);
        let now = self.clock.now();
        {
            let mut state = self.trace.state();
            for key in [None, self.group.clone()]
                .into_iter()
                .collect::<BTreeSet<_>>()
            {
                if let Some(running) = state.running.get_mut(&key) {
                    *running -= 1;
                }
            }
        }
        self.trace.record(&self.stage, self.attempt, mark, now);
    }
}

/// What one attempt of a scripted stage does: wait (on the pipeline clock, or forever), then
/// optionally cancel the step, then report `outcome`.
pub struct Act {
    wait: Option<Duration>,
    cancel: Option<CancelHandle>,
    outcome: Result<StageOutcome, ExecutorError>,
}

impl Act {
    /// Succeeds after `d`.
    pub fn sleep(d: Duration) -> Self {
        Act {
            wait: Some(d),
            cancel: None,
            outcome: Ok(StageOutcome::success()),
        }
    }

    /// Never returns by itself.
    pub fn hang() -> Self {
        Act {
            wait: None,
            ..Act::sleep(Duration::ZERO)
        }
    }

    /// Fails with `reason` after `d`.
    pub fn fail_after(d: Duration, reason: &str) -> Self {
        Act {
            outcome: Ok(StageOutcome::failure(reason)),
            ..Act::sleep(d)
        }
    }

    /// Reports `outcome` instead.
    pub fn with(mut self, outcome: StageOutcome) -> Self {
        self.outcome = Ok(outcome);
        self
    }

    /// Cancels the step through `handle` when the wait is over.
    pub fn then_cancel(mut self, handle: &CancelHandle) -> Self {
        self.cancel = Some(handle.clone());
        self
    }
}

/// An executor that does what `act` says for each attempt and records it in `trace`.
pub fn scripted<F>(trace: &Trace, act: F) -> impl Executor + use<F>
where
    F: Fn(&StageContext<'_>) -> Act + Send + Sync + 'static,
{
    let trace = trace.clone();
    let act = Arc::new(act);
    from_async_fn(move |ctx| {
        let trace = trace.clone();
        let act = Arc::clone(&act);
        Box::pin(async move {
            let Act {
                wait,
                cancel,
                outcome,
            } = act(&ctx);
            let mut running = trace.enter(&ctx);
            match wait {
                Some(d) => ctx.clock().sleep(d).await,
                None => future::pending::<()>().await,
            }
            if let Some(handle) = cancel {
                handle.cancel();
            }
            running.returned = Some(match &outcome {
                Ok(o) if o.status.is_success() => Mark::Succeeded,
                _ => Mark::Failed,
            });
            outcome
        })
    })
}

/// The id of stage `i` in generated graphs: `s<i>`.
pub fn name(i: usize) -> String {
    format!("s{i}")
}
