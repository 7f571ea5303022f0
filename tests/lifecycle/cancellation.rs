//! Cancelling moves: a release's own handle stops its move and no other, the pipeline's handle
//! stops every move, and a release handed back by a cancelled move has a fresh handle.
//!
//! Two releases of one pipeline run their test step at once, in virtual time: each `unit`
//! stage waits a minute on the pipeline's clock, and a third future cancels at ten seconds.

use std::time::Duration;

use futures::future::{join, join3};

use crate::support::{built, clock, deployment_testing_with};
use tollgate::engine::{CancelHandle, StepOutcome};
use tollgate::executor::{StageStatus, from_async_fn};
use tollgate::graph::Step;
use tollgate::prelude::*;
use tollgate::release::{Mode, State, StateName};
use tollgate::time::{Clock, ManualClock, run_virtual};

const UNIT_TAKES: Duration = Duration::from_secs(60);
const CANCEL_AFTER: Duration = Duration::from_secs(10);

/// A deployment pipeline whose `unit` test stage takes [`UNIT_TAKES`] on the clock.
fn slow_unit_pipeline(clock: &ManualClock) -> Pipeline<Deployment> {
    deployment_testing_with(
        clock,
        from_async_fn(|ctx| {
            Box::pin(async move {
                ctx.clock().sleep(UNIT_TAKES).await;
                Ok(StageOutcome::success())
            })
        }),
    )
}

/// Waits [`CANCEL_AFTER`] on `clock`, then cancels with `handle`.
async fn cancel_later(clock: &ManualClock, handle: CancelHandle) {
    clock.sleep(CANCEL_AFTER).await;
    handle.cancel();
}

/// How the latest step of `release` (a test step) ended, and how long it ran.
fn last_test_step<S: State, M: Mode>(release: &Release<S, M>) -> (StepOutcome, Duration) {
    let report = release.record().steps().last().expect("a step ran");
    assert_eq!(report.step, Step::Test);
    (
        report.outcome,
        report.finished_at.saturating_since(report.started_at),
    )
}

#[test]
fn cancelling_one_release_s_handle_stops_its_move_and_the_other_release_moves_on() {
    let clock = clock();
    let pipeline = slow_unit_pipeline(&clock);
    let (first, first_artifact) = built(&pipeline, "r1", "aaa");
    let (second, second_artifact) = built(&pipeline, "r2", "bbb");
    let handle = first.cancel_handle();

    let (first, second, ()) = run_virtual(
        &clock,
        join3(
            first.test(&pipeline, &first_artifact),
            second.test(&pipeline, &second_artifact),
            cancel_later(&clock, handle),
        ),
    );

    let refused = first.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Cancelled);
    assert_eq!(refused.to_string(), "the test step was cancelled");
    let first = refused.into_release();
    assert_eq!(first.state(), StateName::Built);
    assert_eq!(
        last_test_step(&first),
        (StepOutcome::Cancelled, CANCEL_AFTER)
    );
    let unit = first
        .record()
        .steps()
        .last()
        .unwrap()
        .stage("unit")
        .unwrap();
    assert_eq!(unit.status, StageStatus::Cancelled);

    let second = second.expect("the other release's move is not cancelled");
    assert_eq!(second.state(), StateName::Tested);
    assert_eq!(
        last_test_step(&second),
        (StepOutcome::Succeeded, UNIT_TAKES)
    );
}

#[test]
fn the_pipeline_s_handle_still_cancels_every_move() {
    let clock = clock();
    let pipeline = slow_unit_pipeline(&clock);
    let (first, first_artifact) = built(&pipeline, "r1", "aaa");
    let (second, second_artifact) = built(&pipeline, "r2", "bbb");

    let (first, second, ()) = run_virtual(
        &clock,
        join3(
            first.test(&pipeline, &first_artifact),
            second.test(&pipeline, &second_artifact),
            cancel_later(&clock, pipeline.cancel_handle()),
        ),
    );

    for refused in [first.unwrap_err(), second.unwrap_err()] {
        assert_eq!(
            refused.kind(),
            ErrorKind::Cancelled,
            "{}",
            refused.release().id()
        );
        let release = refused.into_release();
        assert_eq!(release.state(), StateName::Built);
        assert_eq!(
            last_test_step(&release),
            (StepOutcome::Cancelled, CANCEL_AFTER)
        );
    }
}

#[test]
fn a_release_handed_back_by_a_cancelled_move_has_a_fresh_handle_for_its_retry() {
    let clock = clock();
    let pipeline = slow_unit_pipeline(&clock);
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    let first_handle = built.cancel_handle();
    let (refused, ()) = run_virtual(
        &clock,
        join(
            built.test(&pipeline, &artifact),
            cancel_later(&clock, first_handle.clone()),
        ),
    );
    let built = refused.unwrap_err().into_release();

    // The handed-back release's own handle cancels its next move, which ran until then: the
    // retry was not cancelled at once.
    let second_handle = built.cancel_handle();
    let (refused, ()) = run_virtual(
        &clock,
        join(
            built.test(&pipeline, &artifact),
            cancel_later(&clock, second_handle.clone()),
        ),
    );
    let refused = refused.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Cancelled);
    let built = refused.into_release();
    assert_eq!(
        last_test_step(&built),
        (StepOutcome::Cancelled, CANCEL_AFTER)
    );

    // The handles of the cancelled moves, used again, no longer reach the release: the next
    // retry runs to the end.
    let (tested, ((), ())) = run_virtual(
        &clock,
        join(
            built.test(&pipeline, &artifact),
            join(
                cancel_later(&clock, first_handle),
                cancel_later(&clock, second_handle),
            ),
        ),
    );
    let tested = tested.expect("the handles of earlier moves do not cancel the retry");
    assert_eq!(tested.state(), StateName::Tested);
    assert_eq!(
        last_test_step(&tested),
        (StepOutcome::Succeeded, UNIT_TAKES)
    );
    assert_eq!(
        tested.record().steps().len(),
        4,
        "build, two cancelled tests, the retry that passed"
    );
}
