//! Outputs: a stage's outputs reach its direct dependents, and only them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tollgate::engine::Engine;
use tollgate::executor::{StageOutcome, from_fn};
use tollgate::graph::StageSpec;

use crate::fixture::{graph_of, run};
use crate::support::clock;

/// The inputs each stage saw, as (dependency, key, value), by stage.
type InputsSeen = BTreeMap<String, Vec<(String, String, String)>>;

#[test]
fn outputs_reach_direct_dependents_and_only_them() {
    let graph = graph_of([
        StageSpec::test("version"),
        StageSpec::test("package").after("version"),
        StageSpec::test("publish").after("package"),
        StageSpec::test("lint"),
    ]);
    let seen: Arc<Mutex<InputsSeen>> = Arc::default();
    let record = Arc::clone(&seen);
    let executor = from_fn(move |ctx| {
        let inputs = ctx
            .inputs()
            .flat_map(|(id, outputs)| {
                outputs
                    .iter()
                    .map(|(k, v)| (id.to_string(), k.clone(), v.clone()))
            })
            .collect();
        record
            .lock()
            .unwrap()
            .insert(ctx.stage().to_string(), inputs);
        let outcome = StageOutcome::success();
        Ok(match ctx.stage().as_str() {
            "version" => outcome.output("version", "1.4.0"),
            "package" => outcome.output(
                "file",
                format!(
                    "shop-{}.tar",
                    ctx.input("version", "version").unwrap_or("?")
                ),
            ),
            _ => outcome,
        })
    });

    let report = run(&Engine::new(), &graph, &executor, &clock());

    assert!(report.succeeded());
    let seen = seen.lock().unwrap();
    let triple = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(seen["version"], []);
    assert_eq!(seen["package"], [triple("version", "version", "1.4.0")]);
    // `publish` sees its own dependency's outputs, not those of `version` two levels up.
    assert_eq!(
        seen["publish"],
        [triple("package", "file", "shop-1.4.0.tar")]
    );
    assert_eq!(seen["lint"], []);
    assert_eq!(
        report
            .stage("package")
            .unwrap()
            .outputs
            .get("file")
            .map(String::as_str),
        Some("shop-1.4.0.tar")
    );
}

#[test]
fn a_stage_reads_the_outputs_of_any_stage_the_graph_runs_before_it() {
    use tollgate::executor::OutputError;
    // `version` → `package` → `publish`, and `lint` beside them.
    let graph = graph_of([
        StageSpec::test("version"),
        StageSpec::test("package").after("version"),
        StageSpec::test("publish").after("package"),
        StageSpec::test("lint"),
    ]);
    let seen: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let executor = from_fn(move |ctx| {
        let said = |what: String| {
            record.lock().unwrap().insert(ctx.stage().to_string(), what);
        };
        match ctx.stage().as_str() {
            "version" => return Ok(StageOutcome::success().output("v", "1.4.0")),
            "publish" => {
                // Two steps up the graph, not a direct dependency.
                said(format!("{:?}", ctx.output("version", "v")));
                assert_eq!(ctx.input("version", "v"), None, "`input` stays direct");
                assert_eq!(ctx.output("version", "missing"), Ok(None));
                assert_eq!(
                    ctx.outputs_of("version").unwrap().map(BTreeMap::len),
                    Some(1)
                );
            }
            "lint" => {
                let error = ctx.output("version", "v").unwrap_err();
                assert_eq!(
                    error.to_string(),
                    "stage `lint` reads the outputs of `version`, which the graph does not run before it"
                );
                said(format!("{error:?}"));
                let unknown = ctx.output("nowhere", "v").unwrap_err();
                assert!(
                    matches!(unknown, OutputError::UnknownStage { .. }),
                    "{unknown:?}"
                );
            }
            "package" => {
                // A dependent is not before: refused, even though it may have run already.
                let error = ctx.output("publish", "v").unwrap_err();
                assert!(matches!(error, OutputError::NotBefore { .. }), "{error:?}");
            }
            _ => {}
        }
        Ok(StageOutcome::success())
    });
    let report = run(&Engine::new(), &graph, &executor, &clock());
    assert!(report.succeeded(), "{report:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen["publish"], r#"Ok(Some("1.4.0"))"#);
    assert!(seen["lint"].starts_with("NotBefore"), "{}", seen["lint"]);
}
