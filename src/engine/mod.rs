//! Runs the stages of one lifecycle step: the [`Engine`] and its configuration, the
//! [`StepReport`] it returns, the [`Event`]s it emits, [`CancelHandle`], and dry-run
//! [`Plan`]s.
//!
//! Each stage starts as soon as every dependency in its step has succeeded (dependencies in
//! earlier steps succeeded before this step began) and a worker is free; among ready stages,
//! the one with the longest remaining critical path starts first. Stages are retried with
//! backoff and jitter, cut off by their timeouts, and finally stages run last whatever
//! happened. All waiting goes through the pipeline's [`Clock`], and the engine uses only
//! `futures`: no runtime is assumed, and virtual time works everywhere.
//!
//! # Ties and deadlines
//!
//! Every attempt that has finished is settled before any worker is handed out again, so
//! stages released by attempts that end at the same instant compete for the freed workers
//! by priority with the stages already waiting; [`Engine::plan`] follows the same rules and
//! predicts such a run exactly. At the same instant, work wins over its deadline: an
//! attempt that returns at its attempt, stage or step deadline succeeded, and a retry due
//! at the stage's deadline is not started (the stage times out). Of an attempt and a stage
//! limit falling together, the stage's is reported.
//!
//! # Host code that misbehaves
//!
//! An executor that panics fails its attempt. A panicking [`Observer`], retry predicate or
//! executor future drop is contained: the step carries on and says so in
//! [`StepReport::warnings`] and an [`Event::Warning`] (a retry predicate that panics counts
//! as "do not retry").
//!
//! An executor must not block its thread (synchronous work or I/O in `poll`): the engine
//! cannot take the thread back, and while the poll runs nothing else of the step runs, nor
//! anything else sharing that thread. The engine times each poll on the pipeline's clock
//! (making the executor's future counts): an attempt whose poll began by its deadline and
//! returned after it is timed out whatever it returned, and a poll that held the thread for
//! longer than [`Engine::blocking_threshold`] is reported once per stage
//! ([`Warning::ExecutorBlocked`], naming the stage and how long). On a virtual clock, real
//! blocking that does not move the clock is not seen; a wall clock sees it in milliseconds.

mod attempts;
mod cancel;
mod concurrency;
mod deadline;
mod event;
mod limits;
mod panic;
mod plan;
mod ready;
mod retry;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactRef;
use crate::executor::{Executor, LogLine, Outputs, SharedError, StageStatus, StepLabels};
use crate::graph::{SkipReason, StageGraph};
use crate::id::{ReleaseId, StageId};
use crate::lifecycle::Step;
use crate::time::{Clock, Timestamp};

use attempts::Attempts;

pub use crate::executor::StepOutcome;

pub use crate::graph::{Backoff, RetryPolicy};
pub use cancel::CancelHandle;
pub use concurrency::{ConcurrencyGroups, Superseded};
pub use event::{Event, EventLog, FnObserver, Observer, Warning, final_statuses, observer_fn};
pub(crate) use panic::message as panic_message;
pub use plan::{Plan, PlannedStage};

/// An engine setting that can never work; [`EngineBuilder::build`] names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// [`EngineBuilder::workers`] was given zero.
    #[error("invalid engine configuration: an engine needs at least one worker")]
    NoWorkers,
    /// [`EngineBuilder::group_limit`] was given zero for `group`.
    #[error("invalid engine configuration: group `{group}` needs a limit of at least one")]
    ZeroGroupLimit {
        /// The group.
        group: String,
    },
}

/// What the engine does when a stage fails (after its retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Stop at the first failure: start nothing new and cancel (drop) running stages.
    #[default]
    FailFast,
    /// Keep running every stage that does not depend on a failed one.
    ContinueIndependent,
}

/// Why a stage attempt did not succeed; handed to retry predicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The attempt, from 1.
    pub attempt: u32,
    /// The reason the executor gave, or a description of the timeout or panic.
    pub reason: String,
    /// Whether the attempt was cut off by its timeout.
    pub timed_out: bool,
}

/// Decides whether a failed attempt is worth another try.
pub type RetryPredicate = dyn Fn(&AttemptFailure) -> bool + Send + Sync;

/// Runs steps of a stage graph. Cheap to clone; holds configuration only.
///
/// Each setting has one name: [`EngineBuilder`] sets it, and the engine's method of the same
/// name reads it.
///
/// ```
/// use std::time::Duration;
/// use tollgate::engine::{Engine, FailurePolicy};
///
/// let engine = Engine::builder()
///     .workers(4)
///     .group_limit("gpu", 1)
///     .failure_policy(FailurePolicy::ContinueIndependent)
///     .step_timeout(Duration::from_secs(30 * 60))
///     .build()?;
/// assert_eq!(engine.workers(), Some(4));
/// assert_eq!(engine.group_limit("gpu"), Some(1));
/// assert_eq!(engine.failure_policy(), FailurePolicy::ContinueIndependent);
/// assert_eq!(engine.step_timeout(), Some(Duration::from_secs(30 * 60)));
/// assert!(Engine::builder().workers(0).build().is_err());
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    workers: Option<usize>,
    group_limits: HashMap<String, usize>,
    failure_policy: FailurePolicy,
    step_timeout: Option<Duration>,
    seed: u64,
    observer: Option<Arc<dyn Observer>>,
    cancel: CancelHandle,
    concurrency: ConcurrencyGroups,
    blocking_threshold: Duration,
}

/// How long one poll of an executor may hold its thread, by default, before the engine
/// warns ([`Warning::ExecutorBlocked`]).
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers)
            .field("group_limits", &self.group_limits)
            .field("failure_policy", &self.failure_policy)
            .field("step_timeout", &self.step_timeout)
            .field("seed", &self.seed)
            .field("observer", &self.observer.is_some())
            .field("blocking_threshold", &self.blocking_threshold)
            .finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            workers: None,
            group_limits: HashMap::new(),
            failure_policy: FailurePolicy::default(),
            step_timeout: None,
            seed: 0,
            observer: None,
            cancel: CancelHandle::default(),
            concurrency: ConcurrencyGroups::default(),
            blocking_threshold: DEFAULT_BLOCKING_THRESHOLD,
        }
    }
}

impl Engine {
    /// An engine with the default configuration: unbounded workers, fail-fast, no step
    /// timeout, jitter seed 0, no observer.
    #[must_use]
    pub fn new() -> Self {
        Engine::default()
    }

    /// Starts configuring an engine.
    #[must_use]
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The worker limit, if any (see [`EngineBuilder::workers`]).
    #[must_use]
    pub fn workers(&self) -> Option<usize> {
        self.workers
    }

    /// The limit of group `group`, if it has one (see [`EngineBuilder::group_limit`]).
    #[must_use]
    pub fn group_limit(&self, group: &str) -> Option<usize> {
        self.group_limits.get(group).copied()
    }

    /// What the engine does when a stage fails (see [`EngineBuilder::failure_policy`]).
    #[must_use]
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// The longest one step may run, if limited (see [`EngineBuilder::step_timeout`]).
    #[must_use]
    pub fn step_timeout(&self) -> Option<Duration> {
        self.step_timeout
    }

    /// Every group limit, by group name in order.
    pub fn group_limits(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        let mut limits: Vec<(&str, usize)> = self
            .group_limits
            .iter()
            .map(|(g, &n)| (g.as_str(), n))
            .collect();
        limits.sort_unstable();
        limits.into_iter()
    }

    /// The seed of retry-delay jitter (see [`EngineBuilder::seed`]).
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The observer every event goes to, if any (see [`EngineBuilder::observer`]).
    #[must_use]
    pub fn observer(&self) -> Option<&dyn Observer> {
        self.observer.as_deref()
    }

    /// How long one poll of an executor may hold its thread before the engine warns (see
    /// [`EngineBuilder::blocking_threshold`]).
    #[must_use]
    pub fn blocking_threshold(&self) -> Duration {
        self.blocking_threshold
    }

    /// The handle that cancels the steps this engine is running (see
    /// [`EngineBuilder::cancel_handle`]).
    #[must_use]
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// The concurrency groups this engine's stages hold (see
    /// [`Concurrency`](crate::graph::Concurrency)), shared by every step it runs, whichever
    /// release: clones of the engine share them too.
    #[must_use]
    pub fn concurrency_groups(&self) -> &ConcurrencyGroups {
        &self.concurrency
    }

    /// Runs the stages of `step` in `graph` outside any pipeline: the DAG engine on its own,
    /// for tools that schedule jobs but keep releases elsewhere.
    ///
    /// Every stage runs with `executor` (dispatch on [`StageContext::stage`] to run stages
    /// differently, or use a `CommandTable` for programs), which sees `release` and
    /// `revision` in its context; waiting goes through `clock`. Stages of other steps are
    /// treated as done before this step, with no outputs. The run never fails: what happened
    /// is in the report.
    ///
    /// [`StageContext::stage`]: crate::executor::StageContext::stage
    ///
    /// ```
    /// use tollgate::engine::Engine;
    /// use tollgate::executor::{self, StageOutcome};
    /// use tollgate::graph::{StageGraph, StageSpec, Step};
    /// use tollgate::id::ReleaseId;
    /// use tollgate::time::{ManualClock, Timestamp, run_virtual};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::test("unit"))
    ///     .stage(StageSpec::test("lint"))
    ///     .stage(StageSpec::test("report").after("unit").after("lint"))
    ///     .build()?;
    /// let echo = executor::from_fn(|ctx| Ok(StageOutcome::success().log(ctx.stage().as_str())));
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let release = ReleaseId::new("nightly-1")?;
    /// let engine = Engine::builder().workers(2).build()?;
    /// let report = run_virtual(
    ///     &clock,
    ///     engine.run_graph(&graph, Step::Test, &echo, &clock, &release, "4f2a9c1"),
    /// );
    /// assert!(report.succeeded());
    /// assert_eq!(report.stages.len(), 3);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub async fn run_graph(
        &self,
        graph: &StageGraph,
        step: Step,
        executor: &dyn Executor,
        clock: &dyn Clock,
        release: &ReleaseId,
        revision: &str,
    ) -> StepReport {
        let prior = BTreeMap::new();
        let step_outputs = std::sync::OnceLock::new();
        let run = StepRun {
            graph,
            step,
            labels: StepLabels {
                graph,
                clock,
                prior_outputs: &prior,
                outputs: &step_outputs,
                release,
                revision,
                artifact: None,
                environment: None,
                claim: 0,
            },
            prior_outputs: &prior,
            clock,
            cancel: None,
            done: &[],
            on_settled: None,
        };
        let hooks = |_: usize| StageHooks {
            executor,
            retry_if: None,
        };
        self.run_step(&run, &hooks).await
    }

    /// Tells the observer, if there is one, the event `event` makes. A panic in the
    /// observer is contained: its text comes back, with the event's kind, and the run goes
    /// on.
    #[inline]
    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) -> Result<(), ObserverPanic> {
        match &self.observer {
            None => Ok(()),
            Some(observer) => observe(&**observer, &event()),
        }
    }

    /// Tells the observer a release event (`event`, at `at`), outside any step: a panic in
    /// the observer is contained and, with no step report to keep it in, told to the
    /// observer as an [`Event::Warning`] (a panic on that too is contained).
    pub(crate) fn tell(&self, at: Timestamp, event: impl FnOnce() -> Event) {
        if let Err(panic) = self.emit(event) {
            let _ = self.emit(|| Event::Warning {
                warning: Warning::ObserverPanicked {
                    event: panic.event.to_owned(),
                    message: panic.message,
                    times: 1,
                },
                at,
            });
        }
    }
}

/// An observer's panic, contained: the kind of event it panicked on, and the panic's text.
#[derive(Debug)]
pub(crate) struct ObserverPanic {
    pub(crate) event: &'static str,
    pub(crate) message: String,
}

/// Tells `observer` `event`, containing a panic.
#[cold]
#[inline(never)]
fn observe(observer: &dyn Observer, event: &Event) -> Result<(), ObserverPanic> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observer.observe(event))).map_err(
        |payload| ObserverPanic {
            event: event.kind(),
            message: panic::message(payload.as_ref()).to_owned(),
        },
    )
}

/// Configures an [`Engine`]; [`EngineBuilder::build`] checks the settings.
#[derive(Default)]
pub struct EngineBuilder {
    engine: Engine,
    zero_groups: Vec<String>,
    zero_workers: bool,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// At most `n` stages run at once (default: no limit). Zero is an error at `build`.
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.zero_workers = n == 0;
        self.engine.workers = Some(n);
        self
    }

    /// At most `n` stages of group `group` run at once (see
    /// [`StageSpec::group`](crate::graph::StageSpec::group)). Zero is an error at `build`.
    #[must_use]
    pub fn group_limit(mut self, group: impl Into<String>, n: usize) -> Self {
        let group = group.into();
        if n == 0 {
            self.zero_groups.push(group.clone());
        }
        self.engine.group_limits.insert(group, n);
        self
    }

    /// What to do when a stage fails.
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.engine.failure_policy = policy;
        self
    }

    /// The longest one step may run; when it is up, running stages are cancelled and
    /// reported as timed out, nothing new starts, and finally stages run.
    #[must_use]
    pub fn step_timeout(mut self, limit: Duration) -> Self {
        self.engine.step_timeout = Some(limit);
        self
    }

    /// Seeds the jitter of retry delays, so that runs are reproducible.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.engine.seed = seed;
        self
    }

    /// Sends every event to `observer`: an [`EventLog`], an [`Observer`] of your own, a
    /// closure through [`observer_fn`], or an observer the host keeps a handle to
    /// (`Arc<dyn Observer>`).
    #[must_use]
    pub fn observer(mut self, observer: impl Observer + 'static) -> Self {
        self.engine.observer = Some(Arc::new(observer));
        self
    }

    /// Warns ([`Warning::ExecutorBlocked`], once per stage and step) when one poll of a
    /// stage's executor holds its thread for longer than `limit` on the pipeline's clock
    /// (default [`DEFAULT_BLOCKING_THRESHOLD`], 100 ms).
    ///
    /// An executor must not block: while its poll runs, nothing else of the step (or of
    /// anything sharing the thread) does. The engine cannot take the thread back, so it
    /// judges what the poll did by the clock: an attempt whose poll began by its deadline
    /// and returned after it is timed out, whatever it returned; and it says which stage
    /// blocked and for how long. Run blocking work on a thread of its own (a pool,
    /// `spawn_blocking`, or a helper thread as `ProcessExecutor` does).
    #[must_use]
    pub fn blocking_threshold(mut self, limit: Duration) -> Self {
        self.engine.blocking_threshold = limit;
        self
    }

    /// Uses `handle` to cancel this engine's steps (by default the engine makes its own; see
    /// [`Engine::cancel_handle`]).
    #[must_use]
    pub fn cancel_handle(mut self, handle: CancelHandle) -> Self {
        self.engine.cancel = handle;
        self
    }

    /// Holds concurrency groups in `groups` (by default the engine makes its own), so that
    /// several engines (of several pipelines) share them.
    #[must_use]
    pub fn concurrency_groups(mut self, groups: ConcurrencyGroups) -> Self {
        self.engine.concurrency = groups;
        self
    }

    /// Checks the settings and builds the engine.
    pub fn build(self) -> Result<Engine, EngineError> {
        if self.zero_workers {
            return Err(EngineError::NoWorkers);
        }
        if let Some(group) = self.zero_groups.into_iter().next() {
            return Err(EngineError::ZeroGroupLimit { group });
        }
        Ok(self.engine)
    }
}

/// Everything one step run needs besides the executors.
pub(crate) struct StepRun<'a> {
    pub graph: &'a StageGraph,
    pub step: Step,
    /// What the executors are told of the run (release, revision, artifact, environment,
    /// the claim of the move's run).
    pub labels: StepLabels<'a>,
    pub prior_outputs: &'a BTreeMap<StageId, Arc<Outputs>>,
    pub clock: &'a dyn Clock,
    /// The move's own cancel handle, besides the engine's, when the run is a release's move.
    pub cancel: Option<&'a CancelHandle>,
    /// Stages of the step that already succeeded in this run of the move, before a crash cut
    /// it off: they count as succeeded from the start (their outputs feed their dependents,
    /// their artifact the build), are never started, and are reported as they were. Empty
    /// for a fresh run, which then costs nothing more.
    pub done: &'a [StageReport],
    /// Told each stage's report as the stage settles (succeeded, failed, timed out or
    /// cancelled; not the stages skipped at the end), while the step goes on: the pipeline
    /// journals it. It must not block.
    pub on_settled: Option<&'a (dyn Fn(&StageReport) + Sync)>,
}

/// What the engine needs from the host for one stage.
#[derive(Clone, Copy)]
pub(crate) struct StageHooks<'a> {
    pub executor: &'a dyn Executor,
    pub retry_if: Option<&'a RetryPredicate>,
}

/// One attempt of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The attempt, from 1.
    pub number: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// How it ended.
    #[serde(flatten)]
    pub status: StageStatus,
}

/// What happened to one stage in a step run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage.
    pub id: StageId,
    /// How it ended.
    #[serde(flatten)]
    pub status: StageStatus,
    /// When it started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended, if it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Every attempt, oldest first (see [`StageReport::attempts`]).
    #[serde(default, skip_serializing_if = "Attempts::is_empty_list")]
    attempts: Attempts,
    /// The log of every attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// The named outputs of the successful attempt.
    #[serde(default, skip_serializing_if = "Outputs::is_empty")]
    pub outputs: Outputs,
    /// The artifact it produced (build stages). Boxed: one stage in a pipeline makes an
    /// artifact, and every report would otherwise carry the room for one (a step of 100,000
    /// stages writes 7 MB less).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Box<ArtifactRef>>,
    /// Why the stage was skipped, when it was (`status` is `skipped`): its condition said
    /// no, a dependency did not succeed, or the step stopped first. `None` in reports
    /// written before conditions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkipReason>,
    /// Whether the stage failed and is allowed to
    /// ([`StageSpec::continue_on_error`](crate::graph::StageSpec::continue_on_error)): its
    /// `status` keeps the failure, and the step does not fail for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
    /// The executor's own error, when the stage failed because its last attempt returned
    /// one (see [`StageReport::error`]). Not serialised: the message is in `status`.
    #[serde(skip)]
    error: KeptError,
}

impl StageReport {
    /// Every attempt, oldest first: none for a stage that never started, one for most
    /// stages, one per try for a stage that was retried. Serialised as the list
    /// `"attempts"`.
    #[must_use]
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The error the executor returned, when that is why the stage failed: its last attempt
    /// ended with `Err(error)` and its status is `Failed` with `executor error: ` and the
    /// error's message. Downcast it to the executor's own type:
    ///
    /// ```
    /// use tollgate::engine::Engine;
    /// use tollgate::executor::{self, StageOutcome};
    /// use tollgate::graph::{StageGraph, StageSpec, Step};
    /// use tollgate::id::ReleaseId;
    /// use tollgate::time::{ManualClock, Timestamp, run_virtual};
    ///
    /// let graph = StageGraph::builder().stage(StageSpec::test("unit")).build()?;
    /// let broken = executor::from_fn(|_| -> Result<StageOutcome, _> {
    ///     Err(std::io::Error::other("runner unreachable").into())
    /// });
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let release = ReleaseId::new("nightly-1")?;
    /// let engine = Engine::new();
    /// let run = engine.run_graph(&graph, Step::Test, &broken, &clock, &release, "4f2a9c1");
    /// let report = run_virtual(&clock, run);
    /// let unit = report.stage("unit").unwrap();
    /// assert_eq!(unit.status.to_string(), "failed: executor error: runner unreachable");
    /// let error = unit.error().and_then(|e| e.downcast_ref::<std::io::Error>());
    /// assert_eq!(error.map(std::io::Error::kind), Some(std::io::ErrorKind::Other));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    ///
    /// Kept in memory only: a report read back from its serde form has no error.
    #[must_use]
    pub fn error(&self) -> Option<&SharedError> {
        self.error.0.as_ref()
    }

    fn not_run(id: StageId, status: StageStatus) -> Self {
        StageReport {
            id,
            status,
            started_at: None,
            finished_at: None,
            attempts: Attempts::new(),
            logs: Vec::new(),
            outputs: Outputs::new(),
            artifact: None,
            skipped: None,
            continued: false,
            error: KeptError(None),
        }
    }

    /// Whether the stage ended in a way that does not fail its step: it succeeded, its
    /// failure is allowed ([`continued`](Self::continued)), or its condition skipped it
    /// with nothing failing before it.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        match &self.status {
            StageStatus::Succeeded => true,
            StageStatus::Skipped => self.skipped.as_ref().is_some_and(|r| !r.after_failure()),
            _ => self.continued,
        }
    }
}

/// A report's executor error, which its equality ignores: two reports are equal when they
/// say the same (their serde forms), and a report read back from storage, which has lost the
/// error object, still equals the one it was written from.
#[derive(Clone, Default)]
struct KeptError(Option<SharedError>);

impl PartialEq for KeptError {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeptError {}

impl std::fmt::Debug for KeptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// What happened in one step run: every stage of the step, in the order they were added to
/// the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step that ran.
    pub step: Step,
    /// When it started.
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// How the ordinary stages ended (what finally stages saw).
    pub outcome: StepOutcome,
    /// One report per stage of the step.
    pub stages: Vec<StageReport>,
    /// Host code that misbehaved during the step and was contained (an executor that
    /// blocked its thread, a panicking observer, retry predicate or executor drop), in the
    /// order it happened; empty for a well-behaved step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

impl StepReport {
    /// Whether the step succeeded: every stage, finally stages included, succeeded, failed
    /// with its failure allowed (`continue_on_error`), or was skipped by its condition with
    /// nothing failing before it (see [`StageReport::is_ok`]).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.stages.iter().all(StageReport::is_ok)
    }

    /// Whether the step succeeded by the rules of `graph`, not by the report's own word: a
    /// failure counts as allowed only if the graph's stage has `continue_on_error`, and a
    /// skip only if the graph's condition, decided again over the dependencies' ends as this
    /// report gives them, skips the stage for the reason the report says. For reports read
    /// back from storage.
    pub(crate) fn succeeded_in(&self, graph: &StageGraph) -> bool {
        let by_id: HashMap<&str, &StageReport> =
            self.stages.iter().map(|s| (s.id.as_str(), s)).collect();
        self.stages.iter().all(|stage| {
            let Some(spec) = graph.get(stage.id.as_str()) else {
                return false;
            };
            match &stage.status {
                StageStatus::Succeeded => true,
                StageStatus::Skipped => stage.skipped.as_ref().is_some_and(|reason| {
                    !reason.after_failure() && {
                        let dependencies = spec.after.iter().filter_map(|d| {
                            let dependency = by_id.get(d.as_str())?;
                            let same_phase = graph.get(d.as_str())?.finally == spec.finally;
                            same_phase.then(|| (d, run::settled(dependency)))
                        });
                        spec.when.decide(dependencies).as_ref() == Err(reason)
                    }
                }),
                _ => stage.continued && spec.continue_on_error,
            }
        })
    }

    /// The stages that failed or timed out and are not allowed to, in the order they were
    /// added.
    pub fn failed(&self) -> impl Iterator<Item = &StageReport> + '_ {
        self.stages.iter().filter(|s| {
            !s.continued
                && matches!(
                    s.status,
                    StageStatus::Failed { .. } | StageStatus::TimedOut { .. }
                )
        })
    }

    /// The report of one stage.
    #[must_use]
    pub fn stage(&self, id: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::TimeoutKind;

    #[test]
    fn every_setting_reads_back_under_the_name_it_was_set_with() {
        let handle = CancelHandle::new();
        let log = EventLog::new();
        let engine = Engine::builder()
            .workers(2)
            .group_limit("gpu", 1)
            .failure_policy(FailurePolicy::ContinueIndependent)
            .step_timeout(Duration::from_secs(60))
            .seed(42)
            .observer(log.clone())
            .cancel_handle(handle.clone())
            .build()
            .unwrap();
        assert_eq!(engine.workers(), Some(2));
        assert_eq!(engine.group_limit("gpu"), Some(1));
        assert_eq!(engine.group_limit("cpu"), None);
        assert_eq!(engine.failure_policy(), FailurePolicy::ContinueIndependent);
        assert_eq!(engine.step_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(engine.seed(), 42);
        let observer = engine.observer().expect("an observer was set");
        observer.observe(&Event::StageReady {
            stage: StageId::new("unit").unwrap(),
            at: Timestamp::EPOCH,
        });
        assert_eq!(
            log.events().len(),
            1,
            "the getter hands out the observer that was set"
        );
        handle.cancel();
        let engine_handle = engine.cancel_handle();
        assert_eq!(engine_handle.generation(), handle.generation());

        let default = Engine::new();
        assert_eq!(
            (
                default.workers(),
                default.failure_policy(),
                default.step_timeout()
            ),
            (None, FailurePolicy::FailFast, None)
        );
        assert_eq!(default.seed(), 0);
        assert!(default.observer().is_none());
    }

    /// A step report as stored: `unit` failed with `continued` as given, `triage` (on
    /// failure) skipped for `reason`.
    fn stored(continued: bool, reason: Option<SkipReason>) -> StepReport {
        let mut unit = StageReport::not_run(
            StageId::new("unit").unwrap(),
            StageStatus::Failed {
                reason: "broken".to_owned(),
            },
        );
        unit.continued = continued;
        let mut triage =
            StageReport::not_run(StageId::new("triage").unwrap(), StageStatus::Skipped);
        triage.skipped = reason;
        StepReport {
            step: crate::lifecycle::Step::Test,
            started_at: Timestamp::EPOCH,
            finished_at: Timestamp::EPOCH,
            outcome: StepOutcome::Succeeded,
            stages: vec![unit, triage],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_stored_report_is_judged_by_the_graph_not_by_its_own_flags() {
        use crate::graph::{Condition, StageSpec};
        let graph = |allowed: bool| {
            let unit = StageSpec::test("unit");
            StageGraph::builder()
                .stage(if allowed {
                    unit.continue_on_error()
                } else {
                    unit
                })
                .stage(
                    StageSpec::test("triage")
                        .after("unit")
                        .when(Condition::OnFailure),
                )
                .build()
                .unwrap()
        };
        let honest = stored(true, Some(SkipReason::NoFailure));
        assert!(honest.succeeded());
        assert!(honest.succeeded_in(&graph(true)));
        // The same report against a graph where `unit` may not fail: its flag is a lie.
        assert!(!honest.succeeded_in(&graph(false)));
        // A failure without the flag is a failure, whatever the graph allows.
        assert!(!stored(false, Some(SkipReason::NoFailure)).succeeded_in(&graph(true)));
        // A skip whose reason the condition does not give, or with no reason at all.
        for reason in [
            Some(SkipReason::DependencyDidNotFail {
                dependency: StageId::new("unit").unwrap(),
            }),
            Some(SkipReason::StepStopped),
            None,
        ] {
            assert!(
                !stored(true, reason.clone()).succeeded_in(&graph(true)),
                "{reason:?}"
            );
        }
        // A stage the graph does not have.
        let mut extra = stored(true, Some(SkipReason::NoFailure));
        extra.stages.push(StageReport::not_run(
            StageId::new("ghost").unwrap(),
            StageStatus::Succeeded,
        ));
        assert!(!extra.succeeded_in(&graph(true)));
    }

    #[test]
    fn a_report_stored_with_a_timeout_text_loads_with_its_limit() {
        let stored = r#"{"id":"e2e","status":"timed_out","limit":"stage timeout","started_at":0,
            "finished_at":900,"attempts":[{"number":1,"started_at":0,"finished_at":900,
            "status":"timed_out","limit":"attempt timeout"}]}"#;
        let report: StageReport = serde_json::from_str(stored).unwrap();
        assert_eq!(
            report.status,
            StageStatus::TimedOut {
                limit: TimeoutKind::Stage
            }
        );
        assert_eq!(
            report.attempts[0].status,
            StageStatus::TimedOut {
                limit: TimeoutKind::Attempt
            }
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""limit":"stage""#), "{json}");
    }
}
