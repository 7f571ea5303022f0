//! Stages that fail, panic (inside their future or before it exists) or return an executor
//! error, and moves cancelled through their release's handle: the move fails naming the stage
//! (or the cancelled step), its dependents are skipped, and the release comes back unmoved,
//! ready to retry.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join;

use crate::HOUR;
use crate::support::{
    START, block_on, built, clock, deployment, deployment_testing_with, ok, stages_testing_with,
};
use tollgate::engine::{CancelHandle, Engine, FailurePolicy};
use tollgate::executor::{ExecutorError, StageContext, StageStatus, from_async_fn, from_fn};
use tollgate::graph::Step;
use tollgate::prelude::*;
use tollgate::release::StateName;
use tollgate::time::run_virtual;

const MINUTE: Duration = Duration::from_secs(60);

/// The step, stage and reason of a `StageFailed` error; any other error fails the test.
fn stage_failure(error: &Error) -> (Step, &str, &str) {
    match error {
        Error::StageFailed {
            step,
            stage,
            reason,
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
        .engine(Engine::new().failure_policy(FailurePolicy::ContinueIndependent))
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

#[test]
fn cancelling_a_release_stops_its_running_move_and_no_other_release() {
    // `r1`'s unit stage cancels `r1`'s move a minute in, while `r2` of the same pipeline is
    // running too; each unit stage would otherwise take an hour.
    let clock = clock();
    let trap: Arc<Mutex<Option<CancelHandle>>> = Arc::default();
    let unit = {
        let trap = Arc::clone(&trap);
        from_async_fn(move |ctx| {
            let trap = if ctx.release() == "r1" {
                trap.lock().unwrap().take()
            } else {
                None
            };
            Box::pin(async move {
                let start = ctx.clock().now();
                if let Some(handle) = trap {
                    ctx.clock().sleep_until(start.saturating_add(MINUTE)).await;
                    handle.cancel();
                }
                ctx.clock().sleep_until(start.saturating_add(HOUR)).await;
                Ok(StageOutcome::success())
            })
        })
    };
    let pipeline = deployment_testing_with(&clock, unit);
    let (first, artifact) = built(&pipeline, "r1", "aaa");
    let (second, _) = built(&pipeline, "r2", "aaa");
    *trap.lock().unwrap() = Some(first.cancel_handle());

    let (first, second) = run_virtual(
        &clock,
        join(
            first.test(&pipeline, &artifact),
            second.test(&pipeline, &artifact),
        ),
    );
    let refused = first.unwrap_err();
    assert!(
        matches!(refused.error(), Error::StepCancelled { step: Step::Test }),
        "{:?}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Cancelled);
    let tested = second.expect("the other release runs on");
    assert_eq!(tested.record().entered_at(), START.saturating_add(HOUR));

    // The release comes back Built, with a fresh handle: the next try runs to the end.
    let first = refused.into_release();
    assert_eq!(first.state(), StateName::Built);
    let tested = run_virtual(&clock, first.test(&pipeline, &artifact)).unwrap();
    assert_eq!(tested.state(), StateName::Tested);
}
