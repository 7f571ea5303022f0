//! A [`Pipeline<M>`](Pipeline): a validated stage graph with an executor per stage, gates on
//! moves, the staging and production environments, a clock, and (in delivery mode) an
//! approval policy. It starts releases and drives their moves.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{AttemptFailure, Engine, RetryPredicate, StageHooks, StepReport, StepRun};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::gate::{Approval, ApprovalPolicy, ApprovalRequest, BoxGate, Gate, Move};
use crate::graph::{RetryPolicy, StageGraph, StageSpec, Step};
use crate::name::ReleaseId;
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
    engine: Engine,
    clock: Arc<dyn Clock>,
    staging: Option<Environment>,
    production: Option<Environment>,
    approvals: Option<ApprovalPolicy>,
    _mode: PhantomData<fn() -> M>,
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
        if M::KIND == crate::release::ModeKind::Delivery && self.approvals.is_none() {
            return Err(Error::MissingApprovalPolicy { pipeline: name });
        }
        let default_env = |n: &str| Environment::new(n);
        Ok(Pipeline {
            name,
            graph,
            executors,
            gates: self.gates,
            engine: self.engine,
            clock: self.clock,
            staging: match self.staging {
                Some(e) => e,
                None => default_env("staging")?,
            },
            production: match self.production {
                Some(e) => e,
                None => default_env("production")?,
            },
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
        self.approvals = Some(policy);
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
    engine: Engine,
    clock: Arc<dyn Clock>,
    staging: Environment,
    production: Environment,
    approvals: Option<ApprovalPolicy>,
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
            engine: Engine::default(),
            clock: Arc::new(SystemClock),
            staging: None,
            production: None,
            approvals: None,
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

    /// The gates on `mv`.
    pub(crate) fn gates_on(&self, mv: Move) -> impl Iterator<Item = &BoxGate> + '_ {
        self.gates
            .iter()
            .filter(move |(m, _)| *m == mv)
            .map(|(_, g)| g)
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
    /// Records `approver`'s yes to `request`, with their `reason`, and issues the
    /// [`Approval`] capability if the policy allows them (they are an approver and, unless
    /// relaxed, not the change's author). The approval expires after the policy's validity.
    pub fn approve(
        &self,
        request: &ApprovalRequest,
        approver: &str,
        reason: &str,
    ) -> Result<Approval> {
        let policy = self
            .approvals
            .as_ref()
            .ok_or_else(|| Error::MissingApprovalPolicy {
                pipeline: self.name.clone(),
            })?;
        policy.issue(&self.name, request, approver, reason, self.clock.now())
    }

    /// The approval policy.
    ///
    /// # Panics
    ///
    /// Never: a delivery pipeline cannot be built without one.
    #[must_use]
    pub fn approval_policy(&self) -> &ApprovalPolicy {
        self.approvals
            .as_ref()
            .expect("a delivery pipeline always has an approval policy: checked at build")
    }
}
