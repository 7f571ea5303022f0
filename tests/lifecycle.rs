//! The release lifecycle through the public API: full delivery and deployment flows, the
//! artifact fixed at build, failing and panicking stages, approvals, gates, environment and
//! pipeline checks, pipeline definition errors, and stage outputs.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{
    AUTHOR, Recorder, START, artifact_for, block_on, built, clock, compile, delivery,
    delivery_pipeline, deployment, deployment_pipeline, ok, policy, revision, staged,
    standard_stages,
};
use tollgate::engine::{Engine, FailurePolicy};
use tollgate::executor::{ExecutorError, StageContext, StageStatus, from_fn};
use tollgate::gate;
use tollgate::graph::{StageId, Step};
use tollgate::prelude::*;
use tollgate::release::{MoveError, Person, StateName};
use tollgate::time::{Clock, ManualClock, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

/// Asks `rita` to approve `staged` and approves it; the happy path after a refusal.
fn approve_properly(
    staged: Release<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
) -> Release<Approved, Delivery> {
    let approval = pipeline
        .approve(&staged.approval_request(), "rita", "signed off")
        .expect("rita may approve");
    block_on(staged.approve(pipeline, approval)).expect("a proper approval moves the release")
}

/// Checks that a refused approval handed the release back Staged, unapproved, and that it
/// can still be approved properly.
fn still_staged_and_approvable(
    refused: MoveError<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
) {
    let release = refused.into_release();
    assert_eq!(release.state(), StateName::Staged);
    assert_eq!(release.record().state(), StateName::Staged);
    assert!(release.record().approval().is_none());
    let approved = approve_properly(release, pipeline);
    assert_eq!(approved.state(), StateName::Approved);
}

/// A gate that is open once `open` is set and says `closed` (closed or pending) until then.
fn switch_gate(name: &str, open: &Arc<AtomicBool>, closed: gate::Verdict) -> impl Gate + use<> {
    let open = Arc::clone(open);
    gate::from_fn(name, move |_| {
        if open.load(Ordering::SeqCst) {
            gate::Verdict::Open
        } else {
            closed.clone()
        }
    })
}

// ---- full flows ----

#[test]
fn delivery_flow_reaches_deployed_with_a_full_record() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, artifact) = staged(&pipeline, "shop-1.4.0", "4f2a9c1");
    assert_eq!(artifact, artifact_for("4f2a9c1"));

    clock.advance(HOUR);
    let request = staged.approval_request();
    assert_eq!(request.pipeline, "shop");
    assert_eq!(request.release, "shop-1.4.0");
    assert_eq!(request.revision, "4f2a9c1");
    assert_eq!(request.author, AUTHOR);
    assert_eq!(request.digest, artifact.digest);
    assert_eq!(request.environment, "production");
    let approval = pipeline
        .approve(&request, "rita", "checkout flow signed off")
        .unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();

    clock.advance(HOUR);
    let live = block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
    assert_eq!(live.artifact(), Some(&artifact));
    assert_eq!(live.deployed_at(), START.saturating_add(2 * HOUR));

    let record = live.record();
    assert_eq!(record.state(), StateName::Deployed);
    assert_eq!(record.created_at(), START);
    assert_eq!(record.deployed_at(), Some(START.saturating_add(2 * HOUR)));
    let steps: Vec<Step> = record.steps().iter().map(|s| s.step).collect();
    assert_eq!(steps, Step::ALL);
    for report in record.steps() {
        assert!(report.succeeded(), "{report:?}");
        assert!(
            report
                .stages
                .iter()
                .all(|s| s.status == StageStatus::Succeeded)
        );
    }
    let stages_of = |step: usize| -> Vec<&str> {
        record.steps()[step]
            .stages
            .iter()
            .map(|s| s.id.as_str())
            .collect()
    };
    assert_eq!(stages_of(0), ["compile"]);
    assert_eq!(stages_of(1), ["unit", "lint"]);
    assert_eq!(stages_of(2), ["staging", "acceptance"]);
    assert_eq!(stages_of(3), ["production"]);

    let approval = record
        .approval()
        .expect("a delivery release records its approval");
    assert_eq!(approval.approver, "rita");
    assert_eq!(approval.reason, "checkout flow signed off");
    assert_eq!(approval.digest, artifact.digest);
    assert_eq!(approval.environment, "production");
    assert_eq!(approval.issued_at, START.saturating_add(HOUR));
    assert_eq!(
        approval.expires_at,
        START.saturating_add(HOUR + ApprovalPolicy::DEFAULT_VALIDITY)
    );
    assert!(!approval.self_approved);
    assert!(record.gates().is_empty());
}

#[test]
fn deployment_flow_reaches_deployed_with_gate_records() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            gate::from_fn("smoke-tests", |_| Verdict::Open),
        )
        .gate(
            Move::Deploy,
            gate::from_fn("error-budget", |_| Verdict::Open),
        )
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "shop-1.4.0", "4f2a9c1");

    clock.advance(HOUR);
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    clock.advance(HOUR);
    let live = block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();

    assert_eq!(live.state(), StateName::Deployed);
    assert_eq!(live.deployed_at(), START.saturating_add(2 * HOUR));
    let record = live.record();
    assert!(
        record.approval().is_none(),
        "nobody approves in deployment mode"
    );
    let steps: Vec<Step> = record.steps().iter().map(|s| s.step).collect();
    assert_eq!(steps, Step::ALL);
    assert!(
        record
            .steps()
            .iter()
            .all(tollgate::engine::StepReport::succeeded)
    );
    let gates: Vec<(&str, Move, &Verdict, Timestamp)> = record
        .gates()
        .iter()
        .map(|g| (g.gate.as_str(), g.mv, &g.verdict, g.at))
        .collect();
    assert_eq!(
        gates,
        [
            (
                "smoke-tests",
                Move::Approve,
                &Verdict::Open,
                START.saturating_add(HOUR)
            ),
            (
                "error-budget",
                Move::Deploy,
                &Verdict::Open,
                START.saturating_add(2 * HOUR)
            ),
        ]
    );
}

// ---- the artifact is fixed at build ----

#[test]
fn a_different_artifact_is_refused_at_every_move_and_the_release_handed_back() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    let other = ArtifactRef::from_bytes("app", b"a rebuilt binary");

    let check = |error: &Error| {
        assert!(matches!(error, Error::ArtifactMismatch { .. }), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Artifact);
        let message = error.to_string();
        assert!(message.contains(&artifact.digest.to_string()), "{message}");
        assert!(message.contains(&other.digest.to_string()), "{message}");
    };

    let refused = block_on(built.test(&pipeline, &other)).unwrap_err();
    check(refused.error());
    let built = refused.into_release();
    assert_eq!(built.state(), StateName::Built);
    assert_eq!(
        built.record().steps().len(),
        1,
        "nothing ran for the refused move"
    );
    let tested = block_on(built.test(&pipeline, &artifact)).unwrap();

    let refused = block_on(tested.stage(&pipeline, &other)).unwrap_err();
    check(refused.error());
    let tested = refused.into_release();
    assert_eq!(tested.state(), StateName::Tested);
    let staged = block_on(tested.stage(&pipeline, &artifact)).unwrap();

    let approved = approve_properly(staged, &pipeline);
    let refused = block_on(approved.deploy(&pipeline, &other, pipeline.production())).unwrap_err();
    check(refused.error());
    let approved = refused.into_release();
    assert_eq!(approved.state(), StateName::Approved);
    let live = block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();
    assert_eq!(live.artifact().map(|a| &a.digest), Some(&artifact.digest));
    assert_eq!(live.record().steps().len(), 4);
}

#[test]
fn a_build_that_reports_no_artifact_fails_with_no_artifact() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(ok()))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let fresh = pipeline.start("r1", revision("aaa")).unwrap();
    let refused = block_on(fresh.build(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::NoArtifact { release } if release == "r1"),
        "{:?}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Artifact);
    let fresh = refused.into_release();
    assert_eq!(fresh.state(), StateName::Commit);
    assert!(fresh.artifact().is_none());
    assert_eq!(
        fresh.record().steps().len(),
        1,
        "the build attempt is recorded"
    );
}

#[test]
fn two_build_stages_with_different_artifacts_conflict() {
    let clock = clock();
    let reports = |name: &'static str| {
        from_fn(move |_| {
            Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes(name, name.as_bytes())))
        })
    };
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("server").run(reports("server")))
        .stage(Stage::build("client").run(reports("client")))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let refused = block_on(
        pipeline
            .start("r1", revision("aaa"))
            .unwrap()
            .build(&pipeline),
    )
    .unwrap_err();
    match refused.error() {
        Error::ConflictingArtifacts {
            first_stage,
            first,
            second_stage,
            second,
        } => {
            assert_eq!(first_stage, "server");
            assert_eq!(second_stage, "client");
            assert_eq!(first, &Digest::sha256(b"server"));
            assert_eq!(second, &Digest::sha256(b"client"));
        }
        other => panic!("expected ConflictingArtifacts, got {other:?}"),
    }
    let message = refused.to_string();
    assert!(
        message.contains("`server`") && message.contains("`client`"),
        "{message}"
    );
    assert_eq!(refused.into_release().state(), StateName::Commit);
}

#[test]
fn two_build_stages_with_the_same_artifact_agree() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::build("compile-again").run(compile()))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    assert_eq!(artifact, artifact_for("aaa"));
    assert_eq!(built.state(), StateName::Built);
}

// ---- failing stages ----

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
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").run(flaky))
        .stage(Stage::test("integration").after("unit").run(ok()))
        .stage(Stage::test("e2e").after("integration").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
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
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").run(from_fn(
            |_| -> Result<StageOutcome, ExecutorError> {
                panic!("index out of bounds in the test runner")
            },
        )))
        .stage(Stage::test("lint").after("compile").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
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
    assert_eq!(built.artifact(), Some(&artifact));
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
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(
            Stage::test("unit")
                .after("compile")
                .run(PanicsBeforeItsFuture),
        )
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
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
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(
            Stage::test("unit")
                .after("compile")
                .run(from_fn(|_| Err("runner unreachable".into()))),
        )
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    let refused = block_on(built.test(&pipeline, &artifact)).unwrap_err();
    let (step, stage, reason) = stage_failure(refused.error());
    assert_eq!((step, stage), (Step::Test, "unit"));
    assert!(reason.contains("executor error"), "{reason}");
    assert!(reason.contains("runner unreachable"), "{reason}");
    assert_eq!(refused.into_release().state(), StateName::Built);
}

// ---- approvals ----

fn assert_mismatch(error: &Error, expected_field: &str) {
    match error {
        Error::ApprovalMismatch { field, .. } => assert_eq!(*field, expected_field, "{error}"),
        other => panic!("expected ApprovalMismatch on {expected_field}, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
}

#[test]
fn an_approval_for_another_release_is_refused() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    // Same revision, so the same artifact: only the release differs.
    let (a, _) = staged(&pipeline, "r1", "aaa");
    let (b, _) = staged(&pipeline, "r2", "aaa");
    let for_a = pipeline
        .approve(&a.approval_request(), "rita", "r1 looks good")
        .unwrap();
    let refused = block_on(b.approve(&pipeline, for_a)).unwrap_err();
    assert_mismatch(refused.error(), "release");
    assert_eq!(
        refused.to_string(),
        "approval by `rita` is for release `r1`, not `r2`"
    );
    still_staged_and_approvable(refused, &pipeline);
}

#[test]
fn an_approval_for_another_artifact_is_refused() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    // Release `r1` was started twice, from two revisions: the approval for the first one's
    // artifact must not ship the second one's.
    let (first, first_artifact) = staged(&pipeline, "r1", "aaa");
    let (second, second_artifact) = staged(&pipeline, "r1", "bbb");
    assert_ne!(first_artifact.digest, second_artifact.digest);
    let for_first = pipeline
        .approve(&first.approval_request(), "rita", "aaa is fine")
        .unwrap();
    let refused = block_on(second.approve(&pipeline, for_first)).unwrap_err();
    assert_mismatch(refused.error(), "artifact");
    let message = refused.to_string();
    assert!(
        message.contains(&first_artifact.digest.to_string()),
        "{message}"
    );
    assert!(
        message.contains(&second_artifact.digest.to_string()),
        "{message}"
    );
    still_staged_and_approvable(refused, &pipeline);
}

#[test]
fn an_approval_from_another_pipeline_is_refused() {
    let clock = clock();
    let shop = delivery_pipeline(&clock);
    let blog = delivery("blog", &clock)
        .stages(standard_stages())
        .build()
        .unwrap();
    let (in_shop, _) = staged(&shop, "r1", "aaa");
    let (in_blog, _) = staged(&blog, "r1", "aaa");

    // Issued by the blog pipeline for the shop's release: refused when issued.
    let error = blog
        .approve(&in_shop.approval_request(), "rita", "wrong pipeline")
        .unwrap_err();
    assert_mismatch(&error, "pipeline");

    // Issued for the blog's release, used on the shop's release through the shop pipeline.
    let for_blog = blog
        .approve(&in_blog.approval_request(), "rita", "blog ok")
        .unwrap();
    let refused = block_on(in_shop.sign_off(&shop, for_blog)).unwrap_err();
    assert_mismatch(refused.error(), "pipeline");
    still_staged_and_approvable(refused, &shop);

    // Handing the blog's release to the shop pipeline is refused before the approval is read.
    let for_blog = blog
        .approve(&in_blog.approval_request(), "rita", "blog ok")
        .unwrap();
    let refused = block_on(in_blog.approve(&shop, for_blog)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::PipelineMismatch { expected, found, .. } if expected == "blog" && found == "shop"),
        "{:?}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Release);
    still_staged_and_approvable(refused, &blog);
}

#[test]
fn an_approval_for_another_environment_is_refused() {
    let clock = clock();
    let eu = delivery("shop", &clock)
        .stages(standard_stages())
        .production(Environment::new("prod-eu").unwrap())
        .build()
        .unwrap();
    let us = delivery("shop", &clock)
        .stages(standard_stages())
        .production(Environment::new("prod-us").unwrap())
        .build()
        .unwrap();
    let (in_eu, _) = staged(&eu, "r1", "aaa");
    let (in_us, _) = staged(&us, "r1", "aaa");
    assert_eq!(in_eu.approval_request().environment, "prod-eu");
    let for_eu = eu
        .approve(&in_eu.approval_request(), "rita", "eu only")
        .unwrap();
    let refused = block_on(in_us.approve(&us, for_eu)).unwrap_err();
    assert_mismatch(refused.error(), "environment");
    assert_eq!(
        refused.to_string(),
        "approval by `rita` is for environment `prod-eu`, not `prod-us`"
    );
    still_staged_and_approvable(refused, &us);
}

fn hour_long_delivery(clock: &ManualClock) -> Pipeline<Delivery> {
    delivery("shop", clock)
        .stages(standard_stages())
        .approvals(policy().valid_for(HOUR))
        .build()
        .unwrap()
}

#[test]
fn an_expired_approval_is_refused() {
    let clock = clock();
    let pipeline = hour_long_delivery(&clock);
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = pipeline
        .approve(&staged.approval_request(), "rita", "ok")
        .unwrap();
    clock.advance(HOUR + Duration::from_millis(1));
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    match refused.error() {
        Error::ApprovalExpired {
            approver,
            expired_at,
            now,
        } => {
            assert_eq!(approver, "rita");
            assert_eq!(*expired_at, START.saturating_add(HOUR));
            assert_eq!(*now, clock.now());
        }
        other => panic!("expected ApprovalExpired, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::Approval);
    still_staged_and_approvable(refused, &pipeline);
}

#[test]
fn an_approval_is_expired_at_its_expiry_instant_and_valid_just_before() {
    let clock = clock();
    let pipeline = hour_long_delivery(&clock);

    let (at_deadline, _) = staged(&pipeline, "r1", "aaa");
    let approval = pipeline
        .approve(&at_deadline.approval_request(), "rita", "ok")
        .unwrap();
    clock.advance(HOUR);
    let refused = block_on(at_deadline.approve(&pipeline, approval)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::ApprovalExpired { expired_at, now, .. } if expired_at == now),
        "{:?}",
        refused.error()
    );

    let (just_before, _) = staged(&pipeline, "r2", "aaa");
    let approval = pipeline
        .approve(&just_before.approval_request(), "rita", "ok")
        .unwrap();
    clock.advance(HOUR.saturating_sub(Duration::from_millis(1)));
    let approved = block_on(just_before.approve(&pipeline, approval)).unwrap();
    assert_eq!(approved.state(), StateName::Approved);
}

#[test]
fn an_author_may_not_approve_their_own_change() {
    let clock = clock();
    let pipeline = delivery("shop", &clock)
        .stages(standard_stages())
        .approvals(ApprovalPolicy::any_of(["rita", AUTHOR]).unwrap())
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let error = pipeline
        .approve(&staged.approval_request(), AUTHOR, "my own change")
        .unwrap_err();
    match &error {
        Error::SelfApproval { person, revision } => {
            assert_eq!(person, AUTHOR);
            assert_eq!(revision, "aaa");
        }
        other => panic!("expected SelfApproval, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
    assert_eq!(
        approve_properly(staged, &pipeline).state(),
        StateName::Approved
    );
}

#[test]
fn self_approval_allowed_by_the_policy_is_recorded_as_such() {
    let clock = clock();
    let pipeline = delivery("shop", &clock)
        .stages(standard_stages())
        .approvals(
            ApprovalPolicy::any_of([AUTHOR])
                .unwrap()
                .allow_self_approval(true),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = pipeline
        .approve(&staged.approval_request(), AUTHOR, "hotfix, on call alone")
        .unwrap();
    assert!(approval.record().self_approved);
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let record = approved.record().approval().unwrap();
    assert_eq!(record.approver, AUTHOR);
    assert!(record.self_approved);
}

#[test]
fn editing_the_request_author_does_not_bypass_the_self_approval_rule() {
    // `ApprovalRequest` is plain data with public fields, so a bot (or a person typing into
    // one) can hand `Pipeline::approve` a request whose author is someone else. The release
    // knows its real author; the author must still not be able to approve their change.
    let clock = clock();
    let pipeline = delivery("shop", &clock)
        .stages(standard_stages())
        .approvals(ApprovalPolicy::any_of(["rita", AUTHOR]).unwrap())
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let mut request = staged.approval_request();
    request.author = Person::new("someone-else").unwrap();
    let refusal = match pipeline.sign_off(&request, AUTHOR, "my own change") {
        Err(error) => error,
        Ok(approval) => match block_on(staged.approve(&pipeline, approval)) {
            Err(refused) => refused.into_parts().1,
            Ok(approved) => panic!(
                "the author approved their own change; recorded as {:?}",
                approved.record().approval()
            ),
        },
    };
    assert!(
        matches!(
            refusal,
            Error::SelfApproval { .. } | Error::ApprovalMismatch { .. }
        ),
        "{refusal:?}"
    );
}

#[test]
fn a_person_outside_the_policy_may_not_approve() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let error = pipeline
        .approve(&staged.approval_request(), "mallory", "trust me")
        .unwrap_err();
    match &error {
        Error::NotAnApprover { person, pipeline } => {
            assert_eq!(person, "mallory");
            assert_eq!(pipeline, "shop");
        }
        other => panic!("expected NotAnApprover, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
    assert_eq!(
        approve_properly(staged, &pipeline).state(),
        StateName::Approved
    );
}

// ---- gates ----

#[test]
fn a_closed_gate_stops_auto_approval_and_hands_the_release_back() {
    let clock = clock();
    let open = Arc::new(AtomicBool::new(false));
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            switch_gate(
                "error-budget",
                &open,
                Verdict::closed("error budget exhausted"),
            ),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");

    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    match refused.error() {
        Error::GateClosed { gate, reason } => {
            assert_eq!(gate, "error-budget");
            assert_eq!(reason, "error budget exhausted");
        }
        other => panic!("expected GateClosed, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);
    let verdicts = staged.record().gates();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].gate, "error-budget");
    assert_eq!(verdicts[0].mv, Move::Approve);
    assert_eq!(
        verdicts[0].verdict,
        Verdict::closed("error budget exhausted")
    );
    assert_eq!(verdicts[0].at, START);

    open.store(true, Ordering::SeqCst);
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let verdicts: Vec<&Verdict> = approved
        .record()
        .gates()
        .iter()
        .map(|g| &g.verdict)
        .collect();
    assert_eq!(
        verdicts,
        [&Verdict::closed("error budget exhausted"), &Verdict::Open]
    );
}

#[test]
fn a_pending_gate_parks_the_release() {
    let clock = clock();
    let open = Arc::new(AtomicBool::new(false));
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            switch_gate("canary", &open, Verdict::pending("a canary verdict")),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    match refused.error() {
        Error::GatePending {
            gate,
            waiting_for,
            until,
        } => {
            assert_eq!(gate, "canary");
            assert_eq!(waiting_for, "a canary verdict");
            assert_eq!(*until, None);
        }
        other => panic!("expected GatePending, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::GatePending);
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);
    assert_eq!(
        staged.record().gates()[0].verdict,
        Verdict::pending("a canary verdict")
    );

    open.store(true, Ordering::SeqCst);
    assert_eq!(
        block_on(staged.auto_approve(&pipeline)).unwrap().state(),
        StateName::Approved
    );
}

#[test]
fn a_closed_gate_outranks_a_pending_one_and_every_verdict_is_recorded() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            gate::from_fn("canary", |_| Verdict::pending("a canary verdict")),
        )
        .gate(Move::Approve, gate::from_fn("smoke", |_| Verdict::Open))
        .gate(
            Move::Approve,
            gate::from_fn("freeze", |_| Verdict::closed("release freeze")),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::GateClosed { gate, .. } if gate == "freeze"),
        "{:?}",
        refused.error()
    );
    let staged = refused.into_release();
    let recorded: Vec<(&str, Move, &Verdict)> = staged
        .record()
        .gates()
        .iter()
        .map(|g| (g.gate.as_str(), g.mv, &g.verdict))
        .collect();
    assert_eq!(
        recorded,
        [
            (
                "canary",
                Move::Approve,
                &Verdict::pending("a canary verdict")
            ),
            ("smoke", Move::Approve, &Verdict::Open),
            ("freeze", Move::Approve, &Verdict::closed("release freeze")),
        ]
    );
}

#[test]
fn a_change_window_gate_holds_deploy_until_the_clock_reaches_it() {
    let clock = clock();
    let window_opens = START.saturating_add(2 * HOUR);
    let change_window = gate::from_fn("change-window", move |ctx| {
        if ctx.move_() != Move::Deploy || ctx.environment().name() != "production" {
            Verdict::closed(format!(
                "asked about {} to {}",
                ctx.move_(),
                ctx.environment()
            ))
        } else if ctx.now() < window_opens {
            Verdict::Pending {
                waiting_for: "the change window".to_owned(),
                until: Some(window_opens),
            }
        } else {
            Verdict::Open
        }
    });
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(Move::Deploy, change_window)
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();

    clock.advance(HOUR);
    let refused =
        block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap_err();
    assert!(
        matches!(refused.error(), Error::GatePending { gate, until, .. } if gate == "change-window" && *until == Some(window_opens)),
        "{:?}",
        refused.error()
    );
    let approved = refused.into_release();
    assert_eq!(approved.state(), StateName::Approved);
    assert!(
        approved
            .record()
            .steps()
            .iter()
            .all(|s| s.step != Step::Deploy),
        "nothing was deployed while the gate held"
    );

    clock.set(window_opens);
    let live = block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();
    assert_eq!(live.deployed_at(), window_opens);
    let verdicts: Vec<&Verdict> = live.record().gates().iter().map(|g| &g.verdict).collect();
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts[1].is_open());
}

#[test]
fn a_closed_gate_on_approve_stops_a_delivery_approval_too() {
    let clock = clock();
    let pipeline = delivery("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            gate::from_fn("freeze", |_| Verdict::closed("release freeze")),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = pipeline
        .approve(&staged.approval_request(), "rita", "ok")
        .unwrap();
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);
    assert!(staged.record().approval().is_none());
    assert_eq!(staged.record().gates().len(), 1);
}

// ---- environment and pipeline checks ----

#[test]
fn deploying_to_another_environment_than_the_approved_one_is_refused() {
    let clock = clock();
    let pipeline = deployment_pipeline(&clock);
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let refused = block_on(approved.deploy(&pipeline, &artifact, pipeline.staging())).unwrap_err();
    match refused.error() {
        Error::EnvironmentMismatch {
            release,
            expected,
            found,
        } => {
            assert_eq!(release, "r1");
            assert_eq!(expected, "production");
            assert_eq!(found, "staging");
        }
        other => panic!("expected EnvironmentMismatch, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::Release);
    let approved = refused.into_release();
    assert_eq!(approved.state(), StateName::Approved);
    let live = block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
}

#[test]
fn a_release_driven_by_another_pipeline_is_refused_and_nothing_runs() {
    let clock = clock();
    let shop = deployment_pipeline(&clock);
    let recorder = Recorder::new();
    let other = deployment("other", &clock)
        .stage(Stage::build("compile").run(recorder.executor(0, |_| {
            Ok(StageOutcome::success().artifact(artifact_for("aaa")))
        })))
        .stage(Stage::test("unit").run(recorder.ok(0)))
        .stage(Stage::stage("staging").run(recorder.ok(0)))
        .stage(Stage::deploy("production").run(recorder.ok(0)))
        .build()
        .unwrap();
    let fresh = shop.start("r1", revision("aaa")).unwrap();
    let refused = block_on(fresh.build(&other)).unwrap_err();
    match refused.error() {
        Error::PipelineMismatch {
            release,
            expected,
            found,
        } => {
            assert_eq!(release, "r1");
            assert_eq!(expected, "shop");
            assert_eq!(found, "other");
        }
        other => panic!("expected PipelineMismatch, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::Release);
    assert!(recorder.events().is_empty(), "{:?}", recorder.events());
    let fresh = refused.into_release();
    assert_eq!(fresh.state(), StateName::Commit);
    assert!(fresh.record().steps().is_empty());
    assert_eq!(
        block_on(fresh.build(&shop)).unwrap().state(),
        StateName::Built
    );
}

// ---- pipeline definitions ----

#[test]
fn a_stage_without_an_executor_is_named() {
    let error = deployment("shop", &clock())
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit"))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingExecutor { stage } if stage == "unit"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
    assert!(error.to_string().contains("`unit`"), "{error}");
}

#[test]
fn the_default_executor_runs_stages_without_their_own() {
    let clock = clock();
    let recorder = Recorder::new();
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile"))
        .stage(Stage::stage("staging"))
        .stage(Stage::deploy("production"))
        .default_executor(recorder.ok(0))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let live = block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
    assert_eq!(recorder.started(), ["unit", "staging", "production"]);
}

#[test]
fn a_step_without_stages_is_refused() {
    let error = deployment("shop", &clock())
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::EmptyStep { step: Step::Deploy }),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

#[test]
fn a_delivery_pipeline_needs_an_approval_policy() {
    let error = Pipeline::<Delivery>::builder("shop")
        .clock(clock())
        .stages(standard_stages())
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingApprovalPolicy { pipeline } if pipeline == "shop"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

#[test]
fn a_dependency_cycle_is_refused() {
    let error = deployment("shop", &clock())
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").after("lint").run(ok()))
        .stage(Stage::test("lint").after("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap_err();
    match &error {
        Error::Cycle { stages } => {
            let mut names: Vec<&str> = stages.iter().map(StageId::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, ["lint", "unit"]);
        }
        other => panic!("expected Cycle, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

#[test]
fn invalid_names_are_refused_with_what_was_wrong() {
    let clock = clock();
    let error = deployment("", &clock)
        .stages(standard_stages())
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidName { what: "pipeline name", value, .. } if value.is_empty()),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);

    let error = Environment::new("prod\neu").unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidName {
                what: "environment name",
                ..
            }
        ),
        "{error:?}"
    );

    let pipeline = deployment_pipeline(&clock);
    let error = pipeline.start("  ", revision("aaa")).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidName {
                what: "release id",
                ..
            }
        ),
        "{error:?}"
    );
    let error = Revision::new("", AUTHOR).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidName {
                what: "revision id",
                ..
            }
        ),
        "{error:?}"
    );
    let error = Revision::new("aaa", "").unwrap_err();
    assert!(
        matches!(&error, Error::InvalidName { what: "person", .. }),
        "{error:?}"
    );

    let error = deployment("shop", &clock)
        .stage(Stage::build("has space").run(compile()))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidStageId { id, .. } if id == "has space"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

// ---- outputs ----

#[test]
fn outputs_reach_the_stages_that_depend_on_them_and_no_others() {
    let clock = clock();
    let seen: Arc<Mutex<BTreeMap<String, Option<String>>>> = Arc::default();
    let reader = || {
        let seen = Arc::clone(&seen);
        from_fn(move |ctx| {
            let digest = ctx.input("compile", "digest").map(str::to_owned);
            seen.lock().unwrap().insert(ctx.stage().to_string(), digest);
            Ok(StageOutcome::success())
        })
    };
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::build("package").after("compile").run(reader()))
        .stage(Stage::test("unit").after("compile").run(reader()))
        .stage(Stage::test("lint").run(reader()))
        .stage(Stage::test("fuzz").after("unit").run(reader()))
        .stage(Stage::stage("staging").run(reader()))
        .stage(Stage::deploy("production").after("compile").run(reader()))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    block_on(approved.deploy(&pipeline, &artifact, pipeline.production())).unwrap();

    let digest = Some(artifact.digest.to_string());
    let seen = seen.lock().unwrap().clone();
    let expected: BTreeMap<String, Option<String>> = [
        ("package", digest.clone()),
        ("unit", digest.clone()),
        ("lint", None),
        ("fuzz", None), // Only direct dependencies are visible.
        ("staging", None),
        ("production", digest),
    ]
    .into_iter()
    .map(|(stage, value)| (stage.to_owned(), value))
    .collect();
    assert_eq!(seen, expected);
}
