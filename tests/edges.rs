//! Robust at the edges (issue 11, the inputs part): inputs that used to panic or mislead
//! give short, typed, one-line errors, and host code that misbehaves stops a move, not the
//! host.

mod support;

use std::time::Duration;

use support::{block_on, clock, deployment, revision, staged, standard_stages};
use tollgate::approval::{ApprovalError, ApprovalPolicy, Rule};
use tollgate::engine::Engine;
use tollgate::gate::{self, ChangeWindows, GateError};
use tollgate::graph::{GraphError, StageGraph, StageSpec, Step};
use tollgate::id::{EnvironmentName, IdError, Person, ReleaseId};
use tollgate::prelude::*;

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
