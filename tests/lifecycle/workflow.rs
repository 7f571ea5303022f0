//! Workflow features through a release's moves: a stage allowed to fail, a stage that runs
//! only on failure, and a matrix stage; the moves succeed, the reports keep what happened,
//! and a restore from the journal re-derives the same release.

use crate::support::{block_on, clock, compile, deployment, ok, revision};
use tollgate::engine::FailurePolicy;
use tollgate::executor::{StageOutcome, StageStatus, from_fn};
use tollgate::graph::{Condition, Matrix, SkipReason, Step};
use tollgate::prelude::*;
use tollgate::release::StateName;

/// `compile`, then in the test step `bench` (fails, allowed to), `triage` (on failure of
/// anything before it: nothing fails, so skipped), `unit` over a matrix of two systems, and
/// `report` after `unit`.
fn pipeline(clock: &tollgate::time::ManualClock) -> Pipeline<Deployment> {
    deployment("shop", clock)
        .stages([
            Stage::build("compile").run(compile()),
            Stage::test("bench")
                .after("compile")
                .continue_on_error()
                .run(from_fn(|_| Ok(StageOutcome::failure("regressed 3 %")))),
            Stage::test("triage")
                .after("bench")
                .when(Condition::OnFailure)
                .run(ok()),
            Stage::test("unit")
                .after("compile")
                .matrix(Matrix::new().axis("os", ["linux", "macos"]))
                .run(from_fn(|ctx| {
                    Ok(StageOutcome::success().output("os", ctx.spec().matrix["os"].clone()))
                })),
            Stage::test("report").after("unit").run(from_fn(|ctx| {
                let linux = ctx
                    .output("unit (os=linux)", "os")?
                    .unwrap_or("?")
                    .to_owned();
                Ok(StageOutcome::success().output("seen", linux))
            })),
            Stage::stage("staging").run(ok()),
            Stage::deploy("production").run(ok()),
        ])
        .engine(
            tollgate::engine::Engine::builder()
                .failure_policy(FailurePolicy::FailFast)
                .build()
                .unwrap(),
        )
        .build()
        .expect("the workflow pipeline is valid")
}

#[test]
fn an_allowed_failure_a_skipped_condition_and_a_matrix_pass_the_move_and_survive_a_restore() {
    let clock = clock();
    let pipeline = pipeline(&clock);
    let built = block_on(
        pipeline
            .start("r1", revision("aaa"))
            .unwrap()
            .build(&pipeline),
    )
    .unwrap();
    let artifact = built.artifact().clone();
    let tested = block_on(built.test(&pipeline, &artifact)).expect("the test move succeeds");

    let report = tested
        .record()
        .steps()
        .iter()
        .find(|r| r.step == Step::Test)
        .unwrap()
        .clone();
    let bench = report.stage("bench").unwrap();
    assert!(matches!(bench.status, StageStatus::Failed { .. }));
    assert!(bench.continued, "the failure stays visible, marked allowed");
    let triage = report.stage("triage").unwrap();
    assert_eq!(triage.skipped, Some(SkipReason::NoFailure));
    assert_eq!(report.stage("report").unwrap().outputs["seen"], "linux");
    assert_eq!(
        report.stage("unit (os=macos)").unwrap().status,
        StageStatus::Succeeded
    );

    // The journal's facts re-derive the same release, allowed failure and skip included.
    let restored = block_on(pipeline.restore("r1")).expect("the release restores");
    assert_eq!(restored.state(), StateName::Tested);
    assert_eq!(restored.record(), tested.record());
}
