//! The engine through the public API, in virtual time: worker and group limits, critical-path
//! priority, retries with backoff and jitter, timeouts, cancellation, failure policies and
//! finally stages, outputs, events, dry-run plans, bad input and huge graphs, and property
//! tests on random DAGs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future;
use proptest::prelude::*;
use support::{START, clock, ok, revision};
use tollgate::Error;
use tollgate::engine::{
    CancelHandle, Engine, Event, EventLog, FailurePolicy, StepOutcome, StepReport, final_statuses,
};
use tollgate::executor::{
    Executor, ExecutorError, StageContext, StageOutcome, StageStatus, from_async_fn, from_fn,
};
use tollgate::graph::{Backoff, RetryPolicy, StageGraph, StageSpec, Step};
use tollgate::pipeline::{Pipeline, Stage};
use tollgate::release::{Deployment, ReleaseId};
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

// ---- helpers ----

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The instant `d` after the test clock's start.
fn at(d: Duration) -> Timestamp {
    START.saturating_add(d)
}

/// A graph of test-step stages.
fn graph_of(stages: impl IntoIterator<Item = StageSpec>) -> StageGraph {
    StageGraph::builder()
        .stages(stages)
        .build()
        .expect("the test graph is valid")
}

/// Runs the test step of `graph` with `executor` on `clock`, in virtual time.
fn run(
    engine: &Engine,
    graph: &StageGraph,
    executor: &dyn Executor,
    clock: &ManualClock,
) -> StepReport {
    let release = ReleaseId::new("shop-1.4.0").expect("valid release id");
    let revision = revision("4f2a9c1");
    run_virtual(
        clock,
        engine.run_graph(graph, Step::Test, executor, clock, &release, &revision),
    )
}

/// An engine with an event log attached, configured further by `configure`.
fn logged(
    configure: impl FnOnce(tollgate::engine::EngineBuilder) -> tollgate::engine::EngineBuilder,
) -> (Engine, EventLog) {
    let log = EventLog::new();
    let engine = configure(Engine::builder().observer(log.clone()))
        .build()
        .expect("valid engine");
    (engine, log)
}

/// The status of stage `id` in `report`.
fn status<'a>(report: &'a StepReport, id: &str) -> &'a StageStatus {
    &report
        .stage(id)
        .unwrap_or_else(|| panic!("stage `{id}` is in the report"))
        .status
}

/// The attempts of `stage` that the events announced, as (attempt, time).
fn attempt_starts(events: &[Event], stage: &str) -> Vec<(u32, Timestamp)> {
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

/// The backoff delays the events announced for `stage`, in order.
fn retry_delays(events: &[Event], stage: &str) -> Vec<Duration> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Retrying {
                stage: s, delay, ..
            } if s == stage => Some(*delay),
            _ => None,
        })
        .collect()
}

/// The time of an event.
fn time_of(event: &Event) -> Timestamp {
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

/// The stage an event is about, if any.
fn stage_of(event: &Event) -> Option<&str> {
    match event {
        Event::StageReady { stage, .. }
        | Event::AttemptStarted { stage, .. }
        | Event::AttemptFailed { stage, .. }
        | Event::Retrying { stage, .. }
        | Event::StageFinished { stage, .. } => Some(stage.as_str()),
        _ => None,
    }
}

/// Each stage's final status, by id.
fn report_statuses(report: &StepReport) -> BTreeMap<String, StageStatus> {
    report
        .stages
        .iter()
        .map(|s| (s.id.to_string(), s.status.clone()))
        .collect()
}

/// The most stages of `report` that were running at one instant (a stage runs from its
/// start up to, not including, its finish).
fn peak_overlap(report: &StepReport) -> usize {
    let spans: Vec<(Timestamp, Timestamp)> = report
        .stages
        .iter()
        .filter_map(|s| Some((s.started_at?, s.finished_at?)))
        .collect();
    spans
        .iter()
        .map(|&(t, _)| spans.iter().filter(|&&(s, f)| s <= t && t < f).count())
        .max()
        .unwrap_or(0)
}

/// How one attempt of a scripted stage ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
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
struct Seen {
    stage: String,
    attempt: u32,
    mark: Mark,
    at: Timestamp,
    step_outcome: Option<StepOutcome>,
}

/// What scripted executors saw, in order, and how many ran at once (overall and per group).
#[derive(Debug, Clone, Default)]
struct Trace(Arc<Mutex<TraceState>>);

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

    fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// The stages whose executor was entered, in order (one entry per attempt).
    fn started(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.mark == Mark::Start)
            .map(|s| s.stage)
            .collect()
    }

    /// How many times the executor of `stage` was entered.
    fn starts_of(&self, stage: &str) -> usize {
        self.started().iter().filter(|s| *s == stage).count()
    }

    /// How many attempts of `stage` were dropped before they returned.
    fn drops_of(&self, stage: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.stage == stage && s.mark == Mark::Dropped)
            .count()
    }

    /// The step outcome that `stage` saw (finally stages see one).
    fn outcome_seen_by(&self, stage: &str) -> Option<StepOutcome> {
        self.seen()
            .iter()
            .find(|s| s.stage == stage && s.mark == Mark::Start)
            .and_then(|s| s.step_outcome)
    }

    /// The most executors that ran at once: all of them (`None`) or those of one group.
    fn peak(&self, group: Option<&str>) -> usize {
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
struct Act {
    wait: Option<Duration>,
    cancel: Option<CancelHandle>,
    outcome: Result<StageOutcome, ExecutorError>,
}

impl Act {
    /// Succeeds after `d`.
    fn sleep(d: Duration) -> Self {
        Act {
            wait: Some(d),
            cancel: None,
            outcome: Ok(StageOutcome::success()),
        }
    }

    /// Never returns by itself.
    fn hang() -> Self {
        Act {
            wait: None,
            ..Act::sleep(Duration::ZERO)
        }
    }

    /// Fails with `reason` after `d`.
    fn fail_after(d: Duration, reason: &str) -> Self {
        Act {
            outcome: Ok(StageOutcome::failure(reason)),
            ..Act::sleep(d)
        }
    }

    /// Reports `outcome` instead.
    fn with(mut self, outcome: StageOutcome) -> Self {
        self.outcome = Ok(outcome);
        self
    }

    /// Cancels the step through `handle` when the wait is over.
    fn then_cancel(mut self, handle: &CancelHandle) -> Self {
        self.cancel = Some(handle.clone());
        self
    }
}

/// An executor that does what `act` says for each attempt and records it in `trace`.
fn scripted<F>(trace: &Trace, act: F) -> impl Executor + use<F>
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

// ---- 1. bounded workers and group limits ----

#[test]
fn never_more_stages_at_once_than_workers_and_the_limit_is_reached() {
    let graph = graph_of((0..10).map(|i| StageSpec::test(format!("job-{i}"))));
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::sleep(secs(10)));
    let engine = Engine::builder().workers(3).build().unwrap();
    let clock = clock();

    let report = run(&engine, &graph, &executor, &clock);

    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(trace.peak(None), 3);
    assert_eq!(peak_overlap(&report), 3);
    // Ten 10 s jobs on three workers take four rounds.
    assert_eq!(report.finished_at, at(secs(40)));
}

#[test]
fn a_group_limit_holds_inside_the_worker_limit_and_both_are_reached() {
    let graph = graph_of(
        (0..6)
            .map(|i| StageSpec::test(format!("gpu-{i}")).group("gpu"))
            .chain((0..4).map(|i| StageSpec::test(format!("cpu-{i}")))),
    );
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::sleep(secs(10)));
    let engine = Engine::builder()
        .workers(4)
        .group_limit("gpu", 2)
        .build()
        .unwrap();
    let clock = clock();

    let report = run(&engine, &graph, &executor, &clock);

    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(trace.peak(Some("gpu")), 2);
    assert_eq!(trace.peak(None), 4);
    // Six gpu stages two at a time take three rounds; the cpu stages fit beside them.
    assert_eq!(report.finished_at, at(secs(30)));
}

#[test]
fn a_group_limit_holds_without_a_worker_limit() {
    let graph = graph_of(
        (0..3)
            .map(|i| StageSpec::test(format!("db-{i}")).group("db"))
            .chain((0..3).map(|i| StageSpec::test(format!("free-{i}")))),
    );
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::sleep(secs(10)));
    let engine = Engine::builder().group_limit("db", 1).build().unwrap();
    let clock = clock();

    let report = run(&engine, &graph, &executor, &clock);

    assert!(report.succeeded());
    assert_eq!(trace.peak(Some("db")), 1);
    // The database stages run one after another; the three free stages and the first
    // database stage run at once.
    assert_eq!(trace.peak(None), 4);
    assert_eq!(report.finished_at, at(secs(30)));
    for id in ["free-0", "free-1", "free-2"] {
        assert_eq!(report.stage(id).unwrap().finished_at, Some(at(secs(10))));
    }
}

// ---- 2. critical-path priority ----

#[test]
fn the_longest_remaining_path_starts_first_not_the_first_declared() {
    let graph = graph_of([
        StageSpec::test("quick-a").estimate(secs(1)),
        StageSpec::test("quick-b").estimate(secs(1)),
        StageSpec::test("long-1").estimate(secs(5)),
        StageSpec::test("long-2").estimate(secs(5)).after("long-1"),
        StageSpec::test("long-3").estimate(secs(5)).after("long-2"),
    ]);
    let trace = Trace::default();
    let executor = scripted(&trace, |ctx| {
        Act::sleep(ctx.spec().estimate.unwrap_or_default())
    });
    let engine = Engine::builder().workers(1).build().unwrap();

    let report = run(&engine, &graph, &executor, &clock());

    assert!(report.succeeded());
    // The chain's 15 s outweigh the quick stages at every choice; ties go to the stage
    // declared first.
    assert_eq!(
        trace.started(),
        ["long-1", "long-2", "long-3", "quick-a", "quick-b"]
    );
    // The dry run predicts the same order.
    let planned: Vec<String> = engine
        .plan(&graph, Step::Test)
        .stages
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(planned, trace.started());
}

#[test]
fn without_estimates_the_longer_chain_of_stages_starts_first() {
    let graph = graph_of([
        StageSpec::test("single"),
        StageSpec::test("chain-1"),
        StageSpec::test("chain-2").after("chain-1"),
    ]);
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::sleep(secs(1)));
    let engine = Engine::builder().workers(1).build().unwrap();

    let report = run(&engine, &graph, &executor, &clock());

    assert!(report.succeeded());
    // `chain-1` heads two stages; after it, `single` and `chain-2` tie and the first
    // declared goes first.
    assert_eq!(trace.started(), ["chain-1", "single", "chain-2"]);
}

// ---- 3. retries ----

#[test]
fn a_failing_stage_makes_exactly_max_attempts_with_fixed_delays() {
    let graph = graph_of([StageSpec::test("flaky")
        .retry(RetryPolicy::attempts(3).backoff(Backoff::Fixed { delay: secs(30) }))]);
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::fail_after(secs(2), "boom"));
    let (engine, log) = logged(|b| b);

    let report = run(&engine, &graph, &executor, &clock());
    let events = log.take();

    let flaky = report.stage("flaky").unwrap();
    assert_eq!(
        flaky.status,
        StageStatus::Failed {
            reason: "boom".to_owned()
        }
    );
    assert_eq!(trace.starts_of("flaky"), 3);
    let spans: Vec<(u32, Timestamp, Timestamp)> = flaky
        .attempts
        .iter()
        .map(|a| (a.number, a.started_at, a.finished_at))
        .collect();
    // Each attempt takes 2 s and the next starts 30 s after the last one ended.
    assert_eq!(
        spans,
        [
            (1, at(secs(0)), at(secs(2))),
            (2, at(secs(32)), at(secs(34))),
            (3, at(secs(64)), at(secs(66))),
        ]
    );
    assert_eq!(
        attempt_starts(&events, "flaky"),
        [(1, at(secs(0))), (2, at(secs(32))), (3, at(secs(64)))]
    );
    assert_eq!(retry_delays(&events, "flaky"), [secs(30), secs(30)]);
    let failed: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFailed {
                attempt, timed_out, ..
            } => {
                assert!(!timed_out);
                Some(*attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed, [1, 2, 3]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StageFinished { stage, attempts: 3, .. } if stage == "flaky"
    )));
}

/// One worker, two stages: `flaky` (the longer path, so it starts first) fails its first
/// attempt after 1 s, backs off for `backoff` and then passes in 1 s; `other` takes 5 s.
fn flaky_beside_another_on_one_worker(backoff: Duration) -> (StepReport, Trace) {
    let graph = graph_of([
        StageSpec::test("flaky")
            .estimate(secs(20))
            .retry(RetryPolicy::attempts(2).backoff(Backoff::Fixed { delay: backoff })),
        StageSpec::test("other").estimate(secs(5)),
    ]);
    let trace = Trace::default();
    let executor = scripted(&trace, |ctx| match (ctx.stage().as_str(), ctx.attempt()) {
        ("flaky", 1) => Act::fail_after(secs(1), "flaked"),
        ("flaky", _) => Act::sleep(secs(1)),
        _ => Act::sleep(secs(5)),
    });
    let engine = Engine::builder().workers(1).build().unwrap();
    let report = run(&engine, &graph, &executor, &clock());
    (report, trace)
}

#[test]
fn a_stage_in_backoff_frees_its_worker_and_queues_again() {
    // `flaky` backs off for 10 s; meanwhile `other` takes the worker from 1 s to 6 s, and
    // `flaky` tries again at 11 s.
    let (report, trace) = flaky_beside_another_on_one_worker(secs(10));
    assert!(report.succeeded(), "{report:?}");
    let other = report.stage("other").unwrap();
    assert_eq!(other.started_at, Some(at(secs(1))));
    let flaky: Vec<(u32, Timestamp)> = report
        .stage("flaky")
        .unwrap()
        .attempts
        .iter()
        .map(|a| (a.number, a.started_at))
        .collect();
    assert_eq!(flaky, [(1, at(secs(0))), (2, at(secs(11)))]);
    assert_eq!(report.finished_at, at(secs(12)));
    // Never two executors at once: the backoff did not make room for an extra worker.
    assert_eq!(trace.peak(None), 1);
}

#[test]
fn a_stage_whose_backoff_ends_while_workers_are_busy_waits_for_one() {
    // `flaky` backs off for 1 s, but `other` holds the only worker until 6 s.
    let (report, _) = flaky_beside_another_on_one_worker(secs(1));
    assert!(report.succeeded(), "{report:?}");
    let flaky = &report.stage("flaky").unwrap().attempts;
    assert_eq!(flaky[1].started_at, at(secs(6)));
    assert_eq!(report.finished_at, at(secs(7)));
}

#[test]
fn a_stage_that_recovers_stops_retrying_and_keeps_every_attempt() {
    let graph = graph_of([StageSpec::test("flaky").retry(RetryPolicy::attempts(5))]);
    let trace = Trace::default();
    let executor = scripted(&trace, |ctx| {
        let log = format!("attempt {}", ctx.attempt());
        let outcome = if ctx.attempt() < 3 {
            StageOutcome::failure("connection reset")
        } else {
            StageOutcome::success().output("tries", "3")
        };
        Act::sleep(secs(1)).with(outcome.log(log))
    });

    let report = run(&Engine::new(), &graph, &executor, &clock());

    let flaky = report.stage("flaky").unwrap();
    assert_eq!(flaky.status, StageStatus::Succeeded);
    assert_eq!(trace.starts_of("flaky"), 3);
    let statuses: Vec<&StageStatus> = flaky.attempts.iter().map(|a| &a.status).collect();
    let reset = StageStatus::Failed {
        reason: "connection reset".to_owned(),
    };
    assert_eq!(statuses, [&reset, &reset, &StageStatus::Succeeded]);
    let logs: Vec<&str> = flaky.logs.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(logs, ["attempt 1", "attempt 2", "attempt 3"]);
    assert_eq!(flaky.outputs.get("tries").map(String::as_str), Some("3"));
    // Two 1 s failures, two 1 s default delays, one 1 s success.
    assert_eq!(flaky.finished_at, Some(at(secs(5))));
}

#[test]
fn exponential_backoff_multiplies_the_delay_up_to_its_cap() {
    let graph = graph_of([
        StageSpec::test("flaky").retry(RetryPolicy::attempts(5).backoff(Backoff::Exponential {
            initial: secs(1),
            factor: 3,
            max: secs(5),
        })),
    ]);
    let executor = scripted(&Trace::default(), |_| Act::fail_after(secs(2), "boom"));
    let (engine, log) = logged(|b| b);

    let report = run(&engine, &graph, &executor, &clock());
    let events = log.take();

    // Delays 1 s, 3 s, then 9 s capped to 5 s twice, after attempts of 2 s each.
    assert_eq!(
        retry_delays(&events, "flaky"),
        [secs(1), secs(3), secs(5), secs(5)]
    );
    let starts: Vec<Timestamp> = report
        .stage("flaky")
        .unwrap()
        .attempts
        .iter()
        .map(|a| a.started_at)
        .collect();
    assert_eq!(starts, [0, 3, 8, 15, 22].map(|s| at(secs(s))));
}

/// The retry delays and attempt start times of an always-failing stage with 50% jitter,
/// run by an engine seeded with `seed`.
fn jittered_run(seed: u64) -> (Vec<Duration>, Vec<Timestamp>) {
    let graph = graph_of([StageSpec::test("flaky").retry(
        RetryPolicy::attempts(6)
            .backoff(Backoff::Fixed { delay: secs(10) })
            .jitter(50),
    )]);
    let executor = from_fn(|_| Ok(StageOutcome::failure("boom")));
    let (engine, log) = logged(|b| b.seed(seed));
    let report = run(&engine, &graph, &executor, &clock());
    let starts = report
        .stage("flaky")
        .unwrap()
        .attempts
        .iter()
        .map(|a| a.started_at)
        .collect();
    (retry_delays(&log.take(), "flaky"), starts)
}

#[test]
fn jitter_is_reproducible_for_a_seed_and_differs_for_another() {
    let (delays, starts) = jittered_run(7);
    let (again, starts_again) = jittered_run(7);
    let (other, _) = jittered_run(8);

    assert_eq!(delays.len(), 5);
    assert_eq!(delays, again);
    assert_eq!(starts, starts_again);
    assert_ne!(delays, other);
    for d in delays.iter().chain(&other) {
        assert!(
            *d >= secs(5) && *d <= secs(10),
            "{d:?} is outside 50% jitter of 10 s"
        );
    }
    assert!(
        delays.iter().any(|d| *d != secs(10)),
        "jitter changed nothing: {delays:?}"
    );
    // The executor takes no time, so each attempt starts exactly one delay after the last.
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].saturating_since(w[0]))
        .collect();
    assert_eq!(gaps, delays);
}

/// A deployment pipeline whose build step is `fetch`, and whose other steps succeed.
fn pipeline_with(fetch: Stage, clock: &ManualClock) -> Pipeline<Deployment> {
    support::deployment("shop", clock)
        .stages([
            fetch,
            Stage::test("unit").run(ok()),
            Stage::stage("staging").run(ok()),
            Stage::deploy("production").run(ok()),
        ])
        .build()
        .expect("valid pipeline")
}

/// Builds a release on `pipeline` in virtual time; returns the build step's report.
fn build_report(pipeline: &Pipeline<Deployment>, clock: &ManualClock) -> StepReport {
    let release = pipeline.start("shop-1", revision("abc")).unwrap();
    let failed = run_virtual(clock, release.build(pipeline))
        .expect_err("the build step fails in these tests");
    assert!(
        matches!(failed.error(), Error::StageFailed { stage, .. } if stage == "fetch"),
        "{:?}",
        failed.error()
    );
    failed
        .release()
        .record()
        .steps()
        .last()
        .cloned()
        .expect("the failed build is recorded")
}

#[test]
fn a_retry_predicate_stops_retrying_failures_it_does_not_want() {
    let clock = clock();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let asked_by_predicate = Arc::clone(&asked);
    let fetch = Stage::build("fetch")
        .retry(RetryPolicy::attempts(5))
        .retry_if(move |failure| {
            asked_by_predicate.lock().unwrap().push(failure.clone());
            failure.reason.contains("connection reset")
        })
        .run(from_fn(|ctx| {
            Ok(StageOutcome::failure(if ctx.attempt() < 3 {
                "connection reset"
            } else {
                "compile error"
            }))
        }));
    let pipeline = pipeline_with(fetch, &clock);

    let report = build_report(&pipeline, &clock);

    let fetch = report.stage("fetch").unwrap();
    assert_eq!(
        fetch.status,
        StageStatus::Failed {
            reason: "compile error".to_owned()
        }
    );
    assert_eq!(fetch.attempts.len(), 3, "the third failure is not retried");
    let asked: Vec<(u32, String, bool)> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|f| (f.attempt, f.reason.clone(), f.timed_out))
        .collect();
    assert_eq!(
        asked,
        [
            (1, "connection reset".to_owned(), false),
            (2, "connection reset".to_owned(), false),
            (3, "compile error".to_owned(), false),
        ]
    );
}

#[test]
fn a_retry_predicate_sees_timeouts_and_can_refuse_them() {
    let clock = clock();
    let trace = Trace::default();
    let fetch = Stage::build("fetch")
        .retry(RetryPolicy::attempts(3))
        .attempt_timeout(secs(5))
        .retry_if(|failure| !failure.timed_out)
        .run(scripted(&trace, |_| Act::hang()));
    let pipeline = pipeline_with(fetch, &clock);

    let started = clock.now();
    let report = build_report(&pipeline, &clock);

    let fetch = report.stage("fetch").unwrap();
    assert_eq!(
        fetch.status,
        StageStatus::TimedOut {
            limit: "attempt timeout".to_owned()
        }
    );
    assert_eq!(fetch.attempts.len(), 1);
    assert_eq!(trace.drops_of("fetch"), 1);
    assert_eq!(clock.now(), started.saturating_add(secs(5)));
}

#[test]
fn a_stage_is_never_retried_after_the_step_is_cancelled() {
    let handle = CancelHandle::new();
    let graph = graph_of([
        StageSpec::test("flaky")
            .retry(RetryPolicy::attempts(5).backoff(Backoff::Fixed { delay: secs(60) })),
        StageSpec::test("canceller"),
    ]);
    let trace = Trace::default();
    let cancel = handle.clone();
    let executor = scripted(&trace, move |ctx| match ctx.stage().as_str() {
        "flaky" => Act::fail_after(secs(1), "boom"),
        _ => Act::sleep(secs(10)).then_cancel(&cancel),
    });
    let (engine, log) = logged(|b| b.cancel_handle(handle.clone()));
    let clock = clock();

    let report = run(&engine, &graph, &executor, &clock);
    let events = log.take();

    // The cancel came during the 60 s backoff: no second attempt, then or later.
    assert_eq!(*status(&report, "flaky"), StageStatus::Cancelled);
    assert_eq!(trace.starts_of("flaky"), 1);
    assert_eq!(attempt_starts(&events, "flaky"), [(1, at(secs(0)))]);
    // The failed attempt before the cancel is still in the report.
    let attempts: Vec<_> = report
        .stage("flaky")
        .unwrap()
        .attempts
        .iter()
        .map(|a| (a.number, a.finished_at, a.status.clone()))
        .collect();
    assert_eq!(
        attempts,
        [(
            1,
            at(secs(1)),
            StageStatus::Failed {
                reason: "boom".to_owned()
            }
        )]
    );
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    assert_eq!(report.finished_at, at(secs(10)));
    assert_eq!(clock.now(), at(secs(10)));
}

// ---- 4. timeouts ----

#[test]
fn an_attempt_timeout_ends_an_executor_that_never_returns_on_every_attempt() {
    let graph = graph_of([StageSpec::test("stuck")
        .attempt_timeout(secs(5))
        .retry(RetryPolicy::attempts(2))]);
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::hang());
    let (engine, log) = logged(|b| b);

    let report = run(&engine, &graph, &executor, &clock());
    let events = log.take();

    let stuck = report.stage("stuck").unwrap();
    let timed_out = StageStatus::TimedOut {
        limit: "attempt timeout".to_owned(),
    };
    assert_eq!(stuck.status, timed_out);
    assert!(!matches!(stuck.status, StageStatus::Failed { .. }));
    let spans: Vec<(Timestamp, Timestamp, &StageStatus)> = stuck
        .attempts
        .iter()
        .map(|a| (a.started_at, a.finished_at, &a.status))
        .collect();
    assert_eq!(
        spans,
        [
            (at(secs(0)), at(secs(5)), &timed_out),
            (at(secs(6)), at(secs(11)), &timed_out),
        ]
    );
    // Both executor futures were dropped when their time ran out.
    assert_eq!(trace.drops_of("stuck"), 2);
    let timeouts = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::AttemptFailed {
                    timed_out: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(timeouts, 2);
}

#[test]
fn a_stage_timeout_covers_all_attempts_and_backoff() {
    let graph = graph_of([StageSpec::test("slow")
        .timeout(secs(10))
        .attempt_timeout(secs(5))
        .retry(RetryPolicy::attempts(10))]);
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::sleep(secs(100)));

    let report = run(&Engine::new(), &graph, &executor, &clock());

    let slow = report.stage("slow").unwrap();
    assert_eq!(
        slow.status,
        StageStatus::TimedOut {
            limit: "stage timeout".to_owned()
        }
    );
    // Attempt 1 hits its own 5 s limit; after the 1 s delay, attempt 2 is cut off by the
    // stage's 10 s limit, and there is no attempt 3.
    let ends: Vec<Timestamp> = slow.attempts.iter().map(|a| a.finished_at).collect();
    assert_eq!(ends, [at(secs(5)), at(secs(10))]);
    assert_eq!(slow.finished_at, Some(at(secs(10))));
    assert_eq!(trace.drops_of("slow"), 2);
}

#[test]
fn a_stage_timeout_ends_an_executor_that_never_returns() {
    let graph = graph_of([StageSpec::test("stuck").timeout(secs(30))]);
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::hang());

    let report = run(&Engine::new(), &graph, &executor, &clock());

    assert_eq!(
        *status(&report, "stuck"),
        StageStatus::TimedOut {
            limit: "stage timeout".to_owned()
        }
    );
    assert_eq!(report.finished_at, at(secs(30)));
    assert_eq!(trace.drops_of("stuck"), 1);
}

#[test]
fn a_step_timeout_stops_running_stages_skips_the_rest_and_runs_finally_stages() {
    let graph = graph_of([
        StageSpec::test("stuck"),
        StageSpec::test("after-stuck").after("stuck"),
        StageSpec::test("quick"),
        StageSpec::test("cleanup").finally(),
    ]);
    let trace = Trace::default();
    let executor = scripted(&trace, |ctx| match ctx.stage().as_str() {
        "stuck" => Act::hang(),
        _ => Act::sleep(secs(1)),
    });
    let engine = Engine::builder().step_timeout(secs(60)).build().unwrap();

    let report = run(&engine, &graph, &executor, &clock());

    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert_eq!(
        *status(&report, "stuck"),
        StageStatus::TimedOut {
            limit: "step timeout".to_owned()
        }
    );
    assert_eq!(trace.drops_of("stuck"), 1);
    assert_eq!(*status(&report, "after-stuck"), StageStatus::Skipped);
    assert_eq!(trace.starts_of("after-stuck"), 0);
    assert_eq!(*status(&report, "quick"), StageStatus::Succeeded);
    assert_eq!(*status(&report, "cleanup"), StageStatus::Succeeded);
    assert_eq!(
        trace.outcome_seen_by("cleanup"),
        Some(StepOutcome::TimedOut)
    );
    assert_eq!(
        report.stage("cleanup").unwrap().started_at,
        Some(at(secs(60)))
    );
    assert_eq!(report.finished_at, at(secs(61)));
}

#[test]
fn nothing_starts_at_the_instant_the_step_times_out() {
    let graph = graph_of([
        StageSpec::test("first").estimate(secs(60)),
        StageSpec::test("second"),
    ]);
    let trace = Trace::default();
    let executor = scripted(&trace, |_| Act::sleep(secs(60)));
    let engine = Engine::builder()
        .workers(1)
        .step_timeout(secs(60))
        .build()
        .unwrap();

    let report = run(&engine, &graph, &executor, &clock());

    // `first` ends exactly when the step's time is up: it succeeded, but its worker must
    // not pick up `second`.
    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert_eq!(*status(&report, "first"), StageStatus::Succeeded);
    assert_eq!(*status(&report, "second"), StageStatus::Skipped);
    assert_eq!(trace.started(), ["first"]);
    assert_eq!(report.finished_at, at(secs(60)));
}

#[test]
fn timed_out_and_failed_stages_are_reported_apart() {
    let graph = graph_of([
        StageSpec::test("stuck").attempt_timeout(secs(5)),
        StageSpec::test("broken"),
    ]);
    let executor = scripted(&Trace::default(), |ctx| match ctx.stage().as_str() {
        "stuck" => Act::hang(),
        _ => Act::fail_after(secs(1), "assertion failed"),
    });
    let engine = Engine::new().failure_policy(FailurePolicy::ContinueIndependent);

    let report = run(&engine, &graph, &executor, &clock());

    assert!(matches!(
        status(&report, "stuck"),
        StageStatus::TimedOut { .. }
    ));
    assert!(matches!(
        status(&report, "broken"),
        StageStatus::Failed { .. }
    ));
    let failed: Vec<&str> = report.failed().map(|s| s.id.as_str()).collect();
    assert_eq!(failed, ["stuck", "broken"]);
    assert_eq!(report.outcome, StepOutcome::Failed);
}

// ---- 5. cancellation ----

#[test]
fn cancelling_drops_running_stages_starts_nothing_new_and_still_runs_finally_stages() {
    let handle = CancelHandle::new();
    let graph = graph_of([
        StageSpec::test("deploy-a").estimate(secs(100)),
        StageSpec::test("deploy-b").estimate(secs(100)),
        StageSpec::test("canceller").estimate(secs(50)),
        StageSpec::test("queued").estimate(secs(1)),
        StageSpec::test("verify").after("deploy-a"),
        StageSpec::test("cleanup").finally(),
    ]);
    let trace = Trace::default();
    let cancel = handle.clone();
    let executor = scripted(&trace, move |ctx| match ctx.stage().as_str() {
        "deploy-a" | "deploy-b" => Act::hang(),
        "canceller" => Act::sleep(secs(10)).then_cancel(&cancel),
        _ => Act::sleep(secs(1)),
    });
    let (engine, log) = logged(|b| b.workers(3).cancel_handle(handle.clone()));

    let clock = clock();
    let report = run(&engine, &graph, &executor, &clock);
    let events = log.take();

    assert_eq!(report.outcome, StepOutcome::Cancelled);
    for id in ["deploy-a", "deploy-b"] {
        assert_eq!(*status(&report, id), StageStatus::Cancelled, "{id}");
        assert_eq!(trace.drops_of(id), 1, "{id}'s executor future was dropped");
        let stage = report.stage(id).unwrap();
        assert_eq!(stage.finished_at, Some(at(secs(10))));
        // The attempt that was under way is in the report, ended by the cancel.
        let attempts: Vec<_> = stage
            .attempts
            .iter()
            .map(|a| (a.number, a.started_at, a.finished_at, &a.status))
            .collect();
        assert_eq!(
            attempts,
            [(1, at(secs(0)), at(secs(10)), &StageStatus::Cancelled)]
        );
    }
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StageFinished { stage, status: StageStatus::Cancelled, attempts: 1, .. }
            if stage == "deploy-a"
    )));
    // Neither the stage waiting for a worker nor the one waiting on a dependency started.
    for id in ["queued", "verify"] {
        assert_eq!(*status(&report, id), StageStatus::Skipped, "{id}");
        assert_eq!(trace.starts_of(id), 0, "{id} started after the cancel");
        assert!(attempt_starts(&events, id).is_empty());
    }
    assert_eq!(*status(&report, "cleanup"), StageStatus::Succeeded);
    assert_eq!(
        trace.outcome_seen_by("cleanup"),
        Some(StepOutcome::Cancelled)
    );
    assert_eq!(report.finished_at, at(secs(11)));

    // The handle stopped that step only: the next step on the same engine runs in full.
    let executor = scripted(&Trace::default(), |_| Act::sleep(secs(1)));
    let next = run(&engine, &graph, &executor, &clock);
    assert!(next.succeeded(), "{next:#?}");
}

// ---- 6. failure policy and finally stages ----

/// `bad` fails after 1 s; `slow` (10 s) is independent of it; `child` depends on `bad` and
/// `other` on `slow`; `report` is a finally stage after `bad`.
fn mixed_graph() -> StageGraph {
    graph_of([
        StageSpec::test("bad"),
        StageSpec::test("slow"),
        StageSpec::test("child").after("bad"),
        StageSpec::test("other").after("slow"),
        StageSpec::test("report").after("bad").finally(),
    ])
}

fn mixed_executor(trace: &Trace) -> impl Executor + use<> {
    scripted(trace, |ctx| match ctx.stage().as_str() {
        "bad" => Act::fail_after(secs(1), "tests failed"),
        "slow" => Act::sleep(secs(10)),
        _ => Act::sleep(secs(1)),
    })
}

#[test]
fn fail_fast_cancels_running_stages_and_skips_the_rest() {
    let trace = Trace::default();
    let report = run(
        &Engine::new(),
        &mixed_graph(),
        &mixed_executor(&trace),
        &clock(),
    );

    assert_eq!(report.outcome, StepOutcome::Failed);
    assert!(matches!(status(&report, "bad"), StageStatus::Failed { .. }));
    assert_eq!(*status(&report, "slow"), StageStatus::Cancelled);
    assert_eq!(trace.drops_of("slow"), 1);
    assert_eq!(*status(&report, "child"), StageStatus::Skipped);
    assert_eq!(*status(&report, "other"), StageStatus::Skipped);
    assert_eq!(trace.starts_of("child") + trace.starts_of("other"), 0);
    // The finally stage runs although the stage it follows failed, and sees the failure.
    assert_eq!(*status(&report, "report"), StageStatus::Succeeded);
    assert_eq!(trace.outcome_seen_by("report"), Some(StepOutcome::Failed));
    assert_eq!(report.finished_at, at(secs(2)));
}

#[test]
fn continue_independent_runs_everything_that_does_not_depend_on_a_failure() {
    let trace = Trace::default();
    let engine = Engine::new().failure_policy(FailurePolicy::ContinueIndependent);
    let report = run(&engine, &mixed_graph(), &mixed_executor(&trace), &clock());

    assert_eq!(report.outcome, StepOutcome::Failed);
    assert!(!report.succeeded());
    assert!(matches!(status(&report, "bad"), StageStatus::Failed { .. }));
    assert_eq!(*status(&report, "slow"), StageStatus::Succeeded);
    assert_eq!(*status(&report, "other"), StageStatus::Succeeded);
    assert_eq!(*status(&report, "child"), StageStatus::Skipped);
    assert_eq!(trace.starts_of("child"), 0);
    assert_eq!(*status(&report, "report"), StageStatus::Succeeded);
    assert_eq!(trace.outcome_seen_by("report"), Some(StepOutcome::Failed));
    // `slow` and `other` take 11 s; the finally stage 1 s more.
    assert_eq!(report.finished_at, at(secs(12)));
}

#[test]
fn finally_stages_see_success_run_last_and_a_failing_one_fails_the_step() {
    let graph = graph_of([
        StageSpec::test("unit"),
        StageSpec::test("lint"),
        StageSpec::test("notify").finally(),
        StageSpec::test("teardown").after("notify").finally(),
    ]);
    let trace = Trace::default();
    let executor = scripted(&trace, |ctx| match ctx.stage().as_str() {
        "teardown" => Act::fail_after(secs(1), "volume busy"),
        _ => Act::sleep(secs(2)),
    });

    let report = run(&Engine::new(), &graph, &executor, &clock());

    assert_eq!(trace.started(), ["unit", "lint", "notify", "teardown"]);
    assert_eq!(trace.outcome_seen_by("unit"), None);
    assert_eq!(
        trace.outcome_seen_by("notify"),
        Some(StepOutcome::Succeeded)
    );
    assert_eq!(
        trace.outcome_seen_by("teardown"),
        Some(StepOutcome::Succeeded)
    );
    assert_eq!(
        report.stage("notify").unwrap().started_at,
        Some(at(secs(2)))
    );
    // The ordinary stages succeeded, so the outcome says so, but the step as a whole did not.
    assert_eq!(report.outcome, StepOutcome::Succeeded);
    assert!(!report.succeeded());
}

// ---- 7. outputs ----

/// The inputs each stage saw, as (dependency, key, value), by stage.
type InputsSeen = BTreeMap<String, Vec<(String, String, String)>>;

#[test]
fn outputs_reach_direct_dependents_and_only_them() {
    let graph = graph_of([
        StageSpec::test("version"),
        StageSpec::test("package").after("version"),
        StageSpec::test("publish").after("package"),
        StageSpec::test("lint"),
    ]);
    let seen: Arc<Mutex<InputsSeen>> = Arc::default();
    let record = Arc::clone(&seen);
    let executor = from_fn(move |ctx| {
        let inputs = ctx
            .inputs()
            .flat_map(|(id, outputs)| {
                outputs
                    .iter()
                    .map(|(k, v)| (id.to_string(), k.clone(), v.clone()))
            })
            .collect();
        record
            .lock()
            .unwrap()
            .insert(ctx.stage().to_string(), inputs);
        let outcome = StageOutcome::success();
        Ok(match ctx.stage().as_str() {
            "version" => outcome.output("version", "1.4.0"),
            "package" => outcome.output(
                "file",
                format!(
                    "shop-{}.tar",
                    ctx.input("version", "version").unwrap_or("?")
                ),
            ),
            _ => outcome,
        })
    });

    let report = run(&Engine::new(), &graph, &executor, &clock());

    assert!(report.succeeded());
    let seen = seen.lock().unwrap();
    let triple = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(seen["version"], []);
    assert_eq!(seen["package"], [triple("version", "version", "1.4.0")]);
    // `publish` sees its own dependency's outputs, not those of `version` two levels up.
    assert_eq!(
        seen["publish"],
        [triple("package", "file", "shop-1.4.0.tar")]
    );
    assert_eq!(seen["lint"], []);
    assert_eq!(
        report
            .stage("package")
            .unwrap()
            .outputs
            .get("file")
            .map(String::as_str),
        Some("shop-1.4.0.tar")
    );
}

// ---- 8. events ----

#[test]
fn the_observer_sees_every_transition_in_time_order_and_events_round_trip() {
    let graph = graph_of([
        StageSpec::test("compile-check"),
        StageSpec::test("flaky").after("compile-check").retry(
            RetryPolicy::attempts(3)
                .backoff(Backoff::Fixed { delay: secs(4) })
                .jitter(40),
        ),
        StageSpec::test("broken"),
        StageSpec::test("after-broken").after("broken"),
        StageSpec::test("notify").finally(),
    ]);
    let executor = scripted(&Trace::default(), |ctx| {
        match (ctx.stage().as_str(), ctx.attempt()) {
            ("flaky", 1 | 2) => Act::fail_after(millis(1500), "flake"),
            ("broken", _) => Act::fail_after(secs(3), "tests failed"),
            _ => Act::sleep(secs(2)),
        }
    });
    let (engine, log) = logged(|b| {
        b.workers(2)
            .seed(99)
            .failure_policy(FailurePolicy::ContinueIndependent)
    });

    let report = run(&engine, &graph, &executor, &clock());
    let events = log.take();

    assert!(matches!(
        events.first(),
        Some(Event::StepStarted {
            stages: 5,
            step: Step::Test,
            ..
        })
    ));
    assert!(matches!(
        events.last(),
        Some(Event::StepFinished {
            succeeded: false,
            ..
        })
    ));
    assert_eq!(time_of(&events[0]), report.started_at);
    assert_eq!(time_of(&events[events.len() - 1]), report.finished_at);
    let times: Vec<Timestamp> = events.iter().map(time_of).collect();
    assert!(times.is_sorted(), "event times go backwards: {events:#?}");

    for stage in &report.stages {
        let id = stage.id.as_str();
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| stage_of(e) == Some(id))
            .map(|e| match e {
                Event::StageReady { .. } => "ready",
                Event::AttemptStarted { .. } => "started",
                Event::AttemptFailed { .. } => "failed",
                Event::Retrying { .. } => "retrying",
                Event::StageFinished { .. } => "finished",
                _ => "other",
            })
            .collect();
        let expected: &[&str] = match id {
            "flaky" => &[
                "ready", "started", "failed", "retrying", "started", "failed", "retrying",
                "started", "finished",
            ],
            "broken" => &["ready", "started", "failed", "finished"],
            "after-broken" => &["finished"],
            _ => &["ready", "started", "finished"],
        };
        assert_eq!(kinds, expected, "events of {id}");
        // The report's attempts are the ones the events announced.
        let announced: Vec<(u32, Timestamp)> = stage
            .attempts
            .iter()
            .map(|a| (a.number, a.started_at))
            .collect();
        assert_eq!(attempt_starts(&events, id), announced, "attempts of {id}");
    }

    let replayed: BTreeMap<String, StageStatus> = final_statuses(&events)
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
    assert_eq!(final_statuses(&events).len(), report.stages.len());
    assert_eq!(replayed, report_statuses(&report));

    let json = serde_json::to_string(&events).unwrap();
    let back: Vec<Event> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, events);
    let json = serde_json::to_string(&report).unwrap();
    let back: StepReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

// ---- 9. dry-run plans ----

/// `compile` (4 s) → `unit` (3 s) and `lint` (1 s) → `package` (2 s); `docs` (2 s) alone.
fn plan_graph() -> StageGraph {
    graph_of([
        StageSpec::test("compile").estimate(secs(4)),
        StageSpec::test("unit").estimate(secs(3)).after("compile"),
        StageSpec::test("lint").estimate(secs(1)).after("compile"),
        StageSpec::test("docs").estimate(secs(2)),
        StageSpec::test("package")
            .estimate(secs(2))
            .after("unit")
            .after("lint"),
        StageSpec::test("notify").estimate(secs(1)).finally(),
    ])
}

/// A plan as (id, wave, start s, finish s).
fn plan_rows(engine: &Engine) -> (Vec<(String, usize, u64, u64)>, Duration) {
    let plan = engine.plan(&plan_graph(), Step::Test);
    let rows = plan
        .stages
        .iter()
        .map(|s| {
            (
                s.id.to_string(),
                s.wave,
                s.start.as_secs(),
                s.finish.as_secs(),
            )
        })
        .collect();
    (rows, plan.makespan)
}

fn row(id: &str, wave: usize, start: u64, finish: u64) -> (String, usize, u64, u64) {
    (id.to_owned(), wave, start, finish)
}

#[test]
fn a_plan_with_two_workers_matches_the_hand_computed_schedule() {
    let (engine, log) = logged(|b| b.workers(2));
    let (rows, makespan) = plan_rows(&engine);

    // t=0: compile (path 9 s) and docs start; t=4: unit (path 5 s) and lint; t=7: package;
    // t=9: the finally stage.
    assert_eq!(
        rows,
        [
            row("compile", 0, 0, 4),
            row("docs", 0, 0, 2),
            row("unit", 1, 4, 7),
            row("lint", 1, 4, 5),
            row("package", 2, 7, 9),
            row("notify", 3, 9, 10),
        ]
    );
    assert_eq!(makespan, secs(10));
    let plan = engine.plan(&plan_graph(), Step::Test);
    let waves: Vec<Vec<&str>> = plan
        .waves()
        .iter()
        .map(|w| w.iter().map(|id| id.as_str()).collect())
        .collect();
    assert_eq!(
        waves,
        [
            vec!["compile", "docs"],
            vec!["unit", "lint"],
            vec!["package"],
            vec!["notify"]
        ]
    );
    assert_eq!(plan.workers, Some(2));
    // Nothing ran: a dry run emits no events.
    assert!(log.take().is_empty());
}

#[test]
fn a_plan_with_one_worker_serialises_by_critical_path() {
    let engine = Engine::builder().workers(1).build().unwrap();
    let (rows, makespan) = plan_rows(&engine);

    // After compile, unit (5 s of path) beats lint (3 s) and docs (2 s); docs and package
    // tie at 2 s and docs was declared first.
    assert_eq!(
        rows,
        [
            row("compile", 0, 0, 4),
            row("unit", 1, 4, 7),
            row("lint", 1, 7, 8),
            row("docs", 0, 8, 10),
            row("package", 2, 10, 12),
            row("notify", 3, 12, 13),
        ]
    );
    assert_eq!(makespan, secs(13));
}

#[test]
fn a_plan_predicts_the_virtual_time_of_a_real_run() {
    let engine = Engine::builder().workers(2).build().unwrap();
    let plan = engine.plan(&plan_graph(), Step::Test);
    let executor = scripted(&Trace::default(), |ctx| {
        Act::sleep(ctx.spec().estimate.unwrap_or_default())
    });

    let report = run(&engine, &plan_graph(), &executor, &clock());

    assert_eq!(report.finished_at, at(plan.makespan));
    for planned in &plan.stages {
        let ran = report.stage(planned.id.as_str()).unwrap();
        assert_eq!(ran.started_at, Some(at(planned.start)), "{}", planned.id);
        assert_eq!(ran.finished_at, Some(at(planned.finish)), "{}", planned.id);
    }
}

// ---- 10. bad input, faults and huge graphs ----

#[test]
fn zero_workers_and_zero_group_limits_are_typed_errors_at_build() {
    let zero_workers = Engine::builder().workers(0).build().unwrap_err();
    assert!(
        matches!(zero_workers, Error::InvalidEngine { .. }),
        "{zero_workers:?}"
    );
    assert!(
        zero_workers.to_string().contains("worker"),
        "{zero_workers}"
    );

    let zero_group = Engine::builder().group_limit("gpu", 0).build().unwrap_err();
    assert!(
        matches!(zero_group, Error::InvalidEngine { .. }),
        "{zero_group:?}"
    );
    assert!(zero_group.to_string().contains("`gpu`"), "{zero_group}");

    // A later, valid setting replaces the bad one.
    assert_eq!(
        Engine::builder()
            .workers(0)
            .workers(2)
            .build()
            .unwrap()
            .workers(),
        Some(2)
    );
}

/// Runs `refuses` with a `run` that panics before it even makes a future, `explodes` with a
/// future that panics when polled, and every other stage with `rest`.
struct Faulty<E>(E);

fn explode() -> Result<StageOutcome, ExecutorError> {
    panic!("index out of bounds")
}

impl<E: Executor> Executor for Faulty<E> {
    // Written out by hand, unlike `#[async_trait]`, so that `run` itself can panic.
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        ctx: StageContext<'life1>,
    ) -> Pin<Box<dyn Future<Output = Result<StageOutcome, ExecutorError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        match ctx.stage().as_str() {
            "refuses" => panic!("refused to start"),
            "explodes" => Box::pin(async { explode() }),
            _ => self.0.run(ctx),
        }
    }
}

#[test]
fn a_panicking_executor_fails_its_stage_while_the_others_run_on() {
    let graph = graph_of([
        StageSpec::test("explodes"),
        StageSpec::test("refuses"),
        StageSpec::test("fine"),
        StageSpec::test("after-explodes").after("explodes"),
    ]);
    let executor = Faulty(scripted(&Trace::default(), |_| Act::sleep(secs(1))));
    let engine = Engine::new().failure_policy(FailurePolicy::ContinueIndependent);

    let report = run(&engine, &graph, &executor, &clock());

    assert_eq!(
        *status(&report, "explodes"),
        StageStatus::Failed {
            reason: "executor panicked: index out of bounds".to_owned()
        }
    );
    assert_eq!(
        *status(&report, "refuses"),
        StageStatus::Failed {
            reason: "executor panicked: refused to start".to_owned()
        }
    );
    assert_eq!(*status(&report, "fine"), StageStatus::Succeeded);
    assert_eq!(*status(&report, "after-explodes"), StageStatus::Skipped);
}

#[test]
fn an_executor_error_fails_the_stage_with_its_message() {
    let graph = graph_of([StageSpec::test("remote")]);
    let executor = from_fn(|_| Err("runner unreachable".into()));

    let report = run(&Engine::new(), &graph, &executor, &clock());

    assert_eq!(
        *status(&report, "remote"),
        StageStatus::Failed {
            reason: "executor error: runner unreachable".to_owned()
        }
    );
}

const HUGE: usize = 1_000_000;

/// Runs a huge graph with a no-op executor; checks every stage ran once and succeeded.
fn run_huge(graph: &StageGraph) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let executor = from_fn(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(StageOutcome::success())
    });
    let started = Instant::now();
    let report = run(&Engine::new(), graph, &executor, &clock());
    eprintln!("{HUGE} stages ran in {:?}", started.elapsed());
    assert_eq!(calls.load(Ordering::Relaxed), HUGE);
    assert_eq!(report.stages.len(), HUGE);
    assert!(report.stages.iter().all(|s| s.status.is_success()));
}

#[test]
fn a_million_stage_chain_runs_without_overflowing_the_stack() {
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::test("s0"));
    for i in 1..HUGE {
        builder.push(StageSpec::test(format!("s{i}")).after(format!("s{}", i - 1)));
    }
    run_huge(&builder.build().unwrap());
}

#[test]
fn a_million_stage_fan_out_runs_without_overflowing_the_stack() {
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::test("root"));
    for i in 1..HUGE {
        builder.push(StageSpec::test(format!("s{i}")).after("root"));
    }
    run_huge(&builder.build().unwrap());
}

/// Counts the wake-ups a future asks for.
struct CountingWaker(AtomicUsize);

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_long_run_of_stages_that_finish_at_once_yields_to_the_executor_between_batches() {
    // 10,000 no-op stages finish as they start: without a budget the step would settle them
    // all in one poll and hold its runtime thread for the whole run.
    let n = 10_000;
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::test("s0"));
    for i in 1..n {
        builder.push(StageSpec::test(name(i)).after(name(i - 1)));
    }
    let graph = builder.build().unwrap();
    let executor = from_fn(|_| Ok(StageOutcome::success()));
    let (engine, clock) = (Engine::new(), clock());
    let release = ReleaseId::new("shop-1.4.0").unwrap();
    let revision = revision("4f2a9c1");
    let mut step = std::pin::pin!(engine.run_graph(
        &graph,
        Step::Test,
        &executor,
        &clock,
        &release,
        &revision
    ));
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = futures::task::waker(Arc::clone(&counter));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut pending = 0;
    let report = loop {
        match step.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(report) => break report,
            std::task::Poll::Pending => {
                pending += 1;
                // Every yield asks to be polled again at once: nothing else would wake it.
                assert_eq!(
                    counter.0.load(Ordering::Relaxed),
                    pending,
                    "yield {pending}"
                );
                assert!(pending <= n, "the step never finishes");
            }
        }
    };
    assert!(report.succeeded());
    assert_eq!(report.stages.len(), n);
    // It yields, but in batches: not once per stage.
    assert!(pending >= 10, "yielded only {pending} times in {n} stages");
    assert!(pending <= n / 100, "yielded {pending} times in {n} stages");
}

// ---- 11. property tests on random DAGs ----

/// A random DAG of 1..=`max` stages as the dependencies of each stage, all earlier stages.
fn dag(max: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1..=max).prop_flat_map(|n| {
        proptest::collection::vec((any::<u32>(), any::<u32>()), n).prop_map(|masks| {
            masks
                .iter()
                .enumerate()
                // Two masks and-ed: each possible edge is present with probability 1/4.
                .map(|(i, (a, b))| (0..i).filter(|&j| (a & b) >> j & 1 == 1).collect())
                .collect()
        })
    })
}

fn name(i: usize) -> String {
    format!("s{i}")
}

/// The stage index in a name made by [`name`].
fn index(stage: &str) -> usize {
    stage[1..].parse().expect("stage names are s<index>")
}

/// Test-step specs for `deps`, each changed by `adjust(index, spec)`.
fn specs(deps: &[Vec<usize>], adjust: impl Fn(usize, StageSpec) -> StageSpec) -> StageGraph {
    graph_of(deps.iter().enumerate().map(|(i, ds)| {
        let spec = ds
            .iter()
            .fold(StageSpec::test(name(i)), |s, &d| s.after(name(d)));
        adjust(i, spec)
    }))
}

/// The position in `seen` of the first entry for `stage` with `mark`.
fn position(seen: &[Seen], stage: &str, mark: Mark) -> Option<usize> {
    seen.iter().position(|s| s.stage == stage && s.mark == mark)
}

/// How a random stage behaves in the mixed property test.
#[derive(Debug, Clone)]
struct RandomStage {
    duration_ms: u64,
    /// Attempts up to this one fail.
    fails_through: u32,
    retry: RetryPolicy,
    attempt_timeout_ms: Option<u64>,
    finally: bool,
}

fn random_stage() -> impl Strategy<Value = RandomStage> {
    let backoff = prop_oneof![
        (0u64..20).prop_map(|ms| Backoff::Fixed { delay: millis(ms) }),
        (1u64..10, 1u32..4, 1u64..40).prop_map(|(initial, factor, max)| Backoff::Exponential {
            initial: millis(initial),
            factor,
            max: millis(max),
        }),
    ];
    (
        0u64..50,
        prop_oneof![Just(0u32), 1u32..3, Just(u32::MAX)],
        (1u32..4, backoff, 0u8..=100),
        proptest::option::of(1u64..60),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(duration_ms, fails_through, (attempts, backoff, jitter), timeout, finally)| {
                RandomStage {
                    duration_ms,
                    fails_through,
                    retry: RetryPolicy::attempts(attempts)
                        .backoff(backoff)
                        .jitter(jitter),
                    attempt_timeout_ms: timeout,
                    finally,
                }
            },
        )
}

/// One run of the mixed property test: the report, the events and what executors saw.
fn run_mixed(
    deps: &[Vec<usize>],
    stages: &[RandomStage],
    finally: &[bool],
    engine: &Engine,
    log: &EventLog,
) -> (StepReport, Vec<Event>, Vec<Seen>) {
    let graph = specs(deps, |i, spec| {
        let s = &stages[i];
        let spec = spec.retry(s.retry);
        let spec = match s.attempt_timeout_ms {
            Some(ms) => spec.attempt_timeout(millis(ms)),
            None => spec,
        };
        if finally[i] { spec.finally() } else { spec }
    });
    let trace = Trace::default();
    let behaviour: Vec<(u64, u32)> = stages
        .iter()
        .map(|s| (s.duration_ms, s.fails_through))
        .collect();
    let executor = scripted(&trace, move |ctx| {
        let (duration, fails_through) = behaviour[index(ctx.stage().as_str())];
        if ctx.attempt() <= fails_through {
            Act::fail_after(millis(duration), "random failure")
        } else {
            Act::sleep(millis(duration))
        }
    });
    let report = run(engine, &graph, &executor, &clock());
    (report, log.take(), trace.seen())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_stage_of_a_random_dag_runs_once_after_its_dependencies(
        deps in dag(12),
        durations in proptest::collection::vec(0u64..30, 12),
        workers in 1usize..5,
    ) {
        let graph = specs(&deps, |_, spec| spec);
        let trace = Trace::default();
        let executor = scripted(&trace, move |ctx| {
            Act::sleep(millis(durations[index(ctx.stage().as_str())]))
        });
        let engine = Engine::builder().workers(workers).build().unwrap();

        let report = run(&engine, &graph, &executor, &clock());

        prop_assert!(report.succeeded());
        prop_assert!(trace.peak(None) <= workers);
        let seen = trace.seen();
        for (i, ds) in deps.iter().enumerate() {
            prop_assert_eq!(trace.starts_of(&name(i)), 1);
            let start = position(&seen, &name(i), Mark::Start).unwrap();
            for &d in ds {
                let done = position(&seen, &name(d), Mark::Succeeded).unwrap();
                prop_assert!(done < start, "s{} started before its dependency s{} finished", i, d);
                prop_assert!(seen[done].at <= seen[start].at);
            }
        }
    }

    #[test]
    fn under_continue_independent_exactly_the_dependents_of_a_failure_are_skipped(
        deps in dag(12),
        failing in any::<prop::sample::Index>(),
        workers in 1usize..5,
    ) {
        let failing = failing.index(deps.len());
        let graph = specs(&deps, |_, spec| spec);
        let trace = Trace::default();
        let executor = scripted(&trace, move |ctx| {
            if index(ctx.stage().as_str()) == failing {
                Act::fail_after(millis(5), "injected")
            } else {
                Act::sleep(millis(5))
            }
        });
        let engine = Engine::builder()
            .workers(workers)
            .failure_policy(FailurePolicy::ContinueIndependent)
            .build()
            .unwrap();

        let report = run(&engine, &graph, &executor, &clock());

        // Dependencies come earlier, so one pass in index order finds every dependent.
        let mut downstream = vec![false; deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            downstream[i] = i != failing && ds.iter().any(|&d| d == failing || downstream[d]);
        }
        for (i, &skipped) in downstream.iter().enumerate() {
            let id = name(i);
            let status = status(&report, &id);
            if i == failing {
                prop_assert!(matches!(status, StageStatus::Failed { .. }), "{:?}", status);
            } else if skipped {
                prop_assert_eq!(status, &StageStatus::Skipped);
                prop_assert_eq!(trace.starts_of(&id), 0);
            } else {
                prop_assert_eq!(status, &StageStatus::Succeeded, "{}", id);
            }
        }
    }

    #[test]
    fn random_failures_retries_and_timeouts_keep_the_engine_s_promises(
        deps in dag(10),
        stages in proptest::collection::vec(random_stage(), 10),
        workers in proptest::option::of(1usize..4),
        continue_independent in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n = deps.len();
        // A stage may be a finally stage only if every stage that depends on it is one too.
        let mut finally = vec![false; n];
        for i in (0..n).rev() {
            let dependents_finally = (i + 1..n).all(|j| !deps[j].contains(&i) || finally[j]);
            finally[i] = stages[i].finally && dependents_finally;
        }
        let policy = if continue_independent {
            FailurePolicy::ContinueIndependent
        } else {
            FailurePolicy::FailFast
        };
        let (engine, log) = logged(|b| {
            let b = b.failure_policy(policy).seed(seed);
            match workers {
                Some(w) => b.workers(w),
                None => b,
            }
        });

        let (report, events, seen) = run_mixed(&deps, &stages, &finally, &engine, &log);

        let last_ordinary_mark = seen
            .iter()
            .rposition(|s| !finally[index(&s.stage)]);
        for i in 0..n {
            let id = name(i);
            let stage = report.stage(&id).unwrap();
            let max = stages[i].retry.max_attempts;
            let tries = seen.iter().filter(|s| s.stage == id && s.mark == Mark::Start).count();
            prop_assert!(tries <= max as usize, "{} ran {} times, limit {}", id, tries, max);
            prop_assert_eq!(attempt_starts(&events, &id).len(), tries);
            prop_assert_eq!(stage.attempts.len(), tries, "attempts of {}", id);
            let numbers: Vec<u32> = stage.attempts.iter().map(|a| a.number).collect();
            prop_assert_eq!(numbers, (1..=tries as u32).collect::<Vec<_>>());
            let finished_attempts = events.iter().find_map(|e| match e {
                Event::StageFinished { stage, attempts, .. } if stage.as_str() == id => Some(*attempts),
                _ => None,
            });
            prop_assert_eq!(finished_attempts, Some(tries as u32));
            prop_assert!(seen.iter().filter(|s| s.stage == id).all(|s| s.attempt <= max));
            let Some(first) = position(&seen, &id, Mark::Start) else {
                continue;
            };
            if finally[i] {
                // Finally stages start after every ordinary stage has stopped.
                prop_assert!(last_ordinary_mark.is_none_or(|last| last < first));
                prop_assert_eq!(seen[first].step_outcome, Some(report.outcome));
            }
            for &d in &deps[i] {
                if finally[i] && !finally[d] {
                    continue;
                }
                let done = position(&seen, &name(d), Mark::Succeeded);
                prop_assert!(done.is_some_and(|done| done < first),
                    "{} started before its dependency s{} succeeded", id, d);
            }
        }
        // Finally stages run whenever the finally stages they follow succeeded.
        for i in (0..n).filter(|&i| finally[i]) {
            let blocked = deps[i].iter().any(|&d| finally[d] && !status(&report, &name(d)).is_success());
            let ran = position(&seen, &name(i), Mark::Start).is_some();
            prop_assert_eq!(ran, !blocked, "finally stage s{}", i);
        }
        let replayed = final_statuses(&events);
        prop_assert_eq!(replayed.len(), n);
        let replayed: BTreeMap<String, StageStatus> =
            replayed.into_iter().map(|(id, s)| (id.to_string(), s)).collect();
        prop_assert_eq!(replayed, report_statuses(&report));
        let times: Vec<Timestamp> = events.iter().map(time_of).collect();
        prop_assert!(times.is_sorted());

        // The same run in virtual time is the same run, to the millisecond.
        let (again, events_again, _) = run_mixed(&deps, &stages, &finally, &engine, &log);
        prop_assert_eq!(again, report);
        prop_assert_eq!(events_again, events);
    }
}
