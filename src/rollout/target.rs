//! The host's platform, as a rollout strategy drives it: [`Target`].
//!
//! tollgate owns the strategies (all at once, rolling, blue-green, canary) and the decisions
//! (when to shift traffic, when to stop, when to roll back); the host owns the platform
//! (Kubernetes, a load balancer, a fleet of VMs, a simulation in a test). A [`Target`] is the
//! narrow interface between the two: bring a candidate up beside the stable version, move
//! traffic or instances over to it, check its health, make it the stable version or take it
//! away, and say what runs where ([`Target::observe`], which a reconcile loop compares with
//! the desired state).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::artifact::Digest;
use crate::environment::EnvironmentName;
use crate::forward::forward_impls;
use crate::id::ReleaseId;

/// One deployable version: a release and the digest of its artifact. Two versions are the
/// same only when both match: a release id alone does not say what runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// The release the artifact was built for.
    pub release: ReleaseId,
    /// The artifact's digest: what actually runs.
    pub digest: Digest,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.release, self.digest)
    }
}

/// A share of traffic, in whole percent (0 to 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Weight(u8);

impl Weight {
    /// No traffic.
    pub const NONE: Weight = Weight(0);
    /// All of the traffic.
    pub const ALL: Weight = Weight(100);

    /// `percent` of the traffic, or an error naming the value when it is above 100.
    pub fn percent(percent: u8) -> Result<Self, WeightError> {
        if percent <= 100 {
            Ok(Weight(percent))
        } else {
            Err(WeightError(percent))
        }
    }

    /// The share in percent.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Weight {
    type Error = WeightError;
    fn try_from(value: u8) -> Result<Self, WeightError> {
        Weight::percent(value)
    }
}

impl From<Weight> for u8 {
    fn from(weight: Weight) -> u8 {
        weight.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A traffic weight above 100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a traffic weight is a percentage from 0 to 100, not {0}")]
pub struct WeightError(pub u8);

/// What runs in one environment, as the [`Target`] sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    /// The version that takes every request not sent to a candidate; `None` when nothing is
    /// deployed.
    pub stable: Option<Version>,
    /// A candidate running beside the stable version, and its share of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<(Version, Weight)>,
    /// The configuration the environment runs with (what a desired state also names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// How the candidate's instances are doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Health {
    /// Every candidate instance is up and passing its checks.
    Healthy,
    /// Not ready yet (starting, warming up): ask again later.
    Progressing,
    /// Failed, with the platform's reason.
    Unhealthy(String),
}

/// A platform call that failed, with the platform's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("the target failed to {action} in {environment}: {message}")]
pub struct TargetError {
    /// What was asked (`prepare`, `shift traffic`, `promote`, …).
    pub action: String,
    /// Where.
    pub environment: EnvironmentName,
    /// The platform's message.
    pub message: String,
}

/// The host's platform, driven by a rollout strategy; every call names the environment it
/// acts on, so one target can serve a whole fleet.
///
/// A rollout calls [`prepare`](Target::prepare) once, then moves the candidate forward with
/// [`shift`](Target::shift) (traffic weight: canary, blue-green's switch, all at once) or
/// [`replace`](Target::replace) (instances: rolling), asks [`health`](Target::health) between
/// steps, and ends with [`promote`](Target::promote) (the candidate becomes the stable version)
/// or [`abort`](Target::abort) (all traffic back to the stable version at once, the candidate
/// taken away). Calls should be idempotent: a rollout resumed after a crash may repeat the
/// last one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate rollout target",
    label = "this type does not implement `tollgate::rollout::Target`",
    note = "implement `observe`, `prepare`, `shift`, `replace`, `health`, `promote` and `abort` with `#[async_trait]`"
)]
#[async_trait]
pub trait Target: Send + Sync {
    /// What runs in `environment` now.
    async fn observe(&self, environment: &EnvironmentName) -> Result<Observed, TargetError>;

    /// Brings `candidate` up beside the stable version, taking no traffic (a canary's new
    /// replica set, blue-green's preview side), with `config`.
    async fn prepare(
        &self,
        environment: &EnvironmentName,
        candidate: &Version,
        config: &BTreeMap<String, String>,
    ) -> Result<(), TargetError>;

    /// Sends `weight` of the traffic to the prepared candidate, the rest to the stable version.
    async fn shift(&self, environment: &EnvironmentName, weight: Weight)
    -> Result<(), TargetError>;

    /// Replaces stable instances with candidate instances until `done` of `total` run the
    /// candidate (rolling updates), at most `surge` extra and `unavailable` missing at a time.
    async fn replace(
        &self,
        environment: &EnvironmentName,
        done: u32,
        total: u32,
        surge: u32,
        unavailable: u32,
    ) -> Result<(), TargetError>;

    /// How the candidate's instances are doing.
    async fn health(&self, environment: &EnvironmentName) -> Result<Health, TargetError>;

    /// Makes the candidate the stable version with all of the traffic. The old version's
    /// instances may be kept (blue-green keeps the old side for instant switching back) until
    /// [`retire`](Target::retire).
    async fn promote(&self, environment: &EnvironmentName) -> Result<(), TargetError>;

    /// Takes the old side away after a promotion (blue-green, once its keep time is over). By
    /// default nothing: a target that keeps no old side has nothing to retire.
    async fn retire(&self, environment: &EnvironmentName) -> Result<(), TargetError> {
        let _ = environment;
        Ok(())
    }

    /// All traffic back to the stable version at once, and the candidate taken away.
    async fn abort(&self, environment: &EnvironmentName) -> Result<(), TargetError>;

    /// Runs the host action `hook` a canary names (a database migration, a cache warm-up).
    /// By default nothing: a target that runs no hooks has nothing to do.
    async fn run_hook(&self, environment: &EnvironmentName, hook: &str) -> Result<(), TargetError> {
        let _ = (environment, hook);
        Ok(())
    }
}

forward_impls! {
    #[async_trait]
    impl Target {
        async fn observe(&self, environment: &EnvironmentName) -> Result<Observed, TargetError>;
        async fn prepare(&self, environment: &EnvironmentName, candidate: &Version, config: &BTreeMap<String, String>) -> Result<(), TargetError>;
        async fn shift(&self, environment: &EnvironmentName, weight: Weight) -> Result<(), TargetError>;
        async fn replace(&self, environment: &EnvironmentName, done: u32, total: u32, surge: u32, unavailable: u32) -> Result<(), TargetError>;
        async fn health(&self, environment: &EnvironmentName) -> Result<Health, TargetError>;
        async fn promote(&self, environment: &EnvironmentName) -> Result<(), TargetError>;
        async fn retire(&self, environment: &EnvironmentName) -> Result<(), TargetError>;
        async fn abort(&self, environment: &EnvironmentName) -> Result<(), TargetError>;
        async fn run_hook(&self, environment: &EnvironmentName, hook: &str) -> Result<(), TargetError>;
    }
}
