//! Stored releases: `AnyRelease` survives a serde round trip in every state and mode, converts
//! back only into its own typed state, and a tampered or malformed record is refused with a
//! typed error instead of being trusted.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use support::{APPROVERS, artifact_for, block_on, clock, delivery, deployment, ok};
use tollgate::error::{Error, ErrorKind};
use tollgate::executor::from_fn;
use tollgate::lifecycle::{
    Approved, Built, Commit, Deployed, Mode, ModeKind, Staged, StateName, Tested,
};
use tollgate::prelude::*;
use tollgate::record::RecordError;
use tollgate::time::ManualClock;

/// What a generated release is made of: where it stops, and the data its stages report.
#[derive(Debug, Clone)]
struct Story {
    delivery: bool,
    /// How many moves to make, 0 (Commit) to 5 (Deployed).
    moves: usize,
    release: String,
    revision: String,
    author: String,
    message: Option<String>,
    logs: Vec<String>,
    outputs: Vec<(String, String)>,
    /// Minutes the clock moves between moves.
    pause: u64,
}

fn story() -> impl Strategy<Value = Story> {
    (
        any::<bool>(),
        0usize..=5,
        "[a-z][a-z0-9.-]{0,12}",
        "[0-9a-f]{7,40}",
        "[a-z]{2,10}",
        proptest::option::of("\\PC{0,40}"),
        proptest::collection::vec("\\PC{0,30}", 0..4),
        proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,20}"), 0..4),
        0u64..10_000,
    )
        .prop_map(
            |(delivery, moves, release, revision, author, message, logs, outputs, pause)| Story {
                delivery,
                moves,
                release,
                revision,
                // Keep the author out of the approvers so that approvals are never self-approvals.
                author: format!("dev-{author}"),
                message,
                logs,
                outputs,
                pause,
            },
        )
}

/// The stages every generated release runs: a build that logs and outputs the story's data.
fn stages(story: &Story) -> Vec<Stage> {
    let logs = story.logs.clone();
    let outputs = story.outputs.clone();
    let compile = from_fn(move |ctx| {
        let mut outcome = StageOutcome::success().artifact(artifact_for(ctx.revision()));
        for line in &logs {
            outcome = outcome.log(line.clone());
        }
        for (key, value) in &outputs {
            outcome = outcome.output(key.clone(), value.clone());
        }
        Ok(outcome)
    });
    vec![
        Stage::build("compile").run(compile),
        Stage::test("unit").after("compile").run(ok()),
        Stage::test("lint").after("compile").run(ok()),
        Stage::stage("staging").run(ok()),
        Stage::deploy("production").run(ok()),
    ]
}

/// Drives a release through `story.moves` moves and returns its stored form.
fn live(story: &Story, clock: &ManualClock) -> AnyRelease {
    let mut revision = Revision::new(&story.revision, &story.author).expect("valid revision");
    if let Some(message) = &story.message {
        revision = revision.message(message.clone());
    }
    let pause = Duration::from_secs(story.pause * 60);
    if story.delivery {
        let pipeline = delivery("shop", clock)
            .stages(stages(story))
            .build()
            .expect("valid pipeline");
        let approve = |staged: Release<Staged, Delivery>| async {
            let approval = pipeline
                .sign_off(&staged.approval_request(), APPROVERS[0], "looks good")
                .expect("an approver approves");
            staged.approve(&pipeline, approval).await.expect("approve")
        };
        block_on(drive(&pipeline, revision, story, clock, pause, approve))
    } else {
        let pipeline = deployment("shop", clock)
            .stages(stages(story))
            .build()
            .expect("valid pipeline");
        let approve = |staged: Release<Staged, Deployment>| async {
            staged.auto_approve(&pipeline).await.expect("auto-approve")
        };
        block_on(drive(&pipeline, revision, story, clock, pause, approve))
    }
}

/// Makes `story.moves` moves in either mode, `approve` being the mode's own approval move,
/// with `pause` between moves.
async fn drive<M, F, Fut>(
    pipeline: &Pipeline<M>,
    revision: Revision,
    story: &Story,
    clock: &ManualClock,
    pause: Duration,
    approve: F,
) -> AnyRelease
where
    M: Mode,
    F: FnOnce(Release<Staged, M>) -> Fut,
    Fut: std::future::Future<Output = Release<Approved, M>>,
{
    let release = pipeline
        .start(story.release.as_str(), revision)
        .expect("valid id");
    if story.moves == 0 {
        return release.into_any();
    }
    let built = release.build(pipeline).await.expect("build");
    let artifact = built.artifact().clone();
    clock.advance(pause);
    if story.moves == 1 {
        return built.into_any();
    }
    let tested = built.test(pipeline, &artifact).await.expect("test");
    clock.advance(pause);
    if story.moves == 2 {
        return tested.into_any();
    }
    let staged = tested.stage(pipeline, &artifact).await.expect("stage");
    clock.advance(pause);
    if story.moves == 3 {
        return staged.into_any();
    }
    let approved = approve(staged).await;
    clock.advance(pause);
    if story.moves == 4 {
        return approved.into_any();
    }
    approved
        .deploy(pipeline, &artifact)
        .await
        .expect("deploy")
        .into_any()
}

/// Which typed conversions accept `any`: exactly one, its own state and mode.
fn accepted_conversions(any: &AnyRelease) -> Vec<(StateName, ModeKind)> {
    let mut accepted = Vec::new();
    macro_rules! probe {
        ($($state:ident),*) => {$(
            if Release::<$state, Delivery>::try_from(any.clone()).is_ok() {
                accepted.push((StateName::$state, ModeKind::Delivery));
            }
            if Release::<$state, Deployment>::try_from(any.clone()).is_ok() {
                accepted.push((StateName::$state, ModeKind::Deployment));
            }
        )*};
    }
    probe!(Commit, Built, Tested, Staged, Approved, Deployed);
    accepted
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_release_survives_a_serde_round_trip(story in story()) {
        let clock = clock();
        let stored = live(&story, &clock);
        let json = serde_json::to_string(&stored).unwrap();
        let back: AnyRelease = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &stored);
        // A second trip is byte-identical: nothing is lost or reordered on the way.
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);

        let mode = if story.delivery { ModeKind::Delivery } else { ModeKind::Deployment };
        prop_assert_eq!(back.mode(), mode);
        prop_assert_eq!(back.steps().len(), story.moves.min(3) + usize::from(story.moves == 5));
        prop_assert_eq!(accepted_conversions(&back), vec![(back.state(), mode)]);
    }
}

// ---- conversions ----

#[test]
fn converting_to_the_wrong_state_or_mode_names_both() {
    let clock = clock();
    let story = Story {
        delivery: true,
        moves: 2,
        release: "r7".to_owned(),
        revision: "abc1234".to_owned(),
        author: "dev-dana".to_owned(),
        message: None,
        logs: Vec::new(),
        outputs: Vec::new(),
        pause: 0,
    };
    let stored = live(&story, &clock);
    let wrong_state = Release::<Approved, Delivery>::try_from(stored.clone()).unwrap_err();
    assert!(
        matches!(
            &wrong_state,
            Error::Record(RecordError::WrongState {
                release,
                expected: StateName::Approved,
                found: StateName::Tested,
            }) if release == "r7"
        ),
        "{wrong_state:?}"
    );
    let wrong_mode = Release::<Tested, Deployment>::try_from(stored.clone()).unwrap_err();
    assert!(
        matches!(
            &wrong_mode,
            Error::Record(RecordError::WrongMode {
                expected: ModeKind::Deployment,
                found: ModeKind::Delivery,
                ..
            })
        ),
        "{wrong_mode:?}"
    );
    let message = wrong_mode.to_string();
    assert!(
        message.contains("r7") && message.contains("deployment"),
        "{message}"
    );
    let tested = Release::<Tested, Delivery>::try_from(stored).unwrap();
    assert_eq!(tested.id().as_str(), "r7");
}

// ---- tampering ----

/// The stored form of a deployed delivery release, as JSON a bot could have edited.
fn deployed_delivery_json() -> Value {
    let story = Story {
        delivery: true,
        moves: 5,
        release: "r1".to_owned(),
        revision: "aaa1111".to_owned(),
        author: "dev-dana".to_owned(),
        message: Some("checkout: one-click".to_owned()),
        logs: vec!["compiling".to_owned()],
        outputs: vec![("version".to_owned(), "1.4.0".to_owned())],
        pause: 5,
    };
    serde_json::to_value(live(&story, &clock())).unwrap()
}

/// Reads `value` back and converts it to its own typed state: the error, if any.
fn reload(value: Value) -> Result<(), Error> {
    let any: AnyRelease = serde_json::from_value(value).map_err(|e| RecordError::Inconsistent {
        release: tollgate::id::ReleaseId::new("unparsed").unwrap(),
        reason: format!("json: {e}"),
    })?;
    match (any.state(), any.mode()) {
        (StateName::Deployed, ModeKind::Delivery) => {
            Release::<Deployed, Delivery>::try_from(any).map(drop)
        }
        (StateName::Approved, ModeKind::Delivery) => {
            Release::<Approved, Delivery>::try_from(any).map(drop)
        }
        (StateName::Tested, ModeKind::Delivery) => {
            Release::<Tested, Delivery>::try_from(any).map(drop)
        }
        (StateName::Commit, ModeKind::Delivery) => {
            Release::<Commit, Delivery>::try_from(any).map(drop)
        }
        (StateName::Deployed, ModeKind::Deployment) => {
            Release::<Deployed, Deployment>::try_from(any).map(drop)
        }
        (state, mode) => panic!("the tampering cases do not produce {state:?} {mode:?}"),
    }
}

fn assert_inconsistent(value: Value, needle: &str) {
    let error = reload(value).expect_err("a tampered record must be refused");
    assert_eq!(error.kind(), ErrorKind::Release, "{error:?}");
    assert!(
        matches!(&error, Error::Record(RecordError::Inconsistent { .. })),
        "expected RecordError::Inconsistent, got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[test]
fn the_untampered_record_reloads() {
    reload(deployed_delivery_json()).unwrap();
}

#[test]
fn a_deployed_release_without_its_artifact_is_refused() {
    let mut value = deployed_delivery_json();
    value.as_object_mut().unwrap().remove("artifact");
    assert_inconsistent(value, "artifact");
}

#[test]
fn a_release_that_skipped_its_tests_is_refused() {
    let mut value = deployed_delivery_json();
    value["steps"]
        .as_array_mut()
        .unwrap()
        .retain(|step| step["step"] != "test");
    assert_inconsistent(value, "test step");
}

#[test]
fn a_failed_step_does_not_count_as_done() {
    let mut value = deployed_delivery_json();
    for step in value["steps"].as_array_mut().unwrap() {
        if step["step"] == "deploy" {
            step["outcome"] = json!("failed");
            step["stages"][0]["status"] = json!("failed");
            step["stages"][0]["reason"] = json!("rolled back");
        }
    }
    assert_inconsistent(value, "deploy step");
}

#[test]
fn a_delivery_release_approved_without_a_person_is_refused() {
    let mut value = deployed_delivery_json();
    value.as_object_mut().unwrap().remove("approval");
    assert_inconsistent(value, "no approval");
}

#[test]
fn an_approval_for_another_artifact_is_refused() {
    let mut value = deployed_delivery_json();
    value["approval"]["digest"] = json!(artifact_for("bbb").digest.to_string());
    assert_inconsistent(value, "another artifact");
}

#[test]
fn an_approval_for_another_environment_is_refused() {
    let mut value = deployed_delivery_json();
    value["approval"]["environment"] = json!("staging");
    assert_inconsistent(value, "another artifact or environment");
}

#[test]
fn a_deployment_release_carrying_a_human_approval_is_refused() {
    let mut value = deployed_delivery_json();
    value["mode"] = json!("deployment");
    assert_inconsistent(value, "human approval");
}

#[test]
fn an_unapproved_release_with_an_approval_is_refused() {
    let mut value = deployed_delivery_json();
    value["state"] = json!("tested");
    value.as_object_mut().unwrap().remove("deployed_at");
    assert_inconsistent(value, "cannot be approved yet");
}

#[test]
fn a_deployed_release_without_a_deployment_time_is_refused() {
    let mut value = deployed_delivery_json();
    value.as_object_mut().unwrap().remove("deployed_at");
    assert_inconsistent(value, "deployment time");
}

#[test]
fn a_release_that_entered_its_state_before_it_was_created_is_refused() {
    // Soak timers and gate timeouts count from `entered_at`: an edit that moves it back
    // would open them early.
    let mut value = deployed_delivery_json();
    let created = value["created_at"].as_u64().unwrap();
    value["entered_at"] = json!(created - 1);
    assert_inconsistent(value, "before it was created");
}

#[test]
fn a_commit_with_an_artifact_is_refused() {
    let mut value = deployed_delivery_json();
    value["state"] = json!("commit");
    for field in ["steps", "approval", "deployed_at"] {
        value.as_object_mut().unwrap().remove(field);
    }
    assert_inconsistent(value, "must not have an artifact");
}

#[test]
fn malformed_fields_fail_to_parse_with_what_was_wrong() {
    let cases = [
        (
            "artifact",
            json!({"name": "app", "digest": "sha256:beef"}),
            "digest",
        ),
        (
            "artifact",
            json!({"name": "app", "digest": "md5:00"}),
            "md5",
        ),
        ("state", json!("shipped"), "shipped"),
        ("id", json!(""), "empty"),
        ("created_at", json!(-1), "-1"),
    ];
    for (field, bad, needle) in cases {
        let mut value = deployed_delivery_json();
        value[field] = bad;
        let error = serde_json::from_value::<AnyRelease>(value).unwrap_err();
        assert!(
            error.to_string().contains(needle),
            "{field}: {error} should mention {needle:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any single edit to a consistency-relevant field is refused (or fails to parse); no edit
    /// panics, and none is silently accepted as a deployed, approved release.
    #[test]
    fn random_tampering_never_yields_a_trusted_release(
        field in prop::sample::select(vec!["state", "mode", "artifact", "approval", "deployed_at", "steps"]),
        choice in 0usize..6,
    ) {
        let original = deployed_delivery_json();
        let mut value = original.clone();
        let replacement = match (field, choice % 3) {
            ("state", n) => json!(["commit", "built", "staged"][n]),
            ("mode", _) => json!("deployment"),
            ("deployed_at", _) | ("artifact" | "approval", 0) => Value::Null,
            ("artifact", _) => json!({"name": "app", "digest": artifact_for(&format!("x{choice}")).digest.to_string()}),
            ("approval", _) => {
                let mut approval = original["approval"].clone();
                approval["environment"] = json!("qa");
                approval
            }
            (_, n) => {
                let mut steps = original["steps"].clone();
                steps.as_array_mut().unwrap().remove(n);
                steps
            }
        };
        if replacement.is_null() {
            value.as_object_mut().unwrap().remove(field);
        } else {
            value[field] = replacement;
        }
        let parsed = serde_json::from_value::<AnyRelease>(value);
        let Ok(any) = parsed else { return Ok(()); };
        let typed = match (any.state(), any.mode()) {
            (StateName::Commit, ModeKind::Delivery) => Release::<Commit, Delivery>::try_from(any).map(drop),
            (StateName::Built, ModeKind::Delivery) => Release::<Built, Delivery>::try_from(any).map(drop),
            (StateName::Staged, ModeKind::Delivery) => Release::<Staged, Delivery>::try_from(any).map(drop),
            (StateName::Deployed, ModeKind::Delivery) => Release::<Deployed, Delivery>::try_from(any).map(drop),
            (StateName::Deployed, ModeKind::Deployment) => Release::<Deployed, Deployment>::try_from(any).map(drop),
            (state, mode) => return Err(TestCaseError::fail(format!("unexpected {state:?} {mode:?}"))),
        };
        let error = typed.expect_err("a tampered record was trusted");
        prop_assert!(matches!(error, Error::Record(RecordError::Inconsistent { .. })), "{:?}", error);
    }
}
