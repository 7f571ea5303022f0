//! Stored releases. The journal is the source of truth and records are views: an
//! `AnyRelease` (and every fact the journal holds) survives a serde round trip in every state
//! and mode; a typed release comes back only through `Pipeline::restore`, in its own state,
//! equal to the release that was never stored; and a stored history that contradicts itself
//! is refused with a typed error. By the chain when someone without the key edited the store
//! (`FactError::Journal(JournalError::Corrupt { .. })`); by the replay when someone with the
//! key wrote facts the pipeline would never write (`FactError::Inconsistent`).

mod support;

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use support::{
    APPROVERS, SharedJournal, artifact_for, assert_chain_refuses, assert_replay_refuses, block_on,
    clock, delivery, deployment, fact_values, find_fact, forged, ok,
};
use tollgate::error::{Error, ErrorKind};
use tollgate::executor::from_fn;
use tollgate::fact::{Fact, FactError};
use tollgate::journal::{ChainKey, Journal, Stored};
use tollgate::lifecycle::{
    Approved, Built, Commit, Deployed, Mode, ModeKind, Staged, State, StateName, Tested,
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
    /// Minutes the clock moves between moves (less than a day: an approval must still hold
    /// when the release deploys).
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
        // Under a day: an approval counts for 24 hours, and is checked again at deploy.
        0u64..1_400,
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

/// The story's delivery pipeline `shop` on `journal`.
fn delivery_on(story: &Story, clock: &ManualClock, journal: SharedJournal) -> Pipeline<Delivery> {
    delivery("shop", clock)
        .stages(stages(story))
        .journal(journal)
        .build()
        .expect("valid pipeline")
}

/// The story's deployment pipeline `shop` on `journal`.
fn deployment_on(
    story: &Story,
    clock: &ManualClock,
    journal: SharedJournal,
) -> Pipeline<Deployment> {
    deployment("shop", clock)
        .stages(stages(story))
        .journal(journal)
        .build()
        .expect("valid pipeline")
}

/// A release lived through: the record of the release as it was never stored, and what the
/// journal it was written to gives back.
struct Lived {
    journal: SharedJournal,
    /// The release as the moves left it, never stored.
    live: AnyRelease,
    /// What its pipeline restores from the journal.
    restored: Result<AnyRelease, Error>,
    /// The typed states `Release::<S, M>::try_from(restored)` accepts, for its own mode.
    accepted: Vec<StateName>,
    /// What a pipeline of the same name and stages in the other mode restores.
    other_mode: Result<AnyRelease, Error>,
}

/// Drives a release through `story.moves` moves and restores it.
fn live(story: &Story, clock: &ManualClock) -> Lived {
    let mut revision = Revision::new(&story.revision, &story.author).expect("valid revision");
    if let Some(message) = &story.message {
        revision = revision.message(message.clone());
    }
    let pause = Duration::from_secs(story.pause * 60);
    let journal = SharedJournal::new();
    let id = story.release.as_str();
    if story.delivery {
        let pipeline = delivery_on(story, clock, journal.clone());
        let approve = |staged: Release<Staged, Delivery>| async {
            let approval = pipeline
                .sign_off(staged.id().as_str(), APPROVERS[0], "looks good")
                .await
                .expect("an approver approves");
            staged.approve(&pipeline, approval).await.expect("approve")
        };
        let live = block_on(drive(&pipeline, revision, story, clock, pause, approve));
        let (restored, accepted) = observe(&pipeline, id);
        let other = deployment_on(story, clock, journal.clone());
        Lived {
            other_mode: record_of(&other, id),
            journal,
            live,
            restored,
            accepted,
        }
    } else {
        let pipeline = deployment_on(story, clock, journal.clone());
        let approve = |staged: Release<Staged, Deployment>| async {
            staged.auto_approve(&pipeline).await.expect("auto-approve")
        };
        let live = block_on(drive(&pipeline, revision, story, clock, pause, approve));
        let (restored, accepted) = observe(&pipeline, id);
        let other = delivery_on(story, clock, journal.clone());
        Lived {
            other_mode: record_of(&other, id),
            journal,
            live,
            restored,
            accepted,
        }
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

/// Restores `id` with `pipeline`, as a record.
fn record_of<M: Mode>(pipeline: &Pipeline<M>, id: &str) -> Result<AnyRelease, Error> {
    block_on(pipeline.restore(id)).map(|restored| restored.record().clone())
}

/// Restores `id` with `pipeline` as a typed release in state `S`.
fn restored<S: State, M: Mode>(pipeline: &Pipeline<M>, id: &str) -> Result<Release<S, M>, Error> {
    block_on(pipeline.restore(id)).and_then(Release::try_from)
}

/// What `pipeline` restores of `id`, and which typed states accept it.
fn observe<M: Mode>(
    pipeline: &Pipeline<M>,
    id: &str,
) -> (Result<AnyRelease, Error>, Vec<StateName>) {
    let mut accepted = Vec::new();
    macro_rules! probe {
        ($($state:ident),*) => {$(
            if restored::<$state, M>(pipeline, id).is_ok() {
                accepted.push(StateName::$state);
            }
        )*};
    }
    probe!(Commit, Built, Tested, Staged, Approved, Deployed);
    (record_of(pipeline, id), accepted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_release_survives_a_serde_round_trip_and_is_what_the_journal_restores(story in story()) {
        let clock = clock();
        let lived = live(&story, &clock);
        let stored = &lived.live;
        let json = serde_json::to_string(stored).unwrap();
        let back: AnyRelease = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, stored);
        // A second trip is byte-identical: nothing is lost or reordered on the way.
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);

        let mode = if story.delivery { ModeKind::Delivery } else { ModeKind::Deployment };
        prop_assert_eq!(back.mode(), mode);
        prop_assert_eq!(back.steps().len(), story.moves.min(3) + usize::from(story.moves == 5));

        // Every fact is a record too: it reads back as itself, byte for byte.
        for entry in lived.journal.entries() {
            let fact = Fact::from_stored(&entry).unwrap();
            prop_assert_eq!(serde_json::to_vec(&fact).unwrap(), entry.payload.clone());
            let text = serde_json::to_string(&fact).unwrap();
            prop_assert_eq!(serde_json::from_str::<Fact>(&text).unwrap(), fact);
        }

        if story.moves == 0 {
            // A release that never moved was never written: there is nothing to restore.
            prop_assert!(lived.journal.is_empty());
            prop_assert!(
                matches!(&lived.restored, Err(Error::Fact(FactError::UnknownRelease { release })) if *release == story.release),
                "{:?}", lived.restored
            );
            prop_assert!(lived.accepted.is_empty());
            return Ok(());
        }
        // The journal gives back exactly the release that was never stored, in its own state
        // only, and only to a pipeline of its own mode.
        prop_assert_eq!(lived.restored.as_ref().unwrap(), stored);
        prop_assert_eq!(&lived.accepted, &vec![stored.state()]);
        prop_assert!(
            matches!(
                &lived.other_mode,
                Err(Error::Fact(FactError::ForeignPipeline { differences, .. })) if differences.contains(&"mode")
            ),
            "{:?}", lived.other_mode
        );
    }
}

// ---- conversions ----

/// A delivery release `r7` restored Tested.
fn tested_r7() -> Lived {
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
    live(&story, &clock())
}

#[test]
fn a_restored_release_converts_only_to_its_own_state_and_says_which_it_is() {
    let lived = tested_r7();
    let pipeline = delivery("shop", &clock())
        .stages(stages(&Story {
            delivery: true,
            moves: 2,
            release: "r7".to_owned(),
            revision: "abc1234".to_owned(),
            author: "dev-dana".to_owned(),
            message: None,
            logs: Vec::new(),
            outputs: Vec::new(),
            pause: 0,
        }))
        .journal(lived.journal.clone())
        .build()
        .unwrap();
    let wrong_state = restored::<Approved, Delivery>(&pipeline, "r7").unwrap_err();
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
    assert_eq!(wrong_state.kind(), ErrorKind::Release);
    let tested = restored::<Tested, Delivery>(&pipeline, "r7").unwrap();
    assert_eq!(tested.id().as_str(), "r7");
    assert_eq!(tested.record(), &lived.live);
}

#[test]
fn a_release_restored_by_a_pipeline_of_the_other_mode_names_the_release_and_the_mode() {
    let lived = tested_r7();
    let error = lived.other_mode.unwrap_err();
    assert!(
        matches!(&error, Error::Fact(FactError::ForeignPipeline { release, .. }) if release == "r7"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Release);
    let message = error.to_string();
    assert!(
        message.contains("r7") && message.contains("mode"),
        "{message}"
    );
}

#[test]
fn an_unknown_release_is_refused_by_name() {
    let lived = tested_r7();
    let pipeline = Pipeline::<Delivery>::builder("shop")
        .stages(support::standard_stages())
        .approvals(support::policy())
        .journal(lived.journal.clone())
        .build()
        .unwrap();
    let error = record_of(&pipeline, "r8").unwrap_err();
    assert!(
        matches!(&error, Error::Fact(FactError::UnknownRelease { release }) if release == "r8"),
        "{error:?}"
    );
}

// ---- a stored history that contradicts itself ----

/// The story of a deployed delivery release `r1`, with data in every part of its record.
fn deployed_story() -> Story {
    Story {
        delivery: true,
        moves: 5,
        release: "r1".to_owned(),
        revision: "aaa1111".to_owned(),
        author: "dev-dana".to_owned(),
        message: Some("checkout: one-click".to_owned()),
        logs: vec!["compiling".to_owned()],
        outputs: vec![("version".to_owned(), "1.4.0".to_owned())],
        pause: 5,
    }
}

/// The story of a deployed deployment release `r1`.
fn deployed_deployment_story() -> Story {
    Story {
        delivery: false,
        ..deployed_story()
    }
}

/// The journal of `story` lived through: its entries and its facts as JSON.
fn history(story: &Story) -> (Vec<Stored>, Vec<Value>) {
    let lived = live(story, &clock());
    assert_eq!(lived.restored.unwrap().state(), StateName::Deployed);
    (lived.journal.entries(), fact_values(&lived.journal))
}

/// Restores `r1` from `journal` with the story's own pipeline.
fn restore_with(story: &Story, journal: SharedJournal) -> Result<AnyRelease, Error> {
    if story.delivery {
        record_of(&delivery_on(story, &clock(), journal), "r1")
    } else {
        record_of(&deployment_on(story, &clock(), journal), "r1")
    }
}

/// The facts `edited` as the store holds them after someone without the key wrote them:
/// each fact the true history has, at the same place, keeps its entry as stored (with its
/// MAC); every other one is linked where it belongs, under a guessed key.
fn written_without_key(entries: &[Stored], facts: &[Value], edited: &[Value]) -> SharedJournal {
    let guessed = SharedJournal::with_key(ChainKey::derive(b"a guess at the host's secret"));
    let linked: Vec<_> = edited
        .iter()
        .map(|v| {
            serde_json::from_value::<Fact>(v.clone())
                .unwrap()
                .to_entry()
        })
        .collect();
    block_on(guessed.append(linked)).unwrap();
    let guessed = guessed.entries();
    let store = edited
        .iter()
        .enumerate()
        .map(|(i, fact)| {
            facts
                .iter()
                .position(|f| f == fact)
                .map_or_else(|| guessed[i].clone(), |j| entries[j].clone())
        })
        .collect();
    SharedJournal::holding(support::chain_key(), store)
}

/// Edits the true history of `story` with `edit`, and checks that the edited history is
/// refused both ways: by the chain when written without the key, and by the replay, saying
/// `needle`, when written with it.
#[track_caller]
fn assert_contradiction_refused(story: &Story, edit: impl Fn(&mut Vec<Value>), needle: &str) {
    let (entries, facts) = history(story);
    let mut edited = facts.clone();
    edit(&mut edited);
    assert_ne!(edited, facts, "the edit changes the history");
    assert_chain_refuses(restore_with(
        story,
        written_without_key(&entries, &facts, &edited),
    ));
    assert_replay_refuses(restore_with(story, forged(&edited)), needle);
}

#[test]
fn the_untampered_history_restores() {
    for story in [deployed_story(), deployed_deployment_story()] {
        let (entries, facts) = history(&story);
        let journal = SharedJournal::holding(support::chain_key(), entries.clone());
        assert_eq!(
            restore_with(&story, journal).unwrap().state(),
            StateName::Deployed
        );
        // Written again, with the key, fact by fact: the same release.
        let again = restore_with(&story, forged(&facts)).unwrap();
        assert_eq!(again.state(), StateName::Deployed);
        // Untouched entries "written without the key" are the entries as stored.
        let same = written_without_key(&entries, &facts, &facts);
        assert_eq!(same.entries(), entries);
    }
}

#[test]
fn a_build_without_its_artifact_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let built = find_fact(facts, 0, "moved", "to", "built");
            facts[built].as_object_mut().unwrap().remove("artifact");
        },
        "builds without an artifact",
    );
}

#[test]
fn a_release_that_skipped_its_tests_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let gates = find_fact(facts, 0, "gates", "move", "test");
            let tested = find_fact(facts, gates, "moved", "to", "tested");
            facts.drain(gates..=tested);
        },
        "out of turn",
    );
}

#[test]
fn a_release_whose_test_report_was_removed_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let gates = find_fact(facts, 0, "gates", "move", "test");
            let ran = find_fact(facts, gates, "step_ran", "release", "r1");
            facts.remove(ran);
        },
        "without a run of every stage of its step succeeding",
    );
}

#[test]
fn a_failed_step_does_not_count_as_done() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let gates = find_fact(facts, 0, "gates", "move", "deploy");
            let ran = find_fact(facts, gates, "step_ran", "release", "r1");
            let report = &mut facts[ran]["report"];
            report["outcome"] = json!("failed");
            report["stages"][0]["status"] = json!("failed");
            report["stages"][0]["reason"] = json!("rolled back");
            // And the stage's own fact, so that the two agree.
            let stage = report["stages"][0]["id"].as_str().unwrap().to_owned();
            let settled = find_fact(facts, gates, "stage_finished", "release", "r1");
            assert_eq!(facts[settled]["report"]["id"], stage.as_str());
            facts[settled]["report"]["status"] = json!("failed");
            facts[settled]["report"]["reason"] = json!("rolled back");
        },
        "without a run of every stage of its step succeeding",
    );
}

#[test]
fn a_delivery_release_approved_without_a_person_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            facts.retain(|f| f["fact"] != "approval_used");
        },
        "approves a delivery release without an approval",
    );
}

#[test]
fn an_approval_for_another_artifact_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let used = find_fact(facts, 0, "approval_used", "release", "r1");
            facts[used]["record"]["digest"] = json!(artifact_for("bbb").digest.to_string());
        },
        "artifact",
    );
}

#[test]
fn an_approval_for_another_environment_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let used = find_fact(facts, 0, "approval_used", "release", "r1");
            facts[used]["record"]["environment"] = json!("staging");
        },
        "environment",
    );
}

/// The approval facts of a delivery history of the same release: the vote and its use.
fn a_persons_approval() -> Vec<Value> {
    let (_, facts) = history(&deployed_story());
    facts
        .into_iter()
        .filter(|f| f["fact"] == "voted" || f["fact"] == "approval_used")
        .collect()
}

#[test]
fn a_deployment_release_carrying_a_human_approval_is_refused() {
    let approval = a_persons_approval();
    assert_contradiction_refused(
        &deployed_deployment_story(),
        |facts| {
            let moved = find_fact(facts, 0, "moved", "to", "approved");
            facts.insert(moved, approval[1].clone());
        },
        "uses an approval where none is taken",
    );
}

#[test]
fn a_release_approved_before_it_was_staged_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let used = find_fact(facts, 0, "approval_used", "release", "r1");
            let approval = facts.remove(used);
            let tested = find_fact(facts, 0, "moved", "to", "tested");
            facts.insert(tested + 1, approval);
        },
        "uses an approval where none is taken",
    );
}

#[test]
fn a_commit_moved_without_its_build_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let built = find_fact(facts, 0, "moved", "to", "built");
            facts.drain(1..built);
        },
        "without the gates on it open",
    );
}

#[test]
fn a_release_moved_to_a_state_out_of_turn_is_refused() {
    assert_contradiction_refused(
        &deployed_story(),
        |facts| {
            let tested = find_fact(facts, 0, "moved", "to", "tested");
            facts[tested]["to"] = json!("approved");
        },
        "out of turn",
    );
}

#[test]
fn a_deployed_release_takes_its_deployment_time_from_its_move() {
    let story = deployed_story();
    let (_, facts) = history(&story);
    let moved = find_fact(&facts, 0, "moved", "to", "deployed");
    let any = restore_with(&story, forged(&facts)).unwrap();
    assert_eq!(
        any.deployed_at().map(|t| json!(t.as_millis())),
        Some(facts[moved]["at"].clone())
    );
}

#[test]
fn malformed_fields_of_a_record_fail_to_parse_with_what_was_wrong() {
    let value = serde_json::to_value(live(&deployed_story(), &clock()).live).unwrap();
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
        let mut value = value.clone();
        value[field] = bad;
        let error = serde_json::from_value::<AnyRelease>(value).unwrap_err();
        assert!(
            error.to_string().contains(needle),
            "{field}: {error} should mention {needle:?}"
        );
    }
}

#[test]
fn a_malformed_fact_is_refused_with_its_sequence_number() {
    let story = deployed_story();
    let (_, facts) = history(&story);
    let mut bad_digest = facts[find_fact(&facts, 0, "moved", "to", "built")].clone();
    bad_digest["artifact"]["digest"] = json!("sha256:beef");
    let payloads = [
        b"not json".to_vec(),
        br#"{"fact": "teleported", "release": "r1"}"#.to_vec(),
        serde_json::to_vec(&bad_digest).unwrap(),
    ];
    for payload in payloads {
        // Written with the key: the chain is whole, the entry is not a fact.
        let journal = forged(&facts);
        block_on(journal.append(vec![tollgate::journal::Entry::new("r1", payload.clone())]))
            .unwrap();
        let seq = journal.len() as u64;
        let error = restore_with(&story, journal).unwrap_err();
        assert!(
            matches!(&error, Error::Fact(FactError::Malformed { seq: s, .. }) if *s == seq),
            "{}: {error:?}",
            String::from_utf8_lossy(&payload)
        );
        assert_eq!(error.kind(), ErrorKind::Release);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any single contradiction in a consistency-relevant fact (the state a move reaches, the
    /// mode, the artifact, the approval, the deploy, a step's report) is refused, whether it
    /// was written without the key or with it. No edit panics, and none restores.
    #[test]
    fn a_random_contradiction_is_refused_with_or_without_the_key(
        field in prop::sample::select(vec!["state", "mode", "artifact", "approval", "deployed", "steps"]),
        choice in 0usize..12,
    ) {
        let story = deployed_story();
        let (entries, facts) = history(&story);
        let mut edited = facts.clone();
        let find = |facts: &[Value], fact: &str, field: &str, value: &str| find_fact(facts, 0, fact, field, value);
        match field {
            "state" => {
                let to = ["tested", "staged", "approved"][choice % 3];
                let built = find(&edited, "moved", "to", "built");
                edited[built]["to"] = json!(["commit", "staged", "approved", "deployed"][choice % 4]);
                if choice % 2 == 1 {
                    let other = find(&edited, "moved", "to", to);
                    edited[other]["to"] = json!("deployed");
                }
            }
            "mode" => {
                edited[0]["mode"] = json!("deployment");
                if choice % 2 == 1 {
                    edited[0]["fingerprint"]["mode"] = json!("deployment");
                }
            }
            "artifact" => {
                let built = find(&edited, "moved", "to", "built");
                if choice % 2 == 0 {
                    edited[built].as_object_mut().unwrap().remove("artifact");
                } else {
                    edited[built]["artifact"]["digest"] =
                        json!(artifact_for(&format!("x{choice}")).digest.to_string());
                }
            }
            "approval" => {
                let used = find(&edited, "approval_used", "release", "r1");
                match choice % 4 {
                    0 => { edited.remove(used); }
                    1 => edited[used]["record"]["environment"] = json!("qa"),
                    2 => edited[used]["record"]["digest"] =
                        json!(artifact_for(&format!("x{choice}")).digest.to_string()),
                    _ => edited[used]["record"]["signoffs"] = json!([]),
                }
            }
            "deployed" => {
                // The move to Deployed before the deploy step's report, or before its gates.
                let gates = find(&edited, "gates", "move", "deploy");
                let moved = edited.remove(find(&edited, "moved", "to", "deployed"));
                edited.insert(gates + choice % 2, moved);
            }
            _ => {
                let reports: Vec<usize> = edited
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f["fact"] == "step_ran")
                    .map(|(i, _)| i)
                    .collect();
                edited.remove(reports[choice % reports.len()]);
            }
        }
        prop_assume!(edited != facts);
        let without_key = restore_with(&story, written_without_key(&entries, &facts, &edited));
        prop_assert!(
            matches!(without_key, Err(Error::Fact(FactError::Journal(_)))),
            "without the key: {:?}", without_key
        );
        let with_key = restore_with(&story, forged(&edited));
        prop_assert!(
            matches!(
                with_key,
                Err(Error::Fact(FactError::Inconsistent { .. } | FactError::ForeignPipeline { .. }))
            ),
            "with the key: {:?}", with_key
        );
    }
}
