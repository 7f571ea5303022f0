//! Benchmarks of building a [`StageGraph`] and rendering it, each beside a hand-written lower
//! bound: the same edges resolved through a `HashMap<String, u32>` into `Vec<Vec<u32>>`
//! adjacency and ordered by Kahn's algorithm, with none of the builder's checks.
//!
//! Run with `cargo bench --bench graph`; the whole run takes well under a minute.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use tollgate::graph::{StageGraph, StageSpec, Step};

fn name(i: usize) -> String {
    format!("stage-{i}")
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

/// One root and `n` stages that depend only on it.
fn fan_out(n: usize) -> Vec<StageSpec> {
    std::iter::once(StageSpec::build(name(0)))
        .chain((1..=n).map(|i| StageSpec::test(name(i)).after(name(0))))
        .collect()
}

/// `n` stages in layers of 100; each stage depends on up to 4 random stages of the layers
/// before it, and its step never decreases with its layer.
fn layered(n: usize) -> Vec<StageSpec> {
    const LAYER: usize = 100;
    // xorshift64: a fixed seed keeps runs comparable without a `rand` dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let layers = n.div_ceil(LAYER);
    (0..n)
        .map(|i| {
            let layer = i / LAYER;
            let step = Step::ALL[layer * Step::ALL.len() / layers];
            let mut spec = StageSpec::new(name(i), step);
            if layer > 0 {
                let earlier = (layer * LAYER) as u64;
                for _ in 0..next() % 5 {
                    spec = spec.after(name((next() % earlier) as usize));
                }
            }
            spec
        })
        .collect()
}

/// The graph the lower bound builds: the specs it was given, the id map, each stage's
/// dependents and a topological order.
type Plain = (
    Vec<StageSpec>,
    HashMap<String, u32>,
    Vec<Vec<u32>>,
    Vec<u32>,
);

/// The floor for `build`: resolve ids through a map, collect dependents, order by Kahn.
///
/// Like `build`, it takes the specs by value and keeps them, so that neither side's timing
/// includes freeing them.
fn lower_bound(specs: Vec<StageSpec>) -> Plain {
    let n = specs.len();
    let mut index = HashMap::with_capacity(n);
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

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let shapes = [
        ("chain_100k", chain(100_000)),
        ("fan_out_100k", fan_out(100_000)),
        ("layered_10k", layered(10_000)),
    ];
    for (shape, specs) in &shapes {
        group.bench_with_input(BenchmarkId::new("tollgate", shape), specs, |b, specs| {
            b.iter_batched(
                || specs.clone(),
                |specs| StageGraph::builder().stages(specs).build().unwrap(),
                BatchSize::LargeInput,
            );
        });
        group.bench_with_input(BenchmarkId::new("lower_bound", shape), specs, |b, specs| {
            b.iter_batched(|| specs.clone(), lower_bound, BatchSize::LargeInput);
        });
    }
    group.finish();
}

fn export(c: &mut Criterion) {
    let mut group = c.benchmark_group("export");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
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

criterion_group!(benches, build, export);
criterion_main!(benches);
