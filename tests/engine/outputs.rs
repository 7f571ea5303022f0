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
