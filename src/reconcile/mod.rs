//! GitOps (Flux, Argo CD): a [`Reconciler`] compares, on the pipeline's clock, the desired
//! state of each environment (from a [`DesiredSource`]: release, digest and configuration
//! at a source revision) with what runs there ([`Target::observe`]) and with the fleet's
//! ledger, reports every difference as a [`ReconcileEvent`], and converges through the
//! fleet's normal deploy path: [`Fleet::promote`], [`Fleet::redeploy`] and
//! [`Fleet::rollback_to`], with their gates, locks, queues and ledger. It never drives the
//! target itself: the pipeline's deploy stages do, as for any deployment.
//!
//! What a pass does with an environment the desired state names:
//! - the desired release must be one the fleet holds, with the digest it was tested with;
//!   otherwise the pass reports a [`Refusal`] and deploys nothing;
//! - a desired release newer than the live one (or nothing live) is **promoted**; an older
//!   one is **rolled back to** ([`Action::Rollback`]: a rollback is a change of desired
//!   state, so the reconciler makes it, recorded as a rollback by its automated actor, which
//!   the fleet's [`RollbackPolicy`](crate::fleet::RollbackPolicy) must allow, or a typed
//!   refusal);
//! - the live release running anything but itself on the target (another version, a stray
//!   candidate, other configuration) is **drift**, repaired by a redeploy
//!   ([`Action::Repair`]: `DeployKind::Redeploy` in the ledger, never a rollback);
//! - a rollback someone else made (a person through the fleet, a canary's abort) is never
//!   undone: the environment is **pinned** to it ([`Hold::Pinned`]) until the desired state
//!   names another version than it did when the pass first saw the rollback, or until
//!   [`Reconciler::unpin`]. A reconciler that starts after the rollback pins it at the
//!   desired state it then reads. Drift from the pinned release is still repaired;
//! - a deployment of the desired release that **failed** (its deploy stage failed: a
//!   [`Rollout`](crate::rollout::Rollout) rolled back by its analysis, or frozen) is not
//!   tried again every pass: the pass that made it reports [`Outcome::Failed`], and later
//!   passes hold the environment on what is live ([`Hold::Failed`]) until its desired entry
//!   (release, digest or configuration) differs from the one that failed, or until
//!   [`Reconciler::retry`]. So a canary that fails its analysis is rolled back once, by the
//!   rollout, and the reconciler does not fight it. A reconciler that starts after the
//!   failure holds at the desired entry it then reads (the failure is read from the fleet's
//!   ledger). Drift from the live release is still repaired;
//! - a **suspended** reconciler (all environments, or one) reports and changes nothing;
//! - a **sync window** (any [`Gate`], typically [`ChangeWindows`](crate::gate::ChangeWindows))
//!   holds promotions and repairs while it is not open: drift is reported, not repaired yet.
//!   It does not hold a rollback, which the fleet lets through every gate as well (it takes
//!   a change back, and must be fast);
//! - an environment with a deployment queued or running is left for the next pass.
//!
//! So once the source stops changing (and nobody changes the target by hand), one pass
//! converges every environment that can be, and the next finds nothing to do: two passes,
//! the second a no-op (`tests/reconcile.rs` checks it over random histories). A lifecycle
//! of several phases adds a pass per phase a change must go through (production opens to
//! a release once staging has it live, as for any promotion).
//!
//! Environments are compared one after another; a pass in sync costs one
//! [`Target::observe`], a hash lookup of the desired release and a read of the
//! environment's own record in the fleet per environment: each environment's place in the
//! fleet is resolved once per desired state, and nothing is allocated or copied for an
//! environment in sync (`benches/reconcile.rs`).
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`Reconciler`], [`ReconcileError`] |
//! | `source.rs` | [`DesiredSource`], [`DesiredState`], [`Desired`], [`SourceRevision`], [`Fetched`], [`SourceError`], [`MemorySource`] |
//! | `event.rs` | [`Pass`], [`ReconcileEvent`], [`Difference`], [`Action`], [`Outcome`], [`Hold`], [`Refusal`] |

mod event;
mod source;

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use event::{Action, Difference, Hold, Outcome, Pass, ReconcileEvent, Refusal};
pub use source::{
    Desired, DesiredSource, DesiredState, Fetched, MemorySource, SourceError, SourceRevision,
};

use crate::environment::{Environment, EnvironmentName};
use crate::fleet::{Actor, DeployKind, Fleet, FleetError, Look, TicketStatus};
use crate::gate::{BoxGate, Gate, GateContext};
use crate::journal::Seq;
use crate::lifecycle::{Approved, Deployed, Mode, Move, Staged, StateName, Tested, Verdict};
use crate::release::Release;
use crate::rollout::{Observed, Target, Version};
use crate::time::Timestamp;

/// What stops a pass as a whole (an environment's trouble is an event, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The desired-state source could not be read (nothing is deployed in that pass).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The fleet's ledger could not be read or written: its journal failed, or holds a
    /// history the fleet could not have written. (Not `Fleet`: a variant of that name would
    /// make rustc spell `tollgate::fleet::Fleet` in full in every diagnostic.)
    #[error(transparent)]
    Ledger(#[from] FleetError),
}

/// The GitOps loop over one [`Fleet`]: see the [module docs](self).
///
/// ```
/// # use std::sync::Arc;
/// # use tollgate::prelude::*;
/// # use tollgate::executor::from_fn;
/// use tollgate::fleet::{Fleet, FleetOptions, Lifecycle, Phase};
/// use tollgate::reconcile::{Desired, MemorySource, Reconciler};
/// use tollgate::rollout::Version;
/// # use tollgate::rollout::{Target, Observed, TargetError, Weight, Health};
/// # use tollgate::environment::EnvironmentName;
/// # #[derive(Default)] struct Cluster;
/// # #[async_trait::async_trait] impl Target for Cluster {
/// #   async fn observe(&self, _: &EnvironmentName) -> Result<Observed, TargetError> { Ok(Observed::default()) }
/// #   async fn prepare(&self, _: &EnvironmentName, _: &Version, _: &std::collections::BTreeMap<String, String>) -> Result<(), TargetError> { Ok(()) }
/// #   async fn shift(&self, _: &EnvironmentName, _: Weight) -> Result<(), TargetError> { Ok(()) }
/// #   async fn replace(&self, _: &EnvironmentName, _: u32, _: u32, _: u32, _: u32) -> Result<(), TargetError> { Ok(()) }
/// #   async fn health(&self, _: &EnvironmentName) -> Result<Health, TargetError> { Ok(Health::Healthy) }
/// #   async fn promote(&self, _: &EnvironmentName) -> Result<(), TargetError> { Ok(()) }
/// #   async fn abort(&self, _: &EnvironmentName) -> Result<(), TargetError> { Ok(()) }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { futures::executor::block_on(async {
/// # let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
/// # let pipeline = Arc::new(Pipeline::<Deployment>::builder("shop")
/// #     .stage(Stage::build("compile").run(ok())).stage(Stage::test("unit").run(ok()))
/// #     .stage(Stage::stage("staging").run(ok())).stage(Stage::deploy("roll-out").run(ok()))
/// #     .build()?);
/// let lifecycle = Lifecycle::new([Phase::new("production").environment("prod")?])?;
/// let fleet = Arc::new(Fleet::open(Arc::clone(&pipeline), lifecycle, FleetOptions::default()).await?);
/// # let built = pipeline.start("1.0", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
/// # let artifact = built.artifact().clone();
/// # let approved = built.test(&pipeline, &artifact).await?.stage(&pipeline, &artifact).await?
/// #     .auto_approve(&pipeline).await?;
/// fleet.register(&approved).await?; // CI registers what it tested
/// let source = MemorySource::new();
/// let version = Version { release: approved.id().clone(), digest: artifact.digest.clone() };
/// source.commit("c1", [("prod", Desired::new(version))])?;
/// let reconciler = Reconciler::new(Arc::clone(&fleet), source.clone(), Cluster);
/// let pass = reconciler.pass().await?;
/// assert_eq!(pass.actions().count(), 1); // 1.0 promoted into prod, through the fleet
/// assert_eq!(fleet.ledger().live_in("prod").map(|d| d.release.as_str()), Some("1.0"));
/// # Ok(()) }) }
/// ```
pub struct Reconciler<M: Mode> {
    fleet: Arc<Fleet<M>>,
    source: Arc<dyn DesiredSource>,
    target: Arc<dyn Target>,
    actor: Actor,
    window: Option<BoxGate>,
    state: Mutex<Inner>,
}

impl<M: Mode> std::fmt::Debug for Reconciler<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner();
        f.debug_struct("Reconciler")
            .field("fleet", &self.fleet)
            .field("actor", &self.actor)
            .field(
                "window",
                &self.window.as_ref().map(|w| w.name().into_owned()),
            )
            .field(
                "revision",
                &inner.desired.as_ref().map(|d| d.revision.clone()),
            )
            .field("suspended_all", &inner.suspended_all)
            .field("suspended", &inner.suspended)
            .finish_non_exhaustive()
    }
}

/// The reconciler's own state: the desired state it holds, what is suspended, the pins.
#[derive(Debug, Default)]
struct Inner {
    desired: Option<Arc<DesiredState>>,
    /// The fleet's position of each environment `desired` names, in its order: resolved
    /// once per desired state, so a pass hashes no environment name.
    positions: Arc<Vec<Option<usize>>>,
    suspended_all: bool,
    suspended: HashSet<EnvironmentName>,
    pins: HashMap<EnvironmentName, Pin>,
    failures: HashMap<EnvironmentName, Failure>,
    retries: HashSet<EnvironmentName>,
}

/// A failed deployment of the desired release, and the desired entry it failed with.
#[derive(Debug, Clone)]
struct Failure {
    ticket: Seq,
    desired: Desired,
    lifted: bool,
}

/// A rollback someone else made, and the desired version when it was first seen.
#[derive(Debug, Clone)]
struct Pin {
    ticket: Seq,
    version: Version,
    lifted: bool,
}

/// What the comparison decided for one environment, before any await.
enum Plan {
    InSync,
    Busy,
    Differs(Box<Differs>),
}

/// An environment that differs: every difference, by kind, and what the ledger says.
struct Differs {
    /// The desired release against the ledger's live one.
    release: Vec<Difference>,
    /// The target against the ledger's live release (hand-made changes).
    drift: Vec<Difference>,
    /// The target's configuration against the desired one.
    config: Vec<Difference>,
    /// The change of release the desired state asks for, or why it is refused.
    change: Result<Option<Change>, Refusal>,
    /// The live release, when someone else's rollback brought it live.
    foreign: Option<(Seq, Actor, crate::id::ReleaseId)>,
    live: Option<crate::id::ReleaseId>,
    /// The desired release's last deployment here, when it failed since the live one.
    failed: Option<Seq>,
}

/// A change of release the desired state asks for.
enum Change {
    Promote,
    Rollback { from: crate::id::ReleaseId },
}

impl<M: Mode> Reconciler<M> {
    /// A reconciler of `fleet` towards `source`'s desired state, observing `target`;
    /// it deploys as the automated actor `reconciler` (see [`named`](Self::named)).
    pub fn new(
        fleet: Arc<Fleet<M>>,
        source: impl DesiredSource + 'static,
        target: impl Target + 'static,
    ) -> Self {
        Reconciler {
            fleet,
            source: Arc::new(source),
            target: Arc::new(target),
            actor: Actor::automation("reconciler"),
            window: None,
            state: Mutex::new(Inner::default()),
        }
    }

    /// The same, deploying as the automated actor `name` (how the ledger names it, and how
    /// it tells its own rollbacks from anyone else's).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.actor = Actor::automation(name);
        self
    }

    /// The same, with a sync window: promotions and repairs wait while `gate` is not open
    /// (asked with the release to deploy, [`Move::Deploy`] and the environment). Rollbacks
    /// do not wait.
    #[must_use]
    pub fn sync_window(mut self, gate: impl Gate + 'static) -> Self {
        self.window = Some(Box::new(gate));
        self
    }

    /// The automated actor the reconciler deploys as.
    #[must_use]
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The fleet.
    #[must_use]
    pub fn fleet(&self) -> &Fleet<M> {
        &self.fleet
    }

    /// Suspends every environment: passes report, and change nothing.
    pub fn suspend_all(&self) {
        self.inner().suspended_all = true;
    }

    /// Resumes after [`suspend_all`](Self::suspend_all) (environments suspended one by one
    /// stay suspended).
    pub fn resume_all(&self) {
        self.inner().suspended_all = false;
    }

    /// Suspends one environment.
    pub fn suspend(&self, environment: &EnvironmentName) {
        self.inner().suspended.insert(environment.clone());
    }

    /// Resumes one environment.
    pub fn resume(&self, environment: &EnvironmentName) {
        self.inner().suspended.remove(environment);
    }

    /// Whether `environment` is suspended (on its own or with all of them).
    #[must_use]
    pub fn is_suspended(&self, environment: &EnvironmentName) -> bool {
        let inner = self.inner();
        inner.suspended_all || inner.suspended.contains(environment)
    }

    /// Lets the next pass converge `environment` to the desired state even though its live
    /// release was put there by someone else's rollback (Argo CD's re-enabling auto-sync).
    pub fn unpin(&self, environment: &EnvironmentName) -> Result<(), ReconcileError> {
        let now = self.fleet.pipeline().clock().now();
        let live = self.fleet.look(environment.as_str(), "", now, |look| {
            look.live
                .map(|l| (l.ticket(), l.release.clone(), l.digest.clone()))
        })?;
        if let Some((ticket, release, digest)) = live {
            self.inner().pins.insert(
                environment.clone(),
                Pin {
                    ticket,
                    version: Version { release, digest },
                    lifted: true,
                },
            );
        }
        Ok(())
    }

    /// Lets the next pass try again a deployment of the desired release that failed in
    /// `environment` ([`Hold::Failed`]) although the desired state has not changed since.
    pub fn retry(&self, environment: &EnvironmentName) {
        let mut inner = self.inner();
        inner.failures.remove(environment);
        inner.retries.insert(environment.clone());
    }

    /// Whether `environment` is pinned by someone else's rollback (as of the last pass).
    #[must_use]
    pub fn is_pinned(&self, environment: &EnvironmentName) -> bool {
        self.inner()
            .pins
            .get(environment)
            .is_some_and(|p| !p.lifted)
    }

    /// The desired state the reconciler holds (the last one fetched).
    #[must_use]
    pub fn desired(&self) -> Option<Arc<DesiredState>> {
        self.inner().desired.clone()
    }

    /// Runs passes on the pipeline's clock, one every `interval` (counted from the start
    /// of the last), handing each to `each` until it breaks. A source that cannot be read
    /// is the pass's error, handed to `each` like a pass, and the loop goes on; a fleet
    /// whose journal fails stops it.
    pub async fn run(
        &self,
        interval: Duration,
        mut each: impl FnMut(&Result<Pass, ReconcileError>) -> ControlFlow<()>,
    ) -> Result<(), ReconcileError> {
        let clock = self.fleet.pipeline().clock();
        loop {
            let started = clock.now();
            let pass = self.pass().await;
            if let Err(ReconcileError::Ledger(_)) = pass {
                return pass.map(|_| ());
            }
            if each(&pass).is_break() {
                return Ok(());
            }
            clock.sleep_until(started.saturating_add(interval)).await;
        }
    }

    /// One pass: fetches the desired state (keeping the last one when the source is
    /// unchanged), then compares and converges every environment it names, in order.
    pub async fn pass(&self) -> Result<Pass, ReconcileError> {
        let known = self.inner().desired.as_ref().map(|d| d.revision.clone());
        match self.source.fetch(known.as_ref()).await? {
            Fetched::Unchanged => {}
            Fetched::Changed(state) => {
                let positions = Arc::new(self.fleet.positions(state.environments.keys()));
                let mut inner = self.inner();
                inner.desired = Some(Arc::new(state));
                inner.positions = positions;
            }
        }
        let (desired, positions) = {
            let inner = self.inner();
            (inner.desired.clone(), Arc::clone(&inner.positions))
        };
        let Some(desired) = desired else {
            return Err(ReconcileError::Source(SourceError {
                source_name: "desired state".to_owned(),
                message: "the source reported no change before it ever gave a desired state"
                    .to_owned(),
            }));
        };
        let at = self.fleet.pipeline().clock().now();
        let mut pass = Pass {
            revision: desired.revision.clone(),
            at,
            environments: desired.environments.len(),
            in_sync: 0,
            events: Vec::new(),
        };
        let positions = positions.iter().copied().chain(std::iter::repeat(None));
        for ((environment, want), position) in desired.environments.iter().zip(positions) {
            let place = (environment, position);
            if self
                .environment(place, want, &desired.revision, at, &mut pass.events)
                .await?
            {
                pass.in_sync += 1;
            }
        }
        // A retry asked for is used by this pass or not at all.
        self.inner().retries.clear();
        Ok(pass)
    }
}

// One environment: compare, decide, converge.
impl<M: Mode> Reconciler<M> {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Compares and converges one environment, pushing what it reports to `out`; `true`
    /// when it is in sync.
    async fn environment(
        &self,
        (environment, position): (&EnvironmentName, Option<usize>),
        want: &Desired,
        revision: &SourceRevision,
        at: Timestamp,
        out: &mut Vec<ReconcileEvent>,
    ) -> Result<bool, ReconcileError> {
        let mut report = |differences: Vec<Difference>, outcome: Outcome| {
            out.push(ReconcileEvent {
                environment: environment.clone(),
                revision: revision.clone(),
                at,
                differences,
                outcome,
            });
        };
        let observed = match self.target.observe(environment).await {
            Ok(observed) => observed,
            Err(error) => {
                report(Vec::new(), Outcome::ObserveFailed { error });
                return Ok(false);
            }
        };
        let plan = match self.fleet.look_at(
            position,
            environment.as_str(),
            want.version.release.as_str(),
            at,
            |look| self.plan(want, &observed, look),
        ) {
            Ok(plan) => plan,
            Err(FleetError::UnknownEnvironment { .. }) => {
                let refusal = Refusal::UnknownEnvironment;
                report(Vec::new(), Outcome::Refused { refusal });
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
        let Plan::Differs(differs) = plan else {
            if let Plan::Busy = plan {
                report(Vec::new(), Outcome::Held { hold: Hold::Busy });
            }
            return Ok(matches!(plan, Plan::InSync));
        };
        let Differs {
            mut release,
            mut drift,
            config,
            mut change,
            foreign,
            live,
            failed,
        } = *differs;
        if let Some(hold) = self.hold_back(environment, want, foreign.as_ref(), failed, &change) {
            change = Ok(None);
            if drift.is_empty() {
                release.extend(config);
                report(release, Outcome::Held { hold });
                return Ok(false);
            }
        }
        // The change the desired state asks for (with the configuration it brings); when
        // it is refused, what runs should at least be what the ledger has live.
        match change {
            Ok(Some(change)) => {
                let action = match change {
                    Change::Promote => Action::Promote {
                        release: want.version.release.clone(),
                    },
                    Change::Rollback { from } => Action::Rollback {
                        from,
                        to: want.version.release.clone(),
                    },
                };
                release.extend(drift.iter().cloned());
                release.extend(config);
                let outcome = self.act(environment, &action, revision, at).await?;
                if let Outcome::Failed { ticket, .. } = outcome {
                    self.failed(environment, ticket, want);
                }
                let refused = matches!(outcome, Outcome::Refused { .. });
                report(release, outcome);
                if !refused || drift.is_empty() {
                    return Ok(false);
                }
            }
            Ok(None) => {
                // Pinned, held after a failure, or the live release is the desired one:
                // configuration differences count as drift only in the last case (a pinned
                // release, or one a failed deployment left live, keeps its own).
                if live.as_ref() == Some(&want.version.release) {
                    drift.extend(config);
                }
            }
            Err(refusal) => {
                report(release, Outcome::Refused { refusal });
                if drift.is_empty() {
                    return Ok(false);
                }
            }
        }
        let Some(live) = live else {
            return Ok(false);
        };
        let action = Action::Repair { release: live };
        let outcome = self.act(environment, &action, revision, at).await?;
        report(drift, outcome);
        Ok(false)
    }

    /// Runs `action` unless the reconciler is suspended or (but for a rollback) the sync
    /// window holds it.
    async fn act(
        &self,
        environment: &EnvironmentName,
        action: &Action,
        revision: &SourceRevision,
        at: Timestamp,
    ) -> Result<Outcome, ReconcileError> {
        if self.is_suspended(environment) {
            return Ok(Outcome::Held {
                hold: Hold::Suspended,
            });
        }
        if !matches!(action, Action::Rollback { .. }) {
            if let Some(hold) = self.window_hold(environment, action, at).await {
                return Ok(hold);
            }
        }
        self.converge(environment, action, revision).await
    }

    /// Compares under the fleet's lock, copying only what differs.
    fn plan(&self, want: &Desired, observed: &Observed, look: Look<'_>) -> Plan {
        let asked = match look.asked {
            None => Err(Refusal::UnknownRelease {
                release: want.version.release.clone(),
            }),
            Some((digest, _)) if *digest != want.version.digest => Err(Refusal::DigestMismatch {
                release: want.version.release.clone(),
                desired: want.version.digest.clone(),
                recorded: digest.clone(),
            }),
            Some((_, ordinal)) => Ok(ordinal),
        };
        let live_is_wanted = look
            .live
            .is_some_and(|l| *l.release == want.version.release);
        let stable_is_live = match (&observed.stable, look.live) {
            (Some(s), Some(l)) => s.release == *l.release && s.digest == *l.digest,
            (None, None) => true,
            _ => false,
        };
        if asked.is_ok()
            && live_is_wanted
            && stable_is_live
            && observed.candidate.is_none()
            && observed.config == want.config
        {
            return Plan::InSync;
        }
        if look.busy {
            return Plan::Busy;
        }
        let live_version = look.live.map(|l| Version {
            release: l.release.clone(),
            digest: l.digest.clone(),
        });
        let mut release = Vec::new();
        let change = match asked {
            Err(refusal) => Err(refusal),
            Ok(_) if live_is_wanted => Ok(None),
            Ok(ordinal) => {
                release.push(Difference::Release {
                    desired: want.version.clone(),
                    live: live_version.clone(),
                });
                Ok(Some(match look.live {
                    Some(l) if l.ordinal > ordinal => Change::Rollback {
                        from: l.release.clone(),
                    },
                    _ => Change::Promote,
                }))
            }
        };
        let mut drift = Vec::new();
        if !stable_is_live {
            drift.push(Difference::Stable {
                expected: live_version,
                observed: observed.stable.clone(),
            });
        }
        if let Some((candidate, weight)) = &observed.candidate {
            drift.push(Difference::Candidate {
                observed: candidate.clone(),
                weight: *weight,
            });
        }
        let mut config = Vec::new();
        if change.is_ok() {
            event::config_differences(&want.config, &observed.config, &mut config);
        }
        let foreign = look.live.and_then(|l| match l.kind() {
            DeployKind::Rollback { .. } if *l.by() != self.actor => {
                Some((l.ticket(), l.by().clone(), l.release.clone()))
            }
            _ => None,
        });
        Plan::Differs(Box::new(Differs {
            release,
            drift,
            config,
            change,
            foreign,
            live: look.live.map(|l| l.release.clone()),
            failed: look.failed,
        }))
    }

    /// Whether someone else's rollback (ticket `ticket`) still pins the environment, the
    /// desired version being `want`; records the pin the first time it is seen.
    fn pinned(&self, environment: &EnvironmentName, ticket: Seq, want: &Version) -> bool {
        let mut inner = self.inner();
        match inner.pins.get_mut(environment) {
            Some(pin) if pin.ticket == ticket => {
                if !pin.lifted && pin.version != *want {
                    pin.lifted = true;
                }
                !pin.lifted
            }
            _ => {
                inner.pins.insert(
                    environment.clone(),
                    Pin {
                        ticket,
                        version: want.clone(),
                        lifted: false,
                    },
                );
                true
            }
        }
    }

    /// Records that the deployment `ticket`, asked for by the desired entry `want`, failed.
    fn failed(&self, environment: &EnvironmentName, ticket: Seq, want: &Desired) {
        let failure = Failure {
            ticket,
            desired: want.clone(),
            lifted: false,
        };
        self.inner().failures.insert(environment.clone(), failure);
    }

    /// Why the change the desired state asks for is held back, if it is: someone else's
    /// rollback (kept until the desired version changes), or a failed deployment of the
    /// desired release (not tried again for the same desired entry).
    fn hold_back(
        &self,
        environment: &EnvironmentName,
        want: &Desired,
        foreign: Option<&(Seq, Actor, crate::id::ReleaseId)>,
        failed: Option<Seq>,
        change: &Result<Option<Change>, Refusal>,
    ) -> Option<Hold> {
        if !matches!(change, Ok(Some(_))) {
            return None;
        }
        if let Some((ticket, by, live)) = foreign {
            if self.pinned(environment, *ticket, &want.version) {
                return Some(Hold::Pinned {
                    ticket: *ticket,
                    by: by.clone(),
                    live: live.clone(),
                });
            }
        }
        let ticket = failed?;
        self.failed_before(environment, ticket, want)
            .then(|| Hold::Failed {
                ticket,
                release: want.version.release.clone(),
            })
    }

    /// Whether the failed deployment `ticket` of the desired release still holds the
    /// environment, the desired entry being `want`; records the failure the first time it
    /// is seen.
    fn failed_before(&self, environment: &EnvironmentName, ticket: Seq, want: &Desired) -> bool {
        let mut inner = self.inner();
        let retry = inner.retries.remove(environment);
        match inner.failures.get_mut(environment) {
            Some(failure) if failure.ticket == ticket => {
                if retry || (!failure.lifted && failure.desired != *want) {
                    failure.lifted = true;
                }
                !failure.lifted
            }
            _ => {
                inner.failures.insert(
                    environment.clone(),
                    Failure {
                        ticket,
                        desired: want.clone(),
                        lifted: retry,
                    },
                );
                !retry
            }
        }
    }

    /// The sync window's hold on `action`, if it is not open.
    async fn window_hold(
        &self,
        environment: &EnvironmentName,
        action: &Action,
        at: Timestamp,
    ) -> Option<Outcome> {
        let window = self.window.as_ref()?;
        let release = match action {
            Action::Promote { release } | Action::Repair { release } => release,
            Action::Rollback { .. } => return None,
        };
        let restored = match self.fleet.pipeline().restore(release.as_str()).await {
            Ok(restored) => restored,
            Err(error) => {
                return Some(Outcome::Refused {
                    refusal: Refusal::ByFleet {
                        action: action.clone(),
                        reason: error.to_string(),
                    },
                });
            }
        };
        let target = Environment::from(environment.clone());
        let ctx = GateContext::new(restored.record(), Move::Deploy, &target, at)
            .with_clock(self.fleet.pipeline().clock());
        match window.evaluate(&ctx).await {
            Verdict::Open | Verdict::Overridden { .. } => None,
            verdict => Some(Outcome::Held {
                hold: Hold::SyncWindow {
                    gate: window.name().into_owned(),
                    verdict,
                },
            }),
        }
    }

    /// Asks the fleet for `action` and says how it ended.
    async fn converge(
        &self,
        environment: &EnvironmentName,
        action: &Action,
        revision: &SourceRevision,
    ) -> Result<Outcome, ReconcileError> {
        let env = environment.as_str();
        let by = self.actor.clone();
        let result = match action {
            Action::Promote { release } => self.promote(release, env, by).await,
            Action::Rollback { to, .. } => {
                let reason = format!("the desired state names `{to}` at revision {revision}");
                self.fleet.rollback_to(env, to.as_str(), by, reason).await
            }
            Action::Repair { .. } => self.fleet.redeploy(env, by).await,
        };
        let action = action.clone();
        Ok(match result {
            Ok(deployment) => match deployment.status {
                TicketStatus::Deployed { .. } => Outcome::Converged {
                    action,
                    ticket: deployment.ticket,
                },
                TicketStatus::Failed { reason, .. } => Outcome::Failed {
                    action,
                    ticket: deployment.ticket,
                    reason,
                },
                _ => Outcome::Queued {
                    action,
                    ticket: deployment.ticket,
                },
            },
            Err(FleetError::GatePending {
                gate,
                waiting_for,
                until,
                ..
            }) => Outcome::Held {
                hold: Hold::Gate {
                    gate,
                    waiting_for,
                    until,
                },
            },
            Err(FleetError::NotAllowed {
                actor,
                action: what,
            }) => match action {
                Action::Rollback { from, to } => Outcome::Refused {
                    refusal: Refusal::RollbackNotAllowed {
                        from,
                        to,
                        by: actor,
                    },
                },
                action => Outcome::Refused {
                    refusal: Refusal::ByFleet {
                        action,
                        reason: format!("{actor} may not {what}"),
                    },
                },
            },
            Err(
                error @ (FleetError::Journal(_)
                | FleetError::Fact(_)
                | FleetError::Inconsistent { .. }
                | FleetError::SettingsDiffer { .. }),
            ) => return Err(error.into()),
            Err(error) => Outcome::Refused {
                refusal: Refusal::ByFleet {
                    action,
                    reason: error.to_string(),
                },
            },
        })
    }

    /// Promotes `release` (restored from the journal as the typed release its facts make
    /// it) into `environment`.
    async fn promote(
        &self,
        release: &crate::id::ReleaseId,
        environment: &str,
        by: Actor,
    ) -> Result<crate::fleet::Deployment, FleetError> {
        let pipeline = self.fleet.pipeline();
        let restored =
            pipeline
                .restore(release.as_str())
                .await
                .map_err(|e| FleetError::Restore {
                    release: release.clone(),
                    source: Box::new(e),
                })?;
        let restore_error = |e: crate::error::Error| FleetError::Restore {
            release: release.clone(),
            source: Box::new(e),
        };
        match restored.state() {
            StateName::Tested => {
                let typed = Release::<Tested, M>::try_from(restored).map_err(restore_error)?;
                self.fleet.promote(&typed, environment, by).await
            }
            StateName::Staged => {
                let typed = Release::<Staged, M>::try_from(restored).map_err(restore_error)?;
                self.fleet.promote(&typed, environment, by).await
            }
            StateName::Approved => {
                let typed = Release::<Approved, M>::try_from(restored).map_err(restore_error)?;
                self.fleet.promote(&typed, environment, by).await
            }
            StateName::Deployed => {
                let typed = Release::<Deployed, M>::try_from(restored).map_err(restore_error)?;
                self.fleet.promote(&typed, environment, by).await
            }
            other => Err(FleetError::Foreign {
                release: release.clone(),
                reason: format!("its facts leave it {other}, not tested"),
            }),
        }
    }
}
