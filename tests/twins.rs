//! `examples/delivery.rs` and `examples/deployment.rs` are twins: apart from their opening
//! docs, only the lines marked `// the decision` may differ, and those only choose the mode
//! and who approves (no extra gate sneaks into one of them).

const DELIVERY: &str = include_str!("../examples/delivery.rs");
const DEPLOYMENT: &str = include_str!("../examples/deployment.rs");
const MARK: &str = "// the decision";

/// The lines of an example that must match its twin's, numbered from 1.
fn shared(source: &str) -> Vec<(usize, &str)> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with("//!") && !line.contains(MARK))
        .map(|(i, line)| (i + 1, line))
        .collect()
}

fn decisions(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter(|line| !line.starts_with("//!") && line.contains(MARK))
        .collect()
}

#[test]
fn the_twins_differ_only_in_the_decision_lines() {
    let (delivery, deployment) = (shared(DELIVERY), shared(DEPLOYMENT));
    for (d, p) in delivery.iter().zip(&deployment) {
        assert_eq!(
            d.1, p.1,
            "delivery.rs line {} and deployment.rs line {} differ but are not marked `{MARK}`",
            d.0, p.0
        );
    }
    assert_eq!(
        delivery.len(),
        deployment.len(),
        "one twin has unmarked lines the other lacks"
    );
}

#[test]
fn the_decision_is_the_mode_and_who_approves() {
    let delivery = decisions(DELIVERY);
    let deployment = decisions(DEPLOYMENT);
    assert!(delivery.iter().any(|l| l.contains("Pipeline::<Delivery>")));
    assert!(delivery.iter().any(|l| l.contains(".approvals(")));
    assert!(delivery.iter().any(|l| l.contains("staged.approve(")));
    assert!(
        deployment
            .iter()
            .any(|l| l.contains("Pipeline::<Deployment>"))
    );
    assert!(
        deployment
            .iter()
            .any(|l| l.contains("staged.auto_approve("))
    );
    for line in delivery.iter().chain(&deployment) {
        assert!(
            !line.contains(".gate(") && !line.contains("environment_gate("),
            "a gate is not part of the decision: {line}"
        );
    }
    assert!(
        delivery.len() <= 4 && deployment.len() <= 4,
        "{delivery:?} {deployment:?}"
    );
}
