//! The stage DAG: [`StageId`], lifecycle [`Step`]s, [`StageSpec`]s and the validated
//! [`StageGraph`].
//!
//! A graph is built once with [`StageGraph::builder`], which checks everything up front
//! (duplicate ids, unknown dependencies, self-loops, cycles, dependencies on later steps,
//! required steps left empty). After that the graph is immutable and every algorithm on it is
//! iterative, so a 1,000,000-stage chain neither overflows the stack nor takes more than
//! linear time.
//!
//! # petgraph
//!
//! [`StageGraph`] implements petgraph's visit traits over its own arrays, with [`StageIndex`]
//! as the node id, so petgraph's algorithms and walkers (`toposort`, `Dfs`, `Topo`,
//! `dominators`, `has_path_connecting`, …) run on a pipeline's graph as it is, with no copy.
//! Edges point from a dependency to its dependent, the order stages run in: a stage's
//! `Outgoing` neighbours are its dependents, its `Incoming` ones its dependencies. Use the
//! petgraph that tollgate re-exports, [`tollgate::petgraph`](crate::petgraph), so the versions
//! match.
//!
//! ```
//! use tollgate::graph::{StageGraph, StageSpec};
//! use tollgate::petgraph::algo::{has_path_connecting, toposort};
//! use tollgate::petgraph::visit::{Dfs, Reversed};
//!
//! let graph = StageGraph::builder()
//!     .stage(StageSpec::build("compile"))
//!     .stage(StageSpec::test("unit").after("compile"))
//!     .stage(StageSpec::test("lint").after("compile"))
//!     .stage(StageSpec::deploy("ship").after("unit").after("lint"))
//!     .build()?;
//! let id = |i| graph.stage_at(i).map(|s| s.id.as_str());
//! let [compile, ship] = ["compile", "ship"].map(|s| graph.stage_index(s).unwrap());
//!
//! // petgraph's own topological sort, on the graph itself.
//! let order = toposort(&graph, None).expect("a built graph has no cycle");
//! assert_eq!(id(order[0]), Some("compile"));
//! assert!(has_path_connecting(&graph, compile, ship, None));
//!
//! // Everything `ship` waits for: a depth-first walk against the edges.
//! let mut upstream = Vec::new();
//! let mut dfs = Dfs::new(Reversed(&graph), ship);
//! while let Some(stage) = dfs.next(Reversed(&graph)) {
//!     upstream.extend(id(stage));
//! }
//! assert_eq!(upstream.len(), 4);
//! # Ok::<(), tollgate::Error>(())
//! ```

mod algo;
mod build;
mod condition;
mod critical;
mod export;
mod index;
mod intern;
mod matrix;
mod policy;
mod scan;
mod visit;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::id::{MAX_STAGE_ID_LEN, StageId};
pub use crate::lifecycle::Step;

pub use algo::RedundantDependency;
pub use build::StageGraphBuilder;
pub use condition::{Condition, Settled, SkipReason};
// `Concurrency` is defined below, beside `StageSpec`.
pub use critical::CriticalPath;
pub use index::{IndexOutOfRange, StageIndex};
pub use matrix::Matrix;
pub use policy::{Backoff, RetryPolicy};
pub use visit::{AllDependencies, AllStages, Dependencies, StageIndices, StageRefs, StageSet};

/// What is wrong with a stage graph; every check of
/// [`StageGraphBuilder::build`] has its variant, naming the stages involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Two stages share one id.
    #[error("duplicate stage id `{id}`")]
    DuplicateStage {
        /// The id given twice.
        id: StageId,
    },
    /// A stage depends on an id that names no stage.
    #[error("stage `{stage}` depends on unknown stage `{dependency}`")]
    UnknownDependency {
        /// The stage that declared the dependency.
        stage: StageId,
        /// The id that names no stage.
        dependency: StageId,
    },
    /// A stage lists itself among its dependencies.
    #[error("stage `{stage}` depends on itself")]
    SelfDependency {
        /// The stage.
        stage: StageId,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", CycleDisplay(.stages))]
    Cycle {
        /// The stages of one cycle in run order: each depends on the one before it, and the
        /// first depends on the last.
        stages: Vec<StageId>,
    },
    /// A stage depends on a stage of a later lifecycle step (a test stage on a deploy stage).
    #[error(
        "stage `{stage}` ({stage_step}) depends on `{dependency}` of the later step {dependency_step}"
    )]
    DependencyOnLaterStep {
        /// The stage that declared the dependency.
        stage: StageId,
        /// Its step.
        stage_step: Step,
        /// The stage it depends on.
        dependency: StageId,
        /// That stage's (later) step.
        dependency_step: Step,
    },
    /// An ordinary stage depends on a finally stage, which runs only after it.
    #[error(
        "stage `{stage}` depends on finally stage `{finally}`, which runs after every ordinary stage"
    )]
    DependsOnFinally {
        /// The ordinary stage.
        stage: StageId,
        /// The finally stage it depends on.
        finally: StageId,
    },
    /// A stage's run policy is unusable.
    #[error("stage `{stage}` has an invalid policy: {reason}")]
    InvalidPolicy {
        /// The stage.
        stage: StageId,
        /// What is wrong.
        reason: &'static str,
    },
    /// A stage's condition names a stage that is not one of its direct dependencies.
    #[error(
        "stage `{stage}` runs when `{dependency}` fails, but `{dependency}` is not one of its dependencies"
    )]
    ConditionOnNonDependency {
        /// The stage with the condition.
        stage: StageId,
        /// The stage the condition names.
        dependency: StageId,
    },
    /// A matrix has no combination to run (an axis without values, or every combination
    /// excluded and nothing included).
    #[error("the matrix of stage `{stage}` has no combinations")]
    EmptyMatrix {
        /// The matrix stage's base id.
        stage: StageId,
    },
    /// A matrix stage's id clashes: its base id is another stage's id, or two of its
    /// combinations (or a combination and another stage) have the same id.
    #[error("the matrix of stage `{stage}` makes the id `{id}`, which is already taken")]
    MatrixClash {
        /// The matrix stage's base id.
        stage: StageId,
        /// The id that clashes.
        id: StageId,
    },
    /// A lifecycle step that must have at least one stage has none.
    #[error("the {step} step has no stages, but a pipeline needs at least one")]
    EmptyStep {
        /// The empty step.
        step: Step,
    },
    /// A stage id that the graph does not contain was asked for.
    #[error("unknown stage `{id}`")]
    UnknownStage {
        /// The id asked for.
        id: StageId,
    },
    /// A stage index given to the index-based builder names no stage.
    #[error(transparent)]
    IndexOutOfRange(#[from] IndexOutOfRange),
    /// A stage id is empty or contains characters that are not allowed.
    #[error("invalid stage id `{}`: {reason}", crate::id::quoted(.id))]
    InvalidStageId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Shows a cycle as `a -> b -> c -> a`.
struct CycleDisplay<'a>(&'a [StageId]);

/// The most stages a cycle's message names; the rest are counted.
const CYCLE_SHOWN: usize = 16;

impl fmt::Display for CycleDisplay<'_> {
    /// `a -> b -> c -> a`; a long cycle shows its first stages, how many it leaves out, and
    /// the stage that closes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.0.iter().take(CYCLE_SHOWN) {
            write!(f, "{id} -> ")?;
        }
        if self.0.len() > CYCLE_SHOWN {
            write!(f, "… ({} more) -> ", self.0.len() - CYCLE_SHOWN)?;
        }
        match self.0.first() {
            Some(first) => write!(f, "{first}"),
            None => f.write_str("(empty)"),
        }
    }
}

type Result<T, E = GraphError> = std::result::Result<T, E>;

/// The definition of one stage: its id, its step, what it runs after, and hints for planning.
///
/// This is plain data (serde) so that graphs can be stored and loaded; what a stage *does* is
/// decided by the executor that a [`Pipeline`](crate::pipeline::Pipeline) binds to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's unique id.
    pub id: StageId,
    /// The lifecycle step it belongs to.
    pub step: Step,
    /// The stages it runs after; each must be in the same step or an earlier one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<StageId>,
    /// A human-readable description for reports and diagrams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How long the stage is expected to take; used for critical-path ordering and plans.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub estimate: Option<Duration>,
    /// How often to try and how long to wait in between; `None` tries once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The longest one attempt may run before it is cancelled and counted as timed out.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub attempt_timeout: Option<Duration>,
    /// The longest the stage may take over all its attempts and backoff delays.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub timeout: Option<Duration>,
    /// The concurrency group the stage counts against (see
    /// [`EngineBuilder::group_limit`](crate::engine::EngineBuilder::group_limit)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A finally stage runs after every other stage of its step has finished, whatever the
    /// outcome (like Tekton's `finally` or Jenkins' `post`), and sees the step's outcome. It
    /// may depend on other stages but no ordinary stage may depend on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    /// When the stage runs, decided once its dependencies have settled (by default: when
    /// they all succeeded). A stage whose condition says no is reported as skipped with the
    /// reason. Finally stages take no condition: they always run.
    #[serde(default, skip_serializing_if = "Condition::is_on_success")]
    pub when: Condition,
    /// A failure of this stage (after its retries) does not fail the step: its dependents
    /// see a success, and its report keeps the failure (GitHub's `continue-on-error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    /// The values of this stage's matrix combination (axis → value), for a stage expanded
    /// from a [`Matrix`]; empty otherwise. Executors read them from the spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matrix: BTreeMap<String, String>,
    /// The concurrency group the stage holds while it runs, across steps and releases (see
    /// [`Concurrency`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// A concurrency group across releases (GitHub Actions' `concurrency`, GitLab's resource
/// groups): of all the stages in group `group`, in any step of any release the engine runs,
/// one runs at a time. A newcomer queues behind the stage in flight, oldest first; with
/// `cancel_in_progress`, it cancels that stage (and every older one waiting) instead,
/// which then ends [`Cancelled`](crate::executor::StageStatus::Cancelled) with
/// [`Superseded`](crate::engine::Superseded) as its error, and is not retried.
///
/// Unlike [`StageSpec::group`] (a limit on stages at once within one step), this is held
/// by the engine's [`ConcurrencyGroups`](crate::engine::ConcurrencyGroups), which every
/// release of a pipeline shares. Waiting for the group counts against the stage's worker
/// and its timeouts.
///
/// ```
/// use tollgate::graph::{Concurrency, StageSpec};
///
/// let deploy = StageSpec::deploy("production").concurrency(Concurrency::cancel_in_progress("prod"));
/// assert_eq!(deploy.concurrency.as_ref().map(|c| c.group.as_str()), Some("prod"));
/// let json = serde_json::to_string(&deploy)?;
/// assert!(json.contains(r#""concurrency":{"group":"prod","cancel_in_progress":true}"#), "{json}");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// The group's name.
    pub group: String,
    /// Whether a newcomer cancels the stage in flight (and older waiters) instead of
    /// queueing behind it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_in_progress: bool,
}

impl Concurrency {
    /// The group `group`, where a newcomer queues behind the stage in flight.
    pub fn queue(group: impl Into<String>) -> Self {
        Concurrency {
            group: group.into(),
            cancel_in_progress: false,
        }
    }

    /// The group `group`, where a newcomer cancels the stage in flight.
    pub fn cancel_in_progress(group: impl Into<String>) -> Self {
        Concurrency {
            group: group.into(),
            cancel_in_progress: true,
        }
    }
}

impl StageSpec {
    /// A stage of `step` with id `id`. The id is checked when the graph is built.
    pub fn new(id: impl Into<String>, step: Step) -> Self {
        StageSpec {
            id: StageId::unchecked(id),
            step,
            after: Vec::new(),
            description: None,
            estimate: None,
            retry: None,
            attempt_timeout: None,
            timeout: None,
            group: None,
            finally: false,
            when: Condition::OnSuccess,
            continue_on_error: false,
            matrix: BTreeMap::new(),
            concurrency: None,
        }
    }

    /// A stage of the build step.
    pub fn build(id: impl Into<String>) -> Self {
        Self::new(id, Step::Build)
    }

    /// A stage of the test step.
    pub fn test(id: impl Into<String>) -> Self {
        Self::new(id, Step::Test)
    }

    /// A stage of the stage (staging) step.
    pub fn stage(id: impl Into<String>) -> Self {
        Self::new(id, Step::Stage)
    }

    /// A stage of the deploy step.
    pub fn deploy(id: impl Into<String>) -> Self {
        Self::new(id, Step::Deploy)
    }

    /// Runs this stage after `dependency` has succeeded.
    #[must_use]
    pub fn after(mut self, dependency: impl Into<String>) -> Self {
        self.after.push(StageId::unchecked(dependency));
        self
    }

    /// Sets a description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Sets the expected duration.
    #[must_use]
    pub fn estimate(mut self, duration: Duration) -> Self {
        self.estimate = Some(duration);
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets the per-attempt timeout.
    #[must_use]
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.attempt_timeout = Some(limit);
        self
    }

    /// Sets the timeout over all attempts.
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Puts the stage in a concurrency group.
    #[must_use]
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Makes this a finally stage.
    #[must_use]
    pub fn finally(mut self) -> Self {
        self.finally = true;
        self
    }

    /// Sets when the stage runs (see [`Condition`]).
    ///
    /// ```
    /// use tollgate::graph::{Condition, StageGraph, StageSpec};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::test("unit"))
    ///     .stage(StageSpec::test("triage").after("unit").when(Condition::OnFailure))
    ///     .build()?;
    /// assert_eq!(graph.get("triage").unwrap().when, Condition::OnFailure);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn when(mut self, condition: Condition) -> Self {
        self.when = condition;
        self
    }

    /// Runs this stage when its dependency `dependency` failed:
    /// `when(Condition::DependencyFailed(dependency))`.
    #[must_use]
    pub fn when_failed(self, dependency: impl Into<String>) -> Self {
        self.when(Condition::DependencyFailed(StageId::unchecked(dependency)))
    }

    /// Puts the stage in a concurrency group across releases (see [`Concurrency`]).
    #[must_use]
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Lets this stage fail without failing the step (see
    /// [`continue_on_error`](StageSpec::continue_on_error)).
    #[must_use]
    pub fn continue_on_error(mut self) -> Self {
        self.continue_on_error = true;
        self
    }
}

/// The few facts about a stage that the engine reads for every stage of a step.
#[derive(Debug, Clone, Copy)]
// Five flags read per stage in the hot loop: plain bools stay as cheap to read as bits and
// keep each use self-explaining.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Placement {
    pub(crate) step: Step,
    pub(crate) finally: bool,
    /// Whether it has an attempt or stage timeout.
    pub(crate) timed: bool,
    /// Whether its condition is not the default (`OnSuccess`).
    pub(crate) conditional: bool,
    /// Whether it is in a concurrency group across releases.
    pub(crate) exclusive: bool,
}

/// A validated, immutable DAG of stages.
///
/// Built with [`StageGraph::builder`]; see the module docs for what is checked. Its serde form
/// is the list of its [`StageSpec`]s, and deserializing runs the same validation, so a
/// malformed spec file is a typed [`GraphError`], never a broken graph.
#[derive(Debug, Clone)]
pub struct StageGraph {
    /// The stages, in the order they were added. A stage's index is its position here.
    stages: Vec<StageSpec>,
    /// Id → index.
    index: intern::Interner,
    /// What the engine reads of every stage, packed apart from the specs: a pass over three
    /// bytes per stage stays in cache where a pass over the specs would not.
    placement: Vec<Placement>,
    /// Dependencies of stage `i`: `dep_targets[dep_offsets[i]..dep_offsets[i + 1]]`.
    dep_offsets: Vec<u32>,
    dep_targets: Vec<u32>,
    /// Dependents of stage `i`, in the same compressed layout.
    out_offsets: Vec<u32>,
    out_targets: Vec<u32>,
    /// Stage indices in a topological order (dependencies first).
    topo: Vec<u32>,
    /// For each stage, the weight of the longest path starting at it (itself included), in
    /// milliseconds of estimate (a stage without an estimate weighs 1 ms). Schedulers run the
    /// ready stage with the largest value first.
    priority: Vec<u64>,
}

impl StageGraph {
    /// Starts building a graph.
    #[must_use]
    pub fn builder() -> StageGraphBuilder {
        StageGraphBuilder::default()
    }

    /// The number of stages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether the graph has no stages.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The stage with this id, if there is one.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&StageSpec> {
        self.index_of(id).map(|i| &self.stages[i])
    }

    /// Whether the graph has a stage with this id.
    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.index.get(id, &self.stages).is_some()
    }

    /// Every stage, in the order it was added.
    #[must_use]
    pub fn stages(&self) -> impl ExactSizeIterator<Item = &StageSpec> + '_ {
        self.stages.iter()
    }

    /// The stages of one step, in the order they were added.
    pub fn stages_in(&self, step: Step) -> impl Iterator<Item = &StageSpec> + '_ {
        self.stages.iter().filter(move |s| s.step == step)
    }

    /// The direct dependencies of the stage `id`.
    pub fn dependencies(&self, id: &str) -> Result<impl Iterator<Item = &StageSpec> + '_> {
        let i = self.require(id)?;
        Ok(self.deps_of(i).iter().map(|&d| &self.stages[d as usize]))
    }

    /// The stages that depend directly on the stage `id`.
    pub fn dependents(&self, id: &str) -> Result<impl Iterator<Item = &StageSpec> + '_> {
        let i = self.require(id)?;
        Ok(self
            .dependents_row(i)
            .iter()
            .map(|&d| &self.stages[d as usize]))
    }

    /// Every stage in a topological order: each stage comes after all its dependencies.
    #[must_use]
    pub fn topological_order(&self) -> impl ExactSizeIterator<Item = &StageSpec> + '_ {
        self.topo.iter().map(|&i| &self.stages[i as usize])
    }

    // ---- crate-internal, index-based access for the engine ----

    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id, &self.stages).map(|i| i as usize)
    }

    fn require(&self, id: &str) -> Result<usize> {
        self.index_of(id).ok_or_else(|| GraphError::UnknownStage {
            id: StageId::unchecked(id),
        })
    }

    pub(crate) fn spec(&self, i: usize) -> &StageSpec {
        &self.stages[i]
    }

    /// The step stage `i` belongs to.
    pub(crate) fn step_of(&self, i: usize) -> Step {
        self.placement[i].step
    }

    /// Whether stage `i` is a finally stage.
    pub(crate) fn is_finally(&self, i: usize) -> bool {
        self.placement[i].finally
    }

    /// Whether stage `i` is in a concurrency group across releases.
    pub(crate) fn is_exclusive(&self, i: usize) -> bool {
        self.placement[i].exclusive
    }

    /// Whether stage `i` has a condition other than the default.
    pub(crate) fn is_conditional(&self, i: usize) -> bool {
        self.placement[i].conditional
    }

    /// Whether stage `i` has an attempt or stage timeout.
    pub(crate) fn is_timed(&self, i: usize) -> bool {
        self.placement[i].timed
    }

    pub(crate) fn deps_of(&self, i: usize) -> &[u32] {
        &self.dep_targets[self.dep_offsets[i] as usize..self.dep_offsets[i + 1] as usize]
    }

    pub(crate) fn dependents_row(&self, i: usize) -> &[u32] {
        &self.out_targets[self.out_offsets[i] as usize..self.out_offsets[i + 1] as usize]
    }

    pub(crate) fn priority_of(&self, i: usize) -> u64 {
        self.priority[i]
    }
}

impl Serialize for StageGraph {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.stages.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StageGraph {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stages = Vec::<StageSpec>::deserialize(deserializer)?;
        StageGraph::builder()
            .stages(stages)
            .build()
            .map_err(serde::de::Error::custom)
    }
}

/// Serializes `Option<Duration>` as whole milliseconds; reads milliseconds or a duration as
/// people write it (`"10m"`, see [`parse_duration`](crate::time::parse_duration)).
mod opt_millis {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<_>`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        crate::time::deserialize_opt_duration(d)
    }
}
