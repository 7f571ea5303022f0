//! Feature flags: shipped dark, turned on step by step with analysis, turned off at once when
//! analysis fails, every change an event of the release and a journal fact; a property test
//! over random metric sequences. Every test runs in virtual time.

#[path = "support/rollout.rs"]
mod sim;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tollgate::environment::EnvironmentName;
use tollgate::flag::{
    FlagEvent, FlagEventKind, FlagOutcome, FlagPlan, FlagRelease, FlagRollout, MemoryFlags,
    flag_key,
};
use tollgate::gate::Threshold;
use tollgate::id::PipelineName;
use tollgate::journal::{ChainKey, Journal, MemoryJournal};
use tollgate::prelude::*;
use tollgate::rollout::{Analysis, Cause, MetricCheck, Pause, Weight};
use tollgate::time::{ManualClock, run_virtual};

use sim::{People, Scripted};
use support::{START, clock, deployment_pipeline, staged};

const HOUR: Duration = Duration::from_secs(3600);

fn production() -> Environment {
    Environment::new("production").unwrap()
}

fn errors() -> Analysis {
    Analysis::new([MetricCheck::new(
        "error-rate",
        "errors",
        Threshold::AtMost(0.01),
    )])
    .interval(Duration::from_secs(600))
}

fn pct(p: u8) -> FlagRollout {
    FlagRollout::Percentage(Weight::percent(p).unwrap())
}

fn plan() -> FlagPlan {
    FlagPlan::new()
        .set(FlagRollout::Cohorts(vec!["staff".into()]))
        .pause(Pause::For(HOUR))
        .set(pct(25))
        .pause(Pause::For(HOUR))
        .set(FlagRollout::On)
}

fn release(clock: &ManualClock) -> AnyRelease {
    staged(&deployment_pipeline(clock), "r1", "abc")
        .0
        .record()
        .clone()
}

fn prod() -> EnvironmentName {
    EnvironmentName::new("production").unwrap()
}

#[test]
fn a_flag_ships_dark_and_is_turned_on_step_by_step_while_analysis_passes() {
    let clock = clock();
    let release = release(&clock);
    let flags = MemoryFlags::new();
    let metrics = Scripted::default();
    let flag =
        FlagRelease::new("new-checkout", plan(), flags.clone()).analysis(errors(), metrics.clone());
    let dark = run_virtual(&clock, flag.ship_dark(&release, &production(), &clock)).unwrap();
    assert_eq!(
        dark.kind,
        FlagEventKind::Set {
            rollout: FlagRollout::Off
        }
    );
    assert_eq!(flags.get(&prod(), "new-checkout"), FlagRollout::Off);
    let report = run_virtual(&clock, flag.run(&release, &production(), &clock)).unwrap();
    assert_eq!(
        report.outcome,
        FlagOutcome::Released {
            rollout: FlagRollout::On
        }
    );
    let sets: Vec<_> = report
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            FlagEventKind::Set { rollout } => Some((e.at, rollout.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets,
        [
            (START, FlagRollout::Cohorts(vec!["staff".into()])),
            (START.saturating_add(HOUR), pct(25)),
            (START.saturating_add(2 * HOUR), FlagRollout::On),
        ]
    );
    // Right after each step, and every ten minutes of each hour-long pause.
    assert_eq!(metrics.taken().len(), 3 + 12);
    assert_eq!(flags.get(&prod(), "new-checkout"), FlagRollout::On);
}

#[test]
fn a_failed_sample_turns_the_flag_off_at_once() {
    let clock = clock();
    let release = release(&clock);
    let flags = MemoryFlags::new();
    // Good for staff and their hour, good right after 25 %, bad twenty minutes later.
    let mut values = vec![Some(0.0); 7];
    values.extend([Some(0.0), Some(0.0), Some(0.3)]);
    let metrics = Scripted::new(values);
    let flag =
        FlagRelease::new("new-checkout", plan(), flags.clone()).analysis(errors(), metrics.clone());
    let report = run_virtual(&clock, flag.run(&release, &production(), &clock)).unwrap();
    assert!(matches!(
        report.outcome,
        FlagOutcome::TurnedOff {
            cause: Cause::Analysis { .. }
        }
    ));
    let failed_at = START.saturating_add(HOUR + Duration::from_secs(1200));
    assert_eq!(metrics.taken().last(), Some(&failed_at));
    assert_eq!(
        metrics.taken().len(),
        10,
        "nothing sampled after the failure"
    );
    let off = report
        .events
        .iter()
        .find(|e| matches!(e.kind, FlagEventKind::TurnedOff { .. }))
        .unwrap();
    assert_eq!(off.at, failed_at);
    assert_eq!(flags.get(&prod(), "new-checkout"), FlagRollout::Off);
    assert_eq!(
        flags.changes().last().unwrap().2,
        FlagRollout::Off,
        "turned off, never on for everyone"
    );
    assert!(!flags.changes().iter().any(|c| c.2 == FlagRollout::On));
}

#[test]
fn a_flag_waits_for_a_persons_go_and_its_history_is_in_the_journal() {
    let clock = clock();
    let release = release(&clock);
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"flag tests")));
    let seen = Arc::new(Mutex::new(Vec::<FlagEvent>::new()));
    let seen_by = Arc::clone(&seen);
    let people = People {
        clock: clock.clone(),
        go_at: START.saturating_add(3 * HOUR),
        decision: None,
    };
    let flag = FlagRelease::new(
        "new-checkout",
        FlagPlan::new()
            .set(pct(5))
            .pause(Pause::UntilGo)
            .set(FlagRollout::On),
        MemoryFlags::new(),
    )
    .operator(people)
    .observer(move |e| seen_by.lock().unwrap().push(e.clone()))
    .journal(Arc::clone(&journal), PipelineName::new("shop").unwrap());
    let report = run_virtual(&clock, flag.run(&release, &production(), &clock)).unwrap();
    let on = report.events.iter().rev().nth(1).unwrap();
    assert_eq!(on.at, START.saturating_add(3 * HOUR));
    assert_eq!(
        on.kind,
        FlagEventKind::Set {
            rollout: FlagRollout::On
        }
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(&e.kind, FlagEventKind::Go { by } if by.as_str() == "rita"))
    );
    assert_eq!(*seen.lock().unwrap(), report.events);
    let key = flag_key(
        &PipelineName::new("shop").unwrap(),
        release.id(),
        &prod(),
        "new-checkout",
    );
    let journaled: Vec<FlagEvent> = futures::executor::block_on(journal.read_key(&key))
        .unwrap()
        .iter()
        .map(|s| serde_json::from_slice(&s.payload).unwrap())
        .collect();
    assert_eq!(journaled, report.events);
}

fn arb_plan() -> impl proptest::strategy::Strategy<Value = FlagPlan> {
    prop::collection::vec(
        prop_oneof![
            (1u8..=100).prop_map(|p| Some(FlagRollout::Percentage(Weight::percent(p).unwrap()))),
            Just(Some(FlagRollout::On)),
            (1u64..=5).prop_map(|_| None),
        ],
        1..8,
    )
    .prop_map(|steps| {
        steps.into_iter().fold(FlagPlan::new(), |plan, s| match s {
            Some(r) => plan.set(r),
            None => plan.pause(Pause::For(HOUR)),
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After a failed evaluation the flag is set once more, to off, and never on again; with
    /// no failure it ends at its plan's last setting.
    #[test]
    fn a_flag_is_never_turned_further_on_after_a_failed_analysis(
        metrics in prop::collection::vec(prop_oneof![4 => Just(Some(0.0)), 1 => Just(Some(0.5)), 1 => Just(None)], 0..20),
        plan in arb_plan(),
    ) {
        let clock = clock();
        let release = release(&clock);
        let flags = MemoryFlags::new();
        let flag = FlagRelease::new("f", plan.clone(), flags.clone())
            .analysis(errors().inconclusive_limit(1), Scripted::new(metrics));
        let report = run_virtual(&clock, flag.run(&release, &production(), &clock)).unwrap();
        let failed = report.events.iter().position(|e| matches!(&e.kind, FlagEventKind::Analyzed { evaluation, .. } if evaluation.is_failed()));
        let changes = flags.changes();
        if let Some(at) = failed {
            let sets_after: Vec<_> = report.events[at..].iter().filter_map(|e| match &e.kind {
                FlagEventKind::Set { rollout } => Some(rollout.clone()),
                _ => None,
            }).collect();
            prop_assert!(sets_after.is_empty(), "{:?}", sets_after);
            prop_assert_eq!(&changes.last().unwrap().2, &FlagRollout::Off);
            prop_assert!(matches!(report.outcome, FlagOutcome::TurnedOff { .. }), "{:?}", report.outcome);
            prop_assert_eq!(flags.get(&prod(), "f"), FlagRollout::Off);
        } else {
            let released = matches!(report.outcome, FlagOutcome::Released { .. });
            prop_assert!(released);
            prop_assert!(changes.iter().all(|c| c.2 != FlagRollout::Off));
        }
    }
}

#[test]
fn a_panicking_flag_observer_is_a_warning_in_the_report_and_the_release_goes_on() {
    let clock = clock();
    let release = release(&clock);
    let flags = MemoryFlags::new();
    let flag = FlagRelease::new(
        "new-checkout",
        FlagPlan::new().set(pct(5)).set(FlagRollout::On),
        flags.clone(),
    )
    .observer(|_: &FlagEvent| panic!("the chat bot is down"));
    let report = run_virtual(&clock, flag.run(&release, &production(), &clock)).unwrap();
    assert_eq!(
        report.outcome,
        FlagOutcome::Released {
            rollout: FlagRollout::On
        }
    );
    assert_eq!(
        report.warnings.len(),
        report
            .events
            .iter()
            .map(|e| serde_json::to_value(&e.kind).unwrap()["event"].to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "one warning per kind of event: {:?}",
        report.warnings
    );
    let times: u64 = report
        .warnings
        .iter()
        .map(|w| match w {
            tollgate::engine::Warning::ObserverPanicked { message, times, .. } => {
                assert_eq!(message, "the chat bot is down");
                *times
            }
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(times as usize, report.events.len());
}
