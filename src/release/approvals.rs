//! Votes and approvals, journal-backed: a vote is a fact the pipeline writes with its own
//! clock's time, a ballot is a view of those facts, and an approval is issued from them by
//! the pipeline's policy. The request voted on is always the one the pipeline derives from
//! the release's own facts, never one a caller hands in.

use crate::approval::{Approval, ApprovalError, Ballot, Decision, Progress, Vote};
use crate::error::Result;
use crate::fact::{Fact, read_release};
use crate::id::Person;
use crate::journal::JournalError;
use crate::lifecycle::{HumanApproval, StateName};
use crate::pipeline::{Pipeline, ballot_in, request_for};
use crate::record::{AnyRelease, RecordError};

/// How often a vote is tried again when another fact about the release was written between
/// reading it and writing the vote (another vote, typically).
const VOTE_TRIES: usize = 8;

impl<M: HumanApproval> Pipeline<M> {
    /// Records `person`'s `decision` on the approval of staged release `release`, with their
    /// `reason`, at the pipeline clock's time, as a fact in the journal; returns the progress
    /// the ballot makes with it.
    ///
    /// The vote is refused, and nothing is written, when the release is not staged, when no
    /// rule of the policy admits `person` (directly or through a group), or when they wrote
    /// the change or triggered the pipeline (unless the policy relaxes that). A later vote by
    /// the same person replaces their earlier one.
    ///
    /// ```
    /// # use tollgate::prelude::*;
    /// # use tollgate::approval::{Decision, Groups, Rule};
    /// # use tollgate::executor::from_fn;
    /// # fn main() -> Result<(), tollgate::Error> { futures::executor::block_on(async {
    /// # let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
    /// let pipeline = Pipeline::<Delivery>::builder("shop")
    ///     # .stage(Stage::build("compile").run(ok())).stage(Stage::test("unit").run(ok()))
    ///     # .stage(Stage::stage("staging").run(ok())).stage(Stage::deploy("production").run(ok()))
    ///     .approvals(
    ///         ApprovalPolicy::new()
    ///             .rule(Rule::new("release-managers").group("release-managers").need(2))?
    ///             .rule(Rule::new("security").group("security"))?,
    ///     )
    ///     .directory(
    ///         Groups::new()
    ///             .group("release-managers", ["rita", "sam", "ines"])?
    ///             .group("security", ["ines", "omar"])?,
    ///     )
    ///     .build()?;
    /// # let built = pipeline.start("r1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
    /// # let artifact = built.artifact().clone();
    /// # let staged = built.test(&pipeline, &artifact).await?.stage(&pipeline, &artifact).await?;
    /// pipeline.vote("r1", "rita", Decision::Approve, "release notes checked").await?;
    /// let progress = pipeline.vote("r1", "ines", Decision::Approve, "scan is clean").await?;
    /// // ines counts once per rule, for both rules: she is in both groups.
    /// assert_eq!(
    ///     progress.to_string(),
    ///     "approved: release-managers 2 of 2 (ines, rita), security 1 of 1 (ines)"
    /// );
    /// assert!(pipeline.vote("r1", "dana", Decision::Approve, "mine").await.is_err()); // the author
    /// let approval = pipeline.issue("r1").await?;
    /// let approved = staged.approve(&pipeline, approval).await?;
    /// assert_eq!(approved.record().approval().unwrap().signoffs.len(), 2);
    /// # Ok(()) }) }
    /// ```
    pub async fn vote(
        &self,
        release: &str,
        person: &str,
        decision: Decision,
        reason: &str,
    ) -> Result<Progress> {
        // Votes are recorded under the one name the directory knows the person by.
        let person = Person::new(self.canonical(Person::new(person)?.as_str()))?;
        let mut tries = 0;
        loop {
            tries += 1;
            let facts = read_release(self.journal(), release).await?;
            let any = self.replay(release, &facts).await?.any;
            let request = awaiting_approval(&any)?;
            // The vote is written on the condition that its key (the release's votes) has not
            // moved on since it was read; a vote written meanwhile means reading again.
            let votes_head = facts
                .iter()
                .rev()
                .find(|(_, f)| matches!(f, Fact::Voted { .. }))
                .map_or(0, |(seq, _)| *seq);
            self.check_voter(&request, &person)?;
            let vote = Vote {
                person: person.clone(),
                decision,
                reason: reason.to_owned(),
                at: self.clock().now(),
            };
            let fact = Fact::Voted {
                release: any.id().clone(),
                request,
                vote: vote.clone(),
            };
            match self
                .journal()
                .append(vec![fact.to_entry().after(votes_head)])
                .await
            {
                Ok(seq) => {
                    // The ballot as read, and the vote just written: no second read.
                    let mut ballot = ballot_in(&any, &facts)?;
                    ballot.push(vote, seq);
                    return Ok(self.progress(&ballot));
                }
                Err(JournalError::Conflict { .. }) if tries < VOTE_TRIES => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The votes the journal holds on staged release `release`'s approval, as a ballot.
    pub async fn ballot(&self, release: &str) -> Result<Ballot> {
        let facts = read_release(self.journal(), release).await?;
        let any = self.replay(release, &facts).await?.any;
        awaiting_approval(&any)?;
        ballot_in(&any, &facts)
    }

    /// Issues the [`Approval`] capability for staged release `release` when the votes the
    /// journal holds meet every rule of the policy and nobody it admits rejects; otherwise
    /// says what is missing ([`ApprovalError::Incomplete`]) or who rejected
    /// ([`ApprovalError::Rejected`]).
    ///
    /// The approval expires when the earliest of the votes that made it would.
    pub async fn issue(&self, release: &str) -> Result<Approval> {
        let facts = read_release(self.journal(), release).await?;
        let any = self.replay(release, &facts).await?.any;
        let request = awaiting_approval(&any)?;
        let ballot = ballot_in(&any, &facts)?;
        let record = self.complete_ballot(&ballot, self.clock().now())?;
        Ok(Approval::new(request, record, self.issuer()))
    }

    /// The one-person shortcut: records `approver`'s yes to staged release `release`, with
    /// their `reason`, and issues the [`Approval`] capability if the votes now meet the
    /// policy (as with [`ApprovalPolicy::any_of`](crate::approval::ApprovalPolicy::any_of)).
    ///
    /// The pipeline signs off (issues an approval); the release is approved when it uses one
    /// ([`Release::approve`](crate::release::Release::approve)).
    pub async fn sign_off(&self, release: &str, approver: &str, reason: &str) -> Result<Approval> {
        self.vote(release, approver, Decision::Approve, reason)
            .await?;
        self.issue(release).await
    }
}

/// The approval request of `any`, if it is staged and so awaits one.
fn awaiting_approval(any: &AnyRelease) -> Result<crate::approval::ApprovalRequest> {
    if any.state() != StateName::Staged {
        return Err(RecordError::WrongState {
            release: any.id().clone(),
            expected: StateName::Staged,
            found: any.state(),
        }
        .into());
    }
    request_for(any).ok_or_else(|| {
        ApprovalError::Incomplete {
            release: any.id().clone(),
            waiting_for: "an artifact".to_owned(),
        }
        .into()
    })
}
