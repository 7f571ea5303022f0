//! The fleet at scale: 1,000 environments and up to 10,000 parked releases in one process.
//!
//! - **promote**: one promotion (queued, locked, its deploy stage run, finished: three
//!   conditional appends to the journal and one deploy step through the engine) with 1,000
//!   and with 10,000 releases parked in the fleet. Each iteration promotes the next release
//!   into the next environment (release by release, so no environment ever gets an older
//!   release); the fleet keeps exactly its releases. Beside it, a hand-written lower bound
//!   doing the same work with nothing else: the same three facts serialized and appended,
//!   each conditional on the key's last entry, to the same kind of journal, and the same
//!   deploy closure called directly.
//! - **memory per parked release**: the heap a fleet re-derived from the journal holds per
//!   registered release (its state only: the journal and the releases are not counted).
//!
//! Run with `cargo bench --bench fleet`; a table of medians and ratios is printed last.

use std::alloc::System;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cap::Cap;
use criterion::Criterion;
use futures::executor::block_on;
use tollgate::executor::from_fn;
use tollgate::fleet::{
    Actor, DeployKind, Fleet, FleetFact, FleetOptions, Lifecycle, Phase, PhaseRule,
};
use tollgate::journal::{ChainKey, Journal, MemoryJournal};
use tollgate::prelude::*;
use tollgate::time::{ManualClock, Timestamp};

/// Counts live heap bytes, for the memory figure.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

const ENVIRONMENTS: usize = 1_000;

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

fn deploy_closure(ctx: &StageContext<'_>) -> StageOutcome {
    black_box(ctx.environment());
    StageOutcome::success()
}

fn pipeline(journal: Arc<MemoryJournal>, clock: &ManualClock) -> Arc<Pipeline<Deployment>> {
    let artifact = |ctx: &StageContext<'_>| {
        StageOutcome::success().artifact(ArtifactRef::from_bytes(
            "app",
            ctx.release().as_str().as_bytes(),
        ))
    };
    Arc::new(
        Pipeline::<Deployment>::builder("fleet")
            .clock(clock.clone())
            .journal(journal)
            .stage(Stage::build("compile").run(from_fn(move |ctx| Ok(artifact(ctx)))))
            .stage(Stage::test("unit").run(from_fn(|_| Ok(StageOutcome::success()))))
            .stage(Stage::stage("staging").run(from_fn(|_| Ok(StageOutcome::success()))))
            .stage(Stage::deploy("roll-out").run(from_fn(|ctx| Ok(deploy_closure(ctx)))))
            .build()
            .expect("valid pipeline"),
    )
}

fn lifecycle() -> Lifecycle {
    let envs: Vec<String> = (0..ENVIRONMENTS).map(|e| format!("env-{e}")).collect();
    Lifecycle::new([
        Phase::new("edge")
            .wave(envs)
            .expect("valid names")
            .rule(PhaseRule::AtLeast(1)),
        Phase::new("production")
            .environment("prod")
            .expect("valid name"),
    ])
    .expect("valid lifecycle")
}

/// A fleet of `n` registered releases; the releases, in order.
struct Setup {
    journal: Arc<MemoryJournal>,
    pipeline: Arc<Pipeline<Deployment>>,
    fleet: Fleet<Deployment>,
    releases: Vec<Release<Tested, Deployment>>,
}

fn setup(n: usize) -> Setup {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"bench")));
    let pipeline = pipeline(Arc::clone(&journal), &clock);
    let fleet = block_on(Fleet::open(
        Arc::clone(&pipeline),
        lifecycle(),
        FleetOptions::default(),
    ))
    .expect("fleet opens");
    let releases = block_on(async {
        let mut releases = Vec::with_capacity(n);
        for i in 0..n {
            let revision = Revision::new(format!("r{i}"), "dana").expect("valid");
            let built = pipeline
                .start(format!("{i}"), revision)
                .expect("valid id")
                .build(&pipeline)
                .await
                .expect("builds");
            let artifact = built.artifact().clone();
            let tested = built.test(&pipeline, &artifact).await.expect("tests");
            fleet.register(&tested).await.expect("registers");
            releases.push(tested);
        }
        releases
    });
    Setup {
        journal,
        pipeline,
        fleet,
        releases,
    }
}

fn bench_promote(criterion: &mut Criterion, n: usize) {
    let world = setup(n);
    let mut next = 0usize;
    let name = format!("promote/{n} releases");
    criterion.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            block_on(async {
                for _ in 0..iters {
                    // Release by release, each into every environment in turn: never older
                    // over newer, never the same release twice in one environment.
                    let release = &world.releases[(next / ENVIRONMENTS) % n];
                    let env = format!("env-{}", next % ENVIRONMENTS);
                    next += 1;
                    let done = world
                        .fleet
                        .promote(release, &env, Actor::automation("bench"))
                        .await
                        .expect("promotes");
                    black_box(done);
                }
            });
            let took = start.elapsed();
            record(&name, took, iters);
            took
        });
    });
    // The lower bound: the same three facts, appended each on its key's condition, and the
    // deploy closure called once.
    let floor = format!("floor/{n} releases");
    let name_p = world.pipeline.name().clone();
    let mut heads: Vec<u64> = vec![0; ENVIRONMENTS];
    let mut floor_next = 0usize;
    criterion.bench_function(&floor, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            block_on(async {
                for _ in 0..iters {
                    let release = &world.releases[(floor_next / ENVIRONMENTS) % n];
                    let e = floor_next % ENVIRONMENTS;
                    floor_next += 1;
                    let environment: tollgate::environment::EnvironmentName =
                        format!("floor-{e}").parse().expect("valid");
                    let queued = FleetFact::Queued {
                        environment: environment.clone(),
                        release: release.id().clone(),
                        kind: DeployKind::Promote,
                        by: Actor::automation("bench"),
                        at: Timestamp::EPOCH,
                        gates: Vec::new(),
                        automatic: None,
                    };
                    let ticket = world
                        .journal
                        .append(vec![queued.to_entry(&name_p).after(heads[e])])
                        .await
                        .expect("appends");
                    let locked = FleetFact::Locked {
                        environment: environment.clone(),
                        ticket,
                        at: Timestamp::EPOCH,
                        until: Timestamp::EPOCH,
                    };
                    let head = world
                        .journal
                        .append(vec![locked.to_entry(&name_p).after(ticket)])
                        .await
                        .expect("appends");
                    let report = release.record().steps().last().cloned().expect("a report");
                    black_box(deploy_closure_floor(&environment));
                    let finished = FleetFact::Finished {
                        environment,
                        ticket,
                        report,
                        at: Timestamp::EPOCH,
                    };
                    heads[e] = world
                        .journal
                        .append(vec![finished.to_entry(&name_p).after(head)])
                        .await
                        .expect("appends");
                }
            });
            let took = start.elapsed();
            record(&floor, took, iters);
            took
        });
    });
}

fn deploy_closure_floor(environment: &tollgate::environment::EnvironmentName) -> StageOutcome {
    black_box(environment);
    StageOutcome::success()
}

/// Heap per parked release: a fleet re-derived from a journal of `n` registrations, its
/// retained heap less that of the same fleet with no release, divided by `n`.
fn memory_per_release(n: usize) -> usize {
    let world = setup(n);
    let before = HEAP.allocated();
    let reopened = block_on(Fleet::open(
        Arc::clone(&world.pipeline),
        lifecycle(),
        FleetOptions::default(),
    ))
    .expect("reopens");
    let with_releases = HEAP.allocated() - before;
    let empty_journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"empty")));
    let clock = ManualClock::new(Timestamp::EPOCH);
    let empty_pipeline = pipeline(empty_journal, &clock);
    let before = HEAP.allocated();
    let empty = block_on(Fleet::open(
        empty_pipeline,
        lifecycle(),
        FleetOptions::default(),
    ))
    .expect("opens");
    let without = HEAP.allocated() - before;
    assert_eq!(reopened.ledger().releases.len(), n);
    assert!(empty.ledger().releases.is_empty());
    with_releases.saturating_sub(without) / n
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_promote(&mut criterion, 1_000);
    bench_promote(&mut criterion, 10_000);
    criterion.final_summary();

    println!("\n| figure | 1,000 releases | 10,000 releases |");
    println!("|---|---:|---:|");
    let cell = |name: &str| {
        median(name).map_or("-".to_owned(), |d| {
            format!("{:.1} µs", d.as_secs_f64() * 1e6)
        })
    };
    println!(
        "| promote (median per promotion) | {} | {} |",
        cell("promote/1000 releases"),
        cell("promote/10000 releases")
    );
    println!(
        "| lower bound (same appends + deploy closure) | {} | {} |",
        cell("floor/1000 releases"),
        cell("floor/10000 releases")
    );
    let ratio = |a: &str, b: &str| match (median(a), median(b)) {
        (Some(a), Some(b)) => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".to_owned(),
    };
    println!(
        "| promote / lower bound | {} | {} |",
        ratio("promote/1000 releases", "floor/1000 releases"),
        ratio("promote/10000 releases", "floor/10000 releases")
    );
    println!(
        "\npromotion cost, 10,000 / 1,000 releases: {}",
        ratio("promote/10000 releases", "promote/1000 releases")
    );
    if std::env::var_os("TOLLGATE_SKIP_TABLES").is_none() {
        for n in [1_000, 10_000] {
            println!(
                "heap per parked release ({n} releases, 1,000 environments): {:.0} B",
                memory_per_release(n)
            );
        }
    }
}
