//! The human gate of continuous delivery: [`ApprovalRequest`] (what is asked),
//! [`ApprovalPolicy`] (who may answer) and [`Approval`] (the capability a yes produces).

use serde::{Deserialize, Serialize};

use crate::artifact::Digest;
use crate::environment::EnvironmentName;
use crate::error::{Error, Result};
use crate::name::{Person, ReleaseId};
use crate::release::Revision;
use crate::time::Timestamp;

/// A question for a person: may this release, with this artifact, go to this environment?
///
/// Made by [`Release::approval_request`](crate::release::Release::approval_request) on a
/// staged delivery release; plain data, so a bot can post it, store it and read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The pipeline the release belongs to.
    pub pipeline: String,
    /// The release.
    pub release: ReleaseId,
    /// The revision's id.
    pub revision: String,
    /// Who authored the revision (who may not approve it by default).
    pub author: Person,
    /// Who triggered the pipeline for it, when known (who may not approve it by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<Person>,
    /// The artifact's digest.
    pub digest: Digest,
    /// Where the release would go.
    pub environment: EnvironmentName,
}

/// Proof that a person allowed by the policy approved one release, with one artifact, for one
/// environment, until a deadline.
///
/// It cannot be built outside tollgate (no public constructor, no `Deserialize`, no `Clone`):
/// the only way to get one is
/// [`Pipeline::<Delivery>::approve`](crate::pipeline::Pipeline::approve), which checks the
/// policy. Approving a release consumes it, so it cannot be used twice.
///
/// ```compile_fail,E0451
/// // An approval cannot be forged with a struct literal: its fields are private.
/// let forged = tollgate::gate::Approval { request: todo!(), record: todo!() };
/// ```
#[derive(Debug, Serialize)]
pub struct Approval {
    request: ApprovalRequest,
    record: ApprovalRecord,
}

impl Approval {
    /// The capability for `request`, approved as `record` says. Only the policy calls this.
    pub(crate) fn new(request: ApprovalRequest, record: ApprovalRecord) -> Self {
        Approval { request, record }
    }

    /// Who approved.
    #[must_use]
    pub fn approver(&self) -> &Person {
        &self.record.approver
    }

    /// What was approved.
    #[must_use]
    pub fn request(&self) -> &ApprovalRequest {
        &self.request
    }

    /// The record this approval leaves in the release once used.
    #[must_use]
    pub fn record(&self) -> &ApprovalRecord {
        &self.record
    }

    /// Checks that the approval covers `release` of `pipeline` with `digest` for
    /// `environment` at time `now`, and turns it into its record.
    pub(crate) fn redeem(
        self,
        pipeline: &str,
        release: &ReleaseId,
        revision: &Revision,
        digest: &Digest,
        environment: &EnvironmentName,
        now: Timestamp,
    ) -> Result<ApprovalRecord> {
        let approver = self.record.approver.as_str();
        let mismatch = |field, approved: String, actual: String| Error::ApprovalMismatch {
            approver: approver.to_owned(),
            field,
            approved,
            actual,
        };
        if self.request.pipeline != pipeline {
            return Err(mismatch(
                "pipeline",
                self.request.pipeline.clone(),
                pipeline.to_owned(),
            ));
        }
        if &self.request.release != release {
            return Err(mismatch(
                "release",
                self.request.release.to_string(),
                release.to_string(),
            ));
        }
        if &self.record.digest != digest {
            return Err(mismatch(
                "artifact",
                self.record.digest.to_string(),
                digest.to_string(),
            ));
        }
        if &self.record.environment != environment {
            return Err(mismatch(
                "environment",
                self.record.environment.to_string(),
                environment.to_string(),
            ));
        }
        // The request is plain data a caller may have edited; the release knows its own
        // revision and author, so an approval issued for another author (to slip past the
        // self-approval rule) or another revision does not fit.
        if self.request.revision != revision.id {
            return Err(mismatch(
                "revision",
                self.request.revision.clone(),
                revision.id.clone(),
            ));
        }
        if self.request.author != revision.author {
            return Err(mismatch(
                "author",
                self.request.author.to_string(),
                revision.author.to_string(),
            ));
        }
        if now >= self.record.expires_at {
            return Err(Error::ApprovalExpired {
                approver: approver.to_owned(),
                expired_at: self.record.expires_at,
                now,
            });
        }
        Ok(self.record)
    }
}

/// The lasting record of an approval: who, why, when, for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Who approved.
    pub approver: Person,
    /// Why, in their words.
    pub reason: String,
    /// When.
    pub issued_at: Timestamp,
    /// When it would have stopped counting.
    pub expires_at: Timestamp,
    /// The artifact approved.
    pub digest: Digest,
    /// The environment approved.
    pub environment: EnvironmentName,
    /// Whether an approver authored the change (allowed only by an explicit relaxation).
    #[serde(default)]
    pub self_approved: bool,
    /// Whether an approver triggered the pipeline (allowed only by an explicit relaxation).
    #[serde(default)]
    pub triggerer_approved: bool,
    /// Everyone whose approval counted, with the rules they counted for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signoffs: Vec<Signoff>,
}

/// One person's approval as it counted towards a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signoff {
    /// Who.
    pub person: Person,
    /// Why, in their words.
    pub reason: String,
    /// When they approved.
    pub at: Timestamp,
    /// The rules their approval counted for.
    pub rules: Vec<String>,
    /// Whether they authored the change (a recorded relaxation).
    #[serde(default)]
    pub self_approved: bool,
    /// Whether they triggered the pipeline (a recorded relaxation).
    #[serde(default)]
    pub triggerer_approved: bool,
}
