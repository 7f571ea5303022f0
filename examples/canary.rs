//! Canary releases on a simulated fleet: one good release promoted step by step, one bad
//! release rolled back automatically the moment its error rate crosses the line, and one
//! whose database migration has already run when it goes wrong, which freezes instead of
//! rolling back and asks a person. Each is printed as a timeline.
//!
//! Run with `cargo run --example canary`. Everything runs in virtual time: the pauses last
//! minutes on the pipeline's clock and microseconds on yours.
//!
//! The ideas on show: *deploying is not the decision here, the metrics are*. The deploy
//! stage of a continuous deployment pipeline is a [`Rollout`]: the new version takes 10 % of
//! the traffic, the error rate is sampled every minute while it soaks, then 50 %, then all of
//! it. When a sample is bad the rollout aborts at that sample (traffic back on the stable
//! version, no further step, no second opinion). A *forward-only* step (a migration) is a
//! point of no return: after it, rolling back would run old code against a new schema, so
//! the rollout freezes where it is and waits for a person.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tollgate::environment::EnvironmentName;
use tollgate::executor::from_fn;
use tollgate::gate::{GateContext, MetricSource, Threshold};
use tollgate::prelude::*;
use tollgate::rollout::{
    Analysis, Canary, Health, MetricCheck, Observed, Pause, Rollout, RolloutEvent,
    RolloutEventKind, Strategy, Target, TargetError, Version, Weight, observer_fn,
};
use tollgate::time::{Clock, ManualClock, Timestamp, run_virtual};

/// The fleet: what runs in production, the candidate and its share of the traffic, and the
/// schema version the database is at.
#[derive(Debug, Default)]
struct Fleet {
    observed: Observed,
    schema: u32,
    /// When the candidate came up.
    since: Timestamp,
}

/// The simulated platform, shared by the target and the metric source.
#[derive(Debug, Clone)]
struct Sim {
    fleet: Arc<Mutex<Fleet>>,
    clock: ManualClock,
}

impl Sim {
    fn with<R>(&self, f: impl FnOnce(&mut Fleet) -> R) -> R {
        f(&mut self.fleet.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl Target for Sim {
    async fn observe(&self, _env: &EnvironmentName) -> Result<Observed, TargetError> {
        Ok(self.with(|f| f.observed.clone()))
    }

    async fn prepare(
        &self,
        _env: &EnvironmentName,
        candidate: &Version,
        _config: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        let now = self.clock.now();
        self.with(|f| {
            f.observed.candidate = Some((candidate.clone(), Weight::NONE));
            f.since = now;
        });
        Ok(())
    }

    async fn shift(&self, _env: &EnvironmentName, weight: Weight) -> Result<(), TargetError> {
        self.with(|f| {
            if let Some((_, w)) = &mut f.observed.candidate {
                *w = weight;
            }
        });
        Ok(())
    }

    async fn replace(
        &self,
        _env: &EnvironmentName,
        _done: u32,
        _total: u32,
        _surge: u32,
        _unavailable: u32,
    ) -> Result<(), TargetError> {
        Ok(())
    }

    async fn health(&self, _env: &EnvironmentName) -> Result<Health, TargetError> {
        Ok(Health::Healthy)
    }

    async fn promote(&self, _env: &EnvironmentName) -> Result<(), TargetError> {
        self.with(|f| {
            if let Some((candidate, _)) = f.observed.candidate.take() {
                f.observed.stable = Some(candidate);
            }
        });
        Ok(())
    }

    async fn abort(&self, _env: &EnvironmentName) -> Result<(), TargetError> {
        self.with(|f| f.observed.candidate = None);
        Ok(())
    }

    async fn run_hook(&self, _env: &EnvironmentName, hook: &str) -> Result<(), TargetError> {
        if hook == "migrate-db" {
            self.with(|f| f.schema += 1);
        }
        Ok(())
    }
}

/// The error rate each version's instances have on their own, `minutes` after they came up:
/// 1.1 is fine, 1.2 leaks and gets worse by 3 points a minute, 1.3 is fine at low traffic
/// and falls over under load.
fn error_rate(release: &str, weight: Weight, minutes: f64) -> f64 {
    match release {
        "1.2" => 0.002 + 0.03 * minutes,
        "1.3" if weight.get() >= 50 => 0.05,
        _ => 0.002,
    }
}

/// The monitoring system: the error rate over all requests, mixed by traffic share.
#[async_trait]
impl MetricSource for Sim {
    async fn sample(&self, _query: &str, ctx: &GateContext<'_>) -> Option<f64> {
        let (observed, since) = self.with(|f| (f.observed.clone(), f.since));
        let minutes = ctx.now().saturating_since(since).as_secs_f64() / 60.0;
        let stable = observed
            .stable
            .as_ref()
            .map_or(0.002, |v| error_rate(v.release.as_str(), Weight::ALL, 0.0));
        let rate = match &observed.candidate {
            None => stable,
            Some((v, w)) => {
                let share = f64::from(w.get()) / 100.0;
                share * error_rate(v.release.as_str(), *w, minutes) + (1.0 - share) * stable
            }
        };
        // Monitoring reports four decimals.
        Some((rate * 10_000.0).round() / 10_000.0)
    }
}

fn weight(percent: u8) -> Weight {
    Weight::percent(percent).expect("a percentage")
}

fn main() -> Result<(), Error> {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let sim = Sim {
        fleet: Arc::default(),
        clock: clock.clone(),
    };
    let events: Arc<Mutex<Vec<RolloutEvent>>> = Arc::default();

    let canary = Canary::new()
        .weight(weight(10))
        .pause(Pause::For(Duration::from_secs(5 * 60)))
        .forward_only("migrate-db")
        .weight(weight(50))
        .pause(Pause::For(Duration::from_secs(10 * 60)));
    let analysis = Analysis::new([MetricCheck::new(
        "error-rate",
        "http_5xx_ratio",
        Threshold::AtMost(0.01),
    )])
    .interval(Duration::from_secs(60));
    let seen = Arc::clone(&events);
    let rollout = Rollout::new(Strategy::Canary(canary), sim.clone())
        .analysis(analysis, sim.clone())
        .observer(observer_fn(move |e: &RolloutEvent| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.clone());
        }));

    let compile = from_fn(|ctx| {
        Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes(
            "shop",
            format!("shop {}", ctx.release()).as_bytes(),
        )))
    });
    let pipeline = Pipeline::<Deployment>::builder("shop")
        .clock(clock.clone())
        .stage(Stage::build("compile").run(compile))
        .stage(
            Stage::test("unit")
                .after("compile")
                .run(from_fn(|_| Ok(StageOutcome::success()))),
        )
        .stage(Stage::stage("staging").run(from_fn(|_| Ok(StageOutcome::success()))))
        .stage(Stage::deploy("canary").run(rollout))
        .build()?;

    println!("canary: 10% for 5m, migrate the database (forward-only), 50% for 10m, then all");
    println!("analysis: error rate <= 1% every minute, in the background of every pause\n");
    for id in ["1.1", "1.2", "1.3"] {
        let started = clock.now();
        let result = run_virtual(&clock, async {
            let release = pipeline.start(id, Revision::new(format!("rev-{id}"), "dana")?)?;
            let built = release.build(&pipeline).await?;
            let artifact = built.artifact().clone();
            let staged = built
                .test(&pipeline, &artifact)
                .await?
                .stage(&pipeline, &artifact)
                .await?;
            let approved = staged.auto_approve(&pipeline).await?;
            Ok::<_, Error>(approved.deploy(&pipeline, &artifact).await)
        })?;
        println!("release {id}");
        for event in events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            if matches!(event.kind, RolloutEventKind::StepFinished { .. }) {
                continue;
            }
            let at = event.at.saturating_since(started).as_secs();
            println!("  +{:02}:{:02}  {}", at / 60, at % 60, event.kind);
        }
        match result {
            Ok(live) => println!("  => deployed ({:?})", live.state()),
            Err(failed) => println!("  => not deployed: {}", failed.error()),
        }
        let observed = sim.with(|f| (f.observed.clone(), f.schema));
        println!(
            "  production: stable {}, candidate {}, schema v{}\n",
            observed
                .0
                .stable
                .map_or("none".into(), |v| v.release.to_string()),
            observed
                .0
                .candidate
                .map_or("none".into(), |(v, w)| format!("{} at {w}", v.release)),
            observed.1,
        );
    }
    Ok(())
}
