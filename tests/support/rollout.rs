//! Rollout helpers: a simulated [`Target`] that records every call (with the analysis
//! verdicts the rollout reported, in one log), scripted metrics, and a scripted operator.

// Each test crate that includes this file uses only some of the helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tollgate::environment::EnvironmentName;
use tollgate::gate::{GateContext, MetricSource};
use tollgate::id::{Person, ReleaseId};
use tollgate::rollout::{
    Cause, Choice, Evaluation, Health, Observed, Operator, RolloutEvent, RolloutEventKind,
    RolloutObserver, Target, TargetError, Version, Weight,
};
use tollgate::time::{Clock, ManualClock, Timestamp};

/// One thing in the simulation's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Prepare(EnvironmentName, String),
    Shift(EnvironmentName, u8),
    Replace(EnvironmentName, u32, u32),
    Health(EnvironmentName),
    Promote(EnvironmentName),
    Retire(EnvironmentName),
    Abort(EnvironmentName),
    Hook(EnvironmentName, String),
    /// Not a call: the rollout reported a failed analysis here (see [`SimTarget::observer`]).
    AnalysisFailed,
}

impl Call {
    /// Whether the call moves the candidate forward (more traffic, more instances, promotion).
    pub fn moves_forward(&self) -> bool {
        matches!(
            self,
            Call::Shift(..) | Call::Replace(..) | Call::Promote(_) | Call::Hook(..)
        )
    }
}

#[derive(Debug, Default)]
struct Sim {
    log: Vec<(Timestamp, Call)>,
    envs: BTreeMap<EnvironmentName, Observed>,
    old_side: BTreeMap<EnvironmentName, Version>,
    health: VecDeque<Health>,
    fail_hook: Option<String>,
}

/// A platform in memory: per environment a stable version and a candidate with a weight.
#[derive(Debug, Clone)]
pub struct SimTarget {
    sim: Arc<Mutex<Sim>>,
    clock: ManualClock,
}

impl SimTarget {
    /// A platform where `stable` runs in every environment named in `envs`.
    pub fn new(clock: &ManualClock, stable: &Version, envs: &[&str]) -> Self {
        let mut sim = Sim::default();
        for env in envs {
            sim.envs.insert(
                EnvironmentName::new(*env).unwrap(),
                Observed {
                    stable: Some(stable.clone()),
                    ..Observed::default()
                },
            );
        }
        SimTarget {
            sim: Arc::new(Mutex::new(sim)),
            clock: clock.clone(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> R {
        f(&mut self.sim.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Health answers, in order (then healthy).
    pub fn health_script(&self, answers: impl IntoIterator<Item = Health>) {
        self.with(|s| s.health = answers.into_iter().collect());
    }

    /// The hook called `name` fails.
    pub fn fail_hook(&self, name: &str) {
        self.with(|s| s.fail_hook = Some(name.to_owned()));
    }

    /// Every call so far (and the failed analyses), in order.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.log.iter().map(|(_, c)| c.clone()).collect())
    }

    /// Every call with the clock's time when it was made.
    pub fn timed_calls(&self) -> Vec<(Timestamp, Call)> {
        self.with(|s| s.log.clone())
    }

    /// What runs in `env`.
    pub fn state(&self, env: &str) -> Observed {
        self.with(|s| s.envs[&EnvironmentName::new(env).unwrap()].clone())
    }

    /// The old side kept after a promotion, if any.
    pub fn old_side(&self, env: &str) -> Option<Version> {
        self.with(|s| s.old_side.get(&EnvironmentName::new(env).unwrap()).cloned())
    }

    /// An observer that writes failed analyses into this log, between the calls.
    pub fn observer(&self) -> impl RolloutObserver + use<> {
        let sim = self.clone();
        tollgate::rollout::observer_fn(move |event: &RolloutEvent| {
            if let RolloutEventKind::Analyzed {
                evaluation: Evaluation::Failed { .. },
                ..
            } = &event.kind
            {
                let now = sim.clock.now();
                sim.with(|s| s.log.push((now, Call::AnalysisFailed)));
            }
        })
    }

    fn log(&self, call: Call) {
        let now = self.clock.now();
        self.with(|s| s.log.push((now, call)));
    }

    fn env_mut<R>(
        &self,
        env: &EnvironmentName,
        action: &str,
        f: impl FnOnce(&mut Observed, &mut BTreeMap<EnvironmentName, Version>) -> R,
    ) -> Result<R, TargetError> {
        self.with(|s| match s.envs.get_mut(env) {
            Some(o) => Ok(f(o, &mut s.old_side)),
            None => Err(TargetError {
                action: action.into(),
                environment: env.clone(),
                message: "no such environment".into(),
            }),
        })
    }
}

#[async_trait]
impl Target for SimTarget {
    async fn observe(&self, environment: &EnvironmentName) -> Result<Observed, TargetError> {
        self.env_mut(environment, "observe", |o, _| o.clone())
    }

    async fn prepare(
        &self,
        environment: &EnvironmentName,
        candidate: &Version,
        _config: &BTreeMap<String, String>,
    ) -> Result<(), TargetError> {
        self.log(Call::Prepare(
            environment.clone(),
            candidate.release.to_string(),
        ));
        self.env_mut(environment, "prepare", |o, _| {
            o.candidate = Some((candidate.clone(), Weight::NONE));
        })
    }

    async fn shift(
        &self,
        environment: &EnvironmentName,
        weight: Weight,
    ) -> Result<(), TargetError> {
        self.log(Call::Shift(environment.clone(), weight.get()));
        self.env_mut(environment, "shift", |o, _| {
            if let Some((_, w)) = &mut o.candidate {
                *w = weight;
            }
        })
    }

    async fn replace(
        &self,
        environment: &EnvironmentName,
        done: u32,
        total: u32,
        _surge: u32,
        _unavailable: u32,
    ) -> Result<(), TargetError> {
        self.log(Call::Replace(environment.clone(), done, total));
        self.env_mut(environment, "replace", |o, _| {
            if let Some((_, w)) = &mut o.candidate {
                *w = Weight::percent((done * 100 / total.max(1)) as u8).unwrap();
            }
        })
    }

    async fn health(&self, environment: &EnvironmentName) -> Result<Health, TargetError> {
        self.log(Call::Health(environment.clone()));
        Ok(self.with(|s| s.health.pop_front().unwrap_or(Health::Healthy)))
    }

    async fn promote(&self, environment: &EnvironmentName) -> Result<(), TargetError> {
        self.log(Call::Promote(environment.clone()));
        self.env_mut(environment, "promote", |o, old| {
            if let Some((candidate, _)) = o.candidate.take() {
                if let Some(previous) = o.stable.replace(candidate) {
                    old.insert(environment.clone(), previous);
                }
            }
        })
    }

    async fn retire(&self, environment: &EnvironmentName) -> Result<(), TargetError> {
        self.log(Call::Retire(environment.clone()));
        self.env_mut(environment, "retire", |_, old| {
            old.remove(environment);
        })
    }

    async fn abort(&self, environment: &EnvironmentName) -> Result<(), TargetError> {
        self.log(Call::Abort(environment.clone()));
        self.env_mut(environment, "abort", |o, _| o.candidate = None)
    }

    async fn run_hook(&self, environment: &EnvironmentName, hook: &str) -> Result<(), TargetError> {
        self.log(Call::Hook(environment.clone(), hook.to_owned()));
        if self.with(|s| s.fail_hook.as_deref() == Some(hook)) {
            return Err(TargetError {
                action: format!("run `{hook}`"),
                environment: environment.clone(),
                message: "the hook failed".into(),
            });
        }
        Ok(())
    }
}

/// Metric values in order (`None`: no data); once used up, every sample is `0.0`.
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    values: Arc<Mutex<VecDeque<Option<f64>>>>,
    taken: Arc<Mutex<Vec<Timestamp>>>,
}

impl Scripted {
    pub fn new(values: impl IntoIterator<Item = Option<f64>>) -> Self {
        Scripted {
            values: Arc::new(Mutex::new(values.into_iter().collect())),
            taken: Arc::default(),
        }
    }

    /// When each sample was taken (the context's time).
    pub fn taken(&self) -> Vec<Timestamp> {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl MetricSource for Scripted {
    async fn sample(&self, _query: &str, ctx: &GateContext<'_>) -> Option<f64> {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ctx.now());
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Some(0.0))
    }
}

/// A person who says go at a set time, and decides a frozen rollout one way or not at all.
#[derive(Debug, Clone)]
pub struct People {
    pub clock: ManualClock,
    pub go_at: Timestamp,
    pub decision: Option<Choice>,
}

#[async_trait]
impl Operator for People {
    async fn go(&self, _env: &EnvironmentName, _release: &ReleaseId, _step: usize) -> Person {
        self.clock.sleep_until(self.go_at).await;
        Person::new("rita").unwrap()
    }

    async fn decide(
        &self,
        _env: &EnvironmentName,
        _release: &ReleaseId,
        _cause: &Cause,
    ) -> Option<(Choice, Person)> {
        self.decision.map(|c| (c, Person::new("ines").unwrap()))
    }
}
