//! Robust at the edges (issue 11): inputs that used to panic or mislead give short, typed,
//! one-line errors; host code that misbehaves (a gate that panics or never decides, a retry
//! predicate or an observer that panics) stops a move or is contained, never the host; and a
//! cancel or a gate's timeout ends a gate's evaluation.

mod support;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use support::{block_on, clock, deployment, revision, staged, standard_stages};
use tollgate::approval::{ApprovalError, ApprovalPolicy, Rule};
use tollgate::engine::{Engine, Event, RetryPolicy, Warning, observer_fn};
use tollgate::executor::StageOutcome;
use tollgate::gate::{self, ChangeWindows, Gate, GateContext, GateError, GateExt};
use tollgate::graph::{GraphError, StageGraph, StageSpec, Step};
use tollgate::id::{EnvironmentName, IdError, Person, ReleaseId};
use tollgate::prelude::*;
use tollgate::time::{Clock, run_virtual};

#[test]
fn names_with_bidirectional_or_zero_width_characters_are_refused() {
    for name in [
        "ri\u{200B}ta",
        "\u{202E}nimda",
        "dana\u{2066}",
        "sam\u{FEFF}",
        "o\u{200D}mar",
    ] {
        let error = Person::new(name).expect_err(name);
        assert!(
            matches!(&error, IdError::Invalid { reason, .. } if reason.contains("bidirectional")),
            "{error}"
        );
        assert!(
            !error.to_string().contains(name),
            "the message escapes it: {error}"
        );
        assert!(EnvironmentName::new(name).is_err());
    }
}

#[test]
fn a_message_quotes_a_long_or_multi_line_input_short_and_on_one_line() {
    let huge = "x".repeat(1_000_000);
    let error = ReleaseId::new(huge).unwrap_err();
    let message = error.to_string();
    assert!(message.len() < 300, "{} bytes", message.len());
    assert!(message.contains("more bytes"), "{message}");

    let error = Person::new("dana\nrm -rf /").unwrap_err();
    assert!(!error.to_string().contains('\n'), "{error}");
    assert!(error.to_string().contains("\\u{a}"), "{error}");

    let error = "sha256:"
        .repeat(10_000)
        .parse::<tollgate::artifact::Digest>()
        .unwrap_err();
    assert!(error.to_string().len() < 300, "{error}");
}

#[test]
fn a_hundred_thousand_stage_cycle_is_named_in_a_short_message() {
    let n = 100_000;
    let stages =
        (0..n).map(|i| StageSpec::test(format!("s{i}")).after(format!("s{}", (i + 1) % n)));
    let error = StageGraph::builder().stages(stages).build().unwrap_err();
    assert!(matches!(&error, GraphError::Cycle { stages } if stages.len() == n));
    let message = error.to_string();
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.contains("more"), "{message}");
}

#[test]
fn malformed_utc_offsets_are_refused() {
    for offset in [
        "+-1:00",
        "-+1:00",
        "+01:-30",
        "+-25:00",
        "+-2147483648:00",
        "+1:00",
        "+001:00",
        "+01:5",
    ] {
        let error = ChangeWindows::new("windows", offset).expect_err(offset);
        assert!(
            matches!(error, GateError::Invalid { .. }),
            "{offset}: {error}"
        );
    }
    for offset in ["+02:00", "-05:30", "Z", "+00:00"] {
        assert!(ChangeWindows::new("windows", offset).is_ok(), "{offset}");
    }
}

#[test]
fn approval_rules_that_can_never_be_met_are_refused() {
    let twice = Rule::new("pair").person("rita").person("rita").need(2);
    let error = ApprovalPolicy::new().rule(twice).unwrap_err();
    assert!(
        matches!(error, ApprovalError::InvalidRule { .. }),
        "{error}"
    );
    let endless = Rule::new("everyone").group("staff").need(usize::MAX);
    let error = ApprovalPolicy::new().rule(endless).unwrap_err();
    assert!(
        matches!(error, ApprovalError::InvalidRule { .. }),
        "{error}"
    );
    assert!(
        ApprovalPolicy::new()
            .rule(Rule::new("pair").person("rita").person("sam").need(2))
            .is_ok()
    );
}

#[test]
fn a_plan_with_estimates_past_the_longest_duration_saturates() {
    let max = Duration::from_millis(u64::MAX);
    let stages = (0..1_100).map(|i| {
        let spec = StageSpec::test(format!("s{i}")).estimate(max);
        if i == 0 {
            spec
        } else {
            spec.after(format!("s{}", i - 1))
        }
    });
    let graph = StageGraph::builder().stages(stages).build().unwrap();
    let plan = Engine::new().plan(&graph, Step::Test);
    assert_eq!(plan.stages.len(), 1_100);
    assert_eq!(plan.makespan, Duration::MAX);
}

#[test]
fn a_wall_clock_that_steps_back_during_the_lifecycle_leaves_a_record_that_loads() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .build()
        .unwrap();
    let built = block_on(
        pipeline
            .start("r1", revision("aaa"))
            .unwrap()
            .build(&pipeline),
    )
    .unwrap();
    let artifact = built.artifact().clone();
    // NTP steps the clock an hour back between two moves.
    clock.set(tollgate::time::Timestamp::from_millis(
        support::START.as_millis() - 3_600_000,
    ));
    let tested = block_on(built.test(&pipeline, &artifact)).unwrap();
    assert!(tested.record().entered_at() >= tested.record().created_at());
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.record(), tested.record());
}

#[test]
fn a_panicking_gate_closes_its_move_and_the_explanation_instead_of_crashing_the_host() {
    let clock = clock();
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            gate::from_fn("flaky-metrics", |_| -> Verdict {
                panic!("metrics backend unreachable")
            }),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let why = block_on(pipeline.explain(staged.record()));
    assert!(!why.is_ready());
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Closed { gate, reason })
            if gate == "flaky-metrics" && reason.contains("metrics backend unreachable")),
        "{}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::GateClosed);
}

// ---- host code that misbehaves (items 7 and 8) ----

/// Sets its flag when dropped: tells whether a gate's evaluation was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A gate that never decides (a metrics backend that never answers); its flag is set once
/// its evaluation is dropped.
struct NeverDecides(Arc<AtomicBool>);

#[async_trait]
impl Gate for NeverDecides {
    async fn evaluate(&self, _ctx: &GateContext<'_>) -> Verdict {
        let _dropped = DropFlag(Arc::clone(&self.0));
        std::future::pending::<Verdict>().await
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("metrics")
    }
}

/// A gate that decides `after` the release entered its state, open.
struct DecidesAfter(Duration);

#[async_trait]
impl Gate for DecidesAfter {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        ctx.sleep_until(ctx.release().entered_at().saturating_add(self.0))
            .await;
        Verdict::Open
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("slow")
    }
}

#[test]
fn a_cancel_reaches_a_gate_that_never_decides_and_drops_it() {
    for through_pipeline in [false, true] {
        let clock = clock();
        let dropped = Arc::new(AtomicBool::new(false));
        let pipeline = deployment("shop", &clock)
            .stages(standard_stages())
            .gate(Move::Approve, NeverDecides(Arc::clone(&dropped)))
            .build()
            .unwrap();
        let (staged, _) = staged(&pipeline, "r1", "aaa");
        let entered = staged.record().entered_at();
        let handle = if through_pipeline {
            pipeline.cancel_handle()
        } else {
            staged.cancel_handle()
        };
        // The host gives up a minute into the evaluation.
        let (refused, ()) = run_virtual(
            &clock,
            futures::future::join(staged.auto_approve(&pipeline), async {
                clock.sleep(Duration::from_secs(60)).await;
                handle.cancel();
            }),
        );
        let refused = refused.unwrap_err();
        assert!(
            matches!(refused.error(), Error::MoveCancelled { mv: Move::Approve }),
            "{}",
            refused.error()
        );
        assert_eq!(refused.kind(), ErrorKind::Cancelled);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the gate's evaluation was dropped"
        );
        assert_eq!(
            clock.now(),
            entered.saturating_add(Duration::from_secs(60)),
            "it ended when cancelled"
        );
        // Nothing of the unfinished evaluation was recorded; the release is as it was.
        let release = refused.into_release();
        assert!(release.record().gates().is_empty());
        let restored = block_on(pipeline.restore("r1")).unwrap();
        assert_eq!(restored.record().state(), release.record().state());
    }
}

#[test]
fn a_gate_timeout_races_the_gate_against_the_clock() {
    let clock = clock();
    let dropped = Arc::new(AtomicBool::new(false));
    let hour = Duration::from_secs(3600);
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(
            Move::Approve,
            NeverDecides(Arc::clone(&dropped)).timeout(hour),
        )
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let entered = staged.record().entered_at();
    let refused = run_virtual(&clock, staged.auto_approve(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Closed { gate, reason })
            if gate == "metrics" && reason == "gave up after 1h waiting for `metrics` to decide"),
        "{}",
        refused.error()
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(clock.now(), entered.saturating_add(hour));
}

#[test]
fn a_gate_that_decides_at_its_timeout_is_heard_and_a_millisecond_later_is_not() {
    let hour = Duration::from_secs(3600);
    for (takes, opens) in [
        (Duration::from_millis(3_599_999), true),
        (hour, true),
        (hour + Duration::from_millis(1), false),
    ] {
        let clock = clock();
        let pipeline = deployment("shop", &clock)
            .stages(standard_stages())
            .gate(Move::Approve, DecidesAfter(takes).timeout(hour))
            .build()
            .unwrap();
        let (staged, _) = staged(&pipeline, "r1", "aaa");
        let moved = run_virtual(&clock, staged.auto_approve(&pipeline));
        assert_eq!(moved.is_ok(), opens, "{takes:?}");
    }
}

#[test]
fn a_panicking_retry_predicate_ends_its_stage_with_the_failure_and_says_so() {
    let clock = clock();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let flaky = tollgate::executor::from_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(StageOutcome::failure("connection reset"))
    });
    let pipeline = deployment("shop", &clock)
        .stages([
            Stage::build("compile").run(support::compile()),
            Stage::test("unit")
                .after("compile")
                .retry(RetryPolicy::attempts(3))
                .retry_if(|_| panic!("predicate bug"))
                .run(flaky),
            Stage::stage("staging").run(support::ok()),
            Stage::deploy("production").run(support::ok()),
        ])
        .build()
        .unwrap();
    let (built, artifact) = support::built(&pipeline, "r1", "aaa");
    let refused = run_virtual(&clock, built.test(&pipeline, &artifact)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::StageFailed);
    assert!(
        refused.error().to_string().contains("connection reset"),
        "{}",
        refused.error()
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "not retried");
    let step = refused.release().record().steps().last().unwrap().clone();
    assert_eq!(
        step.warnings,
        [Warning::RetryPredicatePanicked {
            stage: "unit".parse().unwrap(),
            attempt: 1,
            message: "predicate bug".to_owned(),
        }]
    );
}

#[test]
fn a_panicking_observer_does_not_stop_a_move_and_is_told_so() {
    let clock = clock();
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&told);
    let engine = Engine::builder()
        .observer(observer_fn(move |event: &Event| {
            seen.lock().unwrap().push(event.kind());
            if matches!(
                event,
                Event::GateEvaluated { .. } | Event::StageReady { .. }
            ) {
                panic!("dashboard went away");
            }
        }))
        .build()
        .unwrap();
    let pipeline = deployment("shop", &clock)
        .engine(engine)
        .stages(standard_stages())
        .gate(Move::Approve, gate::soak(Duration::ZERO))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = run_virtual(&clock, staged.auto_approve(&pipeline)).unwrap();
    let deployed = run_virtual(&clock, approved.deploy(&pipeline, &artifact)).unwrap();
    let deploy = deployed.record().steps().last().unwrap();
    assert!(matches!(
        deploy.warnings.as_slice(),
        [Warning::ObserverPanicked { event, times: 1, .. }] if event == "stage_ready"
    ));
    let told = told.lock().unwrap();
    assert!(
        told.iter().filter(|kind| **kind == "warning").count() >= 2,
        "a warning after the gates' verdicts and one in the step: {told:?}"
    );
}
