//! Pipeline definitions: what makes one invalid (a stage without an executor, an empty step,
//! a cycle, a malformed name), each refused with what was wrong; and the default executor.

use crate::support::{
    AUTHOR, Recorder, block_on, clock, compile, deployment, deployment_pipeline, ok, revision,
    staged, stages_after_build, standard_stages,
};
use tollgate::graph::{GraphError, StageId, Step};
use tollgate::id::IdError;
use tollgate::prelude::*;
use tollgate::release::StateName;

// ---- pipeline definitions ----

#[test]
fn a_stage_without_an_executor_is_named() {
    let error = deployment("shop", &clock())
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit"))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingExecutor { stage } if stage == "unit"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
    assert!(error.to_string().contains("`unit`"), "{error}");
}

#[test]
fn the_default_executor_runs_stages_without_their_own() {
    let clock = clock();
    let recorder = Recorder::new();
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile"))
        .stage(Stage::stage("staging"))
        .stage(Stage::deploy("production"))
        .default_executor(recorder.ok(0))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
    assert_eq!(recorder.started(), ["unit", "staging", "production"]);
}

#[test]
fn a_step_without_stages_is_refused() {
    let error = deployment("shop", &clock())
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Graph(GraphError::EmptyStep { step: Step::Deploy })
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

#[test]
fn a_dependency_cycle_is_refused() {
    let error = deployment("shop", &clock())
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::test("unit").after("compile").after("lint").run(ok()))
        .stage(Stage::test("lint").after("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap_err();
    match &error {
        Error::Graph(GraphError::Cycle { stages }) => {
            let mut names: Vec<&str> = stages.iter().map(StageId::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, ["lint", "unit"]);
        }
        other => panic!("expected GraphError::Cycle, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

#[test]
fn invalid_names_are_refused_with_what_was_wrong() {
    let clock = clock();
    let error = deployment("", &clock)
        .stages(standard_stages())
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::Id(IdError::Invalid { what: "pipeline name", value, .. }) if value.is_empty()),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);

    let error = Environment::new("prod\neu").unwrap_err();
    assert!(
        matches!(
            &error,
            IdError::Invalid {
                what: "environment name",
                ..
            }
        ),
        "{error:?}"
    );

    let pipeline = deployment_pipeline(&clock);
    let error = pipeline.start("  ", revision("aaa")).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Id(IdError::Invalid {
                what: "release id",
                ..
            })
        ),
        "{error:?}"
    );
    let error = Revision::new("", AUTHOR).unwrap_err();
    assert!(
        matches!(
            &error,
            IdError::Invalid {
                what: "revision id",
                ..
            }
        ),
        "{error:?}"
    );
    let error = Revision::new("aaa", "").unwrap_err();
    assert!(
        matches!(&error, IdError::Invalid { what: "person", .. }),
        "{error:?}"
    );

    let error = deployment("shop", &clock)
        .stages(stages_after_build([
            Stage::build("has;semicolon").run(compile())
        ]))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::Graph(GraphError::InvalidStageId { id, .. }) if id == "has;semicolon"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}
