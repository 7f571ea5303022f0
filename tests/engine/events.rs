//! Events: the observer sees every transition in time order, and events and reports round-trip
//! through serde.

use std::collections::BTreeMap;

use tollgate::engine::{Backoff, Event, FailurePolicy, RetryPolicy, StepReport, final_statuses};
use tollgate::executor::StageStatus;
use tollgate::graph::StageSpec;
use tollgate::lifecycle::Step;
use tollgate::time::Timestamp;

use crate::fixture::{
    Act, Trace, attempt_starts, graph_of, logged, millis, report_statuses, run, scripted, secs,
    time_of,
};
use crate::support::clock;

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
            .attempts()
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
