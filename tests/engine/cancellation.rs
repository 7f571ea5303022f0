//! Cancellation: a cancelled step drops its running stages, starts nothing new and still runs
//! its finally stages.

use tollgate::engine::{CancelHandle, Event, StepOutcome};
use tollgate::executor::StageStatus;
use tollgate::graph::StageSpec;

use crate::fixture::{
    Act, Trace, at, attempt_starts, graph_of, logged, run, scripted, secs, status,
};
use crate::support::clock;

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
            .attempts()
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
