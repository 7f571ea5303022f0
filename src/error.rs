//! The umbrella [`Error`] that pipelines and moves return, and the [`ErrorKind`] callers branch
//! on.
//!
//! Each concern has its own error, in its own module, naming only what that module knows:
//! [`IdError`], [`ArtifactError`], [`GraphError`], [`EngineError`], [`RecordError`],
//! [`GateError`], [`ApprovalError`]. `Error` wraps each of them (`#[from]`, so `?` converts)
//! and adds what only a pipeline or a move can go wrong with. It sits above every module it
//! names and below the two that return it, `pipeline` and `release`.

use crate::approval::ApprovalError;
use crate::artifact::ArtifactError;
use crate::engine::EngineError;
use crate::executor::SharedError;
use crate::fact::FactError;
use crate::gate::GateError;
use crate::graph::GraphError;
use crate::id::{IdError, PipelineName, ReleaseId, StageId};
use crate::journal::JournalError;
use crate::lifecycle::{Move, Step};
use crate::record::RecordError;
use crate::spec::SpecError;

/// Everything that can go wrong in tollgate.
///
/// Messages are lower-case, carry no trailing period, and name the thing that is wrong (the
/// stage, the cycle, the digests expected and found). Branch on [`Error::kind`] rather than on
/// the variants when you only need the category: new variants may be added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name is malformed.
    #[error(transparent)]
    Id(#[from] IdError),
    /// An artifact is malformed, unreadable, or not the one the release carries.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The stage graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// An engine setting is unusable.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stored release does not fit what it was loaded as.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A gate is built wrong, or closed or pending on a move.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// A vote, ballot, approval or policy was refused.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The journal failed, or someone else moved the release first.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal's facts about a release do not add up to one this pipeline could have
    /// written.
    #[error(transparent)]
    Fact(#[from] FactError),
    /// A pipeline spec is malformed, or names what the host did not provide.
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// A pipeline stage has no executor and the pipeline has no default executor.
    #[error("stage `{stage}` has no executor and the pipeline has no default executor")]
    MissingExecutor {
        /// The stage without an executor.
        stage: StageId,
    },
    /// A stage failed (after all its attempts), so the move did not happen.
    #[error("stage `{stage}` failed in the {step} step: {reason}")]
    StageFailed {
        /// The step being run.
        step: Step,
        /// The first stage that failed.
        stage: StageId,
        /// Why it failed, as the executor reported it.
        reason: String,
        /// The executor's own error, when it returned one ([`StageReport::error`]): the
        /// error's `source()`, which a host can downcast to the executor's type (a
        /// `ProcessError`, or a type of its own).
        ///
        /// [`StageReport::error`]: crate::engine::StageReport::error
        #[source]
        source: Option<SharedError>,
    },
    /// The step was cancelled before its stages finished, so the move did not happen.
    #[error("the {step} step was cancelled")]
    StepCancelled {
        /// The step.
        step: Step,
    },
    /// The move was cancelled (by the release's cancel handle or the pipeline's) while its
    /// gates were evaluating: their evaluation was dropped and the move did not happen.
    #[error("the {mv} move was cancelled while its gates were evaluating")]
    MoveCancelled {
        /// The move.
        mv: Move,
    },
    /// A release was driven by a pipeline other than the one that started it.
    #[error("release `{release}` belongs to pipeline `{expected}`, not `{found}`")]
    PipelineMismatch {
        /// The release.
        release: ReleaseId,
        /// The pipeline that started it.
        expected: PipelineName,
        /// The pipeline it was handed to.
        found: PipelineName,
    },
}

/// The category of an [`Error`], for callers that branch without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The stage graph or pipeline definition is invalid; fix the definition.
    InvalidDefinition,
    /// An artifact is malformed, unreadable or not the one the release carries.
    Artifact,
    /// A stage failed; the release did not move and can be retried.
    StageFailed,
    /// The step was cancelled; the release did not move and can be retried.
    Cancelled,
    /// A gate is closed; the release did not move.
    GateClosed,
    /// A gate has not decided yet; park the release and try again later.
    GatePending,
    /// An approval is invalid, expired, or given by someone who may not give it.
    Approval,
    /// A stored release does not fit the state, mode or pipeline asked for, or its history
    /// in the journal does not add up.
    Release,
    /// The journal's storage failed (a full disk, a lost connection) or its chain is broken;
    /// nothing was acknowledged.
    Journal,
    /// Someone else moved the release first (another copy, another replica): restore it
    /// from the journal and look again.
    Conflict,
}

impl Error {
    /// The category of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Id(_)
            | Error::Graph(_)
            | Error::Engine(_)
            | Error::Gate(GateError::Invalid { .. } | GateError::Id(_))
            | Error::Approval(ApprovalError::InvalidRule { .. })
            | Error::MissingExecutor { .. }
            | Error::Spec(_) => ErrorKind::InvalidDefinition,
            Error::Artifact(_) => ErrorKind::Artifact,
            Error::StageFailed { .. } => ErrorKind::StageFailed,
            Error::StepCancelled { .. } | Error::MoveCancelled { .. } => ErrorKind::Cancelled,
            Error::Gate(GateError::Closed { .. }) => ErrorKind::GateClosed,
            Error::Gate(GateError::Pending { .. }) => ErrorKind::GatePending,
            Error::Approval(_) => ErrorKind::Approval,
            Error::Journal(JournalError::Conflict { .. })
            | Error::Fact(
                FactError::Journal(JournalError::Conflict { .. }) | FactError::Claimed { .. },
            ) => ErrorKind::Conflict,
            Error::Journal(_) | Error::Fact(FactError::Journal(_)) => ErrorKind::Journal,
            Error::Record(_) | Error::PipelineMismatch { .. } | Error::Fact(_) => {
                ErrorKind::Release
            }
        }
    }
}

/// A `Result` whose error is tollgate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static>() {}
        assert_bounds::<Error>();
        assert_bounds::<IdError>();
        assert_bounds::<ArtifactError>();
        assert_bounds::<GraphError>();
        assert_bounds::<EngineError>();
        assert_bounds::<RecordError>();
        assert_bounds::<GateError>();
        assert_bounds::<ApprovalError>();
    }

    #[test]
    fn a_wrapped_error_keeps_its_message_and_gets_its_kind() {
        let err = Error::from(GraphError::Cycle {
            stages: vec![
                StageId::new("a").unwrap(),
                StageId::new("b").unwrap(),
                StageId::new("c").unwrap(),
            ],
        });
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
        assert_eq!(err.kind(), ErrorKind::InvalidDefinition);
        let pending = Error::from(GateError::Pending {
            gate: "soak".into(),
            waiting_for: "time".into(),
            until: None,
        });
        assert_eq!(pending.kind(), ErrorKind::GatePending);
        let closed = Error::from(GateError::Closed {
            gate: "window".into(),
            reason: "frozen".into(),
        });
        assert_eq!(closed.kind(), ErrorKind::GateClosed);
        let invalid = Error::from(GateError::Invalid {
            gate: "k-of-n".into(),
            reason: "3 of 2".into(),
        });
        assert_eq!(invalid.kind(), ErrorKind::InvalidDefinition);
    }
}
