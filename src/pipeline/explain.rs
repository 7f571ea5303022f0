//! [`Explanation`]: for a parked release, every gate on its next move, what is open, what
//! blocks and what would open it. What a bot posts in chat and what a student reads.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::approval::Progress;
use crate::id::{EnvironmentName, ReleaseId};
use crate::lifecycle::{ModeKind, Move, StateName, Verdict};
use crate::time::Timestamp;

/// Why a release can or cannot take its next move, gate by gate. Made by
/// [`Pipeline::explain`](crate::pipeline::Pipeline::explain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The release.
    pub release: ReleaseId,
    /// Its state.
    pub state: StateName,
    /// Its mode.
    pub mode: ModeKind,
    /// The move it would take next; `None` once deployed.
    pub next: Option<Move>,
    /// The environment that move aims at.
    pub environment: Option<EnvironmentName>,
    /// Every gate on that move, with its verdict now.
    pub gates: Vec<GateVerdict>,
    /// For a staged delivery release: the human approval it needs.
    pub approval: Option<ApprovalNeed>,
    /// When the gates were asked.
    pub at: Timestamp,
}

/// One gate's verdict in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateVerdict {
    /// The gate's name.
    pub gate: String,
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The human approval a staged delivery release still needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalNeed {
    /// The policy's rules, as text (`release-managers: 2 of @release-managers`).
    pub rules: Vec<String>,
    /// How far the ballot has come, when one was given.
    pub progress: Option<Progress>,
}

impl ApprovalNeed {
    /// Whether the ballot meets the policy.
    #[must_use]
    pub fn is_met(&self) -> bool {
        self.progress.as_ref().is_some_and(Progress::is_met)
    }
}

impl Explanation {
    /// Whether the next move would be allowed now: every gate open and, where a person must
    /// approve, the policy met.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.next.is_some()
            && self.gates.iter().all(|g| g.verdict.is_open())
            && self.approval.as_ref().is_none_or(ApprovalNeed::is_met)
    }

    /// When to try again without waiting for a person: the earliest time a pending gate said
    /// it would decide on its own (a soak ending, a freeze lifting), if any.
    #[must_use]
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.gates
            .iter()
            .filter_map(|g| match g.verdict {
                Verdict::Pending { until, .. } => until,
                _ => None,
            })
            .min()
    }

    /// The gates that block, closed ones first.
    pub fn blocking(&self) -> impl Iterator<Item = &GateVerdict> + '_ {
        let closed = self
            .gates
            .iter()
            .filter(|g| matches!(g.verdict, Verdict::Closed { .. }));
        let pending = self
            .gates
            .iter()
            .filter(|g| matches!(g.verdict, Verdict::Pending { .. }));
        closed.chain(pending)
    }
}

impl fmt::Display for Explanation {
    /// A few lines a person can read:
    ///
    /// ```text
    /// release shop-1.4.0 (staged, delivery): next move approve to production
    ///   open    soak 30m
    ///   BLOCKS  change-windows: pending until @1795399200000ms: the end of deny window ...
    ///   BLOCKS  approval: waiting for security 0 of 1 (rules: release-managers: 2 of @release-managers; security: 1 of @security)
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "release {} ({}, {})",
            self.release, self.state, self.mode
        )?;
        let Some(next) = self.next else {
            return f.write_str(": deployed, no move left");
        };
        write!(f, ": next move {next}")?;
        if let Some(environment) = &self.environment {
            write!(f, " to {environment}")?;
        }
        if self.gates.is_empty() && self.approval.is_none() {
            f.write_str("\n  nothing guards it")?;
        }
        for gate in &self.gates {
            match &gate.verdict {
                Verdict::Open => write!(f, "\n  open    {}", gate.gate)?,
                other if other.is_open() => write!(f, "\n  open    {}: {other}", gate.gate)?,
                other => write!(f, "\n  BLOCKS  {}: {other}", gate.gate)?,
            }
        }
        if let Some(need) = &self.approval {
            let label = if need.is_met() { "open   " } else { "BLOCKS " };
            match &need.progress {
                Some(progress) => write!(f, "\n  {label} approval: {progress}")?,
                None => write!(f, "\n  {label} approval: no votes yet")?,
            }
            if !need.is_met() {
                write!(f, " (rules: {})", need.rules.join("; "))?;
            }
        }
        Ok(())
    }
}
