//! Host code that misbehaves (issue 11, items 7 to 9): an executor that blocks its thread is
//! timed out by what the clock says and warned about once; panicking observers, retry
//! predicates and executor drops are contained and reported; and every timeout racing the
//! clock resolves the same way at the same instant.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tollgate::engine::{Engine, Event, RetryPolicy, StepOutcome, Warning, observer_fn};
use tollgate::executor::{
    Executor, ExecutorError, StageContext, StageOutcome, StageStatus, TimeoutKind, from_async_fn,
    from_fn,
};
use tollgate::graph::StageSpec;
use tollgate::time::ManualClock;

use crate::fixture::{Act, Trace, at, graph_of, logged, millis, run, scripted, secs, status};
use crate::support::clock;

/// An executor for `blocking` that does `work` of synchronous work in its poll (the clock
/// moves while it runs, as a wall clock would) and succeeds; every other stage sleeps 1 s.
fn blocking_and_sleeping(
    clock: &ManualClock,
    blocking: &'static str,
    work: Duration,
) -> impl Executor + use<> {
    let clock = clock.clone();
    from_async_fn(move |ctx| {
        let clock = clock.clone();
        Box::pin(async move {
            if ctx.stage() == blocking {
                clock.advance(work);
            } else {
                ctx.clock().sleep(secs(1)).await;
            }
            Ok(StageOutcome::success().log("done"))
        })
    })
}

fn warnings_in(events: &[Event]) -> Vec<Warning> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { warning, .. } => Some(warning.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_attempt_that_returns_after_its_deadline_is_timed_out_and_the_block_is_warned_once() {
    let graph = graph_of([
        StageSpec::test("blocks")
            .attempt_timeout(millis(500))
            .retry(RetryPolicy::attempts(3)),
        StageSpec::test("sibling"),
    ]);
    let clock = clock();
    let (engine, log) = logged(|b| b);
    let executor = blocking_and_sleeping(&clock, "blocks", secs(2));

    let report = run(&engine, &graph, &executor, &clock);

    // Each of the three attempts took 2 s against a 500 ms limit: none succeeded.
    assert_eq!(
        status(&report, "blocks"),
        &StageStatus::TimedOut {
            limit: TimeoutKind::Attempt
        }
    );
    let blocks = report.stage("blocks").unwrap();
    assert_eq!(blocks.attempts().len(), 3);
    assert!(
        blocks.logs.iter().any(|l| l.text == "done"),
        "what it returned late is kept: {:?}",
        blocks.logs
    );
    let expected = Warning::ExecutorBlocked {
        stage: "blocks".parse().unwrap(),
        attempt: 1,
        blocked: secs(2),
    };
    assert_eq!(
        report.warnings,
        std::slice::from_ref(&expected),
        "warned once, for the first poll"
    );
    assert_eq!(warnings_in(&log.events()), [expected]);
    // The blocked thread stalled the sibling, which started only when the first poll ended.
    assert_eq!(
        report.stage("sibling").unwrap().started_at,
        Some(at(secs(2)))
    );
    assert!(report.stage("sibling").unwrap().status.is_success());
}

#[test]
fn an_attempt_that_blocks_without_a_deadline_succeeds_and_is_still_warned_about() {
    let graph = graph_of([StageSpec::test("blocks")]);
    let clock = clock();
    let executor = blocking_and_sleeping(&clock, "blocks", secs(2));
    let report = run(&Engine::new(), &graph, &executor, &clock);
    assert!(report.succeeded());
    assert!(matches!(
        report.warnings.as_slice(),
        [Warning::ExecutorBlocked { blocked, .. }] if *blocked == secs(2)
    ));
    assert!(
        report.warnings[0]
            .to_string()
            .contains("stage `blocks` held its thread for 2s"),
        "{}",
        report.warnings[0]
    );
}

#[test]
fn a_poll_within_the_threshold_is_not_warned_about() {
    let graph = graph_of([StageSpec::test("quick")]);
    let clock = clock();
    let executor = blocking_and_sleeping(&clock, "quick", millis(100));
    let report = run(&Engine::new(), &graph, &executor, &clock);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let strict = Engine::builder()
        .blocking_threshold(millis(50))
        .build()
        .unwrap();
    assert_eq!(strict.blocking_threshold(), millis(50));
    let report = run(&strict, &graph, &executor, &clock);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

#[test]
fn an_attempt_finishing_exactly_at_its_deadline_succeeds_and_a_millisecond_later_times_out() {
    for (blocking, takes, succeeds) in [
        (false, millis(500), true),
        (false, millis(501), false),
        (true, millis(500), true),
        (true, millis(501), false),
    ] {
        let graph = graph_of([StageSpec::test("s").attempt_timeout(millis(500))]);
        let clock = clock();
        let executor: Box<dyn Executor> = if blocking {
            Box::new(blocking_and_sleeping(&clock, "s", takes))
        } else {
            Box::new(scripted(&Trace::default(), move |_| Act::sleep(takes)))
        };
        let report = run(&Engine::new(), &graph, &executor, &clock);
        assert_eq!(
            report.succeeded(),
            succeeds,
            "blocking {blocking}, {takes:?}: {:?}",
            status(&report, "s")
        );
    }
}

#[test]
fn the_stage_limit_names_a_tie_with_the_attempt_limit() {
    let graph = graph_of([StageSpec::test("s")
        .attempt_timeout(secs(5))
        .timeout(secs(5))]);
    let executor = scripted(&Trace::default(), |_| Act::hang());
    let report = run(&Engine::new(), &graph, &executor, &clock());
    assert_eq!(
        status(&report, "s"),
        &StageStatus::TimedOut {
            limit: TimeoutKind::Stage
        }
    );
    assert_eq!(report.finished_at, at(secs(5)));
}

#[test]
fn a_stage_finishing_at_the_instant_the_step_times_out_counts() {
    let graph = graph_of([StageSpec::test("on-time"), StageSpec::test("late")]);
    let executor = scripted(&Trace::default(), |ctx| {
        Act::sleep(if ctx.stage() == "on-time" {
            secs(10)
        } else {
            secs(11)
        })
    });
    let engine = Engine::builder().step_timeout(secs(10)).build().unwrap();
    let report = run(&engine, &graph, &executor, &clock());
    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert_eq!(status(&report, "on-time"), &StageStatus::Succeeded);
    assert_eq!(
        status(&report, "late"),
        &StageStatus::TimedOut {
            limit: TimeoutKind::Step
        }
    );
}

#[test]
fn a_panicking_observer_is_contained_and_reported_once_with_a_count() {
    let graph = graph_of([StageSpec::test("a"), StageSpec::test("b").after("a")]);
    let told = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&told);
    let engine = Engine::builder()
        .observer(observer_fn(move |event: &Event| {
            seen.fetch_add(1, Ordering::SeqCst);
            if matches!(event, Event::StageFinished { .. }) {
                panic!("dashboard went away");
            }
        }))
        .build()
        .unwrap();
    let executor = scripted(&Trace::default(), |_| Act::sleep(secs(1)));

    let report = run(&engine, &graph, &executor, &clock());

    assert!(report.succeeded(), "the run carried on");
    assert_eq!(
        report.warnings,
        [Warning::ObserverPanicked {
            event: "stage_finished".to_owned(),
            message: "dashboard went away".to_owned(),
            times: 2,
        }]
    );
    // Every event still reached it, the warning included, and the step's end.
    // Step started and finished, and for each stage ready, attempt started and finished: 8,
    // and the warning.
    assert_eq!(told.load(Ordering::SeqCst), 9);
}

/// A future that never ends and panics when dropped.
struct PanicsOnDrop;

impl Future for PanicsOnDrop {
    type Output = Result<StageOutcome, ExecutorError>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("socket already closed");
    }
}

/// An executor whose future hangs and panics when dropped.
fn hangs() -> impl Executor {
    from_async_fn(|_ctx| Box::pin(PanicsOnDrop))
}

#[test]
fn an_executor_future_that_panics_when_dropped_on_a_timeout_or_a_cancel_is_contained() {
    // Cut off by its timeout.
    let graph = graph_of([StageSpec::test("hangs").attempt_timeout(secs(1))]);
    let report = run(&Engine::new(), &graph, &hangs(), &clock());
    assert_eq!(
        status(&report, "hangs"),
        &StageStatus::TimedOut {
            limit: TimeoutKind::Attempt
        }
    );
    assert_eq!(
        report.warnings,
        [Warning::DropPanicked {
            stage: "hangs".parse().unwrap(),
            attempt: 1,
            message: "socket already closed".to_owned(),
        }]
    );

    // Cut off by a failure elsewhere (fail-fast), and by the step's timeout.
    let mixed = from_async_fn(|ctx: StageContext<'_>| {
        if ctx.stage() == "fails" {
            Box::pin(async move {
                ctx.clock().sleep(secs(1)).await;
                Ok(StageOutcome::failure("broken"))
            })
        } else {
            Box::pin(PanicsOnDrop)
        }
    });
    let graph = graph_of([StageSpec::test("hangs"), StageSpec::test("fails")]);
    let report = run(&Engine::new(), &graph, &mixed, &clock());
    assert_eq!(status(&report, "hangs"), &StageStatus::Cancelled);
    assert!(matches!(
        report.warnings.as_slice(),
        [Warning::DropPanicked { stage, .. }] if stage == "hangs"
    ));
    let engine = Engine::builder().step_timeout(secs(5)).build().unwrap();
    let graph = graph_of([StageSpec::test("hangs")]);
    let report = run(&engine, &graph, &hangs(), &clock());
    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert_eq!(report.warnings.len(), 1);
}

/// A future that finishes at once and panics when dropped afterwards.
struct FinishesThenPanicsOnDrop;

impl Future for FinishesThenPanicsOnDrop {
    type Output = Result<StageOutcome, ExecutorError>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(StageOutcome::success()))
    }
}

impl Drop for FinishesThenPanicsOnDrop {
    fn drop(&mut self) {
        panic!("double close");
    }
}

/// Hands the engine a [`FinishesThenPanicsOnDrop`] as the attempt's own future (the
/// trait's signature written out, as `#[async_trait]` would: wrapped in an `async` body, the
/// future would be dropped inside that body's last poll).
struct FinishesThenPanics;

impl Executor for FinishesThenPanics {
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _ctx: StageContext<'life1>,
    ) -> Pin<Box<dyn Future<Output = Result<StageOutcome, ExecutorError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(FinishesThenPanicsOnDrop)
    }
}

#[test]
fn an_executor_future_that_panics_when_dropped_after_finishing_is_contained() {
    let executor = FinishesThenPanics;
    let graph = graph_of([StageSpec::test("s")]);
    let report = run(&Engine::new(), &graph, &executor, &clock());
    assert!(
        report.succeeded(),
        "the attempt ended as it would have otherwise"
    );
    assert!(matches!(
        report.warnings.as_slice(),
        [Warning::DropPanicked { message, .. }] if message == "double close"
    ));
}

#[test]
fn a_step_dropped_by_its_host_contains_a_drop_that_panics() {
    let graph = graph_of([StageSpec::test("hangs")]);
    let clock = clock();
    let release = tollgate::id::ReleaseId::new("r1").unwrap();
    let engine = Engine::new();
    let executor = hangs();
    let mut step = Box::pin(engine.run_graph(
        &graph,
        tollgate::lifecycle::Step::Test,
        &executor,
        &clock,
        &release,
        "4f2a9c1",
    ));
    assert!(crate::support::poll_at_most(step.as_mut(), 1).is_none());
    // Dropping the step drops the attempt, whose drop panics: contained, not in the host.
    drop(step);
}

#[test]
fn warnings_travel_in_the_report_s_serde_form_and_are_left_out_when_there_are_none() {
    let graph = graph_of([StageSpec::test("hangs").attempt_timeout(secs(1))]);
    let report = run(&Engine::new(), &graph, &hangs(), &clock());
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        json.contains(r#""warnings":[{"warning":"drop_panicked""#),
        "{json}"
    );
    let back: tollgate::engine::StepReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let quiet = run(
        &Engine::new(),
        &graph_of([StageSpec::test("s")]),
        &from_fn(|_| Ok(StageOutcome::success())),
        &clock(),
    );
    assert!(!serde_json::to_string(&quiet).unwrap().contains("warnings"));
}
