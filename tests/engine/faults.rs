//! Bad input and faults: unusable engine settings are typed errors, and a panicking or erring
//! executor fails only its own stage.

use std::future::Future;
use std::pin::Pin;

use tollgate::engine::{Engine, EngineError, FailurePolicy};
use tollgate::executor::{
    Executor, ExecutorError, StageContext, StageOutcome, StageStatus, from_fn,
};
use tollgate::graph::StageSpec;

use crate::fixture::{Act, Trace, graph_of, run, scripted, secs, status};
use crate::support::clock;

#[test]
fn zero_workers_and_zero_group_limits_are_typed_errors_at_build() {
    let zero_workers = Engine::builder().workers(0).build().unwrap_err();
    assert!(
        matches!(zero_workers, EngineError::InvalidConfig { .. }),
        "{zero_workers:?}"
    );
    assert!(
        zero_workers.to_string().contains("worker"),
        "{zero_workers}"
    );

    let zero_group = Engine::builder().group_limit("gpu", 0).build().unwrap_err();
    assert!(
        matches!(zero_group, EngineError::InvalidConfig { .. }),
        "{zero_group:?}"
    );
    assert!(zero_group.to_string().contains("`gpu`"), "{zero_group}");

    // A later, valid setting replaces the bad one.
    assert_eq!(
        Engine::builder()
            .workers(0)
            .workers(2)
            .build()
            .unwrap()
            .workers(),
        Some(2)
    );
}

/// Runs `refuses` with a `run` that panics before it even makes a future, `explodes` with a
/// future that panics when polled, and every other stage with `rest`.
struct Faulty<E>(E);

fn explode() -> Result<StageOutcome, ExecutorError> {
    panic!("index out of bounds")
}

impl<E: Executor> Executor for Faulty<E> {
    // Written out by hand, unlike `#[async_trait]`, so that `run` itself can panic.
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        ctx: StageContext<'life1>,
    ) -> Pin<Box<dyn Future<Output = Result<StageOutcome, ExecutorError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        match ctx.stage().as_str() {
            "refuses" => panic!("refused to start"),
            "explodes" => Box::pin(async { explode() }),
            _ => self.0.run(ctx),
        }
    }
}

#[test]
fn a_panicking_executor_fails_its_stage_while_the_others_run_on() {
    let graph = graph_of([
        StageSpec::test("explodes"),
        StageSpec::test("refuses"),
        StageSpec::test("fine"),
        StageSpec::test("after-explodes").after("explodes"),
    ]);
    let executor = Faulty(scripted(&Trace::default(), |_| Act::sleep(secs(1))));
    let engine = Engine::builder()
        .failure_policy(FailurePolicy::ContinueIndependent)
        .build()
        .unwrap();

    let report = run(&engine, &graph, &executor, &clock());

    assert_eq!(
        *status(&report, "explodes"),
        StageStatus::Failed {
            reason: "executor panicked: index out of bounds".to_owned()
        }
    );
    assert_eq!(
        *status(&report, "refuses"),
        StageStatus::Failed {
            reason: "executor panicked: refused to start".to_owned()
        }
    );
    assert_eq!(*status(&report, "fine"), StageStatus::Succeeded);
    assert_eq!(*status(&report, "after-explodes"), StageStatus::Skipped);
}

#[test]
fn an_executor_error_fails_the_stage_with_its_message() {
    let graph = graph_of([StageSpec::test("remote")]);
    let executor = from_fn(|_| Err("runner unreachable".into()));

    let report = run(&Engine::new(), &graph, &executor, &clock());

    assert_eq!(
        *status(&report, "remote"),
        StageStatus::Failed {
            reason: "executor error: runner unreachable".to_owned()
        }
    );
}
