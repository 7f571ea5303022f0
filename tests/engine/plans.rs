//! Dry-run plans: the schedule `Engine::plan` predicts, and that a real run keeps to it.

use std::time::Duration;

use tollgate::engine::Engine;
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::lifecycle::Step;

use crate::fixture::{Act, Trace, at, graph_of, logged, run, scripted, secs};
use crate::support::clock;

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
