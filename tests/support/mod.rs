//! Shared helpers for the integration tests: pipelines in each mode on a `ManualClock`,
//! executors that record the order stages start and finish in, and small futures that make
//! stages interleave without threads or sleeps.

// Each test crate compiles this module on its own and uses only some of the helpers.
#![allow(dead_code)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

pub use futures::executor::block_on;
use tollgate::executor::{ExecutorError, StageContext, from_async_fn, from_fn};
use tollgate::pipeline::{PipelineBuilder, WithApprovals};
use tollgate::prelude::*;
use tollgate::release::Mode;
use tollgate::time::{ManualClock, Timestamp};

/// Where every test clock starts: a fixed, realistic instant (November 2023).
pub const START: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// The author of every test revision.
pub const AUTHOR: &str = "dana";

/// The people the default approval policy lets approve.
pub const APPROVERS: [&str; 2] = ["rita", "sam"];

/// A virtual clock at [`START`].
pub fn clock() -> ManualClock {
    ManualClock::new(START)
}

/// The artifact the `compile` stage builds from revision `revision`: different revisions
/// build different artifacts.
pub fn artifact_for(revision: &str) -> ArtifactRef {
    ArtifactRef::from_bytes("app", format!("app built from {revision}").as_bytes())
}

/// A build executor that reports [`artifact_for`] its revision, and its digest as the output
/// `digest`.
pub fn compile() -> impl Executor + use<> {
    from_fn(|ctx| {
        let artifact = artifact_for(ctx.revision());
        Ok(StageOutcome::success()
            .log(format!("compiled {}", ctx.revision()))
            .output("digest", artifact.digest.to_string())
            .artifact(artifact))
    })
}

/// An executor that always succeeds.
pub fn ok() -> impl Executor + use<> {
    from_fn(|_| Ok(StageOutcome::success()))
}

/// An executor that always fails with `reason`.
pub fn failing(reason: &'static str) -> impl Executor + use<> {
    from_fn(move |_| Ok(StageOutcome::failure(reason)))
}

/// The pipeline shape most tests use: `compile`; `unit` and `lint` after it; `staging` and
/// `acceptance` after that; `production`.
pub fn standard_stages() -> Vec<Stage> {
    vec![
        Stage::build("compile").run(compile()),
        Stage::test("unit").after("compile").run(ok()),
        Stage::test("lint").after("compile").run(ok()),
        Stage::stage("staging").run(ok()),
        Stage::stage("acceptance").after("staging").run(ok()),
        Stage::deploy("production").run(ok()),
    ]
}

/// The smallest valid pipeline shape after the given build stages: one stage for each other
/// step, `unit`, `staging` and `production`, each [`ok`].
pub fn stages_after_build(build: impl IntoIterator<Item = Stage>) -> Vec<Stage> {
    build
        .into_iter()
        .chain([
            Stage::test("unit").run(ok()),
            Stage::stage("staging").run(ok()),
            Stage::deploy("production").run(ok()),
        ])
        .collect()
}

/// The smallest valid pipeline shape around one test stage: `compile` ([`compile`]), `unit`
/// after it running `unit`, `staging` and `production` ([`ok`]).
pub fn stages_testing_with(unit: impl Executor + 'static) -> Vec<Stage> {
    vec![
        Stage::build("compile").run(compile()),
        Stage::test("unit").after("compile").run(unit),
        Stage::stage("staging").run(ok()),
        Stage::deploy("production").run(ok()),
    ]
}

/// The default approval policy: [`APPROVERS`], 24 hours, no self-approval.
pub fn policy() -> ApprovalPolicy {
    ApprovalPolicy::any_of(APPROVERS).expect("valid approver names")
}

/// A delivery pipeline builder called `name` on `clock` with [`policy`] and no stages.
pub fn delivery(name: &str, clock: &ManualClock) -> PipelineBuilder<Delivery, WithApprovals> {
    delivery_with(name, clock, policy())
}

/// A delivery pipeline builder called `name` on `clock` with approval policy `policy` and no
/// stages (a builder takes its policy once, so tests that need another one start here).
pub fn delivery_with(
    name: &str,
    clock: &ManualClock,
    policy: ApprovalPolicy,
) -> PipelineBuilder<Delivery, WithApprovals> {
    Pipeline::<Delivery>::builder(name)
        .clock(clock.clone())
        .approvals(policy)
}

/// A deployment pipeline builder called `name` on `clock` with no stages.
pub fn deployment(name: &str, clock: &ManualClock) -> PipelineBuilder<Deployment> {
    Pipeline::<Deployment>::builder(name).clock(clock.clone())
}

/// A delivery pipeline builder `shop` on `clock` with [`policy`] and [`standard_stages`], for
/// tests that add gates or environments before building it.
pub fn standard_delivery(clock: &ManualClock) -> PipelineBuilder<Delivery, WithApprovals> {
    delivery("shop", clock).stages(standard_stages())
}

/// A deployment pipeline builder `shop` on `clock` with [`standard_stages`], for tests that
/// add gates or environments before building it.
pub fn standard_deployment(clock: &ManualClock) -> PipelineBuilder<Deployment> {
    deployment("shop", clock).stages(standard_stages())
}

/// The standard delivery pipeline `shop`.
pub fn delivery_pipeline(clock: &ManualClock) -> Pipeline<Delivery> {
    delivery_pipeline_with(clock, policy())
}

/// The standard delivery pipeline `shop` with approval policy `policy` instead of [`policy`].
pub fn delivery_pipeline_with(clock: &ManualClock, policy: ApprovalPolicy) -> Pipeline<Delivery> {
    delivery_with("shop", clock, policy)
        .stages(standard_stages())
        .build()
        .expect("the standard delivery pipeline is valid")
}

/// The standard deployment pipeline `shop`.
pub fn deployment_pipeline(clock: &ManualClock) -> Pipeline<Deployment> {
    standard_deployment(clock)
        .build()
        .expect("the standard deployment pipeline is valid")
}

/// The standard deployment pipeline `shop` with one gate, `gate`, on `mv`.
pub fn gated_deployment(
    clock: &ManualClock,
    mv: Move,
    gate: impl Gate + 'static,
) -> Pipeline<Deployment> {
    standard_deployment(clock)
        .gate(mv, gate)
        .build()
        .expect("the gated deployment pipeline is valid")
}

/// The smallest deployment pipeline `shop` around the given build stages: what a test of
/// what builds report (no artifact, two artifacts) starts from. See [`stages_after_build`].
pub fn deployment_building_with(
    clock: &ManualClock,
    build: impl IntoIterator<Item = Stage>,
) -> Pipeline<Deployment> {
    deployment("shop", clock)
        .stages(stages_after_build(build))
        .build()
        .expect("the minimal deployment pipeline is valid")
}

/// The smallest deployment pipeline `shop` whose `unit` test stage runs `unit`: what a test
/// of one stage's behaviour (failing, panicking, erroring) starts from. See
/// [`stages_testing_with`].
pub fn deployment_testing_with(
    clock: &ManualClock,
    unit: impl Executor + 'static,
) -> Pipeline<Deployment> {
    deployment("shop", clock)
        .stages(stages_testing_with(unit))
        .build()
        .expect("the minimal deployment pipeline is valid")
}

/// Revision `id` by [`AUTHOR`].
pub fn revision(id: &str) -> Revision {
    Revision::new(id, AUTHOR).expect("valid revision")
}

/// Starts release `id` of revision `rev` and builds it; returns it with its artifact.
pub fn built<M: Mode>(
    pipeline: &Pipeline<M>,
    id: &str,
    rev: &str,
) -> (Release<Built, M>, ArtifactRef) {
    block_on(async {
        let fresh = pipeline.start(id, revision(rev)).expect("valid release id");
        let built = fresh.build(pipeline).await.expect("build succeeds");
        let artifact = built.artifact().clone();
        (built, artifact)
    })
}

/// Starts release `id` of revision `rev` and drives it to Staged; returns it with its
/// artifact.
pub fn staged<M: Mode>(
    pipeline: &Pipeline<M>,
    id: &str,
    rev: &str,
) -> (Release<Staged, M>, ArtifactRef) {
    let (built, artifact) = built(pipeline, id, rev);
    let staged = block_on(async {
        let tested = built
            .test(pipeline, &artifact)
            .await
            .expect("test succeeds");
        tested
            .stage(pipeline, &artifact)
            .await
            .expect("stage succeeds")
    });
    (staged, artifact)
}

/// Something a recording executor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The stage's executor was entered.
    Start(String),
    /// The stage's executor was about to return.
    Finish(String),
}

/// The body of a recording executor: what the stage reports.
pub type Body = dyn Fn(&StageContext<'_>) -> Result<StageOutcome, ExecutorError> + Send + Sync;

/// A shared log of [`Event`]s, in the order they happened.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    /// An empty log.
    pub fn new() -> Self {
        Recorder::default()
    }

    fn push(&self, event: Event) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The stages that started, in order.
    pub fn started(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Start(s) => Some(s),
                Event::Finish(_) => None,
            })
            .collect()
    }

    /// An executor that records its start, yields `yields` times to the runtime, records its
    /// finish, and returns what `body` says.
    pub fn executor<F>(&self, yields: usize, body: F) -> impl Executor + use<F>
    where
        F: Fn(&StageContext<'_>) -> Result<StageOutcome, ExecutorError> + Send + Sync + 'static,
    {
        let recorder = self.clone();
        let body: Arc<Body> = Arc::new(body);
        from_async_fn(move |ctx| {
            let recorder = recorder.clone();
            let body = Arc::clone(&body);
            Box::pin(async move {
                let stage = ctx.stage().to_string();
                recorder.push(Event::Start(stage.clone()));
                for _ in 0..yields {
                    yield_now().await;
                }
                let outcome = body(&ctx);
                recorder.push(Event::Finish(stage));
                outcome
            })
        })
    }

    /// A recording executor that succeeds.
    pub fn ok(&self, yields: usize) -> impl Executor + use<> {
        self.executor(yields, |_| Ok(StageOutcome::success()))
    }
}

/// A future that returns `Pending` once (after waking its task) and then `Ready`: a real
/// yield to whatever polls it, unlike `futures::future::ready(())`.
#[derive(Debug, Default)]
pub struct YieldNow {
    yielded: bool,
}

/// Yields once to the runtime.
pub fn yield_now() -> YieldNow {
    YieldNow::default()
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// A barrier for futures: [`Rendezvous::arrive`] completes only once `parties` arrivals have
/// happened, so tasks that all arrive can finish only if they run concurrently.
#[derive(Debug, Clone)]
pub struct Rendezvous(Arc<Mutex<RendezvousState>>);

#[derive(Debug)]
struct RendezvousState {
    parties: usize,
    arrived: usize,
    waiting: Vec<Waker>,
}

impl Rendezvous {
    /// A rendezvous of `parties` tasks.
    pub fn new(parties: usize) -> Self {
        Rendezvous(Arc::new(Mutex::new(RendezvousState {
            parties,
            arrived: 0,
            waiting: Vec::new(),
        })))
    }

    /// Arrives, and waits for the others.
    pub fn arrive(&self) -> Arrive {
        Arrive {
            rendezvous: self.clone(),
            counted: false,
        }
    }

    /// How many have arrived.
    pub fn arrived(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .arrived
    }
}

/// The future of one [`Rendezvous::arrive`].
#[derive(Debug)]
pub struct Arrive {
    rendezvous: Rendezvous,
    counted: bool,
}

impl Future for Arrive {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let first_poll = !self.counted;
        self.counted = true;
        let mut state = self
            .rendezvous
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first_poll {
            state.arrived += 1;
        }
        if state.arrived >= state.parties {
            for waker in state.waiting.drain(..) {
                waker.wake();
            }
            Poll::Ready(())
        } else {
            state.waiting.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Polls `future` with a no-op waker at most `max_polls` times; `None` if it did not finish.
/// Unlike `block_on`, a future that can never finish fails the test instead of hanging it.
pub fn poll_at_most<F: Future>(future: F, max_polls: usize) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    (0..max_polls).find_map(|_| match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    })
}

/// The chain key of every test journal: the host's secret, which an attacker who can only
/// write the store does not have.
pub fn chain_key() -> tollgate::journal::ChainKey {
    tollgate::journal::ChainKey::derive(b"tollgate tests: the host's secret")
}

/// A [`MemoryJournal`](tollgate::journal::MemoryJournal) a pipeline writes to and a test
/// keeps a handle on, to read it or to tamper with it (`entries_mut`) as someone who can
/// write the store would. Clones share the journal.
#[derive(Debug, Clone)]
pub struct SharedJournal(pub Arc<tollgate::journal::MemoryJournal>);

impl SharedJournal {
    /// An empty journal chained under [`chain_key`].
    pub fn new() -> Self {
        SharedJournal::with_key(chain_key())
    }

    /// An empty journal chained under `key`.
    pub fn with_key(key: tollgate::journal::ChainKey) -> Self {
        SharedJournal(Arc::new(tollgate::journal::MemoryJournal::new(key)))
    }

    /// A journal chained under `key` holding exactly `entries` as stored, unchecked: what a
    /// store holds after someone wrote it by hand.
    pub fn holding(
        key: tollgate::journal::ChainKey,
        entries: Vec<tollgate::journal::Stored>,
    ) -> Self {
        let journal = SharedJournal::with_key(key);
        journal.0.entries_mut(|e| *e = entries);
        journal
    }

    /// A copy of the stored entries.
    pub fn entries(&self) -> Vec<tollgate::journal::Stored> {
        self.0.entries_mut(|e| e.clone())
    }
}

impl std::ops::Deref for SharedJournal {
    type Target = tollgate::journal::MemoryJournal;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[async_trait::async_trait]
impl tollgate::journal::Journal for SharedJournal {
    async fn append(
        &self,
        entries: Vec<tollgate::journal::Entry>,
    ) -> Result<tollgate::journal::Seq, tollgate::journal::JournalError> {
        self.0.append(entries).await
    }

    async fn read(
        &self,
        from: tollgate::journal::Seq,
        limit: usize,
    ) -> Result<Vec<tollgate::journal::Stored>, tollgate::journal::JournalError> {
        self.0.read(from, limit).await
    }

    async fn read_key(
        &self,
        key: &str,
    ) -> Result<Vec<tollgate::journal::Stored>, tollgate::journal::JournalError> {
        self.0.read_key(key).await
    }

    async fn head(
        &self,
    ) -> Result<
        (tollgate::journal::Seq, tollgate::journal::ChainHash),
        tollgate::journal::JournalError,
    > {
        self.0.head().await
    }

    fn key(&self) -> &tollgate::journal::ChainKey {
        self.0.key()
    }
}

/// The facts `journal` holds, as JSON, in journal order (one value per entry).
pub fn fact_values(journal: &SharedJournal) -> Vec<serde_json::Value> {
    journal
        .entries()
        .iter()
        .map(|s| serde_json::from_slice(&s.payload).expect("every entry is a JSON fact"))
        .collect()
}

/// A journal chained under [`chain_key`] holding `facts` (JSON), in order: what someone who
/// holds the key can write, including facts the pipeline would never write.
pub fn forged(facts: &[serde_json::Value]) -> SharedJournal {
    let journal = SharedJournal::new();
    let entries = facts
        .iter()
        .map(|value| {
            serde_json::from_value::<tollgate::fact::Fact>(value.clone())
                .unwrap_or_else(|e| panic!("not a fact: {e}: {value}"))
                .to_entry()
        })
        .collect();
    block_on(tollgate::journal::Journal::append(&journal, entries))
        .expect("an unconditional append to a memory journal succeeds");
    journal
}

/// Edits the JSON payload of entry `index` of `journal` in place, without the key: the
/// entry keeps its MAC, as after an edit of the store by someone who cannot recompute it.
pub fn edit_without_key(
    journal: &SharedJournal,
    index: usize,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    journal.entries_mut(|entries| {
        let stored = &mut entries[index];
        let mut value: serde_json::Value =
            serde_json::from_slice(&stored.payload).expect("a JSON fact");
        edit(&mut value);
        stored.payload = serde_json::to_vec(&value).expect("JSON serializes");
    });
}

/// Appends `facts` (JSON) to `journal` as someone without the key would: each entry where it
/// belongs (its sequence number, the MAC of the entry before it, the previous entry of its
/// key), but with a MAC computed under a guessed key.
pub fn append_without_key(journal: &SharedJournal, facts: &[serde_json::Value]) {
    let guess = SharedJournal::holding(
        tollgate::journal::ChainKey::derive(b"a guess at the host's secret"),
        journal.entries(),
    );
    let before = guess.len();
    let entries = facts
        .iter()
        .map(|value| {
            serde_json::from_value::<tollgate::fact::Fact>(value.clone())
                .unwrap_or_else(|e| panic!("not a fact: {e}: {value}"))
                .to_entry()
        })
        .collect();
    block_on(tollgate::journal::Journal::append(&guess, entries))
        .expect("an unconditional append to a memory journal succeeds");
    let mut all = guess.entries();
    let added = all.split_off(before);
    journal.entries_mut(|entries| entries.extend(added));
}

/// The index of the first fact of kind `fact` (`"moved"`, `"gates"`, ...) whose `field` is
/// `value` (as a string), at or after `from`.
pub fn find_fact(
    facts: &[serde_json::Value],
    from: usize,
    fact: &str,
    field: &str,
    value: &str,
) -> usize {
    facts
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, f)| f["fact"] == fact && f[field] == value)
        .map_or_else(
            || panic!("no {fact} fact with {field} = {value} from {from} on"),
            |(i, _)| i,
        )
}

/// Replaces every JSON string equal to `from` in `value` by `to`.
pub fn replace_strings(value: &mut serde_json::Value, from: &str, to: &str) {
    match value {
        serde_json::Value::String(s) if s == from => to.clone_into(s),
        serde_json::Value::Array(items) => {
            for item in items {
                replace_strings(item, from, to);
            }
        }
        serde_json::Value::Object(fields) => {
            for item in fields.values_mut() {
                replace_strings(item, from, to);
            }
        }
        _ => {}
    }
}

/// Asserts that `result` is the chain's refusal: an entry that is not where the chain says
/// (edited, removed, moved, or written without the key).
#[track_caller]
pub fn assert_chain_refuses<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(Error::Fact(tollgate::fact::FactError::Journal(
            tollgate::journal::JournalError::Corrupt { .. },
        ))) => {}
        other => panic!("the chain check must refuse the journal, got {other:?}"),
    }
}

/// Asserts that `result` is the replay's refusal of a history the pipeline could not have
/// written, with `needle` in its message; returns the message.
#[track_caller]
pub fn assert_replay_refuses<T: std::fmt::Debug>(result: Result<T, Error>, needle: &str) -> String {
    match result {
        Err(error @ Error::Fact(tollgate::fact::FactError::Inconsistent { .. })) => {
            assert_eq!(error.kind(), ErrorKind::Release);
            let message = error.to_string();
            assert!(
                message.contains(needle),
                "{message:?} should say {needle:?}"
            );
            message
        }
        other => panic!("the replay must refuse the history as inconsistent, got {other:?}"),
    }
}
