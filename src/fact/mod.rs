//! The facts about releases that a [`Journal`] holds, and what can be wrong with them.
//!
//! Everything that happens to a release is a [`Fact`]: it was started (by which pipeline, of
//! which definition, from which revision), a stage of a step settled (as the step goes on,
//! so a crash keeps what was done), a step ran (its whole report), gates gave their
//! verdicts on a move, a person voted, an approval was used, the release moved, a move was
//! refused. Facts are appended to the journal under the release's id, chained under the
//! host's key; a typed release is restored only by replaying them through the pipeline, which
//! re-derives every state from them ([`FactError`] says what did not fit).
//!
//! A pipeline's [`Fingerprint`] is recorded when a release starts, so a release is only ever
//! moved or restored by a pipeline with the same definition.

use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalRequest, Vote};
use crate::artifact::ArtifactRef;
use crate::engine::{StageReport, StepReport};
use crate::environment::Environment;
use crate::id::{PipelineName, ReleaseId};
use crate::journal::{
    Entry, Journal, JournalError, Seq, Stored, check_key_chain, same_entry, walk_vouched,
};
use crate::lifecycle::{ModeKind, Move, StateName, Step};
use crate::record::{ApprovalRecord, GateRecord, Revision};
use crate::time::Timestamp;

/// One thing that happened to a release, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fact {
    /// A pipeline started the release.
    Started {
        /// The release.
        release: ReleaseId,
        /// The pipeline that started it.
        pipeline: PipelineName,
        /// That pipeline's definition.
        fingerprint: Fingerprint,
        /// Its mode.
        mode: ModeKind,
        /// The revision it is built from.
        revision: Revision,
        /// Where it is staged.
        staging: Environment,
        /// Where it is headed.
        target: Environment,
        /// When (the pipeline clock).
        at: Timestamp,
    },
    /// A stage of the step of a claimed move settled (succeeded, failed, timed out or was
    /// cancelled), written while the step goes on: the step's progress, which a copy of the
    /// release that takes the move over after a crash carries on from (its succeeded stages
    /// are not run again). The move's [`StepRan`](Fact::StepRan) still holds every stage.
    StageFinished {
        /// The release.
        release: ReleaseId,
        /// The step the stage belongs to.
        step: Step,
        /// The journal position of the claim (the [`Gates`](Fact::Gates) fact) that opened
        /// this run of the move: part of each attempt's idempotency key.
        claim: Seq,
        /// How the stage ended.
        report: StageReport,
        /// The idempotency key of each attempt, oldest first (see
        /// [`StageContext::idempotency_key`](crate::executor::StageContext::idempotency_key)).
        keys: Vec<String>,
    },
    /// A step of the release ran (whether or not it succeeded).
    StepRan {
        /// The release.
        release: ReleaseId,
        /// What happened, stage by stage.
        report: StepReport,
    },
    /// The gates on a move gave their verdicts.
    Gates {
        /// The release.
        release: ReleaseId,
        /// The move they guarded.
        #[serde(rename = "move")]
        mv: Move,
        /// Every gate's verdict.
        verdicts: Vec<GateRecord>,
        /// When they were asked: the copy of the release that wrote this fact claims the
        /// move from then on, for the pipeline's claim lease, unless it concludes it first.
        at: Timestamp,
    },
    /// A person voted on the release's approval.
    Voted {
        /// The release.
        release: ReleaseId,
        /// What they were asked, as the pipeline derived it from the release.
        request: ApprovalRequest,
        /// Their vote, stamped with the pipeline clock's time.
        vote: Vote,
    },
    /// An approval was used to move the release to Approved.
    ApprovalUsed {
        /// The release.
        release: ReleaseId,
        /// The approval, as it stays in the record.
        record: ApprovalRecord,
        /// When it was used.
        at: Timestamp,
    },
    /// The release moved to a new state.
    Moved {
        /// The release.
        release: ReleaseId,
        /// The state it reached.
        to: StateName,
        /// The artifact the move fixed (the build move only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artifact: Option<ArtifactRef>,
        /// When.
        at: Timestamp,
    },
    /// A move was tried and did not happen.
    Refused {
        /// The release.
        release: ReleaseId,
        /// The move.
        #[serde(rename = "move")]
        mv: Move,
        /// Why, as the error said.
        reason: String,
        /// When.
        at: Timestamp,
    },
}

impl Fact {
    /// The release the fact is about.
    #[must_use]
    pub fn release(&self) -> &ReleaseId {
        match self {
            Fact::Started { release, .. }
            | Fact::StageFinished { release, .. }
            | Fact::StepRan { release, .. }
            | Fact::Gates { release, .. }
            | Fact::Voted { release, .. }
            | Fact::ApprovalUsed { release, .. }
            | Fact::Moved { release, .. }
            | Fact::Refused { release, .. } => release,
        }
    }

    /// The journal key the fact is filed under: its release's id for everything that moves
    /// the release, and [`votes_key`] of it for votes, so that votes (which may arrive from
    /// anyone at any time) never make a copy of the release look stale.
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Fact::Voted { release, .. } => votes_key(release.as_str()),
            other => other.release().as_str().to_owned(),
        }
    }

    /// The fact as a journal entry, filed under [`key`](Fact::key).
    ///
    /// # Panics
    ///
    /// Never: every fact is plain data that serializes.
    #[must_use]
    pub fn to_entry(&self) -> Entry {
        let payload = serde_json::to_vec(self)
            .unwrap_or_else(|e| unreachable!("a fact is plain data that serializes: {e}"));
        Entry::new(self.key(), payload)
    }

    /// Reads a fact from a stored entry.
    pub fn from_stored(stored: &Stored) -> Result<Self, FactError> {
        let fact: Fact =
            serde_json::from_slice(&stored.payload).map_err(|e| FactError::Malformed {
                seq: stored.seq,
                reason: e.to_string(),
            })?;
        if fact.key() != stored.key {
            return Err(FactError::Malformed {
                seq: stored.seq,
                reason: format!(
                    "a fact about `{}` is filed under `{}`",
                    fact.release(),
                    stored.key
                ),
            });
        }
        Ok(fact)
    }
}

/// The journal key of a release's votes: its id and a unit separator (a control character,
/// which no id may hold) before `votes`.
#[must_use]
pub fn votes_key(release: &str) -> String {
    format!("{release}\u{1f}votes")
}

/// The facts of one release (its moves and its votes), read by their keys from `journal`,
/// in journal order, with their chains checked: each key's own (each entry filed under the
/// key asked for, each MAC, and each back-link to the key's previous entry, so that none of
/// its entries is missing, added or moved), and the whole journal's from the release's last
/// entries to the head, so that an entry of the release after its last one as read (a
/// deleted rejection, or one the key index leaves out) is found too.
///
/// The walk starts at the earliest of the keys' last entries, not at the release's first:
/// every entry of a key before its last one is vouched for by the back-links of the entries
/// after it (each MAC covers the position of the key's previous entry). A key read as empty
/// has no last entry to vouch for it: votes are cast only on a staged release, so when the
/// release was staged and no vote is read, the walk starts at the move to Staged instead.
/// The cost is the release's own entries plus the journal's entries since the release's
/// last fact (or since it was staged); the release's own entries met again on the walk are
/// compared with the copies read by key (whose MACs were checked) instead of having their
/// MACs computed again.
pub async fn read_release(
    journal: &(impl Journal + ?Sized),
    release: &str,
) -> Result<Vec<(Seq, Fact)>, FactError> {
    // Another process may append to the release while it is read (a replica on a shared
    // journal): its entries past the head seen here are news, not a gap in the key index.
    let (head, _) = journal.head().await?;
    let moves = read_key_checked(journal, release).await?;
    let votes_key = votes_key(release);
    let votes = read_key_checked(journal, &votes_key).await?;
    let mut facts = moves
        .iter()
        .chain(&votes)
        .map(|s| Fact::from_stored(s).map(|f| (s.seq, f)))
        .collect::<Result<Vec<_>, _>>()?;
    let staged = facts.iter().find_map(|(seq, fact)| {
        matches!(
            fact,
            Fact::Moved {
                to: StateName::Staged,
                ..
            }
        )
        .then_some(*seq)
    });
    let votes_from = votes.last().map(|s| s.seq).or(staged);
    if let Some(from) = moves
        .last()
        .map(|s| s.seq)
        .into_iter()
        .chain(votes_from)
        .min()
    {
        let ours: std::collections::BTreeMap<Seq, &Stored> = moves
            .iter()
            .chain(&votes)
            .filter(|s| s.seq >= from)
            .map(|s| (s.seq, s))
            .collect();
        check_since(
            journal,
            from,
            |stored| stored.seq <= head && (stored.key == release || stored.key == votes_key),
            &ours,
        )
        .await?;
    }
    facts.sort_by_key(|(seq, _)| *seq);
    Ok(facts)
}

/// The entries filed under any of `keys` up to the journal's head as this call finds it, in
/// journal order: each key's own chain checked ([`check_key_chain`], and each entry filed
/// under the key asked for), and the whole journal's chain walked from the first of them to
/// the head, so that an entry of one of the keys that the key index leaves out, adds or
/// changes is refused. Entries appended after the head was read (another process on a shared
/// journal) are left for a later read, not taken for a gap.
pub async fn read_keys_checked(
    journal: &(impl Journal + ?Sized),
    keys: &[String],
) -> Result<Vec<Stored>, FactError> {
    let (head, _) = journal.head().await?;
    let mut all = Vec::new();
    for key in keys {
        let entries = read_key_checked(journal, key).await?;
        all.extend(entries.into_iter().filter(|s| s.seq <= head));
    }
    all.sort_by_key(|s| s.seq);
    if let Some(first) = all.first().map(|s| s.seq) {
        let ours: std::collections::BTreeMap<Seq, &Stored> =
            all.iter().map(|s| (s.seq, s)).collect();
        check_since(
            journal,
            first,
            |stored| stored.seq <= head && keys.contains(&stored.key),
            &ours,
        )
        .await?;
    }
    Ok(all)
}

/// The entries of `key`, read through the journal's key index, each filed under `key` and
/// chained to the one before it ([`check_key_chain`]).
async fn read_key_checked(
    journal: &(impl Journal + ?Sized),
    key: &str,
) -> Result<Vec<Stored>, FactError> {
    let entries = journal.read_key(key).await?;
    if let Some(foreign) = entries.iter().find(|s| s.key != key) {
        return Err(JournalError::Corrupt {
            seq: foreign.seq,
            offset: foreign.offset,
            reason: format!(
                "the key index gives it for `{key}`, but it is filed under `{}`",
                foreign.key
            ),
        }
        .into());
    }
    check_key_chain(journal.key(), &entries)?;
    Ok(entries)
}

/// Walks the journal's chain from entry `first` to the head: each entry follows the one
/// before it and carries its own MAC (computed for the others' entries; for one of
/// `expected`, whose MACs were checked, the copy met must be the same entry), and the
/// entries `is_ours` picks are exactly the positions `expected` (entries read by key past
/// the ones it picks count as seen).
async fn check_since(
    journal: &(impl Journal + ?Sized),
    first: Seq,
    is_ours: impl Fn(&Stored) -> bool,
    expected: &std::collections::BTreeMap<Seq, &Stored>,
) -> Result<(), FactError> {
    let mut seen = 0;
    let vouched = |stored: &Stored| {
        expected
            .get(&stored.seq)
            .is_some_and(|known| same_entry(known, stored))
    };
    let (head, _) = walk_vouched(journal, first, None, vouched, |stored| {
        match expected.get(&stored.seq) {
            Some(known) if !same_entry(known, stored) => {
                return Err("the key index gives another entry at this position".to_owned());
            }
            Some(_) => seen += 1,
            None if is_ours(stored) => return Err("the key index leaves it out".to_owned()),
            None => {}
        }
        Ok(())
    })
    .await?;
    if seen == expected.len() {
        Ok(())
    } else {
        Err(JournalError::Corrupt {
            seq: head + 1,
            offset: 0,
            reason: "the key index names entries the journal does not hold".to_owned(),
        }
        .into())
    }
}

/// What a pipeline is, as a digest per part of its definition: two pipelines with the same
/// name but another graph, other gates or other approval policies have different
/// fingerprints, and one does not move or restore the other's releases.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The stage graph (every stage spec) and each stage's executor, by name.
    pub graph: String,
    /// The gates, by move and environment, by name.
    pub gates: String,
    /// The approval policies and their environments.
    pub approvals: String,
    /// The staging and production environments.
    pub environments: String,
    /// The mode.
    pub mode: ModeKind,
}

impl Fingerprint {
    /// The hex SHA-256 of `bytes`, the form of each part.
    #[must_use]
    pub fn digest(bytes: &[u8]) -> String {
        crate::artifact::Digest::sha256(bytes).hex().to_owned()
    }

    /// The parts in which `self` and `other` differ, by name.
    #[must_use]
    pub fn differences(&self, other: &Fingerprint) -> Vec<&'static str> {
        let mut parts = Vec::new();
        if self.graph != other.graph {
            parts.push("graph");
        }
        if self.gates != other.gates {
            parts.push("gates");
        }
        if self.approvals != other.approvals {
            parts.push("approval policies");
        }
        if self.environments != other.environments {
            parts.push("environments");
        }
        if self.mode != other.mode {
            parts.push("mode");
        }
        parts
    }
}

/// A journal's facts could not be read, or do not add up to a release.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FactError {
    /// The journal failed, or its chain is broken.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// An entry is not a fact.
    #[error("journal entry {seq} is not a fact: {reason}")]
    Malformed {
        /// The entry.
        seq: Seq,
        /// What is wrong.
        reason: String,
    },
    /// The journal holds no release with this id.
    #[error("the journal holds no release `{release}`")]
    UnknownRelease {
        /// The id asked for.
        release: String,
    },
    /// The release was started by another pipeline, or by this one with another definition.
    #[error(
        "release `{release}` belongs to pipeline `{expected}` with another definition ({}), not to `{found}`",
        .differences.join(", ")
    )]
    ForeignPipeline {
        /// The release.
        release: ReleaseId,
        /// The pipeline that started it.
        expected: PipelineName,
        /// The pipeline asked to restore or move it.
        found: PipelineName,
        /// The parts of the definition that differ (`name` when the names do).
        differences: Vec<&'static str>,
    },
    /// Another copy of the release (another process, another replica) claimed its next move
    /// and has not concluded it: it may be running the move's stages now. The move is open to
    /// others once the claim's lease is over (the claiming copy crashed).
    #[error(
        "release `{release}` is being moved ({mv}) by another copy since {since}; it may take the move over at {until}"
    )]
    Claimed {
        /// The release.
        release: ReleaseId,
        /// The move claimed.
        mv: Move,
        /// Since when.
        since: Timestamp,
        /// When the claim's lease ends.
        until: Timestamp,
    },
    /// A fact does not follow from the ones before it: the history is not one the pipeline
    /// could have written.
    #[error("release `{release}` cannot be restored: fact {seq} {reason}")]
    Inconsistent {
        /// The release.
        release: ReleaseId,
        /// The fact that does not fit.
        seq: Seq,
        /// Why.
        reason: String,
    },
}
