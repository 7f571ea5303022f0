//! Retries: attempts, fixed and exponential backoff, seeded jitter, a stage in backoff giving its
//! worker back, retry predicates, and no retry after a cancel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate::Error;
use tollgate::engine::{
    Backoff, CancelHandle, Engine, Event, RetryPolicy, StepOutcome, StepReport,
};
use tollgate::executor::{StageOutcome, StageStatus, TimeoutKind, from_fn};
use tollgate::graph::StageSpec;
use tollgate::lifecycle::Deployment;
use tollgate::pipeline::{Pipeline, Stage};
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

use crate::fixture::{
    Act, Trace, at, attempt_starts, graph_of, logged, run, scripted, secs, status,
};
use crate::support::{clock, deployment, ok, revision};

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
        .attempts()
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
                attempt, status, ..
            } => {
                assert!(matches!(status, StageStatus::Failed { .. }), "{status}");
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
        .attempts()
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
    let flaky = &report.stage("flaky").unwrap().attempts();
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
    let statuses: Vec<&StageStatus> = flaky.attempts().iter().map(|a| &a.status).collect();
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
        .attempts()
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
        .attempts()
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
    deployment("shop", clock)
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
    assert_eq!(
        fetch.attempts().len(),
        3,
        "the third failure is not retried"
    );
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
            limit: TimeoutKind::Attempt
        }
    );
    assert_eq!(fetch.attempts().len(), 1);
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
        .attempts()
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
