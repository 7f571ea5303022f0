//! What a reconcile pass reports: a [`ReconcileEvent`] for every environment that is not in
//! sync (what differs, and what the pass did about it), gathered in a [`Pass`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::source::SourceRevision;
use crate::artifact::Digest;
use crate::environment::EnvironmentName;
use crate::fleet::Actor;
use crate::id::ReleaseId;
use crate::journal::Seq;
use crate::lifecycle::Verdict;
use crate::rollout::{TargetError, Version, Weight};
use crate::time::Timestamp;

/// One pass over every environment the desired state names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pass {
    /// The desired state's revision the pass compared with.
    pub revision: SourceRevision,
    /// When it started (the pipeline clock).
    pub at: Timestamp,
    /// How many environments the desired state names.
    pub environments: usize,
    /// How many of them were in sync (nothing to report).
    pub in_sync: usize,
    /// One event per environment that was not, in the desired state's order.
    pub events: Vec<ReconcileEvent>,
}

impl Pass {
    /// Whether every environment was in sync.
    #[must_use]
    pub fn converged(&self) -> bool {
        self.events.is_empty()
    }

    /// The deployments the pass asked the fleet for (converged or failed), in order.
    pub fn actions(&self) -> impl Iterator<Item = (&EnvironmentName, &Action)> + '_ {
        self.events.iter().filter_map(|e| match &e.outcome {
            Outcome::Converged { action, .. }
            | Outcome::Failed { action, .. }
            | Outcome::Queued { action, .. } => Some((&e.environment, action)),
            _ => None,
        })
    }
}

/// One environment that was not in sync in a pass: which, what differs, what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileEvent {
    /// The environment.
    pub environment: EnvironmentName,
    /// The desired state's revision.
    pub revision: SourceRevision,
    /// When (the pass's start).
    pub at: Timestamp,
    /// What differs (empty when the pass could not tell: the target could not be observed,
    /// the desired release is refused).
    pub differences: Vec<Difference>,
    /// What the pass did about it.
    pub outcome: Outcome,
}

/// One difference between the desired state, the fleet's ledger and what the target runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "differs")]
pub enum Difference {
    /// The desired state names another release than the one the fleet has live: a change
    /// of desired state (a commit), to be deployed (or rolled back to) through the fleet.
    Release {
        /// What the desired state names.
        desired: Version,
        /// What the fleet's ledger has live (none: nothing deployed yet).
        live: Option<Version>,
    },
    /// The target runs another version than the fleet's ledger has live: drift, a change
    /// made on the target by hand (or a deployment the fleet did not make).
    Stable {
        /// What the ledger has live.
        expected: Option<Version>,
        /// What the target runs.
        observed: Option<Version>,
    },
    /// A candidate runs beside the stable version though no deployment is under way.
    Candidate {
        /// The candidate.
        observed: Version,
        /// Its share of the traffic.
        weight: Weight,
    },
    /// A configuration value differs from the desired state's.
    Config {
        /// The key.
        key: String,
        /// The desired value (none: the key should not be set).
        desired: Option<String>,
        /// The value the target runs with (none: not set).
        observed: Option<String>,
    },
}

/// A deployment a pass asked the fleet for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// The desired release is newer than the live one (or nothing is live): a promotion.
    Promote {
        /// The release.
        release: ReleaseId,
    },
    /// The desired release is older than the live one (a `git revert`): a recorded rollback
    /// by the reconciler (`DeployKind::Rollback` in the ledger, the revision in its reason).
    Rollback {
        /// The release rolled back.
        from: ReleaseId,
        /// The release put back.
        to: ReleaseId,
    },
    /// The live release deployed again, unchanged, to undo drift (`DeployKind::Redeploy` in
    /// the ledger).
    Repair {
        /// The live release.
        release: ReleaseId,
    },
}

/// What a pass did about an environment that was not in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The fleet ran the deployment and it went live.
    Converged {
        /// What was deployed.
        action: Action,
        /// The fleet's ticket.
        ticket: Seq,
    },
    /// The fleet queued the deployment, and another process holds the environment (it runs
    /// what waits).
    Queued {
        /// What was asked.
        action: Action,
        /// The fleet's ticket.
        ticket: Seq,
    },
    /// The fleet ran the deployment and its deploy stages failed; what was live stays live,
    /// and the next pass tries again.
    Failed {
        /// What was asked.
        action: Action,
        /// The fleet's ticket.
        ticket: Seq,
        /// The first failed stage and why.
        reason: String,
    },
    /// Reported, not repaired (yet).
    Held {
        /// Why.
        hold: Hold,
    },
    /// Never deployed: the desired state names something the fleet will not deploy.
    Refused {
        /// Why.
        refusal: Refusal,
    },
    /// The target could not say what runs.
    ObserveFailed {
        /// The target's error.
        error: TargetError,
    },
}

/// Why a difference was reported and not repaired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "hold")]
pub enum Hold {
    /// The reconciler is suspended, for this environment or for all of them.
    Suspended,
    /// The sync window (a gate: change windows) is not open; a rollback is not held by it.
    SyncWindow {
        /// The gate.
        gate: String,
        /// Its verdict.
        verdict: Verdict,
    },
    /// The live release was put there by a rollback someone else made (a person through
    /// the fleet, a canary's abort): the reconciler keeps it until the desired state names
    /// another version than it did when the rollback was first seen (or until
    /// [`Reconciler::unpin`](super::Reconciler::unpin)). Drift from it is still repaired.
    Pinned {
        /// The rollback's ticket.
        ticket: Seq,
        /// Who rolled back.
        by: Actor,
        /// The release live now.
        live: ReleaseId,
    },
    /// A deployment is queued or running in the environment (another process's, or one
    /// parked by a gate): the next pass looks again.
    Busy,
    /// The last deployment of the desired release here failed (its deploy stage failed: a
    /// rollout rolled back by its analysis, or frozen), and the desired state for the
    /// environment has not changed since: the reconciler does not try the same deployment
    /// again every pass. It tries again once the environment's desired entry (release,
    /// digest or configuration) differs from the one that failed, or after
    /// [`Reconciler::retry`](super::Reconciler::retry). Drift from the live release is
    /// still repaired.
    Failed {
        /// The failed deployment's ticket.
        ticket: Seq,
        /// The release that failed to deploy.
        release: ReleaseId,
    },
    /// A gate of the pipeline on the deployment has not decided yet (recorded by the fleet
    /// as parked); the next pass asks again.
    Gate {
        /// The gate.
        gate: String,
        /// What it waits for.
        waiting_for: String,
        /// When it decides on its own, if it knows.
        until: Option<Timestamp>,
    },
}

/// Why the desired state of an environment is not deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "refused")]
pub enum Refusal {
    /// The fleet's lifecycle has no such environment.
    UnknownEnvironment,
    /// The fleet holds no such release (never registered: not tested here).
    UnknownRelease {
        /// The release named.
        release: ReleaseId,
    },
    /// The desired digest is not the one the release was tested with.
    DigestMismatch {
        /// The release named.
        release: ReleaseId,
        /// The digest the desired state names.
        desired: Digest,
        /// The digest the fleet registered (tested).
        recorded: Digest,
    },
    /// The desired state moved to an older release, and the fleet's `RollbackPolicy` does
    /// not let the reconciler (an automated trigger) roll back.
    RollbackNotAllowed {
        /// The release live.
        from: ReleaseId,
        /// The release named.
        to: ReleaseId,
        /// The reconciler, as the fleet saw it.
        by: Actor,
    },
    /// The fleet refused the deployment (an older release never live there, a closed gate, a
    /// phase not passed, …), recorded in its journal where the fleet records refusals.
    /// (Named `ByFleet`, not `Fleet`: an item of that name would make rustc spell
    /// `tollgate::fleet::Fleet` in full in every diagnostic.)
    ByFleet {
        /// What was asked.
        action: Action,
        /// The fleet's error.
        reason: String,
    },
}

/// Every difference between `desired` and `observed` configuration, in key order.
pub(super) fn config_differences(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
    out: &mut Vec<Difference>,
) {
    for (key, value) in desired {
        let seen = observed.get(key);
        if seen != Some(value) {
            out.push(Difference::Config {
                key: key.clone(),
                desired: Some(value.clone()),
                observed: seen.cloned(),
            });
        }
    }
    for (key, value) in observed {
        if !desired.contains_key(key) {
            out.push(Difference::Config {
                key: key.clone(),
                desired: None,
                observed: Some(value.clone()),
            });
        }
    }
}
