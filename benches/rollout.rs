//! Rollouts: how fast a failed analysis puts traffic back on the stable version, and what a
//! rollout step costs.
//!
//! - **abort latency, in virtual time** (printed first, deterministic): canaries of 10 %,
//!   25 %, 50 % steps with ten-minute pauses sampled every minute, whose error rate goes bad
//!   at sample k (k = 1, 5, 12, 30). For each: the virtual time from the failing sample to
//!   `Target::abort`, and the target calls and analysis evaluations after the failing
//!   sample. One evaluation, then the abort: 0 ms, 1 call, 0 evaluations.
//! - **cost per step** (criterion): a 100-step canary (weights 1 % … 100 %, each followed by
//!   one analysis evaluation of one check, no pauses) against a target and a metric source
//!   that do nothing, per step; beside it a hand-written lower bound making the same calls
//!   (prepare, then per step `shift` and one `sample` checked against the threshold, then
//!   `promote`) in a plain loop.
//!
//! Run with `cargo bench --bench rollout`; a table of medians and the ratio is printed last.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use futures::executor::block_on;
use tollgate::environment::EnvironmentName;
use tollgate::executor::from_fn;
use tollgate::gate::{GateContext, MetricSource, Move, Threshold};
use tollgate::prelude::*;
use tollgate::rollout::{
    Analysis, Canary, Health, MetricCheck, Observed, Outcome, Pause, Rollout, Strategy, Target,
    TargetError, Version, Weight,
};
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

const STEPS: u8 = 100;

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

/// A target that counts its calls and stamps each with the clock's time.
#[derive(Clone)]
struct Counting {
    calls: Arc<Mutex<Vec<(Timestamp, &'static str)>>>,
    clock: ManualClock,
}

impl Counting {
    fn log(&self, what: &'static str) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.clock.now(), what));
    }
}

#[async_trait]
impl Target for Counting {
    async fn observe(&self, _: &EnvironmentName) -> Result<Observed, TargetError> {
        Ok(Observed::default())
    }
    async fn prepare(
        &self,
        _: &EnvironmentName,
        _: &Version,
        _: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        self.log("prepare");
        Ok(())
    }
    async fn shift(&self, _: &EnvironmentName, _: Weight) -> Result<(), TargetError> {
        self.log("shift");
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
        self.log("replace");
        Ok(())
    }
    async fn health(&self, _: &EnvironmentName) -> Result<Health, TargetError> {
        self.log("health");
        Ok(Health::Healthy)
    }
    async fn promote(&self, _: &EnvironmentName) -> Result<(), TargetError> {
        self.log("promote");
        Ok(())
    }
    async fn abort(&self, _: &EnvironmentName) -> Result<(), TargetError> {
        self.log("abort");
        Ok(())
    }
}

/// Good samples until the `bad_at`-th (from 1), bad from then on; each sample is written
/// into the target's log, so the log orders samples and calls as they happened.
struct GoesBad {
    taken: AtomicU64,
    bad_at: u64,
    log: Counting,
}

#[async_trait]
impl MetricSource for GoesBad {
    async fn sample(&self, _: &str, _: &GateContext<'_>) -> Option<f64> {
        let n = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        self.log.log("sample");
        Some(if n >= self.bad_at { 0.5 } else { 0.001 })
    }
}

/// A target and a metric source that do nothing, for the cost per step.
struct Nothing;

#[async_trait]
impl Target for Nothing {
    async fn observe(&self, _: &EnvironmentName) -> Result<Observed, TargetError> {
        Ok(Observed::default())
    }
    async fn prepare(
        &self,
        _: &EnvironmentName,
        c: &Version,
        _: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        black_box(c);
        Ok(())
    }
    async fn shift(&self, _: &EnvironmentName, w: Weight) -> Result<(), TargetError> {
        black_box(w);
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

#[async_trait]
impl MetricSource for Nothing {
    async fn sample(&self, q: &str, _: &GateContext<'_>) -> Option<f64> {
        black_box(q);
        Some(0.001)
    }
}

fn check() -> MetricCheck {
    MetricCheck::new("error-rate", "errors", Threshold::AtMost(0.01))
}

/// A staged release with an artifact, on `clock`.
fn release(clock: &ManualClock) -> AnyRelease {
    let ok = || from_fn(|_| Ok(StageOutcome::success()));
    let pipeline = Pipeline::<Deployment>::builder("bench")
        .clock(clock.clone())
        .stage(Stage::build("compile").run(from_fn(|_| {
            Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", b"app")))
        })))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .expect("valid pipeline");
    block_on(async {
        let built = pipeline
            .start("r1", Revision::new("abc", "dana").expect("valid"))
            .expect("valid id")
            .build(&pipeline)
            .await
            .expect("builds");
        let artifact = built.artifact().clone();
        let tested = built.test(&pipeline, &artifact).await.expect("tests");
        tested
            .stage(&pipeline, &artifact)
            .await
            .expect("stages")
            .record()
            .clone()
    })
}

/// The abort latency table, in virtual time.
fn abort_latency() {
    println!("abort latency in virtual time (canary 10/25/50 %, 10 min pauses, a sample a minute)");
    println!(
        "| bad from sample | failing sample at | abort at | latency | target calls after it | samples after it |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for bad_at in [1u64, 5, 12, 30] {
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        let start = clock.now();
        let release = release(&clock);
        let target = Counting {
            calls: Arc::default(),
            clock: clock.clone(),
        };
        let pause = Pause::For(Duration::from_secs(600));
        let canary = Canary::new()
            .weight(Weight::percent(10).expect("valid"))
            .pause(pause)
            .weight(Weight::percent(25).expect("valid"))
            .pause(pause)
            .weight(Weight::percent(50).expect("valid"))
            .pause(pause);
        let rollout = Rollout::new(Strategy::Canary(canary), target.clone()).analysis(
            Analysis::new([check()]).interval(Duration::from_secs(60)),
            GoesBad {
                taken: AtomicU64::new(0),
                bad_at,
                log: target.clone(),
            },
        );
        let env = Environment::new("production").expect("valid");
        let report = run_virtual(&clock, rollout.run(&release, &env, &clock)).expect("runs");
        assert!(matches!(report.outcome, Outcome::RolledBack { .. }));
        let log = target.calls.lock().unwrap_or_else(PoisonError::into_inner);
        // The failing sample is the `bad_at`-th; everything the log holds after it happened
        // after it.
        let failing = log
            .iter()
            .enumerate()
            .filter(|(_, (_, what))| *what == "sample")
            .nth(usize::try_from(bad_at - 1).expect("small"))
            .map(|(i, _)| i)
            .expect("the failing sample");
        let failed_at = log[failing].0;
        let after = &log[failing + 1..];
        let calls_after: Vec<&str> = after
            .iter()
            .filter(|(_, what)| *what != "sample")
            .map(|(_, what)| *what)
            .collect();
        let samples_after = after.len() - calls_after.len();
        let abort_at = after
            .iter()
            .find(|(_, what)| *what == "abort")
            .map(|(at, _)| *at)
            .expect("aborted after the failing sample");
        println!(
            "| {bad_at} | +{}s | +{}s | {} ms | {} ({}) | {samples_after} |",
            failed_at.saturating_since(start).as_secs(),
            abort_at.saturating_since(start).as_secs(),
            abort_at.saturating_since(failed_at).as_millis(),
            calls_after.len(),
            calls_after.join(", "),
        );
        assert_eq!(calls_after, ["abort"]);
        assert_eq!(samples_after, 0);
        assert_eq!(report.evaluations, bad_at);
    }
    println!();
}

fn bench_steps(criterion: &mut Criterion) {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let release = release(&clock);
    let env = Environment::new("production").expect("valid");
    let canary = (1..=STEPS).fold(Canary::new(), |c, w| {
        c.weight(Weight::percent(w).expect("valid"))
    });
    let rollout =
        Rollout::new(Strategy::Canary(canary), Nothing).analysis(Analysis::new([check()]), Nothing);
    let name = "rollout/100 steps";
    criterion.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            block_on(async {
                for _ in 0..iters {
                    let report = rollout.run(&release, &env, &clock).await.expect("runs");
                    assert_eq!(report.outcome, Outcome::Promoted);
                    black_box(report);
                }
            });
            let took = start.elapsed();
            record(name, took, iters * u64::from(STEPS));
            took
        });
    });
    // The lower bound: the same platform and metric calls in a plain loop.
    let floor = "floor/100 steps";
    let env_name = env.name().clone();
    let candidate = Version {
        release: release.id().clone(),
        digest: release.artifact().expect("an artifact").digest.clone(),
    };
    let config = BTreeMap::new();
    let threshold = Threshold::AtMost(0.01);
    criterion.bench_function(floor, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            block_on(async {
                for _ in 0..iters {
                    Nothing
                        .prepare(&env_name, &candidate, &config)
                        .await
                        .expect("ok");
                    for w in 1..=STEPS {
                        Nothing
                            .shift(&env_name, Weight::percent(w).expect("valid"))
                            .await
                            .expect("ok");
                        let ctx = GateContext::new(&release, Move::Deploy, &env, clock.now())
                            .with_clock(&clock);
                        let value = Nothing.sample("errors", &ctx).await;
                        assert!(value.is_some_and(|v| threshold.holds(v)));
                    }
                    Nothing.promote(&env_name).await.expect("ok");
                }
            });
            let took = start.elapsed();
            record(floor, took, iters * u64::from(STEPS));
            took
        });
    });
}

/// The lower bound again, also making the events a rollout tells for each step (step started,
/// step finished, the analysis step started, its evaluation, finished) and keeping them, as
/// the rollout's report does: where the rollout's time per step goes.
fn bench_floor_with_events(criterion: &mut Criterion) {
    use tollgate::rollout::{Evaluation, RolloutEvent, RolloutEventKind, Step};
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let release = release(&clock);
    let env = Environment::new("production").expect("valid");
    let env_name = env.name().clone();
    let candidate = Version {
        release: release.id().clone(),
        digest: release.artifact().expect("an artifact").digest.clone(),
    };
    let config = BTreeMap::new();
    let threshold = Threshold::AtMost(0.01);
    let name = "floor+events/100 steps";
    let event = |kind: RolloutEventKind| RolloutEvent {
        at: clock.now(),
        release: release.id().clone(),
        environment: env_name.clone(),
        kind,
    };
    criterion.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            block_on(async {
                for _ in 0..iters {
                    let mut events = Vec::new();
                    Nothing
                        .prepare(&env_name, &candidate, &config)
                        .await
                        .expect("ok");
                    for w in 1..=STEPS {
                        let weight = Weight::percent(w).expect("valid");
                        let index = usize::from(w) * 2;
                        events.push(event(RolloutEventKind::StepStarted {
                            index,
                            step: Step::SetWeight(weight),
                        }));
                        Nothing.shift(&env_name, weight).await.expect("ok");
                        events.push(event(RolloutEventKind::StepFinished { index }));
                        events.push(event(RolloutEventKind::StepStarted {
                            index: index + 1,
                            step: Step::Analyze,
                        }));
                        let ctx = GateContext::new(&release, Move::Deploy, &env, clock.now())
                            .with_clock(&clock);
                        let value = Nothing.sample("errors", &ctx).await;
                        assert!(value.is_some_and(|v| threshold.holds(v)));
                        events.push(event(RolloutEventKind::Analyzed {
                            index: index + 1,
                            evaluation: Evaluation::Passed,
                            background: false,
                        }));
                        events.push(event(RolloutEventKind::StepFinished { index: index + 1 }));
                    }
                    Nothing.promote(&env_name).await.expect("ok");
                    black_box(events);
                }
            });
            let took = start.elapsed();
            record(name, took, iters * u64::from(STEPS));
            took
        });
    });
}

fn main() {
    abort_latency();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_steps(&mut criterion);
    bench_floor_with_events(&mut criterion);
    criterion.final_summary();
    let (Some(run), Some(floor)) = (median("rollout/100 steps"), median("floor/100 steps")) else {
        return;
    };
    println!("| figure | per step |");
    println!("|---|---:|");
    println!("| rollout (median of the recorded samples) | {run:?} |");
    println!("| lower bound (median of the recorded samples) | {floor:?} |");
    #[allow(clippy::cast_precision_loss)] // Nanoseconds of one step: far below 2^52.
    let ratio = run.as_nanos() as f64 / floor.as_nanos().max(1) as f64;
    println!("| rollout / lower bound | {ratio:.2} |");
    if let Some(with_events) = median("floor+events/100 steps") {
        #[allow(clippy::cast_precision_loss)] // As above.
        let ratio = run.as_nanos() as f64 / with_events.as_nanos().max(1) as f64;
        println!("| lower bound with the same events (median) | {with_events:?} |");
        println!("| rollout / lower bound with events | {ratio:.2} |");
    }
}
