//! The runner: [`Rollout`] executes a strategy's plan against a [`Target`] on the pipeline's
//! clock, with analysis between steps and in the background of pauses, aborting at once when
//! it fails (or freezing past a forward-only step and asking the [`Operator`]); every step is
//! a [`RolloutEvent`], told to the observers and appended to the journal when there is one.
//! [`Rollout`] is also an [`Executor`], so a deploy stage can be a rollout.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Either};

use super::analysis::{Analysis, Analyzer};
use super::event::{
    Cause, Choice, Outcome, RolloutEvent, RolloutEventKind, RolloutObserver, rollout_key,
};
use super::strategy::{Pause, Step, Strategy};
use super::target::{Health, Target, TargetError, Version};
use crate::environment::{Environment, EnvironmentName};
use crate::executor::{Executor, ExecutorError, StageContext, StageOutcome};
use crate::forward::forward_impls;
use crate::gate::{GateContext, MetricSource, Move};
use crate::id::{Person, PipelineName, ReleaseId};
use crate::journal::{Entry, Journal, JournalError};
use crate::lifecycle::{ModeKind, StateName};
use crate::record::{AnyRelease, Revision};
use crate::time::{Clock, Timestamp};

/// A rollout that could not run, or that ended without promotion (as an executor reports it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// The rollout is set up wrong.
    #[error("rollout in `{environment}` cannot run: {reason}")]
    Invalid {
        /// Where.
        environment: EnvironmentName,
        /// What is missing or wrong.
        reason: String,
    },
    /// Rolling back failed: the platform's traffic is in an unknown state.
    #[error("rollout of `{release}` in `{environment}` could not roll back ({cause}): {source}")]
    AbortFailed {
        /// The release.
        release: ReleaseId,
        /// Where.
        environment: EnvironmentName,
        /// Why it was rolling back.
        cause: Cause,
        /// The platform's error.
        #[source]
        source: TargetError,
    },
    /// Writing or reading the rollout's journal facts failed.
    #[error("rollout of `{release}` in `{environment}`: journal: {message}")]
    Journal {
        /// The release.
        release: ReleaseId,
        /// Where.
        environment: EnvironmentName,
        /// The journal's error.
        message: String,
    },
    /// The rollout rolled back (a deploy stage's failure: the release is not live there).
    #[error("rollout of `{release}` in `{environment}` rolled back: {cause}")]
    RolledBack {
        /// The release.
        release: ReleaseId,
        /// Where.
        environment: EnvironmentName,
        /// Why.
        cause: Cause,
    },
    /// The rollout froze past a forward-only step (a deploy stage's failure of its own kind:
    /// nothing was rolled back and a person must decide).
    #[error("rollout of `{release}` in `{environment}` is frozen after `{after}`: {cause}")]
    Frozen {
        /// The release.
        release: ReleaseId,
        /// Where.
        environment: EnvironmentName,
        /// The forward-only step.
        after: String,
        /// What failed.
        cause: Cause,
    },
}

/// The people a rollout asks: for go at a manual pause, and for a decision on a frozen one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate rollout operator",
    label = "this type does not implement `tollgate::rollout::Operator`",
    note = "implement `async fn go(&self, environment: &EnvironmentName, release: &ReleaseId, step: usize) -> Person` with `#[async_trait]`"
)]
#[async_trait]
pub trait Operator: Send + Sync {
    /// Resolves once a person says go for the pause at `step` of the rollout of `release` in
    /// `environment`, with who it was. Analysis keeps sampling while it waits; a failed one
    /// drops this future.
    async fn go(&self, environment: &EnvironmentName, release: &ReleaseId, step: usize) -> Person;

    /// A person's decision on a rollout frozen by `cause`, or `None` while nobody has decided
    /// (the rollout then ends [`Outcome::Frozen`] and waits). By default nobody decides.
    async fn decide(
        &self,
        environment: &EnvironmentName,
        release: &ReleaseId,
        cause: &Cause,
    ) -> Option<(Choice, Person)> {
        let _ = (environment, release, cause);
        None
    }
}

forward_impls! {
    #[async_trait]
    impl Operator {
        async fn go(&self, environment: &EnvironmentName, release: &ReleaseId, step: usize) -> Person;
        async fn decide(&self, environment: &EnvironmentName, release: &ReleaseId, cause: &Cause) -> Option<(Choice, Person)>;
    }
}

/// How a rollout waits for the candidate to be healthy: ask every `interval`, give up after
/// `timeout` (a batch still progressing then is a bad batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Time between two questions.
    #[serde(with = "crate::time::millis")]
    pub interval: Duration,
    /// How long the candidate may take.
    #[serde(with = "crate::time::millis")]
    pub timeout: Duration,
}

impl Default for HealthCheck {
    /// Every 10 seconds, for at most 5 minutes.
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
        }
    }
}

/// How a rollout ended, and everything it told on the way.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Its events, in order (those of this run; a resumed rollout's earlier ones are in the
    /// journal).
    pub events: Vec<RolloutEvent>,
    /// How many evaluations the analysis made.
    pub evaluations: u64,
    /// What went wrong on the side without stopping the rollout: an observer that
    /// panicked ([`Warning::ObserverPanicked`](crate::engine::Warning::ObserverPanicked),
    /// once per kind of event and panic text; the rollout carried on, and the journal has
    /// every event).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::engine::Warning>,
}

/// A rollout: a [`Strategy`] run against a [`Target`], with optional [`Analysis`] over a
/// [`MetricSource`], an [`Operator`] for manual pauses and frozen rollouts, observers, and
/// the journal its events are kept in.
///
/// Run it yourself with [`run`](Self::run), or make it a deploy stage's executor: it then
/// rolls out to the stage's environment (so a fleet's promotion through a lifecycle runs it
/// per environment), the release's artifact as the candidate; promoted is a success with the
/// output `rollout = promoted`, rolled back and frozen are failures whose error is
/// [`RolloutError::RolledBack`] / [`RolloutError::Frozen`] (reachable from the stage
/// report's [`error`](crate::engine::StageReport::error)).
///
/// In a deploy stage the [`GateContext`] the metric source is handed carries a view of the
/// release built from what a stage is told (its id, revision id, artifact and environment,
/// in state `Approved`); its pipeline and mode are the ones [`pipeline`](Self::pipeline)
/// names, and its revision's author reads `unknown`.
pub struct Rollout {
    strategy: Strategy,
    target: Arc<dyn Target>,
    analysis: Option<(Analysis, Arc<dyn MetricSource>)>,
    health: HealthCheck,
    operator: Option<Arc<dyn Operator>>,
    observers: Vec<Arc<dyn RolloutObserver>>,
    journal: Option<Arc<dyn Journal>>,
    pipeline: PipelineName,
    mode: ModeKind,
    config: BTreeMap<String, String>,
}

impl fmt::Debug for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollout")
            .field("strategy", &self.strategy)
            .field("analysis", &self.analysis.as_ref().map(|(a, _)| a))
            .field("health", &self.health)
            .field("operator", &self.operator.is_some())
            .field("journal", &self.journal.is_some())
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl Rollout {
    /// A rollout by `strategy` on `target`, with no analysis.
    pub fn new(strategy: Strategy, target: impl Target + 'static) -> Self {
        Rollout {
            strategy,
            target: Arc::new(target),
            analysis: None,
            health: HealthCheck::default(),
            operator: None,
            observers: Vec::new(),
            journal: None,
            pipeline: PipelineName::new("rollout").unwrap_or_else(|_| unreachable!()),
            mode: ModeKind::Deployment,
            config: BTreeMap::new(),
        }
    }

    /// Analysis sampled from `metrics`.
    #[must_use]
    pub fn analysis(mut self, analysis: Analysis, metrics: impl MetricSource + 'static) -> Self {
        self.analysis = Some((analysis, Arc::new(metrics)));
        self
    }

    /// How health is checked.
    #[must_use]
    pub fn health_check(mut self, health: HealthCheck) -> Self {
        self.health = health;
        self
    }

    /// Who says go at manual pauses and decides about frozen rollouts.
    #[must_use]
    pub fn operator(mut self, operator: impl Operator + 'static) -> Self {
        self.operator = Some(Arc::new(operator));
        self
    }

    /// Adds an observer of the events.
    #[must_use]
    pub fn observer(mut self, observer: impl RolloutObserver + 'static) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Keeps every event in `journal` (the pipeline's, shared through an `Arc`) under
    /// [`rollout_key`]; a rollout cut off by a crash then carries on after its last finished
    /// step.
    #[must_use]
    pub fn journal(mut self, journal: impl Journal + 'static) -> Self {
        self.journal = Some(Arc::new(journal));
        self
    }

    /// The pipeline and mode the rollout runs for (journal keys, and the release view a
    /// deploy stage's analysis sees).
    #[must_use]
    pub fn pipeline(mut self, pipeline: PipelineName, mode: ModeKind) -> Self {
        self.pipeline = pipeline;
        self.mode = mode;
        self
    }

    /// Configuration handed to [`Target::prepare`].
    #[must_use]
    pub fn config(mut self, config: BTreeMap<String, String>) -> Self {
        self.config = config;
        self
    }

    /// The strategy.
    #[must_use]
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// The steps this rollout runs: the strategy's plan, without analysis steps when there
    /// is no analysis.
    #[must_use]
    pub fn plan(&self) -> Vec<Step> {
        let mut plan = self.strategy.plan();
        if self.analysis.is_none() {
            plan.retain(|s| *s != Step::Analyze);
        }
        plan
    }

    /// Rolls `release`'s artifact out to `environment` on `clock`.
    pub async fn run(
        &self,
        release: &AnyRelease,
        environment: &Environment,
        clock: &dyn Clock,
    ) -> Result<RolloutReport, RolloutError> {
        let env = environment.name();
        let Some(artifact) = release.artifact() else {
            return Err(RolloutError::Invalid {
                environment: env.clone(),
                reason: format!("release `{}` has no artifact yet", release.id()),
            });
        };
        let plan = self.plan();
        if self.operator.is_none() && plan.contains(&Step::Pause(Pause::UntilGo)) {
            return Err(RolloutError::Invalid {
                environment: env.clone(),
                reason: "a pause waits for a person to say go, and the rollout has no operator"
                    .into(),
            });
        }
        let candidate = Version {
            release: release.id().clone(),
            digest: artifact.digest.clone(),
        };
        let mut run = Run {
            rollout: self,
            release,
            environment,
            clock,
            key: rollout_key(&self.pipeline, release.id(), env),
            events: Vec::new(),
            warnings: Vec::new(),
            analyzer: self
                .analysis
                .as_ref()
                .map(|(a, _)| Analyzer::new(a.clone())),
            evaluations: 0,
        };
        let resume = run.resume_point(&candidate).await?;
        let outcome = run.execute(&plan, &candidate, resume).await?;
        run.tell(RolloutEventKind::Finished {
            outcome: outcome.clone(),
        })
        .await?;
        let evaluations = run.evaluations + run.analyzer.as_ref().map_or(0, Analyzer::evaluations);
        Ok(RolloutReport {
            outcome,
            events: run.events,
            evaluations,
            warnings: run.warnings,
        })
    }
}

/// Where a journaled rollout left off.
struct ResumePoint {
    /// The first step to run.
    from: usize,
    /// Whether a forward-only step had begun.
    forward_only: Option<String>,
    /// The rollout ended frozen (after this step, for this cause) and nobody has decided.
    frozen: Option<(String, Cause)>,
}

/// One run of a rollout.
struct Run<'a> {
    rollout: &'a Rollout,
    release: &'a AnyRelease,
    environment: &'a Environment,
    clock: &'a dyn Clock,
    key: String,
    events: Vec<RolloutEvent>,
    /// Observers' panics, contained.
    warnings: Vec<crate::engine::Warning>,
    analyzer: Option<Analyzer>,
    /// Evaluations of analyzers replaced by a roll-forward.
    evaluations: u64,
}

/// Why the plan stopped.
enum Stop {
    /// A failure, to roll back or freeze on.
    Failed(Cause),
    /// A journal or setup error.
    Error(RolloutError),
}

impl From<RolloutError> for Stop {
    fn from(e: RolloutError) -> Self {
        Stop::Error(e)
    }
}

impl Run<'_> {
    fn env(&self) -> &EnvironmentName {
        self.environment.name()
    }

    fn journal_error(&self, e: &dyn fmt::Display) -> RolloutError {
        RolloutError::Journal {
            release: self.release.id().clone(),
            environment: self.env().clone(),
            message: e.to_string(),
        }
    }

    /// Tells `kind` to every observer and the journal.
    async fn tell(&mut self, kind: RolloutEventKind) -> Result<(), RolloutError> {
        let event = RolloutEvent {
            at: self.clock.now(),
            release: self.release.id().clone(),
            environment: self.env().clone(),
            kind,
        };
        for observer in &self.rollout.observers {
            super::event::tell_contained(&event, |e| observer.observe(e), &mut self.warnings);
        }
        if let Some(journal) = &self.rollout.journal {
            let payload = serde_json::to_vec(&event).map_err(|e| self.journal_error(&e))?;
            journal
                .append(vec![Entry::new(self.key.clone(), payload)])
                .await
                .map_err(|e: JournalError| self.journal_error(&e))?;
        }
        self.events.push(event);
        Ok(())
    }

    /// The step after the last one a cut-off rollout of the same candidate finished, read
    /// from the journal (chain checked); `None` for a fresh start.
    async fn resume_point(
        &mut self,
        candidate: &Version,
    ) -> Result<Option<ResumePoint>, RolloutError> {
        let Some(journal) = &self.rollout.journal else {
            return Ok(None);
        };
        let stored = crate::fact::read_keys_checked(&**journal, std::slice::from_ref(&self.key))
            .await
            .map_err(|e| self.journal_error(&e))?;
        let mut point: Option<ResumePoint> = None;
        for entry in &stored {
            let event: RolloutEvent =
                serde_json::from_slice(&entry.payload).map_err(|e| self.journal_error(&e))?;
            match event.kind {
                RolloutEventKind::Started { candidate: c, .. } => {
                    point = (c == *candidate).then_some(ResumePoint {
                        from: 0,
                        forward_only: None,
                        frozen: None,
                    });
                }
                RolloutEventKind::StepStarted {
                    step:
                        Step::Hook {
                            name,
                            forward_only: true,
                        },
                    ..
                } => {
                    if let Some(p) = &mut point {
                        p.forward_only = Some(name);
                    }
                }
                RolloutEventKind::StepFinished { index } => {
                    if let Some(p) = &mut point {
                        p.from = index + 1;
                    }
                }
                RolloutEventKind::Frozen { after, cause } => {
                    if let Some(p) = &mut point {
                        p.frozen = Some((after, cause));
                    }
                }
                RolloutEventKind::Decided {
                    choice: Choice::RollForward,
                    ..
                } => {
                    // Rolling forward skips the step that failed.
                    if let Some(p) = &mut point {
                        p.frozen = None;
                        p.from += 1;
                    }
                }
                // A frozen rollout is not over: run again, it asks a person once more.
                RolloutEventKind::Finished {
                    outcome: Outcome::Frozen { .. },
                } => {}
                RolloutEventKind::Finished { .. } => point = None,
                _ => {}
            }
        }
        Ok(point)
    }

    async fn execute(
        &mut self,
        plan: &[Step],
        candidate: &Version,
        resume: Option<ResumePoint>,
    ) -> Result<Outcome, RolloutError> {
        let target = &*self.rollout.target;
        let mut forward_only: Option<String> = None;
        let mut from = 0;
        if let Some(point) = resume {
            from = point.from;
            forward_only = point.forward_only;
            self.tell(RolloutEventKind::Resumed { from }).await?;
            if let Some((after, cause)) = point.frozen {
                // Frozen before: nothing moves until a person decides.
                match self.stop_or_resume(cause, Some(&after)).await? {
                    Some(outcome) => return Ok(outcome),
                    None => from += 1,
                }
            }
            // Put the traffic back where the last finished step left it (the target's calls
            // are idempotent), then carry on.
            if let Some(last) = plan[..from.min(plan.len())]
                .iter()
                .rev()
                .find(|s| matches!(s, Step::SetWeight(_) | Step::Replace { .. }))
            {
                if let Err(cause) = self.drive(last).await {
                    if let Some(outcome) =
                        self.stop_or_resume(cause, forward_only.as_deref()).await?
                    {
                        return Ok(outcome);
                    }
                }
            }
        } else {
            self.tell(RolloutEventKind::Started {
                strategy: self.rollout.strategy.kind().to_owned(),
                candidate: candidate.clone(),
                plan: plan.to_vec(),
            })
            .await?;
        }
        let mut index = from;
        while index < plan.len() {
            let step = &plan[index];
            self.tell(RolloutEventKind::StepStarted {
                index,
                step: step.clone(),
            })
            .await?;
            if let Step::Hook {
                name,
                forward_only: true,
            } = step
            {
                // The point of no return is the start of the step: a migration that failed
                // half-way cannot be rolled back either.
                forward_only = Some(name.clone());
            }
            let result = match step {
                Step::Prepare => target
                    .prepare(self.env(), candidate, &self.rollout.config)
                    .await
                    .map_err(|e| Stop::Failed(Cause::Target(e))),
                Step::SetWeight(_) | Step::Replace { .. } | Step::Promote | Step::Retire => {
                    self.drive(step).await.map_err(Stop::Failed)
                }
                Step::Hook { name, .. } => target
                    .run_hook(self.env(), name)
                    .await
                    .map_err(|e| Stop::Failed(Cause::Target(e))),
                Step::CheckHealth => self.check_health(index).await,
                Step::Analyze => self.analyze(index, false).await,
                Step::Pause(pause) => self.pause(index, *pause).await,
            };
            match result {
                Ok(()) => {
                    self.tell(RolloutEventKind::StepFinished { index }).await?;
                    index += 1;
                }
                Err(Stop::Error(e)) => return Err(e),
                Err(Stop::Failed(cause)) => {
                    if *step == Step::Retire {
                        // Promoted already: an old side that would not go away is the
                        // platform's to clean up, not a reason to undo the promotion.
                        return Ok(Outcome::Promoted);
                    }
                    match self.stop_or_resume(cause, forward_only.as_deref()).await? {
                        Some(outcome) => return Ok(outcome),
                        None => index += 1,
                    }
                }
            }
        }
        Ok(Outcome::Promoted)
    }

    /// A failure: rolls back at once, or past a forward-only step freezes and asks a person.
    /// `None` when the person rolls forward (the rollout carries on after the failed step).
    async fn stop_or_resume(
        &mut self,
        cause: Cause,
        forward_only: Option<&str>,
    ) -> Result<Option<Outcome>, RolloutError> {
        let Some(after) = forward_only else {
            return self.stop(cause, None).await.map(Some);
        };
        self.tell(RolloutEventKind::Frozen {
            after: after.to_owned(),
            cause: cause.clone(),
        })
        .await?;
        let decision = match &self.rollout.operator {
            Some(op) => op.decide(self.env(), self.release.id(), &cause).await,
            None => None,
        };
        match decision {
            None => Ok(Some(Outcome::Frozen {
                after: after.to_owned(),
                cause,
            })),
            Some((choice, by)) => {
                self.tell(RolloutEventKind::Decided {
                    choice,
                    by: by.clone(),
                })
                .await?;
                match choice {
                    Choice::RollBack => self.stop(Cause::Person { by }, None).await.map(Some),
                    Choice::RollForward => {
                        if let Some((analysis, _)) = &self.rollout.analysis {
                            let old = self.analyzer.replace(Analyzer::new(analysis.clone()));
                            self.evaluations += old.map_or(0, |a| a.evaluations());
                        }
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Rolls back: [`Target::abort`] now, then the outcome.
    async fn stop(
        &mut self,
        cause: Cause,
        forward_only: Option<&str>,
    ) -> Result<Outcome, RolloutError> {
        if let Some(after) = forward_only {
            return Ok(Outcome::Frozen {
                after: after.to_owned(),
                cause,
            });
        }
        if let Err(source) = self.rollout.target.abort(self.env()).await {
            return Err(RolloutError::AbortFailed {
                release: self.release.id().clone(),
                environment: self.env().clone(),
                cause,
                source,
            });
        }
        self.tell(RolloutEventKind::Aborted {
            cause: cause.clone(),
        })
        .await?;
        Ok(Outcome::RolledBack { cause })
    }

    /// The platform call of a traffic or promotion step.
    async fn drive(&self, step: &Step) -> Result<(), Cause> {
        let target = &*self.rollout.target;
        let env = self.env();
        match step {
            Step::SetWeight(w) => target.shift(env, *w).await,
            Step::Replace {
                done,
                total,
                surge,
                unavailable,
            } => {
                target
                    .replace(env, *done, *total, *surge, *unavailable)
                    .await
            }
            Step::Promote => target.promote(env).await,
            Step::Retire => target.retire(env).await,
            _ => Ok(()),
        }
        .map_err(Cause::Target)
    }

    async fn check_health(&mut self, index: usize) -> Result<(), Stop> {
        let check = self.rollout.health;
        let deadline = self.clock.now().saturating_add(check.timeout);
        loop {
            let health = self
                .rollout
                .target
                .health(self.env())
                .await
                .map_err(|e| Stop::Failed(Cause::Target(e)))?;
            self.tell(RolloutEventKind::Health {
                index,
                health: health.clone(),
            })
            .await?;
            match health {
                Health::Healthy => return Ok(()),
                Health::Unhealthy(reason) => return Err(Stop::Failed(Cause::Unhealthy { reason })),
                Health::Progressing => {}
            }
            let now = self.clock.now();
            if now >= deadline {
                return Err(Stop::Failed(Cause::HealthTimeout));
            }
            let next = now.saturating_add(check.interval.max(Duration::from_millis(1)));
            self.clock.sleep_until(next.min(deadline)).await;
        }
    }

    /// One evaluation of the analysis (nothing without one).
    async fn analyze(&mut self, index: usize, background: bool) -> Result<(), Stop> {
        let (Some(analyzer), Some((_, metrics))) = (&mut self.analyzer, &self.rollout.analysis)
        else {
            return Ok(());
        };
        let ctx = GateContext::new(
            self.release,
            Move::Deploy,
            self.environment,
            self.clock.now(),
        )
        .with_clock(self.clock);
        let evaluation = analyzer.evaluate(&**metrics, &ctx).await;
        let cause = Cause::from_evaluation(&evaluation);
        self.tell(RolloutEventKind::Analyzed {
            index,
            evaluation,
            background,
        })
        .await?;
        match cause {
            Some(cause) => Err(Stop::Failed(cause)),
            None => Ok(()),
        }
    }

    /// A pause: until its time is up or a person says go, the analysis sampled every
    /// interval meanwhile; a failed sample ends it at once.
    async fn pause(&mut self, index: usize, pause: Pause) -> Result<(), Stop> {
        let end = match pause {
            Pause::For(d) => Some(self.clock.now().saturating_add(d)),
            Pause::UntilGo => None,
        };
        let mut go: futures::future::Fuse<BoxFuture<'static, Person>> =
            match (pause, &self.rollout.operator) {
                (Pause::UntilGo, Some(op)) => {
                    let op = Arc::clone(op);
                    let env = self.env().clone();
                    let release = self.release.id().clone();
                    async move { op.go(&env, &release, index).await }
                        .boxed()
                        .fuse()
                }
                _ => futures::future::Fuse::terminated(),
            };
        let period = self.rollout.analysis.as_ref().map(|(a, _)| a.period());
        loop {
            match wait_in_pause(self.clock, end, period, &mut go).await {
                Woke::Ended => return Ok(()),
                Woke::Go(by) => {
                    self.tell(RolloutEventKind::Go { index, by }).await?;
                    return Ok(());
                }
                Woke::Sample => self.analyze(index, true).await?,
            }
        }
    }
}

/// What ended a wait in a pause.
pub(crate) enum Woke {
    /// The pause's time is up.
    Ended,
    /// A person said go.
    Go(Person),
    /// A background sample is due.
    Sample,
}

/// Waits in a pause that ends at `end` (never, for one that waits for go) until its time is
/// up, `go` resolves or, every `period` when there is analysis, a sample is due (a sample due
/// at the very end is taken before the pause ends).
pub(crate) async fn wait_in_pause(
    clock: &dyn Clock,
    end: Option<Timestamp>,
    period: Option<Duration>,
    go: &mut futures::future::Fuse<BoxFuture<'static, Person>>,
) -> Woke {
    let now = clock.now();
    if end.is_some_and(|end| now >= end) {
        return Woke::Ended;
    }
    let sample_at = period.map(|p| now.saturating_add(p));
    let wake: Option<Timestamp> = match (sample_at, end) {
        (Some(s), Some(e)) => Some(s.min(e)),
        (s, e) => s.or(e),
    };
    match wake {
        Some(at) => match futures::future::select(clock.sleep_until(at), go).await {
            Either::Right((by, _)) => return Woke::Go(by),
            Either::Left(((), _)) => {}
        },
        None => return Woke::Go(go.await),
    }
    if sample_at.is_some_and(|s| clock.now() >= s) {
        Woke::Sample
    } else {
        Woke::Ended
    }
}

/// The view of the release a deploy stage's rollout analyses.
fn release_view(
    rollout: &Rollout,
    ctx: &StageContext<'_>,
    environment: &Environment,
) -> Result<AnyRelease, ExecutorError> {
    let revision = Revision::new(ctx.revision(), "unknown")?;
    let now = ctx.clock().now();
    let mut view = AnyRelease::new(
        ctx.release().clone(),
        rollout.pipeline.clone(),
        rollout.mode,
        revision,
        now,
        environment.clone(),
        environment.clone(),
    );
    if let Some(artifact) = ctx.artifact() {
        view.set_artifact(artifact.clone());
    }
    view.set_state(StateName::Approved, now);
    Ok(view)
}

#[async_trait]
impl Executor for Rollout {
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        let Some(environment) = ctx.environment() else {
            return Ok(StageOutcome::failure(format!(
                "stage `{}` runs a rollout but deploys to no environment",
                ctx.stage()
            )));
        };
        let view = release_view(self, &ctx, environment)?;
        let report = Rollout::run(self, &view, environment, ctx.clock()).await?;
        let release = ctx.release().clone();
        let env = environment.name().clone();
        match report.outcome {
            Outcome::Promoted => {
                let mut outcome = StageOutcome::success().output("rollout", "promoted");
                for event in &report.events {
                    outcome = outcome.log(format!("{} {}", event.at, event.kind));
                }
                for warning in &report.warnings {
                    outcome = outcome.log(format!("warning: {warning}"));
                }
                Ok(outcome)
            }
            Outcome::RolledBack { cause } => Err(Box::new(RolloutError::RolledBack {
                release,
                environment: env,
                cause,
            })),
            Outcome::Frozen { after, cause } => Err(Box::new(RolloutError::Frozen {
                release,
                environment: env,
                after,
                cause,
            })),
        }
    }
}
