//! Automated gates on moves: a closed gate stops the move and a pending one parks the
//! release (a closed one outranks a pending one), every verdict is recorded, a gate can wait
//! for the clock, and gates guard a delivery approval too (handing the approval back when
//! they hold the move).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::HOUR;
use crate::support::{
    START, block_on, clock, gated_deployment, staged, standard_delivery, standard_deployment,
};
use tollgate::gate::{self, GateError};
use tollgate::graph::Step;
use tollgate::prelude::*;
use tollgate::release::StateName;

/// A gate that is open once `open` is set and says `closed` (closed or pending) until then.
fn switch_gate(name: &str, open: &Arc<AtomicBool>, closed: gate::Verdict) -> impl Gate + use<> {
    let open = Arc::clone(open);
    gate::from_fn(name, move |_| {
        if open.load(Ordering::SeqCst) {
            gate::Verdict::Open
        } else {
            closed.clone()
        }
    })
}

// ---- gates ----

#[test]
fn a_closed_gate_stops_auto_approval_and_hands_the_release_back() {
    let clock = clock();
    let open = Arc::new(AtomicBool::new(false));
    let pipeline = gated_deployment(
        &clock,
        Move::Approve,
        switch_gate(
            "error-budget",
            &open,
            Verdict::closed("error budget exhausted"),
        ),
    );
    let (staged, _) = staged(&pipeline, "r1", "aaa");

    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    match refused.error() {
        Error::Gate(GateError::Closed { gate, reason }) => {
            assert_eq!(gate, "error-budget");
            assert_eq!(reason, "error budget exhausted");
        }
        other => panic!("expected GateError::Closed, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);
    let verdicts = staged.record().gates();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].gate, "error-budget");
    assert_eq!(verdicts[0].mv, Move::Approve);
    assert_eq!(
        verdicts[0].verdict,
        Verdict::closed("error budget exhausted")
    );
    assert_eq!(verdicts[0].at, START);

    open.store(true, Ordering::SeqCst);
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let verdicts: Vec<&Verdict> = approved
        .record()
        .gates()
        .iter()
        .map(|g| &g.verdict)
        .collect();
    assert_eq!(
        verdicts,
        [&Verdict::closed("error budget exhausted"), &Verdict::Open]
    );
}

#[test]
fn a_pending_gate_parks_the_release() {
    let clock = clock();
    let open = Arc::new(AtomicBool::new(false));
    let pipeline = gated_deployment(
        &clock,
        Move::Approve,
        switch_gate("canary", &open, Verdict::pending("a canary verdict")),
    );
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    match refused.error() {
        Error::Gate(GateError::Pending {
            gate,
            waiting_for,
            until,
        }) => {
            assert_eq!(gate, "canary");
            assert_eq!(waiting_for, "a canary verdict");
            assert_eq!(*until, None);
        }
        other => panic!("expected GateError::Pending, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::GatePending);
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);
    assert_eq!(
        staged.record().gates()[0].verdict,
        Verdict::pending("a canary verdict")
    );

    open.store(true, Ordering::SeqCst);
    assert_eq!(
        block_on(staged.auto_approve(&pipeline)).unwrap().state(),
        StateName::Approved
    );
}

#[test]
fn a_closed_gate_outranks_a_pending_one_and_every_verdict_is_recorded() {
    let clock = clock();
    let pipeline = standard_deployment(&clock)
        .gate(
            Move::Approve,
            gate::from_fn("canary", |_| Verdict::pending("a canary verdict")),
        )
        .gate(Move::Approve, gate::from_fn("smoke", |_| Verdict::Open))
        .gate(
            Move::Approve,
            gate::from_fn("freeze", |_| Verdict::closed("release freeze")),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Closed { gate, .. }) if gate == "freeze"),
        "{:?}",
        refused.error()
    );
    let staged = refused.into_release();
    let recorded: Vec<(&str, Move, &Verdict)> = staged
        .record()
        .gates()
        .iter()
        .map(|g| (g.gate.as_str(), g.mv, &g.verdict))
        .collect();
    assert_eq!(
        recorded,
        [
            (
                "canary",
                Move::Approve,
                &Verdict::pending("a canary verdict")
            ),
            ("smoke", Move::Approve, &Verdict::Open),
            ("freeze", Move::Approve, &Verdict::closed("release freeze")),
        ]
    );
}

#[test]
fn a_change_window_gate_holds_deploy_until_the_clock_reaches_it() {
    let clock = clock();
    let window_opens = START.saturating_add(2 * HOUR);
    let change_window = gate::from_fn("change-window", move |ctx| {
        if ctx.move_() != Move::Deploy || ctx.environment().name() != "production" {
            Verdict::closed(format!(
                "asked about {} to {}",
                ctx.move_(),
                ctx.environment()
            ))
        } else if ctx.now() < window_opens {
            Verdict::Pending {
                waiting_for: "the change window".to_owned(),
                until: Some(window_opens),
            }
        } else {
            Verdict::Open
        }
    });
    let pipeline = gated_deployment(&clock, Move::Deploy, change_window);
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();

    clock.advance(HOUR);
    let refused = block_on(approved.deploy(&pipeline, &artifact)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Pending { gate, until, .. }) if gate == "change-window" && *until == Some(window_opens)),
        "{:?}",
        refused.error()
    );
    let approved = refused.into_release();
    assert_eq!(approved.state(), StateName::Approved);
    assert!(
        approved
            .record()
            .steps()
            .iter()
            .all(|s| s.step != Step::Deploy),
        "nothing was deployed while the gate held"
    );

    clock.set(window_opens);
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.deployed_at(), window_opens);
    let verdicts: Vec<&Verdict> = live.record().gates().iter().map(|g| &g.verdict).collect();
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts[1].is_open());
}

#[test]
fn a_closed_gate_on_approve_stops_a_delivery_approval_too() {
    let clock = clock();
    let pipeline = standard_delivery(&clock)
        .gate(
            Move::Approve,
            gate::from_fn("freeze", |_| Verdict::closed("release freeze")),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = block_on(pipeline.sign_off(staged.id().as_str(), "rita", "ok")).unwrap();
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);
    assert!(staged.record().approval().is_none());
    assert_eq!(staged.record().gates().len(), 1);
}

#[test]
fn an_approval_held_back_by_a_gate_is_handed_back_and_approves_once_the_gate_opens() {
    let clock = clock();
    let open = Arc::new(AtomicBool::new(false));
    let pipeline = standard_delivery(&clock)
        .gate(
            Move::Approve,
            switch_gate("freeze", &open, Verdict::closed("release freeze")),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = block_on(pipeline.sign_off("r1", "rita", "ok")).unwrap();
    let mut refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
    // The person's approval was not the problem: it comes back, once.
    let approval = refused
        .take_approval()
        .expect("the approval is handed back");
    assert_eq!(approval.approver(), "rita");
    assert!(refused.take_approval().is_none());

    open.store(true, Ordering::SeqCst);
    let approved = block_on(refused.into_release().approve(&pipeline, approval)).unwrap();
    assert_eq!(approved.record().approval().unwrap().approver, "rita");
}
