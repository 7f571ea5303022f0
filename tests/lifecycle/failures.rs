//! Stages that fail, panic (inside their future or before it exists) or return an executor
//! error, and moves cancelled through their release's handle: the move fails naming the stage
//! (or the cancelled step), its dependents are skipped, and the release comes back unmoved,
//! ready to retry.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::{
    block_on, built, clock, deployment, deployment_testing_with, ok, stages_testing_with,
};
use tollgate::engine::{Engine, FailurePolicy, StageReport};
use tollgate::executor::{ExecutorError, StageContext, StageStatus, from_fn};
use tollgate::graph::Step;
use tollgate::prelude::*;
use tollgate::release::StateName;

/// The step, stage and reason of a `StageFailed` error; any other error fails the test.
fn stage_failure(error: &Error) -> (Step, &str, &str) {
    match error {
        Error::StageFailed {
            step,
            stage,
            reason,
            ..
        } => (*step, stage.as_str(), reason.as_str()),
        other => panic!("expected StageFailed, got {other:?}"),
    }
}

#[test]
fn a_failing_stage_fails_the_move_skips_its_dependents_and_can_be_retried() {
    let clock = clock();
    let failed_once = Arc::new(AtomicBool::new(false));
    let flaky = {
        let failed_once = Arc::clone(&failed_once);
        from_fn(move |_| {
            if failed_once.swap(true, Ordering::SeqCst) {
                Ok(StageOutcome::success())
            } else {
                Ok(StageOutcome::failure("3 tests failed"))
            }
        })
    };
    let pipeline = deployment("shop", &clock)
        .stages(stages_testing_with(flaky))
        .stage(Stage::test("integration").after("unit").run(ok()))
        .stage(Stage::test("e2e").after("integration").run(ok()))
        .build()
        .unwrap();
    let (built, artifact) = built(&pipeline, "r1", "aaa");

    let refused = block_on(built.test(&pipeline, &artifact)).unwrap_err();
    assert_eq!(
        stage_failure(refused.error()),
        (Step::Test, "unit", "3 tests failed")
    );
    assert_eq!(refused.kind(), ErrorKind::StageFailed);
    assert_eq!(
        refused.to_string(),
        "stage `unit` failed in the test step: 3 tests failed"
    );

    let built = refused.into_release();
    assert_eq!(built.state(), StateName::Built);
    let report = built.record().steps().last().unwrap();
    assert_eq!(report.step, Step::Test);
    assert!(!report.succeeded());
    assert_eq!(
        report.stage("unit").unwrap().status,
        StageStatus::Failed {
            reason: "3 tests failed".to_owned()
        }
    );
    assert_eq!(
        report.stage("integration").unwrap().status,
        StageStatus::Skipped
    );
    assert_eq!(report.stage("e2e").unwrap().status, StageStatus::Skipped);
    assert_eq!(
        report.failed().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["unit"]
    );

    let tested = block_on(built.test(&pipeline, &artifact)).unwrap();
    let steps = tested.record().steps();
    assert_eq!(steps.len(), 3, "build, the failed test attempt, the retry");
    assert!(!steps[1].succeeded());
    assert!(steps[2].succeeded());
}

#[test]
fn a_panicking_executor_fails_its_stage_and_the_others_run_on() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .engine(
            Engine::builder()
                .failure_policy(FailurePolicy::ContinueIndependent)
                .build()
                .unwrap(),
        )
        .stages(stages_testing_with(from_fn(
            |_| -> Result<StageOutcome, ExecutorError> {
                panic!("index out of bounds in the test runner")
            },
        )))
        .stage(Stage::test("lint").after("compile").run(ok()))
        .build()
        .unwrap();
    let (built, artifact) = built(&pipeline, "r1", "aaa");

    let refused = block_on(built.test(&pipeline, &artifact)).unwrap_err();
    let (_, stage, reason) = stage_failure(refused.error());
    assert_eq!(stage, "unit");
    assert!(reason.contains("panicked"), "{reason}");
    assert!(
        reason.contains("index out of bounds in the test runner"),
        "{reason}"
    );
    let built = refused.into_release();
    let report = built.record().steps().last().unwrap();
    assert_eq!(report.stage("lint").unwrap().status, StageStatus::Succeeded);
    // The release is intact and the process alive: the release can still be stored.
    assert_eq!(built.state(), StateName::Built);
    assert_eq!(built.artifact(), &artifact);
}

/// An executor written without `#[async_trait]` (as the trait allows) that panics while
/// preparing its future, before the future is first polled.
struct PanicsBeforeItsFuture;

type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<StageOutcome, ExecutorError>> + Send + 'a>>;

impl Executor for PanicsBeforeItsFuture {
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _ctx: StageContext<'life1>,
    ) -> RunFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        panic!("could not prepare the job")
    }
}

#[test]
fn an_executor_panicking_before_its_future_exists_fails_its_stage() {
    let clock = clock();
    let pipeline = deployment_testing_with(&clock, PanicsBeforeItsFuture);
    let (built, artifact) = built(&pipeline, "r1", "aaa");

    // Boxed: the refused move carries the whole release back, which is large.
    let moved = catch_unwind(AssertUnwindSafe(|| {
        block_on(built.test(&pipeline, &artifact)).map_err(Box::new)
    }));
    let Ok(result) = moved else {
        panic!("the executor's panic escaped the engine instead of failing the stage");
    };
    let refused = result.unwrap_err();
    let (_, stage, reason) = stage_failure(refused.error());
    assert_eq!(stage, "unit");
    assert!(reason.contains("panicked"), "{reason}");
    assert!(reason.contains("could not prepare the job"), "{reason}");
}

#[test]
fn an_executor_error_fails_its_stage() {
    let clock = clock();
    let pipeline = deployment_testing_with(&clock, from_fn(|_| Err("runner unreachable".into())));
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    let refused = block_on(built.test(&pipeline, &artifact)).unwrap_err();
    let (step, stage, reason) = stage_failure(refused.error());
    assert_eq!((step, stage), (Step::Test, "unit"));
    assert!(reason.contains("executor error"), "{reason}");
    assert!(reason.contains("runner unreachable"), "{reason}");
    assert_eq!(refused.into_release().state(), StateName::Built);
}

/// An error type of the host's own, which tollgate knows nothing of.
#[derive(Debug)]
struct RunnerGone {
    runner: &'static str,
}

impl std::fmt::Display for RunnerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "runner `{}` is gone", self.runner)
    }
}

impl std::error::Error for RunnerGone {}

#[test]
fn an_executor_s_own_error_is_the_source_of_the_failed_move_and_downcasts_to_its_type() {
    let clock = clock();
    let pipeline = deployment_testing_with(
        &clock,
        from_fn(|_| -> Result<StageOutcome, ExecutorError> {
            Err(Box::new(RunnerGone { runner: "ci-7" }))
        }),
    );
    let (built, artifact) = built(&pipeline, "r1", "aaa");

    let refused = block_on(built.test(&pipeline, &artifact)).unwrap_err();
    let error = refused.error();
    assert_eq!(
        error.to_string(),
        "stage `unit` failed in the test step: executor error: runner `ci-7` is gone"
    );
    let source = std::error::Error::source(error).expect("the executor's error is the source");
    let gone = source
        .downcast_ref::<RunnerGone>()
        .expect("the source is the executor's own error, not a wrapper or a message");
    assert_eq!(gone.runner, "ci-7");
    // The refused move forwards the same source.
    let forwarded =
        std::error::Error::source(&refused).and_then(|s| s.downcast_ref::<RunnerGone>());
    assert_eq!(forwarded.map(|g| g.runner), Some("ci-7"));

    // The release's record keeps the report with the error, in memory; stored, the report
    // has only the message, and reads back equal.
    let built = refused.into_release();
    let unit = built
        .record()
        .steps()
        .last()
        .unwrap()
        .stage("unit")
        .unwrap();
    assert!(
        unit.error()
            .and_then(|e| e.downcast_ref::<RunnerGone>())
            .is_some()
    );
    let stored = serde_json::to_value(unit).unwrap();
    assert_eq!(stored["reason"], "executor error: runner `ci-7` is gone");
    assert!(stored.get("error").is_none(), "{stored}");
    let back: StageReport = serde_json::from_value(stored).unwrap();
    assert!(back.error().is_none());
    assert_eq!(&back, unit);
}

#[test]
fn a_stage_that_fails_without_an_executor_error_gives_the_move_no_source() {
    let clock = clock();
    let pipeline = deployment_testing_with(&clock, from_fn(|_| Ok(StageOutcome::failure("red"))));
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    let refused = block_on(built.test(&pipeline, &artifact)).unwrap_err();
    assert_eq!(stage_failure(refused.error()), (Step::Test, "unit", "red"));
    assert!(std::error::Error::source(refused.error()).is_none());
}
