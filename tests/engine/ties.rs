//! Ties (issue 11, items 16 and 17): attempts that finish at the same instant are all settled
//! before any worker is handed out again, and `Engine::plan` predicts the virtual run exactly,
//! stage by stage, on random graphs with random estimates, worker and group limits.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tollgate::engine::{Engine, FailurePolicy, RetryPolicy};
use tollgate::executor::StageStatus;
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::lifecycle::Step;

use crate::fixture::{Act, Trace, at, graph_of, name, run, scripted, secs};
use crate::support::clock;

/// Runs `graph` with every stage sleeping for its estimate.
fn run_estimates(engine: &Engine, graph: &StageGraph) -> tollgate::engine::StepReport {
    let executor = scripted(&Trace::default(), |ctx| {
        Act::sleep(ctx.spec().estimate.unwrap_or_default())
    });
    run(engine, graph, &executor, &clock())
}

/// `a` and `b` finish together at 10 s; `b` releases two long stages, `a` none (its
/// dependent also waits for `c`); `low` has been ready since the start.
fn tie_graph() -> StageGraph {
    graph_of([
        StageSpec::test("c").estimate(secs(30)),
        StageSpec::test("a").estimate(secs(10)),
        StageSpec::test("b").estimate(secs(10)),
        StageSpec::test("low").estimate(secs(5)),
        StageSpec::test("z")
            .estimate(secs(100))
            .after("a")
            .after("c"),
        StageSpec::test("h1").estimate(secs(20)).after("b"),
        StageSpec::test("h2").estimate(secs(20)).after("b"),
    ])
}

#[test]
fn attempts_that_finish_together_are_all_settled_before_a_worker_is_handed_out() {
    // Three workers: `c`, `a` and `b` start; `low` waits. At 10 s `a` and `b` end at once and
    // free two workers: the two stages `b` releases outrank `low`, so both take them.
    let engine = Engine::builder().workers(3).build().unwrap();
    let report = run_estimates(&engine, &tie_graph());
    assert!(report.succeeded(), "{report:#?}");
    let started = |id: &str| report.stage(id).unwrap().started_at.unwrap();
    assert_eq!(started("h1"), at(secs(10)));
    assert_eq!(
        started("h2"),
        at(secs(10)),
        "the second stage `b` released waited behind `low`"
    );
    assert!(started("low") > at(secs(10)), "{:?}", started("low"));
}

#[test]
fn the_plan_settles_ties_as_the_run_does() {
    let engine = Engine::builder().workers(3).build().unwrap();
    let plan = engine.plan(&tie_graph(), Step::Test);
    let start = |id: &str| {
        plan.stages
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.start)
            .unwrap()
    };
    assert_eq!((start("h1"), start("h2")), (secs(10), secs(10)));
    assert_eq!(start("low"), secs(30));
}

/// A random DAG of 1..=`max` stages as the dependencies of each stage (earlier stages only).
fn dag(max: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1..=max).prop_flat_map(|n| {
        proptest::collection::vec((any::<u64>(), any::<u64>()), n).prop_map(|masks| {
            masks
                .iter()
                .enumerate()
                // Two masks and-ed over the 64 stages before: each edge with probability 1/4.
                .map(|(i, (a, b))| {
                    (0..i.min(64))
                        .filter(|&back| (a & b) >> back & 1 == 1)
                        .map(|back| i - 1 - back)
                        .collect()
                })
                .collect()
        })
    })
}

/// How a random stage of the plan-versus-run property behaves.
#[derive(Debug, Clone)]
struct Planned {
    /// Its estimate, in whole seconds from a small range so that many finishes tie.
    estimate: Option<u64>,
    group: Option<&'static str>,
    finally: bool,
    /// Fails at the end of its estimate (only where failures are drawn).
    fails: bool,
    /// A retry policy, which a stage that succeeds never uses.
    attempts: u32,
}

fn planned(failures: bool) -> impl Strategy<Value = Planned> {
    (
        proptest::option::weighted(0.9, 0u64..6),
        prop_oneof![Just(None), Just(Some("gpu")), Just(Some("db"))],
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(if failures { 0.1 } else { 0.0 }),
        1u32..4,
    )
        .prop_map(|(estimate, group, finally, fails, attempts)| Planned {
            estimate,
            group,
            finally,
            fails,
            attempts,
        })
}

/// The graph of `deps` and `stages` (a stage others depend on is never a finally one).
fn graph(deps: &[Vec<usize>], stages: &[Planned]) -> StageGraph {
    let depended_on: std::collections::BTreeSet<usize> = deps.iter().flatten().copied().collect();
    graph_of(deps.iter().enumerate().map(|(i, ds)| {
        let s = &stages[i];
        let mut spec = ds
            .iter()
            .fold(StageSpec::test(name(i)), |spec, &d| spec.after(name(d)))
            .retry(RetryPolicy::attempts(s.attempts));
        if let Some(secs) = s.estimate {
            spec = spec.estimate(Duration::from_secs(secs));
        }
        if let Some(group) = s.group {
            spec = spec.group(group);
        }
        if s.finally && !depended_on.contains(&i) {
            spec.finally()
        } else {
            spec
        }
    }))
}

/// An engine with `workers` (if any) and group limits.
fn engine(workers: Option<usize>, gpu: Option<usize>, db: Option<usize>) -> Engine {
    let mut builder = Engine::builder().failure_policy(FailurePolicy::FailFast);
    if let Some(n) = workers {
        builder = builder.workers(n);
    }
    if let Some(n) = gpu {
        builder = builder.group_limit("gpu", n);
    }
    if let Some(n) = db {
        builder = builder.group_limit("db", n);
    }
    builder.build().unwrap()
}

fn limits() -> impl Strategy<Value = (Option<usize>, Option<usize>, Option<usize>)> {
    (
        proptest::option::weighted(0.8, 1usize..5),
        proptest::option::of(1usize..3),
        proptest::option::of(1usize..3),
    )
}

/// Checks that `engine` runs the graph of `deps` and `stages` as it plans it: every stage
/// starts and finishes when the plan says, in the plan's order, and the step ends at the
/// plan's makespan.
fn plan_is_run(
    deps: &[Vec<usize>],
    stages: &[Planned],
    engine: &Engine,
) -> Result<(), TestCaseError> {
    let graph = graph(deps, stages);
    let plan = engine.plan(&graph, Step::Test);
    let report = run_estimates(engine, &graph);
    prop_assert!(report.succeeded());
    prop_assert_eq!(plan.stages.len(), graph.len());
    for planned in &plan.stages {
        let ran = report.stage(planned.id.as_str()).unwrap();
        prop_assert_eq!(
            ran.started_at,
            Some(at(planned.start)),
            "start of {}",
            planned.id
        );
        prop_assert_eq!(
            ran.finished_at,
            Some(at(planned.finish)),
            "finish of {}",
            planned.id
        );
    }
    prop_assert_eq!(report.finished_at, at(plan.makespan));
    // The plan lists stages in the order the run started them.
    let starts: Vec<_> = plan
        .stages
        .iter()
        .map(|s| report.stage(s.id.as_str()).unwrap().started_at)
        .collect();
    prop_assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// As the issue measured it: graphs of 1,000 stages on 8 workers.
    #[test]
    fn the_plan_is_the_run_on_thousand_stage_graphs(
        (deps, stages) in dag(1_000).prop_filter("big", |d| d.len() >= 500).prop_flat_map(|deps| {
            let n = deps.len();
            (Just(deps), proptest::collection::vec(planned(false), n))
        }),
    ) {
        plan_is_run(&deps, &stages, &engine(Some(8), Some(2), None))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Every stage starts and finishes when the plan says, and the step ends at the plan's
    /// makespan.
    #[test]
    fn the_plan_is_the_run(
        (deps, stages) in dag(40).prop_flat_map(|deps| {
            let n = deps.len();
            (Just(deps), proptest::collection::vec(planned(false), n))
        }),
        (workers, gpu, db) in limits(),
    ) {
        plan_is_run(&deps, &stages, &engine(workers, gpu, db))?;
    }

    /// With stages that fail (and may retry, which the plan does not foresee), every stage
    /// the plan starts before the first failed attempt ends is started by the run at that
    /// time: up to the first failure, the plan is the run.
    #[test]
    fn the_plan_is_the_run_up_to_the_first_failure(
        (deps, stages) in dag(30).prop_flat_map(|deps| {
            let n = deps.len();
            (Just(deps), proptest::collection::vec(planned(true), n))
        }),
        (workers, gpu, db) in limits(),
    ) {
        let graph = graph(&deps, &stages);
        let engine = engine(workers, gpu, db);
        let plan = engine.plan(&graph, Step::Test);
        let fails: BTreeMap<String, bool> =
            (0..stages.len()).map(|i| (name(i), stages[i].fails)).collect();
        let executor = scripted(&Trace::default(), move |ctx| {
            let estimate = ctx.spec().estimate.unwrap_or_default();
            if fails[ctx.stage().as_str()] {
                Act::fail_after(estimate, "broken")
            } else {
                Act::sleep(estimate)
            }
        });
        let report = run(&engine.clone(), &graph, &executor, &clock());
        // The first attempt that failed (its stage may have been retried, or cancelled by a
        // later failure).
        let first_failure = report
            .stages
            .iter()
            .flat_map(tollgate::engine::StageReport::attempts)
            .filter(|a| matches!(a.status, StageStatus::Failed { .. }))
            .map(|a| a.finished_at)
            .min();
        let Some(first_failure) = first_failure else {
            // Nothing failed (no failing stage was reached): the whole plan holds.
            for planned in &plan.stages {
                let ran = report.stage(planned.id.as_str()).unwrap();
                prop_assert_eq!(ran.started_at, Some(at(planned.start)));
            }
            return Ok(());
        };
        let ordinary = plan.stages.iter().filter(|s| !graph.get(s.id.as_str()).unwrap().finally);
        for planned in ordinary {
            let ran = report.stage(planned.id.as_str()).unwrap();
            if at(planned.start) < first_failure {
                prop_assert_eq!(ran.started_at, Some(at(planned.start)), "start of {}", planned.id);
            }
        }
    }
}
