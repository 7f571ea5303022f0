//! Failure policies and finally stages: fail fast or continue with everything independent of a
//! failure; finally stages run last and see the step's outcome.

use tollgate::engine::{Engine, FailurePolicy, StepOutcome};
use tollgate::executor::{Executor, StageStatus};
use tollgate::graph::{StageGraph, StageSpec};

use crate::fixture::{Act, Trace, at, graph_of, run, scripted, secs, status};
use crate::support::clock;

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
    let engine = Engine::builder()
        .failure_policy(FailurePolicy::ContinueIndependent)
        .build()
        .unwrap();
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
