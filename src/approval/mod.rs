//! The heart of continuous delivery, the human decision: an [`ApprovalRequest`] (what is
//! asked), an [`ApprovalPolicy`] of [`Rule`]s (who may answer, how many, for how long), the
//! [`Directory`] that resolves groups, the [`Ballot`] that collects [`Vote`]s and the
//! [`Progress`] it has made, and [`Approval`], the capability a met policy produces.
//!
//! The policy is the only thing that issues the capability, and it re-checks every vote when
//! it does: who voted, whether they may (directly or through a group, as the directory says
//! now), whether they wrote or triggered the change, and whether their vote has expired. A
//! ballot is plain data a bot can store; it proves nothing by itself.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`ApprovalRequest`], the [`Approval`] capability, [`ApprovalError`] |
//! | `directory.rs` | [`Directory`], [`Groups`], [`NoGroups`] |
//! | `rule.rs` | [`Rule`], [`Approver`] |
//! | `policy.rs` | [`ApprovalPolicy`]: checks voters, counts ballots, completes them |
//! | `ballot.rs` | [`Ballot`], [`Vote`], [`Decision`] |
//! | `progress.rs` | [`Progress`], [`RuleProgress`] |

mod ballot;
mod directory;
mod policy;
mod progress;
mod rule;

use serde::{Deserialize, Serialize};

use crate::artifact::Digest;
use crate::id::{EnvironmentName, IdError, Person, PipelineName, ReleaseId};
use crate::record::ApprovalRecord;
use crate::time::Timestamp;

pub use ballot::{Ballot, Decision, Vote};
pub use directory::{Directory, Groups, NoGroups};
pub use policy::ApprovalPolicy;
pub(crate) use policy::first_difference;
pub use progress::{Progress, RuleProgress};
pub use rule::{Approver, Rule};

/// Why a vote was refused, a ballot did not yield an approval, an approval did not fit the
/// release it was used on, or a policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// An approval (or a ballot) was used on something it does not approve.
    #[error(
        "approval by `{}` is for {field} `{approved}`, not `{actual}`",
        who(.approver.as_ref())
    )]
    Mismatch {
        /// The person who approved (for a ballot, its latest voter; `None` if nobody voted).
        approver: Option<Person>,
        /// Which binding differs: `pipeline`, `release`, `revision`, `author`, `artifact` or
        /// `environment`.
        field: &'static str,
        /// What the approval names.
        approved: String,
        /// What the release it was used on has.
        actual: String,
    },
    /// An approval expired before it was used.
    #[error("approval by `{approver}` expired at {expired_at} (now {now})")]
    Expired {
        /// The person who approved.
        approver: Person,
        /// When it stopped counting.
        expired_at: Timestamp,
        /// The clock's time when it was used.
        now: Timestamp,
    },
    /// A person not allowed by the approval policy tried to approve.
    #[error("`{person}` may not approve releases of pipeline `{pipeline}`")]
    NotAnApprover {
        /// The person.
        person: Person,
        /// The pipeline.
        pipeline: PipelineName,
    },
    /// The author of a change tried to approve it.
    #[error("`{person}` authored revision `{revision}` and may not approve it")]
    SelfApproval {
        /// The person.
        person: Person,
        /// The revision they authored.
        revision: String,
    },
    /// Whoever triggered the pipeline tried to approve its release.
    #[error("`{person}` triggered the pipeline for release `{release}` and may not approve it")]
    TriggererApproval {
        /// The person.
        person: Person,
        /// The release.
        release: ReleaseId,
    },
    /// Someone the policy admits rejected the release ("changes requested").
    #[error("approval rejected by `{person}`: {reason}")]
    Rejected {
        /// Who rejected it.
        person: Person,
        /// Why.
        reason: String,
    },
    /// The policy's rules are not all met yet.
    #[error("release `{release}` is not approved yet: {waiting_for}")]
    Incomplete {
        /// The release.
        release: ReleaseId,
        /// What the policy still waits for, rule by rule.
        waiting_for: String,
    },
    /// A rule or policy is built with settings that can never make sense (for example 3 of
    /// 2 people).
    #[error("invalid approval rule `{rule}`: {reason}")]
    InvalidRule {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// A name (of a person, a group member) is malformed.
    #[error(transparent)]
    Id(#[from] IdError),
}

type Result<T, E = ApprovalError> = std::result::Result<T, E>;

/// Shows an optional approver, `nobody` for none.
fn who(approver: Option<&Person>) -> &str {
    approver.map_or("nobody", Person::as_str)
}

/// A question for a person: may this release, with this artifact, go to this environment?
///
/// Made by [`Release::approval_request`](crate::release::Release::approval_request) on a
/// staged delivery release; plain data, so a bot can post it, store it and read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The pipeline the release belongs to.
    pub pipeline: PipelineName,
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
/// [`Pipeline::issue`](crate::pipeline::Pipeline::issue) (or its one-person shortcut `sign_off`), which checks the
/// policy. Approving a release consumes it, so it cannot be used twice.
///
/// ```compile_fail,E0451
/// // An approval cannot be forged with a struct literal: its fields are private.
/// let forged = tollgate::approval::Approval { request: todo!(), record: todo!() };
/// ```
#[derive(Debug, Serialize)]
pub struct Approval {
    request: ApprovalRequest,
    record: ApprovalRecord,
    /// Who issued it: a digest of the issuing pipeline's definition, so that a pipeline that
    /// is only named like this one cannot issue approvals this one accepts.
    issuer: String,
}

/// Never implemented: the bound that keeps [`Approval`] from being deserialized, there only to
/// say so in the compiler's words when someone tries.
#[diagnostic::on_unimplemented(
    message = "an `Approval` cannot be deserialized: it is a capability, issued only by a pipeline that checked its policy",
    label = "stored data is never trusted as an approval",
    note = "votes are facts in the pipeline's journal: after a restart, call `pipeline.issue(release_id)` again; an `ApprovalRecord` (what was approved) can be stored and read, but approves nothing"
)]
pub trait IssuedNotDeserialized<'de> {}

/// Refuses at compile time: the bound [`IssuedNotDeserialized`] holds for no type, so
/// `serde_json::from_str::<Approval>(..)` fails to compile with a message that names the fix.
impl<'de> Deserialize<'de> for Approval
where
    Approval: IssuedNotDeserialized<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "an approval cannot be deserialized: it is issued by a pipeline",
        ))
    }
}

impl Approval {
    /// The capability for `request`, approved as `record` says, issued by the pipeline whose
    /// definition digests to `issuer`. Only a pipeline calls this, after its policy.
    pub(crate) fn new(request: ApprovalRequest, record: ApprovalRecord, issuer: String) -> Self {
        Approval {
            request,
            record,
            issuer,
        }
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

    /// Checks that the approval was issued by `issuer` for exactly `request` (the release as
    /// it is: pipeline, id, revision, author, triggerer, digest, environment), and has not
    /// expired at `now`; turns it into its record.
    pub(crate) fn redeem(
        self,
        issuer: &str,
        request: &ApprovalRequest,
        now: Timestamp,
    ) -> Result<ApprovalRecord> {
        let approver = &self.record.approver;
        let mismatch = |field, approved: String, actual: String| ApprovalError::Mismatch {
            approver: Some(approver.clone()),
            field,
            approved,
            actual,
        };
        let ours = &self.request;
        let bindings = [
            (
                "pipeline",
                ours.pipeline.to_string(),
                request.pipeline.to_string(),
            ),
            (
                "release",
                ours.release.to_string(),
                request.release.to_string(),
            ),
            ("revision", ours.revision.clone(), request.revision.clone()),
            (
                "author",
                ours.author.to_string(),
                request.author.to_string(),
            ),
            (
                "triggerer",
                ours.triggered_by
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                request
                    .triggered_by
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            (
                "artifact",
                self.record.digest.to_string(),
                request.digest.to_string(),
            ),
            (
                "artifact",
                ours.digest.to_string(),
                request.digest.to_string(),
            ),
            (
                "environment",
                self.record.environment.to_string(),
                request.environment.to_string(),
            ),
            (
                "environment",
                ours.environment.to_string(),
                request.environment.to_string(),
            ),
            ("issuer", self.issuer.clone(), issuer.to_owned()),
        ];
        for (field, approved, actual) in bindings {
            if approved != actual {
                return Err(mismatch(field, approved, actual));
            }
        }
        if now >= self.record.expires_at {
            return Err(ApprovalError::Expired {
                approver: approver.clone(),
                expired_at: self.record.expires_at,
                now,
            });
        }
        Ok(self.record)
    }
}
