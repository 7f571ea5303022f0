//! The serde form of a release: [`AnyRelease`] (what a bot stores and reloads, in any state
//! and mode), the [`Revision`] it starts from, and the records of what was decided on the way
//! ([`GateRecord`], [`ApprovalRecord`], [`Signoff`]).
//!
//! A record is plain data: it reads and displays, and gates and approval policies look at a
//! release through it. It is never trusted as it stands: the typed
//! [`Release`](crate::release::Release) comes back from a record only through checks that
//! re-derive it ([`RecordError`] says what did not fit).

mod decision;
mod revision;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::artifact::{ArtifactError, ArtifactRef};
use crate::engine::StepReport;
use crate::environment::Environment;
use crate::executor::{Outputs, StageStatus};
use crate::id::{PipelineName, ReleaseId, StageId};
use crate::lifecycle::{Aim, ModeKind, Move, StateName, Step};
use crate::time::Timestamp;

pub use decision::{ApprovalRecord, GateRecord, Signoff};
pub use revision::Revision;

/// A stored release that does not fit what it is loaded as, or contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
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
    /// A stored release record contradicts itself (for example an Approved delivery release
    /// without an approval record).
    #[error("release `{release}` is inconsistent: {reason}")]
    Inconsistent {
        /// The release.
        release: ReleaseId,
        /// What contradicts what.
        reason: String,
    },
}

/// A release in any state and mode, as plain data: what a bot shows, logs and exports.
///
/// It is a view, not a source: a typed [`Release`](crate::release::Release) never comes back
/// from it. The journal is the source of truth, and
/// [`Pipeline::restore`](crate::pipeline::Pipeline::restore) re-derives a typed release from
/// the facts it holds.
///
/// ```
/// use tollgate::prelude::*;
/// use tollgate::executor::from_fn;
/// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
/// let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
/// let pipeline = Pipeline::<Deployment>::builder("web")
///     .stage(Stage::build("compile").run(ok()))
///     .stage(Stage::test("unit").run(ok()))
///     .stage(Stage::stage("staging").run(ok()))
///     .stage(Stage::deploy("production").run(ok()))
///     .build()?;
/// let built = pipeline.start("r1", Revision::new("abc", "dana")?)?.build(&pipeline).await?;
/// let json = serde_json::to_string(built.record()).unwrap();
/// let shown: AnyRelease = serde_json::from_str(&json).unwrap();
/// assert_eq!(&shown, built.record());
/// // Back to a typed release: only through the journal.
/// let restored = pipeline.restore("r1").await?;
/// assert!(Release::<Tested, Deployment>::try_from(pipeline.restore("r1").await?).is_err());
/// let _built = Release::<Built, Deployment>::try_from(restored)?;
/// # Ok(()) }) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyRelease {
    id: ReleaseId,
    pipeline: PipelineName,
    mode: ModeKind,
    state: StateName,
    /// When the release entered `state` (for soak timers and gate timeouts).
    entered_at: Timestamp,
    revision: Revision,
    created_at: Timestamp,
    staging: Environment,
    target: Environment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact: Option<ArtifactRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    steps: Vec<StepReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gates: Vec<GateRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployed_at: Option<Timestamp>,
}

impl AnyRelease {
    #[allow(clippy::too_many_arguments)] // Crate-internal constructor of a plain record.
    pub(crate) fn new(
        id: ReleaseId,
        pipeline: PipelineName,
        mode: ModeKind,
        revision: Revision,
        created_at: Timestamp,
        staging: Environment,
        target: Environment,
    ) -> Self {
        AnyRelease {
            id,
            pipeline,
            mode,
            state: StateName::Commit,
            entered_at: created_at,
            revision,
            created_at,
            staging,
            target,
            artifact: None,
            steps: Vec::new(),
            gates: Vec::new(),
            approval: None,
            deployed_at: None,
        }
    }

    /// The release's id.
    #[must_use]
    pub fn id(&self) -> &ReleaseId {
        &self.id
    }

    /// The name of the pipeline that started it.
    #[must_use]
    pub fn pipeline(&self) -> &PipelineName {
        &self.pipeline
    }

    /// Its mode.
    #[must_use]
    pub fn mode(&self) -> ModeKind {
        self.mode
    }

    /// Its state.
    #[must_use]
    pub fn state(&self) -> StateName {
        self.state
    }

    /// The revision it was started from.
    #[must_use]
    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// When it entered its current state: its creation for a Commit, the end of the move
    /// that brought it here otherwise. Soak timers and gate timeouts count from here.
    #[must_use]
    pub fn entered_at(&self) -> Timestamp {
        self.entered_at
    }

    /// When it was started.
    #[must_use]
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The staging environment.
    #[must_use]
    pub fn staging(&self) -> &Environment {
        &self.staging
    }

    /// The environment it is headed for.
    #[must_use]
    pub fn target(&self) -> &Environment {
        &self.target
    }

    /// The environment a move of this release is aimed at (see [`Move::aim`]): staging for
    /// the stage move, the target for every other one.
    #[must_use]
    pub fn aimed_at(&self, mv: Move) -> &Environment {
        match mv.aim() {
            Aim::Staging => &self.staging,
            Aim::Target => &self.target,
        }
    }

    /// Its artifact, once built.
    #[must_use]
    pub fn artifact(&self) -> Option<&ArtifactRef> {
        self.artifact.as_ref()
    }

    /// Every step run so far, failed attempts included, oldest first.
    #[must_use]
    pub fn steps(&self) -> &[StepReport] {
        &self.steps
    }

    /// Every gate verdict so far, oldest first.
    #[must_use]
    pub fn gates(&self) -> &[GateRecord] {
        &self.gates
    }

    /// The human approval, for an approved delivery release.
    #[must_use]
    pub fn approval(&self) -> Option<&ApprovalRecord> {
        self.approval.as_ref()
    }

    /// When it was deployed.
    #[must_use]
    pub fn deployed_at(&self) -> Option<Timestamp> {
        self.deployed_at
    }

    /// The output `key` of stage `stage`, from the latest run in which it succeeded: what
    /// a gate reads to decide on a move (staging's health, a canary's error rate).
    ///
    /// ```
    /// # use tollgate::prelude::*;
    /// # use tollgate::executor::from_fn;
    /// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
    /// let compile = from_fn(|_| {
    ///     Ok(StageOutcome::success()
    ///         .output("version", "1.4.0")
    ///         .artifact(ArtifactRef::from_bytes("app", b"app")))
    /// });
    /// # let ok = || from_fn(|_| Ok(StageOutcome::success()));
    /// let pipeline = Pipeline::<Deployment>::builder("web")
    ///     .stage(Stage::build("compile").run(compile))
    ///     # .stage(Stage::test("unit").run(ok())).stage(Stage::stage("staging").run(ok()))
    ///     # .stage(Stage::deploy("production").run(ok()))
    ///     .build()?;
    /// let built = pipeline.start("r1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
    /// assert_eq!(built.record().output("compile", "version"), Some("1.4.0"));
    /// assert_eq!(built.record().output("compile", "missing"), None);
    /// # Ok(()) }) }
    /// ```
    #[must_use]
    pub fn output(&self, stage: &str, key: &str) -> Option<&str> {
        self.steps
            .iter()
            .rev()
            .flat_map(|step| &step.stages)
            .find(|s| s.id == stage && s.status == StageStatus::Succeeded)
            .and_then(|s| s.outputs.get(key))
            .map(String::as_str)
    }

    /// Outputs of every stage that succeeded, for the stages of later steps.
    pub(crate) fn outputs(&self) -> BTreeMap<StageId, Arc<Outputs>> {
        self.steps
            .iter()
            .flat_map(|step| &step.stages)
            .filter(|s| s.status == StageStatus::Succeeded)
            .map(|s| (s.id.clone(), Arc::new(s.outputs.clone())))
            .collect()
    }

    /// The one artifact the build stages of `report` produced.
    pub(crate) fn artifact_from(&self, report: &StepReport) -> Result<ArtifactRef, ArtifactError> {
        let reported: Vec<(&StageId, &ArtifactRef)> = report
            .stages
            .iter()
            .filter_map(|stage| Some((&stage.id, stage.artifact.as_deref()?)))
            .collect();
        let Some(&(_, first)) = reported.first() else {
            return Err(ArtifactError::Missing {
                release: self.id.clone(),
            });
        };
        if reported.iter().all(|(_, a)| a.digest == first.digest) {
            // One artifact (perhaps reported by several stages): the release carries it.
            first.verify_manifest()?;
            return Ok(first.clone());
        }
        // Several: one name, one digest, or the build is refused naming both stages.
        let mut names: BTreeMap<&str, (&StageId, &ArtifactRef)> = BTreeMap::new();
        for &(stage, artifact) in &reported {
            if let Some(&(first_stage, first)) = names.get(artifact.name.as_str()) {
                if first.digest != artifact.digest {
                    return Err(ArtifactError::Conflicting {
                        first_stage: first_stage.clone(),
                        first: first.digest.clone(),
                        second_stage: stage.clone(),
                        second: artifact.digest.clone(),
                    });
                }
            }
            names.insert(&artifact.name, (stage, artifact));
        }
        ArtifactRef::manifest(
            self.id.as_str(),
            names.into_values().map(|(_, artifact)| artifact.clone()),
        )
    }

    pub(crate) fn push_step(&mut self, report: StepReport) {
        self.steps.push(report);
    }

    pub(crate) fn push_gate(&mut self, record: GateRecord) {
        self.gates.push(record);
    }

    pub(crate) fn set_artifact(&mut self, artifact: ArtifactRef) {
        self.artifact = Some(artifact);
    }

    /// Moves the record to `state` at `at`. Recorded times never go back: a wall clock that
    /// stepped back (NTP) makes the state's entry time the previous one, so the crate's own
    /// record always loads.
    pub(crate) fn set_state(&mut self, state: StateName, at: Timestamp) {
        self.state = state;
        self.entered_at = at.max(self.entered_at).max(self.created_at);
    }

    pub(crate) fn set_approval(&mut self, record: ApprovalRecord) {
        self.approval = Some(record);
    }

    pub(crate) fn set_deployed_at(&mut self, at: Timestamp) {
        self.deployed_at = Some(at.max(self.entered_at));
    }

    /// Checks that the record is a release in `state` and `mode` whose parts agree with
    /// that state: what a typed release is restored from.
    pub(crate) fn check_as(&self, state: StateName, mode: ModeKind) -> Result<(), RecordError> {
        if self.mode != mode {
            return Err(RecordError::WrongMode {
                release: self.id.clone(),
                expected: mode,
                found: self.mode,
            });
        }
        if self.state != state {
            return Err(RecordError::WrongState {
                release: self.id.clone(),
                expected: state,
                found: self.state,
            });
        }
        self.check_consistency()
    }

    /// Checks that the record's parts agree with its state.
    fn check_consistency(&self) -> Result<(), RecordError> {
        let inconsistent = |reason: String| {
            Err(RecordError::Inconsistent {
                release: self.id.clone(),
                reason,
            })
        };
        let past_commit = self.state > StateName::Commit;
        if past_commit != self.artifact.is_some() {
            return inconsistent(format!(
                "a {} release must {}have an artifact",
                self.state,
                if past_commit { "" } else { "not " }
            ));
        }
        for step in Step::ALL {
            let state = step.reaches();
            let done = self.steps.iter().any(|r| r.step == step && r.succeeded());
            if self.state >= state && !done {
                return inconsistent(format!(
                    "a {} release has no successful {step} step",
                    self.state
                ));
            }
        }
        let approved = self.state >= StateName::Approved;
        match (self.mode, approved, &self.approval, &self.artifact) {
            (ModeKind::Delivery, true, None, _) => {
                return inconsistent(format!("a {} delivery release has no approval", self.state));
            }
            (ModeKind::Delivery, true, Some(approval), Some(artifact))
                if approval.digest != artifact.digest
                    || &approval.environment != self.target.name() =>
            {
                return inconsistent(
                    "its approval is for another artifact or environment".to_owned(),
                );
            }
            (ModeKind::Deployment, _, Some(_), _) => {
                return inconsistent(
                    "a deployment release cannot carry a human approval".to_owned(),
                );
            }
            (_, false, Some(_), _) => {
                return inconsistent(format!("a {} release cannot be approved yet", self.state));
            }
            _ => {}
        }
        if self.entered_at < self.created_at {
            return inconsistent(format!(
                "it entered {} at {} before it was created at {}",
                self.state, self.entered_at, self.created_at
            ));
        }
        if (self.state == StateName::Deployed) != self.deployed_at.is_some() {
            return inconsistent("only a deployed release has a deployment time".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! `check_as` is the last check before a typed release is handed out: the replay of the
    //! journal's facts refuses every history these rules would (so no restore reaches a
    //! failing one today), and these tests keep the rules themselves from going soft behind
    //! it.

    use super::*;
    use crate::executor::StepOutcome;

    fn at(minute: u64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + minute * 60_000)
    }

    fn step(step: Step, outcome: StepOutcome) -> StepReport {
        StepReport {
            step,
            started_at: at(1),
            finished_at: at(2),
            outcome,
            // No stages: a report of a step with no stage succeeds by its stages' word, so
            // whether it counts is the record's business.
            stages: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn approval_of(any: &AnyRelease) -> ApprovalRecord {
        ApprovalRecord {
            approver: crate::id::Person::new("rita").unwrap(),
            reason: "ok".to_owned(),
            issued_at: at(3),
            expires_at: at(3 + 24 * 60),
            digest: any.artifact.as_ref().unwrap().digest.clone(),
            environment: any.target.name().clone(),
            votes_through: 0,
            self_approved: false,
            triggerer_approved: false,
            signoffs: Vec::new(),
        }
    }

    /// A release of `mode` that reached `state` the way the pipeline moves one: an artifact
    /// from the build on, a successful report of each step it passed, an approval (in
    /// delivery mode) from Approved on, and a deployment time once deployed.
    fn reached(mode: ModeKind, state: StateName) -> AnyRelease {
        let mut any = AnyRelease::new(
            ReleaseId::new("r1").unwrap(),
            PipelineName::new("shop").unwrap(),
            mode,
            Revision::new("4f2a9c1", "dana").unwrap(),
            at(0),
            Environment::new("staging").unwrap(),
            Environment::new("production").unwrap(),
        );
        for next in Step::ALL {
            if next.reaches() > state {
                break;
            }
            any.push_step(step(next, StepOutcome::Succeeded));
            if next == Step::Build {
                any.set_artifact(ArtifactRef::from_bytes("app", b"app"));
            }
            any.set_state(next.reaches(), at(4));
            if next == Step::Stage && state >= StateName::Approved {
                if mode == ModeKind::Delivery {
                    any.set_approval(approval_of(&any));
                }
                any.set_state(StateName::Approved, at(5));
            }
        }
        if state == StateName::Deployed {
            any.set_deployed_at(at(6));
        }
        assert_eq!(any.state(), state);
        any
    }

    fn every_release() -> impl Iterator<Item = AnyRelease> {
        [ModeKind::Delivery, ModeKind::Deployment]
            .into_iter()
            .flat_map(|mode| StateName::ALL.map(|state| reached(mode, state)))
    }

    #[track_caller]
    fn assert_refused(any: &AnyRelease, because: &str) {
        match any.check_as(any.state(), any.mode()) {
            Err(RecordError::Inconsistent { reason, .. }) => {
                assert!(
                    reason.contains(because),
                    "refused for `{reason}`, not `{because}`"
                );
            }
            other => panic!(
                "a {} {} release ({because}) must be refused, got {other:?}",
                any.state(),
                any.mode()
            ),
        }
    }

    #[test]
    fn a_release_that_reached_its_state_the_pipelines_way_is_taken_in_every_state_and_mode() {
        for any in every_release() {
            assert_eq!(any.check_as(any.state(), any.mode()), Ok(()), "{any:?}");
        }
    }

    #[test]
    fn an_artifact_is_held_from_the_build_on_and_never_before() {
        for mut any in every_release() {
            if any.state() == StateName::Commit {
                any.set_artifact(ArtifactRef::from_bytes("app", b"app"));
                assert_refused(&any, "must not have an artifact");
            } else {
                any.artifact = None;
                assert_refused(&any, "must have an artifact");
            }
        }
    }

    #[test]
    fn each_step_passed_needs_a_successful_report_of_that_step() {
        for any in every_release() {
            for (i, report) in any.steps().iter().enumerate() {
                let missing = format!("no successful {} step", report.step);
                // Without it, with another step's success in its place, and failed.
                let mut without = any.clone();
                without.steps.remove(i);
                assert_refused(&without, &missing);
                let mut other = any.clone();
                other.steps[i] = step(
                    if report.step == Step::Build {
                        Step::Test
                    } else {
                        Step::Build
                    },
                    StepOutcome::Succeeded,
                );
                assert_refused(&other, &missing);
                let mut failed = any.clone();
                failed.steps[i].stages.push(
                    serde_json::from_value(
                        serde_json::json!({"id": "unit", "status": "cancelled"}),
                    )
                    .unwrap(),
                );
                assert_refused(&failed, &missing);
            }
        }
    }

    #[test]
    fn a_delivery_release_is_approved_only_with_an_approval_for_its_artifact_and_target() {
        for state in [StateName::Approved, StateName::Deployed] {
            let any = reached(ModeKind::Delivery, state);
            let mut without = any.clone();
            without.approval = None;
            assert_refused(&without, "delivery release has no approval");
            let mut other_artifact = any.clone();
            other_artifact.approval.as_mut().unwrap().digest =
                ArtifactRef::from_bytes("app", b"another app").digest;
            assert_refused(&other_artifact, "another artifact or environment");
            let mut other_target = any.clone();
            other_target.approval.as_mut().unwrap().environment =
                Environment::new("staging").unwrap().name().clone();
            assert_refused(&other_target, "another artifact or environment");
        }
    }

    #[test]
    fn no_approval_is_held_before_approved_nor_ever_in_deployment_mode() {
        let approved = reached(ModeKind::Delivery, StateName::Approved);
        let approval = approved.approval().unwrap().clone();
        for mut any in every_release() {
            if any.mode() == ModeKind::Deployment {
                any.approval = Some(approval.clone());
                assert_refused(&any, "cannot carry a human approval");
            } else if any.state() < StateName::Approved {
                any.approval = Some(approval.clone());
                assert_refused(&any, "cannot be approved yet");
            }
        }
    }

    #[test]
    fn a_release_enters_its_state_no_earlier_than_it_was_created() {
        for mut any in every_release() {
            any.entered_at = at(0);
            assert_eq!(
                any.check_as(any.state(), any.mode()),
                Ok(()),
                "the same instant"
            );
            any.created_at = at(1);
            assert_refused(&any, "before it was created");
        }
    }

    #[test]
    fn only_a_deployed_release_has_a_deployment_time() {
        for mut any in every_release() {
            if any.state() == StateName::Deployed {
                any.deployed_at = None;
            } else {
                any.deployed_at = Some(at(6));
            }
            assert_refused(&any, "only a deployed release has a deployment time");
        }
    }
}
