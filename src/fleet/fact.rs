//! [`FleetFact`]: what the journal holds about a fleet: releases registered, deployments
//! queued, environment locks taken, deployments finished or superseded. Facts about one
//! environment are filed under its own key ([`environment_key`]), so an environment's lock
//! and queue are conditional appends on that key ([`Entry::after`]), shared by every process
//! that writes the journal, whatever its backend.

use serde::{Deserialize, Serialize};

use super::FleetOptions;
use super::phases::Lifecycle;
use crate::artifact::ArtifactRef;
use crate::engine::StepReport;
use crate::environment::EnvironmentName;
use crate::id::{Person, PipelineName, ReleaseId};
use crate::journal::{Entry, Seq, Stored};
use crate::record::GateRecord;
use crate::time::Timestamp;

/// Who asked for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "actor", content = "name")]
pub enum Actor {
    /// A person.
    Person(Person),
    /// An automated trigger (a monitor, a schedule, a bot), recorded by its name.
    Automation(String),
}

impl Actor {
    /// A person called `name`.
    pub fn person(name: impl Into<String>) -> Result<Self, crate::id::IdError> {
        Ok(Actor::Person(Person::new(name)?))
    }

    /// An automated trigger called `name`.
    pub fn automation(name: impl Into<String>) -> Self {
        Actor::Automation(name.into())
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Person(p) => write!(f, "{p}"),
            Actor::Automation(name) => write!(f, "automation `{name}`"),
        }
    }
}

/// What a deployment is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DeployKind {
    /// A release entering an environment along its lifecycle.
    Promote,
    /// The live release deployed again, unchanged (drift repair).
    Redeploy,
    /// An earlier release put back over the live one, on purpose.
    Rollback {
        /// The release that was live and is rolled back.
        from: ReleaseId,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for DeployKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployKind::Promote => f.write_str("promote"),
            DeployKind::Redeploy => f.write_str("redeploy"),
            DeployKind::Rollback { from, .. } => write!(f, "rollback from {from}"),
        }
    }
}

/// One thing that happened in a fleet, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fleet_fact", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FleetFact {
    /// A tested release joined the fleet; `ordinal` orders releases (newer is larger).
    Registered {
        /// The release.
        release: ReleaseId,
        /// Its place in the pipeline's order of releases, from 0.
        ordinal: u64,
        /// Its revision's id.
        revision: String,
        /// Its artifact.
        artifact: ArtifactRef,
        /// When.
        at: Timestamp,
    },
    /// A deployment was asked for and waits in the environment's queue. Its ticket is this
    /// fact's journal position.
    Queued {
        /// The environment.
        environment: EnvironmentName,
        /// The release to deploy.
        release: ReleaseId,
        /// What the deployment is.
        kind: DeployKind,
        /// Who asked.
        by: Actor,
        /// When.
        at: Timestamp,
        /// The verdicts of the pipeline's gates on the deployment (every one open), asked when
        /// it was asked for; none for a rollback, which asks no gate.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gates: Vec<GateRecord>,
        /// Set when the fleet promoted the release on its own ([`Fleet::advance`]): the
        /// phase's entry is automatic and what made it due.
        ///
        /// [`Fleet::advance`]: super::Fleet::advance
        #[serde(default, skip_serializing_if = "Option::is_none")]
        automatic: Option<AutoEntry>,
    },
    /// A deployment asked for waits on gates that have not decided yet (a soak timer, a
    /// metric still gathering): nothing is queued; the release waits on them in the ledger
    /// until it is asked for again.
    Parked {
        /// The environment.
        environment: EnvironmentName,
        /// The release.
        release: ReleaseId,
        /// What was asked.
        kind: DeployKind,
        /// Who asked.
        by: Actor,
        /// Every gate's verdict: none closed, at least one pending.
        gates: Vec<GateRecord>,
        /// When.
        at: Timestamp,
    },
    /// The fleet's shared settings, written once by the first [`Fleet::open`] on a journal;
    /// every later open must bring the same.
    ///
    /// [`Fleet::open`]: super::Fleet::open
    Settings {
        /// The lifecycle.
        lifecycle: Lifecycle,
        /// The options.
        options: FleetOptions,
        /// The SHA-256 of the two as JSON (lower-case hex).
        digest: String,
        /// When.
        at: Timestamp,
    },
    /// A queued deployment was dropped because a newer release is (or will be) live.
    Superseded {
        /// The environment.
        environment: EnvironmentName,
        /// The ticket dropped.
        ticket: Seq,
        /// The newer release.
        by: ReleaseId,
        /// When.
        at: Timestamp,
    },
    /// A deployment took the environment's lock until `until` (its lease).
    Locked {
        /// The environment.
        environment: EnvironmentName,
        /// The ticket that runs.
        ticket: Seq,
        /// When.
        at: Timestamp,
        /// When the lease ends: after it, another process may take the lock over.
        until: Timestamp,
    },
    /// The locked deployment ran its deploy stages; the lock is free again.
    Finished {
        /// The environment.
        environment: EnvironmentName,
        /// The ticket.
        ticket: Seq,
        /// The deploy step's report; the release is live when it succeeded.
        report: StepReport,
        /// When.
        at: Timestamp,
    },
    /// A deployment asked for and refused (older over newer, a phase not passed, a person
    /// not allowed, a full queue): kept for the audit trail.
    Refused {
        /// The environment.
        environment: EnvironmentName,
        /// The release.
        release: ReleaseId,
        /// What was asked.
        kind: DeployKind,
        /// Who asked.
        by: Actor,
        /// Why, as the error said.
        reason: String,
        /// When.
        at: Timestamp,
        /// The gates' verdicts when a gate refused it (one of them closed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gates: Vec<GateRecord>,
    },
}

/// Why the fleet promoted a release on its own: the phase entered, whose entry is
/// automatic, and the phase whose rule the release met (none for the first phase: it was
/// registered, tested).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoEntry {
    /// The phase entered.
    pub phase: String,
    /// The earlier phase whose rule the release met; `None` for the first phase.
    pub after: Option<String>,
}

impl FleetFact {
    /// The environment the fact is about (`None` for a registration).
    #[must_use]
    pub fn environment(&self) -> Option<&EnvironmentName> {
        match self {
            FleetFact::Registered { .. } | FleetFact::Settings { .. } => None,
            FleetFact::Queued { environment, .. }
            | FleetFact::Parked { environment, .. }
            | FleetFact::Superseded { environment, .. }
            | FleetFact::Locked { environment, .. }
            | FleetFact::Finished { environment, .. }
            | FleetFact::Refused { environment, .. } => Some(environment),
        }
    }

    /// The fact as a journal entry of `pipeline`'s fleet.
    ///
    /// # Panics
    ///
    /// Never: every fact is plain data that serializes.
    #[must_use]
    pub fn to_entry(&self, pipeline: &PipelineName) -> Entry {
        let payload = serde_json::to_vec(self)
            .unwrap_or_else(|e| unreachable!("a fleet fact is plain data that serializes: {e}"));
        let key = match self.environment() {
            Some(environment) => environment_key(pipeline, environment),
            None => registry_key(pipeline),
        };
        Entry::new(key, payload)
    }

    /// Reads a fact from an entry filed under `key`: it must parse and belong there.
    pub fn from_stored(stored: &Stored, pipeline: &PipelineName) -> Result<Self, String> {
        let fact: FleetFact = serde_json::from_slice(&stored.payload)
            .map_err(|e| format!("not a fleet fact: {e}"))?;
        let belongs = match fact.environment() {
            Some(environment) => environment_key(pipeline, environment),
            None => registry_key(pipeline),
        };
        if belongs == stored.key {
            Ok(fact)
        } else {
            Err(format!(
                "a fact of `{belongs}` is filed under `{}`",
                stored.key
            ))
        }
    }
}

/// The journal key of `pipeline`'s release registry (unit separators, which no id holds,
/// keep it apart from every release's key).
#[must_use]
pub fn registry_key(pipeline: &PipelineName) -> String {
    format!("{pipeline}\u{1f}fleet\u{1f}releases")
}

/// The journal key of `environment` in `pipeline`'s fleet: its queue, lock and deployments.
#[must_use]
pub fn environment_key(pipeline: &PipelineName, environment: &EnvironmentName) -> String {
    format!("{pipeline}\u{1f}fleet\u{1f}env\u{1f}{environment}")
}
