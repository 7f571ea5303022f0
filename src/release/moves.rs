//! The moves of a release: one generic `advance` that checks, asks the gates, runs the
//! move's step and records everything, and the public moves, each bound by the capability
//! its state or mode must have.

use super::capability::{
    AutomaticApproval, CanApprove, CanBuild, CanDeploy, CanStage, CanTest, HumanApproval,
};
use super::{MoveError, Release};
use crate::approval::{Approval, ApprovalRequest};
use crate::artifact::{Artifact, ArtifactError};
use crate::error::{Error, Result};
use crate::executor::StageStatus;
use crate::gate::GateError;
use crate::lifecycle::{
    Approved, Built, Deployed, Mode, Move, Staged, State, StateName, Tested, Verdict,
};
use crate::pipeline::Pipeline;
use crate::record::GateRecord;

impl<S: State, M: Mode> Release<S, M> {
    /// Runs the build step. The build stages must report exactly one artifact
    /// ([`StageOutcome::artifact`](crate::executor::StageOutcome::artifact)); its digest is
    /// fixed from here on.
    ///
    /// A release cannot skip ahead: a fresh release cannot be tested, staged or deployed.
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// async fn skip(fresh: Release<Commit, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef) {
    ///     let _ = fresh.test(p, a).await; // must be built first
    /// }
    /// ```
    pub async fn build(self, pipeline: &Pipeline<M>) -> Result<Release<Built, M>, MoveError<S, M>>
    where
        S: CanBuild,
    {
        self.advance(pipeline, Move::Build, None).await
    }

    /// Runs the test step against `artifact`, which must be the one built.
    ///
    /// A built release cannot be deployed:
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// async fn skip(built: Release<Built, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef) {
    ///     let _ = built.deploy(p, a).await; // untested code never ships
    /// }
    /// ```
    pub async fn test(
        self,
        pipeline: &Pipeline<M>,
        artifact: &(impl Artifact + ?Sized),
    ) -> Result<Release<Tested, M>, MoveError<S, M>>
    where
        S: CanTest,
    {
        self.advance(pipeline, Move::Test, Some(&artifact)).await
    }

    /// Runs the stage step (deploy to staging, acceptance tests) against `artifact`, which
    /// must be the one built.
    ///
    /// A tested release cannot be deployed to production before it has been staged:
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// async fn skip(tested: Release<Tested, Deployment>, p: &Pipeline<Deployment>, a: &ArtifactRef) {
    ///     let _ = tested.deploy(p, a).await; // staging comes first
    /// }
    /// ```
    pub async fn stage(
        self,
        pipeline: &Pipeline<M>,
        artifact: &(impl Artifact + ?Sized),
    ) -> Result<Release<Staged, M>, MoveError<S, M>>
    where
        S: CanStage,
    {
        self.advance(pipeline, Move::Stage, Some(&artifact)).await
    }

    /// The question to put to a person: this release, this artifact, the target environment.
    /// Hand it to [`Pipeline::sign_off`] (one person) or collect votes on a
    /// [`Ballot`](crate::approval::Ballot) with it.
    #[must_use]
    pub fn approval_request(&self) -> ApprovalRequest
    where
        S: CanApprove,
        M: HumanApproval,
    {
        let any = &self.any;
        ApprovalRequest {
            pipeline: any.pipeline().clone(),
            release: any.id().clone(),
            revision: any.revision().id.clone(),
            author: any.revision().author.clone(),
            triggered_by: any.revision().triggered_by.clone(),
            digest: self.artifact().digest.clone(),
            environment: any.target().name().clone(),
        }
    }

    /// Continuous delivery's human gate: moves to Approved with a person's [`Approval`],
    /// which must name this release, its artifact digest and its target environment, and
    /// must not have expired. Automated gates on [`Move::Approve`] must be open too.
    ///
    /// A delivery release cannot approve itself:
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// async fn skip(staged: Release<Staged, Delivery>, p: &Pipeline<Delivery>) {
    ///     let _ = staged.auto_approve(p).await; // delivery needs a person
    /// }
    /// ```
    pub async fn approve(
        mut self,
        pipeline: &Pipeline<M>,
        approval: Approval,
    ) -> Result<Release<Approved, M>, MoveError<S, M>>
    where
        S: CanApprove,
        M: HumanApproval,
    {
        if let Err(error) = self.check(pipeline, None) {
            return Err(MoveError::new(self, error));
        }
        // Gates first: when one is closed or pending, the person's approval is still good
        // and is handed back in the error (`MoveError::take_approval`) for the next try.
        if let Err(error) = self.open_gates(pipeline, Move::Approve).await {
            let mut refused = MoveError::new(self, error);
            refused.approval = Some(approval);
            return Err(refused);
        }
        let Some(digest) = self.any.artifact().map(|a| a.digest.clone()) else {
            let error = ArtifactError::Missing {
                release: self.id().clone(),
            };
            return Err(MoveError::new(self, error.into()));
        };
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
            Err(error) => Err(MoveError::new(self, error.into())),
        }
    }

    /// Continuous deployment: moves to Approved when every automated gate on
    /// [`Move::Approve`] is open. No person is asked, and none can be:
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// async fn skip(staged: Release<Staged, Deployment>, p: &Pipeline<Deployment>, ok: Approval) {
    ///     let _ = staged.approve(p, ok).await; // deployment mode takes no human approval
    /// }
    /// ```
    pub async fn auto_approve(
        self,
        pipeline: &Pipeline<M>,
    ) -> Result<Release<Approved, M>, MoveError<S, M>>
    where
        S: CanApprove,
        M: AutomaticApproval,
    {
        self.advance(pipeline, Move::Approve, None).await
    }

    /// Runs the deploy step against `artifact` (which must be the one tested) in the
    /// release's target environment, the one it was approved for.
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// async fn skip(staged: Release<Staged, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef) {
    ///     let _ = staged.deploy(p, a).await; // not approved yet
    /// }
    /// ```
    pub async fn deploy(
        self,
        pipeline: &Pipeline<M>,
        artifact: &(impl Artifact + ?Sized),
    ) -> Result<Release<Deployed, M>, MoveError<S, M>>
    where
        S: CanDeploy,
    {
        self.advance(pipeline, Move::Deploy, Some(&artifact)).await
    }

    /// Checks the pipeline and (when given) the artifact, evaluates the move's gates, runs
    /// the move's step (if it has one), and either advances to `N` or hands the release back.
    async fn advance<N: State>(
        mut self,
        pipeline: &Pipeline<M>,
        mv: Move,
        artifact: Option<&dyn Artifact>,
    ) -> Result<Release<N, M>, MoveError<S, M>> {
        debug_assert_eq!((mv.from(), mv.to()), (S::NAME, N::NAME));
        if let Err(error) = self.check(pipeline, artifact) {
            return Err(MoveError::new(self, error));
        }
        if let Err(error) = self.open_gates(pipeline, mv).await {
            return Err(MoveError::new(self, error));
        }
        if let Some(step) = mv.step() {
            let environment = self.any.aimed_at(mv).clone();
            let report = pipeline
                .run_step(&self.any, step, &environment, &self.cancel)
                .await;
            let failure = if report.succeeded() {
                None
            } else {
                Some(match report.failed().next() {
                    Some(stage) => Error::StageFailed {
                        step,
                        stage: stage.id.clone(),
                        reason: match &stage.status {
                            StageStatus::Failed { reason } => reason.clone(),
                            other => other.to_string(),
                        },
                        source: stage.error().cloned(),
                    },
                    None => Error::StepCancelled { step },
                })
            };
            let built = if failure.is_none() && mv == Move::Build {
                match self.any.artifact_from(&report) {
                    Ok(a) => Some(a),
                    Err(error) => {
                        self.any.push_step(report);
                        return Err(MoveError::new(self, error.into()));
                    }
                }
            } else {
                None
            };
            self.any.push_step(report);
            if let Some(error) = failure {
                return Err(MoveError::new(self, error));
            }
            if let Some(artifact) = built {
                self.any.set_artifact(artifact);
            }
        }
        let now = pipeline.clock().now();
        self.any.set_state(N::NAME, now);
        if N::NAME == StateName::Deployed {
            self.any.set_deployed_at(now);
        }
        Ok(Release::from_any_unchecked(self.any))
    }

    fn check(&self, pipeline: &Pipeline<M>, artifact: Option<&dyn Artifact>) -> Result<()> {
        if self.any.pipeline() != pipeline.name() {
            return Err(Error::PipelineMismatch {
                release: self.id().clone(),
                expected: self.any.pipeline().clone(),
                found: pipeline.name().clone(),
            });
        }
        if let (Some(given), Some(fixed)) = (artifact, self.any.artifact()) {
            if given.digest() != &fixed.digest {
                return Err(ArtifactError::Mismatch {
                    release: self.id().clone(),
                    expected: fixed.digest.clone(),
                    found: given.digest().clone(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Evaluates every gate on `mv`, records each verdict, and fails on the first closed
    /// gate, else on the first pending one.
    async fn open_gates(&mut self, pipeline: &Pipeline<M>, mv: Move) -> Result<()> {
        let now = pipeline.clock().now();
        let environment = self.any.aimed_at(mv).clone();
        let verdicts = pipeline
            .evaluate_gates(&self.any, mv, &environment, now, true)
            .await;
        let mut blocked: Option<GateError> = None;
        for (gate, verdict) in verdicts {
            let error = match &verdict {
                Verdict::Open | Verdict::Overridden { .. } => None,
                Verdict::Closed { reason } => Some(GateError::Closed {
                    gate: gate.clone(),
                    reason: reason.clone(),
                }),
                Verdict::Pending { waiting_for, until } => Some(GateError::Pending {
                    gate: gate.clone(),
                    waiting_for: waiting_for.clone(),
                    until: *until,
                }),
            };
            // A closed gate outranks a pending one: it will not open by waiting.
            match (&blocked, error) {
                (None, Some(e))
                | (Some(GateError::Pending { .. }), Some(e @ GateError::Closed { .. })) => {
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
        blocked.map_or(Ok(()), |e| Err(e.into()))
    }
}
