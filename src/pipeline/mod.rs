//! A [`Pipeline<M>`](Pipeline): a validated stage graph with an executor per stage, gates on
//! moves, the staging and production environments, a clock, and (in delivery mode) an
//! approval policy. Releases are started from it and moved through it; it knows nothing of
//! the typed [`Release`](crate::release::Release), which drives it through the narrow
//! crate-internal interface at the end of this file (gates of a move, a step's run).
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`PipelineBuilder`], [`Pipeline`], votes and approvals |
//! | `stage.rs` | [`Stage`]: a spec and its executor |
//! | `explain.rs` | [`Explanation`]: what blocks a release's next move |
//! | `spec.rs` | pipelines from [`PipelineSpec`](crate::spec::PipelineSpec)s and back |

mod explain;
mod spec;
mod stage;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;

use crate::approval::{
    ApprovalError, ApprovalPolicy, ApprovalRequest, Ballot, Directory, NoGroups, Progress,
};
use crate::artifact::ArtifactError;
use futures::StreamExt as _;
use futures::channel::mpsc;

use crate::engine::{
    CancelHandle, Engine, Event, ObserverPanic, StageHooks, StageReport, StepReport, StepRun,
    Warning,
};
use crate::environment::{Environment, EnvironmentName};
use crate::error::{Error, Result};
use crate::executor::{Executor, StepLabels, idempotency_key};
use crate::fact::{Fact, Fingerprint, read_release};
use crate::gate::{BoxGate, Gate, GateContext};
use crate::graph::{StageGraph, Step};
use crate::id::{Person, PipelineName, ReleaseId};
use crate::journal::{ChainKey, Entry, Journal, JournalError, MemoryJournal, Seq};
use crate::lifecycle::{
    Delivery, Deployment, HumanApproval, Mode, ModeKind, Move, StateName, Verdict,
};
use crate::picture::PipelinePicture;
use crate::record::AnyRelease;
use crate::record::ApprovalRecord;
use crate::time::{Clock, SystemClock, Timestamp};

pub use explain::{ApprovalNeed, Explanation, GateVerdict};
pub use stage::Stage;

/// Builds a [`Pipeline`]; every check happens in [`PipelineBuilder::build`].
///
/// `A` says whether an approval policy has been set ([`NoApprovals`] until
/// [`approvals`](PipelineBuilder::approvals) is called, [`WithApprovals`] after): a delivery
/// pipeline is built only with one, so a pipeline in which nobody may approve does not
/// compile.
///
/// ```compile_fail,E0277
/// use tollgate::prelude::*;
/// // continuous delivery needs a person to approve: no policy, no pipeline
/// let _ = Pipeline::<Delivery>::builder("web").build();
/// ```
pub struct PipelineBuilder<M: Mode, A = NoApprovals> {
    name: String,
    stages: Vec<Stage>,
    default_executor: Option<Arc<dyn Executor>>,
    gates: Vec<(Move, BoxGate)>,
    environment_gates: Vec<(EnvironmentName, BoxGate)>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    staging: Option<Environment>,
    production: Option<Environment>,
    approval_policies: Option<Approvals>,
    journal: Option<Arc<dyn Journal>>,
    claim_lease: Duration,
    declared: spec::Declared,
    _mode: PhantomData<fn() -> (M, A)>,
}

/// The builder state of a pipeline with no approval policy yet: a deployment pipeline can be
/// built in it, a delivery pipeline cannot.
#[derive(Debug)]
pub enum NoApprovals {}

/// The builder state of a pipeline with an approval policy: what a delivery pipeline needs.
#[derive(Debug)]
pub enum WithApprovals {}

/// Whether a pipeline builder in approval state `Self` may build a pipeline in mode `M`:
/// deployment pipelines take no approval policy, delivery pipelines need one.
#[diagnostic::on_unimplemented(
    message = "this pipeline cannot be built yet: a Delivery pipeline needs an approval policy (a person approves every release), a Deployment pipeline takes none",
    label = "this builder has no approval policy",
    note = "set who may approve before building: `.approvals(ApprovalPolicy::any_of([\"rita\", \"sam\"])?)`",
    note = "for a pipeline that ships on its automated gates alone, use `Pipeline::<Deployment>::builder`"
)]
pub trait ApprovalsFor<M: Mode>: sealed::Sealed {}
impl ApprovalsFor<Deployment> for NoApprovals {}
impl ApprovalsFor<Delivery> for WithApprovals {}

mod sealed {
    /// Seals [`ApprovalsFor`](super::ApprovalsFor): the two builder states are tollgate's.
    pub trait Sealed {}
    impl Sealed for super::NoApprovals {}
    impl Sealed for super::WithApprovals {}
}

/// A delivery pipeline's approval policies (a default and per-environment ones) and the
/// directory that resolves their groups.
#[derive(Clone)]
struct Approvals {
    default: ApprovalPolicy,
    per_environment: BTreeMap<EnvironmentName, ApprovalPolicy>,
    directory: Arc<dyn Directory>,
}

impl Approvals {
    /// What a deployment pipeline holds: a policy without rules (which is never met) and no
    /// groups. No method of a deployment pipeline reads it.
    fn none() -> Self {
        Approvals {
            default: ApprovalPolicy::new(),
            per_environment: BTreeMap::new(),
            directory: Arc::new(NoGroups),
        }
    }

    fn for_environment(&self, environment: &EnvironmentName) -> &ApprovalPolicy {
        self.per_environment
            .get(environment)
            .unwrap_or(&self.default)
    }
}

impl<M: Mode, A> fmt::Debug for PipelineBuilder<M, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .field("mode", &M::KIND)
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl<M: Mode, A> PipelineBuilder<M, A> {
    /// Adds a stage.
    #[must_use]
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stages.push(stage);
        self
    }

    /// Adds stages.
    #[must_use]
    pub fn stages(mut self, stages: impl IntoIterator<Item = Stage>) -> Self {
        self.stages.extend(stages);
        self
    }

    /// Sets the executor for stages that have none of their own (for example a process
    /// executor that looks the stage's command up by id).
    #[must_use]
    pub fn default_executor(mut self, executor: impl Executor + 'static) -> Self {
        self.default_executor = Some(Arc::new(executor));
        self
    }

    /// Guards `mv` with an automated gate. All gates on a move must be open for it to happen.
    #[must_use]
    pub fn gate(mut self, mv: Move, gate: impl Gate + 'static) -> Self {
        self.gates.push((mv, Box::new(gate)));
        self
    }

    /// Guards every deployment into `environment` (the stage move for staging, the deploy
    /// move for production) with `gate`, like an environment's protection rules in GitHub
    /// Actions or GitLab.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::gate::{self, ChangeWindows};
    /// use tollgate::prelude::*;
    ///
    /// let builder = Pipeline::<Deployment>::builder("web")
    ///     .environment_gate(
    ///         "production",
    ///         ChangeWindows::new("change-windows", "+01:00")?
    ///             .deny_weekly("weekend", "Fri 16:00", "Mon 08:00")?,
    ///     )?
    ///     .environment_gate("staging", gate::soak(Duration::from_secs(600)))?;
    /// # let _ = builder;
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn environment_gate(
        mut self,
        environment: impl Into<String>,
        gate: impl Gate + 'static,
    ) -> Result<Self, crate::id::IdError> {
        let environment = EnvironmentName::new(environment)?;
        self.environment_gates.push((environment, Box::new(gate)));
        Ok(self)
    }

    /// Sets the engine that runs the steps.
    #[must_use]
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Sets the clock (use [`ManualClock`](crate::time::ManualClock) for virtual time).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets the journal every fact about this pipeline's releases is written to, and from
    /// which they are restored (default: a [`MemoryJournal`] of its own, which lives as long
    /// as the pipeline). Several pipelines may share one journal.
    #[must_use]
    pub fn journal(mut self, journal: impl Journal + 'static) -> Self {
        self.journal = Some(Arc::new(journal));
        self
    }

    /// How long a move that one copy of a release claimed (by writing its gates' verdicts)
    /// keeps other copies (other processes, other replicas) from taking it, unless the
    /// claiming copy concludes it first (default 1 hour). Set it above the longest a move's
    /// step may run (see [`EngineBuilder::step_timeout`](crate::engine::EngineBuilder::step_timeout)):
    /// after it, another copy may take the move over, as after a crash.
    #[must_use]
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// Sets the staging environment (default `staging`).
    #[must_use]
    pub fn staging(mut self, environment: Environment) -> Self {
        self.staging = Some(environment);
        self
    }

    /// Sets the production environment, where releases are approved for and deployed to
    /// (default `production`).
    #[must_use]
    pub fn production(mut self, environment: Environment) -> Self {
        self.production = Some(environment);
        self
    }

    /// Validates everything and builds the pipeline: the name, the graph (see
    /// [`StageGraphBuilder::build`](crate::graph::StageGraphBuilder::build)), every step
    /// non-empty and every stage with an executor. That a delivery pipeline has an approval
    /// policy is checked by the compiler (see [`ApprovalsFor`]).
    pub fn build(self) -> Result<Pipeline<M>>
    where
        A: ApprovalsFor<M>,
    {
        let name = PipelineName::new(self.name)?;
        let mut graph = StageGraph::builder();
        let mut executors = Vec::with_capacity(self.stages.len());
        let mut declared = self.declared;
        let matrix_ids: std::collections::HashSet<crate::graph::StageId> = self
            .stages
            .iter()
            .filter(|s| s.matrix.is_some())
            .map(|s| s.spec.id.clone())
            .collect();
        for stage in self.stages {
            let executor = match (stage.executor, &self.default_executor) {
                (Some(e), _) => e,
                (None, Some(d)) => Arc::clone(d),
                (None, None) => {
                    return Err(Error::MissingExecutor {
                        stage: stage.spec.id,
                    });
                }
            };
            let at = executors.len();
            if let Some(matrix) = stage.matrix {
                // One executor per combination: the stage's, shared.
                let added = graph.push_matrix(stage.spec.clone(), &matrix);
                for _ in 0..added {
                    executors.push((Arc::clone(&executor), stage.retry_if.clone()));
                }
                // Said back unexpanded by `to_spec`.
                declared.matrices.push((at..at + added, stage.spec, matrix));
            } else {
                if stage.spec.after.iter().any(|d| matrix_ids.contains(d)) {
                    declared.afters.insert(at, stage.spec.after.clone());
                }
                executors.push((executor, stage.retry_if));
                graph.push(stage.spec);
            }
        }
        for step in Step::ALL {
            graph = graph.require_step(step);
        }
        let graph = graph.build()?;
        let staging = match self.staging {
            Some(e) => e,
            None => Environment::new("staging")?,
        };
        let production = match self.production {
            Some(e) => e,
            None => Environment::new("production")?,
        };
        let approvals = self.approval_policies.unwrap_or_else(Approvals::none);
        let executor_names: Vec<String> = executors
            .iter()
            .map(|(executor, _)| executor.name().into_owned())
            .collect();
        let fingerprint = fingerprint::<M>(
            &graph,
            &executor_names,
            &self.gates,
            &self.environment_gates,
            &approvals,
            &staging,
            &production,
        );
        Ok(Pipeline {
            name,
            graph,
            executors,
            gates: self.gates,
            environment_gates: self.environment_gates,
            engine: self.engine,
            clock: self.clock,
            staging,
            production,
            approvals,
            journal: self
                .journal
                .unwrap_or_else(|| Arc::new(MemoryJournal::new(ChainKey::ephemeral()))),
            fingerprint,
            claim_lease: self.claim_lease,
            declared,
            _mode: PhantomData,
        })
    }

    /// The same builder in approval state `B`.
    fn into_state<B>(self) -> PipelineBuilder<M, B> {
        PipelineBuilder {
            name: self.name,
            stages: self.stages,
            default_executor: self.default_executor,
            gates: self.gates,
            environment_gates: self.environment_gates,
            engine: self.engine,
            clock: self.clock,
            staging: self.staging,
            production: self.production,
            approval_policies: self.approval_policies,
            journal: self.journal,
            claim_lease: self.claim_lease,
            declared: self.declared,
            _mode: PhantomData,
        }
    }
}

impl<M: Mode> PipelineBuilder<M, NoApprovals> {
    /// Sets who may approve releases (for every environment without a policy of its own, see
    /// [`approvals_for`](PipelineBuilder::approvals_for)). Required in delivery mode, and only
    /// available there:
    ///
    /// ```compile_fail,E0277
    /// use tollgate::prelude::*;
    /// let policy = ApprovalPolicy::any_of(["alice"]).unwrap();
    /// let _ = Pipeline::<Deployment>::builder("web").approvals(policy); // no people in deployment mode
    /// ```
    #[must_use]
    pub fn approvals(mut self, policy: ApprovalPolicy) -> PipelineBuilder<M, WithApprovals>
    where
        M: HumanApproval,
    {
        self.approval_policies = Some(Approvals {
            default: policy,
            per_environment: BTreeMap::new(),
            directory: Arc::new(NoGroups),
        });
        self.into_state()
    }
}

impl<M: HumanApproval> PipelineBuilder<M, WithApprovals> {
    /// Sets a policy for approvals aimed at `environment`, instead of the default one.
    ///
    /// ```
    /// use tollgate::approval::{ApprovalPolicy, Rule};
    /// use tollgate::prelude::*;
    ///
    /// let builder = Pipeline::<Delivery>::builder("web")
    ///     .approvals(ApprovalPolicy::any_of(["rita", "sam"])?)
    ///     .approvals_for(
    ///         "production",
    ///         ApprovalPolicy::new().rule(Rule::new("two-managers").group("managers").need(2))?,
    ///     )?;
    /// # let _ = builder;
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn approvals_for(
        mut self,
        environment: impl Into<String>,
        policy: ApprovalPolicy,
    ) -> Result<Self, crate::id::IdError> {
        let environment = EnvironmentName::new(environment)?;
        if let Some(approvals) = &mut self.approval_policies {
            approvals.per_environment.insert(environment, policy);
        }
        Ok(self)
    }

    /// Sets the directory that resolves the groups named in approval rules (by default
    /// there are no groups: only people named directly may approve).
    #[must_use]
    pub fn directory(mut self, directory: impl Directory + 'static) -> Self {
        if let Some(approvals) = &mut self.approval_policies {
            approvals.directory = Arc::new(directory);
        }
        self
    }
}

/// What runs one stage: its executor and, when set, the predicate deciding which failures
/// are retried.
type StageRunner = (
    Arc<dyn Executor>,
    Option<Arc<crate::engine::RetryPredicate>>,
);

/// A validated pipeline in mode `M` ([`Delivery`] or [`Deployment`]).
pub struct Pipeline<M: Mode> {
    name: PipelineName,
    graph: StageGraph,
    /// One executor and retry predicate per stage, indexed like the graph's stages.
    executors: Vec<StageRunner>,
    gates: Vec<(Move, BoxGate)>,
    environment_gates: Vec<(EnvironmentName, BoxGate)>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    staging: Environment,
    production: Environment,
    /// A delivery pipeline's policies (the builder's type sees that it was given one); a
    /// deployment pipeline holds [`Approvals::none`].
    approvals: Approvals,
    journal: Arc<dyn Journal>,
    fingerprint: Fingerprint,
    claim_lease: Duration,
    /// What the spec it was built from says that its parts cannot (empty if built in code).
    declared: spec::Declared,
    _mode: PhantomData<fn() -> M>,
}

impl<M: Mode> fmt::Debug for Pipeline<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("mode", &M::KIND)
            .field("stages", &self.graph.len())
            .field("gates", &self.gates.len())
            .field("staging", &self.staging)
            .field("production", &self.production)
            .finish_non_exhaustive()
    }
}

impl<M: Mode> Pipeline<M> {
    /// Starts building a pipeline called `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder<M, NoApprovals> {
        PipelineBuilder {
            name: name.into(),
            stages: Vec::new(),
            default_executor: None,
            gates: Vec::new(),
            environment_gates: Vec::new(),
            engine: Engine::default(),
            clock: Arc::new(SystemClock),
            staging: None,
            production: None,
            approval_policies: None,
            journal: None,
            claim_lease: crate::spec::DEFAULT_CLAIM_LEASE,
            declared: spec::Declared::default(),
            _mode: PhantomData,
        }
    }

    /// The pipeline's name.
    #[must_use]
    pub fn name(&self) -> &PipelineName {
        &self.name
    }

    /// A picture of the whole pipeline: its steps chained in the order a release moves, the
    /// gates on each move as diamonds, the approval as the button (delivery, with who may
    /// press it) or as an automatic check (deployment), finally stages marked. Draw it with
    /// [`to_mermaid`](PipelinePicture::to_mermaid), [`to_dot`](PipelinePicture::to_dot) or
    /// [`to_svg`](PipelinePicture::to_svg).
    ///
    /// ```
    /// use tollgate::executor::from_fn;
    /// use tollgate::prelude::*;
    ///
    /// let ok = || from_fn(|_| Ok(StageOutcome::success()));
    /// let pipeline = Pipeline::<Deployment>::builder("shop")
    ///     .stage(Stage::build("compile").run(ok()))
    ///     .stage(Stage::test("unit").after("compile").run(ok()))
    ///     .stage(Stage::stage("staging").run(ok()))
    ///     .stage(Stage::deploy("production").run(ok()))
    ///     .gate(Move::Deploy, tollgate::gate::from_fn("error-rate", |_| Verdict::Open))
    ///     .build()?;
    ///
    /// let mermaid = pipeline.picture().to_mermaid();
    /// assert!(mermaid.contains(r#"g_deploy_0{"error-rate"}"#));           // a gate, a diamond
    /// assert!(mermaid.contains(r#"approval{{"⚙ automatic: every gate open approves"}}"#));
    /// assert!(mermaid.contains("step_build ==>|built| step_test"));        // the steps, chained
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn picture(&self) -> PipelinePicture<'_> {
        let mut gates = Vec::new();
        for mv in Move::ALL {
            let environment = match mv {
                Move::Deploy => self.production.name(),
                _ => self.staging.name(),
            };
            gates.extend(
                self.gates_on(mv, environment)
                    .map(|g| (mv, g.name().into_owned())),
            );
        }
        let approvers = match M::KIND {
            ModeKind::Delivery => self
                .approvals
                .for_environment(self.production.name())
                .rules()
                .iter()
                .map(ToString::to_string)
                .collect(),
            ModeKind::Deployment => Vec::new(),
        };
        PipelinePicture::new(
            &self.name,
            M::KIND,
            &self.graph,
            gates,
            approvers,
            self.staging.name(),
            self.production.name(),
        )
    }

    /// How long a claimed move keeps other copies of the release out (see
    /// [`PipelineBuilder::claim_lease`]).
    #[must_use]
    pub fn claim_lease(&self) -> Duration {
        self.claim_lease
    }

    /// The journal the pipeline writes its releases' facts to.
    #[must_use]
    pub fn journal(&self) -> &dyn Journal {
        &*self.journal
    }

    /// What the pipeline is: a digest per part of its definition, recorded in every release
    /// it starts.
    #[must_use]
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The stage graph.
    #[must_use]
    pub fn graph(&self) -> &StageGraph {
        &self.graph
    }

    /// The staging environment.
    #[must_use]
    pub fn staging(&self) -> &Environment {
        &self.staging
    }

    /// The production environment.
    #[must_use]
    pub fn production(&self) -> &Environment {
        &self.production
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The engine that runs the steps.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The handle that cancels the step this pipeline is running (see
    /// [`CancelHandle`]): running stages stop, finally stages
    /// run, and the move fails with the release handed back.
    #[must_use]
    pub fn cancel_handle(&self) -> CancelHandle {
        self.engine.cancel_handle()
    }

    /// Explains what stands between `release` and its next move: every gate's verdict now
    /// and, for a staged delivery release, the approval it needs (with the progress of the
    /// votes the journal holds on it). Nothing is recorded and the release is not touched; gates are
    /// asked as they would be by the move itself (a [`MetricGate`](crate::gate::MetricGate)
    /// takes a sample).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tollgate::prelude::*;
    /// # use tollgate::executor::from_fn;
    /// # use tollgate::time::{ManualClock, Timestamp};
    /// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
    /// # let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
    /// let clock = ManualClock::new(Timestamp::EPOCH);
    /// let pipeline = Pipeline::<Delivery>::builder("shop")
    ///     # .stage(Stage::build("compile").run(ok())).stage(Stage::test("unit").run(ok()))
    ///     # .stage(Stage::stage("staging").run(ok())).stage(Stage::deploy("production").run(ok()))
    ///     .clock(clock.clone())
    ///     .gate(Move::Approve, tollgate::gate::soak(Duration::from_secs(1800)))
    ///     .approvals(ApprovalPolicy::any_of(["rita"])?)
    ///     .build()?;
    /// # let built = pipeline.start("r1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
    /// # let artifact = built.artifact().clone();
    /// # let staged = built.test(&pipeline, &artifact).await?.stage(&pipeline, &artifact).await?;
    /// let why = pipeline.explain(staged.record()).await;
    /// assert!(!why.is_ready());
    /// assert_eq!(why.blocking().next().unwrap().gate, "soak 30m");
    /// println!("{why}");
    /// # Ok(()) }) }
    /// ```
    pub async fn explain(&self, release: &AnyRelease) -> Explanation {
        let now = self.clock.now();
        let next = release.state().next_move();
        let environment = next.map(|mv| release.aimed_at(mv));
        let gates = match (next, environment) {
            (Some(mv), Some(environment)) => self
                .evaluate_gates(release, mv, environment, now, None)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(gate, verdict)| GateVerdict { gate, verdict })
                .collect(),
            _ => Vec::new(),
        };
        let approval = if M::KIND == ModeKind::Delivery && next == Some(Move::Approve) {
            let approvals = &self.approvals;
            let policy = approvals.for_environment(release.target().name());
            // A release not yet in the journal (or a journal that fails) shows no progress.
            let ballot = self.ballot_of(release).await.ok();
            Some(ApprovalNeed {
                rules: policy.rules().iter().map(ToString::to_string).collect(),
                progress: ballot.map(|b| policy.progress(&b, &*approvals.directory, now)),
            })
        } else {
            None
        };
        Explanation {
            release: release.id().clone(),
            state: release.state(),
            mode: release.mode(),
            next,
            environment: environment.map(|e| e.name().clone()),
            gates,
            approval,
            at: now,
        }
    }

    /// The gates on `mv` aimed at `environment`: the move's own, and, for the moves that
    /// deploy (stage and deploy), the environment's.
    pub(crate) fn gates_on<'a>(
        &'a self,
        mv: Move,
        environment: &'a EnvironmentName,
    ) -> impl Iterator<Item = &'a BoxGate> + 'a {
        let deploys = mv.deploys();
        self.gates
            .iter()
            .filter(move |(m, _)| *m == mv)
            .map(|(_, g)| g)
            .chain(
                self.environment_gates
                    .iter()
                    .filter(move |(e, _)| deploys && e == environment)
                    .map(|(_, g)| g),
            )
    }

    /// Evaluates every gate on `mv` for `release` at `now`, concurrently, with the
    /// pipeline's clock to wait on (so a gate's `.timeout` races it).
    ///
    /// For a move (`cancel` is the move's own handle), each verdict is reported to the
    /// engine's observer as an [`Event::GateEvaluated`](crate::engine::Event), and the
    /// evaluation is raced against a cancel of that handle or the engine's (those used from
    /// now on): a cancel drops the gates' futures and gives `None`. A cancel wins over
    /// verdicts that come in the same poll, so that no cancel while the gates evaluate is
    /// lost. Without a handle (`explain`) nothing is reported and nothing cancels.
    pub(crate) async fn evaluate_gates(
        &self,
        release: &AnyRelease,
        mv: Move,
        environment: &Environment,
        now: Timestamp,
        cancel: Option<&CancelHandle>,
    ) -> Option<Vec<(String, Verdict)>> {
        let ctx = GateContext::new(release, mv, environment, now).with_clock(&*self.clock);
        let gates: Vec<&BoxGate> = self.gates_on(mv, environment.name()).collect();
        // A gate that panics is a closed gate, with the panic's text: host code that
        // misbehaves stops the move, never the host.
        let evaluation = futures::future::join_all(gates.iter().map(|g| {
            std::panic::AssertUnwindSafe(g.evaluate(&ctx))
                .catch_unwind()
                .map(|result| result.unwrap_or_else(|payload| gate_panicked(&*payload)))
        }));
        let verdicts = match cancel {
            None => evaluation.await,
            Some(handle) => {
                let engine = self.engine.cancel_handle();
                let since = (engine.generation(), handle.generation());
                let cancelled =
                    futures::future::select(engine.cancelled(since.0), handle.cancelled(since.1));
                let verdicts = match futures::future::select(evaluation, cancelled).await {
                    futures::future::Either::Left((verdicts, _)) => verdicts,
                    futures::future::Either::Right(_) => return None,
                };
                if (engine.generation(), handle.generation()) != since {
                    return None;
                }
                verdicts
            }
        };
        let mut observer_panic: Option<(ObserverPanic, u64)> = None;
        let verdicts = gates
            .iter()
            .zip(verdicts)
            .map(|(gate, verdict)| {
                let name = gate.name().into_owned();
                if cancel.is_some() {
                    let told = self.engine.emit(|| Event::GateEvaluated {
                        release: release.id().clone(),
                        mv,
                        gate: name.clone(),
                        verdict: verdict.clone(),
                        at: now,
                    });
                    if let Err(panic) = told {
                        observer_panic.get_or_insert((panic, 0)).1 += 1;
                    }
                }
                (name, verdict)
            })
            .collect();
        // An observer that panicked is contained, and told so once (a panic on that too is
        // contained as well): the verdicts stand.
        if let Some((panic, times)) = observer_panic {
            let _ = self.engine.emit(|| Event::Warning {
                warning: Warning::ObserverPanicked {
                    event: panic.event.to_owned(),
                    message: panic.message,
                    times,
                },
                at: now,
            });
        }
        Some(verdicts)
    }

    /// Runs `step` of `release`, journaling each stage as it settles: a
    /// [`Fact::StageFinished`] after the release's last entry (`journal.head`), appended while
    /// the step goes on. Stages that settle while an append is under way go together in the
    /// next one (group commit), and the step never waits for the journal: the engine tells a
    /// channel, and this future drains it beside the engine's. Every stage's fact is written
    /// before this returns, so the move's own facts come after them.
    ///
    /// The stages of `journal.done` (succeeded in this run of the move before a crash) are
    /// not run again. A stage fact that cannot be written stops the step as the move's
    /// cancel handle does (nothing that may not be journaled should run), and is the
    /// returned error.
    pub(crate) async fn run_step(
        &self,
        release: &AnyRelease,
        step: Step,
        environment: &Environment,
        cancel: &CancelHandle,
        journal: StepJournal<'_>,
    ) -> StepRan {
        let prior = release.outputs();
        let step_outputs = std::sync::OnceLock::new();
        let (settled_tx, settled_rx) = mpsc::unbounded::<StageReport>();
        let run_engine = async {
            // The sender lives in this future: when the step ends it is dropped, and the
            // journaling side sees the end of the stream.
            let settled_tx = settled_tx;
            let executors = &self.executors;
            let hooks = |i: usize| {
                let (executor, retry_if) = &executors[i];
                StageHooks {
                    executor: &**executor,
                    retry_if: retry_if.as_deref(),
                }
            };
            let settled = |report: &StageReport| {
                // Refused only once journaling failed, and the step is stopping.
                let _ = settled_tx.unbounded_send(report.clone());
            };
            let run = StepRun {
                graph: &self.graph,
                step,
                labels: StepLabels {
                    graph: &self.graph,
                    clock: &*self.clock,
                    prior_outputs: &prior,
                    outputs: &step_outputs,
                    release: release.id(),
                    revision: &release.revision().id,
                    artifact: release.artifact(),
                    environment: step.deploys().then_some(environment),
                    claim: journal.claim,
                },
                prior_outputs: &prior,
                clock: &*self.clock,
                cancel: Some(cancel),
                done: journal.done,
                on_settled: Some(&settled),
            };
            self.engine.run_step(&run, &hooks).await
        };
        let journal_stages = self.journal_stages(release.id(), step, &journal, settled_rx, cancel);
        let (report, (head, journaled, error)) =
            futures::future::join(run_engine, journal_stages).await;
        StepRan {
            report,
            head,
            journaled,
            error,
        }
    }

    /// Appends a [`Fact::StageFinished`] for each report `settled` yields, in batches, each
    /// after the release's last entry; resolves once the stream ends (or an append failed,
    /// which cancels the step) with the release's last entry, the reports of the succeeded
    /// stages written, and the failure.
    async fn journal_stages(
        &self,
        release: &ReleaseId,
        step: Step,
        journal: &StepJournal<'_>,
        mut settled: mpsc::UnboundedReceiver<StageReport>,
        cancel: &CancelHandle,
    ) -> (Seq, Vec<StageReport>, Option<JournalError>) {
        let mut head = journal.head;
        let mut journaled = Vec::new();
        while let Some(first) = settled.next().await {
            let mut batch = vec![first];
            while let Ok(report) = settled.try_recv() {
                batch.push(report);
            }
            let facts: Vec<Fact> = batch
                .into_iter()
                .map(|report| Fact::StageFinished {
                    release: release.clone(),
                    step,
                    claim: journal.claim,
                    keys: report
                        .attempts()
                        .iter()
                        .map(|a| {
                            idempotency_key(release, step, &report.id, journal.claim, a.number)
                        })
                        .collect(),
                    report,
                })
                .collect();
            let mut entries: Vec<Entry> = facts.iter().map(Fact::to_entry).collect();
            if let Some(first) = entries.first_mut() {
                first.expect_prev = Some(head);
            }
            match self.journal.append(entries).await {
                Ok(last) => head = last,
                Err(error) => {
                    cancel.cancel();
                    return (head, journaled, Some(error));
                }
            }
            journaled.extend(facts.into_iter().filter_map(|fact| match fact {
                Fact::StageFinished { report, .. } if report.status.is_success() => Some(report),
                _ => None,
            }));
        }
        (head, journaled, None)
    }
}

impl<M: Mode> Pipeline<M> {
    /// Runs only the deploy step's stages (deploy and verify) for `release`'s `artifact` in
    /// `environment`, which the executors see: what a fleet's promotion, redeploy and
    /// rollback run, with no build, no tests and no journal of its own (the fleet records
    /// the report). `claim` (the fleet's ticket) goes into the idempotency keys.
    pub(crate) async fn run_deploy_stages(
        &self,
        release: &ReleaseId,
        revision: &str,
        artifact: &crate::artifact::ArtifactRef,
        environment: &Environment,
        claim: Seq,
    ) -> StepReport {
        let prior = BTreeMap::new();
        let step_outputs = std::sync::OnceLock::new();
        let executors = &self.executors;
        let hooks = |i: usize| {
            let (executor, retry_if) = &executors[i];
            StageHooks {
                executor: &**executor,
                retry_if: retry_if.as_deref(),
            }
        };
        let run = StepRun {
            graph: &self.graph,
            step: Step::Deploy,
            labels: StepLabels {
                graph: &self.graph,
                clock: &*self.clock,
                prior_outputs: &prior,
                outputs: &step_outputs,
                release,
                revision,
                artifact: Some(artifact),
                environment: Some(environment),
                claim,
            },
            prior_outputs: &prior,
            clock: &*self.clock,
            cancel: None,
            done: &[],
            on_settled: None,
        };
        self.engine.run_step(&run, &hooks).await
    }
}

/// Where a move's run stands in the journal, for [`Pipeline::run_step`].
pub(crate) struct StepJournal<'a> {
    /// The release's last entry: the stages' facts are appended after it, on that condition.
    pub head: Seq,
    /// The journal position of the claim that opened the move's run.
    pub claim: Seq,
    /// The stages of the step that succeeded in this run before a crash cut it off.
    pub done: &'a [StageReport],
}

/// What [`Pipeline::run_step`] gives.
pub(crate) struct StepRan {
    /// The step's report: every stage, those carried over from `done` as they were.
    pub report: StepReport,
    /// The release's last entry now: the last stage fact written.
    pub head: Seq,
    /// The reports of the stages that succeeded and whose facts the journal holds.
    pub journaled: Vec<StageReport>,
    /// Why a stage's fact could not be written, if one could not (the step was stopped).
    pub error: Option<JournalError>,
}

impl<M: Mode> Pipeline<M> {
    /// The policy that applies to approvals for `environment`.
    fn policy_for(&self, environment: &EnvironmentName) -> &ApprovalPolicy {
        self.approvals.for_environment(environment)
    }

    /// How far `ballot` has come under the policy for its environment at `at`.
    pub(crate) fn progress_at(&self, ballot: &Ballot, at: Timestamp) -> Progress {
        self.policy_for(&ballot.request().environment).progress(
            ballot,
            &*self.approvals.directory,
            at,
        )
    }

    /// The approval record the policy gives for `ballot` at `at`, or why it gives none.
    pub(crate) fn complete_ballot(
        &self,
        ballot: &Ballot,
        at: Timestamp,
    ) -> Result<ApprovalRecord, ApprovalError> {
        self.policy_for(&ballot.request().environment).complete(
            ballot,
            &*self.approvals.directory,
            at,
        )
    }

    /// Checks a recorded approval against the journal's votes, without the directory (see
    /// `ApprovalPolicy::check_record`): what a restore can re-derive of the past.
    pub(crate) fn check_recorded_approval(
        &self,
        ballot: &Ballot,
        record: &ApprovalRecord,
        used_at: Timestamp,
    ) -> Result<(), ApprovalError> {
        self.policy_for(&ballot.request().environment).check_record(
            ballot,
            record,
            used_at,
            &*self.approvals.directory,
        )
    }

    /// `person` as the pipeline's directory names people (see [`Directory::canonical`]).
    pub(crate) fn canonical(&self, person: &str) -> String {
        self.approvals.directory.canonical(person)
    }

    /// Whether the policy for `environment` admits `person` now (directly or through the
    /// directory's groups).
    pub(crate) fn admits(&self, environment: &EnvironmentName, person: &Person) -> bool {
        self.policy_for(environment)
            .admits(person.as_str(), &*self.approvals.directory)
    }

    /// Checks that `person` may vote on `request`.
    pub(crate) fn check_voter(
        &self,
        request: &ApprovalRequest,
        person: &Person,
    ) -> Result<(), ApprovalError> {
        self.policy_for(&request.environment).check_voter(
            &self.name,
            request,
            person,
            &*self.approvals.directory,
        )
    }

    /// The digest of the pipeline's definition that its approvals carry.
    pub(crate) fn issuer(&self) -> String {
        Fingerprint::digest(json(&self.fingerprint).as_bytes())
    }

    /// The votes the journal holds on `release`'s approval request: those cast since it was
    /// last staged, on the request it has now (for an approved release, the votes its
    /// approval was issued from and any cast since).
    pub(crate) async fn ballot_of(&self, release: &AnyRelease) -> Result<Ballot> {
        let facts = read_release(&*self.journal, release.id().as_str()).await?;
        ballot_in(release, &facts)
    }
}

/// The votes among `facts` (the release's, read from the journal) on `release`'s approval
/// request, as [`Pipeline::ballot_of`] counts them.
pub(crate) fn ballot_in(release: &AnyRelease, facts: &[(Seq, Fact)]) -> Result<Ballot> {
    let Some(request) = request_for(release) else {
        return Err(ArtifactError::Missing {
            release: release.id().clone(),
        }
        .into());
    };
    let mut ballot = Ballot::new(request.clone());
    for (seq, fact) in facts {
        match fact {
            Fact::Moved {
                to: StateName::Staged,
                ..
            } => ballot = Ballot::new(request.clone()),
            Fact::Voted {
                request: asked,
                vote,
                ..
            } if *asked == request => ballot.push(vote.clone(), *seq),
            _ => {}
        }
    }
    Ok(ballot)
}

impl<M: HumanApproval> Pipeline<M> {
    /// How far `ballot` has come under the policy for its environment, now: rule by rule,
    /// any rejection, and expired votes. Every vote is re-checked against the policy, the
    /// directory and the clock.
    #[must_use]
    pub fn progress(&self, ballot: &Ballot) -> Progress {
        self.progress_at(ballot, self.clock.now())
    }

    /// The approval policy for the production environment.
    #[must_use]
    pub fn approval_policy(&self) -> &ApprovalPolicy {
        self.approvals.for_environment(self.production.name())
    }
}

/// The approval request of a release, as its record says: `None` before it has an artifact.
pub(crate) fn request_for(any: &AnyRelease) -> Option<ApprovalRequest> {
    Some(request_with(any, any.artifact()?.digest.clone()))
}

/// The approval request of `any` for the artifact with `digest`.
pub(crate) fn request_with(any: &AnyRelease, digest: crate::artifact::Digest) -> ApprovalRequest {
    ApprovalRequest {
        pipeline: any.pipeline().clone(),
        release: any.id().clone(),
        revision: any.revision().id.clone(),
        author: any.revision().author.clone(),
        triggered_by: any.revision().triggered_by.clone(),
        digest,
        environment: any.target().name().clone(),
    }
}

/// The fingerprint of a pipeline's definition: the graph (every stage spec) with the name of
/// each stage's executor, the gates by move and environment (by name), the approval
/// policies, the environments and the mode.
fn fingerprint<M: Mode>(
    graph: &StageGraph,
    executors: &[String],
    gates: &[(Move, BoxGate)],
    environment_gates: &[(EnvironmentName, BoxGate)],
    approvals: &Approvals,
    staging: &Environment,
    production: &Environment,
) -> Fingerprint {
    let mut gate_names = String::new();
    for (mv, gate) in gates {
        let _ = writeln!(gate_names, "move {mv}: {}", gate.name());
    }
    for (environment, gate) in environment_gates {
        let _ = writeln!(gate_names, "environment {environment}: {}", gate.name());
    }
    let approvals = (M::KIND == ModeKind::Delivery).then(|| {
        (
            &approvals.default,
            approvals.per_environment.iter().collect::<Vec<_>>(),
        )
    });
    Fingerprint {
        graph: Fingerprint::digest(json(&(graph, executors)).as_bytes()),
        gates: Fingerprint::digest(gate_names.as_bytes()),
        approvals: Fingerprint::digest(json(&approvals).as_bytes()),
        environments: Fingerprint::digest(
            format!(
                "staging {}\nproduction {}",
                staging.name(),
                production.name()
            )
            .as_bytes(),
        ),
        mode: M::KIND,
    }
}

/// A value's JSON form, for the digests of plain data (which always serializes).
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The verdict of a gate that panicked with `payload`: closed, saying so.
#[cold]
fn gate_panicked(payload: &(dyn std::any::Any + Send)) -> Verdict {
    Verdict::closed(format!(
        "the gate panicked: {}",
        crate::engine::panic_message(payload)
    ))
}
