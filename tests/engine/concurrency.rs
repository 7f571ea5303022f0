//! Concurrency groups across releases: of the stages in one group, one runs at a time,
//! whichever release's step they belong to; a newcomer queues behind the one in flight, or
//! with cancel-in-progress cancels it (and older waiters), which ends cancelled, not retried,
//! with `Superseded` as its error.

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::join;
use tollgate::engine::{Engine, StepReport, Superseded};
use tollgate::executor::{StageOutcome, StageStatus, from_async_fn};
use tollgate::graph::{Concurrency, RetryPolicy, StageGraph, StageSpec, Step};
use tollgate::id::ReleaseId;
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

use crate::fixture::{at, graph_of, secs};
use crate::support::clock;

/// `migrate` (10 s of virtual time) in `concurrency`'s group, then `smoke` after it.
fn deploy_graph(concurrency: Concurrency) -> StageGraph {
    graph_of([
        StageSpec::test("migrate")
            .concurrency(concurrency)
            .retry(RetryPolicy::attempts(3)),
        StageSpec::test("smoke").after("migrate"),
    ])
}

/// Runs the graph for three releases on one engine: `r1` at once, `r2` 2 s later, `r3` 4 s
/// later. Returns the reports and every (release, stage, start, end) the executor saw.
#[allow(clippy::type_complexity)]
fn three_releases(
    graph: &StageGraph,
) -> (Vec<StepReport>, Vec<(String, String, Timestamp, Timestamp)>) {
    let clock: ManualClock = clock();
    let engine = Engine::new();
    let seen: Arc<Mutex<Vec<(String, String, Timestamp, Timestamp)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let executor = from_async_fn(move |ctx| {
        let record = Arc::clone(&record);
        Box::pin(async move {
            let start = ctx.clock().now();
            if ctx.stage() == "migrate" {
                ctx.clock().sleep(secs(10)).await;
            }
            record.lock().unwrap_or_else(PoisonError::into_inner).push((
                ctx.release().to_string(),
                ctx.stage().to_string(),
                start,
                ctx.clock().now(),
            ));
            Ok(StageOutcome::success())
        })
    });
    let ids: Vec<ReleaseId> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| ReleaseId::new(*r).unwrap())
        .collect();
    let run = |n: usize| {
        let (engine, clock, executor, ids) = (&engine, &clock, &executor, &ids);
        async move {
            clock.sleep(secs(2 * n as u64)).await;
            engine
                .run_graph(graph, Step::Test, executor, clock, &ids[n], "4f2a9c1")
                .await
        }
    };
    let ((r1, r2), r3) = run_virtual(&clock, join(join(run(0), run(1)), run(2)));
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    (vec![r1, r2, r3], seen)
}

fn migrate_of(report: &StepReport) -> &tollgate::engine::StageReport {
    report.stage("migrate").unwrap()
}

#[test]
fn without_cancel_in_progress_newer_releases_queue_behind_the_one_in_flight_in_order() {
    let (reports, seen) = three_releases(&deploy_graph(Concurrency::queue("production")));
    for report in &reports {
        assert!(report.succeeded(), "{report:?}");
    }
    let migrations: Vec<(&str, Timestamp, Timestamp)> = seen
        .iter()
        .filter(|(_, stage, _, _)| stage == "migrate")
        .map(|(release, _, start, end)| (release.as_str(), *start, *end))
        .collect();
    // One at a time, oldest first: each starts when the one before it ends.
    assert_eq!(
        migrations,
        [
            ("r1", at(secs(0)), at(secs(10))),
            ("r2", at(secs(10)), at(secs(20))),
            ("r3", at(secs(20)), at(secs(30))),
        ]
    );
}

#[test]
fn with_cancel_in_progress_a_newer_release_cancels_the_older_in_flight_step() {
    let (reports, seen) =
        three_releases(&deploy_graph(Concurrency::cancel_in_progress("production")));
    // r1 is cut off by r2 at 2 s, r2 (waiting for r1 to let go) by r3 at 4 s: only r3
    // migrates, and at once.
    for (report, by) in reports[..2].iter().zip(["r2", "r3"]) {
        let migrate = migrate_of(report);
        assert_eq!(migrate.status, StageStatus::Cancelled, "{migrate:?}");
        assert_eq!(
            migrate.attempts().len(),
            1,
            "a superseded stage is not retried"
        );
        let error = migrate
            .error()
            .and_then(|e| e.downcast_ref::<Superseded>())
            .expect("the stage keeps why it was cancelled");
        assert_eq!(error.group, "production");
        assert!(error.by.contains(&format!("`{by}`")), "{error}");
        assert!(
            migrate
                .logs
                .iter()
                .any(|l| l.text.contains("took concurrency group `production`")),
            "{:?}",
            migrate.logs
        );
        assert_eq!(report.stage("smoke").unwrap().status, StageStatus::Skipped);
        assert!(!report.succeeded());
    }
    assert!(reports[2].succeeded(), "{:?}", reports[2]);
    let r3: Vec<_> = seen
        .iter()
        .filter(|(r, s, _, _)| r == "r3" && s == "migrate")
        .collect();
    assert_eq!(r3.len(), 1);
    assert_eq!((r3[0].2, r3[0].3), (at(secs(4)), at(secs(14))));
    assert!(
        seen.iter().all(|(r, s, _, _)| r == "r3" || s != "migrate"),
        "no superseded migration finished: {seen:?}"
    );
}

#[test]
fn the_group_is_given_back_however_the_stage_ends_and_the_registry_empties() {
    // A failing stage in a group still lets the next release in.
    let clock: ManualClock = clock();
    let engine = Engine::new();
    let graph = graph_of([StageSpec::test("migrate").concurrency(Concurrency::queue("db"))]);
    let failing = from_async_fn(|_| Box::pin(async { Ok(StageOutcome::failure("locked table")) }));
    let release = ReleaseId::new("r1").unwrap();
    let report = run_virtual(
        &clock,
        engine.run_graph(&graph, Step::Test, &failing, &clock, &release, "a"),
    );
    assert!(!report.succeeded());
    assert!(engine.concurrency_groups().busy().is_empty());
    let ok = from_async_fn(|_| Box::pin(async { Ok(StageOutcome::success()) }));
    let report = run_virtual(
        &clock,
        engine.run_graph(&graph, Step::Test, &ok, &clock, &release, "a"),
    );
    assert!(report.succeeded());
    assert!(engine.concurrency_groups().busy().is_empty());
}

#[test]
fn an_unnamed_concurrency_group_is_refused_at_build() {
    let error = StageGraph::builder()
        .stage(StageSpec::test("migrate").concurrency(Concurrency::queue(" ")))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, tollgate::graph::GraphError::InvalidPolicy { stage, .. } if stage == "migrate"),
        "{error:?}"
    );
}
