//! Fleets: lifecycles of phases, promotion of one digest, environment locks and queues as
//! journal facts, older-over-newer refusals, rollbacks, the ledger re-derived on restart, and
//! what an edited journal or ledger meets. Every test runs in virtual time.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proptest::prelude::*;
use tollgate::executor::{from_async_fn, from_fn};
use tollgate::fleet::{
    Actor, AutoEntry, DeployKind, Fleet, FleetError, FleetFact, FleetOptions, Lifecycle, Phase,
    PhaseRule, PhasesPassed, QueueMode, RollbackPolicy, TicketStatus, Waiting,
};
use tollgate::gate::{GateRecord, from_fn as gate_fn};
use tollgate::journal::{ChainKey, Journal, JournalError, MemoryJournal};
use tollgate::pipeline::PipelineBuilder;
use tollgate::prelude::*;
use tollgate::time::{Clock, ManualClock, run_virtual};

use support::{clock, compile, ok, revision};

/// What the deploy stages saw: per environment how many run now and the most that ever ran
/// at once, and every (environment, release, digest) deployed, in order.
#[derive(Debug, Default)]
struct Seen {
    running: BTreeMap<String, usize>,
    most: BTreeMap<String, usize>,
    deployed: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Default)]
struct Tracker(Arc<Mutex<Seen>>);

impl Tracker {
    fn with<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Counts of the build and test stages' runs, to show that fleets never rebuild.
#[derive(Debug, Clone, Default)]
struct Runs(Arc<Mutex<usize>>);

impl Runs {
    fn count(&self) -> usize {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A deployment pipeline `shop` on `clock` writing to `journal`, whose deploy stage takes
/// `deploy_for` of virtual time and reports to `tracker`, and whose test stage counts its runs
/// in `runs`.
fn pipeline(
    clock: &ManualClock,
    journal: Arc<MemoryJournal>,
    tracker: &Tracker,
    runs: &Runs,
    deploy_for: Duration,
) -> Arc<Pipeline<Deployment>> {
    pipeline_with(clock, journal, tracker, runs, deploy_for, |b| b)
}

/// [`pipeline`], with `extra` (gates) added to its builder.
fn pipeline_with(
    clock: &ManualClock,
    journal: Arc<MemoryJournal>,
    tracker: &Tracker,
    runs: &Runs,
    deploy_for: Duration,
    extra: impl FnOnce(PipelineBuilder<Deployment>) -> PipelineBuilder<Deployment>,
) -> Arc<Pipeline<Deployment>> {
    let tracker = tracker.clone();
    let runs = runs.clone();
    let deploy = from_async_fn(move |ctx| {
        let tracker = tracker.clone();
        Box::pin(async move {
            let env = ctx
                .environment()
                .map(|e| e.name().to_string())
                .unwrap_or_default();
            let digest = ctx
                .artifact()
                .map(|a| a.digest.to_string())
                .unwrap_or_default();
            tracker.with(|seen| {
                let now = seen.running.entry(env.clone()).or_default();
                *now += 1;
                let now = *now;
                let most = seen.most.entry(env.clone()).or_default();
                *most = (*most).max(now);
            });
            ctx.clock()
                .sleep_until(ctx.clock().now().saturating_add(deploy_for))
                .await;
            tracker.with(|seen| {
                *seen.running.entry(env.clone()).or_default() -= 1;
                seen.deployed.push((env, ctx.release().to_string(), digest));
            });
            Ok(StageOutcome::success())
        })
    });
    Arc::new(
        extra(Pipeline::<Deployment>::builder("shop"))
            .clock(clock.clone())
            .journal(journal)
            .stage(Stage::build("compile").run(compile()))
            .stage(Stage::test("unit").after("compile").run(from_fn(move |_| {
                *runs.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                Ok(StageOutcome::success())
            })))
            .stage(Stage::stage("staging").run(ok()))
            .stage(Stage::deploy("roll-out").run(deploy))
            .build()
            .expect("valid pipeline"),
    )
}

/// Dev → Test (two environments, one is enough) → Production (eu, then us).
fn lifecycle() -> Lifecycle {
    Lifecycle::new([
        Phase::new("dev").environment("dev").unwrap(),
        Phase::new("test")
            .wave(["test-a", "test-b"])
            .unwrap()
            .rule(PhaseRule::AtLeast(1)),
        Phase::new("production")
            .wave(["eu"])
            .unwrap()
            .wave(["us"])
            .unwrap(),
    ])
    .unwrap()
}

fn options() -> FleetOptions {
    FleetOptions {
        rollback: RollbackPolicy::people(["rita"]).unwrap(),
        ..FleetOptions::default()
    }
}

fn ci() -> Actor {
    Actor::automation("ci")
}

/// Everything a test needs: clock, journal, pipeline, a fleet, what the deploy stages saw.
struct World {
    clock: ManualClock,
    journal: Arc<MemoryJournal>,
    pipeline: Arc<Pipeline<Deployment>>,
    fleet: Fleet<Deployment>,
    tracker: Tracker,
    runs: Runs,
    options: FleetOptions,
    lifecycle: Lifecycle,
}

fn world_with(options: FleetOptions, deploy_for: Duration) -> World {
    world_from(options, deploy_for, lifecycle(), |_, b| b)
}

/// A world over `lifecycle` whose pipeline's builder also goes through `extra` (given the
/// journal, for gates that read it).
fn world_from(
    options: FleetOptions,
    deploy_for: Duration,
    lifecycle: Lifecycle,
    extra: impl FnOnce(Arc<MemoryJournal>, PipelineBuilder<Deployment>) -> PipelineBuilder<Deployment>,
) -> World {
    let clock = clock();
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"fleet tests")));
    let tracker = Tracker::default();
    let runs = Runs::default();
    let reads = Arc::clone(&journal);
    let pipeline = pipeline_with(
        &clock,
        Arc::clone(&journal),
        &tracker,
        &runs,
        deploy_for,
        |b| extra(reads, b),
    );
    let fleet = run_virtual(
        &clock,
        Fleet::open(Arc::clone(&pipeline), lifecycle.clone(), options.clone()),
    )
    .expect("an empty fleet opens");
    World {
        clock,
        journal,
        pipeline,
        fleet,
        tracker,
        runs,
        options,
        lifecycle,
    }
}

fn world() -> World {
    world_with(options(), Duration::from_secs(30))
}

impl World {
    fn tested(&self, id: &str) -> Release<Tested, Deployment> {
        let p = &*self.pipeline;
        run_virtual(&self.clock, async {
            let built = p
                .start(id, revision(&format!("rev-{id}")))
                .unwrap()
                .build(p)
                .await
                .unwrap();
            let artifact = built.artifact().clone();
            built.test(p, &artifact).await.unwrap()
        })
    }

    fn approved(&self, tested: Release<Tested, Deployment>) -> Release<Approved, Deployment> {
        let p = &*self.pipeline;
        run_virtual(&self.clock, async {
            let artifact = tested.artifact().clone();
            let staged = tested.stage(p, &artifact).await.unwrap();
            staged.auto_approve(p).await.unwrap()
        })
    }

    fn promote<S: tollgate::fleet::PassedTests>(
        &self,
        release: &Release<S, Deployment>,
        env: &str,
    ) -> Result<tollgate::fleet::Deployment, FleetError> {
        run_virtual(&self.clock, self.fleet.promote(release, env, ci()))
    }

    fn live(&self, env: &str) -> Option<String> {
        self.fleet
            .ledger()
            .live_in(env)
            .map(|d| d.release.to_string())
    }

    fn reopen(&self) -> Result<Fleet<Deployment>, FleetError> {
        run_virtual(
            &self.clock,
            Fleet::open(
                Arc::clone(&self.pipeline),
                self.lifecycle.clone(),
                self.options.clone(),
            ),
        )
    }
}

#[test]
fn promotion_runs_only_the_deploy_stages_with_the_tested_digest_and_the_environment() {
    let w = world();
    let r1 = w.tested("1.0");
    let tests_before = w.runs.count();
    let done = w.promote(&r1, "dev").unwrap();
    assert!(
        matches!(done.status, TicketStatus::Deployed { .. }),
        "{done:?}"
    );
    assert_eq!(done.digest, r1.artifact().digest);
    w.promote(&r1, "test-b").unwrap();
    assert_eq!(w.runs.count(), tests_before, "no test stage ran again");
    let deployed = w.tracker.with(|s| s.deployed.clone());
    let digest = r1.artifact().digest.to_string();
    assert_eq!(
        deployed,
        vec![
            ("dev".to_owned(), "1.0".to_owned(), digest.clone()),
            ("test-b".to_owned(), "1.0".to_owned(), digest),
        ]
    );
    assert_eq!(w.live("dev").as_deref(), Some("1.0"));
}

#[test]
fn phases_and_waves_are_never_skipped_and_production_needs_an_approval() {
    let w = world();
    let r1 = w.tested("1.0");
    assert!(matches!(
        w.promote(&r1, "test-a"),
        Err(FleetError::PhaseNotPassed { phase, .. }) if phase == "dev"
    ));
    w.promote(&r1, "dev").unwrap();
    w.promote(&r1, "test-a").unwrap();
    assert!(matches!(
        w.promote(&r1, "eu"),
        Err(FleetError::NotApproved { environment, .. }) if environment.as_str() == "eu"
    ));
    let r1 = w.approved(r1);
    assert!(matches!(
        w.promote(&r1, "us"),
        Err(FleetError::WaveNotDone { environment, .. }) if environment.as_str() == "eu"
    ));
    w.promote(&r1, "eu").unwrap();
    w.promote(&r1, "us").unwrap();
    assert_eq!(w.live("us").as_deref(), Some("1.0"));
    assert!(matches!(
        w.promote(&r1, "nowhere"),
        Err(FleetError::UnknownEnvironment { environment }) if environment == "nowhere"
    ));
}

#[test]
fn a_phase_entered_by_people_refuses_anyone_else() {
    let clock = clock();
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"k")));
    let p = pipeline(
        &clock,
        journal,
        &Tracker::default(),
        &Runs::default(),
        Duration::ZERO,
    );
    let lifecycle = Lifecycle::new([Phase::new("prod")
        .environment("prod")
        .unwrap()
        .entered_by(["rita"])
        .unwrap()])
    .unwrap();
    let fleet = run_virtual(&clock, Fleet::open(Arc::clone(&p), lifecycle, options())).unwrap();
    let approved = run_virtual(&clock, async {
        let built = p
            .start("1.0", revision("a"))
            .unwrap()
            .build(&p)
            .await
            .unwrap();
        let artifact = built.artifact().clone();
        let tested = built.test(&p, &artifact).await.unwrap();
        let staged = tested.stage(&p, &artifact).await.unwrap();
        staged.auto_approve(&p).await.unwrap()
    });
    let refused = run_virtual(&clock, fleet.promote(&approved, "prod", ci()));
    assert!(matches!(refused, Err(FleetError::NotAllowed { actor, .. }) if actor == ci()));
    let rita = Actor::person("rita").unwrap();
    run_virtual(&clock, fleet.promote(&approved, "prod", rita)).unwrap();
}

#[test]
fn an_older_release_over_a_newer_one_is_refused_and_recorded() {
    let w = world();
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r2, "dev").unwrap();
    let refused = w.promote(&r1, "dev");
    assert!(matches!(
        &refused,
        Err(FleetError::OlderOverNewer { release, live, .. })
            if release.as_str() == "1.0" && live.as_str() == "1.1"
    ));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Release);
    assert_eq!(w.live("dev").as_deref(), Some("1.1"));
    let facts = fleet_facts(&w.journal);
    assert!(facts.iter().any(|f| matches!(f,
        FleetFact::Refused { release, reason, .. }
            if release.as_str() == "1.0" && reason.contains("older"))));
    // The same release again is not a promotion.
    assert!(matches!(
        w.promote(&r2, "dev"),
        Err(FleetError::AlreadyLive { .. })
    ));
}

#[test]
fn rollback_puts_the_last_good_release_back_as_a_recorded_move_of_its_own() {
    let w = world();
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r1, "dev").unwrap();
    w.promote(&r2, "dev").unwrap();
    let tests_before = w.runs.count();
    let sam = Actor::person("sam").unwrap();
    assert!(matches!(
        run_virtual(&w.clock, w.fleet.rollback("dev", sam, "bad")),
        Err(FleetError::NotAllowed { .. })
    ));
    let rita = Actor::person("rita").unwrap();
    let back = run_virtual(&w.clock, w.fleet.rollback("dev", rita.clone(), "500s")).unwrap();
    assert!(back.is_rollback());
    assert_eq!(back.release.as_str(), "1.0");
    assert_eq!(back.digest, r1.artifact().digest);
    assert!(
        matches!(&back.kind, DeployKind::Rollback { from, reason } if from.as_str() == "1.1" && reason == "500s")
    );
    assert_eq!(w.live("dev").as_deref(), Some("1.0"));
    assert_eq!(w.runs.count(), tests_before, "a rollback runs no test");
    // A redeploy is told apart from a rollback.
    let again = run_virtual(&w.clock, w.fleet.redeploy("dev", ci())).unwrap();
    assert_eq!(again.kind, DeployKind::Redeploy);
    assert!(!again.is_rollback());
    // An automated trigger may roll back too, and is recorded by name.
    w.promote(&r2, "dev").unwrap();
    let monitor = Actor::automation("error-rate monitor");
    let auto = run_virtual(&w.clock, w.fleet.rollback("dev", monitor.clone(), "errors")).unwrap();
    assert_eq!(auto.by, monitor);
    let kinds: Vec<String> = w
        .fleet
        .ledger()
        .environment("dev")
        .unwrap()
        .history
        .iter()
        .map(|d| format!("{} {}", d.release, d.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            "1.0 promote",
            "1.1 promote",
            "1.0 rollback from 1.1",
            "1.0 redeploy",
            "1.1 promote",
            "1.0 rollback from 1.1"
        ]
    );
    // Nothing to roll back to in an environment with one release.
    w.promote(&r1, "test-a").unwrap();
    assert!(matches!(
        run_virtual(&w.clock, w.fleet.rollback("test-a", rita.clone(), "x")),
        Err(FleetError::NothingToRollBack { .. })
    ));
    // Only to a release that was live there.
    assert!(matches!(
        run_virtual(&w.clock, w.fleet.rollback_to("test-a", "1.1", rita, "x")),
        Err(FleetError::NeverLive { release, environment })
            if release.as_str() == "1.1" && environment.as_str() == "test-a"
    ));
}

#[test]
fn another_digest_under_a_registered_id_is_refused() {
    let w = world();
    let r1 = w.tested("1.0");
    w.promote(&r1, "dev").unwrap();
    // The same pipeline definition on another journal builds `1.0` from another revision.
    let other_journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"other")));
    let other = pipeline(
        &w.clock,
        other_journal,
        &Tracker::default(),
        &Runs::default(),
        Duration::ZERO,
    );
    let impostor = run_virtual(&w.clock, async {
        let built = other
            .start("1.0", revision("evil"))
            .unwrap()
            .build(&other)
            .await
            .unwrap();
        let artifact = built.artifact().clone();
        built.test(&other, &artifact).await.unwrap()
    });
    assert_ne!(impostor.artifact().digest, r1.artifact().digest);
    let refused = w.promote(&impostor, "test-a");
    assert!(matches!(
        refused,
        Err(FleetError::OtherDigest { expected, found, .. })
            if expected == r1.artifact().digest && found == impostor.artifact().digest
    ));
}

#[test]
fn release_ids_are_unique_per_pipeline() {
    let w = world();
    let _first = w.tested("1.0");
    let second = run_virtual(&w.clock, async {
        w.pipeline
            .start("1.0", revision("b"))
            .unwrap()
            .build(&w.pipeline)
            .await
    });
    assert_eq!(second.unwrap_err().kind(), ErrorKind::Conflict);
}

/// Two fleets (two processes) share a journal: `a` deploys r1 to dev for 60 s, while `b`
/// asks for r3 then r2 (r2 asked last); returns the order releases went live in dev and
/// the releases superseded.
fn queue_order(mode: QueueMode) -> (Vec<String>, Vec<String>) {
    let w = world_with(
        FleetOptions {
            queue_mode: mode,
            ..options()
        },
        Duration::from_secs(60),
    );
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    let r3 = w.tested("1.2");
    let b = w.reopen().unwrap();
    run_virtual(&w.clock, async {
        let first = w.fleet.promote(&r1, "dev", ci());
        let others = async {
            w.clock
                .sleep_until(w.clock.now().saturating_add(Duration::from_secs(1)))
                .await;
            let r3 = b.promote(&r3, "dev", ci()).await.unwrap();
            assert_eq!(
                r3.status,
                TicketStatus::Queued,
                "the lock is held by the other fleet"
            );
            b.promote(&r2, "dev", ci()).await.unwrap();
        };
        let (first, ()) = futures::join!(first, others);
        first.unwrap();
    });
    let ledger = w.fleet.ledger();
    let history = &ledger.environment("dev").unwrap().history;
    let superseded = history
        .iter()
        .filter(|d| matches!(d.status, TicketStatus::Superseded { .. }));
    assert_eq!(
        w.tracker.with(|s| s.most["dev"]),
        1,
        "one deployment at a time"
    );
    let went_live = w
        .tracker
        .with(|s| s.deployed.iter().map(|(_, r, _)| r.clone()).collect());
    (
        went_live,
        superseded.map(|d| d.release.to_string()).collect(),
    )
}

#[test]
fn oldest_first_runs_in_asking_order_and_supersedes_what_became_older() {
    assert_eq!(
        queue_order(QueueMode::OldestFirst),
        (vec!["1.0".into(), "1.2".into()], vec!["1.1".into()])
    );
}

#[test]
fn newest_first_runs_the_last_asked_first() {
    assert_eq!(
        queue_order(QueueMode::NewestFirst),
        (vec!["1.0".into(), "1.1".into(), "1.2".into()], vec![])
    );
}

#[test]
fn newest_ready_first_skips_superseded_releases() {
    assert_eq!(
        queue_order(QueueMode::NewestReadyFirst),
        (vec!["1.0".into(), "1.2".into()], vec!["1.1".into()])
    );
}

#[test]
fn a_full_queue_refuses_with_its_limit() {
    let w = world_with(
        FleetOptions {
            queue_limit: 1,
            ..options()
        },
        Duration::from_secs(60),
    );
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    let r3 = w.tested("1.2");
    let b = w.reopen().unwrap();
    run_virtual(&w.clock, async {
        let first = w.fleet.promote(&r1, "dev", ci());
        let others = async {
            w.clock
                .sleep_until(w.clock.now().saturating_add(Duration::from_secs(1)))
                .await;
            b.promote(&r2, "dev", ci()).await.unwrap();
            let full = b.promote(&r3, "dev", ci()).await;
            assert!(
                matches!(full, Err(FleetError::QueueFull { limit: 1, .. })),
                "{full:?}"
            );
            assert_eq!(full.unwrap_err().kind(), ErrorKind::GatePending);
        };
        let (first, ()) = futures::join!(first, others);
        first.unwrap();
    });
}

#[test]
fn a_deployment_cut_off_is_taken_over_once_its_lease_is_over() {
    let w = world_with(
        FleetOptions {
            lock_lease: Duration::from_secs(600),
            ..options()
        },
        Duration::from_secs(3600),
    );
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    // `a` takes dev's lock and stops (its process dies) a minute into the deployment.
    run_virtual(&w.clock, async {
        let cut = w
            .clock
            .sleep_until(w.clock.now().saturating_add(Duration::from_secs(60)));
        futures::future::select(Box::pin(w.fleet.promote(&r1, "dev", ci())), cut).await;
    });
    let b = w.reopen().unwrap();
    let waiting = run_virtual(&w.clock, b.promote(&r2, "dev", ci())).unwrap();
    assert_eq!(waiting.status, TicketStatus::Queued);
    assert!(b.ledger().environment("dev").unwrap().running.is_some());
    w.clock.advance(Duration::from_secs(600));
    run_virtual(&w.clock, b.drain("dev")).unwrap();
    let ledger = b.ledger();
    let history = &ledger.environment("dev").unwrap().history;
    assert!(
        matches!(history[0].status, TicketStatus::Interrupted { .. }),
        "{history:?}"
    );
    assert!(matches!(history[1].status, TicketStatus::Deployed { .. }));
    assert_eq!(ledger.live_in("dev").unwrap().release.as_str(), "1.1");
}

#[test]
fn a_restart_re_derives_the_same_ledger() {
    let w = world();
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r1, "dev").unwrap();
    w.promote(&r2, "dev").unwrap();
    w.promote(&r2, "test-a").unwrap();
    let rita = Actor::person("rita").unwrap();
    run_virtual(&w.clock, w.fleet.rollback("dev", rita, "slow")).unwrap();
    let reopened = w.reopen().unwrap();
    assert_eq!(reopened.ledger(), w.fleet.ledger());
    assert!(
        reopened
            .ledger()
            .first_difference(&w.fleet.ledger())
            .is_none()
    );
}

#[test]
fn an_edited_fleet_fact_breaks_the_chain() {
    let w = world();
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r1, "dev").unwrap();
    w.promote(&r2, "dev").unwrap();
    // Someone who can write the store swaps the live release in dev's last deployment.
    w.journal.entries_mut(|entries| {
        let queued = entries
            .iter_mut()
            .rev()
            .find(|s| {
                s.key.contains("env") && String::from_utf8_lossy(&s.payload).contains("\"queued\"")
            })
            .unwrap();
        let text = String::from_utf8(queued.payload.clone())
            .unwrap()
            .replace("1.1", "1.0");
        queued.payload = text.into_bytes();
    });
    assert!(matches!(
        w.reopen(),
        Err(FleetError::Journal(JournalError::Corrupt { .. }))
    ));
}

#[test]
fn facts_the_fleet_could_not_have_written_are_refused_on_replay() {
    // Each case appends, with the key (a buggy or rogue writer), one fleet fact the rules
    // forbid, after r2 went live in dev.
    type Forge = Box<dyn Fn(&World) -> FleetFact>;
    let cases: Vec<(&str, Forge)> = vec![
        (
            "older over newer",
            Box::new(|w: &World| FleetFact::Queued {
                environment: "dev".parse().unwrap(),
                release: "1.0".parse().unwrap(),
                kind: DeployKind::Promote,
                by: ci(),
                at: w.clock.now(),
                gates: Vec::new(),
                automatic: None,
            }),
        ),
        (
            "skipped phase",
            Box::new(|w: &World| FleetFact::Queued {
                environment: "eu".parse().unwrap(),
                release: "1.1".parse().unwrap(),
                kind: DeployKind::Promote,
                by: ci(),
                at: w.clock.now(),
                gates: Vec::new(),
                automatic: None,
            }),
        ),
        (
            "automatic, naming a phase whose rule was not the one met",
            Box::new(|w: &World| FleetFact::Queued {
                environment: "test-a".parse().unwrap(),
                release: "1.1".parse().unwrap(),
                kind: DeployKind::Promote,
                by: Actor::automation("tick"),
                at: w.clock.now(),
                gates: Vec::new(),
                automatic: Some(AutoEntry {
                    phase: "test".into(),
                    after: None,
                }),
            }),
        ),
        (
            "settings recorded twice",
            Box::new(|w: &World| {
                fleet_facts(&w.journal)
                    .into_iter()
                    .find(|f| matches!(f, FleetFact::Settings { .. }))
                    .unwrap()
            }),
        ),
        (
            "finished twice, without the lock",
            Box::new(|w: &World| {
                fleet_facts(&w.journal)
                    .into_iter()
                    .rev()
                    .find(|f| matches!(f, FleetFact::Finished { .. }))
                    .unwrap()
            }),
        ),
    ];
    for (name, forge) in cases {
        let w = world();
        let r1 = w.tested("1.0");
        let r2 = w.tested("1.1");
        w.promote(&r1, "dev").unwrap();
        w.promote(&r2, "dev").unwrap();
        let fact = forge(&w);
        run_virtual(
            &w.clock,
            w.journal.append(vec![fact.to_entry(w.pipeline.name())]),
        )
        .unwrap();
        let reopened = w.reopen();
        assert!(
            matches!(reopened, Err(FleetError::Inconsistent { .. })),
            "{name}: {reopened:?}"
        );
    }
}

#[test]
fn a_release_never_tested_cannot_be_registered_in_the_journal() {
    let w = world();
    let built = run_virtual(&w.clock, async {
        w.pipeline
            .start("0.9", revision("x"))
            .unwrap()
            .build(&w.pipeline)
            .await
            .unwrap()
    });
    let fact = FleetFact::Registered {
        release: built.id().clone(),
        ordinal: 1,
        revision: "x".into(),
        artifact: built.artifact().clone(),
        at: w.clock.now(),
    };
    run_virtual(
        &w.clock,
        w.journal.append(vec![fact.to_entry(w.pipeline.name())]),
    )
    .unwrap();
    let reopened = w.reopen();
    assert!(
        matches!(&reopened, Err(FleetError::Inconsistent { reason, .. }) if reason.contains("tested")),
        "{reopened:?}"
    );
}

#[test]
fn an_edited_ledger_is_told_from_the_journals() {
    let w = world();
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r1, "dev").unwrap();
    w.promote(&r2, "dev").unwrap();
    let json = serde_json::to_string(&w.fleet.ledger()).unwrap();
    w.fleet
        .check_ledger(&serde_json::from_str(&json).unwrap())
        .unwrap();
    let mut edited: tollgate::fleet::Ledger = serde_json::from_str(&json).unwrap();
    let dev = edited
        .environments
        .iter_mut()
        .find(|e| e.environment.as_str() == "dev")
        .unwrap();
    dev.live = Some(dev.history[0].clone());
    let error = w.fleet.check_ledger(&edited).unwrap_err();
    assert!(error.to_string().contains("environment `dev`"), "{error}");
}

#[test]
fn the_dashboard_shows_releases_by_environments_and_what_waits() {
    let w = world();
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r1, "dev").unwrap();
    w.promote(&r2, "dev").unwrap();
    w.promote(&r2, "test-a").unwrap();
    let text = w.fleet.ledger().to_string();
    let row = |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap().to_owned();
    assert!(row("1.1").contains("LIVE"), "{text}");
    assert!(row("1.0").contains("was"), "{text}");
    assert!(
        text.contains("1.1 waits for approval before production"),
        "{text}"
    );
    assert!(text.contains("dev (dev): 1.1"), "{text}");
}

/// A gate whose verdict the test sets, and what it saw each time it was asked.
#[derive(Clone, Default)]
struct Switch {
    verdict: Arc<Mutex<Option<Verdict>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Switch {
    fn set(&self, verdict: Verdict) {
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
    }

    fn gate(&self, name: &str) -> impl Gate + 'static {
        let me = self.clone();
        gate_fn(name, move |ctx| {
            me.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!(
                    "{} {} {} {}",
                    ctx.release().id(),
                    ctx.release().state().as_str(),
                    ctx.move_(),
                    ctx.environment().name()
                ));
            me.verdict
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or(Verdict::Open)
        })
    }
}

fn gate_waits(fleet: &Fleet<Deployment>, release: &str) -> Vec<(String, String)> {
    fleet
        .ledger()
        .release(release)
        .map(|r| {
            r.waiting
                .iter()
                .filter_map(|w| match w {
                    Waiting::Gate {
                        environment, gate, ..
                    } => Some((environment.to_string(), gate.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_closed_gate_refuses_a_fleet_deployment_and_a_pending_one_parks_it_in_the_ledger() {
    let budget = Switch::default();
    let b = budget.clone();
    let w = world_from(
        options(),
        Duration::from_secs(30),
        lifecycle(),
        move |_, p| p.environment_gate("dev", b.gate("error budget")).unwrap(),
    );
    let r1 = w.tested("1.0");
    budget.set(Verdict::closed("budget spent"));
    let refused = w.promote(&r1, "dev");
    assert!(
        matches!(&refused, Err(FleetError::GateClosed { gate, reason, environment, kind, .. })
            if gate == "error budget" && reason == "budget spent"
                && environment.as_str() == "dev" && **kind == DeployKind::Promote),
        "{refused:?}"
    );
    assert_eq!(w.live("dev"), None);
    let until = w.clock.now().saturating_add(Duration::from_secs(3600));
    budget.set(Verdict::Pending {
        waiting_for: "an hour of metrics".into(),
        until: Some(until),
    });
    let parked = w.promote(&r1, "dev");
    assert!(
        matches!(&parked, Err(FleetError::GatePending { gate, until: Some(u), .. })
            if gate == "error budget" && *u == until),
        "{parked:?}"
    );
    assert_eq!(
        gate_waits(&w.fleet, "1.0"),
        [("dev".to_owned(), "error budget".to_owned())]
    );
    let text = w.fleet.ledger().to_string();
    assert!(
        text.contains("1.0 waits on gate `error budget` for dev: an hour of metrics"),
        "{text}"
    );
    assert_eq!(w.reopen().unwrap().ledger(), w.fleet.ledger());
    budget.set(Verdict::Open);
    w.promote(&r1, "dev").unwrap();
    assert_eq!(w.live("dev").as_deref(), Some("1.0"));
    assert!(gate_waits(&w.fleet, "1.0").is_empty());
    // The gate saw the release as its own facts make it, on the deploy move, aimed at dev.
    let seen = budget.seen.lock().unwrap().clone();
    assert_eq!(seen, vec!["1.0 tested deploy dev".to_owned(); 3]);
    // Every verdict is a fact: the closed one with the refusal, the pending one parked, the
    // open one with the deployment queued.
    let verdicts = |gates: &[GateRecord]| -> Vec<String> {
        gates
            .iter()
            .map(|g| format!("{} {}", g.gate, g.verdict))
            .collect()
    };
    let mut recorded = Vec::new();
    for fact in fleet_facts(&w.journal) {
        match fact {
            FleetFact::Refused { gates, .. } | FleetFact::Parked { gates, .. } => {
                recorded.extend(verdicts(&gates));
            }
            FleetFact::Queued { gates, .. } => recorded.extend(verdicts(&gates)),
            _ => {}
        }
    }
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert!(
        recorded[0].ends_with("closed: budget spent"),
        "{recorded:?}"
    );
    assert!(
        recorded[1].starts_with("error budget pending")
            && recorded[1].ends_with("an hour of metrics"),
        "{recorded:?}"
    );
    assert_eq!(recorded[2], "error budget open");
    // Dev's gate guards dev only.
    budget.set(Verdict::closed("budget spent"));
    w.promote(&r1, "test-a").unwrap();
    // A redeploy asks the gates too.
    let again = run_virtual(&w.clock, w.fleet.redeploy("dev", ci()));
    assert!(
        matches!(
            &again,
            Err(FleetError::GateClosed { kind, .. }) if **kind == DeployKind::Redeploy
        ),
        "{again:?}"
    );
}

#[test]
fn a_rollback_asks_no_gate_not_even_a_change_window() {
    let window = Switch::default();
    let g = window.clone();
    let w = world_from(
        options(),
        Duration::from_secs(30),
        lifecycle(),
        move |_, p| p.gate(Move::Deploy, g.gate("change window")),
    );
    let r1 = w.tested("1.0");
    let r2 = w.tested("1.1");
    w.promote(&r1, "dev").unwrap();
    w.promote(&r2, "dev").unwrap();
    window.set(Verdict::closed("frozen for the holidays"));
    assert!(matches!(
        w.promote(&w.tested("1.2"), "dev"),
        Err(FleetError::GateClosed { .. })
    ));
    let asked = window.seen.lock().unwrap().len();
    let rita = Actor::person("rita").unwrap();
    let back = run_virtual(&w.clock, w.fleet.rollback("dev", rita, "500s")).unwrap();
    assert!(matches!(back.status, TicketStatus::Deployed { .. }));
    assert_eq!(w.live("dev").as_deref(), Some("1.0"));
    assert_eq!(
        window.seen.lock().unwrap().len(),
        asked,
        "the rollback asked no gate"
    );
    let reopened = w.reopen().unwrap();
    assert_eq!(reopened.ledger(), w.fleet.ledger());
}

#[test]
fn a_deployment_queued_without_its_gates_verdicts_is_refused_on_replay() {
    let budget = Switch::default();
    let b = budget.clone();
    let w = world_from(
        options(),
        Duration::from_secs(30),
        lifecycle(),
        move |_, p| p.environment_gate("dev", b.gate("error budget")).unwrap(),
    );
    let r1 = w.tested("1.0");
    w.promote(&r1, "dev").unwrap();
    let r2 = w.tested("1.1");
    run_virtual(&w.clock, w.fleet.register(&r2)).unwrap();
    let forged = FleetFact::Queued {
        environment: "dev".parse().unwrap(),
        release: "1.1".parse().unwrap(),
        kind: DeployKind::Promote,
        by: ci(),
        at: w.clock.now(),
        gates: Vec::new(),
        automatic: None,
    };
    run_virtual(
        &w.clock,
        w.journal.append(vec![forged.to_entry(w.pipeline.name())]),
    )
    .unwrap();
    let reopened = w.reopen();
    assert!(
        matches!(&reopened, Err(FleetError::Inconsistent { reason, .. }) if reason.contains("error budget")),
        "{reopened:?}"
    );
}

#[test]
fn staging_is_refused_until_every_pre_production_phase_is_passed() {
    let w = world_from(
        options(),
        Duration::from_secs(30),
        lifecycle(),
        |journal, p| {
            let reads: Arc<dyn Journal> = journal;
            p.gate(
                Move::Stage,
                PhasesPassed::new("shop", lifecycle(), reads).unwrap(),
            )
        },
    );
    let r1 = w.tested("1.0");
    let artifact = r1.artifact().clone();
    let stage = |r: Release<Tested, Deployment>| {
        run_virtual(&w.clock, r.stage(&w.pipeline, &artifact)).map_err(Box::new)
    };
    // Skipping both pre-production phases is refused, naming the first.
    let skipped = stage(r1).unwrap_err();
    assert!(skipped.to_string().contains("phase `dev`"), "{skipped}");
    let r1 = (*skipped).into_release();
    w.promote(&r1, "dev").unwrap();
    let skipped = stage(r1).unwrap_err();
    assert!(skipped.to_string().contains("phase `test`"), "{skipped}");
    let r1 = (*skipped).into_release();
    // The test phase needs at least one of its two environments.
    w.promote(&r1, "test-b").unwrap();
    let staged = stage(r1).unwrap();
    let approved = run_virtual(&w.clock, staged.auto_approve(&w.pipeline)).unwrap();
    w.promote(&approved, "eu").unwrap();
    assert_eq!(w.live("eu").as_deref(), Some("1.0"));
}

#[test]
fn automatic_phases_advance_on_their_own_and_phases_entered_by_people_wait() {
    let lifecycle = Lifecycle::new([
        Phase::new("dev").environment("dev").unwrap(),
        Phase::new("test")
            .wave(["test-a", "test-b"])
            .unwrap()
            .rule(PhaseRule::AtLeast(1)),
        Phase::new("production")
            .environment("eu")
            .unwrap()
            .entered_by(["rita"])
            .unwrap(),
    ])
    .unwrap();
    let w = world_from(options(), Duration::from_secs(30), lifecycle, |_, p| p);
    let r1 = w.tested("1.0");
    run_virtual(&w.clock, w.fleet.register(&r1)).unwrap();
    let done = run_virtual(&w.clock, w.fleet.advance("tick")).unwrap();
    let went: Vec<String> = done
        .iter()
        .map(|d| format!("{} {} by {}", d.release, d.environment, d.by))
        .collect();
    assert_eq!(
        went,
        [
            "1.0 dev by automation `tick`",
            "1.0 test-a by automation `tick`",
            "1.0 test-b by automation `tick`"
        ]
    );
    // Each is recorded as automatic, with the phase and the one whose rule was met.
    let autos: Vec<AutoEntry> = fleet_facts(&w.journal)
        .into_iter()
        .filter_map(|f| match f {
            FleetFact::Queued { automatic, .. } => automatic,
            _ => None,
        })
        .collect();
    let entry = |phase: &str, after: Option<&str>| AutoEntry {
        phase: phase.to_owned(),
        after: after.map(str::to_owned),
    };
    assert_eq!(
        autos,
        [
            entry("dev", None),
            entry("test", Some("dev")),
            entry("test", Some("dev"))
        ]
    );
    // Production is entered by a person: nothing more happens on its own, even approved.
    let r1 = w.approved(r1);
    assert!(
        run_virtual(&w.clock, w.fleet.advance("tick"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(w.live("eu"), None);
    let waits = w.fleet.ledger().release("1.0").unwrap().waiting.clone();
    assert!(
        waits
            .iter()
            .any(|x| matches!(x, Waiting::Person { phase, .. } if phase == "production")),
        "{waits:?}"
    );
    let rita = Actor::person("rita").unwrap();
    run_virtual(&w.clock, w.fleet.promote(&r1, "eu", rita)).unwrap();
    // A newer release follows on its own; the restart re-derives every automatic move.
    let r2 = w.tested("1.1");
    run_virtual(&w.clock, w.fleet.register(&r2)).unwrap();
    let done = run_virtual(&w.clock, w.fleet.advance("tick")).unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(w.live("test-b").as_deref(), Some("1.1"));
    assert_eq!(w.reopen().unwrap().ledger(), w.fleet.ledger());
}

#[test]
fn automatic_promotion_into_production_needs_the_approval_in_the_journal() {
    let w = world();
    let r1 = w.tested("1.0");
    run_virtual(&w.clock, w.fleet.register(&r1)).unwrap();
    let done = run_virtual(&w.clock, w.fleet.advance("tick")).unwrap();
    assert_eq!(done.len(), 3, "dev, test-a, test-b: {done:?}");
    assert_eq!(w.live("eu"), None);
    let _approved = w.approved(r1);
    // The fleet reads the approval from the release's facts; production goes in its waves.
    let done = run_virtual(&w.clock, w.fleet.advance("tick")).unwrap();
    let envs: Vec<&str> = done.iter().map(|d| d.environment.as_str()).collect();
    assert_eq!(envs, ["eu", "us"]);
}

#[test]
fn the_settings_are_recorded_once_and_another_open_with_other_ones_is_refused_by_name() {
    let w = world();
    let settings = |j: &MemoryJournal| {
        fleet_facts(j)
            .into_iter()
            .filter(|f| matches!(f, FleetFact::Settings { .. }))
            .count()
    };
    assert_eq!(settings(&w.journal), 1);
    w.reopen().unwrap();
    assert_eq!(settings(&w.journal), 1, "recorded once");
    let open = |lifecycle: Lifecycle, options: FleetOptions| {
        run_virtual(
            &w.clock,
            Fleet::open(Arc::clone(&w.pipeline), lifecycle, options),
        )
    };
    let other = open(
        lifecycle(),
        FleetOptions {
            queue_limit: 4,
            ..options()
        },
    );
    assert!(
        matches!(&other, Err(FleetError::SettingsDiffer { differences })
            if differences == &["options.queue_limit: 16 in the journal, 4 here".to_owned()]),
        "{other:?}"
    );
    let guarded = Lifecycle::new([
        Phase::new("dev").environment("dev").unwrap(),
        Phase::new("test")
            .wave(["test-a", "test-b"])
            .unwrap()
            .rule(PhaseRule::AtLeast(1)),
        Phase::new("production")
            .wave(["eu"])
            .unwrap()
            .wave(["us"])
            .unwrap()
            .entered_by(["rita"])
            .unwrap(),
    ])
    .unwrap();
    let other = open(guarded, options());
    assert!(
        matches!(&other, Err(FleetError::SettingsDiffer { differences })
            if differences.len() == 1 && differences[0].starts_with("lifecycle phase `production` entry")),
        "{other:?}"
    );
}

/// The fleet facts of `journal`, in order.
fn fleet_facts(journal: &MemoryJournal) -> Vec<FleetFact> {
    journal.entries_mut(|entries| {
        entries
            .iter()
            .filter(|s| s.key.contains("\u{1f}fleet\u{1f}"))
            .map(|s| serde_json::from_slice(&s.payload).unwrap())
            .collect()
    })
}

/// One thing done to the fleet in the property test.
#[derive(Debug, Clone)]
enum Op {
    Promote {
        release: usize,
        env: usize,
    },
    Redeploy {
        env: usize,
    },
    Rollback {
        env: usize,
    },
    /// `Fleet::advance`: automatic phases.
    Advance,
    /// Sets test-b's gate: 0 open, 1 closed, 2 pending.
    Gate {
        verdict: u8,
    },
}

const ENVS: [&str; 5] = ["dev", "test-a", "test-b", "eu", "us"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..5usize).prop_map(|(release, env)| Op::Promote { release, env }),
        1 => (0..5usize).prop_map(|env| Op::Redeploy { env }),
        1 => (0..5usize).prop_map(|env| Op::Rollback { env }),
        1 => Just(Op::Advance),
        1 => (0..3u8).prop_map(|verdict| Op::Gate { verdict }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random interleavings of promotions, redeploys, rollbacks and automatic advances of
    /// three releases across five environments, from two fleets (two processes) sharing one
    /// journal, with test-b's gate switched open, closed and pending at random, each op
    /// starting after a random delay and each deployment taking virtual time: replaying the
    /// journal's facts by a reference, no older release ever went live over a newer one but
    /// by a recorded rollback, every live digest is one its release was tested with, at most
    /// one deployment ran per environment at a time, no phase or wave was skipped, and every
    /// deployment queued into test-b (but a rollback) carries its gate's open verdict.
    #[test]
    fn interleavings_keep_every_fleet_rule(
        ops in prop::collection::vec((op(), 0..2usize, 0..90u64), 1..24),
        queue in prop_oneof![Just(QueueMode::OldestFirst), Just(QueueMode::NewestFirst), Just(QueueMode::NewestReadyFirst)],
    ) {
        let budget = Switch::default();
        let gate = budget.clone();
        let w = world_from(
            FleetOptions { queue_mode: queue, ..options() },
            Duration::from_secs(20),
            lifecycle(),
            move |_, p| p.environment_gate("test-b", gate.gate("budget")).unwrap(),
        );
        // 1.0 and 1.1 approved; 1.2 only tested (production refuses it).
        let r0 = w.tested("1.0");
        let r1 = w.tested("1.1");
        let r2 = w.tested("1.2");
        let r0 = w.approved(r0);
        let r1 = w.approved(r1);
        let tested: BTreeMap<String, String> = [&r0.artifact(), &r1.artifact(), &r2.artifact()]
            .iter()
            .zip(["1.0", "1.1", "1.2"])
            .map(|(a, id)| (id.to_owned(), a.digest.to_string()))
            .collect();
        let b = w.reopen().unwrap();
        let fleets = [&w.fleet, &b];
        let rita = Actor::person("rita").unwrap();
        run_virtual(&w.clock, async {
            let runs = ops.iter().map(|(op, who, delay)| {
                let fleet = fleets[*who];
                let rita = rita.clone();
                let clock = w.clock.clone();
                let budget = budget.clone();
                let (r0, r1, r2) = (&r0, &r1, &r2);
                async move {
                    clock.sleep_until(clock.now().saturating_add(Duration::from_secs(*delay))).await;
                    let _ = fleet.refresh().await;
                    let result = match op {
                        Op::Promote { release: 0, env } => fleet.promote(r0, ENVS[*env], ci()).await.map(|_| ()),
                        Op::Promote { release: 1, env } => fleet.promote(r1, ENVS[*env], ci()).await.map(|_| ()),
                        Op::Promote { env, .. } => fleet.promote(r2, ENVS[*env], ci()).await.map(|_| ()),
                        Op::Redeploy { env } => fleet.redeploy(ENVS[*env], ci()).await.map(|_| ()),
                        Op::Rollback { env } => fleet.rollback(ENVS[*env], rita, "prop").await.map(|_| ()),
                        Op::Advance => fleet.advance("tick").await.map(|_| ()),
                        Op::Gate { verdict } => {
                            budget.set(match verdict {
                                0 => Verdict::Open,
                                1 => Verdict::closed("spent"),
                                _ => Verdict::pending("metrics"),
                            });
                            Ok(())
                        }
                    };
                    // Refusals are typed; the journal failing is not expected.
                    if let Err(FleetError::Journal(e)) = &result {
                        panic!("journal failed: {e}");
                    }
                }
            });
            futures::future::join_all(runs).await;
            // Whatever is still queued runs now.
            for env in ENVS {
                w.fleet.refresh().await.unwrap();
                w.fleet.drain(env).await.unwrap();
            }
        });

        // At most one deployment per environment at a time, as the deploy stages saw it.
        for (env, most) in w.tracker.with(|s| s.most.clone()) {
            prop_assert!(most <= 1, "{most} deployments at once in {env}");
        }
        // Every digest deployed is the one its release was tested with.
        for (env, release, digest) in w.tracker.with(|s| s.deployed.clone()) {
            prop_assert_eq!(Some(&digest), tested.get(&release), "{} in {}", release, env);
        }
        // A reference replay of the journal's fleet facts.
        let order = |id: &str| ["1.0", "1.1", "1.2"].iter().position(|r| *r == id).unwrap();
        let phase_of = |env: &str| match env { "dev" => 0, "test-a" | "test-b" => 1, _ => 2 };
        let mut tickets: BTreeMap<u64, (String, String, DeployKind)> = BTreeMap::new();
        let mut live: BTreeMap<String, String> = BTreeMap::new();
        let mut ever: BTreeSet<(String, String)> = BTreeSet::new();
        let mut locked: BTreeMap<String, u64> = BTreeMap::new();
        let stored = w.journal.entries_mut(|e| e.clone());
        for s in stored.iter().filter(|s| s.key.contains("\u{1f}fleet\u{1f}")) {
            let fact: FleetFact = serde_json::from_slice(&s.payload).unwrap();
            match fact {
                FleetFact::Queued { environment, release, kind, gates, .. } => {
                    let asked: Vec<String> = gates.iter().map(|g| format!("{} {}", g.gate, g.verdict)).collect();
                    let expected: Vec<String> = if environment.as_str() == "test-b" && !matches!(kind, DeployKind::Rollback { .. }) {
                        vec!["budget open".to_owned()]
                    } else {
                        Vec::new()
                    };
                    prop_assert_eq!(asked, expected, "{} of {} into {}", kind, release, environment);
                    tickets.insert(s.seq, (environment.to_string(), release.to_string(), kind));
                }
                FleetFact::Locked { environment, ticket, .. } => {
                    prop_assert!(!locked.contains_key(environment.as_str()), "two locks on {}", environment);
                    locked.insert(environment.to_string(), ticket);
                }
                FleetFact::Finished { environment, ticket, report, .. } => {
                    prop_assert_eq!(locked.remove(environment.as_str()), Some(ticket));
                    if !report.succeeded() { continue; }
                    let (env, release, kind) = tickets[&ticket].clone();
                    if let Some(before) = live.get(&env) {
                        if order(&release) < order(before) {
                            prop_assert!(matches!(kind, DeployKind::Rollback { .. }), "{} over {} in {} by {:?}", release, before, env, kind);
                        }
                    }
                    if kind == DeployKind::Promote {
                        let had = |e: &str| ever.contains(&(e.to_owned(), release.clone()));
                        match phase_of(&env) {
                            0 => {}
                            1 => prop_assert!(had("dev"), "{} in {} before dev", release, env),
                            _ => {
                                prop_assert!(had("dev") && (had("test-a") || had("test-b")), "{} in {} before test", release, env);
                                prop_assert!(release != "1.2", "an unapproved release in production");
                                if env == "us" { prop_assert!(had("eu"), "{} in us before eu", release); }
                            }
                        }
                    }
                    ever.insert((env.clone(), release.clone()));
                    live.insert(env, release);
                }
                _ => {}
            }
        }
        // The ledger agrees with the reference, and a restart re-derives it.
        let ledger = w.fleet.ledger();
        for env in ENVS {
            prop_assert_eq!(ledger.live_in(env).map(|d| d.release.to_string()), live.get(env).cloned());
        }
        let reopened = w.reopen().unwrap();
        prop_assert!(reopened.ledger().first_difference(&ledger).is_none());
    }
}
