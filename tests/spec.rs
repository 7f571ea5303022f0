//! Pipelines as data: specs read from JSON and TOML (feature `toml`), their located errors
//! and "did you mean", unknown keys refused at every level, durations as people write them,
//! the mode as a type, and the round trip spec → pipeline → spec.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate::engine::FailurePolicy;
use tollgate::environment::EnvironmentName;
use tollgate::executor::StageStatus;
use tollgate::fleet::{Fleet, FleetOptions, Lifecycle, LifecycleError, PhaseRule};
use tollgate::graph::{
    Backoff, Concurrency, Condition, GraphError, Matrix, RetryPolicy, StageGraph, StageId, Step,
};
use tollgate::id::Person;
use tollgate::lifecycle::ModeKind;
use tollgate::pipeline::{NoApprovals, PipelineBuilder, WithApprovals};
use tollgate::prelude::*;
use tollgate::spec::{
    ApprovalSpec, CommandSpec, EngineSpec, GateParams, GateRegistry, GateSpec, LifecycleSpec,
    PhaseEntrySpec, PhaseRuleSpec, PhaseSpec, PipelineSpec, RuleSpec, SpecError, StageDef,
};

use support::{block_on, clock, ok};

/// A small but complete delivery spec: every section present, every duration as text.
fn base() -> Value {
    json!({
        "name": "shop",
        "mode": "delivery",
        "stages": [
            { "id": "compile", "step": "build", "run": { "shell": "make", "env": { "CC": "cc" } },
              "retry": { "max_attempts": 2, "backoff": { "kind": "fixed", "delay": "30s" } } },
            { "id": "unit", "step": "test", "after": ["compile"], "timeout": "10m", "run": "true" },
            { "id": "staging", "step": "stage", "run": "true" },
            { "id": "production", "step": "deploy", "run": "true" },
            { "id": "lint", "step": "test", "after": ["compile"], "run": "true",
              "when": "always", "continue_on_error": true,
              "matrix": { "axes": { "os": ["linux", "macos"] }, "exclude": [ { "os": "macos" } ],
                          "include": [ { "os": "windows" } ] },
              "concurrency": { "group": "lint", "cancel_in_progress": true } }
        ],
        "gates": [ { "kind": "soak", "on": "approve", "params": { "duration": "1h" } } ],
        "approvals": {
            "rules": [ { "name": "managers", "people": ["rita", "sam"] } ],
            "environments": { "production": { "rules": [ { "name": "cto", "people": ["ines"] } ] } }
        },
        "staging": { "name": "staging" },
        "engine": { "workers": 4, "step_timeout": "1h 30m" }
    })
}

fn parse_json(value: &Value) -> Result<PipelineSpec, SpecError> {
    PipelineSpec::from_json_str(&serde_json::to_string_pretty(value).unwrap(), "shop.json")
}

/// Every place a key can be misspelt, as (JSON pointer to the object, typo, path in the
/// error, key meant).
const TYPOS: &[(&str, &str, &str, &str)] = &[
    ("", "stagse", "", "stages"),
    ("/stages/1", "aftr", "stages[1]", "after"),
    (
        "/stages/0/retry",
        "max_attempt",
        "stages[0].retry",
        "max_attempts",
    ),
    (
        "/stages/0/retry/backoff",
        "dealy",
        "stages[0].retry.backoff",
        "delay",
    ),
    ("/stages/0/run", "evn", "stages[0].run", "env"),
    (
        "/stages/4",
        "contine_on_error",
        "stages[4]",
        "continue_on_error",
    ),
    ("/stages/4/matrix", "exlude", "stages[4].matrix", "exclude"),
    (
        "/stages/4/concurrency",
        "cancel_in_progres",
        "stages[4].concurrency",
        "cancel_in_progress",
    ),
    ("/gates/0", "paramz", "gates[0]", "params"),
    ("/approvals", "rulez", "approvals", "rules"),
    (
        "/approvals/rules/0",
        "peopel",
        "approvals.rules[0]",
        "people",
    ),
    (
        "/approvals/environments/production",
        "valid_fr",
        "approvals.environments.production",
        "valid_for",
    ),
    ("/staging", "descripton", "staging", "description"),
    ("/engine", "worker", "engine", "workers"),
];

#[test]
fn a_misspelt_key_is_refused_at_every_level_with_its_path_and_the_key_meant() {
    for &(pointer, typo, path, meant) in TYPOS {
        let mut spec = base();
        spec.pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{pointer} is an object"))
            .insert(typo.into(), json!(1));
        let error = parse_json(&spec).expect_err(typo);
        let SpecError::Invalid {
            location,
            path: found,
            suggestion,
            message,
        } = &error
        else {
            panic!("{typo}: {error}")
        };
        // The path ends in the key refused.
        let expected = if path.is_empty() {
            typo.to_owned()
        } else {
            format!("{path}.{typo}")
        };
        assert_eq!(*found, expected, "{typo}: {error}");
        assert_eq!(suggestion.as_deref(), Some(meant), "{typo}: {error}");
        assert!(
            message.contains(&format!("unknown field `{typo}`")),
            "{error}"
        );
        // The location points at the misspelt key itself.
        assert_eq!(location.text, format!("\"{typo}\""), "{typo}: {error}");
        assert!(location.source_line.contains(typo), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("shop.json:{}:", location.line))
        );
    }
}

#[test]
fn the_graphs_own_stage_form_refuses_a_misspelt_dependency_too() {
    // The issue's case: a typo `aftr` must not drop the dependency in silence.
    let graph = r#"[ { "id": "compile", "step": "build" },
                     { "id": "unit", "step": "test", "aftr": ["compile"] } ]"#;
    let error = serde_json::from_str::<StageGraph>(graph)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `aftr`"), "{error}");
}

#[test]
fn a_misspelt_gate_parameter_is_refused_with_the_parameter_meant() {
    let mut spec = base();
    spec["gates"][0]["params"] = json!({ "duraton": "1h" });
    let spec = parse_json(&spec).unwrap();
    let error = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    let Error::Spec(SpecError::GateParams {
        index,
        kind,
        suggestion,
        ..
    }) = &error
    else {
        panic!("{error}")
    };
    assert_eq!(
        (*index, kind.as_str(), suggestion.as_deref()),
        (0, "soak", Some("duration"))
    );
    assert_eq!(error.kind(), ErrorKind::InvalidDefinition);
}

#[test]
fn a_misspelt_gate_kind_names_the_kinds_there_are() {
    let mut spec = base();
    spec["gates"][0]["kind"] = json!("sok");
    let spec = parse_json(&spec).unwrap();
    let error = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "gates[0]: unknown gate kind `sok` (did you mean `soak`?) \
         (known: change_windows, soak, test_results)"
    );
}

#[test]
fn a_gate_guards_exactly_one_move_or_environment() {
    for target in [
        json!({}),
        json!({ "on": "deploy", "environment": "production" }),
    ] {
        let mut spec = base();
        let gate = spec["gates"][0].as_object_mut().unwrap();
        gate.remove("on");
        gate.extend(target.as_object().unwrap().clone());
        let spec = parse_json(&spec).unwrap();
        let error = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
        assert!(
            matches!(error, Error::Spec(SpecError::GateTarget { index: 0, .. })),
            "{error}"
        );
    }
}

#[test]
fn a_misspelt_step_suggests_the_step_meant() {
    let mut spec = base();
    spec["stages"][1]["step"] = json!("tset");
    let error = parse_json(&spec).unwrap_err();
    let SpecError::Invalid {
        path, suggestion, ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(
        (path.as_str(), suggestion.as_deref()),
        ("stages[1].step", Some("test"))
    );
}

#[test]
fn durations_are_read_as_people_write_them_or_as_milliseconds() {
    let mut spec = base();
    spec["stages"][1]["timeout"] = json!("1h 30m");
    spec["stages"][1]["attempt_timeout"] = json!(90_000);
    spec["stages"][1]["estimate"] = json!("PT2M");
    spec["approvals"]["valid_for"] = json!("8h");
    spec["claim_lease"] = json!("2h");
    let spec = parse_json(&spec).unwrap();
    let unit = &spec.stages[1];
    assert_eq!(unit.timeout, Some(Duration::from_secs(90 * 60)));
    assert_eq!(unit.attempt_timeout, Some(Duration::from_secs(90)));
    assert_eq!(unit.estimate, Some(Duration::from_secs(120)));
    assert_eq!(
        spec.stages[0].retry.unwrap().backoff,
        Backoff::Fixed {
            delay: Duration::from_secs(30)
        }
    );
    assert_eq!(
        spec.approvals.as_ref().unwrap().valid_for,
        Duration::from_secs(8 * 3600)
    );
    assert_eq!(spec.engine.step_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(spec.claim_lease, Duration::from_secs(7200));
    // They are written back as people write them.
    let text = spec.to_json_string();
    assert!(text.contains(r#""timeout": "1h 30m""#), "{text}");
}

#[test]
fn a_bad_duration_is_located_and_says_how_to_write_one() {
    let text = "{\n  \"name\": \"shop\",\n  \"mode\": \"deployment\",\n  \"claim_lease\": \"ten minutes\",\n  \"stages\": []\n}";
    let error = PipelineSpec::from_json_str(text, "shop.json").unwrap_err();
    let SpecError::Invalid {
        location,
        path,
        message,
        ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!((location.line, path.as_str()), (4, "claim_lease"));
    assert_eq!(location.text, "\"ten minutes\"");
    assert!(message.contains("write it as `10m`"), "{message}");
}

#[test]
fn the_mode_named_in_the_spec_must_be_the_pipelines_type() {
    let delivery = parse_json(&base()).unwrap();
    let error = Pipeline::<Deployment>::from_spec(&delivery, &GateRegistry::new()).unwrap_err();
    assert!(matches!(
        error,
        Error::Spec(SpecError::ModeMismatch {
            spec: ModeKind::Delivery,
            built: ModeKind::Deployment
        })
    ));

    // A deployment spec with approvals is refused, and so is a delivery spec without.
    let mut deployment = delivery.clone();
    deployment.mode = ModeKind::Deployment;
    let error = Pipeline::<Deployment>::from_spec(&deployment, &GateRegistry::new()).unwrap_err();
    assert!(
        matches!(error, Error::Spec(SpecError::ApprovalsInDeployment)),
        "{error}"
    );
    let mut no_people = delivery;
    no_people.approvals = None;
    let error = Pipeline::<Delivery>::from_spec(&no_people, &GateRegistry::new()).unwrap_err();
    assert!(
        matches!(error, Error::Spec(SpecError::MissingApprovals)),
        "{error}"
    );
}

#[test]
fn graph_errors_of_a_spec_name_the_stages() {
    let mut spec = base();
    spec["stages"][1]["after"] = json!(["compil"]);
    let spec = parse_json(&spec).unwrap();
    let error = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `unit` depends on unknown stage `compil`"
    );
}

#[test]
fn a_misspelt_condition_is_refused_with_the_condition_meant() {
    for (when, typo, meant) in [
        (json!("alway"), "alway", "always"),
        (
            json!({ "dependecy_failed": "compile" }),
            "dependecy_failed",
            "dependency_failed",
        ),
    ] {
        let mut spec = base();
        spec["stages"][4]["when"] = when.clone();
        let error = parse_json(&spec).expect_err("a misspelt condition");
        let SpecError::Invalid {
            location,
            path,
            suggestion,
            message,
        } = &error
        else {
            panic!("{when}: {error}")
        };
        assert_eq!(path, "stages[4].when", "{error}");
        assert_eq!(suggestion.as_deref(), Some(meant), "{error}");
        assert!(message.starts_with("unknown variant"), "{error}");
        // Located at the misspelt name itself.
        assert_eq!(location.text, format!("\"{typo}\""), "{error}");
        assert!(location.source_line.contains(typo), "{error}");
    }
}

#[test]
fn a_matrix_names_each_axis_once() {
    let text = serde_json::to_string_pretty(&base())
        .unwrap()
        .replace(r#""os": ["#, r#""os": ["linux"], "os": ["#);
    let error = PipelineSpec::from_json_str(&text, "shop.json").unwrap_err();
    let SpecError::Invalid { path, message, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(path, "stages[4].matrix.axes", "{error}");
    assert!(message.contains("the axis `os` is named twice"), "{error}");
}

#[test]
fn a_condition_on_a_stage_that_is_not_a_dependency_names_the_stage() {
    let mut spec = base();
    spec["stages"][4]["when"] = json!({ "dependency_failed": "unitt" });
    let spec = parse_json(&spec).unwrap();
    let error = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    let Error::Graph(GraphError::ConditionOnNonDependency { stage, dependency }) = &error else {
        panic!("{error}")
    };
    // The first combination of the matrix stage is where the graph finds it.
    assert_eq!(stage.as_str(), "lint (os=linux)", "{error}");
    assert_eq!(dependency.as_str(), "unitt", "{error}");
    assert!(error.to_string().contains("lint (os=linux)"), "{error}");
}

#[test]
fn a_specs_workflow_settings_reach_the_graph_and_its_matrix_stays_one_stage() {
    let spec = parse_json(&base()).unwrap();
    let pipeline = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap();
    let graph = pipeline.graph();
    let lint: Vec<&str> = graph
        .stages_in(Step::Test)
        .filter(|s| s.id.as_str().starts_with("lint"))
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(lint, ["lint (os=linux)", "lint (os=windows)"]);
    let linux = graph.get("lint (os=linux)").unwrap();
    assert_eq!(linux.when, Condition::Always);
    assert!(linux.continue_on_error);
    assert_eq!(
        linux.concurrency,
        Some(Concurrency::cancel_in_progress("lint"))
    );
    assert_eq!(linux.matrix["os"], "linux");
    // Said back as written: one stage with its matrix.
    let back = pipeline.to_spec();
    assert_eq!(back, spec);
    assert_eq!(back.stages.len(), 5);
    assert_eq!(
        back.stages[4]
            .matrix
            .as_ref()
            .map(Matrix::combinations)
            .map(|c| c.len()),
        Some(2)
    );
}

#[test]
fn a_stage_after_a_matrix_stage_is_said_back_as_written() {
    let mut spec = base();
    spec["stages"][2]["after"] = json!(["lint"]);
    spec["stages"][2]["when"] = json!("on_failure");
    // `staging` is in a later step than `lint`: it waits for every combination.
    let spec = parse_json(&spec).unwrap();
    let pipeline = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap();
    assert_eq!(pipeline.graph().get("staging").unwrap().after.len(), 2);
    assert_eq!(pipeline.to_spec(), spec);
}

#[test]
fn a_matrix_stage_built_in_code_is_said_back_unexpanded() {
    let clock = clock();
    let pipeline = Pipeline::<Deployment>::builder("web")
        .clock(clock)
        .stage(Stage::build("compile").run(ok()))
        .stage(
            Stage::test("test")
                .after("compile")
                .matrix(
                    Matrix::new()
                        .axis("rust", ["stable", "1.85"])
                        .axis("os", ["linux"]),
                )
                .run(ok()),
        )
        .stage(Stage::test("report").after("test").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    assert_eq!(pipeline.graph().len(), 6);
    let spec = pipeline.to_spec();
    let ids: Vec<&str> = spec.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["compile", "test", "report", "staging", "production"]);
    assert_eq!(spec.stages[2].after, ["test"]);
    let matrix = spec.stages[1].matrix.as_ref().unwrap();
    let axes: Vec<&str> = matrix.axes.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(axes, ["rust", "os"], "the axes keep their order");
    // And the spec builds the same graph again.
    let again = Pipeline::<Deployment>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    // (Its stages have no command: the host gives them an executor.)
    assert!(matches!(again, Error::MissingExecutor { .. }), "{again}");
    let again = PipelineBuilder::<Deployment, NoApprovals>::from_spec(&spec, &GateRegistry::new())
        .unwrap()
        .default_executor(ok())
        .build()
        .unwrap();
    let ids = |p: &Pipeline<Deployment>| -> Vec<String> {
        p.graph().stages().map(|s| s.id.to_string()).collect()
    };
    assert_eq!(ids(&again), ids(&pipeline));
}

#[test]
fn a_spec_file_is_read_by_its_extension_and_a_missing_one_is_named() {
    let error = PipelineSpec::from_path("pipeline.yaml").unwrap_err();
    assert!(
        matches!(&error, SpecError::Format { file, .. } if file == "pipeline.yaml"),
        "{error}"
    );
    let error = PipelineSpec::from_path("/nonexistent/pipeline.json").unwrap_err();
    assert!(
        matches!(&error, SpecError::Read { file, .. } if file == "/nonexistent/pipeline.json"),
        "{error}"
    );
}

#[test]
fn a_jitter_over_a_hundred_percent_is_refused_not_run() {
    let mut spec = base();
    spec["stages"][0]["retry"]["jitter_percent"] = json!(250);
    let spec = parse_json(&spec).unwrap();
    let error = Pipeline::<Delivery>::from_spec(&spec, &GateRegistry::new()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `compile` has an invalid policy: a retry's jitter is a percentage, from 0 to 100"
    );
}

#[test]
fn an_invalid_stage_id_is_refused_where_it_is_written() {
    let mut spec = base();
    spec["stages"][2]["id"] = json!("deploy|prod");
    let error = parse_json(&spec).unwrap_err();
    let SpecError::Invalid { path, location, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(path, "stages[2].id");
    assert_eq!(location.text, "\"deploy|prod\"");
}

#[test]
fn a_command_names_a_script_or_a_program_not_both() {
    let mut spec = base();
    spec["stages"][0]["run"] = json!({ "shell": "make", "program": "make" });
    let error = parse_json(&spec).unwrap_err();
    assert!(
        error.to_string().contains("exactly one of `shell`"),
        "{error}"
    );
    let mut spec = base();
    spec["stages"][0]["run"] = json!({ "args": ["x"] });
    assert!(parse_json(&spec).is_err());
}

/// A host gate, registered by name, reads its own typed parameters.
#[test]
fn a_host_registered_gate_is_built_from_its_parameters() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Freeze {
        reason: String,
    }
    let registry = GateRegistry::new().register("freeze", |params| {
        let freeze: Freeze = params.parse()?;
        Ok(tollgate::gate::from_fn("freeze", move |_| {
            Verdict::closed(freeze.reason.clone())
        }))
    });
    let mut spec = base();
    spec["mode"] = json!("deployment");
    spec.as_object_mut().unwrap().remove("approvals");
    spec["gates"] =
        json!([{ "kind": "freeze", "on": "build", "params": { "reason": "audit week" } }]);
    let spec = parse_json(&spec).unwrap();
    let pipeline = PipelineBuilder::<Deployment, NoApprovals>::from_spec(&spec, &registry)
        .unwrap()
        .clock(clock())
        .build()
        .unwrap();
    let fresh = pipeline.start("shop-1", support::revision("abc")).unwrap();
    let refused = block_on(fresh.build(&pipeline)).unwrap_err();
    assert_eq!(refused.error().kind(), ErrorKind::GateClosed);
    assert!(
        refused.error().to_string().contains("audit week"),
        "{}",
        refused.error()
    );
}

/// A delivery spec whose stages run on the host's executor goes all the way, in virtual time,
/// through a soak gate and the approval its policy asks for.
#[test]
fn a_delivery_spec_runs_to_production_with_a_person_approving() {
    let mut spec = base();
    for stage in spec["stages"].as_array_mut().unwrap() {
        stage.as_object_mut().unwrap().remove("run");
    }
    spec["stages"][0]["id"] = json!("compile");
    let spec = parse_json(&spec).unwrap();
    let clock = clock();
    let pipeline =
        PipelineBuilder::<Delivery, WithApprovals>::from_spec(&spec, &GateRegistry::new())
            .unwrap()
            .stage(Stage::build("package").run(support::compile()))
            .default_executor(ok())
            .clock(clock.clone())
            .build()
            .unwrap();
    let (staged, artifact) = support::staged(&pipeline, "shop-1", "abc");
    // The soak gate holds the approval for an hour; the production policy wants ines.
    let approval = block_on(pipeline.sign_off("shop-1", "ines", "looks good")).unwrap();
    let pending = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    assert_eq!(pending.error().kind(), ErrorKind::GatePending);
    clock.advance(Duration::from_secs(3600));
    let staged = pending.into_release();
    let approval = block_on(pipeline.sign_off("shop-1", "ines", "looks good")).unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.artifact().digest, artifact.digest);
}

/// The commands of a spec run as real programs: the build reports its artifact's digest, a
/// test reads the build's output, a flaky test is retried after its backoff (in virtual time),
/// and the deploy sees the artifact the build reported.
#[cfg(feature = "process")]
#[test]
fn a_specs_commands_run_through_the_process_executor() {
    use tollgate::time::Clock as _;
    let spec = PipelineSpec::from_json_str(
        r#"{ "name": "web", "mode": "deployment", "stages": [
            { "id": "compile", "step": "build",
              "run": "echo '::output version=1.2.3'; echo \"::artifact web $ARTIFACT\"",
              "estimate": "1m" },
            { "id": "unit", "step": "test", "after": ["compile"],
              "run": { "program": "sh", "args": ["-c", "test \"$TOLLGATE_INPUT_COMPILE_VERSION\" = 1.2.3"] } },
            { "id": "flaky", "step": "test",
              "retry": { "max_attempts": 2, "backoff": { "kind": "fixed", "delay": "10m" } },
              "run": "test \"$TOLLGATE_ATTEMPT\" -eq 2" },
            { "id": "staging", "step": "stage", "run": "true" },
            { "id": "production", "step": "deploy",
              "run": { "shell": "test \"$TOLLGATE_ARTIFACT_DIGEST\" = \"$EXPECTED\"; exit 3",
                       "success_codes": [3] } }
        ] }"#,
        "web.json",
    )
    .unwrap();
    let artifact = ArtifactRef::from_bytes("web", b"web 1.2.3");
    let mut spec = spec;
    spec.stages[0]
        .run
        .as_mut()
        .unwrap()
        .env
        .insert("ARTIFACT".into(), artifact.digest.to_string());
    spec.stages[4]
        .run
        .as_mut()
        .unwrap()
        .env
        .insert("EXPECTED".into(), artifact.digest.to_string());
    let clock = clock();
    let pipeline =
        PipelineBuilder::<Deployment, NoApprovals>::from_spec(&spec, &GateRegistry::new())
            .unwrap()
            .clock(clock.clone())
            .build()
            .unwrap();
    let live = tollgate::time::run_virtual(&clock, async {
        let built = pipeline
            .start("web-1", support::revision("abc"))?
            .build(&pipeline)
            .await?;
        assert_eq!(built.artifact().digest, artifact.digest);
        let tested = built.test(&pipeline, &artifact).await?;
        let staged = tested.stage(&pipeline, &artifact).await?;
        let approved = staged.auto_approve(&pipeline).await?;
        approved
            .deploy(&pipeline, &artifact)
            .await
            .map_err(Error::from)
    })
    .unwrap();
    let test_step = &live.record().steps()[1];
    assert_eq!(test_step.stage("flaky").unwrap().attempts().len(), 2);
    // The backoff was waited out in virtual time, not for real.
    assert!(clock.now().saturating_since(support::START) >= Duration::from_secs(600));
}

#[cfg(feature = "toml")]
#[test]
fn a_specs_conditions_matrix_and_multi_line_outputs_drive_the_engine() {
    let spec = PipelineSpec::from_toml_str(
        r#"name = "web"
mode = "deployment"

[[stages]]
id = "compile"
step = "build"
run = '''
echo "::output notes<<END"
echo "line one"
echo "line two"
echo "END"
echo "::artifact web $ARTIFACT"
'''

[[stages]]
id = "read-notes"
step = "test"
after = ["compile"]
run = 'test "$TOLLGATE_INPUT_COMPILE_NOTES" = "$(printf "line one\nline two")"'

[[stages]]
id = "unit"
step = "test"
matrix = { axes = { os = ["linux", "macos"] } }
continue_on_error = true
run = 'test "$TOLLGATE_MATRIX_OS" != macos'

[[stages]]
id = "on-failure"
step = "test"
after = ["unit"]
when = "on_failure"
run = "true"

[[stages]]
id = "macos-failed"
step = "test"
after = ["unit"]
when = { dependency_failed = "unit (os=macos)" }
run = "true"

[[stages]]
id = "staging"
step = "stage"
run = "true"

[[stages]]
id = "production"
step = "deploy"
run = "true"
"#,
        "web.toml",
    )
    .unwrap();
    let artifact = ArtifactRef::from_bytes("web", b"web 1.2.3");
    let mut spec = spec;
    spec.stages[0]
        .run
        .as_mut()
        .unwrap()
        .env
        .insert("ARTIFACT".into(), artifact.digest.to_string());
    let clock = clock();
    let pipeline =
        PipelineBuilder::<Deployment, NoApprovals>::from_spec(&spec, &GateRegistry::new())
            .unwrap()
            .clock(clock.clone())
            .build()
            .unwrap();
    assert_eq!(pipeline.to_spec(), spec);
    let tested = tollgate::time::run_virtual(&clock, async {
        let built = pipeline
            .start("web-1", support::revision("abc"))?
            .build(&pipeline)
            .await?;
        built.test(&pipeline, &artifact).await.map_err(Error::from)
    })
    .unwrap();
    let build = &tested.record().steps()[0];
    assert_eq!(
        build.stage("compile").unwrap().outputs["notes"],
        "line one\nline two"
    );
    let test = &tested.record().steps()[1];
    assert!(test.succeeded(), "{test:?}");
    let stage = |id: &str| test.stage(id).unwrap_or_else(|| panic!("no stage {id}"));
    assert_eq!(stage("read-notes").status, StageStatus::Succeeded);
    assert_eq!(stage("unit (os=linux)").status, StageStatus::Succeeded);
    let macos = stage("unit (os=macos)");
    assert!(
        matches!(macos.status, StageStatus::Failed { .. }) && macos.continued,
        "{macos:?}"
    );
    // An allowed failure is no failure to `on_failure`, but is one to `dependency_failed`.
    assert_eq!(stage("on-failure").status, StageStatus::Skipped);
    assert_eq!(stage("macos-failed").status, StageStatus::Succeeded);
}

// ---- the round trip -------------------------------------------------------------------

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..120).prop_map(Duration::from_secs),
        (1u64..100_000_000).prop_map(Duration::from_millis),
    ]
}

fn command() -> impl Strategy<Value = CommandSpec> {
    (
        prop_oneof![
            "[a-z ;|&$]{0,20}".prop_map(CommandSpec::shell),
            "[a-z/]{1,10}".prop_map(CommandSpec::program)
        ],
        proptest::collection::vec("[a-z-]{0,6}", 0..3),
        proptest::collection::btree_map("[A-Z_]{1,6}", "[a-z0-9 ]{0,6}", 0..3),
        proptest::option::of("[a-z/]{1,8}"),
        prop_oneof![Just(vec![0]), proptest::collection::vec(0i32..5, 1..3)],
    )
        .prop_map(|(mut c, args, env, dir, codes)| {
            c.args = args;
            c.env = env;
            c.dir = dir;
            c.success_codes = codes;
            c
        })
}

fn retry() -> impl Strategy<Value = RetryPolicy> {
    (
        1u32..5,
        prop_oneof![
            duration().prop_map(|delay| Backoff::Fixed { delay }),
            (duration(), 1u32..4, duration()).prop_map(|(initial, factor, max)| {
                Backoff::Exponential {
                    initial,
                    factor,
                    max,
                }
            }),
        ],
        0u8..=100,
    )
        .prop_map(|(n, backoff, jitter)| RetryPolicy::attempts(n).backoff(backoff).jitter(jitter))
}

/// The stages of a valid graph: one to three per step, each depending on a random subset of
/// the ordinary stages before it.
fn stages() -> impl Strategy<Value = Vec<StageDef>> {
    let counts = proptest::array::uniform4(1usize..4);
    counts.prop_flat_map(|counts| {
        let total: usize = counts.iter().sum();
        let per_stage = (
            proptest::collection::vec(any::<bool>(), total),
            proptest::option::of("[a-z ]{0,12}"),
            proptest::option::of(duration()),
            proptest::option::of(retry()),
            proptest::option::of(duration()),
            proptest::option::of(duration()),
            proptest::option::of(prop_oneof![Just("db".to_owned()), Just("net".to_owned())]),
            proptest::option::of(command()),
            any::<bool>(),
            workflow(),
        );
        proptest::collection::vec(per_stage, total).prop_map(move |rows| {
            let mut defs: Vec<StageDef> = Vec::new();
            let steps = counts
                .iter()
                .zip(Step::ALL)
                .flat_map(|(&n, step)| (0..n).map(move |i| (step, i, n)));
            for ((step, i, n), row) in steps.zip(rows) {
                let (
                    picks,
                    description,
                    estimate,
                    retry,
                    attempt_timeout,
                    timeout,
                    group,
                    run,
                    fin,
                    (when, continue_on_error, matrix, concurrency),
                ) = row;
                let mut def = StageDef::new(format!("{step}-{i}"), step);
                // Only the last stage of a step with more than one may be a finally stage,
                // and nothing depends on a finally stage.
                def.finally = fin && n > 1 && i == n - 1;
                def.after = defs
                    .iter()
                    .zip(&picks)
                    .filter(|(d, pick)| **pick && !d.finally)
                    .map(|(d, _)| d.id.clone())
                    .collect();
                def.description = description;
                def.estimate = estimate;
                def.retry = retry;
                def.attempt_timeout = attempt_timeout;
                def.timeout = timeout;
                def.group = group;
                def.run = run;
                def.continue_on_error = continue_on_error;
                def.concurrency = concurrency;
                if !def.finally {
                    def.matrix = matrix;
                    // A finally stage takes no condition; a named dependency is one of the
                    // stage's own, and not a matrix stage (whose `after` names its
                    // combinations instead).
                    def.when = match when {
                        Some(pick) => {
                            let named: Vec<&StageId> = def
                                .after
                                .iter()
                                .filter(|d| defs.iter().any(|s| s.id == **d && s.matrix.is_none()))
                                .collect();
                            match (pick % 4, named.is_empty()) {
                                (1, _) => Condition::OnFailure,
                                (2, _) => Condition::Always,
                                (3, false) => Condition::DependencyFailed(
                                    named[pick / 4 % named.len()].clone(),
                                ),
                                _ => Condition::OnSuccess,
                            }
                        }
                        None => Condition::OnSuccess,
                    };
                }
                defs.push(def);
            }
            defs
        })
    })
}

/// A stage's workflow settings: a condition (a pick, made into one when its dependencies
/// are known), `continue_on_error`, a matrix and a concurrency group.
#[allow(clippy::type_complexity)]
fn workflow() -> impl Strategy<Value = (Option<usize>, bool, Option<Matrix>, Option<Concurrency>)> {
    (
        proptest::option::of(0usize..64),
        any::<bool>(),
        proptest::option::weighted(0.3, matrix()),
        proptest::option::of((
            prop_oneof![Just("production"), Just("pages")],
            any::<bool>(),
        )),
    )
        .prop_map(|(when, continue_on_error, matrix, concurrency)| {
            let concurrency = concurrency.map(|(group, cancel)| {
                if cancel {
                    Concurrency::cancel_in_progress(group)
                } else {
                    Concurrency::queue(group)
                }
            });
            (when, continue_on_error, matrix, concurrency)
        })
}

/// A matrix of one to three axes (in a random order of names) of one to three values, with
/// maybe an `exclude` of one value and an `include` of a new combination with an axis of its
/// own (so an exclude never leaves it empty).
fn matrix() -> impl Strategy<Value = Matrix> {
    (
        proptest::sample::subsequence(vec!["os", "rust", "arch", "zz"], 1..4).prop_shuffle(),
        proptest::collection::vec(
            proptest::sample::subsequence(vec!["a", "b1", "c-2", "x.y"], 1..4),
            3,
        ),
        any::<bool>(),
    )
        .prop_map(|(names, values, edges)| {
            let mut matrix = Matrix::new();
            for (name, values) in names.iter().zip(&values) {
                matrix = matrix.axis(*name, values.iter().copied());
            }
            if edges {
                matrix = matrix
                    .exclude([(names[0], values[0][0])])
                    .include([("extra", "yes"), (names[0], "new")]);
            }
            matrix
        })
}

fn gate() -> impl Strategy<Value = GateSpec> {
    let params = prop_oneof![
        duration().prop_map(|d| (
            "soak",
            GateParams::new()
                .with("duration", tollgate::time::format_duration(d))
                .unwrap()
        )),
        (0usize..3).prop_map(|n| (
            "test_results",
            GateParams::new().with("max_flaky", n).unwrap()
        )),
        Just((
            "change_windows",
            GateParams::new()
                .with("offset", "+01:00")
                .and_then(|p| p.with(
                    "deny_weekly",
                    json!([{ "name": "weekend", "from": "Fri 16:00", "to": "Mon 08:00" }])
                ))
                .unwrap()
        )),
    ];
    let on = prop_oneof![
        Just((Some(Move::Build), None)),
        Just((Some(Move::Approve), None)),
        Just((Some(Move::Deploy), None)),
        Just((None, Some("staging"))),
        Just((None, Some("production"))),
    ];
    (params, on, proptest::option::of("[a-z]{1,8}")).prop_map(
        |((kind, params), (on, env), name)| GateSpec {
            kind: kind.into(),
            name,
            on,
            environment: env.map(|e| tollgate::environment::EnvironmentName::new(e).unwrap()),
            params,
        },
    )
}

fn policy() -> impl Strategy<Value = ApprovalSpec> {
    let rule =
        (1usize..4, 0usize..2, any::<bool>()).prop_map(|(people, groups, need_all)| RuleSpec {
            name: format!("rule-{people}-{groups}"),
            people: (0..people)
                .map(|i| Person::new(format!("p{i}")).unwrap())
                .collect(),
            groups: (0..groups).map(|i| format!("g{i}")).collect(),
            need: if need_all { people } else { 1 },
        });
    (
        proptest::collection::vec(rule, 1..3),
        duration(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mut rules, valid_for, own, trig)| {
            for (i, r) in rules.iter_mut().enumerate() {
                r.name = format!("{}-{i}", r.name);
            }
            ApprovalSpec {
                rules,
                valid_for,
                allow_self_approval: own,
                allow_triggerer_approval: trig,
                environments: BTreeMap::new(),
            }
        })
}

fn engine() -> impl Strategy<Value = EngineSpec> {
    (
        proptest::option::of(1usize..9),
        proptest::collection::btree_map(
            prop_oneof![Just("db".to_owned()), Just("net".to_owned())],
            1usize..4,
            0..3,
        ),
        prop_oneof![
            Just(FailurePolicy::FailFast),
            Just(FailurePolicy::ContinueIndependent)
        ],
        proptest::option::of(duration()),
        any::<u64>(),
    )
        .prop_map(
            |(workers, group_limits, failure_policy, step_timeout, seed)| EngineSpec {
                workers,
                group_limits,
                failure_policy,
                step_timeout,
                seed,
            },
        )
}

fn environment(default: &'static str) -> impl Strategy<Value = Environment> {
    (any::<bool>(), proptest::option::of("[a-z ]{1,10}")).prop_map(move |(custom, description)| {
        let name = if custom {
            format!("{default}-eu")
        } else {
            default.to_owned()
        };
        let env = Environment::new(name).unwrap();
        match description {
            Some(text) => env.with_description(text),
            None => env,
        }
    })
}

/// A valid lifecycle: one to three phases of one to three waves of one to three
/// environments (all distinct), with rules the phases can meet (production never optional)
/// and either entry.
fn lifecycle() -> impl Strategy<Value = LifecycleSpec> {
    let phase = (
        proptest::collection::vec(1usize..4, 1..4),
        0usize..3,
        1usize..10,
        proptest::option::of(proptest::collection::btree_set("[a-z]{1,6}", 1..3)),
    );
    proptest::collection::vec(phase, 1..4).prop_map(|phases| {
        let last = phases.len() - 1;
        let mut next = 0;
        let phases = phases
            .into_iter()
            .enumerate()
            .map(|(at, (waves, rule, k, people))| {
                let waves: Vec<Vec<EnvironmentName>> = waves
                    .into_iter()
                    .map(|size| {
                        (0..size)
                            .map(|_| {
                                next += 1;
                                EnvironmentName::new(format!("env-{next}")).unwrap()
                            })
                            .collect()
                    })
                    .collect();
                let count: usize = waves.iter().map(Vec::len).sum();
                let rule = match rule {
                    1 => PhaseRuleSpec::AtLeast(1 + k % count),
                    2 if at != last => PhaseRuleSpec::Optional,
                    _ => PhaseRuleSpec::All,
                };
                let entry = people.map_or(PhaseEntrySpec::Automatic, |people| {
                    PhaseEntrySpec::People(
                        people
                            .into_iter()
                            .map(|p| Person::new(p).unwrap())
                            .collect(),
                    )
                });
                PhaseSpec {
                    name: format!("phase-{at}"),
                    waves,
                    rule,
                    entry,
                }
            })
            .collect();
        LifecycleSpec { phases }
    })
}

fn spec() -> impl Strategy<Value = PipelineSpec> {
    (
        any::<bool>(),
        stages(),
        proptest::collection::vec(gate(), 0..4),
        policy(),
        proptest::option::of(policy()),
        environment("staging"),
        environment("production"),
        engine(),
        duration(),
        proptest::option::of(lifecycle()),
    )
        .prop_map(
            |(
                delivery,
                stages,
                gates,
                default,
                production,
                staging,
                prod_env,
                engine,
                lease,
                lifecycle,
            )| {
                let approvals = delivery.then(|| {
                    let mut approvals = default;
                    if let Some(policy) = production {
                        approvals
                            .environments
                            .insert(prod_env.name().clone(), policy);
                    }
                    approvals
                });
                PipelineSpec {
                    name: tollgate::id::PipelineName::new("shop").unwrap(),
                    mode: if delivery {
                        ModeKind::Delivery
                    } else {
                        ModeKind::Deployment
                    },
                    stages,
                    // Environment gates must name the spec's environments.
                    gates: gates
                        .into_iter()
                        .map(|mut g| {
                            if let Some(env) = &g.environment {
                                let target = if env.as_str() == "staging" {
                                    &staging
                                } else {
                                    &prod_env
                                };
                                g.environment = Some(target.name().clone());
                            }
                            g
                        })
                        .collect(),
                    approvals,
                    staging,
                    production: prod_env,
                    engine,
                    claim_lease: lease,
                    lifecycle,
                }
            },
        )
}

/// Builds `spec` in the mode it names and reads its spec back.
fn through_a_pipeline(spec: &PipelineSpec) -> PipelineSpec {
    let gates = GateRegistry::new();
    match spec.mode {
        ModeKind::Delivery => PipelineBuilder::<Delivery, WithApprovals>::from_spec(spec, &gates)
            .and_then(|b| b.default_executor(ok()).build())
            .map(|p| p.to_spec()),
        ModeKind::Deployment => PipelineBuilder::<Deployment, NoApprovals>::from_spec(spec, &gates)
            .and_then(|b| b.default_executor(ok()).build())
            .map(|p| p.to_spec()),
    }
    .unwrap_or_else(|e| panic!("{e}\n{}", spec.to_json_string()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn spec_to_pipeline_to_spec_is_the_identity(spec in spec()) {
        prop_assert_eq!(through_a_pipeline(&spec), spec);
    }

    #[test]
    fn a_valid_lifecycle_spec_builds_and_says_itself_again(spec in lifecycle()) {
        let built = Lifecycle::from_spec(&spec).unwrap_or_else(|e| panic!("{e}: {spec:?}"));
        prop_assert_eq!(built.to_spec(), spec);
    }

    #[test]
    fn spec_to_json_to_spec_is_the_identity(spec in spec()) {
        let text = spec.to_json_string();
        prop_assert_eq!(PipelineSpec::from_json_str(&text, "spec.json").unwrap(), spec);
    }
}

#[test]
fn a_pipeline_built_in_code_says_its_stages_environments_engine_and_policy() {
    let clock = clock();
    let pipeline = support::standard_delivery(&clock).build().unwrap();
    let spec = pipeline.to_spec();
    assert_eq!(spec.mode, ModeKind::Delivery);
    assert_eq!(spec.stages.len(), pipeline.graph().len());
    assert!(spec.stages.iter().all(|s| s.run.is_none()));
    let rules = &spec.approvals.as_ref().unwrap().rules;
    let people: Vec<&str> = rules[0].people.iter().map(Person::as_str).collect();
    assert_eq!(people, support::APPROVERS);
}

#[cfg(feature = "toml")]
mod toml_specs {
    use super::*;

    const SPEC: &str = r#"name = "shop"
mode = "deployment"

[[stages]]
id = "compile"
step = "build"
run = "make"

[[stages]]
id = "unit"
step = "test"
aftr = ["compile"]
"#;

    #[test]
    fn a_misspelt_key_in_toml_is_located_at_its_line_and_column() {
        let error = PipelineSpec::from_toml_str(SPEC, "shop.toml").unwrap_err();
        let SpecError::Invalid {
            location,
            path,
            suggestion,
            ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!((location.line, location.column), (12, 1), "{error}");
        assert_eq!(location.text, "aftr");
        assert_eq!(path, "stages[1].aftr");
        assert_eq!(suggestion.as_deref(), Some("after"));
        let shown = error.to_string();
        assert!(shown.contains("12 | aftr = [\"compile\"]"), "{shown}");
        assert!(shown.contains("   | ^^^^"), "{shown}");
    }

    #[test]
    fn a_misspelt_key_inside_a_tagged_table_is_located_at_the_key() {
        // serde reads an internally tagged enum (the backoff's `kind`) from a buffer, so the
        // parser reports the table; the error still points at the key.
        let text = SPEC.replace(
            "aftr = [\"compile\"]",
            "retry = { max_attempts = 2, backoff = { kind = \"fixed\", dealy = \"1s\" } }",
        );
        let error = PipelineSpec::from_toml_str(&text, "shop.toml").unwrap_err();
        let SpecError::Invalid {
            location,
            path,
            suggestion,
            ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!((location.line, location.column), (12, 57), "{error}");
        assert_eq!(location.text, "dealy");
        assert_eq!(path, "stages[1].retry.backoff.dealy");
        assert_eq!(suggestion.as_deref(), Some("delay"));
    }

    #[test]
    fn a_misspelt_key_inside_a_matrix_or_a_concurrency_group_is_located_at_the_key() {
        for (line, typo, path, meant) in [
            (
                "matrix = { axes = { os = [\"linux\"] }, exlude = [{ os = \"linux\" }] }",
                "exlude",
                "stages[1].matrix.exlude",
                "exclude",
            ),
            (
                "concurrency = { group = \"db\", cancel_in_progres = true }",
                "cancel_in_progres",
                "stages[1].concurrency.cancel_in_progres",
                "cancel_in_progress",
            ),
        ] {
            let text = SPEC.replace("aftr = [\"compile\"]", line);
            let error = PipelineSpec::from_toml_str(&text, "shop.toml").unwrap_err();
            let SpecError::Invalid {
                location,
                path: found,
                suggestion,
                ..
            } = &error
            else {
                panic!("{error}")
            };
            let column = line.find(typo).unwrap() + 1;
            assert_eq!((location.line, location.column), (12, column), "{error}");
            assert_eq!(location.text, typo, "{error}");
            assert_eq!(found, path, "{error}");
            assert_eq!(suggestion.as_deref(), Some(meant), "{error}");
        }
    }

    #[test]
    fn a_matrix_in_toml_keeps_its_axes_in_the_order_written() {
        let text = SPEC.replace(
            "aftr = [\"compile\"]",
            "matrix = { axes = { rust = [\"stable\"], os = [\"linux\", \"macos\"] } }",
        );
        let spec = PipelineSpec::from_toml_str(&text, "shop.toml").unwrap();
        let matrix = spec.stages[1].matrix.as_ref().unwrap();
        let axes: Vec<&str> = matrix.axes.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(axes, ["rust", "os"]);
        let written = spec.to_toml_string().unwrap();
        assert!(
            written.contains("rust = [\"stable\"]") && written.find("rust") < written.find("os ="),
            "{written}"
        );
    }

    #[test]
    fn a_toml_syntax_error_is_located() {
        let error =
            PipelineSpec::from_toml_str("name = \"shop\"\nmode = \n", "shop.toml").unwrap_err();
        let SpecError::Invalid { location, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(location.line, 2, "{error}");
    }

    #[test]
    fn a_bad_value_deep_in_toml_is_located_at_the_value() {
        let text = SPEC.replace("aftr = [\"compile\"]", "timeout = \"5 fortnights\"");
        let error = PipelineSpec::from_toml_str(&text, "shop.toml").unwrap_err();
        let SpecError::Invalid { location, path, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(
            (location.line, location.column, path.as_str()),
            (12, 11, "stages[1].timeout")
        );
        assert_eq!(location.text, "\"5 fortnights\"");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn spec_to_toml_to_spec_is_the_identity(spec in spec()) {
            let text = spec.to_toml_string().unwrap();
            prop_assert_eq!(PipelineSpec::from_toml_str(&text, "spec.toml").unwrap(), spec);
        }
    }

    #[test]
    fn every_example_spec_builds_in_the_mode_it_names() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/specs");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let spec = PipelineSpec::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
            let back = through_a_pipeline(&spec);
            assert_eq!(back, spec, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 2, "the example specs are in {dir}");
    }
}

/// The schema in the repository is the one the code derives. To write it again:
/// `TOLLGATE_WRITE_SCHEMA=1 cargo test --features schema --test spec schema`.
#[cfg(feature = "schema")]
#[test]
fn the_schema_in_the_repository_is_the_codes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pipeline.schema.json");
    let derived = PipelineSpec::json_schema();
    if std::env::var_os("TOLLGATE_WRITE_SCHEMA").is_some() {
        std::fs::write(path, &derived).unwrap();
    }
    let kept = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        kept == derived,
        "docs/pipeline.schema.json is not the schema of the code; write it again with\n  \
         TOLLGATE_WRITE_SCHEMA=1 cargo test --features schema --test spec schema"
    );
    // It describes what the parser reads: the top-level keys, closed to others.
    let schema: Value = serde_json::from_str(&derived).unwrap();
    let keys: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let spec_keys = serde_json::to_value(
        parse_json(&json!({
            "name": "x", "mode": "deployment", "stages": [], "claim_lease": "2h",
            "gates": [{ "kind": "soak", "on": "approve" }],
            "approvals": { "rules": [] }, "staging": { "name": "s" }, "production": { "name": "p" },
            "engine": { "seed": 1 },
            "lifecycle": { "phases": [{ "name": "production", "waves": [["p"]] }] }
        }))
        .unwrap(),
    )
    .unwrap();
    let mut expected: Vec<&str> = spec_keys
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    expected.sort_unstable();
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(schema["additionalProperties"], json!(false));
}

/// A deployment spec whose lifecycle is Dev → Test (two environments, one is enough) →
/// Production (eu, then us and ap, entered only by rita), in TOML.
const LIFECYCLE_TOML: &str = r#"name = "shop"
mode = "deployment"

[[stages]]
id = "compile"
step = "build"

[[stages]]
id = "unit"
step = "test"
after = ["compile"]

[[stages]]
id = "staging"
step = "stage"

[[stages]]
id = "roll-out"
step = "deploy"

[[lifecycle.phases]]
name = "dev"
waves = [["dev"]]

[[lifecycle.phases]]
name = "test"
waves = [["test-a", "test-b"]]
rule = { at_least = 1 }

[[lifecycle.phases]]
name = "production"
waves = [["eu"], ["us", "ap"]]
entry = { people = ["rita"] }
"#;

/// The same lifecycle, as the JSON a spec holds.
fn lifecycle_json() -> Value {
    json!({ "phases": [
        { "name": "dev", "waves": [["dev"]] },
        { "name": "test", "waves": [["test-a", "test-b"]], "rule": { "at_least": 1 } },
        { "name": "production", "waves": [["eu"], ["us", "ap"]],
          "entry": { "people": ["rita"] } }
    ] })
}

#[test]
fn a_lifecycle_in_a_spec_builds_a_fleet_and_round_trips() {
    let from_toml = PipelineSpec::from_toml_str(LIFECYCLE_TOML, "shop.toml").unwrap();
    let mut json = serde_json::to_value(&from_toml).unwrap();
    json["lifecycle"] = lifecycle_json();
    let from_json = parse_json(&json).unwrap();
    assert_eq!(from_toml, from_json);

    let spec = from_toml.lifecycle.clone().expect("the lifecycle is read");
    let names: Vec<&str> = spec.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["dev", "test", "production"]);
    assert_eq!(spec.phases[0].rule, PhaseRuleSpec::All);
    assert_eq!(spec.phases[1].rule, PhaseRuleSpec::AtLeast(1));
    assert_eq!(
        spec.phases[2].entry,
        PhaseEntrySpec::People([Person::new("rita").unwrap()].into())
    );
    assert_eq!(spec.phases[2].waves.len(), 2);

    // The fleet builds it, with every check, and says it back.
    let lifecycle = Lifecycle::from_spec(&spec).unwrap();
    assert_eq!(Lifecycle::try_from(&spec).unwrap(), lifecycle);
    assert_eq!(lifecycle.production().name(), "production");
    assert_eq!(lifecycle.phases()[1].progress_rule(), PhaseRule::AtLeast(1));
    assert_eq!(lifecycle.to_spec(), spec);
    let environments: Vec<&str> = lifecycle
        .environments()
        .map(EnvironmentName::as_str)
        .collect();
    assert_eq!(environments, ["dev", "test-a", "test-b", "eu", "us", "ap"]);

    // The pipeline keeps the lifecycle as written, and a fleet opens on the pipeline with it.
    let clock = clock();
    let pipeline =
        PipelineBuilder::<Deployment, NoApprovals>::from_spec(&from_toml, &GateRegistry::new())
            .unwrap()
            .clock(clock.clone())
            .default_executor(ok())
            .build()
            .unwrap();
    assert_eq!(pipeline.to_spec(), from_toml);
    let fleet = tollgate::time::run_virtual(
        &clock,
        Fleet::open(Arc::new(pipeline), lifecycle, FleetOptions::default()),
    )
    .unwrap();
    let ledger = fleet.ledger();
    let phases: Vec<(&str, &str)> = ledger
        .environments
        .iter()
        .map(|e| (e.environment.as_str(), e.phase.as_str()))
        .collect();
    assert_eq!(
        phases,
        [
            ("dev", "dev"),
            ("test-a", "test"),
            ("test-b", "test"),
            ("eu", "production"),
            ("us", "production"),
            ("ap", "production"),
        ]
    );

    // Both formats say it again as they read it.
    assert_eq!(
        PipelineSpec::from_toml_str(&from_toml.to_toml_string().unwrap(), "again.toml").unwrap(),
        from_toml
    );
    assert_eq!(
        PipelineSpec::from_json_str(&from_toml.to_json_string(), "again.json").unwrap(),
        from_toml
    );
}

#[test]
fn a_misspelt_key_in_a_lifecycle_is_located_with_the_key_meant() {
    let text = LIFECYCLE_TOML.replace("rule = { at_least = 1 }", "rul = { at_least = 1 }");
    let error = PipelineSpec::from_toml_str(&text, "shop.toml").unwrap_err();
    let SpecError::Invalid {
        location,
        path,
        suggestion,
        ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(path, "lifecycle.phases[1].rul", "{error}");
    assert_eq!(suggestion.as_deref(), Some("rule"), "{error}");
    let line = text.lines().position(|l| l.starts_with("rul =")).unwrap() + 1;
    assert_eq!(
        (location.file.as_str(), location.line),
        ("shop.toml", line),
        "{error}"
    );

    let text = LIFECYCLE_TOML.replace("rule = { at_least = 1 }", "rule = { at_lest = 1 }");
    let error = PipelineSpec::from_toml_str(&text, "shop.toml").unwrap_err();
    let SpecError::Invalid { suggestion, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(suggestion.as_deref(), Some("at_least"), "{error}");

    let mut spec = parse_json(&base()).unwrap();
    spec.lifecycle = None;
    let mut json = serde_json::to_value(&spec).unwrap();
    json["lifecycle"] = lifecycle_json();
    json["lifecycle"]["phases"][2]["wavs"] = json!([["eu"]]);
    let error = parse_json(&json).unwrap_err();
    let SpecError::Invalid {
        path, suggestion, ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(
        (path.as_str(), suggestion.as_deref()),
        ("lifecycle.phases[2].wavs", Some("waves")),
        "{error}"
    );
}

#[test]
fn an_impossible_lifecycle_is_a_typed_error_naming_the_phase() {
    let phase = |name: &str, waves: &[&[&str]]| PhaseSpec {
        name: name.into(),
        waves: waves
            .iter()
            .map(|w| {
                w.iter()
                    .map(|e| EnvironmentName::new(*e).unwrap())
                    .collect()
            })
            .collect(),
        rule: PhaseRuleSpec::All,
        entry: PhaseEntrySpec::Automatic,
    };
    let build = |phases: Vec<PhaseSpec>| Lifecycle::from_spec(&LifecycleSpec { phases });

    let error = build(vec![phase("dev", &[&["dev"]]), phase("production", &[])]).unwrap_err();
    assert_eq!(
        error,
        LifecycleError::EmptyPhase {
            phase: "production".into()
        }
    );
    assert_eq!(error.to_string(), "phase `production` has no environment");

    let error = build(vec![
        phase("dev", &[&["dev"]]),
        phase("production", &[&["eu"], &["dev"]]),
    ])
    .unwrap_err();
    assert_eq!(
        error,
        LifecycleError::DuplicateEnvironment {
            environment: EnvironmentName::new("dev").unwrap(),
            phase: "production".into()
        }
    );

    let mut test = phase("test", &[&["test-a", "test-b"]]);
    test.rule = PhaseRuleSpec::AtLeast(3);
    let error = build(vec![test, phase("production", &[&["eu"]])]).unwrap_err();
    assert_eq!(
        error,
        LifecycleError::ImpossibleRule {
            phase: "test".into(),
            k: 3,
            environments: 2
        }
    );
    assert_eq!(
        error.to_string(),
        "phase `test` asks for at least 3 of its 2 environments"
    );

    // A spec file with one parses (it is well-formed data) and the fleet refuses it by name.
    let five = LIFECYCLE_TOML.replace("rule = { at_least = 1 }", "rule = { at_least = 5 }");
    let spec = PipelineSpec::from_toml_str(&five, "shop.toml").unwrap();
    let error = Lifecycle::try_from(spec.lifecycle.as_ref().unwrap()).unwrap_err();
    assert!(
        matches!(&error, LifecycleError::ImpossibleRule { phase, k: 5, environments: 2 } if phase == "test"),
        "{error}"
    );
}
