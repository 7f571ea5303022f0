//! Benchmarks of building a [`StageGraph`] and rendering it, each beside two references: a
//! hand-written lower bound (the same edges resolved through a hash map into `Vec<Vec<u32>>`
//! adjacency and ordered by Kahn's algorithm, with none of the builder's checks) and petgraph
//! (a `DiGraph` built from the same string ids through a foldhash map, then `toposort`).
//! After the criterion groups it prints a summary (time per stage, growth with size, the
//! ratios the targets are stated in) and the heap a built graph holds per stage.
//!
//! Run with `cargo bench --bench graph -- --warm-up-time 1 --measurement-time 3`; the whole
//! run takes about ten minutes on two cores. A filter (`cargo bench --bench graph -- chain`)
//! runs only the matching benchmarks; the summary then shows only those. With
//! `TOLLGATE_QUICK` set it times one shape by CPU time instead (see [`quick`]); with
//! `TOLLGATE_MEMORY=1` it prints only the heap table.

// Per-stage figures divide counts far below 2^52, so the float casts are exact enough.
#![allow(clippy::cast_precision_loss)]

mod common;

use common::{filter, thread_cpu};
use std::alloc::System;
use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cap::Cap;
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode};
use tollgate::graph::{StageGraph, StageSpec, Step};
use tollgate::petgraph::algo::toposort;
use tollgate::petgraph::graph::{DiGraph, NodeIndex};

/// Counts live heap bytes, so that the memory table can report what a built graph holds.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// The hasher both references use for string ids: the one `StageGraph` uses.
type Fast = foldhash::fast::FixedState;

fn name(i: usize) -> String {
    format!("stage-{i}")
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
}

/// `stage-0 <- stage-1 <- … <- stage-(n-1)`.
fn chain(n: usize) -> Vec<StageSpec> {
    (0..n)
        .map(|i| {
            let spec = StageSpec::build(name(i));
            if i == 0 {
                spec
            } else {
                spec.after(name(i - 1))
            }
        })
        .collect()
}

/// One root and `n - 1` stages that depend only on it.
fn fan_out(n: usize) -> Vec<StageSpec> {
    std::iter::once(StageSpec::build(name(0)))
        .chain((1..n).map(|i| StageSpec::test(name(i)).after(name(0))))
        .collect()
}

/// `n` stages in layers of 100; each stage depends on up to 4 random stages of the layers
/// before it, and its step never decreases with its layer.
fn layered(n: usize) -> Vec<StageSpec> {
    const LAYER: usize = 100;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let layers = n.div_ceil(LAYER);
    (0..n)
        .map(|i| {
            let layer = i / LAYER;
            let step = Step::ALL[layer * Step::ALL.len() / layers];
            let mut spec = StageSpec::new(name(i), step);
            if layer > 0 {
                let earlier = (layer * LAYER) as u64;
                for _ in 0..rng.next() % 5 {
                    spec = spec.after(name((rng.next() % earlier) as usize));
                }
            }
            spec
        })
        .collect()
}

/// `n` stages, each depending on 3 distinct stages drawn uniformly from all stages before it
/// (fewer for the first three): dependencies land anywhere in memory, as in a big monorepo.
fn random(n: usize) -> Vec<StageSpec> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    (0..n)
        .map(|i| {
            let mut spec = StageSpec::test(name(i));
            let mut picked = [usize::MAX; 3];
            for slot in 0..i.min(3) {
                let mut d = (rng.next() % i as u64) as usize;
                while picked.contains(&d) {
                    d = (rng.next() % i as u64) as usize;
                }
                picked[slot] = d;
                spec = spec.after(name(d));
            }
            spec
        })
        .collect()
}

/// The graph the lower bound builds: the specs it was given, the id map, each stage's
/// dependents and a topological order.
type Plain = (
    Vec<StageSpec>,
    HashMap<String, u32, Fast>,
    Vec<Vec<u32>>,
    Vec<u32>,
);

/// The floor for `build`: resolve ids through a map, collect dependents, order by Kahn.
///
/// Like `build`, it takes the specs by value and keeps them, so that neither side's timing
/// includes freeing them.
fn lower_bound(specs: Vec<StageSpec>) -> Plain {
    let n = specs.len();
    let mut index = HashMap::with_capacity_and_hasher(n, Fast::default());
    for (i, spec) in specs.iter().enumerate() {
        index.insert(spec.id.as_str().to_owned(), i as u32);
    }
    let mut dependents = vec![Vec::new(); n];
    let mut waiting = vec![0u32; n];
    for (i, spec) in specs.iter().enumerate() {
        for dependency in &spec.after {
            let d = index[dependency.as_str()];
            dependents[d as usize].push(i as u32);
            waiting[i] += 1;
        }
    }
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&i| waiting[i as usize] == 0)
        .collect();
    let mut next = 0;
    while let Some(&stage) = order.get(next) {
        next += 1;
        for &dependent in &dependents[stage as usize] {
            waiting[dependent as usize] -= 1;
            if waiting[dependent as usize] == 0 {
                order.push(dependent);
            }
        }
    }
    assert_eq!(order.len(), n, "the benchmark graphs are acyclic");
    (specs, index, dependents, order)
}

/// petgraph's way to the same answer: a `DiGraph` built from the string ids, resolved
/// through a map with the same fast hasher, edges from dependency to dependent, then
/// `toposort`. Takes the specs by value and keeps them, like the others.
fn petgraph_baseline(specs: Vec<StageSpec>) -> (Vec<StageSpec>, DiGraph<(), ()>, Vec<NodeIndex>) {
    let edges = specs.iter().map(|s| s.after.len()).sum();
    let mut graph = DiGraph::with_capacity(specs.len(), edges);
    let mut index: HashMap<&str, NodeIndex, Fast> =
        HashMap::with_capacity_and_hasher(specs.len(), Fast::default());
    for spec in &specs {
        index.insert(spec.id.as_str(), graph.add_node(()));
    }
    for (i, spec) in specs.iter().enumerate() {
        for dependency in &spec.after {
            graph.add_edge(index[dependency.as_str()], NodeIndex::new(i), ());
        }
    }
    drop(index);
    let order = toposort(&graph, None).expect("the benchmark graphs are acyclic");
    (specs, graph, order)
}

const RUNNERS: [&str; 3] = ["tollgate", "lower_bound", "petgraph"];

/// The benchmarks whose routine ran in this process, so that the summary reads only fresh
/// criterion estimates (a filtered run leaves older ones on disk).
static RAN: Mutex<BTreeSet<(&'static str, String)>> = Mutex::new(BTreeSet::new());

fn mark_ran(runner: &'static str, shape: &str) {
    RAN.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((runner, shape.to_owned()));
}

/// Makes a shape's specs for a number of stages.
type Make = fn(usize) -> Vec<StageSpec>;

/// Every shape at every size, named as the benchmarks are (`chain_10k`, `random_1M`).
fn shapes() -> Vec<(String, usize, Make)> {
    let kinds: [(&str, Make); 4] = [
        ("chain", chain),
        ("fan_out", fan_out),
        ("layered", layered),
        ("random", random),
    ];
    let mut all = Vec::new();
    for (kind, make) in kinds {
        for (size, n) in [("10k", 10_000), ("100k", 100_000), ("1M", 1_000_000)] {
            all.push((format!("{kind}_{size}"), n, make));
        }
    }
    all
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (shape, _, make) in shapes() {
        let specs = make_if_wanted(&shape, make);
        let Some(specs) = specs else { continue };
        group.bench_with_input(BenchmarkId::new("tollgate", &shape), &specs, |b, specs| {
            mark_ran("tollgate", &shape);
            b.iter_batched(
                || specs.clone(),
                |specs| StageGraph::builder().stages(specs).build().unwrap(),
                BatchSize::LargeInput,
            );
        });
        group.bench_with_input(
            BenchmarkId::new("lower_bound", &shape),
            &specs,
            |b, specs| {
                mark_ran("lower_bound", &shape);
                b.iter_batched(|| specs.clone(), lower_bound, BatchSize::LargeInput);
            },
        );
        group.bench_with_input(BenchmarkId::new("petgraph", &shape), &specs, |b, specs| {
            mark_ran("petgraph", &shape);
            b.iter_batched(|| specs.clone(), petgraph_baseline, BatchSize::LargeInput);
        });
    }
    group.finish();
}

fn make_if_wanted(shape: &str, make: Make) -> Option<Vec<StageSpec>> {
    let wanted = filter().is_none_or(|f| {
        RUNNERS
            .iter()
            .any(|r| format!("build/{r}/{shape}").contains(&f))
    });
    let n = match shape.rsplit('_').next() {
        Some("10k") => 10_000,
        Some("100k") => 100_000,
        _ => 1_000_000,
    };
    wanted.then(|| make(n))
}

fn export(c: &mut Criterion) {
    let mut group = c.benchmark_group("export");
    group.sample_size(10);
    if filter().is_some_and(|f| !"export/to_dot/critical_path/layered_10k".contains(&f)) {
        return;
    }
    let graph = StageGraph::builder()
        .stages(layered(10_000))
        .build()
        .unwrap();
    group.bench_function("to_dot/layered_10k", |b| {
        b.iter(|| black_box(&graph).to_dot());
    });
    group.bench_function("critical_path/layered_10k", |b| {
        b.iter(|| black_box(&graph).critical_path());
    });
    group.finish();
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

/// Criterion's median for one benchmark of this run, in seconds.
fn median_secs(runner: &'static str, shape: &str) -> Option<f64> {
    if !RAN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&(runner, shape.to_owned()))
    {
        return None;
    }
    let path = criterion_dir()
        .join("build")
        .join(runner)
        .join(shape)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["median"]["point_estimate"].as_f64()? / 1e9)
}

fn show(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), f)
}

/// Prints the medians per stage with the ratios the targets are stated in.
fn summary() {
    println!("\nbuild (criterion medians; ns per stage; growth = ns per stage / the 10k figure)");
    println!(
        "{:<14} {:>10} {:>9} {:>10} {:>9} {:>10} {:>9} {:>10} {:>10}",
        "shape",
        "tollgate",
        "tg ns/st",
        "lower",
        "petgraph",
        "pg ns/st",
        "tg/pg",
        "tg/lower",
        "tg growth"
    );
    for (shape, n, _) in shapes() {
        let [tg, lower, pg] = RUNNERS.map(|r| median_secs(r, &shape));
        if tg.is_none() && lower.is_none() && pg.is_none() {
            continue;
        }
        let per_stage = |s: Option<f64>| s.map(|s| s * 1e9 / n as f64);
        let stem = shape.rsplit_once('_').map_or("", |(stem, _)| stem);
        let tg_10k = median_secs("tollgate", &format!("{stem}_10k")).map(|s| s * 1e9 / 1e4);
        let growth = per_stage(tg).zip(tg_10k).map(|(now, ten)| now / ten);
        let ms = |s: f64| format!("{:.2}ms", s * 1e3);
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        println!(
            "{:<14} {:>10} {:>9} {:>10} {:>9} {:>10} {:>9} {:>10} {:>10}",
            shape,
            show(tg, ms),
            show(per_stage(tg), |v| format!("{v:.0}")),
            show(lower, ms),
            show(pg, ms),
            show(per_stage(pg), |v| format!("{v:.0}")),
            show(ratio(tg, pg), |v| format!("{v:.2}")),
            show(ratio(tg, lower), |v| format!("{v:.2}")),
            show(growth, |v| format!("{v:.2}")),
        );
    }
}

/// The heap a built graph holds per stage: in all (its specs with their ids and dependency
/// lists included), and beyond the specs it was handed (the id map, adjacency, order,
/// priorities).
fn memory_table() {
    println!("\nheap held by a built graph, bytes per stage");
    println!(
        "{:<14} {:>8} {:>12} {:>8}",
        "shape", "total", "beyond specs", "specs"
    );
    for (shape, n, make) in shapes() {
        if !shape.ends_with("100k") || filter().is_some_and(|f| !shape.contains(&f)) {
            continue;
        }
        let start = HEAP.allocated();
        let specs = make(n);
        let with_specs = HEAP.allocated();
        let graph = StageGraph::builder().stages(specs).build().unwrap();
        let with_graph = HEAP.allocated();
        let per = |bytes: usize| bytes as f64 / n as f64;
        println!(
            "{:<14} {:>7.0}B {:>11.0}B {:>7.0}B",
            shape,
            per(with_graph - start),
            per(with_graph - with_specs),
            per(with_specs - start),
        );
        drop(graph);
    }
}

/// Times each runner on one shape `runs` times, interleaved, and prints the fastest and the
/// median run of each, by the thread's CPU clock and by the wall clock:
/// `TOLLGATE_QUICK="random_1M 5"`. On a machine shared with other jobs the CPU time of the
/// fastest of a few interleaved runs moves far less than a criterion median (a run of a
/// second spans many time slices, one of a millisecond often none, so wall-clock growth with
/// size is inflated by the load). `TOLLGATE_QUICK="random_1M 5 tollgate"` runs only one runner,
/// for a profiler.
fn quick(request: &str) {
    let words: Vec<&str> = request.split_whitespace().collect();
    let (shape, runs, only) = match words[..] {
        [shape, runs] => (shape, runs, None),
        [shape, runs, only] => (shape, runs, Some(only)),
        _ => panic!("TOLLGATE_QUICK wants \"<shape> <runs> [runner]\", got {request:?}"),
    };
    let runs: usize = runs.parse().expect("the number of runs");
    let (_, n, make) = shapes()
        .into_iter()
        .find(|(name, _, _)| name == shape)
        .unwrap_or_else(|| panic!("no shape {shape:?}"));
    let specs = make(n);
    let mut times: [Vec<(f64, f64)>; 3] = Default::default();
    for _ in 0..runs {
        for (r, runner) in RUNNERS.iter().enumerate() {
            if only.is_some_and(|o| o != *runner) {
                continue;
            }
            let input = specs.clone();
            // Each side's result is freed after the clocks stop, as in the criterion groups.
            let start = Clocks::now();
            let took = match r {
                0 => start.timed(StageGraph::builder().stages(input).build().unwrap()),
                1 => start.timed(lower_bound(input)),
                _ => start.timed(petgraph_baseline(input)),
            };
            times[r].push(took);
        }
    }
    for (runner, t) in RUNNERS.into_iter().zip(times) {
        if t.is_empty() {
            continue;
        }
        let mut wall: Vec<f64> = t.iter().map(|&(w, _)| w).collect();
        let mut cpu: Vec<f64> = t.iter().map(|&(_, c)| c).collect();
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        println!(
            "{shape:<12} {runner:<12} cpu fastest {:>9.3} ms ({:>5.0} ns/stage) median {:>9.3} ms | wall fastest {:>9.3} ms median {:>9.3} ms",
            cpu[0] * 1e3,
            cpu[0] * 1e9 / n as f64,
            cpu[cpu.len() / 2] * 1e3,
            wall[0] * 1e3,
            wall[wall.len() / 2] * 1e3,
        );
    }
}

/// The wall clock and this thread's CPU clock, read together.
struct Clocks {
    wall: std::time::Instant,
    cpu: Duration,
}

impl Clocks {
    fn now() -> Self {
        Clocks {
            wall: std::time::Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// Seconds of wall and CPU time since `self`, read before `result` is freed.
    fn timed<T>(&self, result: T) -> (f64, f64) {
        let cpu = thread_cpu().saturating_sub(self.cpu);
        let wall = self.wall.elapsed();
        drop(black_box(result));
        (wall.as_secs_f64(), cpu.as_secs_f64())
    }
}

fn main() {
    if let Ok(request) = std::env::var("TOLLGATE_QUICK") {
        quick(&request);
        return;
    }
    // The memory table alone, in a second rather than after ten minutes of timing.
    if std::env::var_os("TOLLGATE_MEMORY").is_some() {
        memory_table();
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    build(&mut criterion);
    export(&mut criterion);
    criterion.final_summary();
    if std::env::args().any(|arg| arg == "--profile-time") {
        return;
    }
    summary();
    memory_table();
}
