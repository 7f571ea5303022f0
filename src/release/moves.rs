//! The moves of a release: one generic `advance` that checks, asks the gates, runs the
//! move's step and records everything in the journal, and the public moves, each bound by
//! the capability its state or mode must have.
//!
//! Each move writes its facts in appends conditional on the release's last fact being the
//! one this copy saw, so two copies cannot both take a move: the gates' verdicts first (the
//! claim, which opens a run of the move), then each stage of the step as it settles, then
//! the step's report with the move or the refusal (which concludes the run). A run a crash
//! cut off is carried on by the next try of the move, from a restored copy: the stages it
//! finished are not run again, and its attempts keep their idempotency keys.

use super::capability::{
    AutomaticApproval, CanApprove, CanBuild, CanDeploy, CanStage, CanTest, HumanApproval,
};
use super::{MoveError, OpenRun, Release};
use crate::approval::{Approval, ApprovalError, ApprovalRequest, Ballot};
use crate::artifact::{Artifact, ArtifactError};
use crate::engine::Event;
use crate::error::{Error, Result};
use crate::executor::StageStatus;
use crate::fact::{Fact, FactError};
use crate::gate::GateError;
use crate::lifecycle::{
    Approved, Built, Deployed, Mode, ModeKind, Move, Staged, State, StateName, Tested, Verdict,
};
use crate::pipeline::{Pipeline, StepJournal, request_for, request_with};
use crate::record::{ApprovalRecord, GateRecord};
use crate::time::Timestamp;

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

    /// The question to put to people: this release, this artifact, the target environment.
    /// Post it where they answer; their votes go to [`Pipeline::vote`] with the release's id.
    #[must_use]
    pub fn approval_request(&self) -> ApprovalRequest
    where
        S: CanApprove,
        M: HumanApproval,
    {
        request_with(&self.any, self.artifact().digest.clone())
    }

    /// Continuous delivery's human gate: moves to Approved with an [`Approval`] this
    /// pipeline issued for this release, its artifact digest and its target environment.
    /// When it is used, the approval must not have expired, nobody the policy admits may have
    /// rejected the release since, and everyone who gave it must still be admitted by the
    /// policy and its directory. Automated gates on [`Move::Approve`] must be open too.
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
        self,
        pipeline: &Pipeline<M>,
        approval: Approval,
    ) -> Result<Release<Approved, M>, MoveError<S, M>>
    where
        S: CanApprove,
        M: HumanApproval,
    {
        #[cfg(feature = "tracing")]
        let span = move_span(self.id(), Move::Approve);
        let moving = self.approve_untraced(pipeline, approval);
        #[cfg(feature = "tracing")]
        let moving = tracing::Instrument::instrument(moving, span);
        moving.await
    }

    async fn approve_untraced(
        mut self,
        pipeline: &Pipeline<M>,
        approval: Approval,
    ) -> Result<Release<Approved, M>, MoveError<S, M>>
    where
        S: CanApprove,
        M: HumanApproval,
    {
        if let Err(error) = self.check(pipeline, None).await {
            return Err(MoveError::new(self, error));
        }
        // Gates first: when one is closed or pending, the person's approval is still good
        // and is handed back in the error (`MoveError::take_approval`) for the next try.
        if let Err(error) = self.open_gates(pipeline, Move::Approve).await {
            let mut refused = self.refuse(pipeline, Move::Approve, error).await;
            refused.approval = Some(approval);
            return Err(refused);
        }
        let now = pipeline.clock().now();
        let redeemed = self.redeem(pipeline, approval, now).await;
        match redeemed {
            Ok(record) => {
                let facts = vec![
                    Fact::ApprovalUsed {
                        release: self.any.id().clone(),
                        record: record.clone(),
                        at: now,
                    },
                    Fact::Moved {
                        release: self.any.id().clone(),
                        to: StateName::Approved,
                        artifact: None,
                        at: now,
                    },
                ];
                if let Err(error) = self.write(pipeline, facts).await {
                    return Err(MoveError::new(self, error));
                }
                self.any.set_approval(record);
                self.any.set_state(StateName::Approved, now);
                Ok(self.moved())
            }
            Err(error) => Err(self.refuse(pipeline, Move::Approve, error).await),
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
    /// release's target environment, the one it was approved for. In delivery mode the
    /// approval must still be unexpired.
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
        // The pipeline first (its definition and name), then the approval; the artifact's
        // bytes are checked by the move itself.
        if let Err(error) = self.check(pipeline, None).await {
            return Err(self.refuse(pipeline, Move::Deploy, error).await);
        }
        if let Some(record) = self.any.approval().cloned() {
            // The approval is acted on now: it must still hold (unexpired, everyone who gave
            // it still admitted, the journal's votes still giving it, nobody rejected since).
            let now = pipeline.clock().now();
            let checked = match pipeline.ballot_of(&self.any).await {
                Ok(ballot) => check_approval(pipeline, &ballot, &record, now).map_err(Error::from),
                Err(error) => Err(error),
            };
            if let Err(error) = checked {
                return Err(self.refuse(pipeline, Move::Deploy, error).await);
            }
        }
        self.advance(pipeline, Move::Deploy, Some(&artifact)).await
    }

    /// Checks the pipeline and (when given) the artifact, evaluates the move's gates, runs
    /// the move's step (if it has one), writes what happened to the journal, and either
    /// advances to `N` or hands the release back.
    async fn advance<N: State>(
        self,
        pipeline: &Pipeline<M>,
        mv: Move,
        artifact: Option<&dyn Artifact>,
    ) -> Result<Release<N, M>, MoveError<S, M>> {
        #[cfg(feature = "tracing")]
        let span = move_span(self.id(), mv);
        let moving = self.advance_untraced(pipeline, mv, artifact);
        #[cfg(feature = "tracing")]
        let moving = tracing::Instrument::instrument(moving, span);
        moving.await
    }

    async fn advance_untraced<N: State>(
        mut self,
        pipeline: &Pipeline<M>,
        mv: Move,
        artifact: Option<&dyn Artifact>,
    ) -> Result<Release<N, M>, MoveError<S, M>> {
        debug_assert_eq!((mv.from(), mv.to()), (S::NAME, N::NAME));
        if let Err(error) = self.check(pipeline, artifact).await {
            return Err(self.refuse(pipeline, mv, error).await);
        }
        if let Err(error) = self.open_gates(pipeline, mv).await {
            return Err(self.refuse(pipeline, mv, error).await);
        }
        let mut built = None;
        let mut facts = Vec::new();
        if let Some(step) = mv.step() {
            let environment = self.any.aimed_at(mv).clone();
            // The gates' verdicts just claimed the move: the run is open.
            let mut run = self.run.take().unwrap_or_else(|| OpenRun {
                mv,
                claim: self.head.unwrap_or(0),
                done: Vec::new(),
            });
            let ran = pipeline
                .run_step(
                    &self.any,
                    step,
                    &environment,
                    &self.cancel,
                    StepJournal {
                        head: self.head.unwrap_or(0),
                        claim: run.claim,
                        done: &run.done,
                    },
                )
                .await;
            // What the journal holds of the run stays with this copy until a fact concludes
            // the move, so that trying it again carries on from there.
            self.head = Some(ran.head);
            run.done.extend(ran.journaled);
            self.run = Some(run);
            if let Some(error) = ran.error {
                return Err(MoveError::new(self, error.into()));
            }
            let report = ran.report;
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
            let failure = match failure {
                None if mv == Move::Build => match self.any.artifact_from(&report) {
                    Ok(a) => {
                        built = Some(a);
                        None
                    }
                    Err(error) => Some(error.into()),
                },
                other => other,
            };
            facts.push(Fact::StepRan {
                release: self.any.id().clone(),
                report: report.clone(),
            });
            self.any.push_step(report);
            if let Some(error) = failure {
                return Err(self.refuse_after(pipeline, mv, error, facts).await);
            }
        }
        let now = pipeline.clock().now();
        facts.push(Fact::Moved {
            release: self.any.id().clone(),
            to: N::NAME,
            artifact: built.clone(),
            at: now,
        });
        if let Err(error) = self.write(pipeline, facts).await {
            return Err(MoveError::new(self, error));
        }
        if let Some(artifact) = built {
            self.any.set_artifact(artifact);
        }
        self.any.set_state(N::NAME, now);
        if N::NAME == StateName::Deployed {
            self.any.set_deployed_at(now);
        }
        Ok(self.moved())
    }

    async fn check(&self, pipeline: &Pipeline<M>, artifact: Option<&dyn Artifact>) -> Result<()> {
        if self.any.pipeline() != pipeline.name() || &self.fingerprint != pipeline.fingerprint() {
            let mut differences = self.fingerprint.differences(pipeline.fingerprint());
            if self.any.pipeline() != pipeline.name() {
                return Err(Error::PipelineMismatch {
                    release: self.id().clone(),
                    expected: self.any.pipeline().clone(),
                    found: pipeline.name().clone(),
                });
            }
            differences.dedup();
            return Err(FactError::ForeignPipeline {
                release: self.id().clone(),
                expected: self.any.pipeline().clone(),
                found: pipeline.name().clone(),
                differences,
            }
            .into());
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
            // Its bytes, too: a file rewritten since the tests has the old digest in memory.
            given.verify().await?;
        }
        Ok(())
    }

    /// Evaluates every gate on `mv`, records each verdict (in the release and, first, in the
    /// journal, which claims the move for this copy of the release), and fails on the first
    /// closed gate, else on the first pending one.
    async fn open_gates(&mut self, pipeline: &Pipeline<M>, mv: Move) -> Result<()> {
        let now = pipeline.clock().now();
        let environment = self.any.aimed_at(mv).clone();
        // The move's cancel handle (and the pipeline's) reach the gates: a cancel while they
        // evaluate drops them and ends the move, with nothing recorded of their verdicts.
        let Some(verdicts) = pipeline
            .evaluate_gates(&self.any, mv, &environment, now, Some(&self.cancel))
            .await
        else {
            return Err(Error::MoveCancelled { mv });
        };
        let mut blocked: Option<GateError> = None;
        let mut records = Vec::with_capacity(verdicts.len());
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
            records.push(GateRecord {
                gate,
                mv,
                verdict,
                at: now,
            });
        }
        let fact = Fact::Gates {
            release: self.any.id().clone(),
            mv,
            verdicts: records.clone(),
            at: now,
        };
        self.write(pipeline, vec![fact]).await?;
        // The verdicts claim the move: they open a run of it, or carry on the one this copy
        // holds (restored after a crash cut it off, or left open by a write that failed).
        if self.run.as_ref().is_none_or(|run| run.mv != mv) {
            self.run = Some(OpenRun {
                mv,
                claim: self.head.unwrap_or(0),
                done: Vec::new(),
            });
        }
        for record in records {
            self.any.push_gate(record);
        }
        blocked.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Redeems `approval` for this release at `now`: the approval must be this pipeline's,
    /// for this release as it is, unexpired; and the journal's votes must still give it.
    async fn redeem(
        &self,
        pipeline: &Pipeline<M>,
        approval: Approval,
        now: Timestamp,
    ) -> Result<ApprovalRecord> {
        let Some(request) = request_for(&self.any) else {
            return Err(ArtifactError::Missing {
                release: self.id().clone(),
            }
            .into());
        };
        let record = approval.redeem(&pipeline.issuer(), &request, now)?;
        let ballot = pipeline.ballot_of(&self.any).await?;
        check_approval(pipeline, &ballot, &record, now)?;
        Ok(record)
    }

    /// Writes `facts` to the pipeline's journal, after the release's start if this is its
    /// first write, on the condition that the release's last fact is still the one this
    /// copy saw.
    async fn write(&mut self, pipeline: &Pipeline<M>, mut facts: Vec<Fact>) -> Result<()> {
        if let Some((mv, since)) = self.claimed {
            // Restored while another copy had claimed a move it has not concluded: that copy
            // may be running the move's stages; wait for its lease to end before taking over.
            let until = since.saturating_add(pipeline.claim_lease());
            if pipeline.clock().now() < until {
                return Err(FactError::Claimed {
                    release: self.id().clone(),
                    mv,
                    since,
                    until,
                }
                .into());
            }
        }
        if self.head.is_none() {
            facts.insert(
                0,
                Fact::Started {
                    release: self.any.id().clone(),
                    pipeline: self.any.pipeline().clone(),
                    fingerprint: self.fingerprint.clone(),
                    mode: M::KIND,
                    revision: self.any.revision().clone(),
                    staging: self.any.staging().clone(),
                    target: self.any.target().clone(),
                    at: self.any.created_at(),
                },
            );
        }
        let mut entries: Vec<_> = facts.iter().map(Fact::to_entry).collect();
        if let Some(first) = entries.first_mut() {
            first.expect_prev = Some(self.head.unwrap_or(0));
        }
        let concludes = facts
            .iter()
            .any(|f| matches!(f, Fact::Moved { .. } | Fact::Refused { .. }));
        let head = pipeline.journal().append(entries).await?;
        self.head = Some(head);
        self.claimed = None;
        if concludes {
            self.run = None;
        }
        self.announce(pipeline, &facts);
        Ok(())
    }

    /// Tells the engine's observer the release events behind `facts`, which the journal
    /// has just taken: moves, refusals, approvals, the deploy, and (continuous delivery) the
    /// release parked at the button once it is staged.
    fn announce(&self, pipeline: &Pipeline<M>, facts: &[Fact]) {
        let engine = pipeline.engine();
        let mut approved_by_person = false;
        for fact in facts {
            match fact {
                Fact::ApprovalUsed { record, at, .. } => {
                    approved_by_person = true;
                    let mut by: Vec<_> = record.signoffs.iter().map(|s| s.person.clone()).collect();
                    if by.is_empty() {
                        by.push(record.approver.clone());
                    }
                    engine.tell(*at, || Event::Approved {
                        release: self.any.id().clone(),
                        by,
                        reason: record.reason.clone(),
                        at: *at,
                    });
                }
                Fact::Moved {
                    to, at, artifact, ..
                } => {
                    let from = Move::ALL
                        .iter()
                        .find(|mv| mv.to() == *to)
                        .map_or(StateName::Commit, |mv| mv.from());
                    if *to == StateName::Approved && !approved_by_person {
                        engine.tell(*at, || Event::Approved {
                            release: self.any.id().clone(),
                            by: Vec::new(),
                            reason: String::new(),
                            at: *at,
                        });
                    }
                    // The moves that deploy (to staging, to the target) say where first.
                    let environment = match to {
                        StateName::Staged => Some(self.any.staging()),
                        StateName::Deployed => Some(self.any.target()),
                        _ => None,
                    };
                    if let (Some(environment), Some(artifact)) = (environment, self.any.artifact())
                    {
                        engine.tell(*at, || Event::Deployed {
                            release: self.any.id().clone(),
                            environment: environment.name().clone(),
                            digest: artifact.digest.clone(),
                            at: *at,
                        });
                    }
                    engine.tell(*at, || Event::Moved {
                        release: self.any.id().clone(),
                        from,
                        to: *to,
                        artifact: artifact.clone(),
                        at: *at,
                    });
                    if *to == StateName::Staged && M::KIND == ModeKind::Delivery {
                        engine.tell(*at, || Event::Parked {
                            release: self.any.id().clone(),
                            mv: Move::Approve,
                            gate: None,
                            waiting_for: "a person's approval".to_owned(),
                            until: None,
                            at: *at,
                        });
                    }
                }
                Fact::Refused { mv, reason, at, .. } => engine.tell(*at, || Event::Refused {
                    release: self.any.id().clone(),
                    mv: *mv,
                    reason: reason.clone(),
                    at: *at,
                }),
                _ => {}
            }
        }
    }

    /// Tells the observer that the release waits at a pending gate before `mv`, when
    /// `error` says so.
    fn announce_parked(&self, pipeline: &Pipeline<M>, mv: Move, error: &Error) {
        if let Error::Gate(GateError::Pending {
            gate,
            waiting_for,
            until,
        }) = error
        {
            let at = pipeline.clock().now();
            pipeline.engine().tell(at, || Event::Parked {
                release: self.any.id().clone(),
                mv,
                gate: Some(gate.clone()),
                waiting_for: waiting_for.clone(),
                until: *until,
                at,
            });
        }
    }

    /// Records that `mv` was refused with `error`, and hands the release back with it. A
    /// failure to record is added to nothing: the refusal itself is what the caller hears.
    async fn refuse(mut self, pipeline: &Pipeline<M>, mv: Move, error: Error) -> MoveError<S, M> {
        if !matches!(
            error,
            Error::Journal(_) | Error::PipelineMismatch { .. } | Error::Fact(_)
        ) {
            let fact = self.refusal(pipeline, mv, &error);
            // A refusal that cannot be written changes nothing about the release.
            if self.write(pipeline, vec![fact]).await.is_ok() {
                self.announce_parked(pipeline, mv, &error);
            }
        }
        MoveError::new(self, error)
    }

    /// Like [`refuse`](Self::refuse), with `facts` (a step's report) written before it.
    async fn refuse_after(
        mut self,
        pipeline: &Pipeline<M>,
        mv: Move,
        error: Error,
        mut facts: Vec<Fact>,
    ) -> MoveError<S, M> {
        facts.push(self.refusal(pipeline, mv, &error));
        match self.write(pipeline, facts).await {
            Ok(()) => MoveError::new(self, error),
            Err(journal) => MoveError::new(self, journal),
        }
    }

    fn refusal(&self, pipeline: &Pipeline<M>, mv: Move, error: &Error) -> Fact {
        Fact::Refused {
            release: self.any.id().clone(),
            mv,
            reason: error.to_string(),
            at: pipeline.clock().now(),
        }
    }
}

/// Checks, when `record` is used at `at`, that it is what this pipeline's policy gives from
/// the votes of `ballot` cast until it was issued (with the directory as it is now: everyone
/// who gave it is still admitted), that it has not expired, and that nobody the policy admits
/// has rejected the release since.
pub(super) fn check_approval<M: Mode>(
    pipeline: &Pipeline<M>,
    ballot: &Ballot,
    record: &ApprovalRecord,
    at: Timestamp,
) -> Result<(), ApprovalError> {
    if record.issued_at > at {
        return Err(ApprovalError::Mismatch {
            approver: Some(record.approver.clone()),
            field: "votes",
            approved: format!("issued at {}", record.issued_at),
            actual: format!("used at {at}"),
        });
    }
    if at >= record.expires_at {
        return Err(ApprovalError::Expired {
            approver: record.approver.clone(),
            expired_at: record.expires_at,
            now: at,
        });
    }
    for signoff in &record.signoffs {
        if !pipeline.admits(&record.environment, &signoff.person) {
            return Err(ApprovalError::NotAnApprover {
                person: signoff.person.clone(),
                pipeline: pipeline.name().clone(),
            });
        }
    }
    let derived =
        pipeline.complete_ballot(&ballot.through(record.votes_through), record.issued_at)?;
    if let Some((field, recorded, given)) = crate::approval::first_difference(record, &derived) {
        return Err(ApprovalError::Mismatch {
            approver: Some(record.approver.clone()),
            field,
            approved: recorded,
            actual: format!("{given} (from the journal's votes)"),
        });
    }
    if let Some(rejection) = pipeline.progress_at(ballot, at).rejection {
        return Err(ApprovalError::Rejected {
            person: rejection.person,
            reason: rejection.reason,
        });
    }
    Ok(())
}

/// The span of a move (feature `tracing`): its steps, stages and attempts are inside it.
#[cfg(feature = "tracing")]
fn move_span(release: &crate::id::ReleaseId, mv: Move) -> tracing::Span {
    tracing::info_span!("move", release = %release, mv = %mv)
}
