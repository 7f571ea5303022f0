//! Trust in stored releases (issue 10): every attack on a release bot's store that concerns
//! stored releases, as a test that FAILS IF THE ATTACK SUCCEEDS. A test's name is its claim.
//!
//! Two attackers:
//!
//! - **without the key**: someone who can write the store (a database row, a file) but does
//!   not hold the host's [`ChainKey`](tollgate::journal::ChainKey). They edit the stored entries
//!   (`MemoryJournal::entries_mut`): change payload bytes, delete, reorder, insert, or append
//!   entries linked where they belong but MAC'ed under a guessed key. The chain must refuse
//!   (`FactError::Journal(JournalError::Corrupt { .. })`).
//! - **with the key**: someone who can write entries the chain accepts (a bug in the host, a
//!   leaked key, a second bot with the same key) but only through facts the pipeline would
//!   never write. Simulated with a second journal under the same key holding hand-made facts
//!   (an honest history edited as JSON), and a pipeline of the same definition restoring from
//!   it. The replay must refuse (`FactError::Inconsistent` or `ForeignPipeline`).
//!
//! What no check can refuse, by design, and is therefore not claimed here: a history written
//! with the key that is *consistent* (one the pipeline could have written: the author rewritten
//! everywhere, a rejection that was never written, a vote by an admitted approver, a build
//! report naming another digest); and the loss of the journal's newest entries (a rollback of
//! the store to an older copy), which only a head kept outside the store reveals (with a
//! `HeadWitness` keeping it, the rollback is refused: see "the store rolled back").
//!
//! Everything runs on a `ManualClock` and `block_on`; nothing sleeps.

mod support;

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use support::{
    SharedJournal, append_without_key, artifact_for, assert_chain_refuses, assert_replay_refuses,
    block_on, built, chain_key, clock, compile, delivery, delivery_with, edit_without_key,
    fact_values, failing, find_fact, forged, ok, replace_strings, revision, staged,
    stages_testing_with, standard_delivery, standard_stages,
};
use tollgate::approval::{ApprovalError, Decision};
use tollgate::executor::from_async_fn;
use tollgate::fact::{Fact, FactError, read_keys_checked, votes_key};
use tollgate::gate;
use tollgate::id::Person;
use tollgate::journal::{
    ChainHash, ChainKey, Entry, Head, HeadWitness, Journal, JournalError, MemoryWitness, Stored,
    Witnessed, verify,
};
use tollgate::lifecycle::{Mode, State, StateName};
use tollgate::pipeline::{PipelineBuilder, WithApprovals};
use tollgate::prelude::*;
use tollgate::record::ApprovalRecord;
use tollgate::time::{ManualClock, Timestamp};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The revision of release `r1` (and, in the tests that run it twice, of its copies).
const R1: &str = "aaa1111";
/// The revision of release `r2`: another artifact.
const R2: &str = "bbb2222";

type Define = Arc<dyn Fn(&ManualClock) -> PipelineBuilder<Delivery, WithApprovals>>;

/// A release bot: its clock, its journal (which a test tampers with), and its delivery
/// pipeline, with the definition to build the same pipeline again after a restart.
struct Bot {
    clock: ManualClock,
    journal: SharedJournal,
    pipeline: Pipeline<Delivery>,
    define: Define,
}

impl Bot {
    fn new(
        define: impl Fn(&ManualClock) -> PipelineBuilder<Delivery, WithApprovals> + 'static,
    ) -> Bot {
        Bot::sharing(SharedJournal::new(), define)
    }

    /// A bot writing to `journal`, which other bots may write too.
    fn sharing(
        journal: SharedJournal,
        define: impl Fn(&ManualClock) -> PipelineBuilder<Delivery, WithApprovals> + 'static,
    ) -> Bot {
        let define: Define = Arc::new(define);
        let clock = clock();
        let pipeline = define(&clock)
            .journal(journal.clone())
            .build()
            .expect("a valid pipeline");
        Bot {
            clock,
            journal,
            pipeline,
            define,
        }
    }

    /// The standard delivery pipeline `shop` (approvers rita and sam, author dana).
    fn standard() -> Bot {
        Bot::new(standard_delivery)
    }

    /// The bot restarted on `journal`: the same definition and clock, another store.
    fn on(&self, journal: SharedJournal) -> Pipeline<Delivery> {
        (self.define)(&self.clock)
            .journal(journal)
            .build()
            .expect("a valid pipeline")
    }

    fn facts(&self) -> Vec<Value> {
        fact_values(&self.journal)
    }

    fn vote(&self, release: &str, person: &str, decision: Decision) {
        block_on(self.pipeline.vote(
            release,
            person,
            decision,
            &format!("{person} says {decision:?}"),
        ))
        .unwrap_or_else(|e| panic!("{person}'s vote on {release} is taken: {e}"));
    }

    /// Restores `id` from the bot's own journal, as a record.
    fn restore(&self, id: &str) -> Result<AnyRelease, Error> {
        record_of(&self.pipeline, id)
    }
}

/// Restores `id` with `pipeline`, as a record (the state it reached and everything else).
fn record_of<M: Mode>(pipeline: &Pipeline<M>, id: &str) -> Result<AnyRelease, Error> {
    block_on(pipeline.restore(id)).map(|restored| restored.record().clone())
}

/// Restores `id` with `pipeline` as a typed release in state `S`.
fn restored<S: State, M: Mode>(pipeline: &Pipeline<M>, id: &str) -> Result<Release<S, M>, Error> {
    block_on(pipeline.restore(id)).and_then(Release::try_from)
}

/// What a successful attack restored, for the failure message.
fn describe(any: &AnyRelease) -> String {
    format!(
        "`{}` restored as {} with artifact {:?} and approval {:?}",
        any.id(),
        any.state(),
        any.artifact().map(|a| a.digest.to_string()),
        any.approval()
            .map(|a| (a.approver.to_string(), a.expires_at, a.signoffs.len())),
    )
}

/// The error of a restore that must be refused; panics with what was restored otherwise.
#[track_caller]
fn refused(result: Result<AnyRelease, Error>, attack: &str) -> Error {
    match result {
        Err(error) => error,
        Ok(any) => panic!("the attack succeeded ({attack}): {}", describe(&any)),
    }
}

/// Asserts that the restore was refused because the release belongs to another pipeline
/// definition, naming `part` among the differences.
#[track_caller]
fn assert_foreign(result: Result<AnyRelease, Error>, part: &str) {
    match refused(result, "a foreign release was restored") {
        Error::Fact(FactError::ForeignPipeline { differences, .. }) => {
            assert!(
                differences.contains(&part),
                "{differences:?} should name {part:?}"
            );
        }
        other => panic!("expected FactError::ForeignPipeline, got {other:?}"),
    }
}

/// Drives a fresh release to Staged.
fn drive_to_staged<M: Mode>(
    pipeline: &Pipeline<M>,
    fresh: Release<Commit, M>,
) -> Release<Staged, M> {
    block_on(async {
        let built = fresh.build(pipeline).await.expect("build");
        let artifact = built.artifact().clone();
        let tested = built.test(pipeline, &artifact).await.expect("test");
        tested.stage(pipeline, &artifact).await.expect("stage")
    })
}

/// Release `r1` staged.
fn staged_r1(bot: &Bot) -> (Release<Staged, Delivery>, ArtifactRef) {
    staged(&bot.pipeline, "r1", R1)
}

/// Release `r1` approved by rita (her vote, the approval issued from it, used).
fn approved_r1(bot: &Bot) -> (Release<Approved, Delivery>, ArtifactRef) {
    let (staged, artifact) = staged_r1(bot);
    bot.vote("r1", "rita", Decision::Approve);
    let approval = block_on(bot.pipeline.issue("r1")).expect("rita's yes meets the policy");
    let approved = block_on(staged.approve(&bot.pipeline, approval)).expect("approve");
    (approved, artifact)
}

/// Release `r1` deployed on rita's approval.
fn deployed_r1(bot: &Bot) -> ArtifactRef {
    let (approved, artifact) = approved_r1(bot);
    block_on(approved.deploy(&bot.pipeline, &artifact)).expect("deploy");
    artifact
}

/// The facts of an honest history from `first` (a `voted` fact) through the move to
/// Approved: the vote, the gates on the approve move, the approval's use, the move.
fn approval_facts(facts: &[Value]) -> Vec<Value> {
    let first = find_fact(facts, 0, "voted", "release", "r1");
    let last = find_fact(facts, first, "moved", "to", "approved");
    facts[first..=last].to_vec()
}

/// Removes the facts of kind `fact` whose `field` is `value`.
fn remove_facts(facts: &mut Vec<Value>, fact: &str, field: &str, value: &str) {
    let before = facts.len();
    facts.retain(|f| !(f["fact"] == fact && f[field] == value));
    assert!(
        facts.len() < before,
        "no {fact} fact with {field} = {value}"
    );
}

/// Deploys a restored approved release of `pipeline` now: what the attacker wanted.
fn deploy_restored(pipeline: &Pipeline<Delivery>, id: &str) -> Result<AnyRelease, Error> {
    let approved: Release<Approved, Delivery> = restored(pipeline, id)?;
    let artifact = approved.artifact().clone();
    Ok(block_on(approved.deploy(pipeline, &artifact))?.into_any())
}

fn millis(t: Timestamp, plus: Duration) -> Value {
    json!(t.saturating_add(plus).as_millis())
}

const START: Timestamp = support::START;

// ---- staged → approved with an invented approval ----

#[test]
fn an_invented_approval_appended_without_the_key_is_refused_by_the_chain() {
    // The approval facts of an honest twin history, in which rita approved r1.
    let twin = Bot::standard();
    approved_r1(&twin);
    let invented = approval_facts(&twin.facts());

    let bot = Bot::standard();
    staged_r1(&bot);
    append_without_key(&bot.journal, &invented);
    assert_chain_refuses(bot.restore("r1"));
    assert_chain_refuses(block_on(bot.pipeline.issue("r1")));
}

#[test]
fn an_approval_by_an_outsider_written_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    for fact in &mut facts {
        replace_strings(fact, "rita", "mallory");
    }
    let result = record_of(&bot.on(forged(&facts)), "r1");
    let error = refused(result, "mallory, whom no rule admits, approved r1");
    assert!(
        matches!(error, Error::Fact(FactError::Inconsistent { .. })),
        "{error:?}"
    );
}

#[test]
fn an_approval_by_the_author_written_with_the_key_is_refused_by_the_replay() {
    // dana may approve under this policy, except her own change.
    let bot = Bot::new(|c| {
        delivery_with(
            "shop",
            c,
            ApprovalPolicy::any_of(["rita", "sam", "dana"]).unwrap(),
        )
        .stages(standard_stages())
    });
    approved_r1(&bot);
    let mut facts = bot.facts();
    for fact in &mut facts {
        replace_strings(fact, "rita", "dana");
    }
    // The author's vote does not count, so the votes give no approval at all.
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "not approved yet");
}

#[test]
fn an_expired_approval_used_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    // Used (and the release moved) 25 hours after rita's vote: an hour after it expired.
    let used = find_fact(&facts, 0, "approval_used", "release", "r1");
    let moved = find_fact(&facts, used, "moved", "to", "approved");
    for i in [used, moved] {
        facts[i]["at"] = millis(START, 25 * HOUR);
    }
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "expired");
}

#[test]
fn an_approval_used_over_a_standing_rejection_with_the_key_is_refused_by_the_replay() {
    // Sam's "changes requested", written after rita's yes was issued and before it was used:
    // the approve move would have refused it, so only someone with the key writes this.
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    let yes = find_fact(&facts, 0, "voted", "release", "r1");
    let used = find_fact(&facts, yes, "approval_used", "release", "r1");
    let mut rejection = facts[yes].clone();
    rejection["vote"]["person"] = json!("sam");
    rejection["vote"]["decision"] = json!("reject");
    rejection["vote"]["reason"] = json!("changes requested");
    facts.insert(used, rejection);
    let message = assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "sam");
    assert!(message.contains("rejected"), "{message}");
}

#[test]
fn an_approval_whose_reason_was_rewritten_with_the_key_is_refused_naming_the_reason() {
    // The record's other parts still match what the votes give: the refusal names the one
    // that does not, so an auditor sees what was changed.
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    let used = find_fact(&facts, 0, "approval_used", "release", "r1");
    facts[used]["record"]["reason"] = json!("approved by the CAB");
    let message = assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "reason");
    assert!(
        message.contains("is for reason `approved by the CAB`"),
        "{message}"
    );
}

#[test]
fn an_approval_whose_signoff_reason_was_rewritten_with_the_key_is_refused_by_the_replay() {
    // A part of the record that the refusal cannot show as one value (a signoff's reason):
    // still a difference from what the votes give.
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    let used = find_fact(&facts, 0, "approval_used", "release", "r1");
    facts[used]["record"]["signoffs"][0]["reason"] = json!("approved by the CAB");
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "signoffs");
}

#[test]
fn an_approval_without_any_vote_written_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    remove_facts(&mut facts, "voted", "release", "r1");
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "not approved yet");
}

#[test]
fn a_delivery_release_approved_without_using_an_approval_is_refused_by_the_replay() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    remove_facts(&mut facts, "approval_used", "release", "r1");
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "without an approval",
    );
}

// ---- a failed test step turned into success ----

/// A bot whose unit tests fail, with `r1` built and its test move refused.
fn failed_tests() -> Bot {
    let bot = Bot::new(|c| delivery("shop", c).stages(stages_testing_with(failing("3 failed"))));
    let (built, artifact) = built(&bot.pipeline, "r1", R1);
    let error = block_on(built.test(&bot.pipeline, &artifact)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StageFailed);
    bot
}

/// An empty report of a test step that claims to have succeeded, and the move it would
/// allow.
fn empty_test_report() -> Vec<Value> {
    let at = START.as_millis();
    vec![
        json!({"fact": "step_ran", "release": "r1", "report": {
            "step": "test", "started_at": at, "finished_at": at,
            "outcome": "succeeded", "stages": []}}),
        json!({"fact": "moved", "release": "r1", "to": "tested", "at": at}),
    ]
}

#[test]
fn an_empty_test_report_appended_without_the_key_is_refused_by_the_chain() {
    let bot = failed_tests();
    append_without_key(&bot.journal, &empty_test_report());
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn a_failed_test_report_edited_to_success_without_the_key_is_refused_by_the_chain() {
    let bot = failed_tests();
    let facts = bot.facts();
    let report = facts
        .iter()
        .position(|f| f["fact"] == "step_ran" && f["report"]["step"] == "test")
        .unwrap();
    edit_without_key(&bot.journal, report, |f| {
        f["report"]["outcome"] = json!("succeeded");
        for stage in f["report"]["stages"].as_array_mut().unwrap() {
            stage["status"] = json!("succeeded");
            stage.as_object_mut().unwrap().remove("reason");
        }
    });
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn an_empty_test_report_written_with_the_key_does_not_make_a_failed_release_tested() {
    let bot = failed_tests();
    let mut facts = bot.facts();
    facts.extend(empty_test_report());
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "without a run of every stage of its step succeeding",
    );
}

#[test]
fn a_failed_test_report_marked_succeeded_with_the_key_does_not_make_the_release_tested() {
    let bot = failed_tests();
    let mut facts = bot.facts();
    let report = facts
        .iter()
        .position(|f| f["fact"] == "step_ran" && f["report"]["step"] == "test")
        .unwrap();
    facts[report]["report"]["outcome"] = json!("succeeded");
    facts.push(json!({"fact": "moved", "release": "r1", "to": "tested", "at": START.as_millis()}));
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "without a run of every stage of its step succeeding",
    );
}

#[test]
fn a_test_report_missing_a_stage_written_with_the_key_does_not_make_the_release_tested() {
    // The standard pipeline tests with `unit` and `lint`; the forged report ran only `unit`.
    let bot = Bot::standard();
    built(&bot.pipeline, "r1", R1);
    let twin = Bot::standard();
    staged(&twin.pipeline, "r1", R1);
    let twin_facts = twin.facts();
    let mut facts = bot.facts();
    let test_move = find_fact(&twin_facts, 0, "gates", "move", "test");
    let ran = find_fact(&twin_facts, test_move, "step_ran", "release", "r1");
    let mut report = twin_facts[ran].clone();
    report["report"]["stages"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["id"] == "unit");
    // The stages' own facts are left out with `lint`'s: the report alone is the forgery.
    facts.extend([
        twin_facts[test_move].clone(),
        report,
        twin_facts[ran + 1].clone(),
    ]);
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "without a run of every stage of its step succeeding",
    );
}

// ---- the artifact digest swapped for an untested one ----

#[test]
fn a_swapped_artifact_digest_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::standard();
    deployed_r1(&bot);
    let moved = find_fact(&bot.facts(), 0, "moved", "to", "built");
    let untested = artifact_for("evil").digest.to_string();
    edit_without_key(&bot.journal, moved, |f| {
        f["artifact"]["digest"] = json!(untested);
    });
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn a_swapped_artifact_digest_written_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    let artifact = deployed_r1(&bot);
    let mut facts = bot.facts();
    // Everywhere but the build step's reports (the step's and its stages'): the fixed
    // artifact, the votes' requests, the approval.
    let build_report = find_fact(&facts, 0, "step_ran", "release", "r1");
    let untested = artifact_for("evil").digest.to_string();
    for (i, fact) in facts.iter_mut().enumerate() {
        if i != build_report && fact["fact"] != "stage_finished" {
            replace_strings(fact, &artifact.digest.to_string(), &untested);
        }
    }
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "fixes an artifact the build did not report",
    );
}

#[test]
fn an_artifact_changed_after_the_build_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    deployed_r1(&bot);
    let mut facts = bot.facts();
    let deployed = find_fact(&facts, 0, "moved", "to", "deployed");
    facts[deployed]["artifact"] = json!({"name": "app", "digest": artifact_for("evil").digest});
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "changes the artifact after the build",
    );
}

#[test]
fn an_approval_for_another_artifact_written_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    let artifact = deployed_r1(&bot);
    let mut facts = bot.facts();
    let untested = artifact_for("evil").digest.to_string();
    for fact in facts.iter_mut().filter(|f| f["fact"] == "approval_used") {
        replace_strings(fact, &artifact.digest.to_string(), &untested);
    }
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "artifact");
}

// ---- the mode flipped to deployment, the pipeline renamed ----

/// A deployment pipeline `name` with the standard stages, on `journal`.
fn deployment_on(name: &str, journal: SharedJournal) -> Pipeline<Deployment> {
    Pipeline::<Deployment>::builder(name)
        .clock(clock())
        .stages(standard_stages())
        .journal(journal)
        .build()
        .expect("a valid pipeline")
}

/// The staged history of `r1` with its start edited by `edit`, and an automatic approval
/// appended (the gates on the approve move, the move): what a deployment pipeline writes.
fn auto_approved(bot: &Bot, edit: impl FnOnce(&mut Value)) -> Vec<Value> {
    let mut facts = bot.facts();
    edit(&mut facts[0]);
    let at = START.as_millis();
    facts.extend([
        json!({"fact": "gates", "release": "r1", "move": "approve", "verdicts": [], "at": at}),
        json!({"fact": "moved", "release": "r1", "to": "approved", "at": at}),
    ]);
    facts
}

#[test]
fn a_mode_flipped_to_deployment_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::standard();
    staged_r1(&bot);
    edit_without_key(&bot.journal, 0, |f| {
        f["mode"] = json!("deployment");
        f["fingerprint"]["mode"] = json!("deployment");
    });
    assert_chain_refuses(bot.restore("r1"));
    assert_chain_refuses(record_of(&deployment_on("shop", bot.journal.clone()), "r1"));
}

#[test]
fn a_mode_flipped_to_deployment_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    staged_r1(&bot);
    let facts = auto_approved(&bot, |start| start["mode"] = json!("deployment"));
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "another mode");
    // With the fingerprint's mode flipped too, neither a delivery nor a deployment pipeline
    // of that name takes it: the definitions differ.
    let facts = auto_approved(&bot, |start| {
        start["mode"] = json!("deployment");
        start["fingerprint"]["mode"] = json!("deployment");
    });
    assert_foreign(record_of(&bot.on(forged(&facts)), "r1"), "mode");
    assert_foreign(
        record_of(&deployment_on("shop", forged(&facts)), "r1"),
        "approval policies",
    );
}

#[test]
fn a_release_renamed_to_another_services_deployment_pipeline_with_the_key_is_refused() {
    let bot = Bot::standard();
    staged_r1(&bot);
    let facts = auto_approved(&bot, |start| {
        start["pipeline"] = json!("payments");
        start["mode"] = json!("deployment");
        start["fingerprint"]["mode"] = json!("deployment");
    });
    assert_foreign(
        record_of(&deployment_on("payments", forged(&facts)), "r1"),
        "approval policies",
    );
}

#[test]
fn a_delivery_release_is_not_restored_by_a_deployment_pipeline_of_the_same_name() {
    let bot = Bot::standard();
    staged_r1(&bot);
    assert_foreign(
        record_of(&deployment_on("shop", bot.journal.clone()), "r1"),
        "mode",
    );
}

// ---- the author rewritten, so that the author approves ----

/// A pipeline under which dana may approve, except her own changes.
fn dana_may_approve(c: &ManualClock) -> PipelineBuilder<Delivery, WithApprovals> {
    delivery_with(
        "shop",
        c,
        ApprovalPolicy::any_of(["rita", "sam", "dana"]).unwrap(),
    )
    .stages(standard_stages())
}

#[test]
fn an_author_rewritten_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::new(dana_may_approve);
    staged_r1(&bot);
    edit_without_key(&bot.journal, 0, |f| f["revision"]["author"] = json!("ines"));
    assert_chain_refuses(bot.restore("r1"));
    assert_chain_refuses(block_on(bot.pipeline.vote(
        "r1",
        "dana",
        Decision::Approve,
        "mine",
    )));
}

#[test]
fn an_author_rewritten_under_her_own_approval_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::new(dana_may_approve);
    approved_r1(&bot);
    let mut facts = bot.facts();
    // dana's own approval (rita's, renamed), and the change's author rewritten to ines in the
    // start only: the votes were cast on dana's change.
    for fact in &mut facts {
        replace_strings(fact, "rita", "dana");
    }
    facts[0]["revision"]["author"] = json!("ines");
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "another request");
}

#[test]
fn the_triggerer_approving_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    let rev = revision(R1).triggered_by(Person::new("sam").unwrap());
    let staged = drive_to_staged(&bot.pipeline, bot.pipeline.start("r1", rev).unwrap());
    bot.vote("r1", "rita", Decision::Approve);
    let approval = block_on(bot.pipeline.issue("r1")).unwrap();
    block_on(staged.approve(&bot.pipeline, approval)).unwrap();
    let mut facts = bot.facts();
    for fact in &mut facts {
        replace_strings(fact, "rita", "sam");
    }
    // The triggerer's vote does not count, so the votes give no approval at all.
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "not approved yet");
    // `triggered_by` removed from the start only: the votes were cast on a run sam
    // triggered.
    facts[0]["revision"]
        .as_object_mut()
        .unwrap()
        .remove("triggered_by");
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "another request");
    // Without the key, the edit breaks the chain.
    edit_without_key(&bot.journal, 0, |f| {
        f["revision"]
            .as_object_mut()
            .unwrap()
            .remove("triggered_by");
    });
    assert_chain_refuses(bot.restore("r1"));
}

// ---- gate verdicts deleted ----

/// A bot whose deploy move waits for an hour's soak after approval; `r1` was deployed on
/// its second try, after a first one that found the soak pending.
fn soaked_deploy() -> Bot {
    let bot = Bot::new(|c| standard_delivery(c).gate(Move::Deploy, gate::soak(HOUR)));
    let (approved, artifact) = approved_r1(&bot);
    let early = block_on(approved.deploy(&bot.pipeline, &artifact)).unwrap_err();
    assert_eq!(early.kind(), ErrorKind::GatePending);
    bot.clock.advance(2 * HOUR);
    block_on(early.into_release().deploy(&bot.pipeline, &artifact)).expect("deploy after the soak");
    bot
}

#[test]
fn a_gate_verdict_deleted_without_the_key_is_refused_by_the_chain() {
    let bot = soaked_deploy();
    let pending = find_fact(&bot.facts(), 0, "gates", "move", "deploy");
    bot.journal.entries_mut(|e| e.remove(pending));
    assert_chain_refuses(bot.restore("r1"));

    let bot = soaked_deploy();
    let pending = find_fact(&bot.facts(), 0, "gates", "move", "deploy");
    edit_without_key(&bot.journal, pending, |f| f["verdicts"] = json!([]));
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn a_gate_verdict_deleted_with_the_key_is_refused_by_the_replay() {
    let bot = soaked_deploy();
    // The open verdict deleted from the last gates fact.
    let mut facts = bot.facts();
    let pending = find_fact(&facts, 0, "gates", "move", "deploy");
    let open = find_fact(&facts, pending + 1, "gates", "move", "deploy");
    facts[open]["verdicts"] = json!([]);
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "gates");
    // Every gates fact of the deploy move deleted (with the facts of the stages the move
    // ran, which need a claimed move).
    let mut facts = bot.facts();
    remove_facts(&mut facts, "gates", "move", "deploy");
    remove_facts(&mut facts, "stage_finished", "step", "deploy");
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "gates");
    // The pending verdict kept, the open one deleted: the move follows a pending gate.
    let mut facts = bot.facts();
    facts.remove(open);
    remove_facts(&mut facts, "stage_finished", "step", "deploy");
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "gates");
}

#[test]
fn a_soak_forged_open_before_it_ended_with_the_key_is_refused_by_the_replay() {
    // The soak counts from the move to Approved, at START; the deploy is forged to have
    // happened one minute later, with the soak's verdict open at that time.
    let bot = soaked_deploy();
    let mut facts = bot.facts();
    let pending = find_fact(&facts, 0, "gates", "move", "deploy");
    facts.drain(pending..pending + 2); // the pending verdict and the refusal
    let early = START.saturating_add(MINUTE).as_millis();
    for fact in &mut facts[pending..] {
        if fact["fact"] == "gates" {
            fact["at"] = json!(early);
            for verdict in fact["verdicts"].as_array_mut().unwrap() {
                verdict["at"] = json!(early);
            }
        }
        if fact["fact"] == "step_ran" {
            fact["report"]["started_at"] = json!(early);
            fact["report"]["finished_at"] = json!(early);
        }
        if fact["fact"] == "moved" {
            fact["at"] = json!(early);
        }
    }
    let error = refused(
        record_of(&bot.on(forged(&facts)), "r1"),
        "deployed one minute into an hour's soak",
    );
    assert!(
        matches!(error, Error::Fact(FactError::Inconsistent { .. })),
        "{error:?}"
    );
}

// ---- the approver renamed to "admin" ----

#[test]
fn an_approver_renamed_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let used = find_fact(&bot.facts(), 0, "approval_used", "release", "r1");
    edit_without_key(&bot.journal, used, |f| replace_strings(f, "rita", "admin"));
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn an_approver_renamed_to_admin_in_the_approval_with_the_key_is_refused_by_the_replay() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    let used = find_fact(&facts, 0, "approval_used", "release", "r1");
    // The approver only, then the approver and the signoff: rita's vote still says rita.
    facts[used]["record"]["approver"] = json!("admin");
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "for approver `admin`",
    );
    replace_strings(&mut facts[used], "rita", "admin");
    assert_replay_refuses(
        record_of(&bot.on(forged(&facts)), "r1"),
        "for approver `admin`",
    );
}

#[test]
fn an_approver_renamed_to_admin_in_the_vote_and_the_approval_with_the_key_is_refused() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    for fact in &mut facts {
        replace_strings(fact, "rita", "admin");
    }
    let error = refused(
        record_of(&bot.on(forged(&facts)), "r1"),
        "admin, whom no rule admits, approved r1",
    );
    assert!(
        matches!(error, Error::Fact(FactError::Inconsistent { .. })),
        "{error:?}"
    );
}

// ---- a copy of an approved release deployed twice on one approval ----

#[test]
fn two_restored_copies_of_an_approved_release_deploy_only_once() {
    let bot = Bot::standard();
    let (approved, artifact) = approved_r1(&bot);
    drop(approved); // the bot restarts, twice
    let first: Release<Approved, Delivery> = restored(&bot.pipeline, "r1").unwrap();
    let second: Release<Approved, Delivery> = restored(&bot.pipeline, "r1").unwrap();
    block_on(first.deploy(&bot.pipeline, &artifact)).expect("the first copy deploys");
    let error = block_on(second.deploy(&bot.pipeline, &artifact)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error:?}");
    assert_eq!(
        bot.restore("r1").unwrap().state(),
        StateName::Deployed,
        "the journal holds one deploy"
    );
    let deploys = bot
        .facts()
        .iter()
        .filter(|f| f["fact"] == "moved" && f["to"] == "deployed")
        .count();
    assert_eq!(deploys, 1);
}

#[test]
fn two_restored_copies_of_a_staged_release_are_approved_only_once() {
    let bot = Bot::standard();
    let (staged, _) = staged_r1(&bot);
    drop(staged);
    // Restored before the vote: see `a_staged_release_restored_after_a_vote_can_be_approved`.
    let first: Release<Staged, Delivery> = restored(&bot.pipeline, "r1").unwrap();
    let second: Release<Staged, Delivery> = restored(&bot.pipeline, "r1").unwrap();
    bot.vote("r1", "rita", Decision::Approve);
    // Two approvals issued from one vote: each is a capability, but the release moves once.
    let one = block_on(bot.pipeline.issue("r1")).unwrap();
    let two = block_on(bot.pipeline.issue("r1")).unwrap();
    block_on(first.approve(&bot.pipeline, one)).expect("the first copy is approved");
    let error = block_on(second.approve(&bot.pipeline, two)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error:?}");
}

#[test]
fn a_staged_release_restored_after_a_vote_can_be_approved() {
    // Not an attack: the bot's own flow. The release is staged, the bot exits, rita votes,
    // the bot restarts, restores the release and approves it with the approval the journal's
    // votes give. A restore that cannot move (a conflict with itself) would leave every
    // restored delivery release stuck once anyone has voted.
    let bot = Bot::standard();
    let (staged, _) = staged_r1(&bot);
    drop(staged);
    bot.vote("r1", "rita", Decision::Approve);
    let restored: Release<Staged, Delivery> = restored(&bot.pipeline, "r1").unwrap();
    let approval = block_on(bot.pipeline.issue("r1")).unwrap();
    let approved = block_on(restored.approve(&bot.pipeline, approval));
    assert!(
        approved.is_ok(),
        "a release restored after a vote cannot be approved: {:?}",
        approved.map_err(|e| e.to_string())
    );
}

/// A future that is ready once `open` is set.
struct Latch(Arc<AtomicBool>);

impl Future for Latch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Polls `future` at most `polls` times, or until `until` holds; its output if it finished.
fn poll_until<F: Future>(
    mut future: Pin<&mut F>,
    polls: usize,
    until: impl Fn() -> bool,
) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if until() {
            return None;
        }
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
    }
    None
}

#[test]
fn a_copy_restored_while_another_deploys_does_not_run_the_deploy_step_again() {
    // The production stage counts its runs and holds until the latch opens: a deploy that
    // takes a while, during which another process restarts and restores the release.
    let runs = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicBool::new(false));
    let (r, o) = (Arc::clone(&runs), Arc::clone(&open));
    let bot = Bot::new(move |c| {
        let (runs, open) = (Arc::clone(&r), Arc::clone(&o));
        let production = from_async_fn(move |_| {
            let (runs, open) = (Arc::clone(&runs), Arc::clone(&open));
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Latch(open).await;
                Ok(StageOutcome::success())
            })
        });
        delivery("shop", c).stages([
            Stage::build("compile").run(compile()),
            Stage::test("unit").after("compile").run(ok()),
            Stage::stage("staging").run(ok()),
            Stage::deploy("production").run(production),
        ])
    });
    let (approved, artifact) = approved_r1(&bot);
    drop(approved);
    let first: Release<Approved, Delivery> = restored(&bot.pipeline, "r1").unwrap();
    let mut first = pin!(first.deploy(&bot.pipeline, &artifact));
    let done = poll_until(first.as_mut(), 1000, || runs.load(Ordering::SeqCst) == 1);
    assert!(done.is_none(), "the first copy is deploying");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Another process restores r1 now: its facts end with the first copy's claim on the
    // deploy move (the gates' verdicts), and nothing after it.
    let outcome = |r: Result<Release<Deployed, Delivery>, _>| -> Result<(), String> {
        r.map(drop)
            .map_err(|e: tollgate::release::MoveError<_, _>| e.to_string())
    };
    let mut second_result = None;
    if let Ok(second) = restored::<Approved, _>(&bot.pipeline, "r1") {
        let mut second = pin!(second.deploy(&bot.pipeline, &artifact));
        second_result =
            poll_until(second.as_mut(), 1000, || runs.load(Ordering::SeqCst) == 2).map(outcome);
        open.store(true, Ordering::SeqCst);
        if second_result.is_none() {
            second_result = Some(outcome(block_on(second.as_mut())));
        }
    }
    open.store(true, Ordering::SeqCst);
    let first_result = outcome(block_on(first.as_mut()));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "production was deployed {} times on one approval (first copy: {first_result:?}, second copy: {second_result:?})",
        runs.load(Ordering::SeqCst),
    );
}

#[test]
fn a_deployed_release_rolled_back_in_the_middle_of_the_journal_is_refused() {
    // r1 deployed; then the bot went on with r2. Someone without the key deletes r1's last
    // three facts (the deploy move's gates, its step, the move): entries in the middle of the
    // journal, which `verify` finds missing.
    let bot = Bot::standard();
    deployed_r1(&bot);
    built(&bot.pipeline, "r2", R2);
    bot.journal.entries_mut(|entries| {
        for _ in 0..3 {
            let last = entries.iter().rposition(|s| s.key == "r1").unwrap();
            entries.remove(last);
        }
    });
    assert!(
        block_on(verify(&bot.journal)).is_err(),
        "verify finds the gap"
    );
    match bot.restore("r1") {
        Err(error) => assert!(
            matches!(error, Error::Fact(FactError::Journal(_))),
            "{error:?}"
        ),
        Ok(any) => {
            let again = deploy_restored(&bot.pipeline, "r1");
            panic!(
                "the attack succeeded (a rollback in the middle of the journal): {}; deploying it again: {:?}",
                describe(&any),
                again.map(|a| a.state())
            );
        }
    }
}

/// A store whose key index lies (a database with a doctored index table, a file journal's
/// index rebuilt by someone else): `lie` edits what a key read gives.
struct LyingIndex {
    journal: SharedJournal,
    lie: Lie,
}

/// How a lying index edits a key read: from the key, the honest answer and the store.
type Lie = fn(&str, Vec<Stored>, &SharedJournal) -> Vec<Stored>;

#[async_trait::async_trait]
impl Journal for LyingIndex {
    async fn append(
        &self,
        entries: Vec<Entry>,
    ) -> Result<tollgate::journal::Seq, tollgate::journal::JournalError> {
        self.journal.append(entries).await
    }
    async fn read(
        &self,
        from: tollgate::journal::Seq,
        limit: usize,
    ) -> Result<Vec<Stored>, tollgate::journal::JournalError> {
        self.journal.read(from, limit).await
    }
    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, tollgate::journal::JournalError> {
        let honest = self.journal.read_key(key).await?;
        Ok((self.lie)(key, honest, &self.journal))
    }
    async fn head(
        &self,
    ) -> Result<
        (tollgate::journal::Seq, tollgate::journal::ChainHash),
        tollgate::journal::JournalError,
    > {
        self.journal.head().await
    }
    fn key(&self) -> &tollgate::journal::ChainKey {
        self.journal.key()
    }
}

#[test]
fn a_key_index_that_leaves_out_adds_or_swaps_entries_is_refused() {
    // r1 deployed, then r2 built after it: r1's facts sit in the middle of the journal, and
    // a restore reads them through the key index.
    let bot = Bot::standard();
    deployed_r1(&bot);
    built(&bot.pipeline, "r2", R2);
    let lies: [(&str, Lie); 5] = [
        (
            "its last entry left out (the deploy undone)",
            |key, mut e, _| {
                if key == "r1" {
                    e.pop();
                }
                e
            },
        ),
        ("its last three entries left out", |key, mut e, _| {
            if key == "r1" {
                e.truncate(e.len() - 3);
            }
            e
        }),
        ("an entry in the middle left out", |key, mut e, _| {
            if key == "r1" {
                e.remove(2);
            }
            e
        }),
        ("its last vote left out", |key, mut e, _| {
            if key == votes_key("r1") {
                e.pop();
            }
            e
        }),
        (
            "another release's entries given for it",
            |key, e, journal| {
                if key == "r1" {
                    journal
                        .entries()
                        .into_iter()
                        .filter(|s| s.key == "r2")
                        .collect()
                } else {
                    e
                }
            },
        ),
    ];
    for (what, lie) in lies {
        let lying = LyingIndex {
            journal: bot.journal.clone(),
            lie,
        };
        let pipeline = standard_delivery(&bot.clock)
            .journal(lying)
            .build()
            .unwrap();
        match record_of(&pipeline, "r1") {
            Err(Error::Fact(FactError::Journal(tollgate::journal::JournalError::Corrupt {
                ..
            }))) => {}
            other => panic!(
                "a key index with {what} must be refused by the chain, got {:?}",
                other.map(|any| describe(&any))
            ),
        }
    }
}

#[test]
fn truncating_the_journals_tail_is_a_rollback_seen_only_against_a_head_kept_outside_the_store() {
    // The chain cannot tell the loss of the newest entries of the whole journal from a
    // journal that never had them (see the journal module's docs): the host keeps the head
    // somewhere the store's writers cannot reach, and compares.
    let bot = Bot::standard();
    deployed_r1(&bot);
    let kept = block_on(bot.journal.head()).unwrap();
    bot.journal.entries_mut(|e| e.truncate(e.len() - 3));
    let now = block_on(verify(&bot.journal)).expect("a truncated chain is still a chain");
    assert_ne!(now, kept, "the kept head reveals the rollback");
    assert!(now.0 < kept.0);
    // What restore gives is a state the release passed through, never one it did not reach.
    if let Ok(any) = bot.restore("r1") {
        assert_eq!(any.state(), StateName::Approved);
    }
}

/// A store whose log lags behind its key index: `read` serves the entries up to `visible`,
/// `read_key` serves them all (an index and a log kept apart, and the log rolled back).
struct LaggingLog {
    inner: SharedJournal,
    visible: u64,
}

#[async_trait::async_trait]
impl Journal for LaggingLog {
    async fn append(&self, entries: Vec<Entry>) -> Result<u64, JournalError> {
        self.inner.append(entries).await
    }
    async fn read(&self, from: u64, limit: usize) -> Result<Vec<Stored>, JournalError> {
        let mut got = self.inner.read(from, limit).await?;
        got.retain(|s| s.seq <= self.visible);
        Ok(got)
    }
    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        self.inner.read_key(key).await
    }
    async fn head(&self) -> Result<(u64, ChainHash), JournalError> {
        self.inner.head().await
    }
    fn key(&self) -> &ChainKey {
        self.inner.key()
    }
}

#[test]
fn a_key_index_naming_an_entry_the_journal_log_lacks_is_refused_and_named() {
    // r1 staged: its last fact is the journal's last entry. A store whose log lost that entry
    // while its index kept it: the release's facts read by key run further than the chain.
    let bot = Bot::standard();
    staged_r1(&bot);
    let head = block_on(bot.journal.head()).unwrap().0;
    let lagging = LaggingLog {
        inner: bot.journal.clone(),
        visible: head - 1,
    };
    let pipeline = (bot.define)(&bot.clock)
        .journal(lagging)
        .build()
        .expect("a valid pipeline");
    match record_of(&pipeline, "r1") {
        Err(Error::Fact(FactError::Journal(JournalError::Corrupt { seq, reason, .. }))) => {
            assert_eq!(seq, head, "the entry after the log's last one: {reason}");
            assert!(reason.contains("does not hold"), "{reason}");
        }
        other => panic!("the attack succeeded (an index beyond the log): {other:?}"),
    }
    // The same store with the log whole restores the release.
    assert_eq!(bot.restore("r1").unwrap().state(), StateName::Staged);
}

// ---- reading several keys at once (a fleet's facts) ----

/// A journal of six entries under keys `a`, `b` and `c`, interleaved: `a b c a b c`.
fn three_keys() -> SharedJournal {
    let journal = SharedJournal::new();
    for round in 1..=2 {
        for key in ["a", "b", "c"] {
            let payload = format!("{key}{round}").into_bytes();
            block_on(journal.append(vec![Entry::new(key, payload)])).unwrap();
        }
    }
    journal
}

#[test]
fn reading_keys_gives_exactly_their_entries_in_journal_order() {
    let journal = three_keys();
    let keys = ["c".to_owned(), "a".to_owned()];
    let read = block_on(read_keys_checked(&journal, &keys)).expect("an honest journal reads");
    let got: Vec<(u64, String, Vec<u8>)> = read
        .into_iter()
        .map(|s| (s.seq, s.key, s.payload))
        .collect();
    assert_eq!(
        got,
        [
            (1, "a".to_owned(), b"a1".to_vec()),
            (3, "c".to_owned(), b"c1".to_vec()),
            (4, "a".to_owned(), b"a2".to_vec()),
            (6, "c".to_owned(), b"c2".to_vec()),
        ],
        "the entries of `a` and `c`, none of `b`, in the journal's order"
    );
}

#[test]
fn a_key_index_that_leaves_out_the_last_entry_of_a_key_read_is_refused() {
    // No later entry of `a` links back to its last one: only the walk over the journal, which
    // meets an entry of `a` that the index did not give, sees it.
    let lying = LyingIndex {
        journal: three_keys(),
        lie: |key, mut e, _| {
            if key == "a" {
                e.pop();
            }
            e
        },
    };
    let keys = ["a".to_owned(), "c".to_owned()];
    match block_on(read_keys_checked(&lying, &keys)) {
        Err(FactError::Journal(JournalError::Corrupt { seq, reason, .. })) => {
            assert_eq!(seq, 4, "the entry left out: {reason}");
            assert!(reason.contains("leaves it out"), "{reason}");
        }
        other => panic!("the attack succeeded (an entry of `a` hidden): {other:?}"),
    }
}

/// A store whose key index comes from another copy of the journal: a fork under the same
/// key (a restored backup of the index table, a second bot's store) whose entries are all
/// genuine but not the log's.
struct ForkedIndex {
    log: SharedJournal,
    index: SharedJournal,
}

#[async_trait::async_trait]
impl Journal for ForkedIndex {
    async fn append(&self, entries: Vec<Entry>) -> Result<u64, JournalError> {
        self.log.append(entries).await
    }
    async fn read(&self, from: u64, limit: usize) -> Result<Vec<Stored>, JournalError> {
        self.log.read(from, limit).await
    }
    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        self.index.read_key(key).await
    }
    async fn head(&self) -> Result<(u64, ChainHash), JournalError> {
        self.log.head().await
    }
    fn key(&self) -> &ChainKey {
        self.log.key()
    }
}

#[test]
fn a_key_index_giving_a_forked_copys_entry_at_a_position_is_refused() {
    // Both copies hold `a b c a b` and then a sixth entry of `c`, with other bytes: each
    // copy's chain is sound, and each entry carries a MAC under the host's key.
    let log = three_keys();
    let fork = SharedJournal::new();
    for stored in log.entries().into_iter().take(5) {
        block_on(fork.append(vec![Entry::new(stored.key, stored.payload)])).unwrap();
    }
    block_on(fork.append(vec![Entry::new("c", b"c2, as the fork has it".to_vec())])).unwrap();
    block_on(verify(&fork)).expect("the fork's own chain is sound");
    let forked = ForkedIndex { log, index: fork };
    let keys = ["c".to_owned()];
    match block_on(read_keys_checked(&forked, &keys)) {
        Err(FactError::Journal(JournalError::Corrupt { seq, reason, .. })) => {
            assert_eq!(seq, 6, "the position the copies differ at: {reason}");
            assert!(reason.contains("another entry"), "{reason}");
        }
        Ok(read) => panic!(
            "the attack succeeded (the fork's entry read as the journal's): {:?}",
            read.iter()
                .map(|s| String::from_utf8_lossy(&s.payload).into_owned())
                .collect::<Vec<_>>()
        ),
        Err(other) => panic!("refused, but not as a corrupt index: {other}"),
    }
}

// ---- an approval that expired 60 days ago ----

#[test]
fn an_approval_that_expired_60_days_ago_does_not_deploy_after_a_restore() {
    let bot = Bot::standard();
    let (approved, _) = approved_r1(&bot);
    drop(approved);
    bot.clock.advance(60 * DAY + DAY);
    let error = deploy_restored(&bot.pipeline, "r1").unwrap_err();
    assert!(
        matches!(error, Error::Approval(ApprovalError::Expired { .. })),
        "{error:?}"
    );
    assert_eq!(bot.restore("r1").unwrap().state(), StateName::Approved);
}

#[test]
fn an_approvals_expiry_extended_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let used = find_fact(&bot.facts(), 0, "approval_used", "release", "r1");
    edit_without_key(&bot.journal, used, |f| {
        f["record"]["expires_at"] = millis(START, 365 * DAY);
    });
    bot.clock.advance(60 * DAY);
    assert_chain_refuses(deploy_restored(&bot.pipeline, "r1"));
}

#[test]
fn an_approvals_expiry_extended_with_the_key_does_not_deploy_60_days_later() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    let used = find_fact(&facts, 0, "approval_used", "release", "r1");
    facts[used]["record"]["expires_at"] = millis(START, 365 * DAY);
    bot.clock.advance(60 * DAY);
    let pipeline = bot.on(forged(&facts));
    match deploy_restored(&pipeline, "r1") {
        Err(error) => assert!(
            matches!(
                error,
                Error::Fact(FactError::Inconsistent { .. })
                    | Error::Approval(ApprovalError::Expired { .. })
            ),
            "{error:?}"
        ),
        Ok(any) => panic!(
            "the attack succeeded (an approval of 24 hours, extended to a year): {}",
            describe(&any)
        ),
    }
}

#[test]
fn a_vote_dated_a_year_ahead_with_the_key_does_not_make_an_approval_that_deploys_months_later() {
    let bot = Bot::standard();
    approved_r1(&bot);
    let mut facts = bot.facts();
    let voted = find_fact(&facts, 0, "voted", "release", "r1");
    let used = find_fact(&facts, 0, "approval_used", "release", "r1");
    let ahead = millis(START, 365 * DAY);
    facts[voted]["vote"]["at"] = ahead.clone();
    let record = &mut facts[used]["record"];
    record["issued_at"] = ahead.clone();
    record["expires_at"] = millis(START, 366 * DAY);
    record["signoffs"][0]["at"] = ahead;
    bot.clock.advance(60 * DAY);
    let pipeline = bot.on(forged(&facts));
    match deploy_restored(&pipeline, "r1") {
        Err(error) => assert!(
            matches!(
                error,
                Error::Fact(FactError::Inconsistent { .. })
                    | Error::Approval(ApprovalError::Expired { .. })
            ),
            "{error:?}"
        ),
        Ok(any) => panic!(
            "the attack succeeded (a vote dated a year ahead): {}",
            describe(&any)
        ),
    }
}

// ---- a second pipeline merely named like the strict one ----

/// A pipeline named like the standard one, in which mallory approves.
fn lax_policy(c: &ManualClock) -> PipelineBuilder<Delivery, WithApprovals> {
    delivery_with("shop", c, ApprovalPolicy::any_of(["mallory"]).unwrap()).stages(standard_stages())
}

#[test]
fn a_look_alike_pipeline_with_a_lax_policy_cannot_hand_its_releases_to_the_strict_one() {
    let journal = SharedJournal::new();
    let lax = Bot::sharing(journal.clone(), lax_policy);
    let strict = Bot::sharing(journal, standard_delivery);
    let (staged, artifact) = staged_r1(&lax);
    lax.vote("r1", "mallory", Decision::Approve);
    let approval = block_on(lax.pipeline.issue("r1")).unwrap();
    let approved = block_on(staged.approve(&lax.pipeline, approval)).unwrap();
    assert_foreign(strict.restore("r1"), "approval policies");
    // Nor can the strict one take a move of the lax one's release.
    let error = block_on(approved.deploy(&strict.pipeline, &artifact)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Release, "{error:?}");
}

#[test]
fn a_look_alike_pipeline_cannot_vote_or_issue_on_the_strict_ones_releases() {
    let journal = SharedJournal::new();
    let strict = Bot::sharing(journal.clone(), standard_delivery);
    let lax = Bot::sharing(journal, lax_policy);
    staged_r1(&strict);
    let vote = block_on(
        lax.pipeline
            .vote("r1", "mallory", Decision::Approve, "fine by me"),
    );
    assert!(
        matches!(vote, Err(Error::Fact(FactError::ForeignPipeline { .. }))),
        "{vote:?}"
    );
    let issued = block_on(lax.pipeline.issue("r1"));
    assert!(
        matches!(issued, Err(Error::Fact(FactError::ForeignPipeline { .. }))),
        "{issued:?}"
    );
    assert!(strict.facts().iter().all(|f| f["fact"] != "voted"));
}

#[test]
fn an_approval_issued_by_a_look_alike_pipeline_is_refused() {
    // Two stores, one release each, identical but for the pipeline's policy.
    let strict = Bot::standard();
    let lax = Bot::new(lax_policy);
    let (staged, _) = staged_r1(&strict);
    staged_r1(&lax);
    lax.vote("r1", "mallory", Decision::Approve);
    let approval = block_on(lax.pipeline.issue("r1")).unwrap();
    let error = block_on(staged.approve(&strict.pipeline, approval)).unwrap_err();
    assert!(
        matches!(
            error.error(),
            Error::Approval(ApprovalError::Mismatch {
                field: "issuer",
                ..
            })
        ),
        "{error:?}"
    );
}

#[test]
fn a_look_alike_pipeline_with_no_op_tests_cannot_hand_its_releases_to_the_strict_one() {
    // The strict pipeline's tests fail for this revision; the look-alike's test stage is a
    // no-op. Same name, same stage ids, same gates, same policy: only the executors differ.
    let journal = SharedJournal::new();
    let strict = Bot::sharing(journal.clone(), |c| {
        delivery("shop", c).stages(stages_testing_with(failing("3 tests failed")))
    });
    let lax = Bot::sharing(journal, |c| {
        delivery("shop", c).stages(stages_testing_with(ok()))
    });
    let (built, artifact) = built(&lax.pipeline, "r1", R1);
    block_on(built.test(&lax.pipeline, &artifact)).expect("the no-op tests pass");
    match strict.restore("r1") {
        Err(error) => assert!(
            matches!(error, Error::Fact(FactError::ForeignPipeline { .. })),
            "{error:?}"
        ),
        Ok(any) => {
            let staged = restored::<Tested, _>(&strict.pipeline, "r1")
                .and_then(|t| Ok(block_on(t.stage(&strict.pipeline, &artifact))?));
            panic!(
                "the attack succeeded (tests run by a look-alike's no-op executor): {}; the strict pipeline then stages it: {:?}",
                describe(&any),
                staged.map(|s| s.state())
            );
        }
    }
}

// ---- facts of one release filed under another release's key ----

/// `r1` staged and `r2` (another revision, another artifact) approved by rita.
fn two_releases() -> Bot {
    let bot = Bot::standard();
    staged_r1(&bot);
    let (staged, _) = staged(&bot.pipeline, "r2", R2);
    bot.vote("r2", "rita", Decision::Approve);
    let approval = block_on(bot.pipeline.issue("r2")).unwrap();
    block_on(staged.approve(&bot.pipeline, approval)).unwrap();
    bot
}

#[test]
fn facts_refiled_under_another_release_without_the_key_are_refused_by_the_chain() {
    let bot = two_releases();
    // r2's approval facts (the gates, the approval's use, the move) re-filed under r1, each
    // linked to r1's previous entry.
    bot.journal.entries_mut(|entries| {
        let mut last_r1 = entries.iter().rfind(|s| s.key == "r1").unwrap().seq;
        let count = entries.len();
        for stored in &mut entries[count - 3..] {
            assert_eq!(stored.key, "r2");
            stored.key = "r1".to_owned();
            stored.key_prev = last_r1;
            last_r1 = stored.seq;
        }
    });
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn facts_of_another_release_filed_under_its_key_with_the_key_are_refused() {
    let bot = two_releases();
    let forgery = forged(&bot.facts());
    let stolen: Vec<Entry> = bot
        .journal
        .entries()
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|s| Entry::new("r1", s.payload.clone()))
        .collect();
    block_on(forgery.append(stolen)).unwrap();
    let result = record_of(&bot.on(forgery), "r1");
    assert!(
        matches!(result, Err(Error::Fact(FactError::Malformed { .. }))),
        "{result:?}"
    );
}

#[test]
fn facts_of_another_release_rewritten_as_its_own_with_the_key_are_refused_by_the_replay() {
    let bot = two_releases();
    let mut facts = bot.facts();
    // r2's vote and approval, rewritten to be about r1, after r1's own facts.
    let mut stolen = approval_facts_of(&facts, "r2");
    for fact in &mut stolen {
        replace_strings(fact, "r2", "r1");
    }
    facts.extend(stolen);
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "another request");
}

/// The vote and approval facts of release `id`.
fn approval_facts_of(facts: &[Value], id: &str) -> Vec<Value> {
    facts
        .iter()
        .filter(|f| {
            f["release"] == id
                && (f["fact"] == "voted"
                    || f["fact"] == "approval_used"
                    || (f["fact"] == "gates" && f["move"] == "approve")
                    || (f["fact"] == "moved" && f["to"] == "approved"))
        })
        .cloned()
        .collect()
}

// ---- ballots: votes added, rejections deleted ----

#[test]
fn a_vote_added_without_the_key_is_refused_by_the_chain() {
    let twin = Bot::standard();
    approved_r1(&twin);
    let vote = twin.facts()[find_fact(&twin.facts(), 0, "voted", "release", "r1")].clone();
    let bot = Bot::standard();
    staged_r1(&bot);
    append_without_key(&bot.journal, &[vote]);
    assert_chain_refuses(block_on(bot.pipeline.ballot("r1")));
    assert_chain_refuses(block_on(bot.pipeline.issue("r1")));
}

#[test]
fn a_rejection_deleted_before_another_vote_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::standard();
    staged_r1(&bot);
    bot.vote("r1", "sam", Decision::Reject);
    bot.vote("r1", "rita", Decision::Approve);
    bot.journal.entries_mut(|entries| {
        let rejection = entries
            .iter()
            .position(|s| s.key == votes_key("r1"))
            .unwrap();
        entries.remove(rejection);
    });
    assert_chain_refuses(block_on(bot.pipeline.issue("r1")));
}

#[test]
fn the_last_rejection_deleted_from_the_middle_of_the_journal_does_not_let_the_approval_through() {
    // rita approves, sam rejects (a rejection blocks the approval), then the bot goes on
    // with r2. Someone without the key deletes sam's rejection: the last vote on r1, but not
    // the journal's last entry, so `verify` finds it missing.
    let bot = Bot::standard();
    let (staged, _) = staged_r1(&bot);
    bot.vote("r1", "rita", Decision::Approve);
    bot.vote("r1", "sam", Decision::Reject);
    let blocked = block_on(bot.pipeline.issue("r1")).unwrap_err();
    assert!(
        matches!(blocked, Error::Approval(ApprovalError::Rejected { .. })),
        "{blocked:?}"
    );
    built(&bot.pipeline, "r2", R2);
    bot.journal.entries_mut(|entries| {
        let rejection = entries
            .iter()
            .rposition(|s| s.key == votes_key("r1"))
            .unwrap();
        entries.remove(rejection);
    });
    assert!(
        block_on(verify(&bot.journal)).is_err(),
        "verify finds the gap"
    );
    match block_on(bot.pipeline.issue("r1")) {
        Err(error) => assert!(
            matches!(error, Error::Fact(FactError::Journal(_))),
            "{error:?}"
        ),
        Ok(approval) => {
            let approved = block_on(staged.approve(&bot.pipeline, approval)).map(|a| a.state());
            panic!(
                "the attack succeeded (sam's rejection deleted): an approval was issued; approving r1 with it: {approved:?}"
            );
        }
    }
}

// ---- the store's entries moved, replayed, forged ----

#[test]
fn two_entries_of_a_release_swapped_without_the_key_are_refused_by_the_chain() {
    let bot = Bot::standard();
    deployed_r1(&bot);
    let facts = bot.facts();
    let gates = find_fact(&facts, 0, "gates", "move", "deploy");
    // The deploy step's report and its move, swapped; then the gates and the move.
    bot.journal.entries_mut(|e| e.swap(gates + 1, gates + 2));
    assert_chain_refuses(bot.restore("r1"));
    bot.journal.entries_mut(|e| e.swap(gates + 1, gates + 2));
    bot.restore("r1")
        .expect("swapped back, the journal is whole again");
    bot.journal.entries_mut(|e| {
        let (a, b) = (e[gates].seq, e[gates + 2].seq);
        e.swap(gates, gates + 2);
        // Renumbered to look in order: the MACs no longer fit.
        e[gates].seq = a;
        e[gates + 2].seq = b;
    });
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn an_old_entry_replayed_at_the_end_without_the_key_is_refused_by_the_chain() {
    let bot = Bot::standard();
    approved_r1(&bot);
    // The move to Approved, stored again at the end (with its MAC as it was).
    let moved = find_fact(&bot.facts(), 0, "moved", "to", "approved");
    bot.journal.entries_mut(|e| {
        let copy = e[moved].clone();
        e.push(copy);
    });
    assert_chain_refuses(bot.restore("r1"));
}

#[test]
fn a_journal_written_under_another_key_is_refused_by_the_chain() {
    // Another bot's journal (another host, another secret), copied into this bot's store.
    let other = Bot::sharing(
        SharedJournal::with_key(tollgate::journal::ChainKey::derive(b"another host")),
        standard_delivery,
    );
    deployed_r1(&other);
    let bot = Bot::standard();
    bot.journal.entries_mut(|e| *e = other.journal.entries());
    assert_chain_refuses(bot.restore("r1"));
}

// ---- histories the pipeline never writes, written with the key ----

#[test]
fn a_move_past_a_state_the_release_never_reached_is_refused_by_the_replay() {
    let bot = Bot::standard();
    staged_r1(&bot);
    let mut facts = bot.facts();
    facts
        .push(json!({"fact": "moved", "release": "r1", "to": "deployed", "at": START.as_millis()}));
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "out of turn");
}

#[test]
fn a_release_started_a_second_time_is_refused_by_the_replay() {
    let bot = Bot::standard();
    staged_r1(&bot);
    let mut facts = bot.facts();
    facts.push(facts[0].clone());
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "a second time");
}

#[test]
fn a_vote_recorded_before_the_release_was_staged_is_refused_by_the_replay() {
    let twin = Bot::standard();
    approved_r1(&twin);
    let vote = twin.facts()[find_fact(&twin.facts(), 0, "voted", "release", "r1")].clone();
    let bot = Bot::standard();
    built(&bot.pipeline, "r1", R1);
    let mut facts = bot.facts();
    facts.push(vote);
    assert_replay_refuses(record_of(&bot.on(forged(&facts)), "r1"), "vote");
}

#[test]
fn a_move_dated_back_in_time_does_not_set_the_releases_clock_back() {
    // The move to Approved dated a day before the release started: were it taken as it is, a
    // soak on the deploy move would count from then.
    let bot = Bot::new(|c| standard_delivery(c).gate(Move::Deploy, gate::soak(HOUR)));
    approved_r1(&bot);
    let mut facts = bot.facts();
    let moved = find_fact(&facts, 0, "moved", "to", "approved");
    facts[moved]["at"] = json!(START.as_millis() - DAY.as_millis() as u64);
    let pipeline = bot.on(forged(&facts));
    match record_of(&pipeline, "r1") {
        Err(error) => assert!(
            matches!(error, Error::Fact(FactError::Inconsistent { .. })),
            "{error:?}"
        ),
        Ok(any) => {
            assert!(any.entered_at() >= START, "{}", any.entered_at());
            let early = deploy_restored(&pipeline, "r1").unwrap_err();
            assert_eq!(early.kind(), ErrorKind::GatePending, "{early:?}");
        }
    }
}

// ---- the store rolled back to an older copy ----

/// The one attack the chain cannot see (the journal's newest entries gone: a chain that
/// holds, only shorter) is refused once the bot keeps its journal's head elsewhere.
#[test]
fn a_store_rolled_back_to_before_the_deploy_is_refused_when_its_head_is_witnessed() {
    let clock = clock();
    let store = SharedJournal::new();
    // The head is kept by a witness the store's writers cannot reach (another disk, host).
    let witness = Arc::new(MemoryWitness::default());
    let journal = block_on(Witnessed::new(store.clone(), Arc::clone(&witness))).unwrap();
    let pipeline = standard_delivery(&clock).journal(journal).build().unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", R1);
    let at_staged = store.entries();
    let approval = block_on(pipeline.sign_off("r1", "rita", "ok")).unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    block_on(approved.deploy(&pipeline, &artifact)).expect("deployed");
    assert_eq!(
        block_on(witness.last()).unwrap(),
        Some(block_on(Head::of(&store)).unwrap()),
        "every append had its head witnessed"
    );

    // Someone puts back the copy of the store taken while r1 was staged.
    store.entries_mut(|entries| *entries = at_staged.clone());
    let unwitnessed = standard_delivery(&clock)
        .journal(store.clone())
        .build()
        .unwrap();
    assert_eq!(
        record_of(&unwitnessed, "r1").unwrap().state(),
        StateName::Staged,
        "the chain alone cannot tell a rollback"
    );
    // The running bot refuses the store at once, and the next one refuses to start on it.
    let behind = |error: &Error| {
        matches!(
            error,
            Error::Fact(FactError::Journal(JournalError::Behind { head, .. }))
                if *head == at_staged.len() as u64
        )
    };
    let refused = record_of(&pipeline, "r1").unwrap_err();
    assert!(behind(&refused), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Journal);
    let refused = block_on(pipeline.vote("r1", "sam", Decision::Approve, "again")).unwrap_err();
    assert!(behind(&refused), "{refused}");
    let restarted = block_on(Witnessed::new(store.clone(), witness)).unwrap_err();
    assert!(
        matches!(restarted, JournalError::Behind { head, .. } if head == at_staged.len() as u64),
        "{restarted}"
    );
}

// ---- properties: random tampering of a full delivery history ----

/// What a restore of a release says that matters to trust: the state, the artifact, the
/// approval.
type Outcome = (StateName, Option<ArtifactRef>, Option<ApprovalRecord>);

fn outcome(any: &AnyRelease) -> Outcome {
    (
        any.state(),
        any.artifact().cloned(),
        any.approval().cloned(),
    )
}

/// The pipeline of the full history: the standard stages with a unit test that fails the
/// first time it runs for `r1`'s revision, and a 30-minute soak on the approve move.
fn full_history_pipeline(clock: &ManualClock) -> PipelineBuilder<Delivery, WithApprovals> {
    let failed_once = Arc::new(AtomicBool::new(false));
    let flaky = tollgate::executor::from_fn(move |ctx| {
        if ctx.revision() == R1 && !failed_once.swap(true, Ordering::SeqCst) {
            Ok(StageOutcome::failure("flaky: connection reset"))
        } else {
            Ok(StageOutcome::success())
        }
    });
    delivery("shop", clock)
        .stages([
            Stage::build("compile").run(compile()),
            Stage::test("unit").after("compile").run(flaky),
            Stage::test("lint").after("compile").run(ok()),
            Stage::stage("staging").run(ok()),
            Stage::stage("acceptance").after("staging").run(ok()),
            Stage::deploy("production").run(ok()),
        ])
        .gate(Move::Approve, gate::soak(30 * MINUTE))
}

/// The true history, and what a restore of each release gives at each of its prefixes.
struct TrueHistory {
    entries: Vec<Stored>,
    /// Per release (`r1`, `r2`): the outcomes of restoring it from every prefix of the
    /// journal from which it restores.
    prefixes: Vec<(&'static str, Vec<Outcome>)>,
}

/// Two interleaved releases: `r1` built, tested (a failed try first), staged, rejected by
/// sam, approved by sam an hour later, and deployed; `r2` built, tested, staged, approved by
/// rita after a first try that found the soak pending. Every kind of fact is there.
fn true_history() -> &'static TrueHistory {
    static HISTORY: OnceLock<TrueHistory> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let bot = Bot::new(full_history_pipeline);
        let p = &bot.pipeline;
        block_on(async {
            let r1 = p.start("r1", revision(R1)).unwrap().build(p).await.unwrap();
            let r2 = p.start("r2", revision(R2)).unwrap().build(p).await.unwrap();
            let (a1, a2) = (r1.artifact().clone(), r2.artifact().clone());
            let r1 = r1.test(p, &a1).await.unwrap_err().into_release();
            let r1 = r1.test(p, &a1).await.unwrap();
            bot.clock.advance(5 * MINUTE);
            let r2 = r2.test(p, &a2).await.unwrap();
            let r1 = r1.stage(p, &a1).await.unwrap();
            p.vote("r1", "sam", Decision::Reject, "changelog missing")
                .await
                .unwrap();
            bot.clock.advance(HOUR);
            p.vote("r1", "sam", Decision::Approve, "changelog added")
                .await
                .unwrap();
            let r1 = r1.approve(p, p.issue("r1").await.unwrap()).await.unwrap();
            let r2 = r2.stage(p, &a2).await.unwrap();
            p.vote("r2", "rita", Decision::Approve, "ok").await.unwrap();
            let mut early = r2
                .approve(p, p.issue("r2").await.unwrap())
                .await
                .unwrap_err();
            assert_eq!(early.kind(), ErrorKind::GatePending);
            let approval = early.take_approval().unwrap();
            r1.deploy(p, &a1).await.unwrap();
            bot.clock.advance(40 * MINUTE);
            early.into_release().approve(p, approval).await.unwrap();
        });
        let entries = bot.journal.entries();
        let prefixes = ["r1", "r2"]
            .into_iter()
            .map(|id| {
                let mut outcomes: Vec<Outcome> = Vec::new();
                for k in 0..=entries.len() {
                    let prefix = SharedJournal::holding(chain_key(), entries[..k].to_vec());
                    if let Ok(any) = record_of(&bot.on(prefix), id) {
                        let o = outcome(&any);
                        if !outcomes.contains(&o) {
                            outcomes.push(o);
                        }
                    }
                }
                (id, outcomes)
            })
            .collect();
        let history = TrueHistory { entries, prefixes };
        let (_, r1) = &history.prefixes[0];
        assert_eq!(r1.last().unwrap().0, StateName::Deployed);
        history
    })
}

/// One edit of a store.
#[derive(Debug, Clone)]
enum Edit {
    /// Flip bit `bit` of byte `byte` of entry `entry`'s payload.
    FlipBit { entry: usize, byte: usize, bit: u8 },
    /// Delete entry `entry`.
    Delete { entry: usize },
    /// Swap entries `a` and `b`.
    Swap { a: usize, b: usize },
    /// Store a copy of entry `entry` before entry `to`.
    Duplicate { entry: usize, to: usize },
    /// Drop the last `count` entries.
    Truncate { count: usize },
    /// Edit node `node` (in document order) of entry `entry`'s JSON with mutation `how`, and
    /// serialize it again.
    Json {
        entry: usize,
        node: usize,
        how: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), 0u8..8).prop_map(|(entry, byte, bit)| Edit::FlipBit {
            entry,
            byte,
            bit
        }),
        any::<usize>().prop_map(|entry| Edit::Delete { entry }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap { a, b }),
        (any::<usize>(), any::<usize>()).prop_map(|(entry, to)| Edit::Duplicate { entry, to }),
        (1usize..6).prop_map(|count| Edit::Truncate { count }),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(entry, node, how)| Edit::Json { entry, node, how }),
        // JSON edits are the subtle ones: weigh them up.
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(entry, node, how)| Edit::Json { entry, node, how }),
    ]
}

/// Strings a JSON edit puts in place of a string: names, states, outcomes, digests that mean
/// something to a release.
fn strings() -> Vec<String> {
    [
        "rita",
        "sam",
        "dana",
        "mallory",
        "admin",
        "approve",
        "reject",
        "succeeded",
        "failed",
        "built",
        "tested",
        "staged",
        "approved",
        "deployed",
        "delivery",
        "deployment",
        "build",
        "test",
        "stage",
        "deploy",
        "production",
        "staging",
        "shop",
        "r1",
        "r2",
        "unit",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        artifact_for(R1).digest.to_string(),
        artifact_for(R2).digest.to_string(),
        artifact_for("evil").digest.to_string(),
    ])
    .collect()
}

/// Every node of `value` below the root, as JSON pointers, in document order.
fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, item) in fields {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(here.clone());
                pointers(item, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let here = format!("{at}/{i}");
                out.push(here.clone());
                pointers(item, &here, out);
            }
        }
        _ => {}
    }
}

/// Mutates `node` by `how`: another string, a time moved by a millisecond, a day or 60 days
/// either way, a flipped flag, an element or a field removed, an element repeated.
fn mutate(node: &mut Value, how: usize) {
    const DAY_MS: i128 = 86_400_000;
    match node {
        Value::String(s) => {
            let pool = strings();
            s.clone_from(&pool[how % pool.len()]);
        }
        Value::Number(n) => {
            let deltas = [1, -1, DAY_MS, -DAY_MS, 60 * DAY_MS, 365 * DAY_MS, 0];
            let old = i128::from(n.as_u64().unwrap_or(0));
            let new = if deltas[how % deltas.len()] == 0 {
                0
            } else {
                (old + deltas[how % deltas.len()]).max(0)
            };
            *node = json!(u64::try_from(new).unwrap_or(u64::MAX));
        }
        Value::Bool(b) => *b = !*b,
        Value::Array(items) if !items.is_empty() => {
            if how % 2 == 0 {
                items.remove(how / 2 % items.len());
            } else {
                let copy = items[how / 2 % items.len()].clone();
                items.push(copy);
            }
        }
        Value::Object(fields) if !fields.is_empty() => {
            let key = fields.keys().nth(how % fields.len()).unwrap().clone();
            fields.remove(&key);
        }
        other => *other = json!(0),
    }
}

/// Applies `edits` to `entries` (indices taken modulo the length at the time).
fn tamper(entries: &mut Vec<Stored>, edits: &[Edit]) {
    for edit in edits {
        let n = entries.len();
        if n == 0 {
            return;
        }
        match *edit {
            Edit::FlipBit { entry, byte, bit } => {
                let payload = &mut entries[entry % n].payload;
                if !payload.is_empty() {
                    let i = byte % payload.len();
                    payload[i] ^= 1 << bit;
                }
            }
            Edit::Delete { entry } => {
                entries.remove(entry % n);
            }
            Edit::Swap { a, b } => entries.swap(a % n, b % n),
            Edit::Duplicate { entry, to } => {
                let copy = entries[entry % n].clone();
                entries.insert(to % (n + 1), copy);
            }
            Edit::Truncate { count } => entries.truncate(n.saturating_sub(count)),
            Edit::Json { entry, node, how } => {
                let stored = &mut entries[entry % n];
                let Ok(mut value) = serde_json::from_slice::<Value>(&stored.payload) else {
                    continue;
                };
                let mut nodes = Vec::new();
                pointers(&value, "", &mut nodes);
                if nodes.is_empty() {
                    continue;
                }
                if let Some(target) = value.pointer_mut(&nodes[node % nodes.len()]) {
                    mutate(target, how);
                }
                stored.payload = serde_json::to_vec(&value).unwrap();
            }
        }
    }
}

/// The tampered entries as a store: as edited (without the key), or chained again under the
/// key from the first entry on (with it).
fn store(entries: Vec<Stored>, with_key: bool) -> SharedJournal {
    if !with_key {
        return SharedJournal::holding(chain_key(), entries);
    }
    let journal = SharedJournal::new();
    let entries = entries
        .into_iter()
        .map(|s| Entry::new(s.key, s.payload))
        .collect();
    block_on(journal.append(entries)).unwrap();
    journal
}

/// Checks that each release restores from `journal` with an error, or with an outcome one
/// of its true prefixes has.
fn check_restores(journal: &SharedJournal) -> Result<(), TestCaseError> {
    let history = true_history();
    let pipeline = full_history_pipeline(&clock())
        .journal(journal.clone())
        .build()
        .unwrap();
    for (id, prefixes) in &history.prefixes {
        if let Ok(any) = record_of(&pipeline, id) {
            prop_assert!(
                prefixes.contains(&outcome(&any)),
                "the tampered journal restores {} which no prefix of the true history gives",
                describe(&any)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Without the key, every edit of the store is refused by the chain, except the loss of
    /// the newest entries of a release (a truncated tail, or a release's last entries deleted
    /// from the middle of the journal): a rollback, which restores a state the release really
    /// passed through. So a restore errs, or gives what some prefix of the true history gives.
    #[test]
    fn random_tampering_without_the_key_restores_nothing_the_true_history_did_not_pass_through(
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let mut entries = true_history().entries.clone();
        tamper(&mut entries, &edits);
        check_restores(&store(entries, false))?;
    }

    /// With the key, the same edits chained again: whatever the replay accepts must still be
    /// a state, an artifact and an approval that some prefix of the true history has (an
    /// edit that makes another consistent history is possible in principle, but none of the
    /// release's trust-bearing parts may come out different).
    #[test]
    fn random_tampering_with_the_key_restores_nothing_the_true_history_did_not_pass_through(
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let mut entries = true_history().entries.clone();
        tamper(&mut entries, &edits);
        check_restores(&store(entries, true))?;
    }
}

#[test]
fn the_true_history_restores_to_itself_and_its_prefixes_only_go_forward() {
    let history = true_history();
    check_restores(&store(history.entries.clone(), false)).unwrap();
    check_restores(&store(history.entries.clone(), true)).unwrap();
    for (id, outcomes) in &history.prefixes {
        let states: Vec<StateName> = outcomes.iter().map(|o| o.0).collect();
        assert!(states.windows(2).all(|w| w[0] <= w[1]), "{id}: {states:?}");
    }
    // Every kind of fact is in it.
    let kinds: std::collections::BTreeSet<String> = history
        .entries
        .iter()
        .map(|s| {
            let fact: Fact = Fact::from_stored(s).unwrap();
            serde_json::to_value(&fact).unwrap()["fact"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "approval_used",
            "gates",
            "moved",
            "refused",
            "stage_finished",
            "started",
            "step_ran",
            "voted"
        ]
    );
}
