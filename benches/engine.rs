//! Engine benchmarks: speed and scaling of `Engine::run_graph` on no-op stages beside a
//! hand-written lower bound and two other Rust DAG runners, makespan in virtual time against
//! the scheduling bounds, and heap per in-flight stage. BENCHMARKS.md has the figures.
//!
//! Run with `cargo bench --bench engine`; the whole run takes about five minutes on two
//! cores. `cargo bench --bench engine -- chain` runs the speed groups whose name contains
//! `chain` and still prints the makespan and memory tables. With `TOLLGATE_PROFILE` set the
//! binary runs one shape under one runner for a profiler instead (see [`profile`]); with
//! `TOLLGATE_QUICK_BUILD_RUN=<runs>` it prints build + run by CPU time instead (see
//! [`quick_build_run`]).

// Ratios and per-stage figures divide counts far below 2^52, so the float casts are exact
// enough; stage counts fit in `u32` as they do in the engine.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)]

mod common;

use std::alloc::System;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cap::Cap;
use criterion::{BatchSize, Criterion, SamplingMode};
use futures::FutureExt as _;
use futures::executor::{LocalPool, block_on};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt as _};
use futures::task::SpawnExt as _;
use tollgate::engine::Engine;
use tollgate::executor::{self, StageOutcome};
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::id::ReleaseId;
use tollgate::lifecycle::Step;
use tollgate::time::{Clock, ManualClock, SystemClock, Timestamp, run_virtual};

/// Counts live heap bytes, so that the memory table can report what in-flight stages cost.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

// ---------------------------------------------------------------------------------------------
// Graph shapes
// ---------------------------------------------------------------------------------------------

/// A DAG as plain data: the dependencies of each stage, all with smaller indices, so index
/// order is a topological order. Every runner under test is built from the same `Shape`.
struct Shape {
    name: String,
    deps: Vec<Vec<u32>>,
}

impl Shape {
    fn len(&self) -> usize {
        self.deps.len()
    }

    /// The dependents of each stage: the adjacency every runner walks when a stage finishes.
    fn dependents(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.len()];
        for (i, deps) in self.deps.iter().enumerate() {
            for &d in deps {
                out[d as usize].push(i as u32);
            }
        }
        out
    }
}

/// xorshift64: a fixed seed keeps runs comparable without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A draw from `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn stage_name(i: usize) -> String {
    format!("stage-{i}")
}

/// `0 <- 1 <- … <- n-1`.
fn chain(n: usize) -> Shape {
    Shape {
        name: format!("chain_{}k", n / 1000),
        deps: (0..n as u32)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect(),
    }
}

/// One root and `n` stages that depend only on it.
fn fan_out(n: usize) -> Shape {
    Shape {
        name: format!("fan_out_{}k", n / 1000),
        deps: std::iter::once(vec![])
            .chain((0..n).map(|_| vec![0]))
            .collect(),
    }
}

/// `n` independent stages and one that depends on all of them.
fn fan_in(n: usize) -> Shape {
    Shape {
        name: format!("fan_in_{}k", n / 1000),
        deps: (0..n)
            .map(|_| vec![])
            .chain(std::iter::once((0..n as u32).collect()))
            .collect(),
    }
}

/// `n` stages in layers of 100; each stage after the first layer depends on 0 to 4 distinct
/// random stages of the layers before it (the same generator as the graph benchmarks).
fn layered(n: usize, seed: u64) -> Shape {
    const LAYER: usize = 100;
    let mut rng = Rng(seed);
    let deps = (0..n)
        .map(|i| {
            let earlier = (i / LAYER * LAYER) as u64;
            let mut deps = Vec::new();
            if earlier > 0 {
                for _ in 0..rng.next() % 5 {
                    let d = (rng.next() % earlier) as u32;
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
            }
            deps
        })
        .collect();
    Shape {
        name: format!("layered_{}k", n / 1000),
        deps,
    }
}

/// The same DAG as tollgate specs, every stage in the test step.
fn tollgate_specs(shape: &Shape, estimate: impl Fn(usize) -> Option<Duration>) -> Vec<StageSpec> {
    shape
        .deps
        .iter()
        .enumerate()
        .map(|(i, deps)| {
            let mut spec = StageSpec::test(stage_name(i));
            for &d in deps {
                spec = spec.after(stage_name(d as usize));
            }
            spec.estimate = estimate(i);
            spec
        })
        .collect()
}

/// The same DAG as a tollgate graph, every stage in the test step.
fn tollgate_graph(shape: &Shape, estimate: impl Fn(usize) -> Option<Duration>) -> StageGraph {
    StageGraph::builder()
        .stages(tollgate_specs(shape, estimate))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The runners: tollgate, the lower bound, dagx, dagrs
// ---------------------------------------------------------------------------------------------

/// What every tollgate run needs besides the graph.
struct Host {
    engine: Engine,
    clock: ManualClock,
    release: ReleaseId,
    /// The revision id the stages are told (the engine hands stages labels, not releases).
    revision: &'static str,
}

impl Host {
    fn new(engine: Engine) -> Self {
        Host {
            engine,
            clock: ManualClock::new(Timestamp::EPOCH),
            release: ReleaseId::new("bench-1").unwrap(),
            revision: "4f2a9c1",
        }
    }
}

/// Runs every stage of `graph` with a no-op executor, polled by `block_on` on this thread.
fn run_tollgate(host: &Host, graph: &StageGraph) -> tollgate::engine::StepReport {
    run_tollgate_on(host, graph, &host.clock)
}

/// [`run_tollgate`] on any clock.
fn run_tollgate_on(
    host: &Host,
    graph: &StageGraph,
    clock: &dyn Clock,
) -> tollgate::engine::StepReport {
    let noop = executor::from_fn(|_| Ok(StageOutcome::success()));
    block_on(host.engine.run_graph(
        graph,
        Step::Test,
        &noop,
        clock,
        &host.release,
        host.revision,
    ))
}

/// What a user pays for a pipeline it has as specs: build the graph, then run it.
fn build_and_run_tollgate(
    host: &Host,
    specs: Vec<StageSpec>,
    clock: &dyn Clock,
) -> (StageGraph, tollgate::engine::StepReport) {
    let graph = StageGraph::builder().stages(specs).build().unwrap();
    let report = run_tollgate_on(host, &graph, clock);
    (graph, report)
}

/// The lower bound's view of a DAG: dependents and in-degrees, nothing else.
struct Plain {
    dependents: Vec<Vec<u32>>,
    in_degree: Vec<u32>,
}

impl Plain {
    fn new(shape: &Shape) -> Self {
        Plain {
            dependents: shape.dependents(),
            in_degree: shape.deps.iter().map(|d| d.len() as u32).collect(),
        }
    }
}

/// One no-op stage, boxed as a `dyn` executor's future is: the one allocation per stage that
/// any runner of user-supplied async stages pays.
fn noop_stage(i: u32) -> BoxFuture<'static, u32> {
    Box::pin(async move { i })
}

/// The floor for running a DAG of async stages: Kahn's algorithm, awaiting each ready stage
/// through `FuturesUnordered`, with no reports, priorities, limits or events.
fn run_lower_bound(plain: &Plain) -> usize {
    block_on(async {
        let mut waiting = plain.in_degree.clone();
        let mut running: FuturesUnordered<_> = (0..waiting.len() as u32)
            .filter(|&i| waiting[i as usize] == 0)
            .map(noop_stage)
            .collect();
        let mut finished = 0;
        while let Some(stage) = running.next().await {
            finished += 1;
            for &d in &plain.dependents[stage as usize] {
                waiting[d as usize] -= 1;
                if waiting[d as usize] == 0 {
                    running.push(noop_stage(d));
                }
            }
        }
        finished
    })
}

/// What the record lower bound keeps per stage: the least a report can say.
#[derive(Clone, Copy, Default)]
struct Record {
    succeeded: bool,
    attempts: u32,
    started: Timestamp,
    finished: Timestamp,
}

/// The floor for build + run, doing the two things tollgate cannot skip: it maps string ids
/// to indices (a `HashMap<&str, u32>` with foldhash, as tollgate's graph hashes them) and
/// writes a record per stage (status, attempts, start and end read from `clock`). Then Kahn's
/// algorithm over boxed no-op futures, as the raw lower bound. No checks, priorities, limits,
/// events, outputs or ids in the records. Takes the specs by value and keeps them, like
/// tollgate's build.
fn record_lower_bound(specs: Vec<StageSpec>, clock: &dyn Clock) -> (Vec<StageSpec>, Vec<Record>) {
    let n = specs.len();
    let mut index: HashMap<&str, u32, foldhash::fast::FixedState> =
        HashMap::with_capacity_and_hasher(n, foldhash::fast::FixedState::default());
    for (i, spec) in specs.iter().enumerate() {
        index.insert(spec.id.as_str(), i as u32);
    }
    let mut dependents = vec![Vec::new(); n];
    let mut waiting = vec![0u32; n];
    for (i, spec) in specs.iter().enumerate() {
        for dependency in &spec.after {
            dependents[index[dependency.as_str()] as usize].push(i as u32);
            waiting[i] += 1;
        }
    }
    drop(index);
    let mut records = vec![Record::default(); n];
    block_on(async {
        let mut running = FuturesUnordered::new();
        let start = |i: u32, records: &mut [Record], running: &mut FuturesUnordered<_>| {
            let record = &mut records[i as usize];
            record.started = clock.now();
            record.attempts += 1;
            running.push(noop_stage(i));
        };
        for i in 0..n as u32 {
            if waiting[i as usize] == 0 {
                start(i, &mut records, &mut running);
            }
        }
        while let Some(stage) = running.next().await {
            let record = &mut records[stage as usize];
            record.finished = clock.now();
            record.succeeded = true;
            for &d in &dependents[stage as usize] {
                waiting[d as usize] -= 1;
                if waiting[d as usize] == 0 {
                    start(d, &mut records, &mut running);
                }
            }
        }
    });
    assert!(
        records
            .iter()
            .all(|r| r.succeeded && r.attempts == 1 && r.finished >= r.started)
    );
    (specs, records)
}

/// The dagx side: no-op task types, one per number of dependencies.
mod dagx_tasks {
    // `#[dagx::task]` hands every input to `run` by name, and these tasks ignore theirs;
    // dagx tasks are async functions, and a no-op one awaits nothing.
    #![allow(clippy::used_underscore_binding, clippy::unused_async)]

    // `#[dagx::task]` writes `impl Task for …` and needs the trait in scope by name.
    use dagx::Task;

    /// dagx passes each task's output to its dependents; the benchmark's tasks pass this.
    #[derive(Clone, Copy)]
    pub struct Done;

    /// A dagx task with no dependencies.
    pub struct Source;
    /// dagx tasks with one to four dependencies: dagx types a task's inputs as a tuple, so each
    /// arity is its own task type.
    pub struct After1;
    pub struct After2;
    pub struct After3;
    pub struct After4;

    #[dagx::task]
    impl Source {
        async fn run() -> Done {
            Done
        }
    }

    #[dagx::task]
    impl After1 {
        async fn run(_a: &Done) -> Done {
            Done
        }
    }

    #[dagx::task]
    impl After2 {
        async fn run(_a: &Done, _b: &Done) -> Done {
            Done
        }
    }

    #[dagx::task]
    impl After3 {
        async fn run(_a: &Done, _b: &Done, _c: &Done) -> Done {
            Done
        }
    }

    #[dagx::task]
    impl After4 {
        async fn run(_a: &Done, _b: &Done, _c: &Done, _d: &Done) -> Done {
            Done
        }
    }
}

use dagx_tasks::{After1, After2, After3, After4, Done, Source};

/// The DAG in dagx, or `None` if some stage has more dependencies than dagx's tuples take
/// (dagx wires at most eight, and the benchmark's task types at most four).
fn dagx_graph(shape: &Shape) -> Option<dagx::DagRunner> {
    if shape.deps.iter().any(|d| d.len() > 4) {
        return None;
    }
    let dag = dagx::DagRunner::new();
    let mut handles: Vec<dagx::TaskHandle<Done>> = Vec::with_capacity(shape.len());
    for deps in &shape.deps {
        let h = |k: usize| &handles[deps[k] as usize];
        let handle = match deps.len() {
            0 => dag.add_task(Source).into(),
            1 => dag.add_task(After1).depends_on(h(0)),
            2 => dag.add_task(After2).depends_on((h(0), h(1))),
            3 => dag.add_task(After3).depends_on((h(0), h(1), h(2))),
            _ => dag.add_task(After4).depends_on((h(0), h(1), h(2), h(3))),
        };
        handles.push(handle);
    }
    Some(dag)
}

/// Runs a dagx DAG, spawning its parallel layers on a single-threaded pool (dagx needs a
/// spawner; this one polls on the calling thread, as `block_on` does for tollgate).
fn run_dagx(dag: &dagx::DagRunner) {
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    pool.run_until(dag.run(move |task| spawner.spawn(task).unwrap()))
        .unwrap();
}

/// A dagrs action that behaves like a no-op stage: it waits for every dependency's message,
/// then tells every dependent (dagrs starts all nodes of a graph at once and orders them only
/// through these channels).
struct Relay;

#[dagrs::async_trait::async_trait]
impl dagrs::Action for Relay {
    async fn run(
        &self,
        inputs: &mut dagrs::InChannels,
        outputs: &mut dagrs::OutChannels,
        _: Arc<dagrs::EnvVar>,
    ) -> dagrs::Output {
        inputs.map(|_| ()).await;
        outputs.broadcast(dagrs::Content::new(())).await;
        dagrs::Output::empty()
    }
}

/// The DAG in dagrs.
fn dagrs_graph(shape: &Shape) -> dagrs::Graph {
    let mut table = dagrs::NodeTable::new();
    let mut graph = dagrs::Graph::new();
    let ids: Vec<dagrs::NodeId> = (0..shape.len())
        .map(|i| {
            let node = dagrs::DefaultNode::with_action(stage_name(i), Relay, &mut table);
            graph.add_node(node).unwrap()
        })
        .collect();
    for (from, to) in shape.dependents().into_iter().enumerate() {
        if !to.is_empty() {
            graph
                .add_edge(ids[from], to.into_iter().map(|t| ids[t as usize]))
                .unwrap();
        }
    }
    graph.set_env(dagrs::EnvVar::new(table));
    graph
}

/// The tokio runtime dagrs runs on (it spawns every node as a tokio task).
fn dagrs_runtime() -> dagrs::tokio::runtime::Runtime {
    dagrs::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Speed: criterion groups, one per shape, the runners side by side
// ---------------------------------------------------------------------------------------------

/// The benchmarks whose routine ran in this process, so that the summary reads only fresh
/// criterion estimates (a filtered run leaves older ones on disk).
static RAN: Mutex<BTreeSet<(String, &'static str)>> = Mutex::new(BTreeSet::new());

fn mark_ran(shape: &str, runner: &'static str) {
    RAN.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((shape.to_owned(), runner));
}

const RUNNERS: [&str; 4] = ["tollgate", "lower_bound", "dagx", "dagrs"];

/// Peers slower than this on one run of a shape are timed once instead of by criterion, so
/// that the whole benchmark stays within minutes (dagrs takes over half a minute on the
/// 100k-stage fan-out).
const SLOW: Duration = Duration::from_secs(1);

/// Single-run times, in seconds, of the peers that were too slow for criterion.
static TIMED_ONCE: Mutex<BTreeMap<(String, &'static str), f64>> = Mutex::new(BTreeMap::new());

/// Times one run of `run` on a fresh `build()`; if it took longer than [`SLOW`], records it
/// and returns `true` (the caller then skips criterion for this pair).
fn timed_once<G>(
    shape: &str,
    runner: &'static str,
    build: impl Fn() -> G,
    run: impl Fn(&mut G),
) -> bool {
    let mut graph = build();
    let start = Instant::now();
    run(&mut graph);
    let took = start.elapsed();
    drop(graph);
    if took < SLOW {
        return false;
    }
    TIMED_ONCE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((shape.to_owned(), runner), took.as_secs_f64());
    true
}

fn speed(c: &mut Criterion, shapes: &[Shape]) {
    let host = Host::new(Engine::new());
    let runtime = dagrs_runtime();
    for shape in shapes {
        if !wanted(&shape.name) {
            continue;
        }
        let mut group = c.benchmark_group(&shape.name);
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));

        let graph = tollgate_graph(shape, |_| None);
        let report = run_tollgate(&host, &graph);
        assert!(report.succeeded() && report.stages.len() == shape.len());
        drop(report);
        group.bench_function("tollgate", |b| {
            mark_ran(&shape.name, "tollgate");
            b.iter_with_large_drop(|| run_tollgate(&host, &graph));
        });
        drop(graph);

        let plain = Plain::new(shape);
        assert_eq!(run_lower_bound(&plain), shape.len());
        group.bench_function("lower_bound", |b| {
            mark_ran(&shape.name, "lower_bound");
            b.iter(|| run_lower_bound(&plain));
        });
        drop(plain);

        let dagx_slow = || {
            timed_once(
                &shape.name,
                "dagx",
                || dagx_graph(shape).unwrap(),
                |dag| run_dagx(dag),
            )
        };
        if dagx_graph(shape).is_some() && !dagx_slow() {
            group.bench_function("dagx", |b| {
                mark_ran(&shape.name, "dagx");
                b.iter_batched(
                    || dagx_graph(shape).unwrap(),
                    |dag| {
                        run_dagx(&dag);
                        dag
                    },
                    BatchSize::PerIteration,
                );
            });
        }

        let dagrs_slow = timed_once(
            &shape.name,
            "dagrs",
            || dagrs_graph(shape),
            |graph| {
                runtime.block_on(graph.async_start()).unwrap();
            },
        );
        if !dagrs_slow {
            group.bench_function("dagrs", |b| {
                mark_ran(&shape.name, "dagrs");
                b.iter_batched(
                    || dagrs_graph(shape),
                    |mut graph| {
                        runtime.block_on(graph.async_start()).unwrap();
                        graph
                    },
                    BatchSize::PerIteration,
                );
            });
        }
        group.finish();
    }
}

/// The runners of the build + run groups: tollgate and the record lower bound on both clocks,
/// and the raw lower bound (run only, from prepared adjacency) for reference.
const BUILD_RUN: [&str; 5] = [
    "tollgate_manual",
    "tollgate_system",
    "record_manual",
    "record_system",
    "raw_lower",
];

/// Build + run, timed together from specs (what a user pays), on a `ManualClock` and on the
/// `SystemClock`, beside the record lower bound on the same clocks. Groups are named
/// `build_run_<shape>`.
fn build_run(c: &mut Criterion, shapes: &[Shape]) {
    let host = Host::new(Engine::new());
    let system = SystemClock;
    for shape in shapes {
        let name = format!("build_run_{}", shape.name);
        if !wanted(&name) {
            continue;
        }
        let mut group = c.benchmark_group(&name);
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let specs = tollgate_specs(shape, |_| None);
        let clocks: [(&str, &dyn Clock); 2] = [("manual", &host.clock), ("system", &system)];
        for (clock_name, clock) in clocks {
            let id = if clock_name == "manual" {
                "tollgate_manual"
            } else {
                "tollgate_system"
            };
            group.bench_function(id, |b| {
                mark_ran(&name, id);
                b.iter_batched(
                    || specs.clone(),
                    |specs| build_and_run_tollgate(&host, specs, clock),
                    BatchSize::LargeInput,
                );
            });
            let id = if clock_name == "manual" {
                "record_manual"
            } else {
                "record_system"
            };
            group.bench_function(id, |b| {
                mark_ran(&name, id);
                b.iter_batched(
                    || specs.clone(),
                    |specs| record_lower_bound(specs, clock),
                    BatchSize::LargeInput,
                );
            });
        }
        let plain = Plain::new(shape);
        group.bench_function("raw_lower", |b| {
            mark_ran(&name, "raw_lower");
            b.iter(|| run_lower_bound(&plain));
        });
        group.finish();
    }
}

/// Prints the build + run medians with the ratios the targets are stated in: tollgate over
/// the record bound on the same clock, and each side's 100k / 10k growth.
fn build_run_summary(shapes: &[Shape]) {
    let get =
        |shape: &str, runner: &'static str| median_secs(&format!("build_run_{shape}"), runner);
    if shapes
        .iter()
        .all(|s| get(&s.name, "tollgate_manual").is_none())
    {
        return;
    }
    println!(
        "\nbuild + run (criterion medians, ms; tg = tollgate, rec = record lower bound, raw = run-only lower bound)"
    );
    println!(
        "{:<13} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "shape",
        "tg man",
        "rec man",
        "tg sys",
        "rec sys",
        "raw",
        "tg/rec m",
        "tg/rec s",
        "sys/man",
        "tg 100k/10k",
        "rec 100k/10k"
    );
    for shape in shapes {
        let [tm, ts, rm, rs, raw] = BUILD_RUN.map(|r| get(&shape.name, r));
        if tm.is_none() && rm.is_none() {
            continue;
        }
        let growth = |runner| {
            shape.name.strip_suffix("100k").map_or_else(
                || "-".to_owned(),
                |stem| ratio(get(&shape.name, runner), get(&format!("{stem}10k"), runner)),
            )
        };
        println!(
            "{:<13} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>12} {:>12}",
            shape.name,
            millis(tm),
            millis(rm),
            millis(ts),
            millis(rs),
            millis(raw),
            ratio(tm, rm),
            ratio(ts, rs),
            ratio(ts, tm),
            growth("tollgate_manual"),
            growth("record_manual"),
        );
    }
}

/// Whether a benchmark group of this name passes the command line's filter, so that a
/// filtered run skips the setup (and the one-off peer runs) of groups it will not time.
fn wanted(group: &str) -> bool {
    // A filter may name a whole benchmark (`group/function`) or part of a group.
    common::filter().is_none_or(|f| group.contains(f.split('/').next().unwrap_or_default()))
}

/// Where criterion keeps its estimates, found the way criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("criterion")
}

/// Criterion's median for one benchmark of this run, or the single run of a peer too slow
/// for criterion, in seconds.
fn median_secs(shape: &str, runner: &'static str) -> Option<f64> {
    let once = TIMED_ONCE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(shape.to_owned(), runner))
        .copied();
    if once.is_some() {
        return once;
    }
    let ran = RAN.lock().unwrap_or_else(PoisonError::into_inner);
    if !ran.contains(&(shape.to_owned(), runner)) {
        return None;
    }
    let path = criterion_dir()
        .join(shape)
        .join(runner)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["median"]["point_estimate"].as_f64()? / 1e9)
}

fn millis(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s * 1e3))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

/// Prints the medians side by side with the ratios the targets are stated in.
fn speed_summary(shapes: &[Shape]) {
    println!(
        "\nspeed (criterion medians, ms; ratios are of medians; peers slower than {SLOW:?} a run are timed once)"
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>10}",
        "shape",
        "tollgate",
        "lower",
        "dagx",
        "dagrs",
        "tg/lower",
        "dagx/tg",
        "dagrs/tg",
        "100k/10k"
    );
    for shape in shapes {
        let [tg, lower, dagx, dagrs] = RUNNERS.map(|r| median_secs(&shape.name, r));
        let scaling = shape
            .name
            .strip_suffix("100k")
            .map(|stem| median_secs(&format!("{stem}10k"), "tollgate"));
        println!(
            "{:<14} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>10}",
            shape.name,
            millis(tg),
            millis(lower),
            millis(dagx),
            millis(dagrs),
            ratio(tg, lower),
            ratio(dagx, tg),
            ratio(dagrs, tg),
            scaling.map_or_else(|| "-".to_owned(), |ten| ratio(tg, ten)),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Makespan in virtual time
// ---------------------------------------------------------------------------------------------

/// A DAG whose stages take known times (whole milliseconds of virtual time).
struct Timed {
    shape: Shape,
    millis: Vec<u64>,
}

impl Timed {
    fn total_work(&self) -> u64 {
        self.millis.iter().sum()
    }

    /// The heaviest path: no schedule on any number of workers finishes sooner.
    fn critical_path(&self) -> u64 {
        // Index order is a topological order, so one forward pass finds every finish time.
        let mut finish = vec![0u64; self.shape.len()];
        for (i, deps) in self.shape.deps.iter().enumerate() {
            let start = deps.iter().map(|&d| finish[d as usize]).max().unwrap_or(0);
            finish[i] = start + self.millis[i];
        }
        finish.into_iter().max().unwrap_or(0)
    }
}

/// A random layered DAG: 10 to 20 layers of 5 to 40 stages, each stage after the first layer
/// depending on 1 to 3 distinct stages of the two layers before it, durations 10 to 1000 ms.
fn random_dag(rng: &mut Rng) -> Timed {
    let mut deps: Vec<Vec<u32>> = Vec::new();
    let mut layers: Vec<std::ops::Range<u32>> = Vec::new();
    for layer in 0..rng.between(10, 20) {
        let start = deps.len() as u32;
        for _ in 0..rng.between(5, 40) {
            let mut mine = Vec::new();
            if layer > 0 {
                let from = layers[layers.len().saturating_sub(2)].start;
                for _ in 0..rng.between(1, 3) {
                    let d = rng.between(u64::from(from), u64::from(start) - 1) as u32;
                    if !mine.contains(&d) {
                        mine.push(d);
                    }
                }
            }
            deps.push(mine);
        }
        layers.push(start..deps.len() as u32);
    }
    let millis = (0..deps.len()).map(|_| rng.between(10, 1000)).collect();
    Timed {
        shape: Shape {
            name: "random".to_owned(),
            deps,
        },
        millis,
    }
}

/// A random DAG of short stages (10 to 100 ms) plus a chain of 10 long stages hanging off one
/// stage a quarter of the way down, weighing about 70% of the work per worker: the chain
/// becomes ready only once a few layers are done, and finishes last unless it starts at once.
fn late_chain_dag(rng: &mut Rng, workers: usize) -> Timed {
    let mut dag = random_dag(rng);
    for ms in &mut dag.millis {
        *ms = 10 + *ms % 91;
    }
    let n = dag.shape.len() as u32;
    let hook = rng.between(u64::from(n / 5), u64::from(n / 3)) as u32;
    let link = (dag.total_work() as f64 * 0.7 / workers as f64 / 10.0).round() as u64;
    for k in 0..10 {
        dag.shape
            .deps
            .push(vec![if k == 0 { hook } else { n + k - 1 }]);
        dag.millis.push(link.max(1));
    }
    "late_chain".clone_into(&mut dag.shape.name);
    dag
}

/// Runs `dag` on tollgate with `workers` workers in virtual time, every stage sleeping its
/// duration on the pipeline clock, and returns the makespan.
fn tollgate_makespan(dag: &Timed, workers: usize) -> u64 {
    let graph = tollgate_graph(&dag.shape, |i| Some(Duration::from_millis(dag.millis[i])));
    let host = Host::new(Engine::builder().workers(workers).build().unwrap());
    let sleeper = executor::from_async_fn(|ctx| {
        Box::pin(async move {
            ctx.clock()
                .sleep(ctx.spec().estimate.unwrap_or_default())
                .await;
            Ok(StageOutcome::success())
        })
    });
    let report = run_virtual(
        &host.clock,
        host.engine.run_graph(
            &graph,
            Step::Test,
            &sleeper,
            &host.clock,
            &host.release,
            host.revision,
        ),
    );
    assert!(report.succeeded());
    report.finished_at.as_millis() - report.started_at.as_millis()
}

/// A FIFO list scheduler: whenever a worker is free it starts the stage that became ready
/// first (ties in index order), ignoring what comes after it.
fn fifo_makespan(dag: &Timed, workers: usize) -> u64 {
    let dependents = dag.shape.dependents();
    let mut waiting: Vec<usize> = dag.shape.deps.iter().map(Vec::len).collect();
    let mut ready: VecDeque<u32> = (0..waiting.len() as u32)
        .filter(|&i| waiting[i as usize] == 0)
        .collect();
    let mut running: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    let mut now = 0;
    loop {
        while running.len() < workers {
            let Some(stage) = ready.pop_front() else {
                break;
            };
            running.push(Reverse((now + dag.millis[stage as usize], stage)));
        }
        let Some(&Reverse((end, _))) = running.peek() else {
            break;
        };
        now = end;
        // Every stage that ends now frees its worker before any worker is handed out again.
        while let Some(&Reverse((end, stage))) = running.peek() {
            if end != now {
                break;
            }
            running.pop();
            for &d in &dependents[stage as usize] {
                waiting[d as usize] -= 1;
                if waiting[d as usize] == 0 {
                    ready.push_back(d);
                }
            }
        }
    }
    now
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

/// Prints, per DAG family and worker count, how tollgate's makespans compare with the lower
/// bound max(critical path, work / m), with Graham's bound work / m + (1 − 1/m) · critical
/// path, and with FIFO order.
fn makespan_table() {
    const RUNS: usize = 200;
    println!("\nmakespan in virtual time ({RUNS} random DAGs per row; ratios to the lower bound)");
    println!(
        "{:<11} {:>3} {:>10} {:>9} {:>12} {:>10} {:>13} {:>9}",
        "family", "m", "tg median", "tg worst", "tg/Graham", "FIFO med.", "FIFO/tg med.", "tg<FIFO"
    );
    for family in ["random", "late_chain"] {
        for workers in [4usize, 16] {
            let mut rng = Rng(0x5EED_0000 + workers as u64);
            let (mut tg, mut fifo, mut gain) = (Vec::new(), Vec::new(), Vec::new());
            let (mut worst_graham, mut better) = (0.0f64, 0);
            for _ in 0..RUNS {
                let dag = match family {
                    "random" => random_dag(&mut rng),
                    _ => late_chain_dag(&mut rng, workers),
                };
                let (work, cp) = (dag.total_work() as f64, dag.critical_path() as f64);
                let m = workers as f64;
                let lower = cp.max(work / m);
                let graham = work / m + (1.0 - 1.0 / m) * cp;
                let ours = tollgate_makespan(&dag, workers) as f64;
                let theirs = fifo_makespan(&dag, workers) as f64;
                tg.push(ours / lower);
                fifo.push(theirs / lower);
                gain.push(theirs / ours);
                worst_graham = worst_graham.max(ours / graham);
                better += usize::from(ours < theirs);
            }
            let worst = tg.iter().copied().fold(0.0, f64::max);
            println!(
                "{:<11} {:>3} {:>10.3} {:>9.3} {:>12.3} {:>10.3} {:>13.3} {:>9}",
                family,
                workers,
                median(&mut tg),
                worst,
                worst_graham,
                median(&mut fifo),
                median(&mut gain),
                format!("{better}/{RUNS}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory: heap per in-flight stage
// ---------------------------------------------------------------------------------------------

/// Live heap bytes per stage while `n` stages of a fan-out are all in flight on tollgate,
/// split into the step's own bookkeeping (noted when the root starts, before any leaf has) and
/// what the running stages add: each leaf's executor parks forever, and the last one to start
/// notes the heap and cancels the step.
fn tollgate_bytes_in_flight(n: usize) -> (f64, f64) {
    let graph = tollgate_graph(&fan_out(n), |_| None);
    let host = Host::new(Engine::new());
    let cancel = host.engine.cancel_handle();
    let parked = AtomicUsize::new(0);
    let heap_at_root = AtomicUsize::new(0);
    let heap_at_full = AtomicUsize::new(0);
    let park = executor::from_async_fn(|ctx| {
        if ctx.spec().after.is_empty() {
            heap_at_root.store(HEAP.allocated(), Ordering::Relaxed);
            return Box::pin(futures::future::ready(Ok(StageOutcome::success())));
        }
        if parked.fetch_add(1, Ordering::Relaxed) + 1 == n {
            heap_at_full.store(HEAP.allocated(), Ordering::Relaxed);
            cancel.cancel();
        }
        Box::pin(futures::future::pending())
    });
    let before = HEAP.allocated();
    let report = block_on(host.engine.run_graph(
        &graph,
        Step::Test,
        &park,
        &host.clock,
        &host.release,
        host.revision,
    ));
    assert_eq!(parked.load(Ordering::Relaxed), n);
    assert_eq!(report.outcome, tollgate::engine::StepOutcome::Cancelled);
    let (root, full) = (
        heap_at_root.load(Ordering::Relaxed),
        heap_at_full.load(Ordering::Relaxed),
    );
    (
        (root - before) as f64 / n as f64,
        (full - root) as f64 / n as f64,
    )
}

/// The same for the lower bound: `n` boxed stage futures parked in a `FuturesUnordered`.
fn lower_bound_bytes_in_flight(n: usize) -> f64 {
    let before = HEAP.allocated();
    let mut running: FuturesUnordered<BoxFuture<'static, u32>> = (0..n as u32)
        .map(|i| -> BoxFuture<'static, u32> {
            Box::pin(async move {
                futures::future::pending::<()>().await;
                i
            })
        })
        .collect();
    // One poll starts every stage; none finishes.
    assert!(running.next().now_or_never().is_none());
    let during = HEAP.allocated();
    drop(running);
    (during - before) as f64 / n as f64
}

fn memory_table() {
    println!("\nheap per in-flight stage (fan-out, every leaf parked at once)");
    println!(
        "{:>8} {:>16} {:>14} {:>10} {:>12}",
        "stages", "tg bookkeeping", "tg in flight", "tg total", "lower bound"
    );
    for n in [10_000, 100_000] {
        let (bookkeeping, in_flight) = tollgate_bytes_in_flight(n);
        println!(
            "{:>8} {:>15.0}B {:>13.0}B {:>9.0}B {:>11.0}B",
            n,
            bookkeeping,
            in_flight,
            bookkeeping + in_flight,
            lower_bound_bytes_in_flight(n),
        );
    }
}

/// Runs one runner on one shape a number of times and nothing else, for a profiler:
/// `TOLLGATE_PROFILE="chain_10k tollgate 3"` (runners: `tollgate`, `lower_bound`, and for
/// build + run on the manual clock `build_run` and `record`, the record lower bound). Under
/// `valgrind --tool=callgrind --toggle-collect='*block_on*'` only the runs are counted, not
/// building the graphs (`--toggle-collect='*build_and_run_tollgate*'` or
/// `'*record_lower_bound*'` counts both). The runner `split` prints tollgate's fastest build
/// and fastest run apart, by CPU time.
fn profile(shapes: &[Shape], request: &str) {
    let words: Vec<&str> = request.split_whitespace().collect();
    let [shape, runner, runs] = words[..] else {
        panic!("TOLLGATE_PROFILE wants \"<shape> <runner> <runs>\", got {request:?}");
    };
    let shape = shapes
        .iter()
        .find(|s| s.name == shape)
        .unwrap_or_else(|| panic!("no shape {shape:?}"));
    let runs: usize = runs.parse().expect("the number of runs");
    match runner {
        "tollgate" => {
            let host = Host::new(Engine::new());
            let graph = tollgate_graph(shape, |_| None);
            for _ in 0..runs {
                assert!(run_tollgate(&host, &graph).succeeded());
            }
        }
        "lower_bound" => {
            let plain = Plain::new(shape);
            for _ in 0..runs {
                assert_eq!(run_lower_bound(&plain), shape.len());
            }
        }
        "build_run" => {
            let host = Host::new(Engine::new());
            let specs = tollgate_specs(shape, |_| None);
            for _ in 0..runs {
                let (_, report) = build_and_run_tollgate(&host, specs.clone(), &host.clock);
                assert!(report.succeeded());
            }
        }
        "split" => {
            let host = Host::new(Engine::new());
            let specs = tollgate_specs(shape, |_| None);
            let (mut b, mut r) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..runs {
                let input = specs.clone();
                let t0 = thread_cpu();
                let graph = StageGraph::builder().stages(input).build().unwrap();
                let t1 = thread_cpu();
                let report = run_tollgate_on(&host, &graph, &host.clock);
                let t2 = thread_cpu();
                drop(report);
                b = b.min(t1 - t0);
                r = r.min(t2 - t1);
            }
            println!(
                "{} build {:.2} ms run {:.2} ms",
                shape.name,
                b * 1e3,
                r * 1e3
            );
        }
        "record" => {
            let clock = ManualClock::new(Timestamp::EPOCH);
            let specs = tollgate_specs(shape, |_| None);
            for _ in 0..runs {
                let (_, records) = record_lower_bound(specs.clone(), &clock);
                assert_eq!(records.len(), shape.len());
            }
        }
        other => panic!("no runner {other:?} (tollgate, lower_bound, build_run, record)"),
    }
}

/// Times build + run on every shape, interleaving the runners of the build + run groups,
/// `runs` times each, and prints the fastest run of each by the thread's CPU clock with the
/// ratios the targets are stated in: `TOLLGATE_QUICK_BUILD_RUN=9`. A loaded machine stretches
/// wall times (a 100k run spans many time slices, a 10k run few), which skews growth ratios;
/// CPU time moves far less.
fn quick_build_run(shapes: &[Shape], runs: usize) {
    let host = Host::new(Engine::new());
    let system = SystemClock;
    println!(
        "\nbuild + run, fastest of {runs} by CPU time (ms); tg = tollgate, rec = record lower bound, raw = run-only lower bound"
    );
    println!(
        "{:<13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "shape", "tg man", "rec man", "tg sys", "rec sys", "raw", "tg/rec m", "tg/rec s", "tg/raw"
    );
    let mut fastest: BTreeMap<(String, usize), f64> = BTreeMap::new();
    for shape in shapes {
        let specs = tollgate_specs(shape, |_| None);
        let plain = Plain::new(shape);
        let mut best = [f64::INFINITY; 5];
        for _ in 0..runs {
            for (r, slot) in best.iter_mut().enumerate() {
                let input = specs.clone();
                let start = thread_cpu();
                let took = match r {
                    0 => cpu_since(start, build_and_run_tollgate(&host, input, &host.clock)),
                    1 => cpu_since(start, build_and_run_tollgate(&host, input, &system)),
                    2 => cpu_since(start, record_lower_bound(input, &host.clock)),
                    3 => cpu_since(start, record_lower_bound(input, &system)),
                    _ => cpu_since(start, run_lower_bound(&plain)),
                };
                *slot = slot.min(took);
            }
        }
        for (r, &t) in best.iter().enumerate() {
            fastest.insert((shape.name.clone(), r), t);
        }
        let [tm, ts, rm, rs, raw] = best;
        println!(
            "{:<13} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>9.2}",
            shape.name,
            tm * 1e3,
            rm * 1e3,
            ts * 1e3,
            rs * 1e3,
            raw * 1e3,
            tm / rm,
            ts / rs,
            tm / raw,
        );
    }
    println!(
        "\ngrowth 100k / 10k (CPU time): tollgate, record bound, and tollgate's over the bound's"
    );
    for shape in shapes {
        let Some(stem) = shape.name.strip_suffix("100k") else {
            continue;
        };
        let small = format!("{stem}10k");
        for (r, clock) in [(0, "manual"), (1, "system")] {
            let tg = fastest[&(shape.name.clone(), r)] / fastest[&(small.clone(), r)];
            let rec = fastest[&(shape.name.clone(), r + 2)] / fastest[&(small.clone(), r + 2)];
            println!(
                "{:<13} {clock:<7} tg {tg:>6.2}  rec {rec:>6.2}  tg/rec {:>5.2}",
                shape.name,
                tg / rec
            );
        }
    }
}

/// The CPU time this thread has used, in seconds.
fn thread_cpu() -> f64 {
    common::thread_cpu().as_secs_f64()
}

/// CPU seconds since `start`, read before `result` is freed.
fn cpu_since<T>(start: f64, result: T) -> f64 {
    let took = thread_cpu() - start;
    drop(result);
    took
}

fn main() {
    let shapes = [
        layered(10_000, 0x9E37_79B9_7F4A_7C15),
        layered(100_000, 0x9E37_79B9_7F4A_7C15),
        chain(10_000),
        chain(100_000),
        fan_out(10_000),
        fan_out(100_000),
        fan_in(10_000),
        fan_in(100_000),
    ];
    if let Some(runs) = std::env::var("TOLLGATE_QUICK_BUILD_RUN")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        quick_build_run(&shapes, runs);
        return;
    }
    if let Ok(request) = std::env::var("TOLLGATE_PROFILE") {
        profile(&shapes, &request);
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    speed(&mut criterion, &shapes);
    build_run(&mut criterion, &shapes);
    criterion.final_summary();
    // A profiling run (`--profile-time`) measures nothing, so it has nothing to summarise.
    if std::env::args().any(|arg| arg == "--profile-time") {
        return;
    }
    speed_summary(&shapes);
    build_run_summary(&shapes);
    if std::env::var_os("TOLLGATE_SKIP_TABLES").is_none() {
        makespan_table();
        memory_table();
    }
}
