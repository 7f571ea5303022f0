//! The typestate at the heart of tollgate: [`Release<S, M>`](Release), its state markers
//! ([`Commit`] → [`Built`] → [`Tested`] → [`Staged`] → [`Approved`] → [`Deployed`]), its
//! modes ([`Delivery`], [`Deployment`]), and [`AnyRelease`], the serde form a bot stores.
//!
//! Every move consumes the release and returns the next state, or a [`MoveError`] that hands
//! the unmoved release back. A move exists only on the state it starts from, so nothing can
//! be skipped; the Staged → Approved move differs by mode:
//!
//! | mode | Staged → Approved | meaning |
//! |---|---|---|
//! | [`Delivery`] | [`approve`](Release::approve)`(pipeline, approval)` | a person decides |
//! | [`Deployment`] | [`auto_approve`](Release::auto_approve)`(pipeline)` | the automated gates decide |

mod any;

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, ArtifactRef};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::gate::{Approval, ApprovalRequest, GateRecord, Move, Verdict};
use crate::graph::Step;
use crate::pipeline::Pipeline;

pub use crate::name::{Person, ReleaseId};
pub use any::{AnyRelease, Revision};

mod private {
    /// Seals [`State`](super::State) and [`Mode`](super::Mode): only tollgate defines them.
    pub trait Sealed {}
}

/// The name of a release state, for storage and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    /// Started from a revision; nothing has run.
    Commit,
    /// Built: the artifact and its digest are fixed.
    Built,
    /// The artifact passed its tests.
    Tested,
    /// The artifact runs in staging and passed acceptance there.
    Staged,
    /// Approved for the target environment (by a person, or by the automated gates).
    Approved,
    /// Running in the target environment.
    Deployed,
}

impl StateName {
    /// The state's lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            StateName::Commit => "commit",
            StateName::Built => "built",
            StateName::Tested => "tested",
            StateName::Staged => "staged",
            StateName::Approved => "approved",
            StateName::Deployed => "deployed",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which practice a pipeline follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeKind {
    /// Continuous delivery: a person approves each production release.
    Delivery,
    /// Continuous deployment: passing every automated gate is the approval.
    Deployment,
}

impl fmt::Display for ModeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeKind::Delivery => "delivery",
            ModeKind::Deployment => "deployment",
        })
    }
}

/// A release state marker. Sealed: the six states are tollgate's.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a release state",
    note = "the states are Commit, Built, Tested, Staged, Approved and Deployed; the set is sealed and cannot be extended"
)]
pub trait State: private::Sealed + Send + Sync + 'static {
    /// The state's name.
    const NAME: StateName;
}

/// A pipeline mode marker. Sealed: the two modes are tollgate's.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pipeline mode",
    note = "the modes are Delivery (a person approves) and Deployment (automated gates approve); the set is sealed"
)]
pub trait Mode: private::Sealed + Send + Sync + 'static {
    /// The mode's name.
    const KIND: ModeKind;
}

macro_rules! marker {
    ($(#[$doc:meta])* $name:ident = $value:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}
        impl private::Sealed for $name {}
        impl State for $name {
            const NAME: StateName = $value;
        }
    };
}

marker!(
    /// A release that has been started from a revision; next: [`Release::build`].
    Commit = StateName::Commit
);
marker!(
    /// A release whose artifact is built and whose digest is fixed; next: [`Release::test`].
    Built = StateName::Built
);
marker!(
    /// A release whose artifact passed its tests; next: [`Release::stage`].
    Tested = StateName::Tested
);
marker!(
    /// A release running in staging; next: [`Release::approve`] (delivery) or
    /// [`Release::auto_approve`] (deployment).
    Staged = StateName::Staged
);
marker!(
    /// A release approved for its target environment; next: [`Release::deploy`].
    Approved = StateName::Approved
);
marker!(
    /// A release running in its target environment. The end of the line.
    Deployed = StateName::Deployed
);

/// Continuous delivery: a person must approve before production.
#[derive(Debug)]
pub enum Delivery {}
impl private::Sealed for Delivery {}
impl Mode for Delivery {
    const KIND: ModeKind = ModeKind::Delivery;
}

/// Continuous deployment: the automated gates alone approve.
#[derive(Debug)]
pub enum Deployment {}
impl private::Sealed for Deployment {}
impl Mode for Deployment {
    const KIND: ModeKind = ModeKind::Deployment;
}

/// A release in state `S` of a pipeline in mode `M`.
///
/// Created only by [`Pipeline::start`] (or restored from storage with
/// `Release::try_from(any_release)`), moved only by the methods of its state, and never
/// copied: a release that has moved cannot be used again.
///
/// ```compile_fail,E0382
/// # use tollgate::prelude::*;
/// async fn twice(built: Release<Built, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef) {
///     let _tested = built.test(p, a).await;
///     let _again = built.test(p, a).await; // `built` was moved by the first call
/// }
/// ```
pub struct Release<S: State, M: Mode> {
    any: AnyRelease,
    _marker: PhantomData<fn() -> (S, M)>,
}

impl<S: State, M: Mode> fmt::Debug for Release<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Release")
            .field("id", self.any.id())
            .field("state", &S::NAME)
            .field("mode", &M::KIND)
            .field("artifact", &self.any.artifact().map(|a| &a.digest))
            .finish_non_exhaustive()
    }
}

impl<S: State, M: Mode> Release<S, M> {
    pub(crate) fn from_any_unchecked(any: AnyRelease) -> Self {
        Release {
            any,
            _marker: PhantomData,
        }
    }

    /// The release's id.
    #[must_use]
    pub fn id(&self) -> &ReleaseId {
        self.any.id()
    }

    /// The state, as a value.
    #[must_use]
    pub fn state(&self) -> StateName {
        S::NAME
    }

    /// The mode, as a value.
    #[must_use]
    pub fn mode(&self) -> ModeKind {
        M::KIND
    }

    /// The full record: revision, artifact, step reports, gate verdicts, approval.
    #[must_use]
    pub fn record(&self) -> &AnyRelease {
        &self.any
    }

    /// The artifact, once built.
    #[must_use]
    pub fn artifact(&self) -> Option<&ArtifactRef> {
        self.any.artifact()
    }

    /// Forgets the typed state, for storage.
    #[must_use]
    pub fn into_any(self) -> AnyRelease {
        self.any
    }

    /// Checks the pipeline and (when given) the artifact, evaluates the move's gates, runs
    /// the step (when given), and either advances to `N` or hands the release back.
    async fn advance<N: State>(
        mut self,
        pipeline: &Pipeline<M>,
        mv: Move,
        step: Option<Step>,
        artifact: Option<&dyn Artifact>,
    ) -> Result<Release<N, M>, MoveError<S, M>> {
        if let Err(error) = self.check(pipeline, artifact) {
            return Err(MoveError::new(self, error));
        }
        let environment = match step {
            Some(Step::Stage) => self.any.staging().clone(),
            _ => self.any.target().clone(),
        };
        if let Err(error) = self.open_gates(pipeline, mv, &environment).await {
            return Err(MoveError::new(self, error));
        }
        if let Some(step) = step {
            let report = pipeline.run_step(&self.any, step, &environment).await;
            let failure = if report.succeeded() {
                None
            } else {
                Some(match report.failed().next() {
                    Some(stage) => Error::StageFailed {
                        step,
                        stage: stage.id.clone(),
                        reason: match &stage.status {
                            crate::executor::StageStatus::Failed { reason } => reason.clone(),
                            other => other.to_string(),
                        },
                    },
                    None => Error::StepCancelled { step },
                })
            };
            let artifact = if failure.is_none() && step == Step::Build {
                match self.any.artifact_from(&report) {
                    Ok(a) => Some(a),
                    Err(error) => {
                        self.any.push_step(report);
                        return Err(MoveError::new(self, error));
                    }
                }
            } else {
                None
            };
            self.any.push_step(report);
            if let Some(error) = failure {
                return Err(MoveError::new(self, error));
            }
            if let Some(artifact) = artifact {
                self.any.set_artifact(artifact);
            }
        }
        self.any.set_state(N::NAME, pipeline.clock().now());
        if N::NAME == StateName::Deployed {
            self.any.set_deployed_at(pipeline.clock().now());
        }
        Ok(Release::from_any_unchecked(self.any))
    }

    fn check(&self, pipeline: &Pipeline<M>, artifact: Option<&dyn Artifact>) -> Result<()> {
        if self.any.pipeline() != pipeline.name() {
            return Err(Error::PipelineMismatch {
                release: self.id().clone(),
                expected: self.any.pipeline().to_owned(),
                found: pipeline.name().to_owned(),
            });
        }
        if let (Some(given), Some(fixed)) = (artifact, self.any.artifact()) {
            if given.digest() != &fixed.digest {
                return Err(Error::ArtifactMismatch {
                    release: self.id().clone(),
                    expected: fixed.digest.clone(),
                    found: given.digest().clone(),
                });
            }
        }
        Ok(())
    }

    /// Evaluates every gate on `mv`, records each verdict, and fails on the first closed
    /// gate, else on the first pending one.
    async fn open_gates(
        &mut self,
        pipeline: &Pipeline<M>,
        mv: Move,
        environment: &Environment,
    ) -> Result<()> {
        let now = pipeline.clock().now();
        let verdicts = pipeline
            .evaluate_gates(&self.any, mv, environment, now, true)
            .await;
        let mut blocked = None;
        for (gate, verdict) in verdicts {
            let error = match &verdict {
                Verdict::Open | Verdict::Overridden { .. } => None,
                Verdict::Closed { reason } => Some(Error::GateClosed {
                    gate: gate.clone(),
                    reason: reason.clone(),
                }),
                Verdict::Pending { waiting_for, until } => Some(Error::GatePending {
                    gate: gate.clone(),
                    waiting_for: waiting_for.clone(),
                    until: *until,
                }),
            };
            // A closed gate outranks a pending one: it will not open by waiting.
            match (&blocked, error) {
                (None, Some(e))
                | (Some(Error::GatePending { .. }), Some(e @ Error::GateClosed { .. })) => {
                    blocked = Some(e);
                }
                _ => {}
            }
            self.any.push_gate(GateRecord {
                gate,
                mv,
                verdict,
                at: now,
            });
        }
        blocked.map_or(Ok(()), Err)
    }
}

impl<M: Mode> Release<Commit, M> {
    /// Runs the build step. The build stages must report exactly one artifact
    /// ([`StageOutcome::artifact`](crate::executor::StageOutcome::artifact)); its digest is
    /// fixed from here on.
    ///
    /// A release cannot skip ahead: a fresh release has no `test`, `deploy` or other move.
    ///
    /// ```compile_fail,E0599
    /// # use tollgate::prelude::*;
    /// async fn skip(fresh: Release<Commit, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef) {
    ///     let _ = fresh.test(p, a).await; // must be built first
    /// }
    /// ```
    pub async fn build(
        self,
        pipeline: &Pipeline<M>,
    ) -> Result<Release<Built, M>, MoveError<Commit, M>> {
        self.advance(pipeline, Move::Build, Some(Step::Build), None)
            .await
    }
}

impl<M: Mode> Release<Built, M> {
    /// Runs the test step against `artifact`, which must be the one built.
    ///
    /// A built release cannot be deployed:
    ///
    /// ```compile_fail,E0599
    /// # use tollgate::prelude::*;
    /// async fn skip(built: Release<Built, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef, e: &Environment) {
    ///     let _ = built.deploy(p, a, e).await; // untested code never ships
    /// }
    /// ```
    pub async fn test(
        self,
        pipeline: &Pipeline<M>,
        artifact: &(impl Artifact + ?Sized),
    ) -> Result<Release<Tested, M>, MoveError<Built, M>> {
        self.advance(pipeline, Move::Test, Some(Step::Test), Some(&artifact))
            .await
    }
}

impl<M: Mode> Release<Tested, M> {
    /// Runs the stage step (deploy to staging, acceptance tests) against `artifact`, which
    /// must be the one built.
    ///
    /// A tested release cannot be deployed to production before it has been staged:
    ///
    /// ```compile_fail,E0599
    /// # use tollgate::prelude::*;
    /// async fn skip(tested: Release<Tested, Deployment>, p: &Pipeline<Deployment>, a: &ArtifactRef, e: &Environment) {
    ///     let _ = tested.deploy(p, a, e).await; // staging comes first
    /// }
    /// ```
    pub async fn stage(
        self,
        pipeline: &Pipeline<M>,
        artifact: &(impl Artifact + ?Sized),
    ) -> Result<Release<Staged, M>, MoveError<Tested, M>> {
        self.advance(pipeline, Move::Stage, Some(Step::Stage), Some(&artifact))
            .await
    }
}

impl Release<Staged, Delivery> {
    /// The question to put to a person: this release, this artifact, the target environment.
    /// Hand it to [`Pipeline::approve`] with the person's answer.
    ///
    /// # Panics
    ///
    /// Never: a staged release always has an artifact (fixed by the build move, and checked
    /// by `TryFrom<AnyRelease>` when a stored release is loaded).
    #[must_use]
    pub fn approval_request(&self) -> ApprovalRequest {
        let any = &self.any;
        ApprovalRequest {
            pipeline: any.pipeline().to_owned(),
            release: any.id().clone(),
            revision: any.revision().id.clone(),
            author: any.revision().author.clone(),
            triggered_by: any.revision().triggered_by.clone(),
            digest: any.artifact().map(|a| a.digest.clone()).expect(
                "a staged release always has an artifact: checked when it was built or loaded",
            ),
            environment: any.target().name().clone(),
        }
    }

    /// Continuous delivery's human gate: moves to Approved with a person's [`Approval`],
    /// which must name this release, its artifact digest and its target environment, and
    /// must not have expired. Automated gates on [`Move::Approve`] must be open too.
    ///
    /// A delivery release cannot approve itself:
    ///
    /// ```compile_fail,E0599
    /// # use tollgate::prelude::*;
    /// async fn skip(staged: Release<Staged, Delivery>, p: &Pipeline<Delivery>) {
    ///     let _ = staged.auto_approve(p).await; // delivery needs a person
    /// }
    /// ```
    pub async fn approve(
        mut self,
        pipeline: &Pipeline<Delivery>,
        approval: Approval,
    ) -> Result<Release<Approved, Delivery>, MoveError<Staged, Delivery>> {
        if let Err(error) = self.check(pipeline, None) {
            return Err(MoveError::new(self, error));
        }
        let Some(digest) = self.any.artifact().map(|a| a.digest.clone()) else {
            let error = Error::InconsistentRecord {
                release: self.id().clone(),
                reason: "a staged release has no artifact".to_owned(),
            };
            return Err(MoveError::new(self, error));
        };
        // Gates first: when one is closed or pending, the person's approval is still good
        // and is handed back in the error (`MoveError::take_approval`) for the next try.
        let environment = self.any.target().clone();
        if let Err(error) = self.open_gates(pipeline, Move::Approve, &environment).await {
            let mut refused = MoveError::new(self, error);
            refused.approval = Some(approval);
            return Err(refused);
        }
        let redeemed = approval.redeem(
            pipeline.name(),
            self.any.id(),
            self.any.revision(),
            &digest,
            self.any.target().name(),
            pipeline.clock().now(),
        );
        match redeemed {
            Ok(record) => {
                self.any.set_approval(record);
                self.any
                    .set_state(StateName::Approved, pipeline.clock().now());
                Ok(Release::from_any_unchecked(self.any))
            }
            Err(error) => Err(MoveError::new(self, error)),
        }
    }
}

impl Release<Staged, Deployment> {
    /// Continuous deployment: moves to Approved when every automated gate on
    /// [`Move::Approve`] is open. No person is asked, and none can be:
    ///
    /// ```compile_fail,E0599
    /// # use tollgate::prelude::*;
    /// async fn skip(staged: Release<Staged, Deployment>, p: &Pipeline<Deployment>, ok: Approval) {
    ///     let _ = staged.approve(p, ok).await; // deployment mode takes no human approval
    /// }
    /// ```
    pub async fn auto_approve(
        self,
        pipeline: &Pipeline<Deployment>,
    ) -> Result<Release<Approved, Deployment>, MoveError<Staged, Deployment>> {
        self.advance(pipeline, Move::Approve, None, None).await
    }
}

impl<M: Mode> Release<Approved, M> {
    /// Runs the deploy step against `artifact` (which must be the one tested) in
    /// `environment` (which must be the one approved).
    ///
    /// ```compile_fail,E0599
    /// # use tollgate::prelude::*;
    /// async fn skip(staged: Release<Staged, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef, e: &Environment) {
    ///     let _ = staged.deploy(p, a, e).await; // not approved yet
    /// }
    /// ```
    pub async fn deploy(
        self,
        pipeline: &Pipeline<M>,
        artifact: &(impl Artifact + ?Sized),
        environment: &Environment,
    ) -> Result<Release<Deployed, M>, MoveError<Approved, M>> {
        if environment.name() != self.any.target().name() {
            let error = Error::EnvironmentMismatch {
                release: self.id().clone(),
                expected: self.any.target().name().clone(),
                found: environment.name().clone(),
            };
            return Err(MoveError::new(self, error));
        }
        self.advance(pipeline, Move::Deploy, Some(Step::Deploy), Some(&artifact))
            .await
    }
}

impl<M: Mode> Release<Deployed, M> {
    /// When the release reached its target.
    #[must_use]
    pub fn deployed_at(&self) -> crate::time::Timestamp {
        self.any
            .deployed_at()
            .unwrap_or_else(|| self.any.created_at())
    }
}

/// A move that did not happen: the error, and the release handed back in the state it was
/// in (with the attempt recorded in its history), ready to retry or store.
pub struct MoveError<S: State, M: Mode> {
    release: Release<S, M>,
    error: Error,
    approval: Option<Approval>,
}

impl<S: State, M: Mode> MoveError<S, M> {
    fn new(release: Release<S, M>, error: Error) -> Self {
        MoveError {
            release,
            error,
            approval: None,
        }
    }

    /// The approval handed to [`Release::approve`], when the move failed for a reason other
    /// than the approval itself (a gate was closed or pending), so that it can be used again
    /// once the gate opens. `None` once taken, and for every other failure.
    pub fn take_approval(&mut self) -> Option<Approval> {
        self.approval.take()
    }

    /// What went wrong.
    #[must_use]
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The category of what went wrong.
    #[must_use]
    pub fn kind(&self) -> crate::error::ErrorKind {
        self.error.kind()
    }

    /// The release, unmoved.
    #[must_use]
    pub fn release(&self) -> &Release<S, M> {
        &self.release
    }

    /// Takes the release back.
    #[must_use]
    pub fn into_release(self) -> Release<S, M> {
        self.release
    }

    /// Splits into the release and the error.
    #[must_use]
    pub fn into_parts(self) -> (Release<S, M>, Error) {
        (self.release, self.error)
    }
}

impl<S: State, M: Mode> fmt::Debug for MoveError<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoveError")
            .field("release", &self.release)
            .field("error", &self.error)
            .field("approval", &self.approval)
            .finish()
    }
}

impl<S: State, M: Mode> fmt::Display for MoveError<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<S: State, M: Mode> std::error::Error for MoveError<S, M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl<S: State, M: Mode> From<MoveError<S, M>> for Error {
    fn from(e: MoveError<S, M>) -> Error {
        e.error
    }
}
