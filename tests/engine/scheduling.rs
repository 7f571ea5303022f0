//! Scheduling: never more stages at once than the workers and group limits allow, and the
//! stage with the longest remaining path first.

use tollgate::engine::{Engine, StepReport};
use tollgate::graph::StageSpec;
use tollgate::lifecycle::Step;
use tollgate::time::Timestamp;

use crate::fixture::{Act, Trace, at, graph_of, run, scripted, secs};
use crate::support::clock;

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

// Critical-path priority.

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
