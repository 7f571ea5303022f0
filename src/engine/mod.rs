//! Runs the stages of one lifecycle step: the [`Engine`], its [`FailurePolicy`], and the
//! [`StepReport`] it returns.
//!
//! Each stage starts as soon as every dependency in its step has succeeded (dependencies in
//! earlier steps succeeded before this step began); independent stages run concurrently on
//! whatever runtime polls the step. Among ready stages, the one with the longest remaining
//! critical path starts first. The engine uses only `futures`: no runtime is assumed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactRef;
use crate::environment::Environment;
use crate::executor::{Executor, LogLine, Outputs, StageContext, StageOutcome, StageStatus};
use crate::graph::{StageGraph, StageId, Step};
use crate::release::{ReleaseId, Revision};
use crate::time::{Clock, Timestamp};

/// What the engine does when a stage fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Stop at the first failure: start nothing new and cancel (drop) running stages.
    #[default]
    FailFast,
    /// Keep running every stage that does not depend on a failed one.
    ContinueIndependent,
}

/// Runs steps of a stage graph. Cheap to clone; holds configuration only.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    failure_policy: FailurePolicy,
}

impl Engine {
    /// An engine with the default configuration (fail-fast).
    #[must_use]
    pub fn new() -> Self {
        Engine::default()
    }

    /// Sets what happens when a stage fails.
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// The configured failure policy.
    #[must_use]
    pub fn policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// Runs every stage of `step` in `graph`, calling `executor_for(stage index)` to find the
    /// executor of each, and reports what happened. Never fails: failures are in the report.
    #[allow(clippy::too_many_lines)] // One scheduling loop; splitting it would scatter its state.
    pub(crate) async fn run_step<'a>(
        &self,
        run: StepRun<'a>,
        executor_for: &(dyn Fn(usize) -> &'a (dyn Executor) + Sync),
    ) -> StepReport {
        let StepRun {
            graph,
            step,
            release,
            revision,
            artifact,
            environment,
            prior_outputs,
            clock,
        } = run;
        let started_at = clock.now();

        // Stages of this step, and each one's local slot.
        let members: Vec<usize> = (0..graph.len())
            .filter(|&i| graph.spec(i).step == step)
            .collect();
        let mut slot_of = vec![u32::MAX; graph.len()];
        for (slot, &i) in members.iter().enumerate() {
            slot_of[i] = slot as u32;
        }
        let mut waiting_on: Vec<u32> = members
            .iter()
            .map(|&i| {
                graph
                    .deps_of(i)
                    .iter()
                    .filter(|&&d| slot_of[d as usize] != u32::MAX)
                    .count() as u32
            })
            .collect();

        let mut results: Vec<Option<StageReport>> = vec![None; members.len()];
        let mut outputs: Vec<Option<Arc<Outputs>>> = vec![None; members.len()];
        // Max-heap on remaining critical path; ties go to the earlier-added stage.
        let mut ready: BinaryHeap<(u64, Reverse<usize>)> = members
            .iter()
            .enumerate()
            .filter(|&(slot, _)| waiting_on[slot] == 0)
            .map(|(slot, &i)| (graph.priority_of(i), Reverse(slot)))
            .collect();
        let mut running = FuturesUnordered::new();
        let mut started: Vec<Option<Timestamp>> = vec![None; members.len()];
        let mut stopped = false;

        loop {
            while let Some((_, Reverse(slot))) = ready.pop() {
                let i = members[slot];
                let spec = graph.spec(i);
                let inputs = graph
                    .deps_of(i)
                    .iter()
                    .filter_map(|&d| {
                        let d = d as usize;
                        let id = &graph.spec(d).id;
                        let out = match slot_of[d] {
                            u32::MAX => prior_outputs.get(id).cloned(),
                            dep_slot => outputs[dep_slot as usize].clone(),
                        };
                        out.map(|o| (id, o))
                    })
                    .collect();
                let ctx = StageContext {
                    spec,
                    release,
                    revision,
                    artifact,
                    environment,
                    inputs,
                    attempt: 1,
                };
                started[slot] = Some(clock.now());
                let executor = executor_for(i);
                running.push(
                    AssertUnwindSafe(executor.run(ctx))
                        .catch_unwind()
                        .map(move |r| (slot, r)),
                );
            }

            let Some((slot, result)) = running.next().await else {
                break;
            };
            let outcome = match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(error)) => StageOutcome::failure(format!("executor error: {error}")),
                Err(panic) => StageOutcome::failure(format!(
                    "executor panicked: {}",
                    panic_message(panic.as_ref())
                )),
            };
            let succeeded = outcome.status.is_success();
            let i = members[slot];
            if succeeded {
                outputs[slot] = Some(Arc::new(outcome.outputs.clone()));
                for &d in graph.dependents_of(i) {
                    let d_slot = slot_of[d as usize];
                    if d_slot == u32::MAX {
                        continue; // A later step's stage.
                    }
                    let w = &mut waiting_on[d_slot as usize];
                    *w -= 1;
                    if *w == 0 {
                        ready.push((graph.priority_of(d as usize), Reverse(d_slot as usize)));
                    }
                }
            } else if self.failure_policy == FailurePolicy::FailFast {
                stopped = true;
            }
            results[slot] = Some(StageReport::from_outcome(
                graph.spec(i).id.clone(),
                outcome,
                started[slot].unwrap_or(started_at),
                clock.now(),
            ));
            if stopped {
                // Nothing new starts; dropping the futures cancels the stages still running.
                drop(std::mem::take(&mut running));
                break;
            }
        }

        let finished_at = clock.now();
        let stages = results
            .into_iter()
            .enumerate()
            .map(|(slot, r)| {
                r.unwrap_or_else(|| {
                    let status = if started[slot].is_some() {
                        StageStatus::Cancelled
                    } else {
                        StageStatus::Skipped
                    };
                    StageReport {
                        id: graph.spec(members[slot]).id.clone(),
                        status,
                        started_at: started[slot],
                        finished_at: started[slot].map(|_| finished_at),
                        logs: Vec::new(),
                        outputs: Outputs::new(),
                        artifact: None,
                    }
                })
            })
            .collect();
        StepReport {
            step,
            started_at,
            finished_at,
            stages,
        }
    }
}

/// Everything one step run needs besides the executors.
pub(crate) struct StepRun<'a> {
    pub graph: &'a StageGraph,
    pub step: Step,
    pub release: &'a ReleaseId,
    pub revision: &'a Revision,
    pub artifact: Option<&'a ArtifactRef>,
    pub environment: Option<&'a Environment>,
    pub prior_outputs: &'a BTreeMap<StageId, Arc<Outputs>>,
    pub clock: &'a dyn Clock,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// What happened to one stage in a step run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage.
    pub id: StageId,
    /// How it ended.
    #[serde(flatten)]
    pub status: StageStatus,
    /// When it started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended, if it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Its log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Its named outputs.
    #[serde(default, skip_serializing_if = "Outputs::is_empty")]
    pub outputs: Outputs,
    /// The artifact it produced (build stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
}

impl StageReport {
    fn from_outcome(id: StageId, o: StageOutcome, started: Timestamp, finished: Timestamp) -> Self {
        StageReport {
            id,
            status: o.status,
            started_at: Some(started),
            finished_at: Some(finished),
            logs: o.logs,
            outputs: o.outputs,
            artifact: o.artifact,
        }
    }
}

/// What happened in one step run: every stage of the step, in the order they were added to
/// the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step that ran.
    pub step: Step,
    /// When it started.
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// One report per stage of the step.
    pub stages: Vec<StageReport>,
}

impl StepReport {
    /// Whether every stage succeeded.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.stages.iter().all(|s| s.status.is_success())
    }

    /// The stages that failed, in the order they were added.
    pub fn failed(&self) -> impl Iterator<Item = &StageReport> + '_ {
        self.stages
            .iter()
            .filter(|s| matches!(s.status, StageStatus::Failed { .. }))
    }

    /// The report of one stage.
    #[must_use]
    pub fn stage(&self, id: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.id == id)
    }
}
