//! A move cut off mid-step (the bot killed while a stage runs: the move's future dropped, the
//! journal keeping what was appended) resumes where it stopped: a restored release carries
//! the stages that finished, running the move again runs only the others, and each attempt's
//! idempotency key is the one the cut-off run gave it. Forged stage facts are refused by the
//! replay, and a property test crashes random graphs after random numbers of stages.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use tollgate::engine::StageReport;
use tollgate::executor::{ExecutorError, StageContext, from_async_fn, idempotency_key};
use tollgate::fact::FactError;
use tollgate::graph::Step;
use tollgate::id::{ReleaseId, StageId};
use tollgate::journal::{ChainHash, ChainKey, Entry, Journal, JournalError, Seq, Stored};
use tollgate::prelude::*;
use tollgate::release::{Restored, StateName};
use tollgate::time::ManualClock;

use crate::HOUR;
use crate::support::{
    SharedJournal, artifact_for, assert_replay_refuses, block_on, clock, compile, deployment,
    fact_values, forged, poll_at_most, revision, stages_after_build, yield_now,
};

// ---- executors that remember what they were asked to do ----

/// One call of a recording executor: the stage, its attempt's idempotency key, and the
/// outputs of its dependencies it was handed (`stage.key`), as it saw them.
#[derive(Debug, Clone)]
struct Call {
    stage: String,
    key: String,
    inputs: BTreeMap<String, String>,
    /// Whether the executor returned (it succeeded: these executors never fail).
    returned: bool,
}

/// Every call of the recording executors of one test, across every pipeline value (every
/// "process" of the bot) built on it, and the stages that hang when called now.
#[derive(Debug, Clone, Default)]
struct Calls {
    calls: Arc<Mutex<Vec<Call>>>,
    hanging: Arc<Mutex<BTreeSet<String>>>,
}

impl Calls {
    fn all(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// From now on, the stages `stages` (and no others) hang forever when called.
    fn hang(&self, stages: &[&str]) {
        *self.hanging.lock().unwrap_or_else(PoisonError::into_inner) =
            stages.iter().map(|&s| s.to_owned()).collect();
    }

    fn hangs(&self, stage: &str) -> bool {
        self.hanging
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(stage)
    }

    /// The stages called, in order.
    fn stages(&self) -> Vec<String> {
        self.all().into_iter().map(|c| c.stage).collect()
    }

    /// How often each stage was called, and how often it returned.
    fn counts(&self) -> BTreeMap<String, (usize, usize)> {
        let mut counts = BTreeMap::new();
        for call in self.all() {
            let entry = counts.entry(call.stage).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += usize::from(call.returned);
        }
        counts
    }

    /// The calls of `stage`, in order.
    fn of(&self, stage: &str) -> Vec<Call> {
        self.all()
            .into_iter()
            .filter(|c| c.stage == stage)
            .collect()
    }

    /// Records the start of a call; returns its index.
    fn start(&self, ctx: &StageContext<'_>) -> usize {
        let inputs = ctx
            .inputs()
            .flat_map(|(id, outputs)| {
                outputs
                    .iter()
                    .map(move |(k, v)| (format!("{id}.{k}"), v.clone()))
            })
            .collect();
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.push(Call {
            stage: ctx.stage().to_string(),
            key: ctx.idempotency_key().to_owned(),
            inputs,
            returned: false,
        });
        calls.len() - 1
    }

    fn returned(&self, index: usize) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)[index].returned = true;
    }
}

/// An executor that records its call in `calls`, yields `yields` times (so that it is not
/// done the moment it starts), hangs forever if `calls` says its stage hangs, and returns
/// what `body` says.
fn recording<F>(calls: &Calls, yields: usize, body: F) -> impl Executor + use<F>
where
    F: Fn(&StageContext<'_>) -> StageOutcome + Send + Sync + 'static,
{
    let calls = calls.clone();
    let body = Arc::new(body);
    from_async_fn(move |ctx| {
        let calls = calls.clone();
        let body = Arc::clone(&body);
        Box::pin(async move {
            let call = calls.start(&ctx);
            for _ in 0..yields {
                yield_now().await;
            }
            if calls.hangs(ctx.stage().as_str()) {
                // The stage that is running when the bot is killed.
                std::future::pending::<()>().await;
            }
            let outcome = body(&ctx);
            calls.returned(call);
            Ok::<_, ExecutorError>(outcome)
        })
    })
}

/// The outputs a stage of the five-stage build hands on: its name and what it was handed.
fn echo(ctx: &StageContext<'_>) -> StageOutcome {
    let mut seen: Vec<String> = ctx
        .inputs()
        .filter_map(|(id, outputs)| outputs.get("made").map(|v| format!("{id}:{v}")))
        .collect();
    seen.sort();
    StageOutcome::success().output("made", format!("{}({})", ctx.stage(), seen.join(",")))
}

/// `compile`'s body: [`echo`], and the artifact built from the revision.
fn compiled(ctx: &StageContext<'_>) -> StageOutcome {
    echo(ctx).artifact(artifact_for(ctx.revision()))
}

/// A deployment pipeline `shop` on `journal` whose build step has five stages in a chain,
/// `fetch` → `compile` (the artifact) → `package` → `sign` → `publish`, each recording its
/// calls in `calls`. Built anew for each "process" of the bot: every value has the same
/// definition.
fn five_stage_build(
    clock: &ManualClock,
    journal: &SharedJournal,
    calls: &Calls,
) -> Pipeline<Deployment> {
    deployment("shop", clock)
        .stages(stages_after_build([
            Stage::build("fetch").run(recording(calls, 1, echo)),
            Stage::build("compile")
                .after("fetch")
                .run(recording(calls, 1, compiled)),
            Stage::build("package")
                .after("compile")
                .run(recording(calls, 1, echo)),
            Stage::build("sign")
                .after("package")
                .run(recording(calls, 1, echo)),
            Stage::build("publish")
                .after("sign")
                .run(recording(calls, 1, echo)),
        ]))
        .journal(journal.clone())
        .build()
        .expect("the five-stage pipeline is valid")
}

/// The bot killed in the middle of a build: release `r1` started, its build run until
/// `package` hangs, and the move's future dropped. The journal keeps what was appended.
struct Crashed {
    clock: ManualClock,
    journal: SharedJournal,
    calls: Calls,
}

impl Crashed {
    fn new() -> Self {
        let crashed = Crashed {
            clock: clock(),
            journal: SharedJournal::new(),
            calls: Calls::default(),
        };
        crashed.calls.hang(&["package"]);
        let bot = crashed.pipeline();
        let fresh = bot.start("r1", revision("aaa")).expect("valid release id");
        assert!(
            poll_at_most(fresh.build(&bot), 100).is_none(),
            "the build hangs in `package`"
        );
        // Nothing hangs in the next process.
        crashed.calls.hang(&[]);
        crashed
    }

    /// A pipeline value of the bot's definition on the crashed journal: the next process.
    fn pipeline(&self) -> Pipeline<Deployment> {
        five_stage_build(&self.clock, &self.journal, &self.calls)
    }

    /// The facts of the crashed journal, as JSON.
    fn facts(&self) -> Vec<Value> {
        fact_values(&self.journal)
    }

    /// Restores `r1` in a new process after the claim's lease.
    fn restart(&self) -> (Pipeline<Deployment>, Release<Commit, Deployment>) {
        self.clock.advance(HOUR);
        let bot = self.pipeline();
        let restored = block_on(bot.restore("r1")).expect("a cut-off move restores");
        (bot, restored.try_into().expect("still at Commit"))
    }
}

/// The kind of each fact.
fn kinds(facts: &[Value]) -> Vec<&str> {
    facts.iter().map(|f| f["fact"].as_str().unwrap()).collect()
}

/// The stage ids of `reports`.
fn ids(reports: &[StageReport]) -> Vec<&str> {
    reports.iter().map(|s| s.id.as_str()).collect()
}

fn release_id() -> ReleaseId {
    ReleaseId::new("r1").unwrap()
}

fn stage_id(id: &str) -> StageId {
    StageId::new(id).unwrap()
}

/// The journal position of the first `gates` fact: the claim that opened the build's run.
fn first_claim(facts: &[Value]) -> Seq {
    facts.iter().position(|f| f["fact"] == "gates").unwrap() as Seq + 1
}

// ---- the crash and the resumed move ----

#[test]
fn a_build_cut_off_mid_step_resumes_and_runs_only_its_unfinished_stages() {
    let crashed = Crashed::new();
    assert_eq!(crashed.calls.stages(), ["fetch", "compile", "package"]);
    let facts = crashed.facts();
    assert_eq!(
        kinds(&facts),
        ["started", "gates", "stage_finished", "stage_finished"],
        "the claim and the two stages that finished are in the journal"
    );
    let claim = first_claim(&facts);
    let hung_key = crashed.calls.of("package")[0].key.clone();
    assert_eq!(
        hung_key,
        idempotency_key(&release_id(), Step::Build, &stage_id("package"), claim, 1)
    );

    // The bot restarts: a new pipeline value of the same definition on the same journal.
    let bot = crashed.pipeline();
    let restored = block_on(bot.restore("r1")).expect("a cut-off move restores");
    assert_eq!(restored.state(), StateName::Commit);
    assert_eq!(restored.interrupted(), Some(Move::Build));
    assert_eq!(ids(restored.finished_stages()), ["fetch", "compile"]);
    let finished = restored.finished_stages().to_vec();
    let fresh = Release::<Commit, Deployment>::try_from(restored).unwrap();

    // Within the claim's lease the crashed copy may still be running: the move waits.
    let early = block_on(fresh.build(&bot)).unwrap_err();
    assert!(
        matches!(
            early.error(),
            Error::Fact(FactError::Claimed {
                mv: Move::Build,
                ..
            })
        ),
        "{:?}",
        early.error()
    );
    crashed.clock.advance(HOUR);
    let built = block_on(early.into_release().build(&bot)).expect("the resumed build succeeds");

    // The finished stages ran once, the rest ran now; `package` twice (it was running).
    let counts = crashed.calls.counts();
    let runs: Vec<(&str, usize)> = counts.iter().map(|(s, c)| (s.as_str(), c.0)).collect();
    assert_eq!(
        runs,
        [
            ("compile", 1),
            ("fetch", 1),
            ("package", 2),
            ("publish", 1),
            ("sign", 1)
        ]
    );
    // The artifact a finished stage reported is the release's, and its outputs reached
    // `package` in the new process.
    assert_eq!(built.artifact(), &artifact_for("aaa"));
    let package = crashed.calls.of("package");
    assert_eq!(
        package[1].inputs["compile.made"], "compile(fetch:fetch())",
        "the outputs of a stage finished before the crash reach its dependents"
    );
    assert_eq!(package[0].inputs, package[1].inputs);
    // The same attempt of the same run: the same key, so `package` can tell it is a retry.
    assert_eq!(package[1].key, hung_key);

    // The step's report holds the finished stages as they were, and every stage.
    let report = &built.record().steps()[0];
    assert!(report.succeeded());
    assert_eq!(
        ids(&report.stages),
        ["fetch", "compile", "package", "sign", "publish"]
    );
    assert_eq!(report.stages[..2], finished[..]);
    assert_eq!(
        report.stage("publish").unwrap().outputs["made"],
        "publish(sign:sign(package:package(compile:compile(fetch:fetch()))))"
    );

    // Every stage's end is in the journal, with the keys its executor saw, before the move.
    let facts = crashed.facts();
    let stage_facts: Vec<&Value> = facts
        .iter()
        .filter(|f| f["fact"] == "stage_finished")
        .collect();
    let journaled: Vec<&str> = stage_facts
        .iter()
        .map(|f| f["report"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        journaled,
        ["fetch", "compile", "package", "sign", "publish"]
    );
    for fact in &stage_facts {
        let stage = fact["report"]["id"].as_str().unwrap();
        assert_eq!(fact["claim"], claim);
        assert_eq!(
            fact["keys"],
            json!([crashed.calls.of(stage).last().unwrap().key])
        );
    }
    assert_eq!(
        kinds(&facts[facts.len() - 3..]),
        ["stage_finished", "step_ran", "moved"]
    );

    // Restored again, it is the release the resumed move made, with no move interrupted.
    let again = block_on(bot.restore("r1")).unwrap();
    assert_eq!(again.record(), built.record());
    assert_eq!(again.interrupted(), None);
    assert!(again.finished_stages().is_empty());
}

#[test]
fn a_move_cut_off_twice_carries_the_stages_of_both_runs() {
    let crashed = Crashed::new();
    // The second process is killed too, while `sign` hangs.
    crashed.calls.hang(&["sign"]);
    let (bot, fresh) = crashed.restart();
    assert!(poll_at_most(fresh.build(&bot), 100).is_none());
    assert_eq!(
        crashed.calls.stages(),
        ["fetch", "compile", "package", "package", "sign"]
    );

    // The third process finishes the job.
    crashed.calls.hang(&[]);
    let (bot, _) = crashed.restart();
    let restored = block_on(bot.restore("r1")).unwrap();
    assert_eq!(
        ids(restored.finished_stages()),
        ["fetch", "compile", "package"]
    );
    let fresh: Release<Commit, Deployment> = restored.try_into().unwrap();
    let built = block_on(fresh.build(&bot)).expect("the third try finishes the build");
    assert_eq!(built.artifact(), &artifact_for("aaa"));
    assert_eq!(
        crashed.calls.stages(),
        [
            "fetch", "compile", "package", "package", "sign", "sign", "publish"
        ]
    );
    let sign: BTreeSet<String> = crashed
        .calls
        .of("sign")
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(sign.len(), 1, "one run of the move: `sign` has one key");
    let again = block_on(bot.restore("r1")).unwrap();
    assert_eq!(again.record(), built.record());
}

#[test]
fn a_move_tried_again_after_a_refusal_is_a_new_run_with_new_keys() {
    let clock = clock();
    let journal = SharedJournal::new();
    let calls = Calls::default();
    let disk_full = Arc::new(AtomicBool::new(true));
    let full = Arc::clone(&disk_full);
    let bot = deployment("shop", &clock)
        .stages(stages_after_build([
            Stage::build("compile").run(recording(&calls, 0, compiled)),
            Stage::build("package")
                .after("compile")
                .run(recording(&calls, 0, move |ctx| {
                    if full.load(Ordering::SeqCst) {
                        StageOutcome::failure("disk full")
                    } else {
                        echo(ctx)
                    }
                })),
        ]))
        .journal(journal.clone())
        .build()
        .unwrap();
    let fresh = bot.start("r1", revision("aaa")).unwrap();
    let refused = block_on(fresh.build(&bot)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::StageFailed);
    disk_full.store(false, Ordering::SeqCst);
    let built = block_on(refused.into_release().build(&bot)).unwrap();
    assert_eq!(built.artifact(), &artifact_for("aaa"));

    // The refusal concluded the first run: the second ran every stage again, under keys of
    // its own (which a service that saw the first ones must not take for a retry).
    assert_eq!(calls.stages(), ["compile", "package", "compile", "package"]);
    let claims: Vec<Seq> = fact_values(&journal)
        .iter()
        .enumerate()
        .filter(|(_, f)| f["fact"] == "gates")
        .map(|(i, _)| i as Seq + 1)
        .collect();
    assert_eq!(claims.len(), 2);
    let all = calls.all();
    for (call, claim) in all.iter().zip([claims[0], claims[0], claims[1], claims[1]]) {
        let stage = stage_id(&call.stage);
        let expected = idempotency_key(&release_id(), Step::Build, &stage, claim, 1);
        assert_eq!(call.key, expected, "{}", call.stage);
    }
    assert_ne!(all[0].key, all[2].key);
    let restored = block_on(bot.restore("r1")).unwrap();
    assert_eq!(restored.record(), built.record());
}

/// A journal that refuses, once, the first append holding a stage fact of `stage`, as a full
/// disk would.
#[derive(Debug)]
struct RefusingOnce {
    journal: SharedJournal,
    stage: &'static str,
    refused: AtomicBool,
}

#[async_trait]
impl Journal for RefusingOnce {
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError> {
        let stage = format!(r#""id":"{}""#, self.stage);
        let hit = entries.iter().any(|e| {
            let text = String::from_utf8_lossy(&e.payload);
            text.contains(r#""fact":"stage_finished""#) && text.contains(&stage)
        });
        if hit && !self.refused.swap(true, Ordering::SeqCst) {
            return Err(JournalError::Io(std::io::Error::other(
                "no space left on device",
            )));
        }
        self.journal.append(entries).await
    }

    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        self.journal.read(from, limit).await
    }

    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        self.journal.read_key(key).await
    }

    async fn head(&self) -> Result<(Seq, ChainHash), JournalError> {
        self.journal.head().await
    }

    fn key(&self) -> &ChainKey {
        self.journal.key()
    }
}

#[test]
fn a_stage_fact_the_journal_refuses_stops_the_move_and_the_same_copy_carries_on() {
    let clock = clock();
    let journal = SharedJournal::new();
    let calls = Calls::default();
    let refusing = RefusingOnce {
        journal: journal.clone(),
        stage: "package",
        refused: AtomicBool::new(false),
    };
    let bot = deployment("shop", &clock)
        .stages(stages_after_build([
            Stage::build("fetch").run(recording(&calls, 0, echo)),
            Stage::build("compile")
                .after("fetch")
                .run(recording(&calls, 0, compiled)),
            // Slower than the rest: its end is written in an append of its own.
            Stage::build("package")
                .after("compile")
                .run(recording(&calls, 8, echo)),
            Stage::build("sign")
                .after("package")
                .run(recording(&calls, 0, echo)),
        ]))
        .journal(refusing)
        .build()
        .unwrap();
    let fresh = bot.start("r1", revision("aaa")).unwrap();
    let stopped = block_on(fresh.build(&bot)).unwrap_err();
    assert!(
        matches!(stopped.error(), Error::Journal(JournalError::Io(_))),
        "the journal's failure is the move's: {:?}",
        stopped.error()
    );
    // The step stopped there: nothing after `package` is in the journal. (`sign` may have
    // run meanwhile, since the step does not wait for the journal; its end is not recorded
    // either, so it runs again, under the same key.)
    assert_eq!(
        kinds(&fact_values(&journal)),
        ["started", "gates", "stage_finished", "stage_finished"]
    );
    assert_eq!(calls.of("package").len(), 1);

    // The copy handed back carries on from what the journal holds, with no lease to wait
    // out: it is the copy that claimed the move. `package`, whose end was lost, runs again.
    let built =
        block_on(stopped.into_release().build(&bot)).expect("the journal takes writes again");
    let counts = calls.counts();
    assert_eq!(
        (counts["fetch"], counts["compile"], counts["package"]),
        ((1, 1), (1, 1), (2, 2))
    );
    let sign = calls.of("sign");
    assert!(sign.last().unwrap().returned);
    assert!(sign.iter().all(|c| c.key == sign[0].key));
    let package = calls.of("package");
    assert_eq!(package[0].key, package[1].key);
    let restored = block_on(bot.restore("r1")).unwrap();
    assert_eq!(restored.record(), built.record());
}

#[cfg(all(feature = "process", unix))]
#[test]
fn a_process_executor_is_given_its_attempt_s_idempotency_key() {
    use tollgate::executor::ProcessExecutor;
    use tollgate::time::run_virtual;

    let clock = clock();
    let journal = SharedJournal::new();
    let bot = deployment("shop", &clock)
        .stages(stages_after_build([
            Stage::build("compile").run(compile()),
            Stage::build("announce").run(ProcessExecutor::shell(
                r#"echo "$TOLLGATE_IDEMPOTENCY_KEY""#,
            )),
        ]))
        .journal(journal.clone())
        .build()
        .unwrap();
    let fresh = bot.start("r1", revision("aaa")).unwrap();
    let built = run_virtual(&clock, fresh.build(&bot)).unwrap();
    let facts = fact_values(&journal);
    let expected = idempotency_key(
        &release_id(),
        Step::Build,
        &stage_id("announce"),
        first_claim(&facts),
        1,
    );
    let announce = built.record().steps()[0].stage("announce").unwrap();
    assert_eq!(announce.logs[0].text, expected);
    let fact = facts
        .iter()
        .find(|f| f["fact"] == "stage_finished" && f["report"]["id"] == "announce")
        .unwrap();
    assert_eq!(fact["keys"], json!([expected]));
}

// ---- forged stage facts ----

/// Restores `r1` from `facts` written with the host's key, on the bot's definition.
fn restore_forged(crashed: &Crashed, facts: &[Value]) -> Result<Restored<Deployment>, Error> {
    let journal = forged(facts);
    let bot = five_stage_build(&crashed.clock, &journal, &crashed.calls);
    block_on(bot.restore("r1"))
}

/// The index of the stage fact of `stage` in `facts`.
fn stage_fact(facts: &[Value], stage: &str) -> usize {
    facts
        .iter()
        .position(|f| f["fact"] == "stage_finished" && f["report"]["id"] == stage)
        .unwrap_or_else(|| panic!("no stage fact of `{stage}`"))
}

#[test]
fn the_crashed_journal_rewritten_as_it_is_restores() {
    let crashed = Crashed::new();
    let restored = restore_forged(&crashed, &crashed.facts()).expect("the true history");
    assert_eq!(ids(restored.finished_stages()), ["fetch", "compile"]);
}

/// An edit of a journal's facts (as JSON) by someone who holds the key.
type Forgery = dyn Fn(&mut Vec<Value>);

#[test]
fn forged_stage_facts_written_with_the_key_are_refused_by_the_replay() {
    let crashed = Crashed::new();
    let facts = crashed.facts();
    let fetch = stage_fact(&facts, "fetch");
    let compile = stage_fact(&facts, "compile");

    let forgeries: Vec<(&str, Box<Forgery>)> = vec![
        // A stage of another step, filed as one of the build step.
        (
            "of the test step as one of the build step",
            Box::new(move |f| f[compile]["report"]["id"] = json!("unit")),
        ),
        // A stage fact of the test step in the build move.
        (
            "of the test step in a build move",
            Box::new(move |f| f[compile]["step"] = json!("test")),
        ),
        // A stage the pipeline does not have.
        (
            "which this pipeline does not have",
            Box::new(move |f| f[compile]["report"]["id"] = json!("mine")),
        ),
        // A stage twice: `fetch` finished again after it succeeded.
        (
            "again after it succeeded",
            Box::new(move |f| {
                let again = f[fetch].clone();
                f.push(again);
            }),
        ),
        // A stage twice under one claim: failed, then succeeded.
        (
            "twice under one claim",
            Box::new(move |f| {
                let mut failed = f[compile].clone();
                failed["report"]["status"] = json!("failed");
                failed["report"]["reason"] = json!("flaky");
                f.insert(compile, failed);
            }),
        ),
        // (A stage dated before its claim is not refused: a wall clock may step back while a
        // stage runs, and a stage is bound to its run by the claim and its attempts' keys.)
        // A stage that ran before its dependency finished.
        (
            "before its dependency `fetch` succeeded",
            Box::new(move |f| {
                f.remove(fetch);
            }),
        ),
        // Keys its run does not give.
        (
            "idempotency keys",
            Box::new(move |f| f[compile]["keys"] = json!(["a-key-of-my-own"])),
        ),
        // Another run's claim.
        (
            "claimed at",
            Box::new(move |f| f[compile]["claim"] = json!(1)),
        ),
        // A stage's end outside any claimed move.
        (
            "outside any claimed move",
            Box::new(|f| f.retain(|fact| fact["fact"] != "gates")),
        ),
    ];
    for (needle, forge) in forgeries {
        let mut facts = facts.clone();
        forge(&mut facts);
        assert_replay_refuses(restore_forged(&crashed, &facts), needle);
    }
}

#[test]
fn a_step_report_that_contradicts_its_stage_facts_is_refused_by_the_replay() {
    let crashed = Crashed::new();
    let (bot, fresh) = crashed.restart();
    block_on(fresh.build(&bot)).unwrap();
    let mut facts = crashed.facts();
    let ran = facts.iter().position(|f| f["fact"] == "step_ran").unwrap();
    // `fetch` finished before the crash with its own output; the step's report says another.
    facts[ran]["report"]["stages"][0]["outputs"]["made"] = json!("something else");
    assert_replay_refuses(
        restore_forged(&crashed, &facts),
        "reports stage `fetch` otherwise than its stage fact",
    );
}

// ---- random graphs, random crashes ----

/// A random DAG of build stages, `s0`..: each stage's dependencies among the earlier ones,
/// and how often it yields before it returns.
fn dag() -> impl Strategy<Value = Vec<(Vec<usize>, usize)>> {
    (1usize..=8).prop_flat_map(|n| {
        proptest::collection::vec((any::<u32>(), 0usize..6), n).prop_map(|stages| {
            stages
                .iter()
                .enumerate()
                .map(|(i, &(mask, yields))| {
                    ((0..i).filter(|&j| mask >> j & 1 == 1).collect(), yields)
                })
                .collect()
        })
    })
}

/// A deployment pipeline on `journal` whose build step is `graph` (`s0` reports the
/// artifact), every build stage recording its calls in `calls`.
fn random_build(
    clock: &ManualClock,
    journal: &SharedJournal,
    calls: &Calls,
    graph: &[(Vec<usize>, usize)],
) -> Pipeline<Deployment> {
    let stages = graph.iter().enumerate().map(|(i, (deps, yields))| {
        let stage = deps.iter().fold(Stage::build(format!("s{i}")), |s, d| {
            s.after(format!("s{d}"))
        });
        let body: fn(&StageContext<'_>) -> StageOutcome = if i == 0 { compiled } else { echo };
        stage.run(recording(calls, *yields, body))
    });
    deployment("shop", clock)
        .stages(stages_after_build(stages))
        .journal(journal.clone())
        .build()
        .expect("a random DAG is a valid build step")
}

/// What a stage report says, without its times.
fn timeless(report: &StageReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap();
    let fields = value.as_object_mut().unwrap();
    fields.remove("started_at");
    fields.remove("finished_at");
    for attempt in fields["attempts"].as_array_mut().unwrap() {
        let attempt = attempt.as_object_mut().unwrap();
        attempt.remove("started_at");
        attempt.remove("finished_at");
    }
    value
}

/// Polls the build of `release` on `pipeline` until `settled` more stage facts are in
/// `journal`, then drops it (a crash); or until it is done.
fn build_until(
    release: Release<Commit, Deployment>,
    pipeline: &Pipeline<Deployment>,
    journal: &SharedJournal,
    settled: usize,
) -> Option<Release<Built, Deployment>> {
    let count = || {
        fact_values(journal)
            .iter()
            .filter(|f| f["fact"] == "stage_finished")
            .count()
    };
    let target = count() + settled;
    let mut moving = pin!(release.build(pipeline));
    let mut cx = Context::from_waker(Waker::noop());
    // Far more polls than the largest graph needs, so a build that cannot finish fails the
    // test instead of hanging it.
    for _ in 0..10_000 {
        if let Poll::Ready(built) = moving.as_mut().poll(&mut cx) {
            return Some(built.expect("the build succeeds"));
        }
        if count() >= target {
            return None;
        }
    }
    panic!("the build neither finished nor settled {settled} stages");
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Beside this file (`resume.proptest-regressions`), as the engine's properties do.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(96)
    })]

    /// Crashed after random numbers of settled stages (once or twice), restored each time
    /// and finished: every stage succeeded exactly once over all runs, started again only
    /// after a crash that caught it running (with the key it had then), and the final report
    /// is the uninterrupted run's, up to times.
    #[test]
    fn a_build_crashed_and_resumed_runs_each_stage_to_success_once(
        graph in dag(),
        crashes in proptest::collection::vec(0usize..8, 1..=2),
    ) {
        let clock = clock();
        let journal = SharedJournal::new();
        let calls = Calls::default();
        let mut release = Some(random_build(&clock, &journal, &calls, &graph)
            .start("r1", revision("aaa"))
            .unwrap());
        let mut caught_running: BTreeMap<String, usize> = BTreeMap::new();
        let mut built = None;
        for settled in crashes {
            let Some(fresh) = release.take() else { break };
            let bot = random_build(&clock, &journal, &calls, &graph);
            let before = calls.all().len();
            if let Some(done) = build_until(fresh, &bot, &journal, settled % graph.len()) {
                built = Some(done);
                break;
            }
            // The calls this process made that had not returned were running at the crash.
            for call in calls.all().into_iter().skip(before).filter(|c| !c.returned) {
                *caught_running.entry(call.stage).or_default() += 1;
            }
            clock.advance(HOUR);
            let restored = block_on(bot.restore("r1")).unwrap();
            prop_assert_eq!(restored.interrupted(), Some(Move::Build));
            release = Some(restored.try_into().unwrap());
        }
        let built = match (built, release) {
            (Some(built), _) => built,
            (None, Some(fresh)) => {
                let bot = random_build(&clock, &journal, &calls, &graph);
                block_on(fresh.build(&bot)).expect("the last try finishes the build")
            }
            (None, None) => unreachable!("a release is either built or left to build"),
        };

        // Each stage succeeded once, and was started once more per crash that caught it.
        for (i, _) in graph.iter().enumerate() {
            let stage = format!("s{i}");
            let of = calls.of(&stage);
            let successes = of.iter().filter(|c| c.returned).count();
            prop_assert_eq!(successes, 1, "{} succeeded {} times", stage, successes);
            let running = caught_running.get(&stage).copied().unwrap_or(0);
            prop_assert_eq!(of.len(), 1 + running, "{} started {} times", stage, of.len());
            let keys: BTreeSet<&str> = of.iter().map(|c| c.key.as_str()).collect();
            prop_assert_eq!(keys.len(), 1, "{}: one run, one attempt, one key", stage);
        }

        // The same build without a crash.
        let clean_clock = crate::support::clock();
        let clean_journal = SharedJournal::new();
        let clean = random_build(&clean_clock, &clean_journal, &Calls::default(), &graph);
        let uninterrupted = block_on(clean.start("r1", revision("aaa")).unwrap().build(&clean)).unwrap();
        let resumed: Vec<Value> = built.record().steps()[0].stages.iter().map(timeless).collect();
        let expected: Vec<Value> = uninterrupted.record().steps()[0].stages.iter().map(timeless).collect();
        prop_assert_eq!(resumed, expected);
        prop_assert_eq!(built.artifact(), uninterrupted.artifact());
        // And the journal of the resumed build restores to it.
        let bot = random_build(&clock, &journal, &calls, &graph);
        let again = block_on(bot.restore("r1")).unwrap();
        prop_assert_eq!(again.record(), built.record());
    }
}
