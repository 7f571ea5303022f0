//! The reconcile loop (GitOps): desired state from a source, observed state from a
//! simulated `Target`, convergence through the fleet (promote, redeploy, rollback), drift,
//! suspension, sync windows, pins after someone else's rollback, refusals; and a property
//! test over random histories. Every test runs on the memory journal in virtual time.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use tollgate::environment::EnvironmentName;
use tollgate::executor::{BoxExecutor, from_async_fn, from_fn};
use tollgate::fleet::{Actor, DeployKind, Fleet, FleetOptions, Lifecycle, Phase, RollbackPolicy};
use tollgate::gate::{ChangeWindows, GateContext, MetricSource, Threshold};
use tollgate::journal::{ChainKey, MemoryJournal};
use tollgate::prelude::*;
use tollgate::reconcile::{
    Action, Desired, DesiredSource, Difference, Fetched, Hold, MemorySource, Outcome, Pass,
    ReconcileError, ReconcileEvent, Reconciler, Refusal, SourceError, SourceRevision,
};
use tollgate::rollout::{
    Analysis, Canary, Health, MetricCheck, Observed, Pause, Rollout, Strategy as RolloutStrategy,
    Target, TargetError, Version, Weight,
};
use tollgate::time::{Clock, ManualClock, run_virtual};

use support::{clock, compile, ok, revision};

/// One simulated environment: what runs, and what a deployment prepared.
#[derive(Debug, Clone, Default)]
struct Slot {
    observed: Observed,
    prepared: Option<(Version, BTreeMap<String, String>)>,
}

/// A simulated cluster: the `Target` of every environment, in memory. It counts the calls
/// that change something, so a test can tell that nothing was deployed.
#[derive(Debug, Clone, Default)]
struct Cluster {
    slots: Arc<Mutex<HashMap<EnvironmentName, Slot>>>,
    changes: Arc<Mutex<usize>>,
    broken: Arc<Mutex<Option<EnvironmentName>>>,
}

impl Cluster {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<EnvironmentName, Slot>) -> R) -> R {
        f(&mut self.slots.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn changed(&self) {
        *self.changes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    /// How many calls changed the cluster.
    fn changes(&self) -> usize {
        *self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What runs in `env`.
    fn observed(&self, env: &str) -> Observed {
        self.with(|s| s.get(&name(env)).map(|s| s.observed.clone()))
            .unwrap_or_default()
    }

    /// The release running in `env`, if any.
    fn running(&self, env: &str) -> Option<String> {
        self.observed(env).stable.map(|v| v.release.to_string())
    }

    /// A hand-made change: `env` runs `version` (kubectl set image).
    fn tamper(&self, env: &str, version: Version) {
        self.with(|s| s.entry(name(env)).or_default().observed.stable = Some(version));
    }

    /// A hand-made change of one configuration value.
    fn tamper_config(&self, env: &str, key: &str, value: &str) {
        self.with(|s| {
            s.entry(name(env))
                .or_default()
                .observed
                .config
                .insert(key.to_owned(), value.to_owned());
        });
    }

    fn fail(action: &str, environment: &EnvironmentName, message: &str) -> TargetError {
        TargetError {
            action: action.to_owned(),
            environment: environment.clone(),
            message: message.to_owned(),
        }
    }
}

#[async_trait]
impl Target for Cluster {
    async fn observe(&self, environment: &EnvironmentName) -> Result<Observed, TargetError> {
        if self
            .broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            == Some(environment)
        {
            return Err(Cluster::fail("observe", environment, "connection refused"));
        }
        Ok(self
            .with(|s| s.get(environment).map(|s| s.observed.clone()))
            .unwrap_or_default())
    }
    async fn prepare(
        &self,
        environment: &EnvironmentName,
        candidate: &Version,
        config: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        self.changed();
        self.with(|s| {
            let slot = s.entry(environment.clone()).or_default();
            slot.prepared = Some((candidate.clone(), config.clone()));
            slot.observed.candidate = Some((candidate.clone(), Weight::NONE));
        });
        Ok(())
    }
    async fn shift(
        &self,
        environment: &EnvironmentName,
        weight: Weight,
    ) -> Result<(), TargetError> {
        self.changed();
        self.with(|s| {
            let slot = s.entry(environment.clone()).or_default();
            if let Some((_, w)) = &mut slot.observed.candidate {
                *w = weight;
            }
        });
        Ok(())
    }
    async fn replace(
        &self,
        environment: &EnvironmentName,
        _done: u32,
        _total: u32,
        _surge: u32,
        _unavailable: u32,
    ) -> Result<(), TargetError> {
        Err(Cluster::fail("replace", environment, "not simulated"))
    }
    async fn health(&self, _environment: &EnvironmentName) -> Result<Health, TargetError> {
        Ok(Health::Healthy)
    }
    async fn promote(&self, environment: &EnvironmentName) -> Result<(), TargetError> {
        self.changed();
        self.with(|s| {
            let slot = s.entry(environment.clone()).or_default();
            if let Some((version, config)) = slot.prepared.take() {
                slot.observed = Observed {
                    stable: Some(version),
                    candidate: None,
                    config,
                };
            }
        });
        Ok(())
    }
    async fn abort(&self, environment: &EnvironmentName) -> Result<(), TargetError> {
        self.changed();
        self.with(|s| {
            let slot = s.entry(environment.clone()).or_default();
            slot.prepared = None;
            slot.observed.candidate = None;
        });
        Ok(())
    }
}

fn name(env: &str) -> EnvironmentName {
    EnvironmentName::new(env).unwrap()
}

/// The releases every world has: oldest first.
const RELEASES: [&str; 4] = ["r1", "r2", "r3", "r4"];

/// The environments every world has (one production phase).
const ENVS: [&str; 3] = ["eu", "us", "ap"];

/// Everything a test needs.
struct World {
    clock: ManualClock,
    pipeline: Arc<Pipeline<Deployment>>,
    fleet: Arc<Fleet<Deployment>>,
    cluster: Cluster,
    source: MemorySource,
    /// Release id → digest, as registered.
    digests: BTreeMap<String, Digest>,
    commits: usize,
}

/// A deploy stage's executor that drives `cluster` by hand: prepare with the desired
/// configuration, shift all traffic, promote (what an all-at-once rollout does).
fn by_hand(cluster: &Cluster, source: &MemorySource) -> BoxExecutor {
    let cluster = cluster.clone();
    let source = source.clone();
    let deploy = from_async_fn(move |ctx| {
        let cluster = cluster.clone();
        let source = source.clone();
        Box::pin(async move {
            let (Some(env), Some(artifact)) = (ctx.environment(), ctx.artifact()) else {
                return Ok(StageOutcome::failure("no environment or artifact"));
            };
            let env = env.name().clone();
            let version = Version {
                release: ctx.release().clone(),
                digest: artifact.digest.clone(),
            };
            let config = source
                .current()
                .and_then(|s| s.environments.get(&env).map(|d| d.config.clone()))
                .unwrap_or_default();
            let steps = async {
                cluster.prepare(&env, &version, &config).await?;
                cluster.shift(&env, Weight::ALL).await?;
                cluster.promote(&env).await
            };
            Ok(match steps.await {
                Ok(()) => StageOutcome::success(),
                Err(e) => StageOutcome::failure(e.to_string()),
            })
        })
    });
    Box::new(deploy)
}

/// A deployment pipeline whose deploy stage is `deploy`.
fn pipeline(
    clock: &ManualClock,
    journal: Arc<MemoryJournal>,
    deploy: BoxExecutor,
) -> Arc<Pipeline<Deployment>> {
    Arc::new(
        Pipeline::<Deployment>::builder("shop")
            .clock(clock.clone())
            .journal(journal)
            .stage(Stage::build("compile").run(compile()))
            .stage(Stage::test("unit").after("compile").run(ok()))
            .stage(Stage::stage("staging").run(ok()))
            .stage(Stage::deploy("roll-out").run(deploy))
            .build()
            .expect("valid pipeline"),
    )
}

fn world_with(rollback: RollbackPolicy) -> World {
    world_deploying(rollback, by_hand)
}

/// A world whose deploy stage is what `deploy` makes of its cluster and source.
fn world_deploying(
    rollback: RollbackPolicy,
    deploy: impl FnOnce(&Cluster, &MemorySource) -> BoxExecutor,
) -> World {
    let clock = clock();
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"reconcile tests")));
    let cluster = Cluster::default();
    let source = MemorySource::new();
    let pipeline = pipeline(&clock, journal, deploy(&cluster, &source));
    let lifecycle = Lifecycle::new([Phase::new("production").wave(ENVS).unwrap()]).unwrap();
    let options = FleetOptions {
        rollback,
        ..FleetOptions::default()
    };
    let fleet = run_virtual(
        &clock,
        Fleet::open(Arc::clone(&pipeline), lifecycle, options),
    )
    .expect("an empty fleet opens");
    let fleet = Arc::new(fleet);
    let mut digests = BTreeMap::new();
    for id in RELEASES {
        let p = &*pipeline;
        let approved = run_virtual(&clock, async {
            let built = p
                .start(id, revision(&format!("rev-{id}")))
                .unwrap()
                .build(p)
                .await
                .unwrap();
            let artifact = built.artifact().clone();
            let tested = built.test(p, &artifact).await.unwrap();
            tested
                .stage(p, &artifact)
                .await
                .unwrap()
                .auto_approve(p)
                .await
                .unwrap()
        });
        run_virtual(&clock, fleet.register(&approved)).unwrap();
        digests.insert(id.to_owned(), approved.artifact().digest.clone());
    }
    World {
        clock,
        pipeline,
        fleet,
        cluster,
        source,
        digests,
        commits: 0,
    }
}

/// People `rita` may roll back, and automated triggers too.
fn world() -> World {
    world_with(RollbackPolicy::people(["rita"]).unwrap())
}

impl World {
    fn version(&self, release: &str) -> Version {
        Version {
            release: release.parse().unwrap(),
            digest: self.digests[release].clone(),
        }
    }

    /// Commits `release` as the desired state of each of `envs`, with `config`.
    fn commit(&mut self, envs: &[&str], release: &str, config: &[(&str, &str)]) {
        self.commits += 1;
        let mut desired = Desired::new(self.version(release));
        for (k, v) in config {
            desired = desired.config(*k, *v);
        }
        self.source
            .commit(
                format!("c{}", self.commits),
                envs.iter().map(|e| (*e, desired.clone())),
            )
            .unwrap();
    }

    fn reconciler(&self) -> Reconciler<Deployment> {
        Reconciler::new(
            Arc::clone(&self.fleet),
            self.source.clone(),
            self.cluster.clone(),
        )
    }

    fn pass(&self, reconciler: &Reconciler<Deployment>) -> Pass {
        // A minute between passes, so that every deployment has its own time.
        self.clock.advance(Duration::from_secs(60));
        run_virtual(&self.clock, reconciler.pass()).expect("the pass runs")
    }

    fn live(&self, env: &str) -> Option<String> {
        self.fleet
            .ledger()
            .live_in(env)
            .map(|d| d.release.to_string())
    }

    fn live_kind(&self, env: &str) -> Option<(DeployKind, Actor)> {
        self.fleet
            .ledger()
            .live_in(env)
            .map(|d| (d.kind.clone(), d.by.clone()))
    }

    /// A person's rollback of `env` through the fleet, as `rita`.
    fn person_rollback(&self, env: &str) -> bool {
        self.clock.advance(Duration::from_secs(1));
        run_virtual(
            &self.clock,
            self.fleet
                .rollback(env, Actor::person("rita").unwrap(), "error rate up"),
        )
        .is_ok()
    }
}

fn event_for<'a>(pass: &'a Pass, env: &str) -> Option<&'a ReconcileEvent> {
    pass.events.iter().find(|e| e.environment == *env)
}

#[test]
fn a_new_desired_release_is_promoted_through_the_fleet_and_the_next_pass_finds_it_in_sync() {
    let mut w = world();
    w.commit(&ENVS, "r1", &[("replicas", "3")]);
    let r = w.reconciler();
    let first = w.pass(&r);
    assert_eq!(first.actions().count(), 3);
    for env in ENVS {
        let event = event_for(&first, env).unwrap();
        assert!(
            matches!(&event.outcome, Outcome::Converged { action: Action::Promote { release }, .. } if release == "r1")
        );
        assert!(matches!(
            &event.differences[0],
            Difference::Release { live: None, .. }
        ));
        assert_eq!(w.live(env).as_deref(), Some("r1"));
        assert_eq!(
            w.live_kind(env),
            Some((DeployKind::Promote, Actor::automation("reconciler")))
        );
        let observed = w.cluster.observed(env);
        assert_eq!(observed.stable, Some(w.version("r1")));
        assert_eq!(
            observed.config.get("replicas").map(String::as_str),
            Some("3")
        );
    }
    let second = w.pass(&r);
    assert!(second.converged(), "{:?}", second.events);
    assert_eq!(second.in_sync, 3);
    assert_eq!(second.revision.as_str(), "c1");
}

#[test]
fn a_hand_made_change_on_the_target_is_repaired_by_a_redeploy_not_a_rollback() {
    let mut w = world();
    w.commit(&ENVS, "r2", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.cluster.tamper("us", w.version("r1"));
    let pass = w.pass(&r);
    assert_eq!(pass.events.len(), 1);
    let event = event_for(&pass, "us").unwrap();
    assert_eq!(
        event.differences,
        vec![Difference::Stable {
            expected: Some(w.version("r2")),
            observed: Some(w.version("r1")),
        }]
    );
    assert!(
        matches!(&event.outcome, Outcome::Converged { action: Action::Repair { release }, .. } if release == "r2")
    );
    assert_eq!(
        w.live_kind("us"),
        Some((DeployKind::Redeploy, Actor::automation("reconciler")))
    );
    assert_eq!(w.cluster.running("us").as_deref(), Some("r2"));
    assert!(w.pass(&r).converged());
}

#[test]
fn a_configuration_drift_is_reported_key_by_key_and_repaired() {
    let mut w = world();
    w.commit(&["eu"], "r1", &[("replicas", "3")]);
    let r = w.reconciler();
    w.pass(&r);
    w.cluster.tamper_config("eu", "replicas", "1");
    w.cluster.tamper_config("eu", "debug", "true");
    let pass = w.pass(&r);
    let event = event_for(&pass, "eu").unwrap();
    assert_eq!(
        event.differences,
        vec![
            Difference::Config {
                key: "replicas".into(),
                desired: Some("3".into()),
                observed: Some("1".into()),
            },
            Difference::Config {
                key: "debug".into(),
                desired: None,
                observed: Some("true".into()),
            },
        ]
    );
    assert!(matches!(
        event.outcome,
        Outcome::Converged {
            action: Action::Repair { .. },
            ..
        }
    ));
    assert_eq!(w.cluster.observed("eu").config.len(), 1);
}

#[test]
fn a_revert_of_the_desired_state_is_a_rollback_recorded_by_the_reconciler() {
    let mut w = world();
    w.commit(&["eu"], "r1", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.commit(&["eu"], "r2", &[]);
    w.pass(&r);
    w.commit(&["eu"], "r1", &[]); // git revert
    let pass = w.pass(&r);
    let event = event_for(&pass, "eu").unwrap();
    assert!(
        matches!(&event.outcome, Outcome::Converged { action: Action::Rollback { from, to }, .. } if from == "r2" && to == "r1")
    );
    let ledger = w.fleet.ledger();
    let live = ledger.live_in("eu").unwrap();
    let DeployKind::Rollback { from, reason } = &live.kind else {
        panic!("not a rollback: {:?}", live.kind)
    };
    assert_eq!(from.as_str(), "r2");
    assert!(reason.contains("revision c3"), "{reason}");
    assert_eq!(live.by, Actor::automation("reconciler"));
    assert_eq!(w.cluster.running("eu").as_deref(), Some("r1"));
    // Its own rollback does not pin: the next change of desired state goes out.
    w.commit(&["eu"], "r3", &[]);
    w.pass(&r);
    assert_eq!(w.live("eu").as_deref(), Some("r3"));
}

#[test]
fn a_revert_the_rollback_policy_refuses_is_a_typed_refusal_and_deploys_nothing() {
    let mut w = world_with(RollbackPolicy::default()); // nobody, no automation
    w.commit(&["eu"], "r1", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.commit(&["eu"], "r2", &[]);
    w.pass(&r);
    w.commit(&["eu"], "r1", &[]);
    let changes = w.cluster.changes();
    let pass = w.pass(&r);
    let event = event_for(&pass, "eu").unwrap();
    assert_eq!(
        event.outcome,
        Outcome::Refused {
            refusal: Refusal::RollbackNotAllowed {
                from: "r2".parse().unwrap(),
                to: "r1".parse().unwrap(),
                by: Actor::automation("reconciler"),
            }
        }
    );
    assert_eq!(w.cluster.changes(), changes);
    assert_eq!(w.live("eu").as_deref(), Some("r2"));
}

#[test]
fn a_person_rollback_is_not_undone_until_the_desired_state_names_another_version() {
    let mut w = world();
    w.commit(&["eu"], "r1", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.commit(&["eu"], "r2", &[]);
    w.pass(&r);
    assert!(w.person_rollback("eu"));
    assert_eq!(w.live("eu").as_deref(), Some("r1"));
    for _ in 0..3 {
        let pass = w.pass(&r);
        let event = event_for(&pass, "eu").unwrap();
        assert!(
            matches!(&event.outcome, Outcome::Held { hold: Hold::Pinned { live, by, .. } } if live == "r1" && *by == Actor::person("rita").unwrap()),
            "{event:?}"
        );
        assert_eq!(w.live("eu").as_deref(), Some("r1"));
        assert!(r.is_pinned(&name("eu")));
    }
    // Drift from the pinned release is still repaired, to the pinned release.
    w.cluster.tamper("eu", w.version("r4"));
    let pass = w.pass(&r);
    assert!(
        matches!(&event_for(&pass, "eu").unwrap().outcome, Outcome::Converged { action: Action::Repair { release }, .. } if release == "r1")
    );
    assert_eq!(w.cluster.running("eu").as_deref(), Some("r1"));
    // The repair (a redeploy) does not turn the person's rollback into something to undo.
    let pass = w.pass(&r);
    assert!(matches!(
        &event_for(&pass, "eu").unwrap().outcome,
        Outcome::Held {
            hold: Hold::Pinned { .. }
        }
    ));
    assert_eq!(w.live("eu").as_deref(), Some("r1"));
    // A commit of the fix lifts the pin.
    w.commit(&["eu"], "r3", &[]);
    w.pass(&r);
    assert_eq!(w.live("eu").as_deref(), Some("r3"));
    assert!(!r.is_pinned(&name("eu")));
}

#[test]
fn unpin_lets_the_next_pass_bring_the_desired_release_back() {
    let mut w = world();
    w.commit(&["eu"], "r1", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.commit(&["eu"], "r2", &[]);
    w.pass(&r);
    assert!(w.person_rollback("eu"));
    w.pass(&r);
    assert_eq!(w.live("eu").as_deref(), Some("r1"));
    r.unpin(&name("eu")).unwrap();
    let pass = w.pass(&r);
    assert!(
        matches!(&event_for(&pass, "eu").unwrap().outcome, Outcome::Converged { action: Action::Promote { release }, .. } if release == "r2")
    );
    assert_eq!(w.live("eu").as_deref(), Some("r2"));
}

#[test]
fn a_suspended_reconciler_reports_drift_and_deploys_nothing_until_resumed() {
    let mut w = world();
    w.commit(&ENVS, "r1", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.commit(&ENVS, "r2", &[]);
    w.cluster.tamper("eu", w.version("r3"));
    r.suspend_all();
    let changes = w.cluster.changes();
    let pass = w.pass(&r);
    assert_eq!(pass.events.len(), 3);
    assert!(pass.events.iter().all(|e| e.outcome
        == Outcome::Held {
            hold: Hold::Suspended
        }));
    assert_eq!(w.cluster.changes(), changes);
    assert_eq!(w.live("us").as_deref(), Some("r1"));
    // One environment suspended on its own stays so when the others resume.
    r.suspend(&name("us"));
    r.resume_all();
    let pass = w.pass(&r);
    assert_eq!(pass.actions().count(), 2);
    assert_eq!(
        event_for(&pass, "us").unwrap().outcome,
        Outcome::Held {
            hold: Hold::Suspended
        }
    );
    assert_eq!(w.live("us").as_deref(), Some("r1"));
    r.resume(&name("us"));
    w.pass(&r);
    assert!(ENVS.iter().all(|e| w.live(e).as_deref() == Some("r2")));
    assert!(w.pass(&r).converged());
}

#[test]
fn a_closed_sync_window_reports_drift_and_repairs_it_only_once_open() {
    let mut w = world();
    w.commit(&["eu"], "r1", &[]);
    // The support clock starts on 2023-11-14 22:13 UTC; the freeze ends at midnight.
    let freeze = ChangeWindows::new("freeze", "Z")
        .unwrap()
        .deny_dates("release-freeze", "2023-11-14T23:00", "2023-11-15T00:00")
        .unwrap();
    let r = w.reconciler().sync_window(freeze);
    w.pass(&r);
    assert_eq!(w.live("eu").as_deref(), Some("r1"));
    w.clock
        .set(tollgate::time::Timestamp::from_millis(1_700_002_800_000)); // 23:00
    w.cluster.tamper("eu", w.version("r2"));
    let changes = w.cluster.changes();
    let pass = w.pass(&r);
    let event = event_for(&pass, "eu").unwrap();
    assert!(matches!(
        &event.differences[..],
        [Difference::Stable { .. }]
    ));
    assert!(
        matches!(&event.outcome, Outcome::Held { hold: Hold::SyncWindow { gate, verdict: Verdict::Pending { .. } } } if gate == "freeze"),
        "{event:?}"
    );
    assert_eq!(w.cluster.changes(), changes);
    assert_eq!(w.cluster.running("eu").as_deref(), Some("r2"));
    // A rollback is not held by the window.
    w.cluster.tamper("eu", w.version("r1"));
    w.commit(&["eu"], "r2", &[]);
    let pass = w.pass(&r);
    assert!(matches!(
        event_for(&pass, "eu").unwrap().outcome,
        Outcome::Held {
            hold: Hold::SyncWindow { .. }
        }
    ));
    assert_eq!(w.live("eu").as_deref(), Some("r1"));
    // After midnight the window is open.
    w.clock
        .set(tollgate::time::Timestamp::from_millis(1_700_006_400_000));
    let pass = w.pass(&r);
    assert!(matches!(
        event_for(&pass, "eu").unwrap().outcome,
        Outcome::Converged {
            action: Action::Promote { .. },
            ..
        }
    ));
    assert_eq!(w.cluster.running("eu").as_deref(), Some("r2"));
    assert!(w.pass(&r).converged());
}

#[test]
fn a_revert_goes_out_through_a_closed_sync_window() {
    let mut w = world();
    w.commit(&["eu"], "r1", &[]);
    let freeze = ChangeWindows::new("freeze", "Z")
        .unwrap()
        .deny_dates("release-freeze", "2023-11-14T23:00", "2023-11-15T00:00")
        .unwrap();
    let r = w.reconciler().sync_window(freeze);
    w.pass(&r);
    w.commit(&["eu"], "r2", &[]);
    w.pass(&r);
    w.clock
        .set(tollgate::time::Timestamp::from_millis(1_700_002_800_000));
    w.commit(&["eu"], "r1", &[]);
    let pass = w.pass(&r);
    assert!(matches!(
        event_for(&pass, "eu").unwrap().outcome,
        Outcome::Converged {
            action: Action::Rollback { .. },
            ..
        }
    ));
    assert_eq!(w.cluster.running("eu").as_deref(), Some("r1"));
}

#[test]
fn an_unknown_release_is_refused_and_never_deployed() {
    let w = world();
    let unknown = Version {
        release: "r9".parse().unwrap(),
        digest: Digest::sha256(b"r9"),
    };
    w.source
        .commit("c1", [("eu", Desired::new(unknown))])
        .unwrap();
    let r = w.reconciler();
    let pass = w.pass(&r);
    assert_eq!(
        event_for(&pass, "eu").unwrap().outcome,
        Outcome::Refused {
            refusal: Refusal::UnknownRelease {
                release: "r9".parse().unwrap()
            }
        }
    );
    assert_eq!(w.cluster.changes(), 0);
    assert_eq!(w.live("eu"), None);
}

#[test]
fn a_digest_other_than_the_tested_one_is_refused_and_never_deployed() {
    let w = world();
    let forged = Version {
        release: "r1".parse().unwrap(),
        digest: Digest::sha256(b"not what was tested"),
    };
    w.source
        .commit("c1", [("eu", Desired::new(forged.clone()))])
        .unwrap();
    let r = w.reconciler();
    let pass = w.pass(&r);
    assert_eq!(
        event_for(&pass, "eu").unwrap().outcome,
        Outcome::Refused {
            refusal: Refusal::DigestMismatch {
                release: "r1".parse().unwrap(),
                desired: forged.digest,
                recorded: w.digests["r1"].clone(),
            }
        }
    );
    assert_eq!(w.cluster.changes(), 0);
}

#[test]
fn an_environment_the_fleet_lacks_is_refused() {
    let w = world();
    w.source
        .commit("c1", [("mars", Desired::new(w.version("r1")))])
        .unwrap();
    let pass = w.pass(&w.reconciler());
    assert_eq!(
        event_for(&pass, "mars").unwrap().outcome,
        Outcome::Refused {
            refusal: Refusal::UnknownEnvironment
        }
    );
}

#[test]
fn an_older_release_never_live_there_is_refused_by_the_fleet() {
    let mut w = world();
    w.commit(&["eu"], "r3", &[]);
    let r = w.reconciler();
    w.pass(&r);
    w.commit(&["eu"], "r1", &[]);
    let pass = w.pass(&r);
    assert!(
        matches!(&event_for(&pass, "eu").unwrap().outcome, Outcome::Refused { refusal: Refusal::ByFleet { action: Action::Rollback { .. }, reason } } if reason.contains("never live"))
    );
    assert_eq!(w.live("eu").as_deref(), Some("r3"));
}

#[test]
fn a_target_that_cannot_be_observed_is_an_event_and_the_others_go_on() {
    let mut w = world();
    w.commit(&ENVS, "r1", &[]);
    *w.cluster.broken.lock().unwrap() = Some(name("us"));
    let pass = w.pass(&w.reconciler());
    assert!(
        matches!(&event_for(&pass, "us").unwrap().outcome, Outcome::ObserveFailed { error } if error.message == "connection refused")
    );
    assert_eq!(pass.actions().count(), 2);
    assert_eq!(w.live("us"), None);
}

#[test]
fn a_pass_and_its_events_round_trip_through_serde() {
    let mut w = world();
    w.commit(&["eu"], "r2", &[("replicas", "2")]);
    let r = w.reconciler();
    w.pass(&r);
    w.cluster.tamper("eu", w.version("r1"));
    r.suspend_all();
    let pass = w.pass(&r);
    let json = serde_json::to_string(&pass).unwrap();
    assert!(json.contains(r#""differs":"stable""#), "{json}");
    assert!(json.contains(r#""hold":"suspended""#), "{json}");
    let back: Pass = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pass);
}

#[test]
fn run_makes_a_pass_every_interval_of_the_pipeline_clock() {
    let mut w = world();
    w.commit(&ENVS, "r1", &[]);
    let r = w.reconciler();
    let start = w.clock.now();
    let mut seen = Vec::new();
    run_virtual(
        &w.clock,
        r.run(Duration::from_secs(30), |pass| {
            seen.push(pass.as_ref().map(|p| (p.at, p.actions().count())).unwrap());
            if seen.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }),
    )
    .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].1, 3);
    assert_eq!(seen[1].1, 0);
    assert_eq!(seen[1].0, start.saturating_add(Duration::from_secs(30)));
    assert_eq!(seen[2].0, start.saturating_add(Duration::from_secs(60)));
}

/// A source whose reads fail.
#[derive(Debug)]
struct Unreachable;

#[async_trait]
impl DesiredSource for Unreachable {
    async fn fetch(&self, _known: Option<&SourceRevision>) -> Result<Fetched, SourceError> {
        Err(SourceError {
            source_name: "git@example.com:shop/deploy".into(),
            message: "connection timed out".into(),
        })
    }
}

#[test]
fn an_unreadable_source_is_the_pass_error_and_deploys_nothing() {
    let w = world();
    let r = Reconciler::new(Arc::clone(&w.fleet), Unreachable, w.cluster.clone());
    let error = run_virtual(&w.clock, r.pass()).unwrap_err();
    assert!(matches!(&error, ReconcileError::Source(e) if e.source_name.contains("shop/deploy")));
    assert!(error.to_string().contains("connection timed out"));
    assert_eq!(w.cluster.changes(), 0);
    let _ = &w.pipeline;
}

// ---------------------------------------------------------------------------------------
// The property: random histories of commits, hand-made drift and person rollbacks.

/// One thing that happens between passes.
#[derive(Debug, Clone)]
enum Op {
    /// A commit: `env` should run release `release` with `replicas`.
    Commit {
        env: usize,
        release: usize,
        replicas: u8,
    },
    /// Someone changes what runs in `env` by hand.
    Drift { env: usize, release: usize },
    /// Someone changes a configuration value in `env` by hand.
    DriftConfig { env: usize },
    /// rita rolls `env` back through the fleet.
    PersonRollback { env: usize },
    /// The reconciler makes a pass.
    Pass,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..ENVS.len(), 0..RELEASES.len(), 1..4u8)
            .prop_map(|(env, release, replicas)| Op::Commit { env, release, replicas }),
        1 => (0..ENVS.len(), 0..RELEASES.len()).prop_map(|(env, release)| Op::Drift { env, release }),
        1 => (0..ENVS.len()).prop_map(|env| Op::DriftConfig { env }),
        1 => (0..ENVS.len()).prop_map(|env| Op::PersonRollback { env }),
        3 => Just(Op::Pass),
    ]
}

/// The reference model of one environment: the releases that went live there, in order
/// (by index into `RELEASES`), and the pin of a person's rollback (the desired release when
/// the reconciler first saw it, and whether a later desired change lifted it).
#[derive(Debug, Clone, Default)]
struct ModelEnv {
    deployed: Vec<usize>,
    person_rollback: bool,
    pin: Option<(Option<usize>, bool)>,
}

impl ModelEnv {
    fn live(&self) -> Option<usize> {
        self.deployed.last().copied()
    }

    /// What a pass does, by the rules the module documents; returns whether the live
    /// release is pinned after it.
    fn pass(&mut self, desired: Option<usize>) -> bool {
        let Some(want) = desired else { return false };
        if self.live() == Some(want) {
            return false;
        }
        if self.person_rollback {
            match &mut self.pin {
                None => {
                    self.pin = Some((Some(want), false));
                    return true;
                }
                Some((at, lifted)) => {
                    if !*lifted && *at != Some(want) {
                        *lifted = true;
                    }
                    if !*lifted {
                        return true;
                    }
                }
            }
        }
        match self.live() {
            Some(live) if want < live => {
                // A rollback: only to a release that was live here before.
                if self.deployed.contains(&want) {
                    self.go_live(want, false);
                }
            }
            _ => self.go_live(want, false),
        }
        false
    }

    fn go_live(&mut self, release: usize, by_person: bool) {
        self.deployed.push(release);
        self.person_rollback = by_person;
        self.pin = None;
    }

    /// The release a person's rollback puts back, if any (the fleet's rule: the last
    /// release live here before the live one, other than it).
    fn rollback_target(&self) -> Option<usize> {
        let live = self.live()?;
        self.deployed.iter().rev().copied().find(|&r| r != live)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever commits, hand-made drift and person rollbacks came before, once the source
    /// is stable and nobody touches the target, the first pass converges every environment
    /// (to the desired release and configuration, or, while a person's rollback pins it, to
    /// the release rolled back to) and the second finds nothing to do: the bound is two
    /// passes. A person's rollback is never undone while the desired version is the one the
    /// reconciler saw when it first met the rollback.
    #[test]
    fn converges_in_two_passes_once_the_source_is_stable_and_never_undoes_a_person_rollback(
        ops in proptest::collection::vec(op(), 1..24),
    ) {
        let mut w = world();
        let r = w.reconciler();
        let mut model: Vec<ModelEnv> = vec![ModelEnv::default(); ENVS.len()];
        let mut desired: Vec<Option<(usize, u8)>> = vec![None; ENVS.len()];
        let check_pins = |w: &World, model: &[ModelEnv]| -> Result<(), TestCaseError> {
            for (e, env) in ENVS.iter().enumerate() {
                let m = &model[e];
                if m.person_rollback && m.pin.as_ref().is_some_and(|(_, lifted)| !lifted) {
                    prop_assert_eq!(w.live(env), m.live().map(|r| RELEASES[r].to_owned()));
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Commit { env, release, replicas } => {
                    w.commit(&[ENVS[env]], RELEASES[release], &[("replicas", &replicas.to_string())]);
                    desired[env] = Some((release, replicas));
                }
                Op::Drift { env, release } => w.cluster.tamper(ENVS[env], w.version(RELEASES[release])),
                Op::DriftConfig { env } => w.cluster.tamper_config(ENVS[env], "replicas", "99"),
                Op::PersonRollback { env } => {
                    let target = model[env].rollback_target();
                    let done = w.person_rollback(ENVS[env]);
                    prop_assert_eq!(done, target.is_some());
                    if let Some(t) = target {
                        model[env].go_live(t, true);
                    }
                }
                Op::Pass => {
                    if desired.iter().all(Option::is_none) {
                        continue;
                    }
                    w.pass(&r);
                    for e in 0..ENVS.len() {
                        model[e].pass(desired[e].map(|d| d.0));
                    }
                    check_pins(&w, &model)?;
                }
            }
        }
        if desired.iter().all(Option::is_none) {
            return Ok(());
        }
        // The source is stable from here on.
        let first = w.pass(&r);
        let mut pinned = vec![false; ENVS.len()];
        for e in 0..ENVS.len() {
            pinned[e] = model[e].pass(desired[e].map(|d| d.0));
        }
        check_pins(&w, &model)?;
        for (e, env) in ENVS.iter().enumerate() {
            let Some((want, replicas)) = desired[e] else { continue };
            let live = model[e].live();
            prop_assert_eq!(w.live(env), live.map(|r| RELEASES[r].to_owned()), "{} after {:?}", env, first.events);
            let observed = w.cluster.observed(env);
            prop_assert_eq!(observed.stable.clone(), live.map(|r| w.version(RELEASES[r])));
            prop_assert!(observed.candidate.is_none());
            if live == Some(want) && !pinned[e] {
                prop_assert_eq!(observed.config.get("replicas").cloned(), Some(replicas.to_string()));
            }
        }
        let second = w.pass(&r);
        prop_assert_eq!(second.actions().count(), 0, "{:?}", second.events);
        for event in &second.events {
            prop_assert!(
                matches!(event.outcome, Outcome::Held { hold: Hold::Pinned { .. } } | Outcome::Refused { .. }),
                "{:?}", event
            );
        }
    }
}

#[test]
fn the_deploy_executor_is_the_only_thing_that_changes_the_cluster() {
    // The reconciler observes; only deploy stages (through the fleet) prepare, shift and
    // promote. With no deploy stage that touches the cluster, nothing changes.
    let clock = clock();
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"k")));
    let cluster = Cluster::default();
    let source = MemorySource::new();
    let pipeline = Arc::new(
        Pipeline::<Deployment>::builder("shop")
            .clock(clock.clone())
            .journal(journal)
            .stage(Stage::build("compile").run(compile()))
            .stage(Stage::test("unit").after("compile").run(ok()))
            .stage(Stage::stage("staging").run(ok()))
            .stage(Stage::deploy("roll-out").run(from_fn(|_| Ok(StageOutcome::success()))))
            .build()
            .unwrap(),
    );
    let lifecycle = Lifecycle::new([Phase::new("production").environment("eu").unwrap()]).unwrap();
    let fleet = Arc::new(
        run_virtual(
            &clock,
            Fleet::open(Arc::clone(&pipeline), lifecycle, FleetOptions::default()),
        )
        .unwrap(),
    );
    let approved = run_virtual(&clock, async {
        let built = pipeline
            .start("r1", revision("a"))
            .unwrap()
            .build(&*pipeline)
            .await
            .unwrap();
        let artifact = built.artifact().clone();
        built
            .test(&*pipeline, &artifact)
            .await
            .unwrap()
            .stage(&*pipeline, &artifact)
            .await
            .unwrap()
            .auto_approve(&*pipeline)
            .await
            .unwrap()
    });
    run_virtual(&clock, fleet.register(&approved)).unwrap();
    source
        .commit(
            "c1",
            [(
                "eu",
                Desired::new(Version {
                    release: approved.id().clone(),
                    digest: approved.artifact().digest.clone(),
                }),
            )],
        )
        .unwrap();
    let r = Reconciler::new(Arc::clone(&fleet), source, cluster.clone());
    let pass = run_virtual(&clock, r.pass()).unwrap();
    assert_eq!(pass.actions().count(), 1);
    assert_eq!(cluster.changes(), 0);
    assert_eq!(
        fleet
            .ledger()
            .live_in("eu")
            .map(|d| d.release.to_string())
            .as_deref(),
        Some("r1")
    );
}

/// Monitoring of the simulated cluster: an environment's error rate, its stable and
/// candidate releases mixed by the candidate's weight; `r3` fails half of its requests.
#[async_trait]
impl MetricSource for Cluster {
    async fn sample(&self, _query: &str, ctx: &GateContext<'_>) -> Option<f64> {
        let rate = |v: &Version| if v.release == "r3" { 0.5 } else { 0.0 };
        let observed = self.observed(ctx.environment().name().as_str());
        let stable = observed.stable.as_ref().map_or(0.0, rate);
        Some(observed.candidate.as_ref().map_or(stable, |(v, w)| {
            let share = f64::from(w.get()) / 100.0;
            share * rate(v) + (1.0 - share) * stable
        }))
    }
}

/// A deploy stage that is a real rollout: a canary (20 %, five minutes, 60 %, five
/// minutes) whose error rate is analysed every minute, on the cluster.
fn canary(cluster: &Cluster, _: &MemorySource) -> BoxExecutor {
    let steps = Canary::new()
        .weight(Weight::percent(20).unwrap())
        .pause(Pause::For(Duration::from_secs(300)))
        .weight(Weight::percent(60).unwrap())
        .pause(Pause::For(Duration::from_secs(300)));
    let analysis = Analysis::new([MetricCheck::new("errors", "5xx", Threshold::AtMost(0.01))])
        .interval(Duration::from_secs(60));
    Box::new(
        Rollout::new(RolloutStrategy::Canary(steps), cluster.clone())
            .analysis(analysis, cluster.clone()),
    )
}

#[test]
fn a_canary_its_analysis_rolls_back_is_a_failed_outcome_and_not_tried_again_until_the_desired_entry_changes()
 {
    let mut w = world_deploying(RollbackPolicy::people(["rita"]).unwrap(), canary);
    w.commit(&ENVS, "r2", &[]);
    let r = w.reconciler();
    let first = w.pass(&r);
    assert_eq!(first.actions().count(), 3, "{:?}", first.events);
    assert!(w.pass(&r).converged(), "r2's canaries are promoted");

    w.commit(&ENVS, "r3", &[]);
    let failed = w.pass(&r);
    for env in ENVS {
        let event = event_for(&failed, env).unwrap();
        let Outcome::Failed { action, reason, .. } = &event.outcome else {
            panic!("{env}: {:?}", event.outcome);
        };
        assert!(matches!(action, Action::Promote { release } if release == "r3"));
        assert!(reason.contains("rolled back"), "{reason}");
        // The rollout aborted: traffic back on r2, no candidate left, r2 still live.
        let observed = w.cluster.observed(env);
        assert_eq!(observed.stable, Some(w.version("r2")));
        assert_eq!(observed.candidate, None);
        assert_eq!(w.live(env).as_deref(), Some("r2"));
    }

    // The same desired state: held, nothing deployed, pass after pass.
    let changes = w.cluster.changes();
    for _ in 0..3 {
        let held = w.pass(&r);
        assert_eq!(held.events.len(), 3);
        for event in &held.events {
            assert!(
                matches!(&event.outcome, Outcome::Held { hold: Hold::Failed { release, .. } } if release == "r3"),
                "{:?}",
                event.outcome
            );
        }
    }
    assert_eq!(
        w.cluster.changes(),
        changes,
        "a held environment is not touched"
    );

    // A reconciler started afresh reads the failure from the fleet's ledger and holds too.
    let restarted = w.reconciler();
    let held = w.pass(&restarted);
    assert!(held.events.iter().all(|e| matches!(
        e.outcome,
        Outcome::Held {
            hold: Hold::Failed { .. }
        }
    )));
    assert_eq!(w.cluster.changes(), changes);

    // `retry` tries one environment again (and its canary fails again); the others hold.
    r.retry(&name("eu"));
    let retried = w.pass(&r);
    assert!(matches!(
        event_for(&retried, "eu").unwrap().outcome,
        Outcome::Failed { .. }
    ));
    for env in ["us", "ap"] {
        assert!(matches!(
            event_for(&retried, env).unwrap().outcome,
            Outcome::Held {
                hold: Hold::Failed { .. }
            }
        ));
    }
    assert!(matches!(
        event_for(&w.pass(&r), "eu").unwrap().outcome,
        Outcome::Held {
            hold: Hold::Failed { .. }
        }
    ));

    // A new desired entry for the environment (here other configuration) is tried again.
    w.commit(&ENVS, "r3", &[("replicas", "5")]);
    let again = w.pass(&r);
    assert_eq!(
        again
            .events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Failed { .. }))
            .count(),
        3
    );

    // A good release goes out through the canary, and the failure is behind it.
    w.commit(&ENVS, "r4", &[]);
    let good = w.pass(&r);
    assert_eq!(good.actions().count(), 3);
    for env in ENVS {
        assert_eq!(w.live(env).as_deref(), Some("r4"));
        assert_eq!(w.cluster.running(env).as_deref(), Some("r4"));
    }
    assert!(w.pass(&r).converged());
}
