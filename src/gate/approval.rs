//! The human gate of continuous delivery: [`ApprovalRequest`] (what is asked),
//! [`ApprovalPolicy`] (who may answer) and [`Approval`] (the capability a yes produces).

use std::collections::BTreeSet;
use std::time::Duration;

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
    /// The artifact's digest.
    pub digest: Digest,
    /// Where the release would go.
    pub environment: EnvironmentName,
}

/// Who may approve releases of a delivery pipeline, and for how long an approval counts.
///
/// Any one listed person approves; the author of the change may not approve it unless
/// [`ApprovalPolicy::allow_self_approval`] says so.
///
/// ```
/// use std::time::Duration;
/// use tollgate::gate::ApprovalPolicy;
///
/// let policy = ApprovalPolicy::any_of(["alice", "bob"])?.valid_for(Duration::from_secs(3600));
/// assert!(policy.may_approve("alice"));
/// assert!(!policy.may_approve("mallory"));
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    approvers: BTreeSet<Person>,
    #[serde(with = "millis")]
    valid_for: Duration,
    #[serde(default)]
    allow_self_approval: bool,
}

impl ApprovalPolicy {
    /// How long an approval counts unless told otherwise: 24 hours.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A policy under which any one of `people` may approve.
    pub fn any_of<I, P>(people: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let approvers = people
            .into_iter()
            .map(Person::new)
            .collect::<Result<BTreeSet<_>>>()?;
        Ok(ApprovalPolicy {
            approvers,
            valid_for: Self::DEFAULT_VALIDITY,
            allow_self_approval: false,
        })
    }

    /// Sets how long an approval counts after it is given.
    #[must_use]
    pub fn valid_for(mut self, duration: Duration) -> Self {
        self.valid_for = duration;
        self
    }

    /// Lets the author of a change approve it. Off by default; the relaxation is recorded
    /// with every approval it allows.
    #[must_use]
    pub fn allow_self_approval(mut self, allow: bool) -> Self {
        self.allow_self_approval = allow;
        self
    }

    /// Whether `person` is among the approvers.
    #[must_use]
    pub fn may_approve(&self, person: &str) -> bool {
        self.approvers.contains(person)
    }

    /// The approvers.
    pub fn approvers(&self) -> impl Iterator<Item = &Person> + '_ {
        self.approvers.iter()
    }

    /// Checks `approver` against the policy and, if allowed, issues the capability.
    pub(crate) fn issue(
        &self,
        pipeline: &str,
        request: &ApprovalRequest,
        approver: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Approval> {
        let approver = Person::new(approver)?;
        if request.pipeline != pipeline {
            return Err(Error::ApprovalMismatch {
                approver: approver.into(),
                field: "pipeline",
                approved: request.pipeline.clone(),
                actual: pipeline.to_owned(),
            });
        }
        if !self.approvers.contains(&approver) {
            return Err(Error::NotAnApprover {
                person: approver.into(),
                pipeline: pipeline.to_owned(),
            });
        }
        let self_approved = approver == request.author;
        if self_approved && !self.allow_self_approval {
            return Err(Error::SelfApproval {
                person: approver.into(),
                revision: request.revision.clone(),
            });
        }
        Ok(Approval {
            request: request.clone(),
            record: ApprovalRecord {
                approver,
                reason: reason.to_owned(),
                issued_at: now,
                expires_at: now.saturating_add(self.valid_for),
                digest: request.digest.clone(),
                environment: request.environment.clone(),
                self_approved,
            },
        })
    }
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
    /// Whether the approver authored the change (allowed only by an explicit relaxation).
    #[serde(default)]
    pub self_approved: bool,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(crate::time::duration_millis(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
