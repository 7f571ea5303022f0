//! Stage conditions and `continue_on_error`: a stage runs on success of its dependencies
//! (the default), on failure, always, or when one named dependency failed; a skipped stage
//! says why; an allowed failure does not fail the step but stays in the report. A property
//! test checks every run/skip decision on random graphs against a reference table.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use proptest::prelude::*;
use tollgate::engine::{Engine, FailurePolicy, StepOutcome, StepReport};
use tollgate::executor::{self, StageOutcome, StageStatus};
use tollgate::graph::{Condition, GraphError, SkipReason, StageGraph, StageId, StageSpec};

use crate::fixture::{graph_of, run, status};
use crate::support::clock;

/// Runs the test step of `graph` where the stages in `failing` fail and every other
/// succeeds; returns the report and the stages that ran, in order.
fn run_failing(engine: &Engine, graph: &StageGraph, failing: &[&str]) -> (StepReport, Vec<String>) {
    let ran = Mutex::new(Vec::new());
    let failing: BTreeSet<String> = failing.iter().map(|s| (*s).to_owned()).collect();
    let executor = executor::from_fn(|ctx| {
        let stage = ctx.stage().to_string();
        ran.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stage.clone());
        Ok(if failing.contains(&stage) {
            StageOutcome::failure("broken")
        } else {
            StageOutcome::success()
        })
    });
    let report = run(engine, graph, &executor, &clock());
    let ran = ran.into_inner().unwrap_or_else(PoisonError::into_inner);
    (report, ran)
}

fn continue_independent() -> Engine {
    Engine::builder()
        .failure_policy(FailurePolicy::ContinueIndependent)
        .build()
        .unwrap()
}

fn id(s: &str) -> StageId {
    StageId::new(s).unwrap()
}

fn skipped(report: &StepReport, stage: &str) -> Option<SkipReason> {
    let stage = report.stage(stage).unwrap();
    assert_eq!(stage.status, StageStatus::Skipped, "{stage:?}");
    stage.skipped.clone()
}

/// `unit` → `triage` (on failure), `cleanup` (always), `notify` (when `unit` failed),
/// `publish` (on success).
fn reactions() -> StageGraph {
    graph_of([
        StageSpec::test("unit"),
        StageSpec::test("triage")
            .after("unit")
            .when(Condition::OnFailure),
        StageSpec::test("cleanup")
            .after("unit")
            .when(Condition::Always),
        StageSpec::test("notify").after("unit").when_failed("unit"),
        StageSpec::test("publish").after("unit"),
    ])
}

#[test]
fn after_a_failure_the_failure_conditions_run_and_the_success_ones_are_skipped_with_the_reason() {
    let (report, ran) = run_failing(&continue_independent(), &reactions(), &["unit"]);
    assert_eq!(
        ran.iter().collect::<BTreeSet<_>>(),
        ["unit", "triage", "cleanup", "notify"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect()
    );
    assert_eq!(
        skipped(&report, "publish"),
        Some(SkipReason::DependencyFailed {
            dependency: id("unit")
        })
    );
    assert_eq!(report.outcome, StepOutcome::Failed);
    assert!(!report.succeeded());
}

#[test]
fn after_a_success_the_failure_conditions_are_skipped_and_the_step_still_succeeds() {
    let (report, ran) = run_failing(&continue_independent(), &reactions(), &[]);
    assert_eq!(ran.len(), 3, "{ran:?}");
    for stage in ["unit", "cleanup", "publish"] {
        assert_eq!(*status(&report, stage), StageStatus::Succeeded);
    }
    assert_eq!(skipped(&report, "triage"), Some(SkipReason::NoFailure));
    assert_eq!(
        skipped(&report, "notify"),
        Some(SkipReason::DependencyDidNotFail {
            dependency: id("unit")
        })
    );
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.outcome, StepOutcome::Succeeded);
}

#[test]
fn fail_fast_stops_success_stages_but_still_runs_the_stages_that_react_to_failure() {
    let graph = graph_of([
        StageSpec::test("unit"),
        StageSpec::test("lint"),
        StageSpec::test("docs").after("lint"),
        StageSpec::test("triage")
            .after("unit")
            .when(Condition::OnFailure),
    ]);
    // `unit` starts first and fails at once: `lint`, ready but not started, may no longer
    // start, and `docs` after it is skipped naming it; `triage` reacts to the failure.
    let (report, ran) = run_failing(&Engine::new(), &graph, &["unit"]);
    assert_eq!(ran, ["unit", "triage"]);
    assert_eq!(*status(&report, "triage"), StageStatus::Succeeded);
    assert_eq!(skipped(&report, "lint"), Some(SkipReason::StepStopped));
    assert_eq!(
        skipped(&report, "docs"),
        Some(SkipReason::DependencyFailed {
            dependency: id("lint")
        })
    );
    assert_eq!(report.outcome, StepOutcome::Failed);
}

#[test]
fn a_skip_passes_down_the_graph_with_the_first_cause() {
    let graph = graph_of([
        StageSpec::test("unit"),
        StageSpec::test("triage")
            .after("unit")
            .when(Condition::OnFailure),
        StageSpec::test("file-issue").after("triage"),
        StageSpec::test("package").after("unit"),
        StageSpec::test("upload").after("package"),
    ]);
    let (report, _) = run_failing(&continue_independent(), &graph, &[]);
    // `triage` was not needed: its dependent is skipped, and nothing failed.
    assert_eq!(
        skipped(&report, "file-issue"),
        Some(SkipReason::DependencySkipped {
            dependency: id("triage")
        })
    );
    assert!(report.succeeded());

    let (report, _) = run_failing(&continue_independent(), &graph, &["unit"]);
    assert_eq!(*status(&report, "file-issue"), StageStatus::Succeeded);
    // `package` was skipped after a failure, and so is `upload`, naming `package`.
    assert_eq!(
        skipped(&report, "upload"),
        Some(SkipReason::DependencyFailed {
            dependency: id("package")
        })
    );
}

#[test]
fn an_allowed_failure_does_not_fail_the_step_and_stays_in_the_report() {
    let graph = graph_of([
        StageSpec::test("flaky-bench").continue_on_error(),
        StageSpec::test("report").after("flaky-bench"),
        StageSpec::test("on-bench-failure")
            .after("flaky-bench")
            .when_failed("flaky-bench"),
        StageSpec::test("on-any-failure")
            .after("flaky-bench")
            .when(Condition::OnFailure),
    ]);
    for engine in [Engine::new(), continue_independent()] {
        let (report, ran) = run_failing(&engine, &graph, &["flaky-bench"]);
        let bench = report.stage("flaky-bench").unwrap();
        assert!(
            matches!(bench.status, StageStatus::Failed { .. }),
            "{bench:?}"
        );
        assert!(bench.continued);
        assert!(bench.is_ok());
        assert_eq!(
            report.failed().count(),
            0,
            "an allowed failure is not a failure of the step"
        );
        // Dependents see a success; the named-dependency condition sees the failure.
        assert_eq!(*status(&report, "report"), StageStatus::Succeeded);
        assert_eq!(*status(&report, "on-bench-failure"), StageStatus::Succeeded);
        assert_eq!(
            skipped(&report, "on-any-failure"),
            Some(SkipReason::NoFailure)
        );
        assert_eq!(report.outcome, StepOutcome::Succeeded);
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(ran.len(), 3);
    }
    // The same stage, succeeding, is not marked.
    let (report, _) = run_failing(&Engine::new(), &graph, &[]);
    assert!(!report.stage("flaky-bench").unwrap().continued);
}

#[test]
fn finally_stages_still_run_whatever_the_conditions_did_and_take_none_themselves() {
    let graph = graph_of([
        StageSpec::test("unit"),
        StageSpec::test("triage")
            .after("unit")
            .when(Condition::OnFailure),
        StageSpec::test("teardown").after("triage").finally(),
    ]);
    let (report, _) = run_failing(&Engine::new(), &graph, &[]);
    assert_eq!(*status(&report, "teardown"), StageStatus::Succeeded);
    assert!(report.succeeded());

    let error = StageGraph::builder()
        .stage(StageSpec::test("unit"))
        .stage(
            StageSpec::test("teardown")
                .after("unit")
                .finally()
                .when(Condition::Always),
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, GraphError::InvalidPolicy { stage, .. } if stage == "teardown"),
        "{error:?}"
    );
}

#[test]
fn a_condition_on_a_stage_that_is_not_a_dependency_is_refused_naming_both() {
    let error = StageGraph::builder()
        .stage(StageSpec::test("unit"))
        .stage(StageSpec::test("lint"))
        .stage(StageSpec::test("notify").after("lint").when_failed("unit"))
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        GraphError::ConditionOnNonDependency {
            stage: id("notify"),
            dependency: id("unit"),
        }
    );
    assert_eq!(
        error.to_string(),
        "stage `notify` runs when `unit` fails, but `unit` is not one of its dependencies"
    );
}

#[test]
fn conditions_and_allowed_failures_round_trip_through_serde() {
    let graph = graph_of([
        StageSpec::test("unit").continue_on_error(),
        StageSpec::test("triage")
            .after("unit")
            .when(Condition::OnFailure),
        StageSpec::test("notify").after("unit").when_failed("unit"),
    ]);
    let json = serde_json::to_string(&graph).unwrap();
    assert!(json.contains(r#""when":"on_failure""#), "{json}");
    assert!(
        json.contains(r#""when":{"dependency_failed":"unit"}"#),
        "{json}"
    );
    assert!(json.contains(r#""continue_on_error":true"#), "{json}");
    let back: StageGraph = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back.stages().collect::<Vec<_>>(),
        graph.stages().collect::<Vec<_>>()
    );

    let (report, _) = run_failing(&continue_independent(), &graph, &["unit"]);
    let json = serde_json::to_string(&report).unwrap();
    let back: StepReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert!(json.contains(r#""continued":true"#), "{json}");
}

// ---- the decision against a reference table, on random graphs ----

/// How a stage ended in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ran { failed: bool },
    Skipped { after_failure: bool },
}

/// The reference: every condition written out as a table over how the dependencies ended,
/// with an allowed failure counting as a success except for the named dependency. Each stage
/// is `(dependencies, condition, fails, allowed to fail)`, condition 0 on success, 1 on
/// failure, 2 always, 3 when its first dependency failed.
fn reference(stages: &[(Vec<usize>, u8, bool, bool)]) -> Vec<End> {
    let mut ends: Vec<End> = Vec::new();
    for (deps, condition, fails, _) in stages {
        // A failure that fails the step, or a skip caused by one.
        let bad = |d: &usize| match ends[*d] {
            End::Ran { failed } => failed && !stages[*d].3,
            End::Skipped { after_failure } => after_failure,
        };
        let skipped = |d: &usize| matches!(ends[*d], End::Skipped { .. });
        let runs = match condition {
            0 => !deps.iter().any(|d| bad(d) || skipped(d)),
            1 => deps.iter().any(bad),
            2 => true,
            _ => matches!(ends[deps[0]], End::Ran { failed: true }),
        };
        ends.push(if runs {
            End::Ran { failed: *fails }
        } else {
            End::Skipped {
                after_failure: *condition == 0 && deps.iter().any(bad),
            }
        });
    }
    ends
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_run_or_skip_decision_matches_the_reference_table(
        stages in prop::collection::vec(
            (prop::collection::vec(any::<prop::sample::Index>(), 0..3), 0u8..4, any::<bool>(), any::<bool>()),
            1..12,
        )
    ) {
        // Stage i depends on earlier stages only; condition 3 names its first dependency
        // (and becomes the default when it has none).
        let stages: Vec<(Vec<usize>, u8, bool, bool)> = stages
            .into_iter()
            .enumerate()
            .map(|(i, (deps, condition, fails, allowed))| {
                let mut deps: Vec<usize> = if i == 0 {
                    Vec::new()
                } else {
                    deps.iter().map(|d| d.index(i)).collect()
                };
                deps.dedup();
                let mut seen = BTreeSet::new();
                deps.retain(|d| seen.insert(*d));
                let condition = if condition == 3 && deps.is_empty() { 0 } else { condition };
                (deps, condition, fails, allowed)
            })
            .collect();
        let name = |i: usize| format!("s{i}");
        let specs = stages.iter().enumerate().map(|(i, (deps, condition, _, allowed))| {
            let mut spec = StageSpec::test(name(i));
            for d in deps {
                spec = spec.after(name(*d));
            }
            spec = match condition {
                1 => spec.when(Condition::OnFailure),
                2 => spec.when(Condition::Always),
                3 => spec.when_failed(name(deps[0])),
                _ => spec,
            };
            if *allowed { spec.continue_on_error() } else { spec }
        });
        let graph = graph_of(specs);
        let failing: Vec<String> = stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.2)
            .map(|(i, _)| name(i))
            .collect();
        let failing: Vec<&str> = failing.iter().map(String::as_str).collect();
        let (report, _) = run_failing(&continue_independent(), &graph, &failing);
        let expected = reference(&stages);
        for (i, want) in expected.iter().enumerate() {
            let got = report.stage(&name(i)).unwrap();
            let got_end = match &got.status {
                StageStatus::Succeeded => End::Ran { failed: false },
                StageStatus::Failed { .. } => End::Ran { failed: true },
                StageStatus::Skipped => End::Skipped {
                    after_failure: got.skipped.as_ref().is_some_and(SkipReason::after_failure),
                },
                other => panic!("unexpected {other:?}"),
            };
            prop_assert_eq!(got_end, *want, "stage s{} of {:?}", i, stages);
            prop_assert!(got.skipped.is_some() == (got.status == StageStatus::Skipped));
        }
        // The step succeeds exactly when nothing failed that was not allowed to.
        let hard = expected
            .iter()
            .zip(&stages)
            .any(|(e, s)| matches!(e, End::Ran { failed: true }) && !s.3);
        prop_assert_eq!(report.succeeded(), !hard);
    }
}
