//! The reconcile loop at scale: one pass over 1,000 and 10,000 environments.
//!
//! - **in sync**: every environment runs the desired release (registered, live in the
//!   fleet's ledger, observed on a simulated target with two configuration values); a pass
//!   fetches the source (unchanged), observes each environment through `Target::observe`,
//!   and compares desired, observed and the ledger. Beside it, a hand-written lower bound
//!   making the same comparisons with nothing else: the same source entries iterated, the
//!   same `observe` calls on the same target, the ledger's live release and the registered
//!   digest read from plain hash maps built beforehand.
//! - **ten drifted**: the same pass after ten environments were changed by hand (a stable
//!   version swapped) outside the timing; the pass reports them and repairs each through
//!   `Fleet::redeploy` (a queued, a locked and a finished fact, and a deploy step).
//!
//! - **the sweep** (printed last, or alone with `TOLLGATE_QUICK_RECONCILE=<runs>`): cost per
//!   environment at 1k, 2k, 5k, 10k and 20k environments (`TOLLGATE_RECONCILE_SIZES` to
//!   choose), by the thread's CPU time, fastest of the interleaved runs: the pass, the lower
//!   bound, the simulated target's `observe` calls alone, the pass and the bound on a target
//!   with no data of its own (`Constant`: one `Observed` cloned per call), and one `Observed`
//!   cloned as often (the allocator's share). Where the cost per environment grows with the
//!   number of environments, these columns say whose it is.
//!
//! Run with `cargo bench --bench reconcile`; a table of medians and ratios, then the sweep,
//! are printed last.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use futures::executor::block_on;
use tollgate::environment::EnvironmentName;
use tollgate::executor::from_fn;
use tollgate::fleet::{Actor, Fleet, FleetOptions, Lifecycle, Phase};
use tollgate::id::ReleaseId;
use tollgate::journal::{ChainKey, MemoryJournal};
use tollgate::prelude::*;
use tollgate::reconcile::{Desired, DesiredState, MemorySource, Reconciler, SourceRevision};
use tollgate::rollout::{Health, Observed, Target, TargetError, Version, Weight};
use tollgate::time::{ManualClock, Timestamp};

#[allow(dead_code)] // `filter` is the graph and engine benches'
mod common;

static TIMES: Mutex<BTreeMap<String, Vec<Duration>>> = Mutex::new(BTreeMap::new());

fn record(name: &str, took: Duration, iters: u64) {
    TIMES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_owned())
        .or_default()
        .push(took / u32::try_from(iters.max(1)).unwrap_or(u32::MAX));
}

fn median(name: &str) -> Option<Duration> {
    let times = TIMES.lock().unwrap_or_else(PoisonError::into_inner);
    let mut runs = times.get(name)?.clone();
    runs.sort();
    runs.get(runs.len() / 2).copied()
}

/// A simulated cluster: what runs in each environment, in a hash map.
#[derive(Debug, Clone, Default)]
struct Cluster(Arc<Mutex<HashMap<EnvironmentName, Observed>>>);

impl Cluster {
    fn set(&self, env: &EnvironmentName, observed: Observed) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(env.clone(), observed);
    }
}

#[async_trait]
impl Target for Cluster {
    async fn observe(&self, environment: &EnvironmentName) -> Result<Observed, TargetError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(environment)
            .cloned()
            .unwrap_or_default())
    }
    async fn prepare(
        &self,
        _: &EnvironmentName,
        _: &Version,
        _: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn shift(&self, _: &EnvironmentName, _: Weight) -> Result<(), TargetError> {
        Ok(())
    }
    async fn replace(
        &self,
        _: &EnvironmentName,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn health(&self, _: &EnvironmentName) -> Result<Health, TargetError> {
        Ok(Health::Healthy)
    }
    async fn promote(&self, _: &EnvironmentName) -> Result<(), TargetError> {
        Ok(())
    }
    async fn abort(&self, _: &EnvironmentName) -> Result<(), TargetError> {
        Ok(())
    }
}

/// A target that says every environment runs the same thing: one `Observed`, cloned per
/// call (the same allocations as the cluster's, none of its lookups or scattered entries).
#[derive(Debug, Clone)]
struct Constant(Observed);

#[async_trait]
impl Target for Constant {
    async fn observe(&self, _: &EnvironmentName) -> Result<Observed, TargetError> {
        Ok(self.0.clone())
    }
    async fn prepare(
        &self,
        _: &EnvironmentName,
        _: &Version,
        _: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn shift(&self, _: &EnvironmentName, _: Weight) -> Result<(), TargetError> {
        Ok(())
    }
    async fn replace(
        &self,
        _: &EnvironmentName,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn health(&self, _: &EnvironmentName) -> Result<Health, TargetError> {
        Ok(Health::Healthy)
    }
    async fn promote(&self, _: &EnvironmentName) -> Result<(), TargetError> {
        Ok(())
    }
    async fn abort(&self, _: &EnvironmentName) -> Result<(), TargetError> {
        Ok(())
    }
}

fn config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("replicas".to_owned(), "3".to_owned()),
        ("region".to_owned(), "eu-west".to_owned()),
    ])
}

/// The shop's pipeline, whose deploy stage puts the release's artifact on `cluster`.
fn pipeline(
    clock: &ManualClock,
    journal: Arc<MemoryJournal>,
    cluster: &Cluster,
) -> Arc<Pipeline<Deployment>> {
    let deployer = cluster.clone();
    Arc::new(
        Pipeline::<Deployment>::builder("shop")
            .clock(clock.clone())
            .journal(journal)
            .stage(Stage::build("compile").run(from_fn(|ctx| {
                Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes(
                    "app",
                    ctx.release().as_str().as_bytes(),
                )))
            })))
            .stage(Stage::test("unit").run(from_fn(|_| Ok(StageOutcome::success()))))
            .stage(Stage::stage("staging").run(from_fn(|_| Ok(StageOutcome::success()))))
            .stage(Stage::deploy("roll-out").run(from_fn(move |ctx| {
                if let (Some(env), Some(artifact)) = (ctx.environment(), ctx.artifact()) {
                    deployer.set(
                        env.name(),
                        Observed {
                            stable: Some(Version {
                                release: ctx.release().clone(),
                                digest: artifact.digest.clone(),
                            }),
                            candidate: None,
                            config: config(),
                        },
                    );
                }
                Ok(StageOutcome::success())
            })))
            .build()
            .expect("valid pipeline"),
    )
}

/// A fleet of `n` environments, all running release `app-1`, and its reconciler.
struct World {
    fleet: Arc<Fleet<Deployment>>,
    cluster: Cluster,
    reconciler: Reconciler<Deployment>,
    desired: DesiredState,
    stray: Version,
}

fn world(n: usize) -> World {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"bench")));
    let cluster = Cluster::default();
    let pipeline = pipeline(&clock, journal, &cluster);
    let names: Vec<String> = (0..n).map(|e| format!("env-{e}")).collect();
    let lifecycle = Lifecycle::new([Phase::new("production")
        .wave(names.iter().cloned())
        .expect("valid names")])
    .expect("valid lifecycle");
    let fleet = Arc::new(
        block_on(Fleet::open(
            Arc::clone(&pipeline),
            lifecycle,
            FleetOptions::default(),
        ))
        .expect("fleet opens"),
    );
    let mut versions = Vec::new();
    for id in ["app-0", "app-1"] {
        let approved = block_on(async {
            let built = pipeline
                .start(id, Revision::new("4f2a9c1", "dana").expect("valid"))
                .expect("valid id")
                .build(&pipeline)
                .await
                .expect("builds");
            let artifact = built.artifact().clone();
            built
                .test(&pipeline, &artifact)
                .await
                .expect("tests")
                .stage(&pipeline, &artifact)
                .await
                .expect("stages")
                .auto_approve(&pipeline)
                .await
                .expect("approves")
        });
        block_on(fleet.register(&approved)).expect("registers");
        let version = Version {
            release: approved.id().clone(),
            digest: approved.artifact().digest.clone(),
        };
        versions.push((approved, version));
    }
    let (app1, version) = versions.pop().expect("two releases");
    let stray = versions.pop().expect("two releases").1;
    block_on(async {
        for name in &names {
            fleet
                .promote(&app1, name, Actor::automation("ci"))
                .await
                .expect("promotes");
        }
    });
    let desired = DesiredState {
        revision: SourceRevision::new("c1"),
        environments: names
            .iter()
            .map(|name| {
                let mut desired = Desired::new(version.clone());
                desired.config = config();
                (name.parse().expect("valid"), desired)
            })
            .collect(),
    };
    let source = MemorySource::new();
    source.set(desired.clone());
    let reconciler = Reconciler::new(Arc::clone(&fleet), source, cluster.clone());
    let first = block_on(reconciler.pass()).expect("a pass");
    assert!(first.converged(), "{:?}", first.events.first());
    World {
        fleet,
        cluster,
        reconciler,
        desired,
        stray,
    }
}

/// The lower bound: the same comparisons, with the ledger's live releases in a plain
/// vector in the desired state's order (resolved beforehand, as the reconciler resolves
/// each environment's place in the fleet once per desired state) and the registered
/// digests in a hash map by release id (as the fleet's).
async fn floor_pass(
    target: &dyn Target,
    desired: &DesiredState,
    live: &[Option<Version>],
    registered: &HashMap<ReleaseId, Digest>,
) -> usize {
    let mut in_sync = 0;
    for ((env, want), live) in desired.environments.iter().zip(live) {
        let Ok(observed) = target.observe(env).await else {
            continue;
        };
        let known = registered.get(&want.version.release) == Some(&want.version.digest);
        let live = live.as_ref();
        if known
            && live == Some(&want.version)
            && observed.stable.as_ref() == live
            && observed.candidate.is_none()
            && observed.config == want.config
        {
            in_sync += 1;
        }
    }
    in_sync
}

fn bench_pass(criterion: &mut Criterion, n: usize) {
    let world = world(n);
    let name = format!("pass/{n} in sync");
    criterion.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let pass = block_on(world.reconciler.pass()).expect("a pass");
                assert_eq!(pass.in_sync, n);
                black_box(pass);
            }
            let took = start.elapsed();
            record(&name, took, iters);
            took
        });
    });
    let (live, registered) = floor_maps(&world.fleet, &world.desired);
    let target: &dyn Target = &world.cluster;
    let floor = format!("floor/{n} in sync");
    criterion.bench_function(&floor, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let in_sync = block_on(floor_pass(target, &world.desired, &live, &registered));
                assert_eq!(in_sync, n);
            }
            let took = start.elapsed();
            record(&floor, took, iters);
            took
        });
    });
    let drifted = format!("pass/{n} with 10 drifted");
    let step = n / 10;
    criterion.bench_function(&drifted, |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                for e in (0..n).step_by(step) {
                    let env: EnvironmentName = format!("env-{e}").parse().expect("valid");
                    world.cluster.set(
                        &env,
                        Observed {
                            stable: Some(world.stray.clone()),
                            candidate: None,
                            config: config(),
                        },
                    );
                }
                let start = Instant::now();
                let pass = block_on(world.reconciler.pass()).expect("a pass");
                took += start.elapsed();
                assert_eq!(pass.actions().count(), 10);
                black_box(pass);
            }
            record(&drifted, took, iters);
            took
        });
    });
}

/// The observe calls of a pass and nothing else: the simulated target's own cost.
async fn target_alone(target: &dyn Target, desired: &DesiredState) -> usize {
    let mut observed = 0;
    for env in desired.environments.keys() {
        if let Ok(o) = target.observe(env).await {
            observed += usize::from(o.stable.is_some());
            black_box(o);
        }
    }
    observed
}

/// The allocator's share of `observe`: one `Observed` (hot in the cache) cloned and dropped
/// `n` times, as many allocations as the simulated target makes, no lookup.
fn clones_alone(observed: &Observed, n: usize) -> usize {
    let mut some = 0;
    for _ in 0..n {
        let o = black_box(observed.clone());
        some += usize::from(o.stable.is_some());
    }
    some
}

/// A source holding `desired`.
fn source_of(desired: &DesiredState) -> MemorySource {
    let source = MemorySource::new();
    source.set(desired.clone());
    source
}

/// The live release of each environment `desired` names, in its order, and the registered
/// digests by release (the lower bound's ledger, built before any timing).
fn floor_maps(
    fleet: &Fleet<Deployment>,
    desired: &DesiredState,
) -> (Vec<Option<Version>>, HashMap<ReleaseId, Digest>) {
    let ledger = fleet.ledger();
    let by_env: HashMap<EnvironmentName, Version> = ledger
        .environments
        .iter()
        .filter_map(|e| {
            e.live.as_ref().map(|d| {
                (
                    e.environment.clone(),
                    Version {
                        release: d.release.clone(),
                        digest: d.digest.clone(),
                    },
                )
            })
        })
        .collect();
    let live = desired
        .environments
        .keys()
        .map(|env| by_env.get(env).cloned())
        .collect();
    let registered = ledger
        .releases
        .iter()
        .map(|r| (r.release.clone(), r.digest.clone()))
        .collect();
    (live, registered)
}

/// The sizes of the sweep: `TOLLGATE_RECONCILE_SIZES="1000 10000"`, or 1k, 2k, 5k, 10k, 20k.
fn sweep_sizes() -> Vec<usize> {
    std::env::var("TOLLGATE_RECONCILE_SIZES").map_or_else(
        |_| vec![1_000, 2_000, 5_000, 10_000, 20_000],
        |s| {
            s.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        },
    )
}

/// Cost per environment from 1k to 20k environments, by the thread's CPU time (the machine
/// is shared; waiting for a core is not counted), fastest of `runs` interleaved runs of the
/// pass, the lower bound, the target's calls alone,
/// target, the pass and the bound on a target with no data of its own (`Constant`), and the
/// allocator's share (one `Observed` cloned as often). Returns the rows.
/// `TOLLGATE_RECONCILE_ONLY=pass` (or `bound`, `target`) runs only that one, for a heap
/// profiler to count its allocations.
fn sweep(runs: usize) -> Vec<(usize, [Duration; 6])> {
    let only = std::env::var("TOLLGATE_RECONCILE_ONLY").ok();
    let runs_it = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let mut rows = Vec::new();
    for n in sweep_sizes() {
        let world = world(n);
        let (live, registered) = floor_maps(&world.fleet, &world.desired);
        let target: &dyn Target = &world.cluster;
        let one = block_on(target.observe(&"env-0".parse().expect("valid"))).expect("observed");
        let constant = Constant(one.clone());
        let constant_pass = Reconciler::new(
            Arc::clone(&world.fleet),
            source_of(&world.desired),
            constant.clone(),
        );
        block_on(constant_pass.pass()).expect("a first pass");
        let mut best = [Duration::MAX; 6];
        let mut time = |i: usize, f: &mut dyn FnMut() -> usize| {
            let start = common::thread_cpu();
            let counted = f();
            best[i] = best[i].min(common::thread_cpu().saturating_sub(start));
            assert_eq!(counted, n);
        };
        for _ in 0..runs {
            if runs_it("pass") {
                time(0, &mut || {
                    block_on(world.reconciler.pass()).expect("a pass").in_sync
                });
            }
            if runs_it("bound") {
                time(1, &mut || {
                    block_on(floor_pass(target, &world.desired, &live, &registered))
                });
            }
            if runs_it("target") {
                time(2, &mut || block_on(target_alone(target, &world.desired)));
            }
            if only.is_none() {
                time(3, &mut || {
                    block_on(constant_pass.pass()).expect("a pass").in_sync
                });
                time(4, &mut || {
                    block_on(floor_pass(&constant, &world.desired, &live, &registered))
                });
                time(5, &mut || clones_alone(&one, n));
            }
        }
        let per_env = u32::try_from(n).unwrap_or(u32::MAX);
        rows.push((n, best.map(|d| d / per_env)));
    }
    rows
}

fn print_sweep(rows: &[(usize, [Duration; 6])]) {
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    println!(
        "\n| environments | pass | lower bound | target alone | pass, constant target | bound, constant target | `Observed` clones alone |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n, row) in rows {
        print!("| {n} |");
        for d in row {
            print!(" {:.0} ns |", ns(*d));
        }
        println!();
    }
    if let (Some((first, a)), Some((last, b))) = (rows.first(), rows.last()) {
        let growth = |i: usize| ns(b[i]) / ns(a[i]);
        println!(
            "growth per environment {first} → {last}: pass {:.2}, lower bound {:.2}, target alone {:.2}, pass on a constant target {:.2}, bound on it {:.2}, clones alone {:.2}",
            growth(0),
            growth(1),
            growth(2),
            growth(3),
            growth(4),
            growth(5)
        );
    }
}

fn main() {
    if let Ok(runs) = std::env::var("TOLLGATE_QUICK_RECONCILE") {
        print_sweep(&sweep(runs.parse().unwrap_or(5)));
        return;
    }
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_pass(&mut criterion, 1_000);
    bench_pass(&mut criterion, 10_000);
    criterion.final_summary();

    let per_env = |name: &str, n: u32| median(name).map(|d| d / n);
    let cell = |name: &str, n: u32| {
        per_env(name, n).map_or("-".to_owned(), |d| {
            format!("{:.0} ns", d.as_secs_f64() * 1e9)
        })
    };
    println!("\n| per environment (median pass / environments) | 1,000 | 10,000 |");
    println!("|---|---:|---:|");
    println!(
        "| pass, all in sync | {} | {} |",
        cell("pass/1000 in sync", 1_000),
        cell("pass/10000 in sync", 10_000)
    );
    println!(
        "| lower bound (same comparisons) | {} | {} |",
        cell("floor/1000 in sync", 1_000),
        cell("floor/10000 in sync", 10_000)
    );
    println!(
        "| pass, 10 drifted and repaired | {} | {} |",
        cell("pass/1000 with 10 drifted", 1_000),
        cell("pass/10000 with 10 drifted", 10_000)
    );
    let ratio = |a: &str, an: u32, b: &str, bn: u32| match (per_env(a, an), per_env(b, bn)) {
        (Some(a), Some(b)) => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".to_owned(),
    };
    println!(
        "| pass / lower bound | {} | {} |",
        ratio("pass/1000 in sync", 1_000, "floor/1000 in sync", 1_000),
        ratio("pass/10000 in sync", 10_000, "floor/10000 in sync", 10_000)
    );
    println!(
        "\ncost per environment in sync, 10,000 / 1,000: {} (lower bound: {})",
        ratio("pass/10000 in sync", 10_000, "pass/1000 in sync", 1_000),
        ratio("floor/10000 in sync", 10_000, "floor/1000 in sync", 1_000)
    );
    if let Some(d) = median("pass/10000 with 10 drifted") {
        println!(
            "a pass over 10,000 with 10 drifted and repaired: {:.2} ms",
            d.as_secs_f64() * 1e3
        );
    }
    print_sweep(&sweep(5));
}
