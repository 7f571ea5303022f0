//! A [`Pipeline<M>`](Pipeline): a validated stage graph with an executor per stage, gates on
//! moves, the staging and production environments, a clock, and (in delivery mode) an
//! approval policy. It starts releases and drives their moves.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{AttemptFailure, Engine, RetryPredicate, StageHooks, StepReport, StepRun};
use crate::environment::{Environment, EnvironmentName};
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::gate::{
    Approval, ApprovalPolicy, ApprovalRequest, Ballot, BoxGate, Decision, Directory, Gate,
    GateContext, Move, NoGroups, Progress, Verdict, Vote,
};
use crate::graph::{RetryPolicy, StageGraph, StageSpec, Step};
use crate::name::{Person, ReleaseId};
use crate::release::{AnyRelease, Commit, Delivery, Mode, Release, Revision};
use crate::time::{Clock, SystemClock};

/// A stage of a pipeline: its [`StageSpec`] and the executor that runs it.
pub struct Stage {
    spec: StageSpec,
    executor: Option<Arc<dyn Executor>>,
    retry_if: Option<Arc<RetryPredicate>>,
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("spec", &self.spec)
            .field("has_executor", &self.executor.is_some())
            .field("has_retry_if", &self.retry_if.is_some())
            .finish()
    }
}

impl Stage {
    /// A stage from a full spec.
    #[must_use]
    pub fn from_spec(spec: StageSpec) -> Self {
        Stage {
            spec,
            executor: None,
            retry_if: None,
        }
    }

    /// A stage of the build step.
    pub fn build(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::build(id))
    }

    /// A stage of the test step.
    pub fn test(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::test(id))
    }

    /// A stage of the stage (staging) step.
    #[allow(clippy::self_named_constructors)] // Named after `Step::Stage`, like its siblings.
    pub fn stage(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::stage(id))
    }

    /// A stage of the deploy step.
    pub fn deploy(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::deploy(id))
    }

    /// Runs this stage after `dependency` succeeded.
    #[must_use]
    pub fn after(mut self, dependency: impl Into<String>) -> Self {
        self.spec = self.spec.after(dependency);
        self
    }

    /// Sets a description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec = self.spec.description(text);
        self
    }

    /// Sets the expected duration (used to order ready stages by critical path).
    #[must_use]
    pub fn estimate(mut self, duration: Duration) -> Self {
        self.spec = self.spec.estimate(duration);
        self
    }

    /// Retries failed attempts by `policy` (see [`RetryPolicy`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.spec = self.spec.retry(policy);
        self
    }

    /// Retries only the failures for which `predicate` returns true (default: every failure
    /// and timeout, up to the policy's attempt limit).
    ///
    /// ```
    /// use tollgate::graph::RetryPolicy;
    /// use tollgate::pipeline::Stage;
    ///
    /// // Retry network flakes, not compile errors.
    /// let fetch = Stage::build("fetch")
    ///     .retry(RetryPolicy::attempts(3))
    ///     .retry_if(|failure| failure.timed_out || failure.reason.contains("connection reset"));
    /// # let _ = fetch;
    /// ```
    #[must_use]
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&AttemptFailure) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }

    /// Cuts each attempt off after `limit`.
    #[must_use]
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.spec = self.spec.attempt_timeout(limit);
        self
    }

    /// Cuts the stage off after `limit`, over all its attempts.
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.spec = self.spec.timeout(limit);
        self
    }

    /// Puts the stage in a concurrency group.
    #[must_use]
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.spec = self.spec.group(name);
        self
    }

    /// Makes this a finally stage: it runs after the step's other stages, whatever happened.
    #[must_use]
    pub fn finally(mut self) -> Self {
        self.spec = self.spec.finally();
        self
    }

    /// Sets the executor that runs this stage.
    #[must_use]
    pub fn run(mut self, executor: impl Executor + 'static) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }
}

/// Builds a [`Pipeline`]; every check happens in [`PipelineBuilder::build`].
pub struct PipelineBuilder<M: Mode> {
    name: String,
    stages: Vec<Stage>,
    default_executor: Option<Arc<dyn Executor>>,
    gates: Vec<(Move, BoxGate)>,
    environment_gates: Vec<(EnvironmentName, BoxGate)>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    staging: Option<Environment>,
    production: Option<Environment>,
    approvals: Approvals,
    _mode: PhantomData<fn() -> M>,
}

/// A delivery pipeline's approval policies (a default and per-environment ones) and the
/// directory that resolves their groups.
#[derive(Clone)]
struct Approvals {
    default: Option<ApprovalPolicy>,
    per_environment: BTreeMap<EnvironmentName, ApprovalPolicy>,
    directory: Arc<dyn Directory>,
}

impl Approvals {
    fn new() -> Self {
        Approvals {
            default: None,
            per_environment: BTreeMap::new(),
            directory: Arc::new(NoGroups),
        }
    }

    fn for_environment(&self, environment: &EnvironmentName) -> Option<&ApprovalPolicy> {
        self.per_environment
            .get(environment)
            .or(self.default.as_ref())
    }
}

impl<M: Mode> fmt::Debug for PipelineBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .field("mode", &M::KIND)
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl<M: Mode> PipelineBuilder<M> {
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
    ) -> Result<Self> {
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
    /// non-empty, every stage with an executor, and in delivery mode an approval policy.
    pub fn build(self) -> Result<Pipeline<M>> {
        let name = crate::name::check("pipeline name", self.name)?;
        let mut graph = StageGraph::builder();
        let mut executors = Vec::with_capacity(self.stages.len());
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
            executors.push((executor, stage.retry_if));
            graph.push(stage.spec);
        }
        for step in Step::ALL {
            graph = graph.require_step(step);
        }
        let graph = graph.build()?;
        let default_env = |n: &str| Environment::new(n);
        let production = match self.production {
            Some(e) => e,
            None => default_env("production")?,
        };
        if M::KIND == crate::release::ModeKind::Delivery
            && self.approvals.for_environment(production.name()).is_none()
        {
            return Err(Error::MissingApprovalPolicy { pipeline: name });
        }
        Ok(Pipeline {
            name,
            graph,
            executors,
            gates: self.gates,
            environment_gates: self.environment_gates,
            engine: self.engine,
            clock: self.clock,
            staging: match self.staging {
                Some(e) => e,
                None => default_env("staging")?,
            },
            production,
            approvals: self.approvals,
            _mode: PhantomData,
        })
    }
}

impl PipelineBuilder<Delivery> {
    /// Sets who may approve releases for production. Required in delivery mode, and only
    /// available there:
    ///
    /// ```compile_fail,E0599
    /// use tollgate::prelude::*;
    /// let policy = ApprovalPolicy::any_of(["alice"]).unwrap();
    /// let _ = Pipeline::<Deployment>::builder("web").approvals(policy); // no people in deployment mode
    /// ```
    #[must_use]
    pub fn approvals(mut self, policy: ApprovalPolicy) -> Self {
        self.approvals.default = Some(policy);
        self
    }

    /// Sets a policy for approvals aimed at `environment`, instead of the default one.
    ///
    /// ```
    /// use tollgate::gate::{ApprovalPolicy, Rule};
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
    ) -> Result<Self> {
        let environment = EnvironmentName::new(environment)?;
        self.approvals.per_environment.insert(environment, policy);
        Ok(self)
    }

    /// Sets the directory that resolves the groups named in approval rules (by default
    /// there are no groups: only people named directly may approve).
    #[must_use]
    pub fn directory(mut self, directory: impl Directory + 'static) -> Self {
        self.approvals.directory = Arc::new(directory);
        self
    }
}

/// What runs one stage: its executor and, when set, the predicate deciding which failures
/// are retried.
type StageRunner = (Arc<dyn Executor>, Option<Arc<RetryPredicate>>);

/// A validated pipeline in mode `M` ([`Delivery`] or
/// [`Deployment`](crate::release::Deployment)).
pub struct Pipeline<M: Mode> {
    name: String,
    graph: StageGraph,
    /// One executor and retry predicate per stage, indexed like the graph's stages.
    executors: Vec<StageRunner>,
    gates: Vec<(Move, BoxGate)>,
    environment_gates: Vec<(EnvironmentName, BoxGate)>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    staging: Environment,
    production: Environment,
    approvals: Approvals,
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
    pub fn builder(name: impl Into<String>) -> PipelineBuilder<M> {
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
            approvals: Approvals::new(),
            _mode: PhantomData,
        }
    }

    /// Starts a release `id` of `revision`. It is headed for the production environment.
    pub fn start(&self, id: impl Into<String>, revision: Revision) -> Result<Release<Commit, M>> {
        let any = AnyRelease::new(
            ReleaseId::new(id)?,
            self.name.clone(),
            M::KIND,
            revision,
            self.clock.now(),
            self.staging.clone(),
            self.production.clone(),
        );
        Ok(Release::from_any_unchecked(any))
    }

    /// The pipeline's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
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
    /// [`CancelHandle`](crate::engine::CancelHandle)): running stages stop, finally stages
    /// run, and the move fails with the release handed back.
    #[must_use]
    pub fn cancel_handle(&self) -> crate::engine::CancelHandle {
        self.engine.cancel_handle()
    }

    /// Explains what stands between `release` and its next move: every gate's verdict now
    /// and, for a staged delivery release, the approval it needs (with the progress of
    /// `ballot`, when given). Nothing is recorded and the release is not touched; gates are
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
    /// # let artifact = built.artifact().cloned().unwrap();
    /// # let staged = built.test(&pipeline, &artifact).await?.stage(&pipeline, &artifact).await?;
    /// let why = pipeline.explain(staged.record(), None).await;
    /// assert!(!why.is_ready());
    /// assert_eq!(why.blocking().next().unwrap().gate, "soak 30m");
    /// println!("{why}");
    /// # Ok(()) }) }
    /// ```
    pub async fn explain(
        &self,
        release: &AnyRelease,
        ballot: Option<&Ballot>,
    ) -> crate::gate::Explanation {
        use crate::release::StateName;
        let now = self.clock.now();
        let next = match release.state() {
            StateName::Commit => Some(Move::Build),
            StateName::Built => Some(Move::Test),
            StateName::Tested => Some(Move::Stage),
            StateName::Staged => Some(Move::Approve),
            StateName::Approved => Some(Move::Deploy),
            StateName::Deployed => None,
        };
        let environment = match next {
            Some(Move::Stage) => Some(release.staging()),
            Some(_) => Some(release.target()),
            None => None,
        };
        let gates = match (next, environment) {
            (Some(mv), Some(environment)) => self
                .evaluate_gates(release, mv, environment, now, false)
                .await
                .into_iter()
                .map(|(gate, verdict)| crate::gate::GateVerdict { gate, verdict })
                .collect(),
            _ => Vec::new(),
        };
        let approval = (M::KIND == crate::release::ModeKind::Delivery
            && next == Some(Move::Approve))
        .then(|| {
            let policy = self.approvals.for_environment(release.target().name());
            crate::gate::ApprovalNeed {
                rules: policy
                    .map(|p| p.rules().iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                progress: match (policy, ballot) {
                    (Some(policy), Some(ballot)) => {
                        Some(policy.progress(ballot, &*self.approvals.directory, now))
                    }
                    _ => None,
                },
            }
        });
        crate::gate::Explanation {
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
        let deploys = matches!(mv, Move::Stage | Move::Deploy);
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

    /// Evaluates every gate on `mv` for `release` at `now`, concurrently, and reports each
    /// verdict to the engine's observer as an [`Event::GateEvaluated`](crate::engine::Event).
    pub(crate) async fn evaluate_gates(
        &self,
        release: &AnyRelease,
        mv: Move,
        environment: &Environment,
        now: crate::time::Timestamp,
        report: bool,
    ) -> Vec<(String, Verdict)> {
        let ctx = GateContext::new(release, mv, environment, now);
        let gates: Vec<&BoxGate> = self.gates_on(mv, environment.name()).collect();
        let verdicts = futures::future::join_all(gates.iter().map(|g| g.evaluate(&ctx))).await;
        gates
            .iter()
            .zip(verdicts)
            .map(|(gate, verdict)| {
                let name = gate.name().into_owned();
                if report {
                    self.engine.emit(|| crate::engine::Event::GateEvaluated {
                        release: release.id().clone(),
                        mv,
                        gate: name.clone(),
                        verdict: verdict.clone(),
                        at: now,
                    });
                }
                (name, verdict)
            })
            .collect()
    }

    pub(crate) async fn run_step(
        &self,
        release: &AnyRelease,
        step: Step,
        environment: &Environment,
    ) -> StepReport {
        let prior = release.outputs();
        let run = StepRun {
            graph: &self.graph,
            step,
            release: release.id(),
            revision: release.revision(),
            artifact: release.artifact(),
            environment: matches!(step, Step::Stage | Step::Deploy).then_some(environment),
            prior_outputs: &prior,
            clock: &*self.clock,
        };
        let executors = &self.executors;
        let hooks = |i: usize| {
            let (executor, retry_if) = &executors[i];
            StageHooks {
                executor: &**executor,
                retry_if: retry_if.as_deref(),
            }
        };
        self.engine.run_step(&run, &hooks).await
    }
}

impl Pipeline<Delivery> {
    /// The policy that applies to `request`, by its environment.
    fn policy_for(&self, request: &ApprovalRequest) -> Result<&ApprovalPolicy> {
        self.approvals
            .for_environment(&request.environment)
            .ok_or_else(|| Error::MissingApprovalPolicy {
                pipeline: self.name.clone(),
            })
    }

    /// Records `person`'s `decision` on the ballot, with their `reason`, at the pipeline
    /// clock's time, and returns the progress it makes.
    ///
    /// The vote is refused, and the ballot left unchanged, when no rule of the policy admits
    /// `person` (directly or through a group), when they wrote the change or triggered the
    /// pipeline (unless the policy relaxes that), or when the ballot belongs to another
    /// pipeline. A later vote by the same person replaces their earlier one.
    ///
    /// ```
    /// # use tollgate::prelude::*;
    /// # use tollgate::gate::{Ballot, Decision, Groups, Rule};
    /// # use tollgate::executor::from_fn;
    /// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
    /// # let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
    /// let pipeline = Pipeline::<Delivery>::builder("shop")
    ///     # .stage(Stage::build("compile").run(ok())).stage(Stage::test("unit").run(ok()))
    ///     # .stage(Stage::stage("staging").run(ok())).stage(Stage::deploy("production").run(ok()))
    ///     .approvals(
    ///         ApprovalPolicy::new()
    ///             .rule(Rule::new("release-managers").group("release-managers").need(2))?
    ///             .rule(Rule::new("security").group("security"))?,
    ///     )
    ///     .directory(
    ///         Groups::new()
    ///             .group("release-managers", ["rita", "sam", "ines"])?
    ///             .group("security", ["ines", "omar"])?,
    ///     )
    ///     .build()?;
    /// # let built = pipeline.start("r1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
    /// # let artifact = built.artifact().cloned().unwrap();
    /// # let staged = built.test(&pipeline, &artifact).await?.stage(&pipeline, &artifact).await?;
    /// let mut ballot = Ballot::new(staged.approval_request());
    /// pipeline.vote(&mut ballot, "rita", Decision::Approve, "release notes checked")?;
    /// let progress = pipeline.vote(&mut ballot, "ines", Decision::Approve, "scan is clean")?;
    /// // ines counts once per rule, for both rules: she is in both groups.
    /// assert_eq!(
    ///     progress.to_string(),
    ///     "approved: release-managers 2 of 2 (ines, rita), security 1 of 1 (ines)"
    /// );
    /// assert!(pipeline.vote(&mut ballot, "dana", Decision::Approve, "mine").is_err()); // the author
    /// let approval = pipeline.issue(&ballot)?;
    /// let approved = staged.approve(&pipeline, approval).await?;
    /// assert_eq!(approved.record().approval().unwrap().signoffs.len(), 2);
    /// # Ok(()) }) }
    /// ```
    pub fn vote(
        &self,
        ballot: &mut Ballot,
        person: &str,
        decision: Decision,
        reason: &str,
    ) -> Result<Progress> {
        let person = Person::new(person)?;
        let policy = self.policy_for(ballot.request())?;
        policy.check_voter(
            &self.name,
            ballot.request(),
            &person,
            &*self.approvals.directory,
        )?;
        ballot.push(Vote {
            person,
            decision,
            reason: reason.to_owned(),
            at: self.clock.now(),
        });
        Ok(self.progress(ballot))
    }

    /// How far `ballot` has come under the policy for its environment, now: rule by rule,
    /// any rejection, and expired votes. Every vote is re-checked against the policy, the
    /// directory and the clock.
    ///
    /// # Panics
    ///
    /// Never: a delivery pipeline always has a policy for its production environment, and
    /// ballots for other environments report that no rule is met.
    #[must_use]
    pub fn progress(&self, ballot: &Ballot) -> Progress {
        match self.policy_for(ballot.request()) {
            Ok(policy) => policy.progress(ballot, &*self.approvals.directory, self.clock.now()),
            Err(_) => Progress {
                rules: Vec::new(),
                rejection: None,
                expired: Vec::new(),
            },
        }
    }

    /// Issues the [`Approval`] capability for `ballot` when every rule of the policy is met
    /// and nobody it admits rejects; otherwise says what is missing
    /// ([`Error::ApprovalIncomplete`]) or who rejected ([`Error::ApprovalRejected`]).
    ///
    /// The approval expires when the earliest of the votes that made it would.
    pub fn issue(&self, ballot: &Ballot) -> Result<Approval> {
        let policy = self.policy_for(ballot.request())?;
        if ballot.request().pipeline != self.name {
            return Err(Error::ApprovalMismatch {
                // The ballot's latest voter, for the message; the ballot is refused whoever
                // voted.
                approver: ballot
                    .votes()
                    .last()
                    .map_or_else(|| "nobody".to_owned(), |v| v.person.to_string()),
                field: "pipeline",
                approved: ballot.request().pipeline.clone(),
                actual: self.name.clone(),
            });
        }
        let record = policy.complete(ballot, &*self.approvals.directory, self.clock.now())?;
        Ok(Approval::new(ballot.request().clone(), record))
    }

    /// The one-person shortcut: records `approver`'s yes to `request`, with their `reason`,
    /// and issues the [`Approval`] capability if that alone meets the policy (as with
    /// [`ApprovalPolicy::any_of`]). For policies that need several people, collect votes on
    /// a [`Ballot`] with [`Pipeline::vote`] and call [`Pipeline::issue`].
    pub fn approve(
        &self,
        request: &ApprovalRequest,
        approver: &str,
        reason: &str,
    ) -> Result<Approval> {
        let mut ballot = Ballot::new(request.clone());
        self.vote(&mut ballot, approver, Decision::Approve, reason)?;
        self.issue(&ballot)
    }

    /// The approval policy for the production environment.
    ///
    /// # Panics
    ///
    /// Never: a delivery pipeline cannot be built without one.
    #[must_use]
    pub fn approval_policy(&self) -> &ApprovalPolicy {
        self.approvals
            .for_environment(self.production.name())
            .expect("a delivery pipeline always has a production approval policy: checked at build")
    }
}
