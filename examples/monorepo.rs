//! A generated 2,000-stage monorepo pipeline with flaky tests, retries and a concurrency
//! group: planned, run in virtual time with a progress line, then taken apart.
//!
//! Run with `cargo run --example monorepo`, or `cargo run --example monorepo -- <seed>` for
//! another repository. A seed always prints the same report on stdout: the repository, its
//! flaky tests, the retry jitter and the clock all follow from it.
//!
//! The ideas on show: a merge-request check in a monorepo is a DAG of jobs (build a package
//! after the packages it uses, then lint and test it); a pool of workers runs the ready jobs;
//! the *critical path* bounds how fast a run can go however many workers there are, and
//! *total work / workers* bounds it however clever the scheduler is; flaky tests are retried
//! with exponential backoff; and a scarce resource (the end-to-end environment) is shared
//! through a concurrency group.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate::Error;
use tollgate::engine::{Engine, Event, StageReport, StepReport, observer_fn};
use tollgate::executor::{StageOutcome, StageStatus, from_async_fn};
use tollgate::graph::{Backoff, RetryPolicy, StageGraph, StageSpec, Step};
use tollgate::id::ReleaseId;
use tollgate::time::{ManualClock, Timestamp, run_virtual};

const SEED: u64 = 2024;
const STAGES: usize = 2_000;
/// Packages come in layers, lowest first; a package uses packages of lower layers only.
const LAYERS: &str = "core util storage net domain api service app";
const PACKAGES_PER_LAYER: usize = 25;
const E2E_SUITES: &str = "checkout login search payments signup inventory shipping refunds \
                          admin reports mobile notifications";
const WORKERS: usize = 16;
/// The end-to-end suites share one staging environment, with room for two at a time.
const E2E_SLOTS: usize = 2;
const PROGRESS_EVERY: usize = 250;
const FLAKES: [&str; 4] = [
    "connection reset by peer",
    "port 5432 already in use",
    "timing-sensitive assertion failed",
    "runner lost contact",
];

fn main() -> Result<(), Error> {
    let seed = std::env::args().nth(1).and_then(|s| s.parse().ok());
    let seed = seed.unwrap_or(SEED);
    let Generator { specs, flaky, .. } = generate(seed);
    let graph = StageGraph::builder().stages(specs).build()?;
    let edges: usize = graph.stages().map(|s| s.after.len()).sum();
    let work: Duration = graph.stages().filter_map(|s| s.estimate).sum();
    let stages = graph.len();
    println!("monorepo (seed {seed}): {stages} stages, {edges} dependencies");
    println!("total work {} (every estimate added up)", hms(work));

    // The critical path: the heaviest chain of estimates, which no number of workers beats.
    let critical = graph.critical_path();
    println!("\ncritical path, {}:", hms(critical.estimate));
    for id in &critical.stages {
        let estimate = graph.get(id.as_str()).and_then(|s| s.estimate);
        println!("  {:>8}  {id}", hms(estimate.unwrap_or_default()));
    }

    // The observer sees every event on the thread that polls the run; it only counts, and
    // prints a line now and then.
    let progress = Arc::new(Mutex::new(Progress::default()));
    let observer = {
        let progress = Arc::clone(&progress);
        observer_fn(move |event: &Event| progress.lock().expect("progress lock").observe(event))
    };
    let engine = Engine::builder()
        .workers(WORKERS)
        .group_limit("e2e", E2E_SLOTS)
        .seed(seed)
        .observer(observer)
        .build()?;

    // The dry run: the engine's own scheduler over the estimates, with nothing executed. It
    // leaves out retries and group limits, so it is a forecast, not a promise. Planning the
    // same graph for other worker counts shows where more workers stop paying: the forecast
    // falls to the critical path and no further.
    let plan = engine.plan(&graph, Step::Test);
    let waves: Vec<String> = plan.waves().iter().map(|w| w.len().to_string()).collect();
    let (count, sizes) = (waves.len(), waves.join(", "));
    println!("\nplan: {count} waves of {sizes} stages");
    for workers in [4, 8, WORKERS, 32, 64, 128] {
        let other = Engine::builder().workers(workers).build()?;
        let forecast = hms(other.plan(&graph, Step::Test).makespan);
        println!("  forecast with {workers:>3} workers: {forecast}");
    }

    // Every stage sleeps its estimate on the pipeline's clock; a flaky one fails halfway
    // through its first attempt or two. The engine is not told which stages are flaky.
    let executor = from_async_fn(|ctx| {
        let estimate = ctx.spec().estimate.unwrap_or_default();
        let fails = match flaky.get(ctx.stage().as_str()) {
            Some(flake) if ctx.attempt() <= flake.failures => Some(flake.reason),
            _ => None,
        };
        Box::pin(async move {
            let Some(reason) = fails else {
                ctx.clock().sleep(estimate).await;
                return Ok(StageOutcome::success());
            };
            ctx.clock().sleep(estimate / 2).await;
            Ok(StageOutcome::failure(reason))
        })
    });
    let clock = ManualClock::new(Timestamp::EPOCH);
    let release = ReleaseId::new("mr-4711")?;
    println!("\nrunning with {WORKERS} workers, e2e suites {E2E_SLOTS} at a time:");
    let wall = Instant::now();
    let run = engine.run_graph(&graph, Step::Test, &executor, &clock, &release, "9d41e07");
    let report = run_virtual(&clock, run);
    // Real time goes to stderr, so that stdout is the same on every run.
    eprintln!("(hours of CI simulated in {:.0?})", wall.elapsed());

    // Three floors under any schedule: the heaviest chain, the work spread evenly over the
    // workers, and the e2e work spread over the e2e slots.
    let e2e = graph.stages().filter(|s| s.group.as_deref() == Some("e2e"));
    let e2e_bound = e2e.filter_map(|s| s.estimate).sum::<Duration>() / E2E_SLOTS as u32;
    let work_bound = work / WORKERS as u32;
    let bounds = [
        (plan.makespan, "forecast by the plan".to_owned()),
        (critical.estimate, "critical path".to_owned()),
        (work_bound, format!("total work / {WORKERS} workers")),
        (e2e_bound, format!("e2e work / {E2E_SLOTS} slots")),
    ];
    summarize(&graph, &report, &bounds);
    Ok(())
}

/// Counts events and prints a progress line every [`PROGRESS_EVERY`] stages and at the end.
#[derive(Default)]
struct Progress {
    total: usize,
    done: usize,
    /// Attempts holding a worker: started and not ended. A stage waiting out its retry
    /// backoff gives its worker back and queues for one again, as a retried CI job does.
    busy: usize,
    retried: usize,
    start: Timestamp,
}

impl Progress {
    fn observe(&mut self, event: &Event) {
        let Event::StageFinished { at, status, .. } = event else {
            match event {
                Event::StepStarted { stages, at, .. } => (self.total, self.start) = (*stages, *at),
                Event::AttemptStarted { .. } => self.busy += 1,
                Event::AttemptFailed { .. } => self.busy = self.busy.saturating_sub(1),
                Event::Retrying { .. } => self.retried += 1,
                _ => {}
            }
            return;
        };
        // A failed attempt was counted out when it failed; a successful one ends here.
        if status.is_success() {
            self.busy = self.busy.saturating_sub(1);
        }
        self.done += 1;
        let (done, total, busy, retried) = (self.done, self.total, self.busy, self.retried);
        if done % PROGRESS_EVERY == 0 || done == total {
            let t = hms(at.saturating_since(self.start));
            println!("  [{done:>4}/{total}] running {busy:>2}, retried {retried:>2}, t=+{t}");
        }
    }
}

/// Compares the run with its forecast and its lower bounds (the last three `bounds`: no
/// schedule beats the largest), then shows what cost time.
fn summarize(graph: &StageGraph, report: &StepReport, bounds: &[(Duration, String)]) {
    let makespan = span(Some(report.started_at), Some(report.finished_at));
    let share = |part: Duration, of: Duration| part.as_millis() * 100 / of.as_millis().max(1);
    let (outcome, took) = (report.outcome, hms(makespan));
    println!("\n{outcome:?} in {took} of virtual time, against:");
    for (bound, what) in bounds {
        println!("  {:>8}  {what}", hms(*bound));
    }
    let floor = bounds[1..].iter().map(|b| b.0).max().unwrap_or_default();
    let took = share(makespan, floor);
    println!("  the run took {took}% of the largest lower bound");

    let attempts: usize = report.stages.iter().map(|s| s.attempts().len()).sum();
    let retries = attempts - report.stages.len();
    // Workers are held by attempts only: not while a stage waits out a backoff.
    let held = |s: &StageReport| -> Duration {
        s.attempts()
            .iter()
            .map(|a| a.finished_at.saturating_since(a.started_at))
            .sum()
    };
    let capacity = makespan * WORKERS as u32;
    let busy = share(report.stages.iter().map(held).sum(), capacity);
    println!("  {attempts} attempts, {retries} of them retries; workers busy {busy}%");

    // A flaky stage costs the worker time of its failed attempts (its backoffs hold no
    // worker, but they do delay everything that depends on it).
    let lost = |s: &StageReport| -> Duration {
        let failed = &s.attempts()[..s.attempts().len().saturating_sub(1)];
        failed
            .iter()
            .map(|a| a.finished_at.saturating_since(a.started_at))
            .sum()
    };
    let mut flaky: Vec<&StageReport> = report
        .stages
        .iter()
        .filter(|s| s.status.is_success() && s.attempts().len() > 1)
        .collect();
    flaky.sort_by(|a, b| lost(b).cmp(&lost(a)).then_with(|| a.id.cmp(&b.id)));
    let (count, total) = (flaky.len(), hms(flaky.iter().map(|s| lost(s)).sum()));
    println!("\n{count} flaky stages passed on a retry, costing {total} of worker time:");
    for stage in flaky.iter().take(8) {
        let reason = stage.attempts().iter().find_map(|a| match &a.status {
            StageStatus::Failed { reason } => Some(reason.as_str()),
            _ => None,
        });
        let (id, n, lost) = (stage.id.as_str(), stage.attempts().len(), hms(lost(stage)));
        let reason = reason.unwrap_or("?");
        println!("  {lost:>8}  {id:<16} {n} attempts, {reason}");
    }
    if count > 8 {
        println!("  … and {} more", count - 8);
    }
    for failed in report.failed() {
        println!("  FAILED {}: {}", failed.id, failed.status);
    }

    // The slowest chain is the critical path as it happened: from the stage that finished
    // last, back through the dependency that finished last. A wait is time the stage was
    // ready but found no free worker (or, for an e2e suite, no free slot). When workers are
    // the bottleneck, as here, the chain is mostly waiting: the engine starts the stage with
    // the longest path ahead of it first, so a test with nothing behind it but the release
    // chain starts last, and sets when the run ends.
    println!("\nslowest chain:  start   finish    wait  stage");
    let at = |t: Option<Timestamp>| hms(span(Some(report.started_at), t));
    for (stage, wait) in slowest_chain(graph, report) {
        let (start, end, wait) = (at(stage.started_at), at(stage.finished_at), hms(wait));
        let note = match stage.attempts().len() {
            1 => String::new(),
            n => format!(" ({n} attempts)"),
        };
        println!("  {start:>8} {end:>8} {wait:>8}  {}{note}", stage.id);
    }
}

/// The time from `start` to `end`, zero if either is missing.
fn span(start: Option<Timestamp>, end: Option<Timestamp>) -> Duration {
    let (Some(start), Some(end)) = (start, end) else {
        return Duration::ZERO;
    };
    end.saturating_since(start)
}

/// The chain of stages that ended the run, first stage first, each with how long it waited
/// between its last dependency finishing and its own start.
fn slowest_chain<'a>(graph: &StageGraph, run: &'a StepReport) -> Vec<(&'a StageReport, Duration)> {
    let by_id: HashMap<_, _> = run.stages.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut chain = Vec::new();
    let mut next = run.stages.iter().max_by_key(|s| s.finished_at);
    while let Some(stage) = next {
        let deps = graph.get(stage.id.as_str()).map_or(&[][..], |s| &s.after);
        let deps = deps.iter().filter_map(|d| by_id.get(d.as_str()).copied());
        next = deps.max_by_key(|d| d.finished_at);
        let ready = next.map_or(Some(run.started_at), |d| d.finished_at);
        chain.push((stage, span(ready, stage.started_at)));
    }
    chain.reverse();
    chain
}

/// How a flaky stage misbehaves.
struct Flake {
    /// How many attempts fail before one passes.
    failures: u32,
    reason: &'static str,
}

/// Splitmix64: a tiny, well-mixed generator, so that a seed always makes the same repository.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    fn pick_in(&mut self, range: RangeInclusive<usize>) -> usize {
        let (lo, hi) = range.into_inner();
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// One of `items`.
    fn pick<'a>(&mut self, items: &'a [String]) -> &'a str {
        &items[self.pick_in(0..=items.len() - 1)]
    }
}

/// Collects stages, drawing their estimates (in whole minutes) and their flakiness. Only
/// the generator knows which stages are flaky, as with flaky tests nobody has tracked down.
struct Generator {
    rng: Rng,
    specs: Vec<StageSpec>,
    flaky: HashMap<String, Flake>,
}

impl Generator {
    fn add(&mut self, spec: StageSpec, minutes: RangeInclusive<usize>) {
        let estimate = Duration::from_secs(60 * self.rng.pick_in(minutes) as u64);
        self.specs.push(spec.estimate(estimate));
    }

    /// Adds a test that is flaky `percent`% of the time. Tests, unlike builds, are retried:
    /// three attempts in all, 30 s then 60 s apart, each delay cut by up to a quarter at
    /// random so that tests broken by one outage do not all come back at the same instant.
    fn test(&mut self, spec: StageSpec, minutes: RangeInclusive<usize>, percent: usize) {
        if self.rng.pick_in(1..=100) <= percent {
            let failures = if self.rng.pick_in(1..=5) == 1 { 2 } else { 1 };
            let reason = FLAKES[self.rng.pick_in(0..=FLAKES.len() - 1)];
            let flake = Flake { failures, reason };
            self.flaky.insert(spec.id.to_string(), flake);
        }
        let (initial, max) = (Duration::from_secs(30), Duration::from_secs(240));
        let backoff = Backoff::Exponential {
            initial,
            factor: 2,
            max,
        };
        let retry = RetryPolicy::attempts(3).backoff(backoff).jitter(25);
        self.add(spec.retry(retry), minutes);
    }
}

/// Generates the repository. The whole merge-request check is one step of the graph (test),
/// which `Engine::run_graph` runs without a release lifecycle around it.
fn generate(seed: u64) -> Generator {
    let (rng, specs) = (Rng(seed), Vec::with_capacity(STAGES));
    let mut g = Generator {
        rng,
        specs,
        flaky: HashMap::new(),
    };
    let stage = |id: &str| StageSpec::test(id);

    // Two long chains: bootstrapping the toolchain every package is built with, and
    // replaying the database migrations the end-to-end suites run against.
    g.add(stage("toolchain/stage0"), 5..=8);
    g.add(stage("toolchain/stage1").after("toolchain/stage0"), 5..=8);
    g.add(stage("toolchain/stage2").after("toolchain/stage1"), 5..=8);
    g.add(stage("db/migrate-01"), 1..=3);
    for n in 2..=12 {
        let previous = format!("db/migrate-{:02}", n - 1);
        g.add(stage(&format!("db/migrate-{n:02}")).after(previous), 1..=3);
    }

    // Packages: each is built after the packages it uses (one from the layer just below,
    // which makes deep chains, and up to two from anywhere lower), then linted, and unit
    // tested in one to four shards.
    let (mut builds, mut checks): (Vec<Vec<String>>, _) = (Vec::new(), Vec::new());
    for (layer, name) in LAYERS.split_whitespace().enumerate() {
        let mut layer_builds = Vec::new();
        for p in 0..PACKAGES_PER_LAYER {
            let mut deps = BTreeSet::from(["toolchain/stage2".to_owned()]);
            if layer > 0 {
                deps = BTreeSet::from([g.rng.pick(&builds[layer - 1]).to_owned()]);
                for _ in 0..g.rng.pick_in(0..=2) {
                    let lower = g.rng.pick_in(0..=layer - 1);
                    deps.insert(g.rng.pick(&builds[lower]).to_owned());
                }
            }
            let build = format!("{name}-{p:02}/build");
            g.add(after_all(stage(&build), deps), 2..=8);
            let lint = format!("{name}-{p:02}/lint");
            g.add(stage(&lint).after(&build), 1..=2);
            checks.push(lint);
            for shard in 1..=g.rng.pick_in(1..=4) {
                let test = format!("{name}-{p:02}/test-{shard}");
                g.test(stage(&test).after(&build), 1..=5, 1);
                checks.push(test);
            }
            layer_builds.push(build);
        }
        builds.push(layer_builds);
    }

    // Integration suites fan in from two to five packages anywhere in the repository, and
    // fill the graph up to its size, leaving room for the e2e suites and the release chain.
    let all_builds = builds.concat();
    let e2e: Vec<&str> = E2E_SUITES.split_whitespace().collect();
    for n in 1..=STAGES - g.specs.len() - e2e.len() - 3 {
        let id = format!("it/{n:04}");
        let fan_in = g.rng.pick_in(2..=5);
        let deps: Vec<&str> = (0..fan_in).map(|_| g.rng.pick(&all_builds)).collect();
        g.test(after_all(stage(&id), deps), 1..=4, 2);
        checks.push(id);
    }

    // End-to-end suites: long, flaky, and two at a time through their group.
    let apps = &builds[builds.len() - 1];
    for suite in e2e {
        let id = format!("e2e/{suite}");
        let (a, b) = (g.rng.pick(apps), g.rng.pick(apps));
        let spec = stage(&id).group("e2e").after("db/migrate-12");
        g.test(spec.after(a).after(b), 8..=18, 25);
        checks.push(id);
    }

    // The release candidate is bundled once every lint and test has passed: one stage with
    // some 1,800 dependencies, a fan-in that ends with a short chain the workers cannot share.
    g.add(after_all(stage("rc/bundle"), checks), 3..=5);
    g.test(stage("rc/smoke").after("rc/bundle"), 2..=4, 0);
    g.add(stage("rc/notes").after("rc/smoke"), 1..=1);
    g
}

/// `spec`, run after every one of `deps`.
fn after_all<S: Into<String>>(spec: StageSpec, deps: impl IntoIterator<Item = S>) -> StageSpec {
    deps.into_iter().fold(spec, StageSpec::after)
}

/// A duration as `h:mm:ss`.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
