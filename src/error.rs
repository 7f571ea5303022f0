//! The crate's one error type, [`Error`], and the [`ErrorKind`] callers branch on.

use std::fmt;
use std::path::PathBuf;

use crate::artifact::Digest;
use crate::environment::EnvironmentName;
use crate::graph::{StageId, Step};
use crate::release::{ModeKind, ReleaseId, StateName};
use crate::time::Timestamp;

/// Everything that can go wrong in tollgate.
///
/// Messages are lower-case, carry no trailing period, and name the thing that is wrong (the
/// stage, the cycle, the digests expected and found). Branch on [`Error::kind`] rather than on
/// the variants when you only need the category: new variants may be added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- graph ----
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
    /// A gate is built with settings that can never make sense (for example 3 of 2 gates).
    #[error("invalid gate `{gate}`: {reason}")]
    InvalidGate {
        /// The gate, as it would be named.
        gate: String,
        /// What is wrong.
        reason: String,
    },
    /// An engine setting is unusable (for example zero workers).
    #[error("invalid engine configuration: {reason}")]
    InvalidEngine {
        /// What is wrong.
        reason: String,
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
    /// A stage id is empty or contains characters that are not allowed.
    #[error("invalid stage id `{id}`: {reason}")]
    InvalidStageId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A pipeline stage has no executor and the pipeline has no default executor.
    #[error("stage `{stage}` has no executor and the pipeline has no default executor")]
    MissingExecutor {
        /// The stage without an executor.
        stage: StageId,
    },
    /// A delivery pipeline was built without an approval policy.
    #[error("pipeline `{pipeline}` is in delivery mode but has no approval policy")]
    MissingApprovalPolicy {
        /// The pipeline's name.
        pipeline: String,
    },

    // ---- artifacts ----
    /// A string is not a valid digest.
    #[error("invalid digest `{input}`: {reason}")]
    InvalidDigest {
        /// The text that failed to parse.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A move was handed an artifact other than the one fixed when the release was built.
    #[error("artifact mismatch for release `{release}`: expected {expected}, found {found}")]
    ArtifactMismatch {
        /// The release.
        release: ReleaseId,
        /// The digest fixed at build time.
        expected: Digest,
        /// The digest of the artifact that was handed in.
        found: Digest,
    },
    /// The build step finished but no build stage reported an artifact.
    #[error("the build step of release `{release}` succeeded but no stage produced an artifact")]
    NoArtifact {
        /// The release.
        release: ReleaseId,
    },
    /// Two build stages reported different artifacts; a release carries exactly one.
    #[error(
        "stages `{first_stage}` and `{second_stage}` produced different artifacts ({first} and {second})"
    )]
    ConflictingArtifacts {
        /// The first stage that reported an artifact.
        first_stage: StageId,
        /// Its artifact's digest.
        first: Digest,
        /// The second stage.
        second_stage: StageId,
        /// Its artifact's digest.
        second: Digest,
    },
    /// A file artifact's bytes changed on disk after it was hashed.
    #[error("artifact `{}` changed on disk: expected {expected}, found {found}", .path.display())]
    ArtifactChanged {
        /// The file.
        path: PathBuf,
        /// The digest when it was opened.
        expected: Digest,
        /// The digest now.
        found: Digest,
    },
    /// Reading an artifact from disk failed.
    #[error("cannot read artifact `{}`: {source}", .path.display())]
    ArtifactIo {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    // ---- running ----
    /// A stage failed (after all its attempts), so the move did not happen.
    #[error("stage `{stage}` failed in the {step} step: {reason}")]
    StageFailed {
        /// The step being run.
        step: Step,
        /// The first stage that failed.
        stage: StageId,
        /// Why it failed, as the executor reported it.
        reason: String,
    },

    /// The step was cancelled before its stages finished, so the move did not happen.
    #[error("the {step} step was cancelled")]
    StepCancelled {
        /// The step.
        step: Step,
    },

    // ---- gates and approvals ----
    /// A gate on a move is closed.
    #[error("gate `{gate}` is closed: {reason}")]
    GateClosed {
        /// The gate's name.
        gate: String,
        /// Why it is closed.
        reason: String,
    },
    /// A gate on a move has not decided yet.
    #[error("gate `{gate}` is pending: waiting for {waiting_for}")]
    GatePending {
        /// The gate's name.
        gate: String,
        /// What it waits for (a person, a time, a verdict).
        waiting_for: String,
        /// When it will decide on its own, if it knows.
        until: Option<Timestamp>,
    },
    /// An approval was used on something it does not approve.
    #[error("approval by `{approver}` is for {field} `{approved}`, not `{actual}`")]
    ApprovalMismatch {
        /// The person who approved.
        approver: String,
        /// Which binding differs: `release`, `artifact`, `environment` or `pipeline`.
        field: &'static str,
        /// What the approval names.
        approved: String,
        /// What the release it was used on has.
        actual: String,
    },
    /// An approval expired before it was used.
    #[error("approval by `{approver}` expired at {expired_at} (now {now})")]
    ApprovalExpired {
        /// The person who approved.
        approver: String,
        /// When it stopped counting.
        expired_at: Timestamp,
        /// The clock's time when it was used.
        now: Timestamp,
    },
    /// A person not allowed by the approval policy tried to approve.
    #[error("`{person}` may not approve releases of pipeline `{pipeline}`")]
    NotAnApprover {
        /// The person.
        person: String,
        /// The pipeline.
        pipeline: String,
    },
    /// The author of a change tried to approve it.
    #[error("`{person}` authored revision `{revision}` and may not approve it")]
    SelfApproval {
        /// The person.
        person: String,
        /// The revision they authored.
        revision: String,
    },
    /// Whoever triggered the pipeline tried to approve its release.
    #[error("`{person}` triggered the pipeline for release `{release}` and may not approve it")]
    TriggererApproval {
        /// The person.
        person: String,
        /// The release.
        release: String,
    },
    /// Someone the policy admits rejected the release ("changes requested").
    #[error("approval rejected by `{person}`: {reason}")]
    ApprovalRejected {
        /// Who rejected it.
        person: String,
        /// Why.
        reason: String,
    },
    /// The policy's rules are not all met yet.
    #[error("release `{release}` is not approved yet: {waiting_for}")]
    ApprovalIncomplete {
        /// The release.
        release: String,
        /// What the policy still waits for, rule by rule.
        waiting_for: String,
    },
    /// A name (of a person, an environment, a release) is empty or malformed.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// What the name is of.
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    // ---- releases ----
    /// A stored release is in another state than the one asked for.
    #[error("release `{release}` is {found}, not {expected}")]
    WrongState {
        /// The release.
        release: ReleaseId,
        /// The state asked for.
        expected: StateName,
        /// The state it is in.
        found: StateName,
    },
    /// A stored release runs in another mode than the one asked for.
    #[error("release `{release}` runs in {found} mode, not {expected}")]
    WrongMode {
        /// The release.
        release: ReleaseId,
        /// The mode asked for.
        expected: ModeKind,
        /// The mode it has.
        found: ModeKind,
    },
    /// A release was driven by a pipeline other than the one that started it.
    #[error("release `{release}` belongs to pipeline `{expected}`, not `{found}`")]
    PipelineMismatch {
        /// The release.
        release: ReleaseId,
        /// The pipeline that started it.
        expected: String,
        /// The pipeline it was handed to.
        found: String,
    },
    /// A stored release record contradicts itself (for example an Approved delivery release
    /// without an approval record).
    #[error("release `{release}` is inconsistent: {reason}")]
    InconsistentRecord {
        /// The release.
        release: ReleaseId,
        /// What contradicts what.
        reason: String,
    },
    /// A deploy was aimed at an environment other than the release's target.
    #[error("release `{release}` targets environment `{expected}`, not `{found}`")]
    EnvironmentMismatch {
        /// The release.
        release: ReleaseId,
        /// Its target.
        expected: EnvironmentName,
        /// The environment asked for.
        found: EnvironmentName,
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
    /// A stored release does not fit the state, mode or pipeline asked for.
    Release,
}

impl Error {
    /// The category of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::DuplicateStage { .. }
            | Error::UnknownDependency { .. }
            | Error::SelfDependency { .. }
            | Error::Cycle { .. }
            | Error::DependencyOnLaterStep { .. }
            | Error::EmptyStep { .. }
            | Error::DependsOnFinally { .. }
            | Error::InvalidPolicy { .. }
            | Error::InvalidEngine { .. }
            | Error::InvalidGate { .. }
            | Error::UnknownStage { .. }
            | Error::InvalidStageId { .. }
            | Error::MissingExecutor { .. }
            | Error::MissingApprovalPolicy { .. }
            | Error::InvalidName { .. } => ErrorKind::InvalidDefinition,
            Error::InvalidDigest { .. }
            | Error::ArtifactMismatch { .. }
            | Error::NoArtifact { .. }
            | Error::ConflictingArtifacts { .. }
            | Error::ArtifactChanged { .. }
            | Error::ArtifactIo { .. } => ErrorKind::Artifact,
            Error::StageFailed { .. } => ErrorKind::StageFailed,
            Error::StepCancelled { .. } => ErrorKind::Cancelled,
            Error::GateClosed { .. } => ErrorKind::GateClosed,
            Error::GatePending { .. } => ErrorKind::GatePending,
            Error::ApprovalMismatch { .. }
            | Error::ApprovalExpired { .. }
            | Error::NotAnApprover { .. }
            | Error::SelfApproval { .. }
            | Error::TriggererApproval { .. }
            | Error::ApprovalRejected { .. }
            | Error::ApprovalIncomplete { .. } => ErrorKind::Approval,
            Error::WrongState { .. }
            | Error::WrongMode { .. }
            | Error::PipelineMismatch { .. }
            | Error::InconsistentRecord { .. }
            | Error::EnvironmentMismatch { .. } => ErrorKind::Release,
        }
    }
}

/// Shows a cycle as `a -> b -> c -> a`.
struct CycleDisplay<'a>(&'a [StageId]);

impl fmt::Display for CycleDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.0 {
            write!(f, "{id} -> ")?;
        }
        match self.0.first() {
            Some(first) => write!(f, "{first}"),
            None => f.write_str("(empty)"),
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
    }

    #[test]
    fn cycle_message_closes_the_loop() {
        let err = Error::Cycle {
            stages: vec![
                StageId::new("a").unwrap(),
                StageId::new("b").unwrap(),
                StageId::new("c").unwrap(),
            ],
        };
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
        assert_eq!(err.kind(), ErrorKind::InvalidDefinition);
    }
}
