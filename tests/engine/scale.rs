//! Huge graphs: a million stages in a chain or a fan-out run without overflowing the stack, and
//! a long run of instant stages yields to its executor in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tollgate::engine::Engine;
use tollgate::executor::{StageOutcome, from_fn};
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::id::ReleaseId;
use tollgate::lifecycle::Step;

use crate::fixture::{name, run};
use crate::support::clock;

const HUGE: usize = 1_000_000;

/// Runs a huge graph with a no-op executor; checks every stage ran once and succeeded.
fn run_huge(graph: &StageGraph) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let executor = from_fn(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(StageOutcome::success())
    });
    let started = Instant::now();
    let report = run(&Engine::new(), graph, &executor, &clock());
    eprintln!("{HUGE} stages ran in {:?}", started.elapsed());
    assert_eq!(calls.load(Ordering::Relaxed), HUGE);
    assert_eq!(report.stages.len(), HUGE);
    assert!(report.stages.iter().all(|s| s.status.is_success()));
}

#[test]
fn a_million_stage_chain_runs_without_overflowing_the_stack() {
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::test("s0"));
    for i in 1..HUGE {
        builder.push(StageSpec::test(format!("s{i}")).after(format!("s{}", i - 1)));
    }
    run_huge(&builder.build().unwrap());
}

#[test]
fn a_million_stage_fan_out_runs_without_overflowing_the_stack() {
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::test("root"));
    for i in 1..HUGE {
        builder.push(StageSpec::test(format!("s{i}")).after("root"));
    }
    run_huge(&builder.build().unwrap());
}

/// Counts the wake-ups a future asks for.
struct CountingWaker(AtomicUsize);

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_long_run_of_stages_that_finish_at_once_yields_to_the_executor_between_batches() {
    // 10,000 no-op stages finish as they start: without a budget the step would settle them
    // all in one poll and hold its runtime thread for the whole run.
    let n = 10_000;
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::test("s0"));
    for i in 1..n {
        builder.push(StageSpec::test(name(i)).after(name(i - 1)));
    }
    let graph = builder.build().unwrap();
    let executor = from_fn(|_| Ok(StageOutcome::success()));
    let (engine, clock) = (Engine::new(), clock());
    let release = ReleaseId::new("shop-1.4.0").unwrap();
    let mut step = std::pin::pin!(engine.run_graph(
        &graph,
        Step::Test,
        &executor,
        &clock,
        &release,
        "4f2a9c1"
    ));
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = futures::task::waker(Arc::clone(&counter));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut pending = 0;
    let report = loop {
        match step.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(report) => break report,
            std::task::Poll::Pending => {
                pending += 1;
                // Every yield asks to be polled again at once: nothing else would wake it.
                assert_eq!(
                    counter.0.load(Ordering::Relaxed),
                    pending,
                    "yield {pending}"
                );
                assert!(pending <= n, "the step never finishes");
            }
        }
    };
    assert!(report.succeeded());
    assert_eq!(report.stages.len(), n);
    // It yields, but in batches: not once per stage.
    assert!(pending >= 10, "yielded only {pending} times in {n} stages");
    assert!(pending <= n / 100, "yielded {pending} times in {n} stages");
}
