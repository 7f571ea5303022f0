//! What the people and gates decided about a release, as it stays in its record:
//! [`GateRecord`] (one gate's verdict on one move) and [`ApprovalRecord`] with its
//! [`Signoff`]s (who approved, why, when, for which artifact and environment).

use serde::{Deserialize, Serialize};

use crate::artifact::Digest;
use crate::id::{EnvironmentName, Person};
use crate::lifecycle::{Move, Verdict};
use crate::time::Timestamp;

/// One gate's verdict on one move, as recorded in the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    /// The gate's name.
    pub gate: String,
    /// The move it guarded.
    #[serde(rename = "move")]
    pub mv: Move,
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// When it was given.
    pub at: Timestamp,
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
    /// The journal position of the last vote counted when it was issued: the approval
    /// follows from the votes up to there (0 for votes not from a journal).
    #[serde(default)]
    pub votes_through: u64,
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
