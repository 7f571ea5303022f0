//! Matrices: one stage expanded into its combinations with readable ids, `exclude` and
//! `include`, dependents after every combination, typed errors for an empty matrix or a
//! clashing id; and the count of combinations against a reference, on random matrices.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use proptest::prelude::*;
use tollgate::engine::Engine;
use tollgate::executor::{self, StageOutcome};
use tollgate::graph::{GraphError, Matrix, StageGraph, StageId, StageSpec, Step};

use crate::fixture::run;
use crate::support::clock;

fn ruff_like() -> Matrix {
    Matrix::new()
        .axis("os", ["linux", "macos", "windows"])
        .axis("rust", ["1.85", "stable"])
        .exclude([("os", "windows"), ("rust", "1.85")])
        .include([("os", "linux"), ("rust", "nightly")])
}

#[test]
fn a_matrix_stage_runs_once_per_combination_and_its_dependents_wait_for_all() {
    let graph = StageGraph::builder()
        .stage(StageSpec::test("lint"))
        .matrix(StageSpec::test("test").after("lint"), &ruff_like())
        .stage(StageSpec::test("report").after("test"))
        .build()
        .unwrap();
    let ids: Vec<&str> = graph.stages_in(Step::Test).map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "lint",
            "test (os=linux, rust=1.85)",
            "test (os=linux, rust=stable)",
            "test (os=macos, rust=1.85)",
            "test (os=macos, rust=stable)",
            "test (os=windows, rust=stable)",
            "test (os=linux, rust=nightly)",
            "report",
        ]
    );
    // Every combination runs after `lint`, `report` after every combination.
    let after_report: BTreeSet<&str> = graph
        .dependencies("report")
        .unwrap()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(after_report.len(), 6);
    assert!(after_report.iter().all(|id| id.starts_with("test (")));

    let seen = Mutex::new(Vec::new());
    let executor = executor::from_fn(|ctx| {
        let matrix = &ctx.spec().matrix;
        if !matrix.is_empty() {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{}/{}", matrix["os"], matrix["rust"]));
        }
        Ok(StageOutcome::success())
    });
    let report = run(&Engine::new(), &graph, &executor, &clock());
    assert!(report.succeeded());
    let mut seen = seen.into_inner().unwrap_or_else(PoisonError::into_inner);
    seen.sort();
    assert_eq!(
        seen,
        [
            "linux/1.85",
            "linux/nightly",
            "linux/stable",
            "macos/1.85",
            "macos/stable",
            "windows/stable"
        ]
    );
}

#[test]
fn an_empty_matrix_is_a_typed_error_naming_the_stage() {
    for matrix in [
        Matrix::new(),
        Matrix::new().axis("os", Vec::<String>::new()),
        Matrix::new()
            .axis("os", ["linux"])
            .exclude([("os", "linux")]),
    ] {
        let error = StageGraph::builder()
            .matrix(StageSpec::test("test"), &matrix)
            .build()
            .unwrap_err();
        assert_eq!(
            error,
            GraphError::EmptyMatrix {
                stage: StageId::new("test").unwrap()
            },
            "{matrix:?}"
        );
        assert_eq!(
            error.to_string(),
            "the matrix of stage `test` has no combinations"
        );
    }
}

#[test]
fn a_clashing_matrix_id_is_a_typed_error_naming_it() {
    // The base id is another stage's id: `after("test")` would be ambiguous.
    let error = StageGraph::builder()
        .stage(StageSpec::test("test"))
        .matrix(
            StageSpec::test("test"),
            &Matrix::new().axis("os", ["linux"]),
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, GraphError::MatrixClash { stage, id } if stage == "test" && id == "test"),
        "{error:?}"
    );
    // Two combinations that read the same.
    let error = StageGraph::builder()
        .matrix(
            StageSpec::test("test"),
            &Matrix::new()
                .axis("a", ["1, b=2"])
                .include([("a", "1"), ("b", "2")]),
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, GraphError::MatrixClash { id, .. } if id == "test (a=1, b=2)"),
        "{error:?}"
    );
    // A combination that is another stage's id.
    let error = StageGraph::builder()
        .stage(StageSpec::test("test (os=linux)"))
        .matrix(
            StageSpec::test("test"),
            &Matrix::new().axis("os", ["linux"]),
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, GraphError::DuplicateStage { id } if id == "test (os=linux)"),
        "{error:?}"
    );
}

#[test]
fn a_matrix_round_trips_through_serde() {
    let json = serde_json::to_string(&ruff_like()).unwrap();
    let back: Matrix = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ruff_like());
    assert!(serde_json::from_str::<Matrix>(r#"{"axes":[],"excludes":[]}"#).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Combinations = product of the axes' sizes, less those an exclude matches, plus the
    /// includes that are not already there; each id is unique and names its values.
    #[test]
    fn the_count_of_combinations_is_the_product_less_excludes_plus_new_includes(
        sizes in prop::collection::vec(1usize..4, 1..4),
        excludes in prop::collection::vec(prop::collection::vec((0usize..4, 0usize..4), 1..3), 0..3),
        includes in prop::collection::vec(prop::collection::vec(0usize..5, 1..4), 0..3),
    ) {
        let axis = |a: usize| format!("a{a}");
        let value = |v: usize| format!("v{v}");
        let mut matrix = Matrix::new();
        for (a, &n) in sizes.iter().enumerate() {
            matrix = matrix.axis(axis(a), (0..n).map(value));
        }
        for entry in &excludes {
            matrix = matrix.exclude(entry.iter().map(|&(a, v)| (axis(a % sizes.len()), value(v))));
        }
        for entry in &includes {
            matrix = matrix.include(entry.iter().enumerate().map(|(a, &v)| (axis(a), value(v))));
        }
        // The reference: every tuple of the product, tested against each exclude by hand.
        let mut product: Vec<Vec<usize>> = vec![Vec::new()];
        for &n in &sizes {
            product = product
                .into_iter()
                .flat_map(|t| (0..n).map(move |v| { let mut t = t.clone(); t.push(v); t }))
                .collect();
        }
        let excluded = |t: &Vec<usize>| {
            excludes.iter().any(|entry| entry.iter().all(|&(a, v)| t[a % sizes.len()] == v))
        };
        let kept: Vec<Vec<usize>> = product.into_iter().filter(|t| !excluded(t)).collect();
        let mut all: Vec<Vec<usize>> = kept.clone();
        for entry in &includes {
            if !all.contains(entry) {
                all.push(entry.clone());
            }
        }
        let combinations = matrix.combinations();
        prop_assert_eq!(combinations.len(), all.len());
        if all.is_empty() {
            let expanded = matrix.expand(&StageSpec::test("t"));
            prop_assert!(matches!(expanded, Err(GraphError::EmptyMatrix { .. })), "{:?}", expanded);
        } else {
            let stages = matrix.expand(&StageSpec::test("t")).unwrap();
            let ids: BTreeSet<String> = stages.iter().map(|s| s.id.to_string()).collect();
            prop_assert_eq!(ids.len(), stages.len());
            for (stage, want) in stages.iter().zip(&all) {
                let pairs: Vec<String> = want.iter().enumerate().map(|(a, &v)| format!("{}={}", axis(a), value(v))).collect();
                prop_assert_eq!(stage.id.as_str(), format!("t ({})", pairs.join(", ")));
                prop_assert_eq!(stage.matrix.len(), want.len());
            }
        }
    }
}
