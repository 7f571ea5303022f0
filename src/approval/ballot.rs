//! The votes cast on one approval request: [`Decision`], [`Vote`], [`Ballot`].

use serde::{Deserialize, Serialize};

use super::ApprovalRequest;
use crate::id::Person;
use crate::time::Timestamp;

/// A person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Yes.
    Approve,
    /// "Changes requested": blocks the approval while it counts.
    Reject,
}

/// One person's answer to an approval request, with their reason and the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Who.
    pub person: Person,
    /// What they said.
    pub decision: Decision,
    /// Why, in their words.
    pub reason: String,
    /// When (on the pipeline's clock).
    pub at: Timestamp,
}

/// The votes cast on one approval request: what a bot stores between chat messages.
///
/// Votes are added with [`Pipeline::vote`](crate::pipeline::Pipeline::vote), which checks
/// the voter, and counted by [`Pipeline::progress`](crate::pipeline::Pipeline::progress) and
/// [`Pipeline::issue`](crate::pipeline::Pipeline::issue), which re-check every vote against
/// the policy, the directory and the clock: a ballot edited by hand gains nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    request: ApprovalRequest,
    votes: Vec<Vote>,
    /// The journal position of each vote (0 for votes not from a journal).
    #[serde(skip)]
    positions: Vec<u64>,
}

impl Ballot {
    /// An empty ballot for `request`.
    #[must_use]
    pub fn new(request: ApprovalRequest) -> Self {
        Ballot {
            request,
            votes: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// What is being decided.
    #[must_use]
    pub fn request(&self) -> &ApprovalRequest {
        &self.request
    }

    /// Every vote cast, oldest first (a person's latest vote is the one that counts).
    #[must_use]
    pub fn votes(&self) -> &[Vote] {
        &self.votes
    }

    /// The ballot as it was at `at`: the votes cast until then.
    #[must_use]
    pub fn until(&self, at: Timestamp) -> Ballot {
        self.filtered(|vote, _| vote.at <= at)
    }

    /// The ballot as the journal held it at position `position`: the votes written until
    /// then.
    #[must_use]
    pub fn through(&self, position: u64) -> Ballot {
        self.filtered(|_, at| at <= position)
    }

    /// The journal position of the latest vote (0 when there is none, or the votes are not
    /// from a journal).
    #[must_use]
    pub fn last_position(&self) -> u64 {
        self.positions.iter().copied().max().unwrap_or(0)
    }

    fn filtered(&self, keep: impl Fn(&Vote, u64) -> bool) -> Ballot {
        let (votes, positions) = self
            .votes
            .iter()
            .zip(self.positions.iter().copied().chain(std::iter::repeat(0)))
            .filter(|(vote, at)| keep(vote, *at))
            .map(|(vote, at)| (vote.clone(), at))
            .unzip();
        Ballot {
            request: self.request.clone(),
            votes,
            positions,
        }
    }

    /// Adds `vote`, written at journal position `position`.
    pub(crate) fn push(&mut self, vote: Vote, position: u64) {
        self.votes.push(vote);
        self.positions.push(position);
    }
}
