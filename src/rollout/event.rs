//! What a rollout tells: every step as a [`RolloutEvent`] (serde, the same form the journal
//! keeps under [`rollout_key`]), the [`RolloutObserver`] a host watches them with, and the
//! [`Outcome`] a rollout ends with and its [`Cause`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::analysis::Evaluation;
use super::strategy::Step;
use super::target::{Health, TargetError, Version};
use crate::environment::EnvironmentName;
use crate::forward::forward_impls;
use crate::id::{Person, PipelineName, ReleaseId};
use crate::time::Timestamp;

/// Why a rollout stopped short of promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum Cause {
    /// The analysis failed.
    Analysis {
        /// The check that failed.
        check: String,
        /// Its last sample, if it had one.
        value: Option<f64>,
        /// Why, in words.
        reason: String,
    },
    /// The candidate's instances reported unhealthy.
    Unhealthy {
        /// The platform's reason.
        reason: String,
    },
    /// The candidate was still not healthy when the health check's time ran out.
    HealthTimeout,
    /// A platform call failed.
    Target(TargetError),
    /// A person rolled a frozen rollout back.
    Person {
        /// Who.
        by: Person,
    },
}

impl Cause {
    pub(crate) fn from_evaluation(evaluation: &Evaluation) -> Option<Cause> {
        match evaluation {
            Evaluation::Passed => None,
            Evaluation::Failed {
                check,
                value,
                reason,
            } => Some(Cause::Analysis {
                check: check.clone(),
                value: *value,
                reason: reason.clone(),
            }),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Analysis { check, reason, .. } => {
                write!(f, "analysis `{check}` failed: {reason}")
            }
            Cause::Unhealthy { reason } => write!(f, "the candidate is unhealthy: {reason}"),
            Cause::HealthTimeout => f.write_str("the candidate did not become healthy in time"),
            Cause::Target(e) => write!(f, "{e}"),
            Cause::Person { by } => write!(f, "{by} rolled it back"),
        }
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The candidate is the stable version.
    Promoted,
    /// Traffic is back on the stable version and the candidate is gone.
    RolledBack {
        /// Why.
        cause: Cause,
    },
    /// Past a forward-only step something failed: nothing was rolled back, and a person must
    /// decide (roll forward or roll back).
    Frozen {
        /// The forward-only step the rollout could not go back over.
        after: String,
        /// What failed.
        cause: Cause,
    },
}

impl Outcome {
    /// `promoted`, `rolled_back` or `frozen`: the stage output a deploy stage reports.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::Frozen { .. } => "frozen",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Promoted => f.write_str("promoted"),
            Outcome::RolledBack { cause } => write!(f, "rolled back: {cause}"),
            Outcome::Frozen { after, cause } => {
                write!(f, "frozen after `{after}` (not rolled back): {cause}")
            }
        }
    }
}

/// What a person decided about a frozen rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Carry on with the remaining steps, the analysis counted afresh.
    RollForward,
    /// Roll back anyway ([`Target::abort`](super::Target::abort)), knowing the forward-only
    /// step stays.
    RollBack,
}

/// One step of one rollout, as the host observes it and the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutEvent {
    /// When (the pipeline clock's time).
    pub at: Timestamp,
    /// The release rolled out.
    pub release: ReleaseId,
    /// Where.
    pub environment: EnvironmentName,
    /// What happened.
    pub kind: RolloutEventKind,
}

/// What happened in a [`RolloutEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum RolloutEventKind {
    /// The rollout began.
    Started {
        /// The strategy's name.
        strategy: String,
        /// The version rolled out.
        candidate: Version,
        /// The plan's steps.
        plan: Vec<Step>,
    },
    /// A rollout cut off (a crash) carries on after its last finished step.
    Resumed {
        /// The first step it runs again.
        from: usize,
    },
    /// A step began.
    StepStarted {
        /// Its place in the plan.
        index: usize,
        /// The step.
        step: Step,
    },
    /// A step ended well.
    StepFinished {
        /// Its place in the plan.
        index: usize,
    },
    /// One evaluation of the analysis, between steps or in the background of a pause.
    Analyzed {
        /// The step it belongs to.
        index: usize,
        /// What it found.
        evaluation: Evaluation,
        /// Whether it was sampled in the background of a pause.
        background: bool,
    },
    /// The candidate's health, as the target reported it.
    Health {
        /// The step it belongs to.
        index: usize,
        /// The report.
        health: Health,
    },
    /// A person said go at a pause.
    Go {
        /// The pause.
        index: usize,
        /// Who.
        by: Person,
    },
    /// The rollout stopped and traffic went back to the stable version.
    Aborted {
        /// Why.
        cause: Cause,
    },
    /// The rollout stopped past a forward-only step and waits for a person.
    Frozen {
        /// The forward-only step.
        after: String,
        /// What failed.
        cause: Cause,
    },
    /// A person decided about a frozen rollout.
    Decided {
        /// What.
        choice: Choice,
        /// Who.
        by: Person,
    },
    /// The rollout ended.
    Finished {
        /// How.
        outcome: Outcome,
    },
}

impl fmt::Display for RolloutEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutEventKind::Started {
                strategy,
                candidate,
                ..
            } => write!(f, "{strategy} rollout of {candidate} started"),
            RolloutEventKind::Resumed { from } => write!(f, "resumed at step {from}"),
            RolloutEventKind::StepStarted { index, step } => write!(f, "step {index}: {step}"),
            RolloutEventKind::StepFinished { index } => write!(f, "step {index} done"),
            RolloutEventKind::Analyzed {
                evaluation,
                background,
                ..
            } => {
                let when = if *background { " (background)" } else { "" };
                match evaluation {
                    Evaluation::Passed => write!(f, "analysis passed{when}"),
                    Evaluation::Failed { reason, .. } => {
                        write!(f, "analysis FAILED{when}: {reason}")
                    }
                }
            }
            RolloutEventKind::Health { health, .. } => write!(f, "health: {health:?}"),
            RolloutEventKind::Go { by, .. } => write!(f, "{by} said go"),
            RolloutEventKind::Aborted { cause } => {
                write!(f, "aborted, traffic back on stable: {cause}")
            }
            RolloutEventKind::Frozen { after, cause } => {
                write!(f, "FROZEN after `{after}`, asking a person: {cause}")
            }
            RolloutEventKind::Decided { choice, by } => write!(f, "{by} decided: {choice:?}"),
            RolloutEventKind::Finished { outcome } => write!(f, "finished: {outcome}"),
        }
    }
}

/// The journal key of the rollouts of `release` in `environment`, in `pipeline`: every
/// [`RolloutEvent`] is appended there as JSON.
#[must_use]
pub fn rollout_key(
    pipeline: &PipelineName,
    release: &ReleaseId,
    environment: &EnvironmentName,
) -> String {
    format!("{pipeline}\u{1f}rollout\u{1f}{release}\u{1f}{environment}")
}

/// Watches a rollout's events as they happen (a dashboard, a chat bot, a log).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate rollout observer",
    label = "this type does not implement `tollgate::rollout::RolloutObserver`",
    note = "wrap a closure with `tollgate::rollout::observer_fn(|event| ...)`, or implement `fn observe(&self, event: &RolloutEvent)`"
)]
pub trait RolloutObserver: Send + Sync {
    /// Called once per event, in order.
    fn observe(&self, event: &RolloutEvent);
}

forward_impls! {
    impl RolloutObserver {
        fn observe(&self, event: &RolloutEvent);
    }
}

/// Wraps a closure as a [`RolloutObserver`].
pub fn observer_fn<F>(f: F) -> FnRolloutObserver<F>
where
    F: Fn(&RolloutEvent) + Send + Sync,
{
    FnRolloutObserver(f)
}

/// The observer made by [`observer_fn`].
#[derive(Clone, Copy)]
pub struct FnRolloutObserver<F>(F);

impl<F> fmt::Debug for FnRolloutObserver<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnRolloutObserver")
    }
}

impl<F: Fn(&RolloutEvent) + Send + Sync> RolloutObserver for FnRolloutObserver<F> {
    fn observe(&self, event: &RolloutEvent) {
        (self.0)(event);
    }
}

/// Tells `observe` an event, containing a panic: the panic becomes a
/// [`Warning::ObserverPanicked`](crate::engine::Warning::ObserverPanicked) in `warnings`
/// (one per kind of event and panic text, with how many times), and the caller goes on, as
/// the engine does with its observers. `kind` is the event's serde form, read for its
/// `event` tag only when the observer panicked.
pub(crate) fn tell_contained<E: Serialize>(
    event: &E,
    observe: impl FnOnce(&E),
    warnings: &mut Vec<crate::engine::Warning>,
) {
    use crate::engine::Warning;
    let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe(event)))
    else {
        return;
    };
    let message = crate::engine::panic_message(payload.as_ref()).to_owned();
    let kind = serde_json::to_value(event)
        .ok()
        .and_then(|v| {
            let kind = v.get("kind").unwrap_or(&v);
            kind.get("event")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "event".to_owned());
    for warning in warnings.iter_mut() {
        if let Warning::ObserverPanicked {
            event,
            message: seen,
            times,
        } = warning
        {
            if *event == kind && *seen == message {
                *times += 1;
                return;
            }
        }
    }
    warnings.push(Warning::ObserverPanicked {
        event: kind,
        message,
        times: 1,
    });
}
