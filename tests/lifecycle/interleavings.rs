//! Random interleavings of everything a release bot does to its releases (starts, moves,
//! votes by people the policy admits and by people it refuses, issued approvals, approvals
//! used, deploys, crashes in the middle of a step, restarts, restores into several copies,
//! time passing) on the memory and the file journal, each step checked against a reference
//! model of what the policy and the lifecycle allow:
//!
//! - every operation succeeds exactly when the model says it may;
//! - nothing acknowledged is lost: after any restore (and after a restart, which reopens the
//!   file journal), a release's state, interrupted move, finished stages, approval and votes
//!   are the model's;
//! - no stage that finished runs again, across crashes and takeovers;
//! - every deployed release used exactly one approval, which the policy gave (two distinct
//!   admitted people, neither the author nor the triggerer) and which was unexpired when the
//!   release was approved and when it was deployed; no release uses two.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::{Either, select};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use tollgate::approval::{Approval, Decision, Rule};
use tollgate::executor::{ExecutorError, from_async_fn};
use tollgate::fact::{Fact, read_release};
use tollgate::id::Person;
use tollgate::journal::{FileJournal, Journal, MemoryJournal};
use tollgate::prelude::*;
use tollgate::release::{MoveError, Restored, State, StateName};
use tollgate::time::{Clock as _, ManualClock, Timestamp};

use crate::HOUR;
use crate::support::{artifact_for, block_on, chain_key, clock, delivery_with, yield_now};

/// Who votes: three people the policy admits, the author, the triggerer, and an outsider.
const PEOPLE: [&str; 6] = ["rita", "sam", "ines", "dana", "tom", "omar"];
/// The people whose votes count (the rule also names the author and the triggerer, whom the
/// separation of duties refuses).
const ELIGIBLE: usize = 3;
const AUTHOR: &str = "dana";
const TRIGGERER: &str = "tom";
/// The releases the bot juggles.
const RELEASES: [&str; 2] = ["r1", "r2"];
/// Copies of one release a process may hold at once.
const COPIES: usize = 2;
/// How long a vote (and so an approval) lasts.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The stages of each step, in the order they run (a chain).
const BUILD: [&str; 2] = ["compile", "package"];

/// The policy: two of the people it names, the author and the triggerer excluded.
fn policy() -> ApprovalPolicy {
    let mut rule = Rule::new("leads").need(2);
    for person in ["rita", "sam", "ines", AUTHOR, TRIGGERER] {
        rule = rule.person(person);
    }
    ApprovalPolicy::new()
        .rule(rule)
        .expect("a valid rule")
        .valid_for(VALIDITY)
}

fn revision(release: &str) -> Revision {
    Revision::new(format!("rev-{release}"), AUTHOR)
        .expect("a valid revision")
        .triggered_by(Person::new(TRIGGERER).expect("a valid name"))
}

/// The stages of the step that `state`'s next move runs (none for the approval).
fn step_stages(state: StateName) -> &'static [&'static str] {
    match state {
        StateName::Commit => &BUILD,
        StateName::Built => &["unit"],
        StateName::Tested => &["staging"],
        StateName::Approved => &["production"],
        _ => &[],
    }
}

fn next_state(state: StateName) -> StateName {
    match state {
        StateName::Commit => StateName::Built,
        StateName::Built => StateName::Tested,
        StateName::Tested => StateName::Staged,
        StateName::Staged => StateName::Approved,
        _ => StateName::Deployed,
    }
}

fn move_of(state: StateName) -> Move {
    match state {
        StateName::Commit => Move::Build,
        StateName::Built => Move::Test,
        StateName::Tested => Move::Stage,
        StateName::Staged => Move::Approve,
        _ => Move::Deploy,
    }
}

// ---- the executors: every call recorded, one stage made to hang for a crash ----

/// Every executor call of one case, across every process; and the stage that hangs now.
#[derive(Debug, Clone, Default)]
struct Calls {
    /// (release, stage, returned) per call.
    made: Arc<Mutex<Vec<(String, String, bool)>>>,
    hang: Arc<Mutex<Option<String>>>,
    /// Set once the hanging stage has started and the journal holds every stage that
    /// finished before it: the moment the process is killed.
    hung: Arc<AtomicBool>,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String, bool)>> {
        self.made.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How often stage `stage` of `release` was called, and how often it returned.
    fn count(&self, release: &str, stage: &str) -> (usize, usize) {
        self.lock()
            .iter()
            .filter(|(r, s, _)| r == release && s == stage)
            .fold((0, 0), |(n, ok), (_, _, done)| {
                (n + 1, ok + usize::from(*done))
            })
    }

    fn returned(&self, release: &str) -> usize {
        self.lock()
            .iter()
            .filter(|(r, _, done)| r == release && *done)
            .count()
    }

    fn hang(&self, stage: Option<&str>) {
        *self.hang.lock().unwrap_or_else(PoisonError::into_inner) = stage.map(str::to_owned);
        self.hung.store(false, Ordering::SeqCst);
    }
}

/// The number of `stage_finished` facts the journal holds for `release`.
async fn stage_facts(journal: &dyn Journal, release: &str) -> usize {
    journal
        .read_key(release)
        .await
        .expect("the journal reads")
        .iter()
        .filter(|s| {
            serde_json::from_slice::<Value>(&s.payload).is_ok_and(|f| f["fact"] == "stage_finished")
        })
        .count()
}

/// An executor that records its call and succeeds (`compile` with the revision's artifact),
/// or, for the stage `calls` says hangs, waits until the journal holds every stage that
/// returned before it (so the crash point is the same on every backend) and hangs.
fn recording(calls: &Calls, journal: &Arc<dyn Journal>) -> impl Executor + use<> {
    let calls = calls.clone();
    let journal = Arc::clone(journal);
    from_async_fn(move |ctx| {
        let calls = calls.clone();
        let journal = Arc::clone(&journal);
        Box::pin(async move {
            let release = ctx.release().to_string();
            let stage = ctx.stage().to_string();
            let index = {
                let mut all = calls.lock();
                all.push((release.clone(), stage.clone(), false));
                all.len() - 1
            };
            yield_now().await;
            let hangs = calls
                .hang
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_deref()
                == Some(stage.as_str());
            if hangs {
                while stage_facts(&*journal, &release).await < calls.returned(&release) {
                    yield_now().await;
                }
                calls.hung.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            let mut outcome = StageOutcome::success();
            if stage == "compile" {
                outcome = outcome.artifact(artifact_for(ctx.revision()));
            }
            calls.lock()[index].2 = true;
            Ok::<_, ExecutorError>(outcome)
        })
    })
}

/// The bot's pipeline on `journal`: a new value of the same definition for each process.
fn pipeline(clock: &ManualClock, journal: &Arc<dyn Journal>, calls: &Calls) -> Pipeline<Delivery> {
    delivery_with("shop", clock, policy())
        .stages([
            Stage::build("compile").run(recording(calls, journal)),
            Stage::build("package")
                .after("compile")
                .run(recording(calls, journal)),
            Stage::test("unit").run(recording(calls, journal)),
            Stage::stage("staging").run(recording(calls, journal)),
            Stage::deploy("production").run(recording(calls, journal)),
        ])
        .journal(Arc::clone(journal))
        .build()
        .expect("the pipeline is valid")
}

// ---- the stores: a process's journal, and what a restart does to it ----

/// Where the bot keeps its journal, and what a restart does to it.
trait Store {
    /// The journal of the process that runs now.
    fn journal(&self) -> Arc<dyn Journal>;
    /// The process died (every pipeline and release of it is dropped): open the journal
    /// again for the next one.
    fn restart(&mut self);
}

/// A memory journal outlives the process (as a database would).
struct MemoryStore(Arc<dyn Journal>);

impl Store for MemoryStore {
    fn journal(&self) -> Arc<dyn Journal> {
        Arc::clone(&self.0)
    }
    fn restart(&mut self) {}
}

/// A file journal, closed and opened again at every restart.
struct FileStore {
    path: PathBuf,
    journal: Option<Arc<FileJournal>>,
}

impl FileStore {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-interleavings-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("bot.journal");
        let journal = block_on(FileJournal::open(&path, chain_key())).expect("the journal opens");
        FileStore {
            path,
            journal: Some(Arc::new(journal)),
        }
    }
}

impl Store for FileStore {
    fn journal(&self) -> Arc<dyn Journal> {
        let journal: Arc<FileJournal> = Arc::clone(self.journal.as_ref().expect("open"));
        journal
    }
    fn restart(&mut self) {
        let journal = self.journal.take().expect("open");
        let journal = Arc::into_inner(journal).expect("the dead process holds no handle");
        block_on(journal.close());
        let journal =
            block_on(FileJournal::open(&self.path, chain_key())).expect("the journal reopens");
        self.journal = Some(Arc::new(journal));
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        drop(self.journal.take());
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

// ---- what the bot does ----

#[derive(Debug, Clone)]
enum Op {
    /// A process starts release `r` into copy slot `copy` (written at its first move).
    Start { r: usize, copy: usize },
    /// The copy takes its next move (the approval with the newest approval issued for it).
    Next { r: usize, copy: usize },
    /// The copy takes its next move with stage `stage` of the move's step hanging, and the
    /// process is killed there (if the move gets that far).
    Crash { r: usize, copy: usize, stage: usize },
    /// `PEOPLE[person]` votes on `r`.
    Vote {
        r: usize,
        person: usize,
        approve: bool,
    },
    /// The pipeline issues an approval for `r` from the journal's votes.
    Issue { r: usize },
    /// The copy is replaced by `r` restored from the journal.
    Restore { r: usize, copy: usize },
    /// The process dies between moves; the next one opens the journal again.
    Restart,
    /// Time passes.
    Wait { minutes: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..RELEASES.len();
    let copy = 0..COPIES;
    prop_oneof![
        1 => (r.clone(), copy.clone()).prop_map(|(r, copy)| Op::Start { r, copy }),
        10 => (r.clone(), copy.clone()).prop_map(|(r, copy)| Op::Next { r, copy }),
        2 => (r.clone(), copy.clone(), 0..BUILD.len())
            .prop_map(|(r, copy, stage)| Op::Crash { r, copy, stage }),
        6 => (r.clone(), 0..PEOPLE.len(), prop::bool::weighted(0.85))
            .prop_map(|(r, person, approve)| Op::Vote { r, person, approve }),
        1 => r.clone().prop_map(|r| Op::Issue { r }),
        2 => (r, copy).prop_map(|(r, copy)| Op::Restore { r, copy }),
        1 => Just(Op::Restart),
        2 => prop_oneof![4 => Just(30u64), 4 => Just(61), 2 => Just(6 * 60), 1 => Just(23 * 60)]
            .prop_map(|minutes| Op::Wait { minutes }),
    ]
}

// ---- the reference model ----

/// An approval as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Granted {
    issued_at: Timestamp,
    expires_at: Timestamp,
}

/// What the model knows of one release.
#[derive(Debug, Default)]
struct ModelRelease {
    /// Bumped by every write to the release's facts (not its votes): a copy that saw an
    /// older one is stale, and every move it tries is refused with nothing written.
    version: u64,
    state: Option<StateName>,
    /// The move a crash cut off, the stages of its run that finished, and until when its
    /// claim holds.
    interrupted: Option<(Move, BTreeSet<&'static str>, Timestamp)>,
    /// Every acknowledged vote: (person, approve, at).
    votes: Vec<(usize, bool, Timestamp)>,
    used: Option<Granted>,
    /// How often each stage succeeded.
    succeeded: BTreeMap<&'static str, usize>,
}

impl ModelRelease {
    fn state(&self) -> StateName {
        self.state.unwrap_or(StateName::Commit)
    }

    /// The latest vote of each person cast by `at`, live at `at`.
    fn live_votes(&self, at: Timestamp) -> BTreeMap<usize, (bool, Timestamp)> {
        let mut latest = BTreeMap::new();
        for &(person, approve, cast) in &self.votes {
            if cast <= at {
                latest.insert(person, (approve, cast));
            }
        }
        latest.retain(|_, (_, cast)| at < cast.saturating_add(VALIDITY));
        latest
    }

    fn rejected(&self, at: Timestamp) -> bool {
        self.live_votes(at).values().any(|(approve, _)| !approve)
    }

    /// What the policy gives at `now`, if anything.
    fn issue(&self, now: Timestamp) -> Option<Granted> {
        if self.state != Some(StateName::Staged) || self.rejected(now) {
            return None;
        }
        let counted: Vec<Timestamp> = self
            .live_votes(now)
            .values()
            .filter(|(approve, _)| *approve)
            .map(|(_, at)| *at)
            .collect();
        (counted.len() >= 2).then(|| Granted {
            issued_at: now,
            expires_at: counted
                .iter()
                .min()
                .expect("two votes")
                .saturating_add(VALIDITY),
        })
    }

    /// Whether `granted` still holds at `now`.
    fn holds(&self, granted: Granted, now: Timestamp) -> bool {
        now < granted.expires_at && !self.rejected(now)
    }

    /// What the next move of a copy in `state` (in step with the journal or not), taken at
    /// `now` with `granted` (the approval) and stage `hang` hanging, should do.
    fn expect(
        &self,
        state: StateName,
        synced: bool,
        granted: Option<Granted>,
        hang: Option<&str>,
        now: Timestamp,
    ) -> Expect {
        let claimed = self
            .interrupted
            .as_ref()
            .is_some_and(|(_, _, until)| now < *until);
        let refused = !synced
            || claimed
            || match state {
                StateName::Staged => !self.holds(granted.expect("an approval"), now),
                StateName::Approved => {
                    !self.holds(self.used.expect("an approved release used one"), now)
                }
                _ => false,
            };
        let done = self
            .interrupted
            .as_ref()
            .map(|(_, done, _)| done.clone())
            .unwrap_or_default();
        let reaches_hang = !refused && hang.is_some_and(|h| !done.contains(h));
        Expect {
            claimed,
            refused,
            done,
            reaches_hang,
        }
    }
}

/// What the model expects of a move.
struct Expect {
    /// Another copy's claim holds: refused with nothing written.
    claimed: bool,
    /// Refused (stale, claimed, or an approval that does not hold).
    refused: bool,
    /// The stages of the move's run that finished before a crash: not run again.
    done: BTreeSet<&'static str>,
    /// The move gets as far as its hanging stage.
    reaches_hang: bool,
}

/// A copy of a release a process holds, in its typed state.
enum Held {
    Commit(Release<Commit, Delivery>),
    Built(Release<Built, Delivery>),
    Tested(Release<Tested, Delivery>),
    Staged(Release<Staged, Delivery>),
    Approved(Release<Approved, Delivery>),
    Deployed(Release<Deployed, Delivery>),
}

impl Held {
    fn state(&self) -> StateName {
        match self {
            Held::Commit(_) => StateName::Commit,
            Held::Built(_) => StateName::Built,
            Held::Tested(_) => StateName::Tested,
            Held::Staged(_) => StateName::Staged,
            Held::Approved(_) => StateName::Approved,
            Held::Deployed(_) => StateName::Deployed,
        }
    }

    fn from_restored(restored: Restored<Delivery>) -> Held {
        fn typed<S: State>(restored: Restored<Delivery>) -> Release<S, Delivery> {
            restored
                .try_into()
                .unwrap_or_else(|e| panic!("a restored release converts to its own state: {e}"))
        }
        match restored.state() {
            StateName::Commit => Held::Commit(typed(restored)),
            StateName::Built => Held::Built(typed(restored)),
            StateName::Tested => Held::Tested(typed(restored)),
            StateName::Staged => Held::Staged(typed(restored)),
            StateName::Approved => Held::Approved(typed(restored)),
            StateName::Deployed => Held::Deployed(typed(restored)),
        }
    }

    /// Takes the next move (with `approval` for the approval): the copy it leaves, and
    /// whether the move happened.
    async fn next(
        self,
        pipeline: &Pipeline<Delivery>,
        approval: Option<Approval>,
    ) -> (Held, Result<(), Error>) {
        fn back<S: State, T>(
            moved: Result<T, MoveError<S, Delivery>>,
            ok: fn(T) -> Held,
            err: fn(Release<S, Delivery>) -> Held,
        ) -> (Held, Result<(), Error>) {
            match moved {
                Ok(next) => (ok(next), Ok(())),
                Err(refused) => {
                    let (release, error) = refused.into_parts();
                    (err(release), Err(error))
                }
            }
        }
        match self {
            Held::Commit(r) => back(r.build(pipeline).await, Held::Built, Held::Commit),
            Held::Built(r) => {
                let artifact = r.artifact().clone();
                back(r.test(pipeline, &artifact).await, Held::Tested, Held::Built)
            }
            Held::Tested(r) => {
                let artifact = r.artifact().clone();
                back(
                    r.stage(pipeline, &artifact).await,
                    Held::Staged,
                    Held::Tested,
                )
            }
            Held::Staged(r) => {
                let approval = approval.expect("the approval move is taken with an approval");
                back(
                    r.approve(pipeline, approval).await,
                    Held::Approved,
                    Held::Staged,
                )
            }
            Held::Approved(r) => {
                let artifact = r.artifact().clone();
                back(
                    r.deploy(pipeline, &artifact).await,
                    Held::Deployed,
                    Held::Approved,
                )
            }
            Held::Deployed(r) => (Held::Deployed(r), Ok(())),
        }
    }
}

/// A copy and the model's view of it: the release version it saw.
struct Copy {
    held: Held,
    seen: u64,
}

/// One case: the bot's process (pipeline, copies, approvals) over a store, and the model.
struct Bot<S: Store> {
    store: S,
    clock: ManualClock,
    calls: Calls,
    pipeline: Option<Pipeline<Delivery>>,
    copies: Vec<[Option<Copy>; COPIES]>,
    /// Approvals issued and not used yet, newest last.
    approvals: Vec<Vec<(Approval, Granted)>>,
    model: Vec<ModelRelease>,
}

impl<S: Store> Bot<S> {
    fn new(store: S) -> Self {
        let clock = clock();
        let calls = Calls::default();
        let pipeline = pipeline(&clock, &store.journal(), &calls);
        Bot {
            store,
            clock,
            calls,
            pipeline: Some(pipeline),
            copies: RELEASES.iter().map(|_| [None, None]).collect(),
            approvals: RELEASES.iter().map(|_| Vec::new()).collect(),
            model: RELEASES.iter().map(|_| ModelRelease::default()).collect(),
        }
    }

    fn pipeline(&self) -> &Pipeline<Delivery> {
        self.pipeline.as_ref().expect("a running process")
    }

    /// The process dies: its pipeline, copies and approvals are gone.
    fn restart(&mut self) {
        for copies in &mut self.copies {
            *copies = [None, None];
        }
        for approvals in &mut self.approvals {
            approvals.clear();
        }
        self.pipeline = None;
        self.store.restart();
        self.pipeline = Some(pipeline(&self.clock, &self.store.journal(), &self.calls));
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        match *op {
            Op::Start { r, copy } => {
                let release = self
                    .pipeline()
                    .start(RELEASES[r], revision(RELEASES[r]))
                    .expect("a valid release");
                self.copies[r][copy] = Some(Copy {
                    held: Held::Commit(release),
                    seen: 0,
                });
            }
            Op::Next { r, copy } => self.next(r, copy, None)?,
            Op::Crash { r, copy, stage } => self.next(r, copy, Some(stage))?,
            Op::Vote { r, person, approve } => {
                let decision = if approve {
                    Decision::Approve
                } else {
                    Decision::Reject
                };
                let voted =
                    block_on(
                        self.pipeline()
                            .vote(RELEASES[r], PEOPLE[person], decision, "why"),
                    );
                let model = &mut self.model[r];
                let may = model.state == Some(StateName::Staged) && person < ELIGIBLE;
                prop_assert_eq!(voted.is_ok(), may, "{:?}: {:?}", op, voted.err());
                if may {
                    model.votes.push((person, approve, now));
                }
            }
            Op::Issue { r } => self.issue(r)?,
            Op::Restore { r, copy } => self.restore(r, copy)?,
            Op::Restart => self.restart(),
            Op::Wait { minutes } => self.clock.advance(Duration::from_secs(minutes * 60)),
        }
        Ok(())
    }

    /// The pipeline issues an approval for `r`, if the model says the votes give one.
    fn issue(&mut self, r: usize) -> Result<(), TestCaseError> {
        let issued = block_on(self.pipeline().issue(RELEASES[r]));
        let expected = self.model[r].issue(self.clock.now());
        prop_assert_eq!(
            issued.is_ok(),
            expected.is_some(),
            "issue {}: {:?}",
            RELEASES[r],
            issued.as_ref().err()
        );
        if let (Ok(approval), Some(granted)) = (issued, expected) {
            self.approvals[r].push((approval, granted));
        }
        Ok(())
    }

    /// Restores `r` into copy slot `copy`, if the journal holds it (as the model says).
    fn restore(&mut self, r: usize, copy: usize) -> Result<(), TestCaseError> {
        let restored = block_on(self.pipeline().restore(RELEASES[r]));
        prop_assert_eq!(
            restored.is_ok(),
            self.model[r].state.is_some(),
            "restore {}: {:?}",
            RELEASES[r],
            restored.as_ref().err()
        );
        if let Ok(restored) = restored {
            self.check_restored(r, &restored)?;
            self.copies[r][copy] = Some(Copy {
                held: Held::from_restored(restored),
                seen: self.model[r].version,
            });
        }
        Ok(())
    }

    /// The copy's next move; with `crash`, stage `crash` of its step hangs and the process
    /// is killed once the move reaches it. An empty slot is filled first, as a bot would:
    /// restored from the journal, or started when the journal does not hold the release. A
    /// staged copy with no approval at hand asks for one first.
    fn next(&mut self, r: usize, slot: usize, crash: Option<usize>) -> Result<(), TestCaseError> {
        if self.copies[r][slot].is_none() {
            if self.model[r].state.is_some() {
                self.restore(r, slot)?;
            } else {
                self.run(&Op::Start { r, copy: slot })?;
            }
        }
        let state = self.copies[r][slot].as_ref().map(|c| c.held.state());
        if state == Some(StateName::Staged) && self.approvals[r].is_empty() {
            self.issue(r)?;
        }
        let approval = if state == Some(StateName::Staged) {
            let Some(approval) = self.approvals[r].pop() else {
                return Ok(());
            };
            Some(approval)
        } else {
            None
        };
        if state == Some(StateName::Deployed) {
            return Ok(());
        }
        let Some(copy) = self.copies[r][slot].take() else {
            return Ok(());
        };
        let state = copy.held.state();
        let now = self.clock.now();
        let synced = copy.seen == self.model[r].version;
        if synced {
            prop_assert_eq!(
                state,
                self.model[r].state(),
                "a copy in step with the journal"
            );
        }
        let stages = step_stages(state);
        let hang = crash.and_then(|i| stages.get(i % stages.len().max(1)).copied());
        let granted = approval.as_ref().map(|(_, g)| *g);
        let expect = self.model[r].expect(state, synced, granted, hang, now);
        let outcome = self.take(copy.held, approval.map(|(a, _)| a), hang);

        let model = &mut self.model[r];
        let label = format!("{} {:?} of {}", move_of(state), crash, RELEASES[r]);
        let Some((held, result)) = outcome else {
            prop_assert!(expect.reaches_hang, "{}: the move hung", label);
            // Killed in the middle of the step: the claim and the stages that finished
            // before the hanging one are in the journal.
            let mut done = expect.done;
            for &stage in stages.iter().take_while(|&&s| Some(s) != hang) {
                if done.insert(stage) {
                    *model.succeeded.entry(stage).or_default() += 1;
                }
            }
            model.version += 1;
            model.state.get_or_insert(StateName::Commit);
            model.interrupted = Some((move_of(state), done, now.saturating_add(HOUR)));
            self.restart();
            return Ok(());
        };
        prop_assert!(
            !expect.reaches_hang || expect.refused,
            "{}: ran through its hanging stage",
            label
        );
        let seen = if !synced || expect.claimed {
            // Stale (the release moved on since this copy saw it) or claimed by a copy that
            // crashed: refused, and nothing is written.
            prop_assert!(result.is_err(), "{}: a stale or claimed copy moved", label);
            copy.seen
        } else if expect.refused {
            prop_assert!(
                result.is_err(),
                "{}: moved with an approval that does not hold",
                label
            );
            model.version += 1;
            model.interrupted = None;
            model.version
        } else {
            prop_assert!(result.is_ok(), "{}: {:?}", label, result.err());
            for &stage in stages {
                if !expect.done.contains(stage) {
                    *model.succeeded.entry(stage).or_default() += 1;
                }
            }
            model.version += 1;
            model.state = Some(next_state(state));
            model.interrupted = None;
            if state == StateName::Staged {
                model.used = granted;
            }
            model.version
        };
        self.copies[r][slot] = Some(Copy { held, seen });
        if crash.is_some() {
            // The kill came after the move (it never reached its hanging stage).
            self.restart();
        }
        Ok(())
    }

    /// Takes `held`'s next move with stage `hang` hanging: what the move gave, or `None` if
    /// the process was killed in the hanging stage (the move's future dropped).
    fn take(
        &self,
        held: Held,
        approval: Option<Approval>,
        hang: Option<&str>,
    ) -> Option<(Held, Result<(), Error>)> {
        self.calls.hang(hang);
        let killed_at_hang = Arc::clone(&self.calls.hung);
        let mv = held.next(self.pipeline(), approval);
        let outcome = block_on(async {
            let killed = futures::future::poll_fn(|cx| {
                if killed_at_hang.load(Ordering::SeqCst) {
                    std::task::Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            });
            match select(std::pin::pin!(mv), std::pin::pin!(killed)).await {
                Either::Left((moved, _)) => Some(moved),
                Either::Right(((), _)) => None,
            }
        });
        self.calls.hang(None);
        outcome
    }

    /// Checks a restored release against the model.
    fn check_restored(&self, r: usize, restored: &Restored<Delivery>) -> Result<(), TestCaseError> {
        let model = &self.model[r];
        prop_assert_eq!(restored.state(), model.state(), "{}: state", RELEASES[r]);
        prop_assert_eq!(
            restored.interrupted(),
            model.interrupted.as_ref().map(|(mv, _, _)| *mv),
            "{}: interrupted move",
            RELEASES[r]
        );
        let finished: BTreeSet<&str> = restored
            .finished_stages()
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        let expected = model
            .interrupted
            .as_ref()
            .map(|(_, done, _)| done.clone())
            .unwrap_or_default();
        prop_assert_eq!(finished, expected, "{}: finished stages", RELEASES[r]);
        let approval = restored.record().approval();
        prop_assert_eq!(
            approval.map(|a| (a.issued_at, a.expires_at)),
            model.used.map(|g| (g.issued_at, g.expires_at)),
            "{}: the approval used",
            RELEASES[r]
        );
        if model.state() != StateName::Commit {
            prop_assert_eq!(
                restored.record().artifact(),
                Some(&artifact_for(&format!("rev-{}", RELEASES[r]))),
                "{}: the artifact",
                RELEASES[r]
            );
        }
        Ok(())
    }

    /// Checks the journal against the model: every release restores as the model says, its
    /// acknowledged votes are all there, its stages ran as the model says, and its approval
    /// was used at most once, and held when it was used and when the release deployed.
    fn check_journal(&self) -> Result<(), TestCaseError> {
        let journal = self.store.journal();
        block_on(tollgate::journal::verify(&*journal)).expect("the chain holds");
        for (r, model) in self.model.iter().enumerate() {
            let id = RELEASES[r];
            for stage in BUILD.iter().chain(&["unit", "staging", "production"]) {
                let (calls, returned) = self.calls.count(id, stage);
                let expected = model.succeeded.get(stage).copied().unwrap_or(0);
                prop_assert_eq!(returned, expected, "{} {}: successful runs", id, stage);
                prop_assert!(returned <= 1, "{} {} finished twice", id, stage);
                prop_assert!(calls >= returned);
            }
            if model.state.is_none() {
                prop_assert!(block_on(self.pipeline().restore(id)).is_err());
                continue;
            }
            let restored =
                block_on(self.pipeline().restore(id)).expect("a written release restores");
            self.check_restored(r, &restored)?;
            let facts = block_on(read_release(&*journal, id)).expect("the facts read");
            let votes: Vec<(String, bool, Timestamp)> = facts
                .iter()
                .filter_map(|(_, fact)| match fact {
                    Fact::Voted { vote, .. } => Some((
                        vote.person.to_string(),
                        vote.decision == Decision::Approve,
                        vote.at,
                    )),
                    _ => None,
                })
                .collect();
            let expected: Vec<(String, bool, Timestamp)> = model
                .votes
                .iter()
                .map(|&(p, approve, at)| (PEOPLE[p].to_owned(), approve, at))
                .collect();
            prop_assert_eq!(votes, expected, "{}: the acknowledged votes", id);
            let used: Vec<(&tollgate::record::ApprovalRecord, Timestamp)> = facts
                .iter()
                .filter_map(|(_, fact)| match fact {
                    Fact::ApprovalUsed { record, at, .. } => Some((record, *at)),
                    _ => None,
                })
                .collect();
            prop_assert!(used.len() <= 1, "{}: an approval used twice", id);
            let deployed_at = facts.iter().find_map(|(_, fact)| match fact {
                Fact::Moved {
                    to: StateName::Deployed,
                    at,
                    ..
                } => Some(*at),
                _ => None,
            });
            if let Some(deployed_at) = deployed_at {
                let [(record, used_at)] = used[..] else {
                    return Err(TestCaseError::fail(format!(
                        "{id} deployed without an approval"
                    )));
                };
                let people: BTreeSet<&str> =
                    record.signoffs.iter().map(|s| s.person.as_str()).collect();
                prop_assert!(people.len() >= 2, "{}: one person approved", id);
                prop_assert!(
                    people.iter().all(|p| PEOPLE[..ELIGIBLE].contains(p)),
                    "{}: approved by {:?}",
                    id,
                    people
                );
                prop_assert!(used_at < record.expires_at && deployed_at < record.expires_at);
            }
        }
        Ok(())
    }
}

/// Runs `ops` on a bot over `store`, checking the model after every restore and, at the
/// end, before and after a last restart.
fn interleave(store: impl Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut bot = Bot::new(store);
    for op in ops {
        bot.run(op)?;
    }
    bot.check_journal()?;
    bot.restart();
    bot.check_journal()
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(64)
    })]

    /// On the memory journal: every operation succeeds exactly when the model says, and the
    /// journal always gives back the model's releases.
    #[test]
    fn random_interleavings_on_the_memory_journal_agree_with_the_model(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let store = MemoryStore(Arc::new(MemoryJournal::new(chain_key())));
        interleave(store, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        // Every append waits for `fdatasync`: fewer cases than in memory.
        ..ProptestConfig::with_cases(16)
    })]

    /// On the file journal, reopened at every restart: the same.
    #[test]
    fn random_interleavings_on_the_file_journal_agree_with_the_model(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        interleave(FileStore::new(), &ops)?;
    }
}
