//! When a stage runs: its [`Condition`] over how its dependencies ended ([`Settled`]), and
//! the [`SkipReason`] reported for a stage whose condition said no.
//!
//! The decision is one pure function, [`Condition::decide`], which the engine calls once
//! every dependency of a stage has settled, and which a restore calls again on a stored
//! report to re-derive why a stage was skipped.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::StageId;

/// When a stage runs, decided once every dependency (in its step) has settled: GitHub
/// Actions' `if: success()` / `failure()` / `always()`, and Tekton's `when` on one task's
/// status.
///
/// Its serde form is `"on_success"`, `"on_failure"`, `"always"` or
/// `{"dependency_failed": "<stage>"}`.
///
/// ```
/// use tollgate::graph::{Condition, Settled, SkipReason, StageId};
///
/// let unit = StageId::new("unit")?;
/// let failed = [(&unit, Settled::Failed { allowed: false })];
/// assert_eq!(Condition::OnSuccess.decide(failed), Err(SkipReason::DependencyFailed { dependency: unit.clone() }));
/// assert_eq!(Condition::OnFailure.decide(failed), Ok(()));
/// assert_eq!(Condition::Always.decide(failed), Ok(()));
/// assert_eq!(Condition::DependencyFailed(unit.clone()).decide(failed), Ok(()));
/// # Ok::<(), tollgate::id::IdError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Runs when every dependency succeeded (a failure allowed by
    /// [`continue_on_error`](super::StageSpec::continue_on_error) counts as a success). The
    /// default.
    #[default]
    OnSuccess,
    /// Runs when some dependency failed, or was skipped because of a failure before it
    /// (GitHub's `failure()`); a failure allowed by `continue_on_error` does not count.
    OnFailure,
    /// Runs once every dependency has settled, whatever happened to it (GitHub's
    /// `always()`). A stopped step (cancelled, timed out, fail-fast) still starts nothing
    /// new: use a finally stage for what must run then.
    Always,
    /// Runs when this direct dependency failed (timed out and cancelled count), even when its
    /// failure was allowed by `continue_on_error` (Tekton's `when` on
    /// `$(tasks.<name>.status)`).
    DependencyFailed(StageId),
}

/// How a dependency ended, as a [`Condition`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settled {
    /// It succeeded.
    Succeeded,
    /// It failed, timed out or was cancelled.
    Failed {
        /// Whether its stage is allowed to fail (`continue_on_error`).
        allowed: bool,
    },
    /// It did not run.
    Skipped {
        /// Whether it was skipped because of a failure before it (see
        /// [`SkipReason::after_failure`]).
        after_failure: bool,
    },
}

impl Settled {
    /// Whether this is a failure that fails the step, or a skip caused by one.
    fn is_failure(self) -> bool {
        matches!(
            self,
            Settled::Failed { allowed: false }
                | Settled::Skipped {
                    after_failure: true
                }
        )
    }
}

/// Why a stage did not run; kept in its report
/// ([`StageReport::skipped`](crate::engine::StageReport::skipped)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "because", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SkipReason {
    /// A dependency failed, or was itself skipped because of a failure.
    DependencyFailed {
        /// The first such dependency.
        dependency: StageId,
    },
    /// A dependency was skipped by its own condition (no failure involved).
    DependencySkipped {
        /// The first such dependency.
        dependency: StageId,
    },
    /// The stage runs on failure, and no dependency failed.
    NoFailure,
    /// The stage runs when `dependency` failed, and it did not.
    DependencyDidNotFail {
        /// The dependency the condition names.
        dependency: StageId,
    },
    /// The step stopped (a cancel, its timeout, a failure under fail-fast) before the stage
    /// could start.
    StepStopped,
}

impl SkipReason {
    /// Whether the stage was skipped because something failed (or the step stopped), as
    /// opposed to a condition that was simply not met.
    #[must_use]
    pub fn after_failure(&self) -> bool {
        matches!(
            self,
            SkipReason::DependencyFailed { .. } | SkipReason::StepStopped
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::DependencyFailed { dependency } => {
                write!(f, "dependency `{dependency}` did not succeed")
            }
            SkipReason::DependencySkipped { dependency } => {
                write!(f, "dependency `{dependency}` was skipped")
            }
            SkipReason::NoFailure => f.write_str("it runs on failure, and nothing failed"),
            SkipReason::DependencyDidNotFail { dependency } => {
                write!(f, "it runs when `{dependency}` fails, and it did not")
            }
            SkipReason::StepStopped => f.write_str("the step stopped before it could start"),
        }
    }
}

impl Condition {
    /// Whether a stage with this condition runs, given how each of its dependencies in its
    /// step settled (dependencies in earlier steps succeeded with their step and need not be
    /// listed): `Ok(())` to run, or why it is skipped.
    ///
    /// Under `OnSuccess` the first dependency that failed (or was skipped after a failure)
    /// is named; failing that, the first one skipped by its condition.
    pub fn decide<'a>(
        &self,
        dependencies: impl IntoIterator<Item = (&'a StageId, Settled)>,
    ) -> Result<(), SkipReason> {
        let mut dependencies = dependencies.into_iter();
        match self {
            Condition::Always => Ok(()),
            Condition::OnFailure => {
                if dependencies.any(|(_, settled)| settled.is_failure()) {
                    Ok(())
                } else {
                    Err(SkipReason::NoFailure)
                }
            }
            Condition::DependencyFailed(wanted) => {
                if dependencies
                    .any(|(id, settled)| id == wanted && matches!(settled, Settled::Failed { .. }))
                {
                    Ok(())
                } else {
                    Err(SkipReason::DependencyDidNotFail {
                        dependency: wanted.clone(),
                    })
                }
            }
            Condition::OnSuccess => {
                let mut skipped = None;
                for (id, settled) in dependencies {
                    match settled {
                        Settled::Succeeded | Settled::Failed { allowed: true } => {}
                        Settled::Skipped {
                            after_failure: false,
                        } => {
                            skipped.get_or_insert(id);
                        }
                        Settled::Failed { allowed: false }
                        | Settled::Skipped {
                            after_failure: true,
                        } => {
                            return Err(SkipReason::DependencyFailed {
                                dependency: id.clone(),
                            });
                        }
                    }
                }
                match skipped {
                    Some(id) => Err(SkipReason::DependencySkipped {
                        dependency: id.clone(),
                    }),
                    None => Ok(()),
                }
            }
        }
    }

    /// Whether this is the default, [`Condition::OnSuccess`].
    #[must_use]
    pub fn is_on_success(&self) -> bool {
        matches!(self, Condition::OnSuccess)
    }
}
