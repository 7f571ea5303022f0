//! Feature flags: deploying is not releasing. A flag ships dark with a deployment
//! ([`FlagRelease::ship_dark`]) and is turned on progressively later ([`FlagRelease::run`]:
//! percentages, cohorts, everyone) with the same analysis and abort as a canary: analysis
//! after every step and in the background of pauses, and a failed evaluation turns the flag
//! off at once. Turning it on and off are events of the release ([`FlagEvent`], journal facts
//! under [`flag_key`]), so the history shows when users actually got the feature.
//!
//! The host keeps the flags: [`FlagStore`] (an OpenFeature provider's backend, a
//! configuration service); [`MemoryFlags`] keeps them in memory for tests and examples.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::flag::{FlagPlan, FlagRollout};
//! use tollgate::rollout::{Pause, Weight};
//!
//! let plan = FlagPlan::new()
//!     .set(FlagRollout::Cohorts(vec!["staff".into()]))
//!     .pause(Pause::For(Duration::from_secs(3600)))
//!     .set(FlagRollout::Percentage(Weight::percent(10).unwrap()))
//!     .pause(Pause::UntilGo)
//!     .set(FlagRollout::On);
//! let json = serde_json::to_string(&plan).unwrap();
//! assert_eq!(serde_json::from_str::<FlagPlan>(&json).unwrap(), plan);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::environment::{Environment, EnvironmentName};
use crate::forward::forward_impls;
use crate::gate::{GateContext, MetricSource, Move};
use crate::id::{Person, PipelineName, ReleaseId};
use crate::journal::{Entry, Journal};
use crate::record::AnyRelease;
use crate::rollout::{
    Analysis, Analyzer, Cause, Evaluation, Operator, Pause, Weight, Woke, wait_in_pause,
};
use crate::time::{Clock, Timestamp};

/// Who gets a flag's feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagRollout {
    /// Nobody (shipped dark, or turned off).
    Off,
    /// This share of users.
    Percentage(Weight),
    /// The users in these cohorts (staff, beta testers, a region).
    Cohorts(Vec<String>),
    /// Everybody.
    On,
}

impl FlagRollout {
    /// Whether some users get the feature.
    #[must_use]
    pub fn is_on_for_anyone(&self) -> bool {
        match self {
            FlagRollout::Off => false,
            FlagRollout::Percentage(w) => w.get() > 0,
            FlagRollout::Cohorts(c) => !c.is_empty(),
            FlagRollout::On => true,
        }
    }
}

impl fmt::Display for FlagRollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagRollout::Off => f.write_str("off"),
            FlagRollout::Percentage(w) => write!(f, "{w} of users"),
            FlagRollout::Cohorts(c) => write!(f, "cohorts {}", c.join(", ")),
            FlagRollout::On => f.write_str("on for everyone"),
        }
    }
}

/// A flag store call that failed, or a flag release that could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FlagError {
    /// The store refused or failed.
    #[error("the flag store failed to set `{flag}`: {message}")]
    Store {
        /// The flag.
        flag: String,
        /// The store's message.
        message: String,
    },
    /// The flag release is set up wrong.
    #[error("flag `{flag}` cannot be released: {reason}")]
    Invalid {
        /// The flag.
        flag: String,
        /// What is wrong.
        reason: String,
    },
    /// Turning the flag off after a failure failed: who gets the feature is unknown.
    #[error("flag `{flag}` could not be turned off ({cause}): {message}")]
    TurnOffFailed {
        /// The flag.
        flag: String,
        /// Why it was being turned off.
        cause: String,
        /// The store's message.
        message: String,
    },
    /// Writing the flag's journal facts failed.
    #[error("flag `{flag}`: journal: {message}")]
    Journal {
        /// The flag.
        flag: String,
        /// The journal's error.
        message: String,
    },
}

/// Where the host keeps its flags.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate flag store",
    label = "this type does not implement `tollgate::flag::FlagStore`",
    note = "implement `async fn set(&self, environment: &EnvironmentName, flag: &str, rollout: &FlagRollout) -> Result<(), FlagError>` with `#[async_trait]`"
)]
#[async_trait]
pub trait FlagStore: Send + Sync {
    /// Sets who gets `flag` in `environment`.
    async fn set(
        &self,
        environment: &EnvironmentName,
        flag: &str,
        rollout: &FlagRollout,
    ) -> Result<(), FlagError>;
}

forward_impls! {
    #[async_trait]
    impl FlagStore {
        async fn set(&self, environment: &EnvironmentName, flag: &str, rollout: &FlagRollout) -> Result<(), FlagError>;
    }
}

/// Flags in memory, with every change kept (tests, examples, simulations).
#[derive(Debug, Clone, Default)]
pub struct MemoryFlags {
    inner: Arc<Mutex<MemoryFlagsInner>>,
}

#[derive(Debug, Default)]
struct MemoryFlagsInner {
    flags: BTreeMap<(EnvironmentName, String), FlagRollout>,
    changes: Vec<(EnvironmentName, String, FlagRollout)>,
}

impl MemoryFlags {
    /// No flags.
    #[must_use]
    pub fn new() -> Self {
        MemoryFlags::default()
    }

    /// Who gets `flag` in `environment` (`Off` for a flag never set).
    #[must_use]
    pub fn get(&self, environment: &EnvironmentName, flag: &str) -> FlagRollout {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flags
            .get(&(environment.clone(), flag.to_owned()))
            .cloned()
            .unwrap_or(FlagRollout::Off)
    }

    /// Every change so far, in order.
    #[must_use]
    pub fn changes(&self) -> Vec<(EnvironmentName, String, FlagRollout)> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .changes
            .clone()
    }
}

#[async_trait]
impl FlagStore for MemoryFlags {
    async fn set(
        &self,
        environment: &EnvironmentName,
        flag: &str,
        rollout: &FlagRollout,
    ) -> Result<(), FlagError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .flags
            .insert((environment.clone(), flag.to_owned()), rollout.clone());
        inner
            .changes
            .push((environment.clone(), flag.to_owned(), rollout.clone()));
        Ok(())
    }
}

/// One step of a flag's release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagStep {
    /// Give the feature to these users (analysis is evaluated right after).
    Set(FlagRollout),
    /// Wait, with analysis in the background.
    Pause(Pause),
}

/// How a flag is turned on: its steps in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagPlan {
    /// The steps.
    pub steps: Vec<FlagStep>,
}

impl FlagPlan {
    /// No steps yet.
    #[must_use]
    pub fn new() -> Self {
        FlagPlan::default()
    }

    /// Adds a step giving the feature to `rollout`.
    #[must_use]
    pub fn set(mut self, rollout: FlagRollout) -> Self {
        self.steps.push(FlagStep::Set(rollout));
        self
    }

    /// Adds a pause.
    #[must_use]
    pub fn pause(mut self, pause: Pause) -> Self {
        self.steps.push(FlagStep::Pause(pause));
        self
    }
}

/// How a flag's release ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FlagOutcome {
    /// Every step ran: the flag is at its plan's last setting.
    Released {
        /// That setting.
        rollout: FlagRollout,
    },
    /// Analysis failed and the flag was turned off.
    TurnedOff {
        /// Why.
        cause: Cause,
    },
}

/// One thing that happened to a flag of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagEvent {
    /// When.
    pub at: Timestamp,
    /// The release whose feature it is.
    pub release: ReleaseId,
    /// Where.
    pub environment: EnvironmentName,
    /// The flag.
    pub flag: String,
    /// What happened.
    pub kind: FlagEventKind,
}

/// What happened in a [`FlagEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum FlagEventKind {
    /// Users got (or lost) the feature: the flag was set to this.
    Set {
        /// Who gets it now.
        rollout: FlagRollout,
    },
    /// One evaluation of the analysis.
    Analyzed {
        /// What it found.
        evaluation: Evaluation,
        /// Whether in the background of a pause.
        background: bool,
    },
    /// A person said go at a pause.
    Go {
        /// Who.
        by: Person,
    },
    /// Analysis failed: the flag was turned off at once.
    TurnedOff {
        /// Why.
        cause: Cause,
    },
    /// The release of the flag ended.
    Finished {
        /// How.
        outcome: FlagOutcome,
    },
}

impl fmt::Display for FlagEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagEventKind::Set { rollout } => write!(f, "set to {rollout}"),
            FlagEventKind::Analyzed {
                evaluation: Evaluation::Passed,
                ..
            } => f.write_str("analysis passed"),
            FlagEventKind::Analyzed {
                evaluation: Evaluation::Failed { reason, .. },
                ..
            } => write!(f, "analysis FAILED: {reason}"),
            FlagEventKind::Go { by } => write!(f, "{by} said go"),
            FlagEventKind::TurnedOff { cause } => write!(f, "turned off: {cause}"),
            FlagEventKind::Finished { outcome } => write!(f, "finished: {outcome:?}"),
        }
    }
}

/// The journal key of `flag` of `release` in `environment`, in `pipeline`.
#[must_use]
pub fn flag_key(
    pipeline: &PipelineName,
    release: &ReleaseId,
    environment: &EnvironmentName,
    flag: &str,
) -> String {
    format!("{pipeline}\u{1f}flag\u{1f}{release}\u{1f}{environment}\u{1f}{flag}")
}

/// How a flag's release ended, and its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagReport {
    /// How it ended.
    pub outcome: FlagOutcome,
    /// Its events, in order.
    pub events: Vec<FlagEvent>,
    /// Observers that panicked
    /// ([`Warning::ObserverPanicked`](crate::engine::Warning::ObserverPanicked), once per
    /// kind of event and panic text): the release carried on, and the journal has every
    /// event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::engine::Warning>,
}

/// An observer of a flag's events.
type FlagObserver = dyn Fn(&FlagEvent) + Send + Sync;

/// The release of one flag of one release: its plan, the store, and the same analysis,
/// operator and journal a canary has.
pub struct FlagRelease {
    flag: String,
    plan: FlagPlan,
    store: Arc<dyn FlagStore>,
    analysis: Option<(Analysis, Arc<dyn MetricSource>)>,
    operator: Option<Arc<dyn Operator>>,
    observers: Vec<Arc<FlagObserver>>,
    journal: Option<(Arc<dyn Journal>, PipelineName)>,
}

impl fmt::Debug for FlagRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagRelease")
            .field("flag", &self.flag)
            .field("plan", &self.plan)
            .field("analysis", &self.analysis.as_ref().map(|(a, _)| a))
            .finish_non_exhaustive()
    }
}

impl FlagRelease {
    /// The release of `flag` by `plan` in `store`.
    pub fn new(flag: impl Into<String>, plan: FlagPlan, store: impl FlagStore + 'static) -> Self {
        FlagRelease {
            flag: flag.into(),
            plan,
            store: Arc::new(store),
            analysis: None,
            operator: None,
            observers: Vec::new(),
            journal: None,
        }
    }

    /// Analysis sampled from `metrics`.
    #[must_use]
    pub fn analysis(mut self, analysis: Analysis, metrics: impl MetricSource + 'static) -> Self {
        self.analysis = Some((analysis, Arc::new(metrics)));
        self
    }

    /// Who says go at manual pauses.
    #[must_use]
    pub fn operator(mut self, operator: impl Operator + 'static) -> Self {
        self.operator = Some(Arc::new(operator));
        self
    }

    /// Adds an observer of the events.
    #[must_use]
    pub fn observer(mut self, observer: impl Fn(&FlagEvent) + Send + Sync + 'static) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Keeps every event in `journal` under [`flag_key`] of `pipeline`.
    #[must_use]
    pub fn journal(mut self, journal: impl Journal + 'static, pipeline: PipelineName) -> Self {
        self.journal = Some((Arc::new(journal), pipeline));
        self
    }

    /// Ships the flag dark with a deployment of `release`: set off, and recorded.
    pub async fn ship_dark(
        &self,
        release: &AnyRelease,
        environment: &Environment,
        clock: &dyn Clock,
    ) -> Result<FlagEvent, FlagError> {
        let mut run = self.start(release, environment, clock);
        run.set(FlagRollout::Off).await?;
        Ok(run.events.remove(0))
    }

    /// Turns the flag on step by step; a failed evaluation turns it off at once.
    pub async fn run(
        &self,
        release: &AnyRelease,
        environment: &Environment,
        clock: &dyn Clock,
    ) -> Result<FlagReport, FlagError> {
        if self.operator.is_none() && self.plan.steps.contains(&FlagStep::Pause(Pause::UntilGo)) {
            return Err(FlagError::Invalid {
                flag: self.flag.clone(),
                reason: "a pause waits for a person to say go, and there is no operator".into(),
            });
        }
        let mut run = self.start(release, environment, clock);
        let mut last = FlagRollout::Off;
        for step in &self.plan.steps {
            let result = match step {
                FlagStep::Set(rollout) => {
                    run.set(rollout.clone()).await?;
                    last = rollout.clone();
                    run.analyze(false).await?
                }
                FlagStep::Pause(pause) => run.pause(*pause).await?,
            };
            if let Some(cause) = result {
                if let Err(e) = self
                    .store
                    .set(environment.name(), &self.flag, &FlagRollout::Off)
                    .await
                {
                    return Err(FlagError::TurnOffFailed {
                        flag: self.flag.clone(),
                        cause: cause.to_string(),
                        message: e.to_string(),
                    });
                }
                run.tell(FlagEventKind::TurnedOff {
                    cause: cause.clone(),
                })
                .await?;
                let outcome = FlagOutcome::TurnedOff { cause };
                return run.finish(outcome).await;
            }
        }
        run.finish(FlagOutcome::Released { rollout: last }).await
    }

    fn start<'a>(
        &'a self,
        release: &'a AnyRelease,
        environment: &'a Environment,
        clock: &'a dyn Clock,
    ) -> FlagRun<'a> {
        FlagRun {
            flag: self,
            release,
            environment,
            clock,
            analyzer: self
                .analysis
                .as_ref()
                .map(|(a, _)| Analyzer::new(a.clone())),
            events: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// One run of a flag's release.
struct FlagRun<'a> {
    flag: &'a FlagRelease,
    release: &'a AnyRelease,
    environment: &'a Environment,
    clock: &'a dyn Clock,
    analyzer: Option<Analyzer>,
    events: Vec<FlagEvent>,
    warnings: Vec<crate::engine::Warning>,
}

impl FlagRun<'_> {
    async fn tell(&mut self, kind: FlagEventKind) -> Result<(), FlagError> {
        let event = FlagEvent {
            at: self.clock.now(),
            release: self.release.id().clone(),
            environment: self.environment.name().clone(),
            flag: self.flag.flag.clone(),
            kind,
        };
        for observer in &self.flag.observers {
            crate::rollout::tell_contained(&event, |e| observer(e), &mut self.warnings);
        }
        if let Some((journal, pipeline)) = &self.flag.journal {
            let journal_error = |message: String| FlagError::Journal {
                flag: self.flag.flag.clone(),
                message,
            };
            let payload = serde_json::to_vec(&event).map_err(|e| journal_error(e.to_string()))?;
            let key = flag_key(
                pipeline,
                self.release.id(),
                self.environment.name(),
                &self.flag.flag,
            );
            journal
                .append(vec![Entry::new(key, payload)])
                .await
                .map_err(|e| journal_error(e.to_string()))?;
        }
        self.events.push(event);
        Ok(())
    }

    async fn set(&mut self, rollout: FlagRollout) -> Result<(), FlagError> {
        self.flag
            .store
            .set(self.environment.name(), &self.flag.flag, &rollout)
            .await?;
        self.tell(FlagEventKind::Set { rollout }).await
    }

    /// One evaluation; `Some(cause)` when it failed.
    async fn analyze(&mut self, background: bool) -> Result<Option<Cause>, FlagError> {
        let (Some(analyzer), Some((_, metrics))) = (&mut self.analyzer, &self.flag.analysis) else {
            return Ok(None);
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
        self.tell(FlagEventKind::Analyzed {
            evaluation,
            background,
        })
        .await?;
        Ok(cause)
    }

    async fn pause(&mut self, pause: Pause) -> Result<Option<Cause>, FlagError> {
        let end = match pause {
            Pause::For(d) => Some(self.clock.now().saturating_add(d)),
            Pause::UntilGo => None,
        };
        let mut go: futures::future::Fuse<BoxFuture<'static, Person>> =
            match (pause, &self.flag.operator) {
                (Pause::UntilGo, Some(op)) => {
                    let op = Arc::clone(op);
                    let env = self.environment.name().clone();
                    let release = self.release.id().clone();
                    async move { op.go(&env, &release, 0).await }.boxed().fuse()
                }
                _ => futures::future::Fuse::terminated(),
            };
        let period = self.flag.analysis.as_ref().map(|(a, _)| a.period());
        loop {
            match wait_in_pause(self.clock, end, period, &mut go).await {
                Woke::Ended => return Ok(None),
                Woke::Go(by) => {
                    self.tell(FlagEventKind::Go { by }).await?;
                    return Ok(None);
                }
                Woke::Sample => {
                    if let Some(cause) = self.analyze(true).await? {
                        return Ok(Some(cause));
                    }
                }
            }
        }
    }

    async fn finish(mut self, outcome: FlagOutcome) -> Result<FlagReport, FlagError> {
        self.tell(FlagEventKind::Finished {
            outcome: outcome.clone(),
        })
        .await?;
        Ok(FlagReport {
            outcome,
            events: self.events,
            warnings: self.warnings,
        })
    }
}
