//! Timeouts: attempt, stage and step limits end executors that never return, and are reported
//! apart from failures.

use tollgate::engine::{Engine, Event, FailurePolicy, RetryPolicy, StepOutcome};
use tollgate::executor::{StageStatus, TimeoutKind};
use tollgate::graph::StageSpec;
use tollgate::time::Timestamp;

use crate::fixture::{Act, Trace, at, graph_of, logged, run, scripted, secs, status};
use crate::support::clock;

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
        limit: TimeoutKind::Attempt,
    };
    assert_eq!(stuck.status, timed_out);
    assert!(!matches!(stuck.status, StageStatus::Failed { .. }));
    let spans: Vec<(Timestamp, Timestamp, &StageStatus)> = stuck
        .attempts()
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
                    status: StageStatus::TimedOut {
                        limit: TimeoutKind::Attempt
                    },
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
            limit: TimeoutKind::Stage
        }
    );
    // Attempt 1 hits its own 5 s limit; after the 1 s delay, attempt 2 is cut off by the
    // stage's 10 s limit, and there is no attempt 3.
    let ends: Vec<Timestamp> = slow.attempts().iter().map(|a| a.finished_at).collect();
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
            limit: TimeoutKind::Stage
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
            limit: TimeoutKind::Step
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
    let engine = Engine::builder()
        .failure_policy(FailurePolicy::ContinueIndependent)
        .build()
        .unwrap();

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
