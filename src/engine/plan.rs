//! Dry runs: [`Plan`], what the engine would do with a step, without running anything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use serde::Serialize;

use super::Engine;
use crate::graph::{StageGraph, StageId, Step};

/// One stage in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStage {
    /// The stage.
    pub id: StageId,
    /// Its wave: 0 for stages with no dependency in the step, else one more than the latest
    /// wave among its dependencies.
    pub wave: usize,
    /// When it would start, from the start of the step, by the stages' estimates.
    pub start: Duration,
    /// When it would end.
    pub finish: Duration,
}

/// What the engine would run for one step, in start order, with the waves and estimated
/// times (stages without an estimate count as taking no time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The step.
    pub step: Step,
    /// The worker limit assumed.
    pub workers: Option<usize>,
    /// The stages in the order they would start.
    pub stages: Vec<PlannedStage>,
    /// When the last stage would end.
    pub makespan: Duration,
}

impl Plan {
    /// The stages of each wave, in start order within the wave.
    #[must_use]
    pub fn waves(&self) -> Vec<Vec<&StageId>> {
        let count = self.stages.iter().map(|s| s.wave + 1).max().unwrap_or(0);
        let mut waves = vec![Vec::new(); count];
        for stage in &self.stages {
            waves[stage.wave].push(&stage.id);
        }
        waves
    }
}

impl Engine {
    /// Plans `step` of `graph` with this engine's worker limit and ready-stage order,
    /// simulating each stage for its estimate; nothing runs. Group limits, retries and
    /// failures are not simulated; finally stages come after the others.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::engine::Engine;
    /// use tollgate::graph::{StageGraph, StageSpec, Step};
    ///
    /// let secs = Duration::from_secs;
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::test("long").estimate(secs(10)))
    ///     .stage(StageSpec::test("short-a").estimate(secs(3)))
    ///     .stage(StageSpec::test("short-b").estimate(secs(3)))
    ///     .build()?;
    /// let plan = Engine::builder().workers(2).build()?.plan(&graph, Step::Test);
    /// assert_eq!(plan.stages[0].id, "long"); // the longest path starts first
    /// assert_eq!(plan.makespan, secs(10));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn plan(&self, graph: &StageGraph, step: Step) -> Plan {
        let members: Vec<usize> = (0..graph.len())
            .filter(|&i| graph.spec(i).step == step)
            .collect();
        let mut slot_of = vec![u32::MAX; graph.len()];
        for (slot, &i) in members.iter().enumerate() {
            slot_of[i] = slot as u32;
        }
        let mut wave = vec![0usize; members.len()];
        let mut finish_at = vec![Duration::ZERO; members.len()];
        let mut stages = Vec::with_capacity(members.len());
        let workers = self.workers.unwrap_or(usize::MAX);
        let mut clock = Duration::ZERO;

        for finally in [false, true] {
            let in_phase = |i: usize| graph.spec(i).finally == finally;
            let mut waiting: Vec<u32> = members
                .iter()
                .map(|&i| {
                    graph
                        .deps_of(i)
                        .iter()
                        .filter(|&&d| slot_of[d as usize] != u32::MAX && in_phase(d as usize))
                        .count() as u32
                })
                .collect();
            let mut ready: BinaryHeap<(u64, Reverse<usize>)> = members
                .iter()
                .enumerate()
                .filter(|&(slot, &i)| in_phase(i) && waiting[slot] == 0)
                .map(|(slot, &i)| (graph.priority_of(i), Reverse(slot)))
                .collect();
            // Running stages by finish time (then slot, for determinism).
            let mut running: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
            loop {
                while running.len() < workers {
                    let Some((_, Reverse(slot))) = ready.pop() else {
                        break;
                    };
                    let i = members[slot];
                    // Saturating, as the critical path does: estimates along a chain may pass
                    // `Duration::MAX` (a spec can say anything).
                    let finish =
                        clock.saturating_add(graph.spec(i).estimate.unwrap_or(Duration::ZERO));
                    finish_at[slot] = finish;
                    running.push(Reverse((finish, slot)));
                    stages.push(PlannedStage {
                        id: graph.spec(i).id.clone(),
                        wave: wave[slot],
                        start: clock,
                        finish,
                    });
                }
                let Some(Reverse((at, slot))) = running.pop() else {
                    break;
                };
                clock = clock.max(at);
                let i = members[slot];
                for &d in graph.dependents_row(i) {
                    let d_slot = slot_of[d as usize];
                    if d_slot == u32::MAX || !in_phase(d as usize) {
                        continue;
                    }
                    let d_slot = d_slot as usize;
                    wave[d_slot] = wave[d_slot].max(wave[slot] + 1);
                    waiting[d_slot] -= 1;
                    if waiting[d_slot] == 0 {
                        ready.push((graph.priority_of(d as usize), Reverse(d_slot)));
                    }
                }
            }
            if !finally {
                // Finally stages start after every ordinary stage, in wave order after them.
                let last_wave = stages.iter().map(|s| s.wave + 1).max().unwrap_or(0);
                for (slot, &i) in members.iter().enumerate() {
                    if graph.spec(i).finally {
                        wave[slot] = last_wave;
                    }
                }
            }
        }
        let makespan = finish_at.iter().copied().max().unwrap_or(Duration::ZERO);
        Plan {
            step,
            workers: self.workers,
            stages,
            makespan,
        }
    }
}
