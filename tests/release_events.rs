//! Release events: what a UI or a chat bot following releases hears, in order, from a run in
//! each mode; each sent once its fact is in the journal, and each with a serde form.

mod support;

use std::time::Duration;

use support::{START, block_on, clock, standard_stages};
use tollgate::engine::{Engine, Event, EventLog};
use tollgate::gate;
use tollgate::id::{EnvironmentName, Person, PipelineName, ReleaseId};
use tollgate::lifecycle::{ModeKind, StateName};
use tollgate::prelude::*;
use tollgate::time::{Timestamp, run_virtual};

fn release_events(log: &EventLog) -> Vec<Event> {
    log.events()
        .into_iter()
        .filter(Event::is_release_event)
        .collect()
}

fn id(s: &str) -> ReleaseId {
    ReleaseId::new(s).unwrap()
}

fn moved(release: &str, from: StateName, to: StateName, at: Timestamp) -> Event {
    Event::Moved {
        release: id(release),
        from,
        to,
        at,
    }
}

#[test]
fn a_delivery_release_parks_at_the_button_and_says_who_pressed_it() {
    let clock = clock();
    let log = EventLog::new();
    let pipeline = support::delivery("shop", &clock)
        .stages(standard_stages())
        .engine(Engine::builder().observer(log.clone()).build().unwrap())
        .build()
        .unwrap();
    let (staged, artifact) = support::staged(&pipeline, "shop-1", "4f2a9c1");
    let digest = artifact.digest.clone();
    clock.advance(Duration::from_secs(60));
    let later = Timestamp::from_millis(START.as_millis() + 60_000);
    block_on(async {
        let approval = pipeline
            .sign_off("shop-1", "rita", "looks good")
            .await
            .unwrap();
        let approved = staged.approve(&pipeline, approval).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap();
    });
    assert_eq!(
        release_events(&log),
        vec![
            Event::ReleaseStarted {
                release: id("shop-1"),
                pipeline: PipelineName::new("shop").unwrap(),
                mode: ModeKind::Delivery,
                revision: "4f2a9c1".to_owned(),
                author: Person::new("dana").unwrap(),
                at: START,
            },
            moved("shop-1", StateName::Commit, StateName::Built, START),
            moved("shop-1", StateName::Built, StateName::Tested, START),
            moved("shop-1", StateName::Tested, StateName::Staged, START),
            Event::Parked {
                release: id("shop-1"),
                mv: Move::Approve,
                gate: None,
                waiting_for: "a person's approval".to_owned(),
                until: None,
                at: START,
            },
            Event::Approved {
                release: id("shop-1"),
                by: vec![Person::new("rita").unwrap()],
                reason: "looks good".to_owned(),
                at: later,
            },
            moved("shop-1", StateName::Staged, StateName::Approved, later),
            moved("shop-1", StateName::Approved, StateName::Deployed, later),
            Event::Deployed {
                release: id("shop-1"),
                environment: EnvironmentName::new("production").unwrap(),
                digest,
                at: later,
            },
        ]
    );
}

#[test]
fn a_deployment_release_parks_at_a_pending_gate_and_its_gates_approve_it() {
    let clock = clock();
    let log = EventLog::new();
    let pipeline = support::standard_deployment(&clock)
        .engine(Engine::builder().observer(log.clone()).build().unwrap())
        .gate(Move::Approve, gate::soak(Duration::from_secs(600)))
        .build()
        .unwrap();
    let (staged, artifact) = support::staged(&pipeline, "shop-2", "9e1f00d");
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    let reason = refused.to_string();
    let staged = refused.into_release();
    let events = release_events(&log);
    let tail = &events[events.len() - 2..];
    assert_eq!(
        tail,
        [
            Event::Refused {
                release: id("shop-2"),
                mv: Move::Approve,
                reason: reason.clone(),
                at: START,
            },
            Event::Parked {
                release: id("shop-2"),
                mv: Move::Approve,
                gate: Some("soak 10m".to_owned()),
                waiting_for: match &tail[1] {
                    Event::Parked { waiting_for, .. } => waiting_for.clone(),
                    other => panic!("expected parked, got {other:?}"),
                },
                until: Some(Timestamp::from_millis(START.as_millis() + 600_000)),
                at: START,
            },
        ],
        "{reason}"
    );
    // No deployment release ever parks at a button.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Parked { gate: None, .. }))
    );
    clock.advance(Duration::from_secs(600));
    run_virtual(&clock, async {
        let approved = staged.auto_approve(&pipeline).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap();
    });
    let events = release_events(&log);
    let approved = events
        .iter()
        .find_map(|e| match e {
            Event::Approved { by, reason, .. } => Some((by.clone(), reason.clone())),
            _ => None,
        })
        .expect("an approved event");
    assert_eq!(approved, (Vec::new(), String::new()));
    assert!(matches!(events.last(), Some(Event::Deployed { .. })));
}

#[test]
fn a_refusal_says_why_and_the_release_does_not_move() {
    let clock = clock();
    let log = EventLog::new();
    let pipeline = support::standard_deployment(&clock)
        .engine(Engine::builder().observer(log.clone()).build().unwrap())
        .build()
        .unwrap();
    let (built, _) = support::built(&pipeline, "shop-3", "1234567");
    let other = ArtifactRef::from_bytes("shop-api", b"not what was built");
    let refused = block_on(built.test(&pipeline, &other)).unwrap_err();
    let events = release_events(&log);
    match events.last() {
        Some(Event::Refused { mv, reason, .. }) => {
            assert_eq!(*mv, Move::Test);
            assert_eq!(*reason, refused.to_string());
            assert!(reason.contains("artifact mismatch"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!events.iter().any(|e| matches!(
        e,
        Event::Moved {
            to: StateName::Tested,
            ..
        }
    )));
}

#[test]
fn release_events_round_trip_through_json() {
    let clock = clock();
    let log = EventLog::new();
    let pipeline = support::delivery("shop", &clock)
        .stages(standard_stages())
        .engine(Engine::builder().observer(log.clone()).build().unwrap())
        .build()
        .unwrap();
    let (staged, artifact) = support::staged(&pipeline, "shop-4", "abcdef0");
    block_on(async {
        let approval = pipeline.sign_off("shop-4", "sam", "ok").await.unwrap();
        let approved = staged.approve(&pipeline, approval).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap();
    });
    let events = log.events();
    let kinds: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.is_release_event())
        .map(|e| {
            serde_json::to_value(e).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["approved", "deployed", "moved", "parked", "release_started"]
    );
    for event in events {
        let json = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event, "{json}");
    }
}
