//! Rollouts against a simulated target that records every call: each strategy's sequence of
//! calls, rolling's stop at the first bad batch, blue-green's switch-back, a canary's manual
//! go, aborts right after a failed analysis, forward-only steps freezing, the journal's
//! history and a resume after a cut-off, a rollout as a deploy stage in both modes and in a
//! fleet, and property tests over random metric sequences. Every test runs in virtual time.

#[path = "support/rollout.rs"]
mod sim;
mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use tollgate::fleet::{Actor, Fleet, FleetOptions, Lifecycle, Phase};
use tollgate::gate::Threshold;
use tollgate::id::{PipelineName, ReleaseId};
use tollgate::journal::{ChainKey, Journal, MemoryJournal};
use tollgate::lifecycle::ModeKind;
use tollgate::prelude::*;
use tollgate::rollout::{
    Analysis, BlueGreen, Canary, Cause, Choice, Health, MetricCheck, Outcome, Pause, Rolling,
    Rollout, RolloutError, RolloutEvent, RolloutEventKind, RolloutReport, Strategy, Version,
    Weight, rollout_key,
};
use tollgate::time::{ManualClock, run_virtual};

use sim::{Call, People, Scripted, SimTarget};
use support::{START, clock, deployment_pipeline, staged};

const MINUTE: Duration = Duration::from_secs(60);

fn w(p: u8) -> Weight {
    Weight::percent(p).unwrap()
}

fn env(name: &str) -> tollgate::environment::EnvironmentName {
    tollgate::environment::EnvironmentName::new(name).unwrap()
}

fn production() -> Environment {
    Environment::new("production").unwrap()
}

/// Error rate at most 1 %, sampled every minute in pauses, no bad sample tolerated.
fn errors() -> Analysis {
    Analysis::new([MetricCheck::new(
        "error-rate",
        "errors",
        Threshold::AtMost(0.01),
    )])
    .interval(MINUTE)
}

/// The stable version every simulated environment starts with.
fn stable() -> Version {
    Version {
        release: ReleaseId::new("r0").unwrap(),
        digest: ArtifactRef::from_bytes("app", b"stable").digest,
    }
}

/// A staged release `r1` of a standard deployment pipeline: its record is what a rollout
/// rolls out.
fn release(clock: &ManualClock) -> AnyRelease {
    let pipeline = deployment_pipeline(clock);
    staged(&pipeline, "r1", "abc").0.record().clone()
}

struct Setup {
    clock: ManualClock,
    target: SimTarget,
    release: AnyRelease,
}

fn setup() -> Setup {
    let clock = clock();
    let target = SimTarget::new(&clock, &stable(), &["production"]);
    let release = release(&clock);
    Setup {
        clock,
        target,
        release,
    }
}

impl Setup {
    // The library's own error, returned as `Rollout::run` returns it.
    #[allow(clippy::result_large_err)]
    fn run(&self, rollout: &Rollout) -> Result<RolloutReport, RolloutError> {
        run_virtual(
            &self.clock,
            rollout.run(&self.release, &production(), &self.clock),
        )
    }

    fn rollout(&self, strategy: Strategy) -> Rollout {
        Rollout::new(strategy, self.target.clone()).observer(self.target.observer())
    }

    /// Traffic is all on the stable version and no candidate is left.
    fn assert_on_stable(&self) {
        let state = self.target.state("production");
        assert_eq!(state.stable, Some(stable()));
        assert_eq!(state.candidate, None);
    }
}

fn p() -> tollgate::environment::EnvironmentName {
    env("production")
}

#[test]
fn all_at_once_prepares_shifts_everything_checks_health_and_promotes() {
    let s = setup();
    let report = s
        .run(
            &s.rollout(Strategy::AllAtOnce)
                .analysis(errors(), Scripted::default()),
        )
        .unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    assert_eq!(
        s.target.calls(),
        [
            Call::Prepare(p(), "r1".into()),
            Call::Shift(p(), 100),
            Call::Health(p()),
            Call::Promote(p()),
        ]
    );
    assert_eq!(
        s.target
            .state("production")
            .stable
            .unwrap()
            .release
            .as_str(),
        "r1"
    );
    assert_eq!(report.evaluations, 1);
}

#[test]
fn rolling_replaces_batch_by_batch_with_a_health_check_after_each() {
    let s = setup();
    let report = s
        .run(&s.rollout(Strategy::Rolling(Rolling::new(5, 2).limits(1, 0))))
        .unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    assert_eq!(
        s.target.calls(),
        [
            Call::Prepare(p(), "r1".into()),
            Call::Replace(p(), 2, 5),
            Call::Health(p()),
            Call::Replace(p(), 4, 5),
            Call::Health(p()),
            Call::Replace(p(), 5, 5),
            Call::Health(p()),
            Call::Promote(p()),
        ]
    );
}

#[test]
fn rolling_stops_at_the_first_bad_batch_and_rolls_back() {
    let s = setup();
    s.target
        .health_script([Health::Healthy, Health::Unhealthy("crash loop".into())]);
    let report = s
        .run(&s.rollout(Strategy::Rolling(Rolling::new(6, 2))))
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::RolledBack {
            cause: Cause::Unhealthy {
                reason: "crash loop".into()
            }
        }
    );
    assert_eq!(
        s.target.calls(),
        [
            Call::Prepare(p(), "r1".into()),
            Call::Replace(p(), 2, 6),
            Call::Health(p()),
            Call::Replace(p(), 4, 6),
            Call::Health(p()),
            Call::Abort(p()),
        ]
    );
    s.assert_on_stable();
}

#[test]
fn a_batch_still_progressing_when_the_health_check_times_out_is_a_bad_batch() {
    let s = setup();
    s.target.health_script(vec![Health::Progressing; 100]);
    let rollout = s
        .rollout(Strategy::Rolling(Rolling::new(2, 1)))
        .health_check(tollgate::rollout::HealthCheck {
            interval: Duration::from_secs(10),
            timeout: MINUTE,
        });
    let report = s.run(&rollout).unwrap();
    assert_eq!(
        report.outcome,
        Outcome::RolledBack {
            cause: Cause::HealthTimeout
        }
    );
    // Asked at 0, 10, …, 60 seconds: seven questions, then the abort at the minute.
    let calls = s.target.timed_calls();
    let asked = calls
        .iter()
        .filter(|(_, c)| matches!(c, Call::Health(_)))
        .count();
    assert_eq!(asked, 7);
    assert_eq!(
        calls.last().unwrap(),
        &(START.saturating_add(MINUTE), Call::Abort(p()))
    );
}

#[test]
fn blue_green_checks_the_preview_switches_keeps_the_old_side_then_promotes_and_retires() {
    let s = setup();
    let strategy = Strategy::BlueGreen(BlueGreen::new(10 * MINUTE).preview_check());
    let report = s
        .run(&s.rollout(strategy).analysis(errors(), Scripted::default()))
        .unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    let calls = s.target.timed_calls();
    assert_eq!(
        calls.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
        [
            Call::Prepare(p(), "r1".into()),
            Call::Health(p()),
            Call::Shift(p(), 100),
            Call::Promote(p()),
            Call::Retire(p()),
        ]
    );
    // The switch is at once; promotion waits out the keep time.
    assert_eq!(calls[2].0, START);
    assert_eq!(calls[3].0, START.saturating_add(10 * MINUTE));
    assert_eq!(s.target.old_side("production"), None);
}

#[test]
fn blue_green_switches_back_at_once_when_analysis_fails_while_the_old_side_is_kept() {
    let s = setup();
    // Preview good, right after the switch good, then bad at the third background sample.
    let metrics = Scripted::new([Some(0.0), Some(0.0), Some(0.0), Some(0.0), Some(0.5)]);
    let strategy = Strategy::BlueGreen(BlueGreen::new(10 * MINUTE).preview_check());
    let report = s
        .run(&s.rollout(strategy).analysis(errors(), metrics.clone()))
        .unwrap();
    assert!(matches!(
        report.outcome,
        Outcome::RolledBack {
            cause: Cause::Analysis { .. }
        }
    ));
    let calls = s.target.timed_calls();
    assert_eq!(
        calls.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
        [
            Call::Prepare(p(), "r1".into()),
            Call::Health(p()),
            Call::Shift(p(), 100),
            Call::AnalysisFailed,
            Call::Abort(p()),
        ]
    );
    let failed_at = START.saturating_add(3 * MINUTE);
    assert_eq!(
        calls[4].0, failed_at,
        "the switch back is at the failing sample"
    );
    assert_eq!(metrics.taken().last(), Some(&failed_at));
    s.assert_on_stable();
}

#[test]
fn manual_blue_green_switches_only_once_a_person_says_go() {
    let s = setup();
    let go_at = START.saturating_add(45 * MINUTE);
    let people = People {
        clock: s.clock.clone(),
        go_at,
        decision: None,
    };
    let strategy = Strategy::BlueGreen(BlueGreen::new(MINUTE).manual());
    let report = s.run(&s.rollout(strategy).operator(people)).unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    let calls = s.target.timed_calls();
    assert_eq!(calls[1], (go_at, Call::Shift(p(), 100)));
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(&e.kind, RolloutEventKind::Go { by, .. } if by.as_str() == "rita"))
    );
}

fn canary() -> Canary {
    Canary::new()
        .weight(w(10))
        .pause(Pause::For(5 * MINUTE))
        .weight(w(50))
        .pause(Pause::For(5 * MINUTE))
}

#[test]
fn a_canary_shifts_in_steps_pauses_with_background_analysis_and_promotes() {
    let s = setup();
    let metrics = Scripted::default();
    let report = s
        .run(
            &s.rollout(Strategy::Canary(canary()))
                .analysis(errors(), metrics.clone()),
        )
        .unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    let calls = s.target.timed_calls();
    assert_eq!(
        calls,
        [
            (START, Call::Prepare(p(), "r1".into())),
            (START, Call::Shift(p(), 10)),
            (START.saturating_add(5 * MINUTE), Call::Shift(p(), 50)),
            (START.saturating_add(10 * MINUTE), Call::Promote(p())),
        ]
    );
    // One sample after each shift, then one a minute through each five-minute pause.
    assert_eq!(metrics.taken().len(), 2 + 10);
    assert_eq!(report.evaluations, 12);
}

#[test]
fn a_canary_waits_for_a_persons_go_while_analysis_samples_in_the_background() {
    let s = setup();
    let go_at = START.saturating_add(Duration::from_secs(150));
    let people = People {
        clock: s.clock.clone(),
        go_at,
        decision: None,
    };
    let metrics = Scripted::default();
    let strategy = Strategy::Canary(Canary::new().weight(w(20)).pause(Pause::UntilGo));
    let report = s
        .run(
            &s.rollout(strategy)
                .analysis(errors(), metrics.clone())
                .operator(people),
        )
        .unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    assert_eq!(
        metrics.taken(),
        [
            START,
            START.saturating_add(MINUTE),
            START.saturating_add(2 * MINUTE)
        ]
    );
    assert_eq!(
        s.target.timed_calls().last().unwrap(),
        &(go_at, Call::Promote(p()))
    );
}

#[test]
fn a_canary_without_an_operator_cannot_wait_for_go() {
    let s = setup();
    let strategy = Strategy::Canary(Canary::new().pause(Pause::UntilGo));
    let err = s.run(&s.rollout(strategy)).unwrap_err();
    assert!(matches!(err, RolloutError::Invalid { .. }), "{err}");
    assert!(s.target.calls().is_empty());
}

#[test]
fn a_failed_background_sample_aborts_at_once_without_waiting_for_the_pause_or_sampling_again() {
    let s = setup();
    // Good after the 10 % shift and at minute 1, bad at minute 2 of a five-minute pause.
    let metrics = Scripted::new([Some(0.0), Some(0.0), Some(0.2)]);
    let report = s
        .run(
            &s.rollout(Strategy::Canary(canary()))
                .analysis(errors(), metrics.clone()),
        )
        .unwrap();
    let failed_at = START.saturating_add(2 * MINUTE);
    assert!(matches!(
        &report.outcome,
        Outcome::RolledBack { cause: Cause::Analysis { check, value: Some(v), .. } } if check == "error-rate" && (*v - 0.2).abs() < 1e-12
    ));
    assert_eq!(metrics.taken().len(), 3, "no sample after the failing one");
    assert_eq!(
        s.target.timed_calls(),
        [
            (START, Call::Prepare(p(), "r1".into())),
            (START, Call::Shift(p(), 10)),
            (failed_at, Call::AnalysisFailed),
            (failed_at, Call::Abort(p())),
        ]
    );
    s.assert_on_stable();
    // The last two events: aborted, finished.
    let kinds: Vec<_> = report
        .events
        .iter()
        .rev()
        .take(2)
        .map(|e| &e.kind)
        .collect();
    assert!(matches!(
        kinds[0],
        RolloutEventKind::Finished {
            outcome: Outcome::RolledBack { .. }
        }
    ));
    assert!(matches!(kinds[1], RolloutEventKind::Aborted { .. }));
}

#[test]
fn analysis_tolerates_bad_samples_up_to_its_failure_limit() {
    let s = setup();
    let metrics = Scripted::new([Some(0.5), Some(0.0), Some(0.5)]);
    let report = s
        .run(
            &s.rollout(Strategy::Canary(canary()))
                .analysis(errors().failure_limit(2), metrics),
        )
        .unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
}

#[test]
fn analysis_without_data_past_its_inconclusive_limit_rolls_back() {
    let s = setup();
    let metrics = Scripted::new([None, None, None]);
    let report = s
        .run(
            &s.rollout(Strategy::Canary(canary()))
                .analysis(errors().inconclusive_limit(2), metrics),
        )
        .unwrap();
    assert!(matches!(
        report.outcome,
        Outcome::RolledBack {
            cause: Cause::Analysis { value: None, .. }
        }
    ));
    s.assert_on_stable();
}

fn migrating() -> Strategy {
    Strategy::Canary(
        Canary::new()
            .weight(w(10))
            .pause(Pause::For(2 * MINUTE))
            .forward_only("migrate")
            .weight(w(50))
            .pause(Pause::For(2 * MINUTE)),
    )
}

/// Good until the migration has run and the 50 % shift is sampled: then bad.
fn bad_after_migration() -> Scripted {
    Scripted::new([Some(0.0), Some(0.0), Some(0.0), Some(0.0), Some(0.3)])
}

#[test]
fn a_failure_after_a_forward_only_step_freezes_instead_of_rolling_back() {
    let s = setup();
    let report = s
        .run(
            &s.rollout(migrating())
                .analysis(errors(), bad_after_migration()),
        )
        .unwrap();
    assert!(matches!(&report.outcome, Outcome::Frozen { after, .. } if after == "migrate"));
    let calls = s.target.calls();
    assert!(!calls.contains(&Call::Abort(p())), "{calls:?}");
    assert_eq!(calls.last(), Some(&Call::AnalysisFailed));
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e.kind, RolloutEventKind::Frozen { .. }))
    );
    // Traffic stays where the failure found it: a person decides.
    assert_eq!(s.target.state("production").candidate.unwrap().1, w(50));
}

#[test]
fn a_failure_before_the_forward_only_step_still_rolls_back() {
    let s = setup();
    let metrics = Scripted::new([Some(0.0), Some(0.4)]);
    let report = s
        .run(&s.rollout(migrating()).analysis(errors(), metrics))
        .unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }));
    assert!(
        !s.target
            .calls()
            .contains(&Call::Hook(p(), "migrate".into()))
    );
    s.assert_on_stable();
}

#[test]
fn a_failed_forward_only_step_freezes_too() {
    let s = setup();
    s.target.fail_hook("migrate");
    let report = s.run(&s.rollout(migrating())).unwrap();
    assert!(matches!(
        &report.outcome,
        Outcome::Frozen {
            cause: Cause::Target(_),
            ..
        }
    ));
    assert!(!s.target.calls().contains(&Call::Abort(p())));
}

#[test]
fn a_person_can_roll_a_frozen_rollout_back_or_forward() {
    for (choice, promoted) in [(Choice::RollBack, false), (Choice::RollForward, true)] {
        let s = setup();
        let people = People {
            clock: s.clock.clone(),
            go_at: START,
            decision: Some(choice),
        };
        let report = s
            .run(
                &s.rollout(migrating())
                    .analysis(errors(), bad_after_migration())
                    .operator(people),
            )
            .unwrap();
        assert!(report.events.iter().any(|e| matches!(&e.kind, RolloutEventKind::Decided { choice: c, by } if *c == choice && by.as_str() == "ines")));
        if promoted {
            assert_eq!(report.outcome, Outcome::Promoted);
            assert_eq!(s.target.calls().last(), Some(&Call::Promote(p())));
        } else {
            assert!(
                matches!(&report.outcome, Outcome::RolledBack { cause: Cause::Person { by } } if by.as_str() == "ines")
            );
            s.assert_on_stable();
        }
    }
}

fn journal() -> Arc<MemoryJournal> {
    Arc::new(MemoryJournal::new(ChainKey::derive(b"rollout tests")))
}

fn journaled(journal: &MemoryJournal, key: &str) -> Vec<RolloutEvent> {
    futures::executor::block_on(journal.read_key(key))
        .unwrap()
        .iter()
        .map(|s| serde_json::from_slice(&s.payload).unwrap())
        .collect()
}

#[test]
fn every_event_of_a_rollout_is_a_journal_fact_under_its_key() {
    let s = setup();
    let journal = journal();
    let metrics = Scripted::new([Some(0.0), Some(0.0), Some(0.2)]);
    let rollout = s
        .rollout(Strategy::Canary(canary()))
        .analysis(errors(), metrics)
        .journal(Arc::clone(&journal))
        .pipeline(PipelineName::new("shop").unwrap(), ModeKind::Deployment);
    let report = s.run(&rollout).unwrap();
    let key = rollout_key(&PipelineName::new("shop").unwrap(), s.release.id(), &p());
    assert_eq!(journaled(&journal, &key), report.events);
    let json = serde_json::to_value(&report.events.last().unwrap().kind).unwrap();
    assert_eq!(json["event"], "finished");
    assert_eq!(json["outcome"]["outcome"], "rolled_back");
    assert_eq!(json["outcome"]["cause"]["cause"], "analysis");
}

#[test]
fn a_rollout_cut_off_by_a_crash_resumes_after_its_last_finished_step() {
    let s = setup();
    let journal = journal();
    let rollout = || {
        s.rollout(Strategy::Canary(canary()))
            .journal(Arc::clone(&journal))
    };
    // The first run is dropped three minutes into the first pause (a crash).
    let first = rollout();
    let cut_at = START.saturating_add(3 * MINUTE);
    let crashed = run_virtual(&s.clock, async {
        let production = production();
        let run = std::pin::pin!(first.run(&s.release, &production, &s.clock));
        let crash = tollgate::time::Clock::sleep_until(&s.clock, cut_at);
        matches!(
            futures::future::select(run, crash).await,
            futures::future::Either::Right(_)
        )
    });
    assert!(crashed);
    let before = s.target.calls().len();
    let report = s.run(&rollout()).unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    assert!(matches!(
        report.events[0].kind,
        RolloutEventKind::Resumed { from: 2 }
    ));
    // Not prepared again: the 10 % shift is put back, the pause runs again, then 50 % and
    // promotion.
    assert_eq!(
        s.target.calls()[before..],
        [
            Call::Shift(p(), 10),
            Call::Shift(p(), 50),
            Call::Promote(p())
        ]
    );
}

#[test]
fn a_frozen_rollout_run_again_asks_its_person_and_rolls_forward_without_preparing_again() {
    let s = setup();
    let journal = journal();
    let frozen = s
        .rollout(migrating())
        .analysis(errors(), bad_after_migration())
        .journal(Arc::clone(&journal));
    assert!(matches!(
        s.run(&frozen).unwrap().outcome,
        Outcome::Frozen { .. }
    ));
    // Run again with nobody deciding: still frozen, and nothing called.
    let before = s.target.calls().len();
    let again = s
        .rollout(migrating())
        .analysis(errors(), Scripted::default())
        .journal(Arc::clone(&journal));
    assert!(matches!(
        s.run(&again).unwrap().outcome,
        Outcome::Frozen { .. }
    ));
    assert_eq!(s.target.calls().len(), before);
    // A person rolls it forward: the failed step is skipped, traffic put back, the rest runs.
    let people = People {
        clock: s.clock.clone(),
        go_at: START,
        decision: Some(Choice::RollForward),
    };
    let forward = s
        .rollout(migrating())
        .analysis(errors(), Scripted::default())
        .operator(people)
        .journal(Arc::clone(&journal));
    let report = s.run(&forward).unwrap();
    assert_eq!(report.outcome, Outcome::Promoted);
    assert!(matches!(
        report.events[0].kind,
        RolloutEventKind::Resumed { .. }
    ));
    let calls = s.target.calls()[before..].to_vec();
    assert_eq!(calls, [Call::Shift(p(), 50), Call::Promote(p())]);
    assert!(
        !calls.contains(&Call::Hook(p(), "migrate".into())),
        "the migration ran once"
    );
}

// A rollout as a pipeline's deploy stage.

/// Error rate 0.5 for the release called `bad`, 0 for the others.
struct BadRelease;

#[async_trait::async_trait]
impl tollgate::gate::MetricSource for BadRelease {
    async fn sample(&self, _query: &str, ctx: &tollgate::gate::GateContext<'_>) -> Option<f64> {
        Some(if ctx.release().id().as_str() == "bad" {
            0.5
        } else {
            0.0
        })
    }
}

fn stage_rollout(target: &SimTarget, mode: ModeKind) -> Rollout {
    Rollout::new(Strategy::Canary(canary()), target.clone())
        .analysis(errors(), BadRelease)
        .pipeline(PipelineName::new("shop").unwrap(), mode)
}

fn deploy_stages(rollout: Rollout) -> Vec<Stage> {
    vec![
        Stage::build("compile").run(support::compile()),
        Stage::test("unit").after("compile").run(support::ok()),
        Stage::stage("staging").run(support::ok()),
        Stage::deploy("roll-out").run(rollout),
    ]
}

fn rollout_error(error: &tollgate::Error) -> &RolloutError {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<RolloutError>())
        .unwrap_or_else(|| panic!("not a rollout failure: {error}"))
}

#[test]
fn in_deployment_mode_the_deploy_move_runs_the_canary_and_a_rolled_back_one_fails_it() {
    let clock = clock();
    let target = SimTarget::new(&clock, &stable(), &["production"]);
    let pipeline = support::deployment("shop", &clock)
        .stages(deploy_stages(stage_rollout(&target, ModeKind::Deployment)))
        .build()
        .unwrap();
    for (id, good) in [("good", true), ("bad", false)] {
        let (staged, artifact) = staged(&pipeline, id, id);
        let result = run_virtual(&clock, async {
            let approved = staged.auto_approve(&pipeline).await.unwrap();
            approved.deploy(&pipeline, &artifact).await
        });
        if good {
            let live = result.unwrap();
            assert_eq!(live.state(), tollgate::lifecycle::StateName::Deployed);
            assert_eq!(
                target.state("production").stable.unwrap().release.as_str(),
                "good"
            );
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), tollgate::ErrorKind::StageFailed);
            assert!(err.to_string().contains("rolled back"), "{}", err.error());
            assert!(matches!(
                rollout_error(err.error()),
                RolloutError::RolledBack { release, cause: Cause::Analysis { .. }, .. } if release.as_str() == "bad"
            ));
            assert_eq!(
                target.state("production").stable.unwrap().release.as_str(),
                "good"
            );
            assert_eq!(target.state("production").candidate, None);
        }
    }
}

#[test]
fn in_delivery_mode_a_person_approves_and_the_canary_analysis_still_decides() {
    let clock = clock();
    let target = SimTarget::new(&clock, &stable(), &["production"]);
    let pipeline = support::delivery("shop", &clock)
        .stages(deploy_stages(stage_rollout(&target, ModeKind::Delivery)))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "bad", "bad");
    let err = run_virtual(&clock, async {
        let approval = pipeline
            .sign_off(staged.id().as_str(), "rita", "looks fine")
            .await
            .unwrap();
        let approved = staged.approve(&pipeline, approval).await.unwrap();
        assert!(approved.record().approval().is_some(), "a person approved");
        approved.deploy(&pipeline, &artifact).await.unwrap_err()
    });
    assert!(matches!(
        rollout_error(err.error()),
        RolloutError::RolledBack { .. }
    ));
    assert_eq!(target.state("production").stable, Some(stable()));
    assert!(target.calls().contains(&Call::Abort(p())));
}

#[test]
fn a_frozen_rollout_fails_the_deploy_with_its_own_error() {
    let clock = clock();
    let target = SimTarget::new(&clock, &stable(), &["production"]);
    let rollout = Rollout::new(migrating(), target.clone()).analysis(errors(), BadRelease);
    let pipeline = support::deployment("shop", &clock)
        .stages(deploy_stages(rollout))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "bad", "bad");
    let err = run_virtual(&clock, async {
        let approved = staged.auto_approve(&pipeline).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap_err()
    });
    // Bad from the first sample, before the migration: rolled back, not frozen.
    assert!(matches!(
        rollout_error(err.error()),
        RolloutError::RolledBack { .. }
    ));
    let target = SimTarget::new(&clock, &stable(), &["production"]);
    let rollout =
        Rollout::new(migrating(), target.clone()).analysis(errors(), bad_after_migration());
    let pipeline = support::deployment("shop", &clock)
        .stages(deploy_stages(rollout))
        .build()
        .unwrap();
    let (staged, artifact) = support::staged(&pipeline, "r2", "r2");
    let err = run_virtual(&clock, async {
        let approved = staged.auto_approve(&pipeline).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap_err()
    });
    assert!(
        err.to_string().contains("frozen after `migrate`"),
        "{}",
        err.error()
    );
    assert!(
        matches!(rollout_error(err.error()), RolloutError::Frozen { after, .. } if after == "migrate")
    );
}

#[test]
fn a_fleet_promotion_through_a_lifecycle_runs_the_rollout_in_each_environment() {
    let clock = clock();
    let target = SimTarget::new(&clock, &stable(), &["test", "production"]);
    let journal = journal();
    let pipeline = Arc::new(
        support::deployment("shop", &clock)
            .journal(Arc::clone(&journal))
            .stages(deploy_stages(
                stage_rollout(&target, ModeKind::Deployment).journal(Arc::clone(&journal)),
            ))
            .build()
            .unwrap(),
    );
    let lifecycle = Lifecycle::new([
        Phase::new("test").environment("test").unwrap(),
        Phase::new("production").environment("production").unwrap(),
    ])
    .unwrap();
    let fleet = run_virtual(
        &clock,
        Fleet::open(Arc::clone(&pipeline), lifecycle, FleetOptions::default()),
    )
    .unwrap();
    let ci = Actor::automation("ci");
    let (good, _) = staged(&pipeline, "good", "good");
    let good = run_virtual(&clock, good.auto_approve(&pipeline)).unwrap();
    for env in ["test", "production"] {
        let done = run_virtual(&clock, fleet.promote(&good, env, ci.clone())).unwrap();
        assert!(
            matches!(done.status, tollgate::fleet::TicketStatus::Deployed { .. }),
            "{env}: {:?}",
            done.status
        );
        assert_eq!(target.state(env).stable.unwrap().release.as_str(), "good");
    }
    let (bad, _) = staged(&pipeline, "bad", "bad");
    let done = run_virtual(&clock, fleet.promote(&bad, "test", ci)).unwrap();
    match &done.status {
        tollgate::fleet::TicketStatus::Failed { reason, .. } => {
            assert!(reason.contains("rolled back"), "{reason}");
        }
        other => panic!("not failed: {other:?}"),
    }
    assert_eq!(
        target.state("test").stable.unwrap().release.as_str(),
        "good"
    );
    assert_eq!(target.state("test").candidate, None);
    // The journal with the rollouts' facts in it still restores the releases and reopens
    // the fleet.
    run_virtual(&clock, pipeline.restore("good")).unwrap();
    run_virtual(
        &clock,
        Fleet::open(
            Arc::clone(&pipeline),
            Lifecycle::new([
                Phase::new("test").environment("test").unwrap(),
                Phase::new("production").environment("production").unwrap(),
            ])
            .unwrap(),
            FleetOptions::default(),
        ),
    )
    .unwrap();
    // Both environments' rollouts are in the journal, each under its own key.
    let shop = PipelineName::new("shop").unwrap();
    for (release, env, outcome) in [
        ("good", "test", "promoted"),
        ("good", "production", "promoted"),
        ("bad", "test", "rolled_back"),
    ] {
        let key = rollout_key(
            &shop,
            &ReleaseId::new(release).unwrap(),
            &tollgate::environment::EnvironmentName::new(env).unwrap(),
        );
        let events = journaled(&journal, &key);
        assert!(
            matches!(&events.last().unwrap().kind, RolloutEventKind::Finished { outcome: o } if o.name() == outcome),
            "{release} in {env}"
        );
    }
}

// Properties over random metric sequences and canaries.

fn arb_metrics() -> impl proptest::strategy::Strategy<Value = Vec<Option<f64>>> {
    prop::collection::vec(
        prop_oneof![
            6 => proptest::strategy::Strategy::prop_map(0.0..0.01f64, Some),
            2 => proptest::strategy::Strategy::prop_map(0.01..1.0f64, Some),
            1 => Just(None),
        ],
        0..30,
    )
}

#[derive(Debug, Clone)]
enum Piece {
    Weight(u8),
    Pause(u64),
    Migration,
}

fn arb_canary() -> impl proptest::strategy::Strategy<Value = Canary> {
    prop::collection::vec(
        prop_oneof![
            4 => proptest::strategy::Strategy::prop_map(1u8..=100, Piece::Weight),
            3 => proptest::strategy::Strategy::prop_map(1u64..=6, Piece::Pause),
            1 => Just(Piece::Migration),
        ],
        1..8,
    )
    .prop_map(|pieces: Vec<Piece>| {
        pieces.into_iter().fold(Canary::new(), |c, p| match p {
            Piece::Weight(x) => c.weight(w(x)),
            Piece::Pause(m) => c.pause(Pause::For(Duration::from_secs(m * 60))),
            Piece::Migration => c.forward_only("migrate"),
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Never passes a failed analysis: once an evaluation fails, the target sees no more
    /// traffic, instances, hooks or promotion; the only call left is one abort (traffic on
    /// stable) or, past a forward-only step, none (frozen). Without a failure it promotes.
    #[test]
    fn a_rollout_never_passes_a_failed_analysis(
        metrics in arb_metrics(),
        canary in arb_canary(),
        limit in 0u32..2,
    ) {
        let s = setup();
        let rollout = s
            .rollout(tollgate::rollout::Strategy::Canary(canary))
            .analysis(errors().failure_limit(limit).inconclusive_limit(1), Scripted::new(metrics));
        let report = s.run(&rollout).unwrap();
        let calls = s.target.calls();
        let failed = calls.iter().position(|c| *c == Call::AnalysisFailed);
        let migrated = calls.iter().position(|c| matches!(c, Call::Hook(..)));
        match failed {
            None => {
                prop_assert_eq!(&report.outcome, &Outcome::Promoted);
                prop_assert_eq!(calls.last(), Some(&Call::Promote(p())));
                prop_assert!(!calls.contains(&Call::Abort(p())));
            }
            Some(at) => {
                let after = &calls[at + 1..];
                prop_assert!(!after.iter().any(Call::moves_forward), "{:?}", calls);
                prop_assert!(!calls.contains(&Call::Promote(p())));
                if migrated.is_some_and(|m| m < at) {
                    prop_assert!(matches!(report.outcome, Outcome::Frozen { .. }), "{:?}", report.outcome);
                    prop_assert!(after.is_empty(), "{:?}", calls);
                } else {
                    prop_assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
                    prop_assert_eq!(after, &[Call::Abort(p())][..]);
                    s.assert_on_stable();
                }
            }
        }
        // Every event the rollout reported, replayed, tells the same outcome.
        let last = &report.events.last().unwrap().kind;
        let told = matches!(last, RolloutEventKind::Finished { outcome } if *outcome == report.outcome);
        prop_assert!(told, "last event {:?}", last);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The analyzer against a reference model: it fails at the first sample that takes a
    /// check past `failure_limit` bad samples in all or `inconclusive_limit` samples in a row
    /// without data, and answers that failure from then on without sampling again.
    #[test]
    fn the_analyzer_fails_exactly_where_the_model_says(
        samples in prop::collection::vec(prop_oneof![3 => Just(Some(0.0)), 2 => Just(Some(0.5)), 1 => Just(None), 1 => Just(Some(f64::NAN))], 0..40),
        failure_limit in 0u32..4,
        inconclusive_limit in 0u32..4,
    ) {
        let clock = clock();
        let release = release(&clock);
        let env = production();
        let metrics = Scripted::new(samples.clone());
        let mut analyzer = tollgate::rollout::Analyzer::new(
            errors().failure_limit(failure_limit).inconclusive_limit(inconclusive_limit),
        );
        let ctx = tollgate::gate::GateContext::new(&release, Move::Deploy, &env, START);
        let (mut bad, mut dry) = (0u32, 0u32);
        let mut model_failed_at = None;
        for (i, s) in samples.iter().enumerate() {
            match s {
                Some(v) if !v.is_nan() && *v <= 0.01 => dry = 0,
                Some(v) if !v.is_nan() => { dry = 0; bad += 1; }
                _ => dry += 1,
            }
            if bad > failure_limit || dry > inconclusive_limit {
                model_failed_at = Some(i);
                break;
            }
        }
        let mut failed_at = None;
        for i in 0..samples.len() {
            let evaluation = futures::executor::block_on(analyzer.evaluate(&metrics, &ctx));
            if evaluation.is_failed() && failed_at.is_none() {
                failed_at = Some(i);
            }
            if failed_at.is_some() {
                prop_assert!(evaluation.is_failed(), "a failed analysis stays failed");
            }
        }
        prop_assert_eq!(failed_at, model_failed_at);
        prop_assert_eq!(metrics.taken().len(), model_failed_at.map_or(samples.len(), |i| i + 1));
    }
}

#[test]
fn a_panicking_observer_is_a_warning_in_the_report_and_the_rollout_goes_on() {
    let s = setup();
    let told = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&told);
    let rollout = s
        .rollout(Strategy::AllAtOnce)
        .observer(tollgate::rollout::observer_fn(|e: &RolloutEvent| {
            if matches!(e.kind, RolloutEventKind::StepStarted { .. }) {
                panic!("the dashboard is down");
            }
        }))
        .observer(tollgate::rollout::observer_fn(move |_: &RolloutEvent| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
    let report = s.run(&rollout).unwrap();
    // Promoted as without the observer: every platform call made, every event told to the
    // other observer.
    assert_eq!(report.outcome, Outcome::Promoted);
    assert_eq!(s.target.calls().last(), Some(&Call::Promote(p())));
    assert_eq!(
        told.load(std::sync::atomic::Ordering::Relaxed),
        report.events.len()
    );
    let steps = report
        .events
        .iter()
        .filter(|e| matches!(e.kind, RolloutEventKind::StepStarted { .. }))
        .count();
    assert_eq!(
        report.warnings,
        [tollgate::engine::Warning::ObserverPanicked {
            event: "step_started".into(),
            message: "the dashboard is down".into(),
            times: steps as u64,
        }]
    );
}
