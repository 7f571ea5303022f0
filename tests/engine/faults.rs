//! Bad input and faults: unusable engine settings are typed errors, and a panicking or erring
//! executor fails only its own stage.

use std::future::Future;
use std::pin::Pin;

use tollgate::engine::{Engine, EngineError, FailurePolicy, RetryPolicy};
use tollgate::executor::{
    Executor, ExecutorError, StageContext, StageOutcome, StageStatus, from_fn,
};
use tollgate::graph::StageSpec;

use crate::fixture::{Act, Trace, graph_of, run, scripted, secs, status};
use crate::support::clock;

#[test]
fn zero_workers_and_zero_group_limits_are_typed_errors_at_build() {
    let zero_workers = Engine::builder().workers(0).build().unwrap_err();
    assert_eq!(zero_workers, EngineError::NoWorkers);
    assert_eq!(
        zero_workers.to_string(),
        "invalid engine configuration: an engine needs at least one worker"
    );

    let zero_group = Engine::builder().group_limit("gpu", 0).build().unwrap_err();
    assert_eq!(
        zero_group,
        EngineError::ZeroGroupLimit {
            group: "gpu".to_owned()
        }
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

/// An error type only the host knows, as an executor of its own would return.
#[derive(Debug, PartialEq, Eq)]
struct RunnerGone(u32);

impl std::fmt::Display for RunnerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "runner gone on attempt {}", self.0)
    }
}

impl std::error::Error for RunnerGone {}

#[test]
fn a_stage_keeps_its_executor_s_error_only_while_that_error_is_why_it_failed() {
    let retried = |id| StageSpec::test(id).retry(RetryPolicy::attempts(2));
    let graph = graph_of([
        retried("errs-twice"),
        retried("fails-then-errs"),
        retried("errs-then-fails"),
        retried("errs-then-passes"),
        // Its one-second backoff would outlast its time: it times out after its first error.
        retried("errs-out-of-time").timeout(secs(1)),
    ]);
    let executor = from_fn(|ctx| {
        let gone =
            || -> Result<StageOutcome, ExecutorError> { Err(Box::new(RunnerGone(ctx.attempt()))) };
        match (ctx.stage().as_str(), ctx.attempt()) {
            ("errs-twice" | "errs-out-of-time", _)
            | ("fails-then-errs", 2)
            | ("errs-then-fails" | "errs-then-passes", 1) => gone(),
            ("errs-then-passes", _) => Ok(StageOutcome::success()),
            _ => Ok(StageOutcome::failure("3 tests failed")),
        }
    });
    let engine = Engine::builder()
        .failure_policy(FailurePolicy::ContinueIndependent)
        .build()
        .unwrap();

    let report = run(&engine, &graph, &executor, &clock());

    let kept = |id: &str| {
        report.stage(id).unwrap().error().map(|e| {
            e.downcast_ref::<RunnerGone>()
                .expect("the executor's own type")
        })
    };
    assert_eq!(
        kept("errs-twice"),
        Some(&RunnerGone(2)),
        "the last attempt's"
    );
    assert_eq!(kept("fails-then-errs"), Some(&RunnerGone(2)));
    assert_eq!(
        kept("errs-then-fails"),
        None,
        "the stage failed for another reason"
    );
    assert_eq!(kept("errs-then-passes"), None);
    assert_eq!(kept("errs-out-of-time"), None, "the stage timed out");
    assert!(matches!(
        status(&report, "errs-out-of-time"),
        StageStatus::TimedOut { .. }
    ));
    assert_eq!(
        *status(&report, "errs-twice"),
        StageStatus::Failed {
            reason: "executor error: runner gone on attempt 2".to_owned()
        }
    );
}
