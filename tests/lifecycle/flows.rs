//! Full delivery and deployment flows, where a release goes (to the target it was approved
//! for, driven by the pipeline that started it and no other), and how a release and a refused
//! move show in a log.

use std::sync::{Arc, Mutex};

use crate::support::{
    AUTHOR, Recorder, START, artifact_for, block_on, clock, compile, delivery, delivery_pipeline,
    deployment, deployment_pipeline, ok, revision, staged, standard_deployment,
};
use crate::{HOUR, approve_properly};
use tollgate::executor::{StageStatus, from_fn};
use tollgate::gate;
use tollgate::graph::Step;
use tollgate::prelude::*;
use tollgate::release::StateName;
use tollgate::time::Timestamp;

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
    let approval =
        block_on(pipeline.sign_off(staged.id().as_str(), "rita", "checkout flow signed off"))
            .unwrap();
    assert_eq!(approval.request(), &request);
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();

    clock.advance(HOUR);
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
    assert_eq!(live.artifact(), &artifact);
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
    let pipeline = standard_deployment(&clock)
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
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();

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

// ---- the target environment and the pipeline ----

#[test]
fn a_release_deploys_to_the_environment_it_was_approved_for() {
    // Deploying elsewhere than the approved environment no longer compiles (`deploy` takes no
    // environment); what is left to check at run time is where the deploy step runs.
    let clock = clock();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let deploy = {
        let seen = Arc::clone(&seen);
        from_fn(move |ctx| {
            let environment = ctx.environment().map(|e| e.name().to_string());
            seen.lock().unwrap().push(environment.unwrap_or_default());
            Ok(StageOutcome::success())
        })
    };
    let pipeline = delivery("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(deploy))
        .production(Environment::new("prod-eu").unwrap())
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = approve_properly(staged, &pipeline);
    assert_eq!(approved.record().approval().unwrap().environment, "prod-eu");
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
    assert_eq!(live.record().target().name(), "prod-eu");
    assert_eq!(*seen.lock().unwrap(), ["prod-eu"]);
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

#[test]
fn a_release_and_a_refused_move_say_what_they_are_when_logged() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let shown = format!("{staged:?}");
    for part in ["r1", "Staged", "Delivery", &artifact.digest.to_string()] {
        assert!(shown.contains(part), "{shown} should show {part}");
    }
    let approval = block_on(pipeline.sign_off("r1", "rita", "ok")).unwrap();
    clock.advance(25 * HOUR);
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    assert_eq!(refused.to_string(), refused.error().to_string());
    let shown = format!("{refused:?}");
    for part in ["MoveError", "r1", "Staged", "Expired", "rita"] {
        assert!(shown.contains(part), "{shown} should show {part}");
    }
}
