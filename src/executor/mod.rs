//! What runs a stage: the [`Executor`] trait, the [`StageContext`] it is given and the
//! [`StageOutcome`] it returns, plus closure executors ([`from_fn`], [`from_async_fn`]).
//!
//! An executor is one async function. The engine decides when to call it; the executor
//! decides what "running a stage" means (a closure, a process, a remote job).
//!
//! The engine cuts a stage off (a timeout, a cancel, a failing sibling under fail-fast) by
//! dropping the executor's future at whatever `.await` it is waiting on: whatever the stage
//! started must end in that future's `Drop`, and what it logged until then survives only
//! through its [`PartialLog`]. `ProcessExecutor` (feature `process`, Unix) does both, and
//! documents what it guarantees about the processes a stage starts, and on which systems.

mod closure;
#[cfg(all(feature = "process", unix))]
mod process;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::artifact::ArtifactRef;
use crate::environment::Environment;
use crate::forward::forward_impls;
use crate::graph::{StageGraph, StageSpec};
use crate::id::{ReleaseId, StageId};
use crate::lifecycle::Step;
use crate::time::Clock;

pub use closure::{AsyncFnExecutor, FnExecutor, from_async_fn, from_fn};
#[cfg(all(feature = "process", unix))]
pub use process::{CommandTable, ProcessError, ProcessExecutor};

/// The error an executor returns when it could not run a stage at all (as opposed to running
/// it and seeing it fail, which is a [`StageOutcome::failure`]).
pub type ExecutorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An [`ExecutorError`] kept after its stage ended: by the stage's report
/// ([`StageReport::error`](crate::engine::StageReport::error)) and as the `#[source]` of
/// [`Error::StageFailed`](crate::Error::StageFailed), so that a host can tell what went wrong
/// by type rather than by message.
///
/// It dereferences to the error itself (`dyn Error + Send + Sync`), so `downcast_ref` finds
/// the executor's own type, and `Error::source` of the `StageFailed` error is that error, not
/// this wrapper. Shared, so reports stay cheap to clone. It lives in memory only: a report's
/// serde form carries the message in the stage's status (`executor error: …`), and a report
/// read back has no error (reports compare equal regardless of it).
///
/// ```
/// use tollgate::executor::SharedError;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("runner `{0}` unreachable")]
/// struct Unreachable(String);
///
/// let kept = SharedError::new(Box::new(Unreachable("ci-7".to_owned())));
/// assert_eq!(kept.to_string(), "runner `ci-7` unreachable");
/// assert_eq!(kept.downcast_ref::<Unreachable>().map(|u| u.0.as_str()), Some("ci-7"));
/// assert!(kept.source().is_none());
/// ```
#[derive(Clone)]
pub struct SharedError(Arc<ExecutorError>);

impl SharedError {
    /// Keeps `error`.
    #[must_use]
    pub fn new(error: ExecutorError) -> Self {
        SharedError(Arc::new(error))
    }
}

impl From<ExecutorError> for SharedError {
    fn from(error: ExecutorError) -> Self {
        SharedError::new(error)
    }
}

impl std::ops::Deref for SharedError {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &**self.0
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Named outputs of a stage, readable by the stages that depend on it.
pub type Outputs = BTreeMap<String, String>;

/// A stage asked for the outputs of a stage it may not read: one the graph does not run
/// before it ([`StageContext::output`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The stage is in the graph, but not among the reader's dependencies, direct or not:
    /// nothing orders it before the reader.
    #[error(
        "stage `{reader}` reads the outputs of `{stage}`, which the graph does not run before it"
    )]
    NotBefore {
        /// The stage that asked.
        reader: StageId,
        /// The stage it asked for.
        stage: StageId,
    },
    /// No stage of the graph has this id.
    #[error("stage `{reader}` reads the outputs of `{}`, which is not a stage of the graph", crate::id::quoted(.stage))]
    UnknownStage {
        /// The stage that asked.
        reader: StageId,
        /// The id it asked for, as given.
        stage: String,
    },
}

/// The slot of a stage that is not in the step being run.
pub(crate) const NOT_IN_STEP: u32 = u32::MAX;

/// The outputs of a step's stages as they finish, shared by the step run and every stage
/// context, so that a stage reads any earlier stage's outputs without a copy: each slot is
/// written once, when its stage succeeds, before any stage that may read it starts.
#[derive(Debug, Default)]
pub(crate) struct StepOutputs {
    /// The slot of each graph index among the step's stages, or [`NOT_IN_STEP`].
    pub(crate) slot_of: Vec<u32>,
    /// Each slot's outputs, once its stage succeeded with some.
    pub(crate) outputs: Vec<OnceLock<Arc<Outputs>>>,
    /// What attempts that were cut off left of their logs.
    pub(crate) partial_logs: PartialLogs,
}

/// Runs one stage.
///
/// Implement the one method; the engine handles ordering, concurrency and failure. The
/// returned future must be `Send` so that any multi-threaded runtime can drive it, and it must
/// not block: do blocking work on a thread of your own. A poll that blocks holds up every
/// other stage of the step (and whatever else shares the thread); the engine times it on
/// the pipeline's clock, times the attempt out if the poll took it past its deadline, and
/// warns once per stage (see the [`engine`](crate::engine) module, *Host code that
/// misbehaves*).
///
/// ```
/// use async_trait::async_trait;
/// use tollgate::executor::{Executor, ExecutorError, StageContext, StageOutcome};
///
/// struct Echo;
///
/// #[async_trait]
/// impl Executor for Echo {
///     async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
///         Ok(StageOutcome::success().log(format!("running {}", ctx.stage())))
///     }
/// }
///
/// let stage = tollgate::pipeline::Stage::test("unit").run(Echo);
/// # let _ = stage;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate executor",
    label = "this type does not implement `tollgate::executor::Executor`",
    note = "wrap a closure with `tollgate::executor::from_fn(|ctx| ...)`, or implement `async fn run(&self, ctx: StageContext<'_>)` with `#[async_trait]`"
)]
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs the stage described by `ctx` and reports how it went.
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError>;

    /// What the executor is, for the pipeline's fingerprint: two pipelines whose stages run
    /// different executors are different pipelines, and one does not restore the other's
    /// releases. By default the executor's type name (for a closure, where it is written);
    /// override it with a stable name (a command line, a job's id) so that a rebuilt binary
    /// still restores the releases its predecessor started.
    fn name(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(std::any::type_name::<Self>())
    }
}

forward_impls! {
    #[async_trait]
    impl Executor {
        async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError>;
        fn name(&self) -> std::borrow::Cow<'_, str>;
    }
}

/// A type-erased executor, for registries that mix implementations.
pub type BoxExecutor = Box<dyn Executor>;

/// Everything an executor may know about the stage it runs.
pub struct StageContext<'a> {
    pub(crate) spec: &'a StageSpec,
    /// What every stage of the step shares, held once by the step run.
    pub(crate) labels: &'a StepLabels<'a>,
    // No more fields without need: at 128 bytes a context still moves without a `memcpy`
    // call, and every attempt moves it twice (into the executor's future and in it).
    pub(crate) inputs: Vec<(&'a StageId, Arc<Outputs>)>,
    pub(crate) attempt: u32,
    /// The stage's slot among the step's stages, for its partial log.
    pub(crate) slot: u32,
    pub(crate) step_outcome: Option<StepOutcome>,
    /// For a finally stage, how each direct dependency ended; empty for an ordinary stage,
    /// whose dependencies all succeeded.
    pub(crate) dependencies: Vec<(&'a StageId, StageStatus)>,
    /// The attempt's partial log, made the first time it is asked for: most executors never
    /// ask, and a context then costs the step's shared log no reference count.
    pub(crate) partial_log: OnceLock<PartialLog>,
    /// The attempt's idempotency key, made the first time it is asked for: most executors
    /// never ask, and they pay nothing for it.
    pub(crate) key: OnceLock<Box<str>>,
}

/// What an executor is told about the step run its stage belongs to, the same for every
/// stage: kept once by the run, so that each attempt's context (which lives as long as the
/// attempt runs) holds one reference instead of a copy of each.
#[derive(Clone, Copy)]
pub(crate) struct StepLabels<'a> {
    /// The graph the step belongs to.
    pub graph: &'a StageGraph,
    /// The pipeline's clock.
    pub clock: &'a dyn Clock,
    /// The outputs of stages of earlier steps.
    pub prior_outputs: &'a BTreeMap<StageId, Arc<Outputs>>,
    /// The outputs of this step's stages as they finish (see [`StageContext::output`]):
    /// empty until the step run fills it, once; a fresh cell for every run.
    pub outputs: &'a OnceLock<StepOutputs>,
    /// The release being moved.
    pub release: &'a ReleaseId,
    /// The id of its source revision.
    pub revision: &'a str,
    /// Its artifact, after the build step.
    pub artifact: Option<&'a ArtifactRef>,
    /// The environment the step deploys to, if it deploys.
    pub environment: Option<&'a Environment>,
    /// The journal position of the claim that opened the move's run (0 outside a pipeline),
    /// for the idempotency keys.
    pub claim: u64,
}

impl fmt::Debug for StepLabels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepLabels")
            .field("release", self.release)
            .field("revision", &self.revision)
            .field("artifact", &self.artifact.map(|a| &a.digest))
            .field("environment", &self.environment)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for StageContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageContext")
            .field("stage", &self.spec.id)
            .field("release", self.labels.release)
            .field("attempt", &self.attempt)
            .field("artifact", &self.labels.artifact.map(|a| &a.digest))
            .field("environment", &self.labels.environment)
            .field("step_outcome", &self.step_outcome)
            .finish_non_exhaustive()
    }
}

impl<'a> StageContext<'a> {
    /// The stage's id.
    #[must_use]
    pub fn stage(&self) -> &'a StageId {
        &self.spec.id
    }

    /// The stage's full definition.
    #[must_use]
    pub fn spec(&self) -> &'a StageSpec {
        self.spec
    }

    /// The lifecycle step being run.
    #[must_use]
    pub fn step(&self) -> Step {
        self.spec.step
    }

    /// The release being moved.
    #[must_use]
    pub fn release(&self) -> &'a ReleaseId {
        self.labels.release
    }

    /// The id of the source revision the release was started from (a commit SHA, a tag).
    #[must_use]
    pub fn revision(&self) -> &'a str {
        self.labels.revision
    }

    /// The release's artifact: `None` during the build step (which produces it), `Some` in
    /// every later step.
    #[must_use]
    pub fn artifact(&self) -> Option<&'a ArtifactRef> {
        self.labels.artifact
    }

    /// The environment the step deploys to: staging in the stage step, the target in the
    /// deploy step, `None` otherwise.
    #[must_use]
    pub fn environment(&self) -> Option<&'a Environment> {
        self.labels.environment
    }

    /// The output `key` of `stage`, which may be any stage the graph runs before this one
    /// (a direct dependency, or a dependency of one, in this step or an earlier one):
    /// `Ok(None)` if it produced no such output (or did not run), and an [`OutputError`]
    /// naming both stages if the graph does not order `stage` before this one, so a typo
    /// or a missing `after` is an error, not a silent empty value.
    ///
    /// ```
    /// use tollgate::engine::Engine;
    /// use tollgate::executor::{self, OutputError, StageOutcome};
    /// use tollgate::graph::{StageGraph, StageSpec, Step};
    /// use tollgate::id::ReleaseId;
    /// use tollgate::time::{ManualClock, Timestamp, run_virtual};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::test("version"))
    ///     .stage(StageSpec::test("unit").after("version"))
    ///     .stage(StageSpec::test("lint"))
    ///     .stage(StageSpec::test("publish").after("unit").after("lint"))
    ///     .build()?;
    /// let stages = executor::from_fn(|ctx| match ctx.stage().as_str() {
    ///     "version" => Ok(StageOutcome::success().output("v", "1.4.0")),
    ///     "publish" => {
    ///         // `version` is a dependency of a dependency: readable.
    ///         let v = ctx.output("version", "v")?.unwrap_or("none").to_owned();
    ///         Ok(StageOutcome::success().output("published", v))
    ///     }
    ///     "lint" => match ctx.output("unit", "anything") {
    ///         // `unit` may run at the same time as `lint`: refused, naming both.
    ///         Err(OutputError::NotBefore { .. }) => Ok(StageOutcome::success()),
    ///         other => Ok(StageOutcome::failure(format!("{other:?}"))),
    ///     },
    ///     _ => Ok(StageOutcome::success()),
    /// });
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let release = ReleaseId::new("r1")?;
    /// let engine = Engine::new();
    /// let report = run_virtual(&clock, engine.run_graph(&graph, Step::Test, &stages, &clock, &release, "4f2a9c1"));
    /// assert!(report.succeeded(), "{report:?}");
    /// assert_eq!(report.stage("publish").unwrap().outputs["published"], "1.4.0");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn output(&self, stage: &str, key: &str) -> Result<Option<&str>, OutputError> {
        Ok(self
            .outputs_of(stage)?
            .and_then(|outputs| outputs.get(key))
            .map(String::as_str))
    }

    /// Every output of `stage`, which must be a stage the graph runs before this one (see
    /// [`output`](Self::output)); `Ok(None)` if it produced none.
    pub fn outputs_of(&self, stage: &str) -> Result<Option<&Outputs>, OutputError> {
        let graph = self.labels.graph;
        let Some(wanted) = graph.index_of(stage) else {
            return Err(OutputError::UnknownStage {
                reader: self.spec.id.clone(),
                stage: stage.to_owned(),
            });
        };
        let reader = graph.index_of(self.spec.id.as_str()).unwrap_or(usize::MAX);
        if !runs_before(graph, wanted, reader) {
            return Err(OutputError::NotBefore {
                reader: self.spec.id.clone(),
                stage: graph.spec(wanted).id.clone(),
            });
        }
        let table = self.labels.outputs.get();
        let outputs = match table.and_then(|t| t.slot_of.get(wanted)) {
            Some(&slot) if slot != NOT_IN_STEP => table
                .and_then(|t| t.outputs.get(slot as usize))
                .and_then(OnceLock::get),
            _ => self.labels.prior_outputs.get(stage),
        };
        Ok(outputs.map(|o| &**o))
    }

    /// The output `key` of the dependency `stage`. Only direct dependencies are visible
    /// here; [`output`](Self::output) reads any earlier stage.
    #[must_use]
    pub fn input(&self, stage: &str, key: &str) -> Option<&str> {
        self.inputs
            .iter()
            .find(|(id, _)| id.as_str() == stage)
            .and_then(|(_, outputs)| outputs.get(key))
            .map(String::as_str)
    }

    /// Every output of every direct dependency, by dependency (dependencies that produced no
    /// outputs are not listed).
    pub fn inputs(&self) -> impl Iterator<Item = (&StageId, &Outputs)> + '_ {
        self.inputs.iter().map(|(id, o)| (*id, &**o))
    }

    /// Which attempt this is, starting at 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The pipeline's clock: wait on it (`ctx.clock().sleep(d).await`) rather than on a
    /// runtime timer, so that the stage also runs in virtual time.
    #[must_use]
    pub fn clock(&self) -> &'a dyn Clock {
        self.labels.clock
    }

    /// For a finally stage, how the step's ordinary stages ended; `None` for ordinary stages.
    #[must_use]
    pub fn step_outcome(&self) -> Option<StepOutcome> {
        self.step_outcome
    }

    /// How each direct dependency of the stage ended.
    ///
    /// Only a finally stage can see anything but success here: an ordinary stage starts once
    /// every dependency succeeded, and a dependency in an earlier step succeeded with its step.
    pub fn dependencies(&self) -> impl Iterator<Item = (&StageId, &StageStatus)> + '_ {
        static SUCCEEDED: StageStatus = StageStatus::Succeeded;
        let finally = self.step_outcome.is_some();
        let ordinary = (!finally).then(|| self.spec.after.iter().map(|id| (id, &SUCCEEDED)));
        let finally = self.dependencies.iter().map(|(id, status)| (*id, status));
        ordinary.into_iter().flatten().chain(finally)
    }

    /// Where to leave this attempt's log if it is cut off before it returns an outcome; see
    /// [`PartialLog`].
    #[must_use]
    pub fn partial_log(&self) -> &PartialLog {
        self.partial_log.get_or_init(|| {
            // The step run fills the table before any stage starts; a context made outside
            // one keeps its log to itself.
            let logs = self
                .labels
                .outputs
                .get()
                .map(|table| table.partial_logs.clone())
                .unwrap_or_default();
            logs.attempt(self.slot, self.attempt)
        })
    }

    /// This attempt's idempotency key: the same for attempt *n* of this stage in this run of
    /// the move, however often the run is taken over after a crash, and different for every
    /// other attempt, stage, step, release or run. Hand it to the services a stage calls
    /// (a deploy API's idempotency key or client token), or keep it yourself, to tell a
    /// first run from a retry of work that may already have been done.
    ///
    /// It is [`idempotency_key`] of the release, the step, the stage, the run's claim and
    /// the attempt number, where the run's claim is the journal position of the gates'
    /// verdicts that opened the move: a copy of the release that takes the move over after
    /// a crash (`Pipeline::restore`, then the same move) continues that run, so its attempts
    /// get the keys the crashed ones had; a move tried again after it was refused (a failed
    /// step, a closed gate) is a new run with new keys. The key is recorded with each
    /// stage's end in the journal. Outside a pipeline ([`Engine::run_graph`]) the claim is
    /// 0, and keys repeat from one call to the next.
    ///
    /// A process executor gets it as `TOLLGATE_IDEMPOTENCY_KEY`.
    ///
    /// [`Engine::run_graph`]: crate::engine::Engine::run_graph
    ///
    /// ```
    /// use tollgate::engine::Engine;
    /// use tollgate::executor::{self, StageOutcome, idempotency_key};
    /// use tollgate::graph::{StageGraph, StageSpec, Step};
    /// use tollgate::id::{ReleaseId, StageId};
    /// use tollgate::time::{ManualClock, Timestamp, run_virtual};
    ///
    /// let graph = StageGraph::builder().stage(StageSpec::deploy("migrate")).build()?;
    /// let migrate = executor::from_fn(|ctx| {
    ///     Ok(StageOutcome::success().output("key", ctx.idempotency_key()))
    /// });
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let release = ReleaseId::new("r1")?;
    /// let engine = Engine::new();
    /// let run = engine.run_graph(&graph, Step::Deploy, &migrate, &clock, &release, "4f2a9c1");
    /// let report = run_virtual(&clock, run);
    /// let expected = idempotency_key(&release, Step::Deploy, &StageId::new("migrate")?, 0, 1);
    /// assert_eq!(report.stage("migrate").unwrap().outputs["key"], expected);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn idempotency_key(&self) -> &str {
        self.key.get_or_init(|| {
            let labels = self.labels;
            idempotency_key(
                labels.release,
                self.step(),
                self.stage(),
                labels.claim,
                self.attempt,
            )
            .into_boxed_str()
        })
    }
}

/// The idempotency key of attempt `attempt` of stage `stage` of step `step` of release
/// `release`, in the run of the move opened by the claim at journal position `claim` (see
/// [`StageContext::idempotency_key`]).
///
/// It is the SHA-256 of those five parts (each length-prefixed, so no two lists of parts
/// give the same bytes whatever the ids hold), as 64 lower-case hex digits: a fixed length
/// and alphabet that every service taking idempotency keys accepts (some take at most 64
/// characters), unlike the ids themselves, which may hold `/`, spaces or 256 bytes each.
///
/// ```
/// use tollgate::executor::idempotency_key;
/// use tollgate::graph::Step;
/// use tollgate::id::{ReleaseId, StageId};
///
/// let release = ReleaseId::new("r1")?;
/// let stage = StageId::new("migrate")?;
/// let key = idempotency_key(&release, Step::Deploy, &stage, 7, 1);
/// assert_eq!(key.len(), 64);
/// assert_eq!(key, idempotency_key(&release, Step::Deploy, &stage, 7, 1));
/// assert_ne!(key, idempotency_key(&release, Step::Deploy, &stage, 7, 2));
/// assert_ne!(key, idempotency_key(&release, Step::Deploy, &stage, 9, 1));
/// # Ok::<(), tollgate::id::IdError>(())
/// ```
#[must_use]
pub fn idempotency_key(
    release: &ReleaseId,
    step: Step,
    stage: &StageId,
    claim: u64,
    attempt: u32,
) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tollgate-idempotency-v1");
    for part in [release.as_str(), step.as_str(), stage.as_str()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.update(claim.to_le_bytes());
    hash.update(attempt.to_le_bytes());
    crate::artifact::to_hex(&hash.finalize())
}

/// Whether the graph runs stage `earlier` before stage `later`: `earlier` is among the
/// dependencies of `later`, direct or not. A walk against the edges from `later`, iterative,
/// over its ancestors only.
fn runs_before(graph: &StageGraph, earlier: usize, later: usize) -> bool {
    if later >= graph.len() {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![later];
    while let Some(stage) = stack.pop() {
        for &d in graph.deps_of(stage) {
            let d = d as usize;
            if d == earlier {
                return true;
            }
            if seen.insert(d) {
                stack.push(d);
            }
        }
    }
    false
}

/// Where an executor leaves the log of an attempt that is cut off.
///
/// The engine cuts an attempt off (its timeout or the stage's, the step's timeout, a cancel,
/// a failing sibling under fail-fast) by dropping the executor's future, which then never
/// returns its [`StageOutcome`]. The lines last handed to [`keep`](PartialLog::keep) before or
/// while that future is dropped (typically from a `Drop` impl of something the future owns)
/// become that attempt's part of the stage's log. An attempt that returns an outcome is logged
/// from its outcome, and what it kept is discarded.
///
/// ```
/// use async_trait::async_trait;
/// use tollgate::executor::{Executor, ExecutorError, LogLine, PartialLog, StageContext, StageOutcome, Stream};
///
/// /// Leaves what it has logged so far if it is dropped before it finishes.
/// struct Progress {
///     lines: Vec<LogLine>,
///     partial: PartialLog,
/// }
///
/// impl Drop for Progress {
///     fn drop(&mut self) {
///         self.partial.keep(std::mem::take(&mut self.lines));
///     }
/// }
///
/// struct Slow;
///
/// #[async_trait]
/// impl Executor for Slow {
///     async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
///         let mut progress = Progress { lines: Vec::new(), partial: ctx.partial_log().clone() };
///         progress.lines.push(LogLine { stream: Stream::Stdout, text: "step 1 of 2".into() });
///         ctx.clock().sleep(std::time::Duration::from_secs(3600)).await;
///         let mut outcome = StageOutcome::success();
///         outcome.logs = std::mem::take(&mut progress.lines);
///         Ok(outcome)
///     }
/// }
/// # let _ = Slow;
/// ```
#[derive(Clone)]
pub struct PartialLog {
    kept: PartialLogs,
    slot: u32,
    attempt: u32,
}

impl PartialLog {
    /// Makes `lines` this attempt's log if it is cut off, replacing what it kept before.
    pub fn keep(&self, lines: Vec<LogLine>) {
        let mut kept = self.kept.lock();
        kept.retain(|(slot, attempt, _)| (*slot, *attempt) != (self.slot, self.attempt));
        kept.push((self.slot, self.attempt, lines));
    }
}

impl fmt::Debug for PartialLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialLog")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// What one cut-off attempt kept: its stage's slot in the step, its number, its lines.
type Kept = (u32, u32, Vec<LogLine>);

/// The partial logs of a step's attempts, by (stage slot, attempt number): one allocation per
/// step, shared by every attempt's [`PartialLog`].
#[derive(Clone, Default)]
pub(crate) struct PartialLogs(Arc<Mutex<Vec<Kept>>>);

impl fmt::Debug for PartialLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialLogs").finish_non_exhaustive()
    }
}

impl PartialLogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        // Nothing but pushes and removals happen under the lock: a poisoned one is consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle for attempt `attempt` of the stage in `slot`.
    pub(crate) fn attempt(&self, slot: u32, attempt: u32) -> PartialLog {
        PartialLog {
            kept: self.clone(),
            slot,
            attempt,
        }
    }

    /// What attempt `attempt` of the stage in `slot` kept, if anything.
    pub(crate) fn take(&self, slot: u32, attempt: u32) -> Vec<LogLine> {
        let mut kept = self.lock();
        match kept
            .iter()
            .position(|(s, a, _)| (*s, *a) == (slot, attempt))
        {
            Some(i) => kept.swap_remove(i).2,
            None => Vec::new(),
        }
    }
}

/// How a step ended, as finally stages see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Every ordinary stage succeeded.
    Succeeded,
    /// At least one stage failed.
    Failed,
    /// The step was cancelled.
    Cancelled,
    /// The step ran out of time.
    TimedOut,
}

/// How a stage ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StageStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed, or its executor could not run it, or it panicked.
    Failed {
        /// Why, in the executor's words.
        reason: String,
    },
    /// It ran out of time: an attempt timeout (on the last attempt), the stage timeout, or
    /// the step timeout.
    TimedOut {
        /// Which limit ran out.
        limit: TimeoutKind,
    },
    /// It was running when the step was stopped (another stage failed under fail-fast, or
    /// the step was cancelled).
    Cancelled,
    /// It never started, because a stage it depends on did not succeed or the step stopped.
    Skipped,
}

impl StageStatus {
    /// Whether the stage succeeded.
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, StageStatus::Succeeded)
    }
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageStatus::Succeeded => f.write_str("succeeded"),
            StageStatus::Failed { reason } => write!(f, "failed: {reason}"),
            StageStatus::TimedOut { limit } => write!(f, "timed out ({limit})"),
            StageStatus::Cancelled => f.write_str("cancelled"),
            StageStatus::Skipped => f.write_str("skipped"),
        }
    }
}

/// Which time limit cut a stage (or an attempt) off ([`StageStatus::TimedOut`]).
///
/// Its serde form is the lower-case name (`"attempt"`, `"stage"`, `"step"`); the texts of
/// earlier versions (`"attempt timeout"`, …) are read too, so stored reports still load. It
/// displays as the limit's full name, as messages always said it:
///
/// ```
/// use tollgate::executor::{StageStatus, TimeoutKind};
///
/// let status = StageStatus::TimedOut { limit: TimeoutKind::Attempt };
/// assert_eq!(status.to_string(), "timed out (attempt timeout)");
/// assert_eq!(serde_json::to_string(&TimeoutKind::Step)?, r#""step""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    /// The attempt's own limit ([`StageSpec::attempt_timeout`]), on the stage's last
    /// attempt.
    #[serde(alias = "attempt timeout")]
    Attempt,
    /// The stage's limit over all its attempts and backoffs ([`StageSpec::timeout`]).
    #[serde(alias = "stage timeout")]
    Stage,
    /// The step's limit
    /// ([`EngineBuilder::step_timeout`](crate::engine::EngineBuilder::step_timeout)).
    #[serde(alias = "step timeout")]
    Step,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Attempt => "attempt timeout",
            TimeoutKind::Stage => "stage timeout",
            TimeoutKind::Step => "step timeout",
        })
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output, or a plain message from a closure executor.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a stage's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text, without its line ending.
    pub text: String,
}

/// What an executor reports: success or failure, log lines, named outputs and, for build
/// stages, the artifact produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageOutcome {
    /// Whether it succeeded ([`StageStatus::Succeeded`] or [`StageStatus::Failed`]).
    pub status: StageStatus,
    /// Its log.
    pub logs: Vec<LogLine>,
    /// Named outputs for dependent stages.
    pub outputs: Outputs,
    /// The artifact a build stage produced. Boxed: one stage in a pipeline makes an
    /// artifact, and every outcome would otherwise carry the room for one, which makes an
    /// outcome too big to move without a `memcpy` call (each attempt moves it several
    /// times).
    pub artifact: Option<Box<ArtifactRef>>,
}

impl StageOutcome {
    /// A successful outcome with nothing else to say.
    #[must_use]
    pub fn success() -> Self {
        StageOutcome {
            status: StageStatus::Succeeded,
            logs: Vec::new(),
            outputs: Outputs::new(),
            artifact: None,
        }
    }

    /// A failed outcome.
    #[must_use]
    pub fn failure(reason: impl Into<String>) -> Self {
        StageOutcome {
            status: StageStatus::Failed {
                reason: reason.into(),
            },
            ..StageOutcome::success()
        }
    }

    /// Adds a line to the log (standard output).
    #[must_use]
    pub fn log(mut self, text: impl Into<String>) -> Self {
        self.logs.push(LogLine {
            stream: Stream::Stdout,
            text: text.into(),
        });
        self
    }

    /// Adds a named output.
    #[must_use]
    pub fn output(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.outputs.insert(key.into(), value.into());
        self
    }

    /// Reports the artifact this (build) stage produced.
    #[must_use]
    pub fn artifact(mut self, artifact: ArtifactRef) -> Self {
        self.artifact = Some(Box::new(artifact));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_context_stays_within_128_bytes() {
        // Every attempt moves its context into the executor's future and again inside it;
        // past 128 bytes each move becomes a `memcpy` call, which cost the engine a quarter
        // of its time on wide graphs (benches/engine.rs) when two fields were added here.
        assert!(
            std::mem::size_of::<StageContext<'_>>() <= 128,
            "{}",
            std::mem::size_of::<StageContext<'_>>()
        );
    }

    #[test]
    fn a_timed_out_status_names_its_limit_and_reads_the_texts_of_stored_reports() {
        let status = StageStatus::TimedOut {
            limit: TimeoutKind::Stage,
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, r#"{"status":"timed_out","limit":"stage"}"#);
        assert_eq!(serde_json::from_str::<StageStatus>(&json).unwrap(), status);
        for (old, limit) in [
            ("attempt timeout", TimeoutKind::Attempt),
            ("stage timeout", TimeoutKind::Stage),
            ("step timeout", TimeoutKind::Step),
        ] {
            let stored = format!(r#"{{"status":"timed_out","limit":"{old}"}}"#);
            let read: StageStatus = serde_json::from_str(&stored).unwrap();
            assert_eq!(read, StageStatus::TimedOut { limit });
            assert_eq!(read.to_string(), format!("timed out ({old})"));
        }
    }
}
