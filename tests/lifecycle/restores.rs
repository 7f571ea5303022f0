//! The journal is the release's source of truth: a release dropped after any move (a bot that
//! stops) and restored with `Pipeline::restore` is the release the moves produced, record for
//! record, and goes on from there to Deployed, also through a pipeline built anew on the same
//! journal; a release that took no move yet is not in the journal; and two copies of one
//! release (two restores, two bots) cannot both take a move.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::{
    Recorder, START, block_on, clock, compile, delivery_pipeline, deployment, ok, revision,
    standard_delivery,
};
use crate::{HOUR, SharedJournal};
use tollgate::approval::Decision;
use tollgate::executor::from_fn;
use tollgate::fact::FactError;
use tollgate::gate;
use tollgate::graph::Step;
use tollgate::journal::JournalError;
use tollgate::prelude::*;
use tollgate::release::{Mode, State, StateName};
use tollgate::time::ManualClock;

/// Drops `release` (the bot stops) and restores it from `pipeline`'s journal, checking that
/// the restored release is in the same state with the same record as the one dropped.
fn restart<S: State, M: Mode>(release: Release<S, M>, pipeline: &Pipeline<M>) -> Release<S, M> {
    let id = release.id().to_string();
    let record = release.into_any();
    let restored = block_on(pipeline.restore(&id))
        .unwrap_or_else(|e| panic!("`{id}` restores in {}: {e}", S::NAME));
    assert_eq!(restored.state(), S::NAME);
    assert_eq!(
        restored.record(),
        &record,
        "the restored record is the one the moves produced"
    );
    Release::try_from(restored).expect("the restored release is in the state it reached")
}

/// [`restart`]s `release` when `restarts` is set; hands it back as it is otherwise.
fn maybe_restart<S: State, M: Mode>(
    release: Release<S, M>,
    pipeline: &Pipeline<M>,
    restarts: bool,
) -> Release<S, M> {
    if restarts {
        restart(release, pipeline)
    } else {
        release
    }
}

/// Whether `error` is a journal conflict: another copy of the release moved first.
fn is_conflict(error: &Error) -> bool {
    matches!(error, Error::Journal(JournalError::Conflict { .. }))
        && error.kind() == ErrorKind::Conflict
}

// ---- a release restored after every move ----

/// Delivers release `r1` of revision `aaa` on `pipeline` from start to Deployed, an hour
/// between moves, rita approving; with `restarts`, the release is dropped and restored after
/// every move. Returns the deployed release's record.
fn deliver(pipeline: &Pipeline<Delivery>, clock: &ManualClock, restarts: bool) -> AnyRelease {
    let fresh = pipeline.start("r1", revision("aaa")).unwrap();
    let built = maybe_restart(block_on(fresh.build(pipeline)).unwrap(), pipeline, restarts);
    let artifact = built.artifact().clone();
    clock.advance(HOUR);
    let tested = maybe_restart(
        block_on(built.test(pipeline, &artifact)).unwrap(),
        pipeline,
        restarts,
    );
    clock.advance(HOUR);
    let staged = maybe_restart(
        block_on(tested.stage(pipeline, &artifact)).unwrap(),
        pipeline,
        restarts,
    );
    clock.advance(HOUR);
    let approval = block_on(pipeline.sign_off("r1", "rita", "signed off")).unwrap();
    let approved = maybe_restart(
        block_on(staged.approve(pipeline, approval)).unwrap(),
        pipeline,
        restarts,
    );
    clock.advance(HOUR);
    let live = maybe_restart(
        block_on(approved.deploy(pipeline, &artifact)).unwrap(),
        pipeline,
        restarts,
    );
    assert_eq!(live.deployed_at(), START.saturating_add(4 * HOUR));
    live.into_any()
}

#[test]
fn a_delivery_release_restored_after_every_move_goes_on_to_deployed() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);

    // Before its first move, the journal does not know the release: its start is written
    // with that move.
    let fresh = pipeline.start("r0", revision("aaa")).unwrap();
    let error = block_on(pipeline.restore("r0")).unwrap_err();
    assert!(
        matches!(&error, Error::Fact(FactError::UnknownRelease { release }) if release == "r0"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Release);
    drop(fresh);

    let record = deliver(&pipeline, &clock, true);
    assert_eq!(record.state(), StateName::Deployed);
    let steps: Vec<Step> = record.steps().iter().map(|s| s.step).collect();
    assert_eq!(steps, Step::ALL);
    let approval = record.approval().expect("the approval is restored with it");
    assert_eq!(approval.approver, "rita");
    assert_eq!(approval.issued_at, START.saturating_add(3 * HOUR));

    // The same moves without a single restart give the same release.
    let uninterrupted_clock = crate::support::clock();
    let uninterrupted = delivery_pipeline(&uninterrupted_clock);
    assert_eq!(deliver(&uninterrupted, &uninterrupted_clock, false), record);
}

/// A deployment pipeline `shop` on `clock` that refuses each move once before it goes: its
/// `unit` test stage fails its first run, the `smoke` gate on Approve is closed for the first
/// five hours, and the `change-window` gate on Deploy is pending until the seventh.
fn stubborn_deployment(clock: &ManualClock) -> Pipeline<Deployment> {
    let failed_once = Arc::new(AtomicBool::new(false));
    let smoke_opens = START.saturating_add(5 * HOUR);
    let window_opens = START.saturating_add(7 * HOUR);
    deployment("shop", clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").run(from_fn(move |_| {
            Ok(if failed_once.swap(true, Ordering::SeqCst) {
                StageOutcome::success()
            } else {
                StageOutcome::failure("a flaky test")
            })
        })))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .gate(
            Move::Approve,
            gate::from_fn("smoke", move |ctx| {
                if ctx.now() < smoke_opens {
                    Verdict::closed("smoke tests failing")
                } else {
                    Verdict::Open
                }
            }),
        )
        .gate(
            Move::Deploy,
            gate::from_fn("change-window", move |ctx| {
                if ctx.now() < window_opens {
                    Verdict::Pending {
                        waiting_for: "the change window".to_owned(),
                        until: Some(window_opens),
                    }
                } else {
                    Verdict::Open
                }
            }),
        )
        .build()
        .unwrap()
}

/// Drives release `r1` on a [`stubborn_deployment`] to Deployed, an hour between tries, each
/// move refused once first; with `restarts`, the release is dropped and restored after every
/// move and every refusal. Returns the deployed release's record.
fn deploy_stubbornly(
    pipeline: &Pipeline<Deployment>,
    clock: &ManualClock,
    restarts: bool,
) -> AnyRelease {
    let fresh = pipeline.start("r1", revision("aaa")).unwrap();
    let built = maybe_restart(block_on(fresh.build(pipeline)).unwrap(), pipeline, restarts);
    let artifact = built.artifact().clone();

    clock.advance(HOUR);
    let refused = block_on(built.test(pipeline, &artifact)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::StageFailed);
    let built = maybe_restart(refused.into_release(), pipeline, restarts);
    // A wrong artifact is refused before anything runs, and that is recorded too.
    let wrong = ArtifactRef::from_bytes("app", b"something else");
    let refused = block_on(built.test(pipeline, &wrong)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Artifact);
    let built = maybe_restart(refused.into_release(), pipeline, restarts);
    clock.advance(HOUR);
    let tested = maybe_restart(
        block_on(built.test(pipeline, &artifact)).unwrap(),
        pipeline,
        restarts,
    );

    clock.advance(HOUR);
    let staged = maybe_restart(
        block_on(tested.stage(pipeline, &artifact)).unwrap(),
        pipeline,
        restarts,
    );
    clock.advance(HOUR);
    let refused = block_on(staged.auto_approve(pipeline)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
    let staged = maybe_restart(refused.into_release(), pipeline, restarts);
    clock.advance(HOUR);
    let approved = maybe_restart(
        block_on(staged.auto_approve(pipeline)).unwrap(),
        pipeline,
        restarts,
    );

    clock.advance(HOUR);
    let refused = block_on(approved.deploy(pipeline, &artifact)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::GatePending);
    let approved = maybe_restart(refused.into_release(), pipeline, restarts);
    clock.advance(HOUR);
    let live = maybe_restart(
        block_on(approved.deploy(pipeline, &artifact)).unwrap(),
        pipeline,
        restarts,
    );
    assert_eq!(live.deployed_at(), START.saturating_add(7 * HOUR));
    live.into_any()
}

#[test]
fn a_deployment_release_restored_after_every_move_and_refusal_goes_on_to_deployed() {
    let clock = clock();
    let pipeline = stubborn_deployment(&clock);
    let record = deploy_stubbornly(&pipeline, &clock, true);
    assert_eq!(record.state(), StateName::Deployed);
    assert!(record.approval().is_none());
    let steps: Vec<(Step, bool)> = record
        .steps()
        .iter()
        .map(|s| (s.step, s.succeeded()))
        .collect();
    assert_eq!(
        steps,
        [
            (Step::Build, true),
            (Step::Test, false),
            (Step::Test, true),
            (Step::Stage, true),
            (Step::Deploy, true),
        ],
        "the failed test run is restored with the release"
    );
    let gates: Vec<(&str, bool)> = record
        .gates()
        .iter()
        .map(|g| (g.gate.as_str(), g.verdict.is_open()))
        .collect();
    assert_eq!(
        gates,
        [
            ("smoke", false),
            ("smoke", true),
            ("change-window", false),
            ("change-window", true),
        ],
        "every verdict is restored, the refusing ones too"
    );

    let uninterrupted_clock = crate::support::clock();
    let uninterrupted = stubborn_deployment(&uninterrupted_clock);
    assert_eq!(
        deploy_stubbornly(&uninterrupted, &uninterrupted_clock, false),
        record
    );
}

#[test]
fn a_pipeline_built_anew_on_the_same_journal_restores_the_release_and_goes_on() {
    // Each step below is a new process of the bot: a new pipeline value with the same
    // definition, on the same store.
    let clock = clock();
    let journal = SharedJournal::new();
    let bot = || {
        standard_delivery(&clock)
            .journal(journal.clone())
            .build()
            .unwrap()
    };
    let restore = |pipeline: &Pipeline<Delivery>| block_on(pipeline.restore("r1")).unwrap();

    let first = bot();
    let built = block_on(first.start("r1", revision("aaa")).unwrap().build(&first)).unwrap();
    let artifact = built.artifact().clone();
    drop((built, first));

    let second = bot();
    let built = Release::<Built, Delivery>::try_from(restore(&second)).unwrap();
    let tested = block_on(built.test(&second, &artifact)).unwrap();
    let staged = block_on(tested.stage(&second, &artifact)).unwrap();
    let staged_record = staged.record().clone();
    drop((staged, second));

    // A third process restores the staged release and takes the vote; a fourth, which never
    // saw the release, issues the approval from the journal's votes; the third uses it.
    let third = bot();
    let restored = restore(&third);
    assert_eq!(restored.record(), &staged_record);
    let staged = Release::<Staged, Delivery>::try_from(restored).unwrap();
    block_on(third.vote("r1", "rita", Decision::Approve, "signed off")).unwrap();
    let approval = block_on(bot().issue("r1")).unwrap();
    let approved = block_on(staged.approve(&third, approval)).unwrap();
    let approved_record = approved.record().clone();
    drop((approved, third));

    let fifth = bot();
    let restored = restore(&fifth);
    assert_eq!(restored.record(), &approved_record);
    let approved = Release::<Approved, Delivery>::try_from(restored).unwrap();
    let live = block_on(approved.deploy(&fifth, &artifact)).unwrap();
    let live_record = live.into_any();
    assert_eq!(restore(&bot()).record(), &live_record);
    assert_eq!(live_record.state(), StateName::Deployed);
    assert_eq!(live_record.approval().unwrap().approver, "rita");
}

// ---- one release, one history ----

#[test]
fn two_copies_of_a_release_cannot_both_take_a_move() {
    let clock = clock();
    let recorder = Recorder::new();
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").run(recorder.ok(0)))
        .stage(Stage::stage("staging").run(recorder.ok(0)))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let (built, artifact) = crate::support::built(&pipeline, "r1", "aaa");
    drop(built);
    // Two bots restore the same release.
    let restore = || {
        Release::<Built, Deployment>::try_from(block_on(pipeline.restore("r1")).unwrap()).unwrap()
    };
    let (mine, theirs) = (restore(), restore());

    let tested = block_on(mine.test(&pipeline, &artifact)).unwrap();
    let refused = block_on(theirs.test(&pipeline, &artifact)).unwrap_err();
    assert!(is_conflict(refused.error()), "{:?}", refused.error());
    assert_eq!(recorder.started(), ["unit"], "the second copy ran nothing");
    let theirs = refused.into_release();
    assert_eq!(theirs.state(), StateName::Built);
    // Retrying does not help the stale copy, however far the other one has gone.
    let staged = block_on(tested.stage(&pipeline, &artifact)).unwrap();
    let refused = block_on(theirs.test(&pipeline, &artifact)).unwrap_err();
    assert!(is_conflict(refused.error()), "{:?}", refused.error());
    assert_eq!(recorder.started(), ["unit", "staging"]);

    // The journal holds one history: the first copy's.
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.state(), StateName::Staged);
    assert_eq!(restored.record(), staged.record());
}

#[test]
fn two_copies_of_a_staged_release_cannot_both_be_approved() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, artifact) = crate::support::staged(&pipeline, "r1", "aaa");
    drop(staged);
    let restore = || {
        Release::<Staged, Delivery>::try_from(block_on(pipeline.restore("r1")).unwrap()).unwrap()
    };
    let (mine, theirs) = (restore(), restore());
    block_on(pipeline.vote("r1", "rita", Decision::Approve, "signed off")).unwrap();
    let (one, other) = (
        block_on(pipeline.issue("r1")).unwrap(),
        block_on(pipeline.issue("r1")).unwrap(),
    );

    let approved = block_on(mine.approve(&pipeline, one)).unwrap();
    let refused = block_on(theirs.approve(&pipeline, other)).unwrap_err();
    assert!(is_conflict(refused.error()), "{:?}", refused.error());
    assert!(refused.release().record().approval().is_none());

    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.record(), live.record());
}
