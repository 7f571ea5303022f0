//! Many environments, many releases: a [`Fleet`] promotes a pipeline's tested releases through
//! a [`Lifecycle`] of phases (Dev → Test → Production, production in waves), deploying the
//! same digest everywhere and never rebuilding: a promotion, a redeploy (drift repair) and a
//! rollback run only the pipeline's deploy stages, told which environment they target
//! ([`StageContext::environment`](crate::executor::StageContext::environment)).
//!
//! Every environment has one deployment at a time: a lock with a lease, and a queue with a
//! [`QueueMode`] and a limit, all of them [`FleetFact`]s appended to the pipeline's journal
//! under the environment's key, each on the condition that the key's last entry is the one
//! the writer saw ([`Entry::after`](crate::journal::Entry::after)). So every process sharing
//! the journal, whatever its backend, shares the locks and queues, and [`Fleet::open`]
//! re-derives the ledger, the locks and the queues from the facts, checking each one as the
//! fleet would have decided it: a stored ledger is never trusted as it stands.
//!
//! The rules a fleet keeps:
//! - a release joins the fleet only once it is `Tested`, proved by its typed value and by
//!   its own facts in the journal (started by this pipeline, built with the digest it
//!   carries, tested); promotion moves that digest, another one is refused;
//! - a phase opens to a release only once every earlier phase's [`PhaseRule`] is met, a
//!   wave only once every earlier wave of its phase has it live, and the production phase
//!   only to an `Approved` release (so the mode type decides production);
//! - an older release (started earlier) never goes live over a newer one, except by a
//!   [`rollback`](Fleet::rollback), which is a recorded move of its own, by a person the
//!   [`RollbackPolicy`] allows or by an automated trigger recorded as such; queued
//!   deployments that would do so are superseded and reported, not dropped silently;
//! - release ids are unique per pipeline;
//! - a promotion or redeploy asks the pipeline's gates on [`Move::Deploy`] and the target
//!   environment's gates, on the release as its own facts make it (restored from the
//!   journal); a closed gate refuses it ([`FleetError::GateClosed`]), a pending one parks it
//!   ([`FleetError::GatePending`], [`Waiting::Gate`] in the ledger), and every verdict is
//!   recorded. A rollback asks no gate, not even a change window: it takes a change back,
//!   fast, guarded by the [`RollbackPolicy`] instead;
//! - [`PhasesPassed`] on [`Move::Stage`] keeps `Staged` for releases that passed every
//!   pre-production phase; [`Fleet::advance`] promotes releases into phases entered
//!   automatically, recorded as such ([`AutoEntry`]);
//! - the lifecycle and options are recorded once ([`FleetFact::Settings`]); a fleet opened on
//!   the same journal with others is refused ([`FleetError::SettingsDiffer`]).
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`Fleet`], [`FleetOptions`], [`QueueMode`], [`RollbackPolicy`], [`FleetError`] |
//! | `phases.rs` | [`Lifecycle`], [`Phase`], [`PhaseRule`], [`PhaseEntry`] |
//! | `fact.rs` | [`FleetFact`], [`Actor`], [`DeployKind`], [`AutoEntry`], the journal keys |
//! | `gate.rs` | [`PhasesPassed`] |
//! | `state.rs` | the fold of facts into queues, locks and live releases, with its checks |
//! | `ledger.rs` | [`Ledger`]: what is where, what waits on what; the text dashboard |

#[cfg(feature = "cdevents")]
mod cdevents;
mod fact;
mod gate;
mod ledger;
mod phases;
mod state;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use fact::{Actor, AutoEntry, DeployKind, FleetFact, environment_key, registry_key};
pub use gate::PhasesPassed;
pub use ledger::{Deployment, EnvironmentView, Ledger, ReleaseView, Waiting};
pub use phases::{Lifecycle, LifecycleError, Phase, PhaseEntry, PhaseRule};
pub use state::TicketStatus;

use crate::artifact::Digest;
use crate::environment::{Environment, EnvironmentName};
use crate::fact::{Fact, FactError, read_keys_checked};
use crate::id::{Person, ReleaseId};
use crate::journal::{Journal, JournalError, Seq, Stored, check_key_chain};
use crate::lifecycle::{
    Approved, Deployed, Mode, Move, Staged, State as TypedState, StateName, Tested, Verdict,
};
use crate::pipeline::Pipeline;
use crate::record::GateRecord;
use crate::release::Release;
use crate::release::capability::HasArtifact;
use crate::time::Timestamp;
use state::State;

/// How an environment's queue picks the next deployment (GitLab's resource-group process
/// modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// In the order they were asked for.
    #[default]
    OldestFirst,
    /// The last one asked for first.
    NewestFirst,
    /// Rollbacks and redeploys first, then the newest release waiting; older releases
    /// waiting are superseded by it.
    NewestReadyFirst,
}

/// Who may roll an environment back.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RollbackPolicy {
    /// The people who may.
    pub people: BTreeSet<Person>,
    /// Whether automated triggers (recorded by name) may.
    pub automated: bool,
}

impl RollbackPolicy {
    /// `people` may roll back; automated triggers may too.
    pub fn people<I>(people: I) -> Result<Self, crate::id::IdError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Ok(RollbackPolicy {
            people: people
                .into_iter()
                .map(Person::new)
                .collect::<Result<_, _>>()?,
            automated: true,
        })
    }
}

/// How a fleet runs its environments. Every process sharing a journal should use the same
/// options: [`Fleet::open`] checks each fact with its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOptions {
    /// How each queue picks (default [`QueueMode::OldestFirst`]).
    pub queue_mode: QueueMode,
    /// How many deployments may wait per environment (default 16).
    pub queue_limit: usize,
    /// How long a deployment's lock keeps others out unless it finishes first (default: the
    /// pipeline's claim lease); after it, another process may take the environment over.
    #[serde(with = "crate::time::millis")]
    pub lock_lease: Duration,
    /// Who may roll back (default: nobody, and no automated trigger).
    pub rollback: RollbackPolicy,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            queue_mode: QueueMode::OldestFirst,
            queue_limit: 16,
            lock_lease: Duration::from_secs(60 * 60),
            rollback: RollbackPolicy::default(),
        }
    }
}

/// The states in which a release has passed its tests: the ones a fleet takes.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release cannot join a fleet: it has not passed its tests",
    note = "build and test it first: `release.build(&pipeline).await?.test(&pipeline, &artifact).await?`"
)]
pub trait PassedTests: TypedState + HasArtifact + sealed::Sealed {}
impl PassedTests for Tested {}
impl PassedTests for Staged {}
impl PassedTests for Approved {}
impl PassedTests for Deployed {}

mod sealed {
    /// Seals [`PassedTests`](super::PassedTests): the states are tollgate's.
    pub trait Sealed {}
    impl Sealed for crate::lifecycle::Tested {}
    impl Sealed for crate::lifecycle::Staged {}
    impl Sealed for crate::lifecycle::Approved {}
    impl Sealed for crate::lifecycle::Deployed {}
}

/// What a fleet refuses, each naming the release, environment or person at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// No environment of the lifecycle has this name.
    #[error("the lifecycle has no environment `{environment}`")]
    UnknownEnvironment {
        /// The name asked for.
        environment: String,
    },
    /// The fleet holds no release with this id.
    #[error("the fleet holds no release `{release}`")]
    UnknownRelease {
        /// The id asked for.
        release: String,
    },
    /// A release with this id is already in the fleet.
    #[error("release `{release}` is already in the fleet: release ids are unique per pipeline")]
    DuplicateRelease {
        /// The id.
        release: ReleaseId,
    },
    /// The release belongs to another pipeline (or its facts say it was not tested).
    #[error("release `{release}` cannot join this fleet: {reason}")]
    Foreign {
        /// The release.
        release: ReleaseId,
        /// Why.
        reason: String,
    },
    /// A promotion with another digest than the one the release was registered (and tested)
    /// with.
    #[error("release `{release}` carries digest {found}, but it was tested with {expected}")]
    OtherDigest {
        /// The release.
        release: ReleaseId,
        /// The digest it was registered with.
        expected: Digest,
        /// The digest handed in.
        found: Digest,
    },
    /// The release is already live there: redeploy it instead.
    #[error("release `{release}` is already live in `{environment}` (use redeploy)")]
    AlreadyLive {
        /// The release.
        release: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
    },
    /// An older release over a newer one, other than by a rollback.
    #[error(
        "release `{release}` is older than `{live}`, live in `{environment}`: only a rollback puts an older release back"
    )]
    OlderOverNewer {
        /// The older release asked for.
        release: ReleaseId,
        /// The newer release live there.
        live: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
    },
    /// The actor may not do this.
    #[error("{actor} may not {action}")]
    NotAllowed {
        /// Who asked.
        actor: Actor,
        /// What they asked.
        action: String,
    },
    /// An earlier phase's rule is not met.
    #[error("release `{release}` has not passed phase `{phase}` yet")]
    PhaseNotPassed {
        /// The release.
        release: ReleaseId,
        /// The phase.
        phase: String,
    },
    /// An earlier wave of the phase does not have the release live yet.
    #[error("release `{release}` is not live in `{environment}`, of an earlier wave, yet")]
    WaveNotDone {
        /// The release.
        release: ReleaseId,
        /// The environment of the earlier wave.
        environment: EnvironmentName,
    },
    /// Production needs an `Approved` release.
    #[error(
        "release `{release}` is not approved: `{environment}` is production (approve it first: a person in delivery mode, its gates in deployment mode)"
    )]
    NotApproved {
        /// The release.
        release: ReleaseId,
        /// The production environment.
        environment: EnvironmentName,
    },
    /// The release is not the live one there.
    #[error("release `{release}` is not live in `{environment}`")]
    NotLive {
        /// The release.
        release: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
    },
    /// A rollback to a release that was never live there.
    #[error(
        "release `{release}` was never live in `{environment}` before: nothing to roll back to"
    )]
    NeverLive {
        /// The release.
        release: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
    },
    /// Nothing earlier to roll back to.
    #[error("`{environment}` has no earlier good release to roll back to")]
    NothingToRollBack {
        /// The environment.
        environment: EnvironmentName,
    },
    /// The environment's queue is full.
    #[error("the queue of `{environment}` is full ({limit} deployments waiting)")]
    QueueFull {
        /// The environment.
        environment: EnvironmentName,
        /// The limit.
        limit: usize,
    },
    /// Another deployment holds the environment.
    #[error("`{environment}` is locked by deployment {ticket} until {until}")]
    Locked {
        /// The environment.
        environment: EnvironmentName,
        /// The ticket holding it.
        ticket: Seq,
        /// When its lease ends.
        until: Timestamp,
    },
    /// A gate of the pipeline on the deployment is closed (recorded, with every verdict).
    #[error(
        "a {kind} of `{release}` into `{environment}` is refused: gate `{gate}` is closed: {reason}"
    )]
    GateClosed {
        /// The release.
        release: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
        /// What was asked.
        kind: Box<DeployKind>,
        /// The gate.
        gate: String,
        /// Why it is closed.
        reason: String,
    },
    /// A gate of the pipeline on the deployment has not decided yet: the request is parked
    /// (recorded, shown in the ledger's waiting list); ask again once it has.
    #[error("a {kind} of `{release}` into `{environment}` waits on gate `{gate}`: {waiting_for}")]
    GatePending {
        /// The release.
        release: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
        /// What was asked.
        kind: Box<DeployKind>,
        /// The gate.
        gate: String,
        /// What it waits for.
        waiting_for: String,
        /// When it will decide on its own, if it knows.
        until: Option<Timestamp>,
    },
    /// The pipeline's engine was cancelled while the deployment's gates were evaluating:
    /// nothing was recorded; ask again.
    #[error("asking the gates for `{release}` in `{environment}` was cancelled")]
    Cancelled {
        /// The release.
        release: ReleaseId,
        /// The environment.
        environment: EnvironmentName,
    },
    /// The release's record could not be re-derived from its facts (for the gates to see).
    #[error("release `{release}` cannot be restored from the journal: {source}")]
    Restore {
        /// The release.
        release: ReleaseId,
        /// Why.
        source: Box<crate::error::Error>,
    },
    /// The journal holds the fleet's settings, and this fleet was opened with other ones:
    /// every process sharing a journal must use the same lifecycle and options.
    #[error("the fleet's settings differ from the ones the journal holds: {}", differences.join("; "))]
    SettingsDiffer {
        /// Each setting that differs, named, with both values.
        differences: Vec<String>,
    },
    /// A fact does not follow from the ones before it.
    #[error("{0}")]
    Mismatch(String),
    /// A fleet fact in the journal does not follow from the ones before it: a history the
    /// fleet could not have written.
    #[error("fleet fact {seq} (under `{key}`) cannot be replayed: {reason}")]
    Inconsistent {
        /// The journal key.
        key: String,
        /// The entry.
        seq: Seq,
        /// Why.
        reason: String,
    },
    /// The journal failed, or its chain is broken.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A release's own facts could not be read.
    #[error(transparent)]
    Fact(#[from] FactError),
}

impl FleetError {
    /// The category of this error, in the crate's [`ErrorKind`](crate::ErrorKind)s:
    /// `Release` (not the release or environment asked for, or older over newer, or a history
    /// that does not add up), `Artifact` (another digest), `Approval` (not approved, or a
    /// person not allowed), `GateClosed` (a phase or wave not passed), `GatePending` (the
    /// queue is full: try later), `Conflict` (another process holds the environment or moved
    /// first) and `Journal`.
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            FleetError::Locked { .. }
            | FleetError::Mismatch(_)
            | FleetError::SettingsDiffer { .. }
            | FleetError::Journal(JournalError::Conflict { .. })
            | FleetError::Fact(FactError::Journal(JournalError::Conflict { .. })) => K::Conflict,
            FleetError::Journal(_) | FleetError::Fact(FactError::Journal(_)) => K::Journal,
            FleetError::OtherDigest { .. } => K::Artifact,
            FleetError::NotAllowed { .. } | FleetError::NotApproved { .. } => K::Approval,
            FleetError::PhaseNotPassed { .. }
            | FleetError::WaveNotDone { .. }
            | FleetError::GateClosed { .. } => K::GateClosed,
            FleetError::QueueFull { .. } | FleetError::GatePending { .. } => K::GatePending,
            FleetError::Restore { source, .. } => source.kind(),
            FleetError::Cancelled { .. } => K::Cancelled,
            FleetError::UnknownEnvironment { .. }
            | FleetError::UnknownRelease { .. }
            | FleetError::DuplicateRelease { .. }
            | FleetError::Foreign { .. }
            | FleetError::AlreadyLive { .. }
            | FleetError::OlderOverNewer { .. }
            | FleetError::NotLive { .. }
            | FleetError::NeverLive { .. }
            | FleetError::NothingToRollBack { .. }
            | FleetError::Inconsistent { .. }
            | FleetError::Fact(_) => K::Release,
        }
    }
}

/// What a release's own facts prove: where it started, its built digest, that it was tested
/// and when it was approved.
struct Proof {
    started: Seq,
    digest: Digest,
    tested: Seq,
    approved: Option<Seq>,
}

/// A pipeline's releases across the environments of a [`Lifecycle`].
///
/// ```
/// # use std::sync::Arc;
/// # use tollgate::prelude::*;
/// # use tollgate::executor::from_fn;
/// use tollgate::fleet::{Actor, Fleet, FleetOptions, Lifecycle, Phase};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { futures::executor::block_on(async {
/// # let ok = || from_fn(|_| Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app"))));
/// let pipeline = Arc::new(Pipeline::<Deployment>::builder("shop")
///     # .stage(Stage::build("compile").run(ok())).stage(Stage::test("unit").run(ok()))
///     # .stage(Stage::stage("staging").run(ok()))
///     .stage(Stage::deploy("roll-out").run(from_fn(|ctx| {
///         // deploy stages see the environment they target
///         assert!(ctx.environment().is_some());
///         Ok(StageOutcome::success())
///     })))
///     .build()?);
/// let lifecycle = Lifecycle::new([
///     Phase::new("dev").environment("dev")?,
///     Phase::new("production").environment("prod")?,
/// ])?;
/// let fleet = Fleet::open(Arc::clone(&pipeline), lifecycle, FleetOptions::default()).await?;
/// let built = pipeline.start("1.0", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
/// let artifact = built.artifact().clone();
/// let tested = built.test(&pipeline, &artifact).await?;
/// fleet.promote(&tested, "dev", Actor::automation("ci")).await?;
/// // production only takes an approved release
/// assert!(fleet.promote(&tested, "prod", Actor::automation("ci")).await.is_err());
/// let approved = tested.stage(&pipeline, &artifact).await?.auto_approve(&pipeline).await?;
/// fleet.promote(&approved, "prod", Actor::automation("ci")).await?;
/// assert_eq!(fleet.ledger().live_in("prod").map(|d| d.release.as_str()), Some("1.0"));
/// println!("{}", fleet.ledger());
/// # Ok(()) }) }
/// ```
pub struct Fleet<M: Mode> {
    pipeline: Arc<Pipeline<M>>,
    state: Mutex<State>,
}

impl<M: Mode> std::fmt::Debug for Fleet<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Fleet")
            .field("pipeline", self.pipeline.name())
            .field("environments", &state.envs.len())
            .field("releases", &state.releases.len())
            .finish_non_exhaustive()
    }
}

/// How many times a write that found the journal moved on is re-read and tried again.
const RETRIES: usize = 16;

impl<M: Mode> Fleet<M> {
    /// Opens the fleet of `pipeline` over `lifecycle`: replays every fleet fact of the
    /// pipeline's journal (the releases, then each environment's queue, lock and deployments,
    /// in journal order), checking each as the fleet would have decided it and each release
    /// against its own facts. The journal's chain is checked from the first fleet fact to
    /// the head.
    pub async fn open(
        pipeline: Arc<Pipeline<M>>,
        lifecycle: Lifecycle,
        options: FleetOptions,
    ) -> Result<Self, FleetError> {
        let mut state = State::new(lifecycle, options);
        for env in &mut state.envs {
            let name = env.name.clone();
            env.gate_names = pipeline
                .gates_on(Move::Deploy, &name)
                .map(|g| g.name().into_owned())
                .collect();
        }
        let fleet = Fleet {
            pipeline,
            state: Mutex::new(state),
        };
        // Another process may append fleet facts while they are read (a replica on a shared
        // journal): the ones past the head seen here are news for a later `refresh`.
        let all = read_keys_checked(fleet.journal(), &fleet.keys())
            .await
            .map_err(|e| match e {
                // A broken chain is the journal's, as every other fleet read reports it.
                FactError::Journal(e) => FleetError::Journal(e),
                e => FleetError::Fact(e),
            })?;
        fleet.fold(all).await?;
        fleet.record_settings().await?;
        Ok(fleet)
    }

    /// Writes the fleet's settings to the journal unless it holds them already (then
    /// [`fold`](Self::fold) compared them with this fleet's own).
    async fn record_settings(&self) -> Result<(), FleetError> {
        let fact = {
            let state = self.lock();
            if state.settings_recorded {
                return Ok(());
            }
            FleetFact::Settings {
                lifecycle: state.lifecycle.clone(),
                options: state.options.clone(),
                digest: state::settings_digest(&state.lifecycle, &state.options),
                at: self.pipeline.clock().now(),
            }
        };
        match self.submit(vec![fact]).await {
            Ok(_) => Ok(()),
            // Another process recorded the same settings first.
            Err(FleetError::Mismatch(_)) if self.lock().settings_recorded => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The pipeline.
    #[must_use]
    pub fn pipeline(&self) -> &Pipeline<M> {
        &self.pipeline
    }

    /// Reads what other processes wrote to the fleet's keys since this copy last looked.
    pub async fn refresh(&self) -> Result<(), FleetError> {
        let keys = self.keys();
        let heads = self.heads();
        let mut new = Vec::new();
        for (key, head) in keys.iter().zip(heads) {
            let stored = self.journal().read_key(key).await?;
            if stored.last().is_some_and(|s| s.seq > head) {
                check_key_chain(self.journal().key(), &stored)?;
                new.extend(stored.into_iter().filter(|s| s.seq > head));
            }
        }
        new.sort_by_key(|s| s.seq);
        self.fold(new).await
    }

    /// Registers a tested release (its digest, its place in the order of releases: when it
    /// started). Promoting registers it too; registering first fixes it in the ledger.
    pub async fn register<S: PassedTests>(
        &self,
        release: &Release<S, M>,
    ) -> Result<(), FleetError> {
        self.ensure_registered(release).await.map(|_| ())
    }

    /// Promotes `release` into `environment` along the lifecycle, asked by `by`: queues the
    /// deployment, then runs the environment's queue until it is empty (or another process
    /// holds the environment: then it waits queued, the returned status says so, and the
    /// holder runs it). The
    /// deploy stages get the release's artifact (the digest tested) and the environment.
    pub async fn promote<S: PassedTests>(
        &self,
        release: &Release<S, M>,
        environment: &str,
        by: Actor,
    ) -> Result<Deployment, FleetError> {
        let index = self.ensure_registered(release).await?;
        let env = self.lock().env(environment)?;
        if S::NAME >= StateName::Approved
            && self.lock().releases[index as usize].approved_at.is_none()
        {
            let proof = self.proof(release.id()).await?;
            self.lock().releases[index as usize].approved_at = proof.approved;
        }
        let ticket = self
            .request(env, index, DeployKind::Promote, by, None)
            .await?;
        self.run(env).await?;
        Ok(self.deployment(env, ticket))
    }

    /// Deploys the release live in `environment` again, unchanged (drift repair): its
    /// deploy stages only.
    pub async fn redeploy(&self, environment: &str, by: Actor) -> Result<Deployment, FleetError> {
        let (env, live) = {
            let state = self.lock();
            let env = state.env(environment)?;
            let live = state.envs[env].live_release();
            (env, live)
        };
        let Some(live) = live else {
            return Err(FleetError::NothingToRollBack {
                environment: self.lock().envs[env].name.clone(),
            });
        };
        let ticket = self
            .request(env, live, DeployKind::Redeploy, by, None)
            .await?;
        self.run(env).await?;
        Ok(self.deployment(env, ticket))
    }

    /// Rolls `environment` back to the last release that was live there before the live one
    /// (the last good digest): its deploy stages only, no rebuild, no tests. A recorded move
    /// of its own, by a person the [`RollbackPolicy`] names or by an automated trigger.
    pub async fn rollback(
        &self,
        environment: &str,
        by: Actor,
        reason: impl Into<String>,
    ) -> Result<Deployment, FleetError> {
        let target = {
            let state = self.lock();
            let env = state.env(environment)?;
            let envs = &state.envs[env];
            let live = envs.live.map(|i| (i, envs.tickets[i].release));
            live.and_then(|(at, live)| {
                envs.tickets[..at]
                    .iter()
                    .rev()
                    .find(|t| {
                        t.release != live && matches!(t.status, TicketStatus::Deployed { .. })
                    })
                    .map(|t| state.releases[t.release as usize].id.clone())
            })
            .ok_or_else(|| FleetError::NothingToRollBack {
                environment: envs.name.clone(),
            })?
        };
        self.rollback_to(environment, target.as_str(), by, reason)
            .await
    }

    /// Rolls `environment` back to `release`, which must have been live there before.
    pub async fn rollback_to(
        &self,
        environment: &str,
        release: &str,
        by: Actor,
        reason: impl Into<String>,
    ) -> Result<Deployment, FleetError> {
        let (env, target, from) = {
            let state = self.lock();
            let env = state.env(environment)?;
            let target = state.release(release)?;
            let Some(live) = state.envs[env].live_release() else {
                return Err(FleetError::NothingToRollBack {
                    environment: state.envs[env].name.clone(),
                });
            };
            (env, target, state.releases[live as usize].id.clone())
        };
        let kind = DeployKind::Rollback {
            from,
            reason: reason.into(),
        };
        let ticket = self.request(env, target, kind, by, None).await?;
        self.run(env).await?;
        Ok(self.deployment(env, ticket))
    }

    /// Promotes, on its own, every release that is due in a phase entered automatically
    /// ([`PhaseEntry::Automatic`]): the previous phase's rule is met (for the first phase: the
    /// release is registered, so tested), every earlier wave of the phase has it live, it
    /// is newer than what is live there and (for production) approved. Each promotion is
    /// recorded as automatic ([`AutoEntry`]: the phase and the one whose rule was met) by
    /// `trigger` (an [`Actor::Automation`]), asks the gates like any other and runs the
    /// environment's queue; phases entered by people wait for one of them. Repeats until
    /// nothing more is due (each environment and release tried once per call), and returns
    /// the deployments it asked for. A refusal or a gate that parks a promotion is recorded
    /// and left for the next call.
    pub async fn advance(&self, trigger: impl Into<String>) -> Result<Vec<Deployment>, FleetError> {
        let by = Actor::Automation(trigger.into());
        let production_automatic =
            *self.lock().lifecycle.production().entry() == PhaseEntry::Automatic;
        if production_automatic {
            // Approvals are facts of the releases: read the ones this copy has not seen.
            let unapproved: Vec<(u32, ReleaseId)> = {
                let state = self.lock();
                (0..state.releases.len() as u32)
                    .filter(|&r| state.releases[r as usize].approved_at.is_none())
                    .map(|r| (r, state.releases[r as usize].id.clone()))
                    .collect()
            };
            for (r, id) in unapproved {
                let approved = self.proof(&id).await?.approved;
                self.lock().releases[r as usize].approved_at = approved;
            }
        }
        let mut tried = BTreeSet::new();
        let mut done = Vec::new();
        loop {
            let due: Vec<(usize, u32, AutoEntry)> = {
                let state = self.lock();
                let mut newest_first: Vec<u32> = (0..state.releases.len() as u32).collect();
                newest_first
                    .sort_by_key(|&r| std::cmp::Reverse(state.releases[r as usize].ordinal));
                let phases = state.lifecycle.phases();
                (0..state.envs.len())
                    .filter_map(|env| {
                        let r = newest_first
                            .iter()
                            .copied()
                            .find(|&r| !tried.contains(&(env, r)) && state.due(env, r))?;
                        let p = state.envs[env].phase;
                        let auto = AutoEntry {
                            phase: phases[p].name().to_owned(),
                            after: p.checked_sub(1).map(|e| phases[e].name().to_owned()),
                        };
                        Some((env, r, auto))
                    })
                    .collect()
            };
            if due.is_empty() {
                return Ok(done);
            }
            for (env, r, auto) in due {
                tried.insert((env, r));
                match self
                    .request(env, r, DeployKind::Promote, by.clone(), Some(auto))
                    .await
                {
                    Ok(ticket) => {
                        self.run(env).await?;
                        done.push(self.deployment(env, ticket));
                    }
                    Err(
                        error @ (FleetError::Journal(_)
                        | FleetError::Fact(_)
                        | FleetError::Inconsistent { .. }
                        | FleetError::Restore { .. }),
                    ) => return Err(error),
                    // Recorded (refused or parked); the next call asks again.
                    Err(_) => {}
                }
            }
        }
    }

    /// Runs `environment`'s queue until it is empty (or another process holds the
    /// environment's lock).
    pub async fn drain(&self, environment: &str) -> Result<(), FleetError> {
        let env = self.lock().env(environment)?;
        self.run(env).await
    }

    /// What is where: every environment's live release, lock, queue and history, and every
    /// release's environments and what it waits on. Built from the facts this copy has read.
    #[must_use]
    pub fn ledger(&self) -> Ledger {
        Ledger::of(self.pipeline.name(), &self.lock())
    }

    /// Checks a ledger handed back from elsewhere (a UI, a cache) against the one the facts
    /// give: the first environment or release where they differ, or `Ok`.
    pub fn check_ledger(&self, ledger: &Ledger) -> Result<(), FleetError> {
        match self.ledger().first_difference(ledger) {
            None => Ok(()),
            Some(at) => Err(FleetError::Mismatch(format!(
                "the ledger differs from the journal's facts at {at}"
            ))),
        }
    }
}

/// One environment as a reconcile pass reads it ([`Fleet::look`]): borrowed under the
/// fleet's lock, so a pass over many environments copies nothing it does not need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look<'a> {
    /// The deployment that made the live release live, if any.
    pub live: Option<LiveLook<'a>>,
    /// A deployment waits in the environment's queue, or holds its lock (lease not over).
    pub busy: bool,
    /// The release asked about, if the fleet holds it: its registered digest and its place
    /// in the order of releases (newer is larger).
    pub asked: Option<(&'a Digest, u64)>,
    /// The ticket of the asked release's last deployment here, when it failed and nothing
    /// went live here since (a deploy stage failed: a rollout rolled back or froze).
    pub failed: Option<Seq>,
}

/// The live release of an environment and the deployment that brought it live (its
/// redeploys skipped), as [`Look`] borrows them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveLook<'a> {
    /// The release live.
    pub release: &'a ReleaseId,
    /// Its registered digest.
    pub digest: &'a Digest,
    /// Its place in the order of releases.
    pub ordinal: u64,
    /// The environment's tickets, up to the live one (read only when asked how it came).
    tickets: &'a [state::Ticket],
    /// The live release's index.
    index: u32,
}

impl<'a> LiveLook<'a> {
    /// The deployment that brought the release live: redeploys of it (drift repairs) keep
    /// how it came, so a rollback stays a rollback after a repair.
    fn origin(&self) -> &'a state::Ticket {
        let last = self.tickets.len() - 1;
        self.tickets
            .iter()
            .rev()
            .find(|t| {
                t.release == self.index
                    && !matches!(t.kind, DeployKind::Redeploy)
                    && matches!(t.status, TicketStatus::Deployed { .. })
            })
            .unwrap_or(&self.tickets[last])
    }

    /// How it came live (a promotion or a rollback; a redeploy only if nothing earlier).
    pub fn kind(&self) -> &'a DeployKind {
        &self.origin().kind
    }

    /// Who asked for it.
    pub fn by(&self) -> &'a Actor {
        &self.origin().by
    }

    /// Its ticket.
    pub fn ticket(&self) -> Seq {
        self.origin().seq
    }
}

impl<M: Mode> Fleet<M> {
    /// Hands `f` what a reconcile pass needs of `environment` (and of release `release`)
    /// at `now`: two hash lookups under the fleet's lock, no copy and no ledger built, so a
    /// pass over n environments costs O(n).
    pub(crate) fn look<R>(
        &self,
        environment: &str,
        release: &str,
        now: Timestamp,
        f: impl FnOnce(Look<'_>) -> R,
    ) -> Result<R, FleetError> {
        let state = self.lock();
        let index = state.env(environment)?;
        Ok(look_in(&state, index, release, now, f))
    }

    /// The positions of `environments` in the fleet, in their order (`None` for one the
    /// lifecycle lacks): a reconciler resolves its desired state's names once, and a pass
    /// then looks each environment up by position ([`look_at`](Self::look_at)) without
    /// hashing its name.
    pub(crate) fn positions<'a>(
        &self,
        environments: impl IntoIterator<Item = &'a EnvironmentName>,
    ) -> Vec<Option<usize>> {
        let state = self.lock();
        environments
            .into_iter()
            .map(|e| state.env(e.as_str()).ok())
            .collect()
    }

    /// [`look`](Self::look) at the environment in `position` (from
    /// [`positions`](Self::positions); a fleet's environments never move), or by name
    /// when there is none.
    pub(crate) fn look_at<R>(
        &self,
        position: Option<usize>,
        environment: &str,
        release: &str,
        now: Timestamp,
        f: impl FnOnce(Look<'_>) -> R,
    ) -> Result<R, FleetError> {
        let state = self.lock();
        let index = match position {
            Some(index) if index < state.envs.len() => index,
            _ => state.env(environment)?,
        };
        Ok(look_in(&state, index, release, now, f))
    }
}

/// One environment's [`Look`], under the fleet's lock.
fn look_in<R>(
    state: &State,
    index: usize,
    release: &str,
    now: Timestamp,
    f: impl FnOnce(Look<'_>) -> R,
) -> R {
    let env = &state.envs[index];
    let live = env.live.zip(env.live_release()).map(|(i, release)| {
        let parked = &state.releases[release as usize];
        LiveLook {
            release: &parked.id,
            digest: &parked.artifact.digest,
            ordinal: parked.ordinal,
            tickets: &env.tickets[..=i],
            index: release,
        }
    });
    let asked_index = state.by_id.get(release).copied();
    let asked = asked_index.map(|r| {
        let parked = &state.releases[r as usize];
        (&parked.artifact.digest, parked.ordinal)
    });
    // Only the tickets after the live one: none while the environment is in sync.
    let failed = asked_index.and_then(|r| {
        let since = env.live.map_or(0, |i| i + 1);
        env.tickets
            .get(since..)?
            .iter()
            .rev()
            .find(|t| t.release == r)
            .filter(|t| matches!(t.status, TicketStatus::Failed { .. }))
            .map(|t| t.seq)
    });
    let busy = !env.pending.is_empty() || env.lock.is_some_and(|(_, lease)| now < lease);
    f(Look {
        live,
        busy,
        asked,
        failed,
    })
}

// The private machinery: the journal's keys, writing facts, the queue's run.
impl<M: Mode> Fleet<M> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn journal(&self) -> &dyn Journal {
        self.pipeline.journal()
    }

    /// The registry's key, then each environment's.
    fn keys(&self) -> Vec<String> {
        let name = self.pipeline.name();
        let state = self.lock();
        std::iter::once(registry_key(name))
            .chain(state.envs.iter().map(|e| environment_key(name, &e.name)))
            .collect()
    }

    /// Folds stored fleet facts (in journal order), checking each; a registration is checked
    /// against the release's own facts, and a production deployment against its approval.
    async fn fold(&self, stored: Vec<Stored>) -> Result<(), FleetError> {
        for entry in stored {
            let inconsistent = |reason: String| FleetError::Inconsistent {
                key: entry.key.clone(),
                seq: entry.seq,
                reason,
            };
            let fact =
                FleetFact::from_stored(&entry, self.pipeline.name()).map_err(inconsistent)?;
            let mut approved = None;
            match &fact {
                FleetFact::Registered {
                    release,
                    ordinal,
                    artifact,
                    ..
                } => {
                    let proof = self
                        .proof(release)
                        .await
                        .map_err(|e| inconsistent(e.to_string()))?;
                    if proof.started != *ordinal || proof.digest != artifact.digest {
                        return Err(inconsistent(format!(
                            "release `{release}` is registered with start {ordinal} and digest {}, but its facts say {} and {}",
                            artifact.digest, proof.started, proof.digest
                        )));
                    }
                    if proof.tested > entry.seq {
                        return Err(inconsistent(format!(
                            "release `{release}` was registered before it was tested"
                        )));
                    }
                    approved = proof.approved;
                }
                FleetFact::Queued { release, .. } => {
                    let unknown = {
                        let state = self.lock();
                        state
                            .by_id
                            .get(release)
                            .is_some_and(|&r| state.releases[r as usize].approved_at.is_none())
                    };
                    if unknown {
                        approved = self
                            .proof(release)
                            .await
                            .map_err(|e| inconsistent(e.to_string()))?
                            .approved;
                    }
                }
                _ => {}
            }
            let mut state = self.lock();
            if approved.is_some() {
                if let Some(&r) = state.by_id.get(fact_release(&fact)) {
                    state.releases[r as usize].approved_at = approved;
                }
            }
            state.check(&fact, entry.seq).map_err(|e| match e {
                e @ FleetError::SettingsDiffer { .. } => e,
                e => inconsistent(e.to_string()),
            })?;
            state.apply(&fact, entry.seq);
            if let FleetFact::Registered { release, .. } = &fact {
                if let Some(&r) = state.by_id.get(release) {
                    state.releases[r as usize].approved_at = approved;
                }
            }
        }
        Ok(())
    }

    /// What `release`'s own facts prove (read by its key, chain checked).
    async fn proof(&self, release: &ReleaseId) -> Result<Proof, FleetError> {
        let stored = self.journal().read_key(release.as_str()).await?;
        check_key_chain(self.journal().key(), &stored)?;
        let foreign = |reason: &str| FleetError::Foreign {
            release: release.clone(),
            reason: reason.to_owned(),
        };
        let (mut started, mut digest, mut tested, mut approved) = (None, None, None, None);
        for s in &stored {
            match Fact::from_stored(s)? {
                Fact::Started {
                    pipeline,
                    fingerprint,
                    ..
                } => {
                    if &pipeline != self.pipeline.name()
                        || &fingerprint != self.pipeline.fingerprint()
                    {
                        return Err(foreign(
                            "it was started by another pipeline, or another definition of this one",
                        ));
                    }
                    started = Some(s.seq);
                }
                Fact::Moved {
                    to: StateName::Built,
                    artifact: Some(artifact),
                    ..
                } => digest = Some(artifact.digest),
                Fact::Moved {
                    to: StateName::Tested,
                    ..
                } => tested = Some(s.seq),
                Fact::Moved {
                    to: StateName::Approved,
                    ..
                } => approved = Some(s.seq),
                _ => {}
            }
        }
        match (started, digest, tested) {
            (Some(started), Some(digest), Some(tested)) => Ok(Proof {
                started,
                digest,
                tested,
                approved,
            }),
            _ => Err(foreign("its facts do not show it built and tested")),
        }
    }

    /// The release's index in the fleet, registering it first if need be.
    async fn ensure_registered<S: PassedTests>(
        &self,
        release: &Release<S, M>,
    ) -> Result<u32, FleetError> {
        let known = self.lock().by_id.get(release.id()).copied();
        let index = if let Some(index) = known {
            index
        } else {
            if release.record().pipeline() != self.pipeline.name() {
                return Err(FleetError::Foreign {
                    release: release.id().clone(),
                    reason: format!("it belongs to pipeline `{}`", release.record().pipeline()),
                });
            }
            let proof = self.proof(release.id()).await?;
            let fact = FleetFact::Registered {
                release: release.id().clone(),
                ordinal: proof.started,
                revision: release.record().revision().id.clone(),
                artifact: release.artifact().clone(),
                at: self.pipeline.clock().now(),
            };
            if proof.digest != release.artifact().digest {
                return Err(FleetError::OtherDigest {
                    release: release.id().clone(),
                    expected: proof.digest,
                    found: release.artifact().digest.clone(),
                });
            }
            match self.submit(vec![fact]).await {
                // Another process registered it first: the same release, by its own facts.
                Ok(_) | Err(FleetError::DuplicateRelease { .. }) => {}
                Err(error) => return Err(error),
            }
            let mut state = self.lock();
            let index = state.release(release.id().as_str())?;
            state.releases[index as usize].approved_at = proof.approved;
            index
        };
        let state = self.lock();
        let registered = &state.releases[index as usize].artifact.digest;
        if registered != &release.artifact().digest {
            return Err(FleetError::OtherDigest {
                release: release.id().clone(),
                expected: registered.clone(),
                found: release.artifact().digest.clone(),
            });
        }
        Ok(index)
    }

    /// Asks the pipeline's gates on a deployment (a promotion or a redeploy: a rollback asks
    /// none), then queues it. A closed gate refuses it and a pending one parks it, both
    /// recorded with every verdict; any other refusal is recorded (best effort) and returned.
    async fn request(
        &self,
        env: usize,
        release: u32,
        kind: DeployKind,
        by: Actor,
        automatic: Option<AutoEntry>,
    ) -> Result<Seq, FleetError> {
        let (environment, id, ask) = {
            let state = self.lock();
            let ask = !matches!(kind, DeployKind::Rollback { .. })
                && !state.envs[env].gate_names.is_empty()
                && state
                    .check_request(env, release, &kind, &by, Seq::MAX)
                    .is_ok();
            (
                state.envs[env].name.clone(),
                state.releases[release as usize].id.clone(),
                ask,
            )
        };
        let at = self.pipeline.clock().now();
        let gates = if ask {
            self.ask_gates(&id, &environment).await?
        } else {
            Vec::new()
        };
        let gates = self
            .stop_at_gates(gates, &environment, &id, &kind, &by, at)
            .await?;
        let fact = FleetFact::Queued {
            environment: environment.clone(),
            release: id.clone(),
            kind: kind.clone(),
            by: by.clone(),
            at,
            gates,
            automatic,
        };
        match self.submit(vec![fact]).await {
            Ok(seq) => Ok(seq),
            Err(
                error @ (FleetError::Journal(_)
                | FleetError::Fact(_)
                | FleetError::Inconsistent { .. }
                | FleetError::SettingsDiffer { .. }),
            ) => Err(error),
            Err(error) => {
                let refused = FleetFact::Refused {
                    environment,
                    release: id,
                    kind,
                    by,
                    reason: error.to_string(),
                    at,
                    gates: Vec::new(),
                };
                // The refusal is what the caller hears; failing to record it changes nothing.
                let _ = self.submit(vec![refused]).await;
                Err(error)
            }
        }
    }

    /// Refuses (on a closed gate) or parks (on a pending one) a request, recording the
    /// verdicts; hands the verdicts back when every gate is open.
    async fn stop_at_gates(
        &self,
        gates: Vec<GateRecord>,
        environment: &EnvironmentName,
        id: &ReleaseId,
        kind: &DeployKind,
        by: &Actor,
        at: Timestamp,
    ) -> Result<Vec<GateRecord>, FleetError> {
        let closed = gates.iter().find_map(|g| match &g.verdict {
            Verdict::Closed { reason } => Some((g.gate.clone(), reason.clone())),
            _ => None,
        });
        if let Some((gate, reason)) = closed {
            let error = FleetError::GateClosed {
                release: id.clone(),
                environment: environment.clone(),
                kind: Box::new(kind.clone()),
                gate,
                reason,
            };
            let refused = FleetFact::Refused {
                environment: environment.clone(),
                release: id.clone(),
                kind: kind.clone(),
                by: by.clone(),
                reason: error.to_string(),
                at,
                gates,
            };
            // The refusal is what the caller hears; failing to record it changes nothing.
            let _ = self.submit(vec![refused]).await;
            return Err(error);
        }
        let pending = gates.iter().find_map(|g| match &g.verdict {
            Verdict::Pending { waiting_for, until } => {
                Some((g.gate.clone(), waiting_for.clone(), *until))
            }
            _ => None,
        });
        if let Some((gate, waiting_for, until)) = pending {
            let error = FleetError::GatePending {
                release: id.clone(),
                environment: environment.clone(),
                kind: Box::new(kind.clone()),
                gate,
                waiting_for,
                until,
            };
            let parked = FleetFact::Parked {
                environment: environment.clone(),
                release: id.clone(),
                kind: kind.clone(),
                by: by.clone(),
                gates,
                at,
            };
            self.submit(vec![parked]).await?;
            return Err(error);
        }
        Ok(gates)
    }

    /// The verdicts of the pipeline's gates on a deployment of `release` into `environment`
    /// (the deploy move's gates and the environment's), asked now with the release's record
    /// as its own facts make it (restored from the journal, never handed in).
    async fn ask_gates(
        &self,
        release: &ReleaseId,
        environment: &EnvironmentName,
    ) -> Result<Vec<GateRecord>, FleetError> {
        let restored =
            self.pipeline
                .restore(release.as_str())
                .await
                .map_err(|e| FleetError::Restore {
                    release: release.clone(),
                    source: Box::new(e),
                })?;
        let target = Environment::from(environment.clone());
        let now = self.pipeline.clock().now();
        // A handle of its own: the verdicts are told to the engine's observer as a move's are,
        // and a cancel of the pipeline's engine stops the evaluation.
        let cancel = crate::engine::CancelHandle::new();
        let Some(verdicts) = self
            .pipeline
            .evaluate_gates(restored.record(), Move::Deploy, &target, now, Some(&cancel))
            .await
        else {
            return Err(FleetError::Cancelled {
                release: release.clone(),
                environment: environment.clone(),
            });
        };
        Ok(verdicts
            .into_iter()
            .map(|(gate, verdict)| GateRecord {
                gate,
                mv: Move::Deploy,
                verdict,
                at: now,
            })
            .collect())
    }

    /// Appends `facts` (of one key) after the key's last entry as this copy knows it, each
    /// checked first; when the journal moved on, reads what changed and tries again.
    /// Resolves with the journal position of the last one.
    async fn submit(&self, facts: Vec<FleetFact>) -> Result<Seq, FleetError> {
        let name = self.pipeline.name().clone();
        for _ in 0..RETRIES {
            let entries = {
                let state = self.lock();
                let mut check = Vec::with_capacity(facts.len());
                for fact in &facts {
                    state.check(fact, Seq::MAX)?;
                    check.push(fact.to_entry(&name));
                }
                let head = match facts.first().and_then(FleetFact::environment) {
                    Some(environment) => state.envs[state.env(environment.as_str())?].head,
                    None => state.registry_head,
                };
                if let Some(first) = check.first_mut() {
                    first.expect_prev = Some(head);
                }
                check
            };
            match self.journal().append(entries).await {
                Ok(last) => {
                    let mut state = self.lock();
                    let first = last + 1 - facts.len() as Seq;
                    for (i, fact) in facts.iter().enumerate() {
                        state.apply(fact, first + i as Seq);
                    }
                    return Ok(last);
                }
                Err(JournalError::Conflict { .. }) => self.refresh().await?,
                Err(error) => return Err(error.into()),
            }
        }
        Err(FleetError::Mismatch(format!(
            "the journal kept moving on; gave up after {RETRIES} tries"
        )))
    }

    /// Runs `env`'s queue: supersedes what would put an older release over a newer one,
    /// takes the lock for the next deployment, runs its deploy stages, records how it ended;
    /// until the queue is empty, or another process holds the lock (which then runs what
    /// waits).
    async fn run(&self, env: usize) -> Result<(), FleetError> {
        loop {
            let now = self.pipeline.clock().now();
            let (environment, pick, held) = {
                let state = self.lock();
                let envs = &state.envs[env];
                let held = envs.lock.is_some_and(|(_, lease)| now < lease);
                (envs.name.clone(), state.pick(env), held)
            };
            if !pick.superseded.is_empty() {
                let facts = {
                    let state = self.lock();
                    pick.superseded
                        .iter()
                        .map(|&(ticket, by)| FleetFact::Superseded {
                            environment: environment.clone(),
                            ticket,
                            by: state.releases[by as usize].id.clone(),
                            at: now,
                        })
                        .collect()
                };
                self.submit_or_refresh(facts).await?;
                continue;
            }
            if held {
                return Ok(());
            }
            let Some(ticket) = pick.next else {
                return Ok(());
            };
            let until_lease = now.saturating_add(self.lock().options.lock_lease);
            let locked = FleetFact::Locked {
                environment: environment.clone(),
                ticket,
                at: now,
                until: until_lease,
            };
            if !self.submit_or_refresh(vec![locked]).await? {
                continue;
            }
            let (release, revision, artifact) = {
                let state = self.lock();
                let envs = &state.envs[env];
                let i = envs
                    .tickets
                    .binary_search_by_key(&ticket, |x| x.seq)
                    .unwrap_or_default();
                let parked = &state.releases[envs.tickets[i].release as usize];
                (
                    parked.id.clone(),
                    parked.revision.clone(),
                    parked.artifact.clone(),
                )
            };
            let target = Environment::from(environment.clone());
            let report = self
                .pipeline
                .run_deploy_stages(&release, &revision, &artifact, &target, ticket)
                .await;
            let finished = FleetFact::Finished {
                environment: environment.clone(),
                ticket,
                report,
                at: self.pipeline.clock().now(),
            };
            self.submit(vec![finished]).await?;
        }
    }

    /// Submits `facts`; a refusal because this copy's view was behind (another process
    /// superseded, locked or ran the queue first) is `Ok(false)`, for the queue to look
    /// again once it has read what changed. A refusal with nothing new to read is an error
    /// (fleets sharing a journal with other options).
    async fn submit_or_refresh(&self, facts: Vec<FleetFact>) -> Result<bool, FleetError> {
        match self.submit(facts).await {
            Ok(_) => Ok(true),
            Err(error @ (FleetError::Locked { .. } | FleetError::Mismatch(_))) => {
                let before = self.heads();
                self.refresh().await?;
                if self.heads() == before {
                    Err(error)
                } else {
                    Ok(false)
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The last entry this copy has read of each of its keys.
    fn heads(&self) -> Vec<Seq> {
        let state = self.lock();
        std::iter::once(state.registry_head)
            .chain(state.envs.iter().map(|e| e.head))
            .collect()
    }

    /// The view of ticket `ticket` of `env`.
    fn deployment(&self, env: usize, ticket: Seq) -> Deployment {
        let state = self.lock();
        let envs = &state.envs[env];
        let i = envs
            .tickets
            .binary_search_by_key(&ticket, |x| x.seq)
            .unwrap_or_default();
        Deployment::of(&state, env, &envs.tickets[i])
    }
}

/// The release a fact names, if any.
fn fact_release(fact: &FleetFact) -> &str {
    match fact {
        FleetFact::Registered { release, .. }
        | FleetFact::Queued { release, .. }
        | FleetFact::Parked { release, .. }
        | FleetFact::Refused { release, .. } => release.as_str(),
        _ => "",
    }
}
