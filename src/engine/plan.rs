//! Dry runs: [`Plan`], what the engine would do with a step, without running anything.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
    /// Plans `step` of `graph` with this engine's worker and group limits and ready-stage
    /// order, simulating each stage for its estimate; nothing runs. Retries and failures
    /// are not simulated; finally stages come after the others.
    ///
    /// The plan follows the scheduler's own rules, so a run in which every stage takes
    /// exactly its estimate (and none fails) starts and ends every stage when the plan says:
    /// stages that end at the same instant are all settled before free workers are handed
    /// out, by the longest remaining critical path (then the order of the graph); a full
    /// group holds its stage back; a stage without an estimate finishes as it starts.
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
        let mut sim = Simulation {
            graph,
            members: &members,
            slot_of: &slot_of,
            wave: vec![0usize; members.len()],
            finish_at: vec![Duration::ZERO; members.len()],
            stages: Vec::with_capacity(members.len()),
            clock: Duration::ZERO,
            waiting: Vec::new(),
            ready: BinaryHeap::new(),
            group_running: HashMap::new(),
            finally: false,
        };
        let workers = self.workers.unwrap_or(usize::MAX);

        for finally in [false, true] {
            sim.begin(finally);
            // Running stages by finish time (then slot, for determinism).
            let mut running: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
            let mut held_back = Vec::new();
            loop {
                // Hands out free workers as the run does: by priority, a stage whose group
                // is full held back until the next round, a stage that takes no time
                // finished as it starts (its worker free again at once).
                while running.len() < workers {
                    let Some((_, Reverse(slot))) = sim.ready.pop() else {
                        break;
                    };
                    let group = graph.spec(members[slot]).group.as_deref();
                    if !sim.enter(self, group) {
                        held_back.push(slot);
                        continue;
                    }
                    let finish = sim.start(slot);
                    if finish == sim.clock {
                        sim.settle(slot, group);
                    } else {
                        running.push(Reverse((finish, slot)));
                    }
                }
                for slot in held_back.drain(..) {
                    sim.queue(slot);
                }
                let Some(&Reverse((at, _))) = running.peek() else {
                    break;
                };
                // Every stage that finishes at this instant is settled before any worker is
                // handed out again, as the run settles every attempt that has finished.
                sim.clock = sim.clock.max(at);
                while let Some(&Reverse((when, slot))) = running.peek() {
                    if when > at {
                        break;
                    }
                    running.pop();
                    let group = graph.spec(members[slot]).group.as_deref();
                    sim.settle(slot, group);
                }
            }
            if !finally {
                // Finally stages start after every ordinary stage, in wave order after them.
                let last_wave = sim.stages.iter().map(|s| s.wave + 1).max().unwrap_or(0);
                for (slot, &i) in members.iter().enumerate() {
                    if graph.spec(i).finally {
                        sim.wave[slot] = last_wave;
                    }
                }
            }
        }
        let Simulation {
            finish_at, stages, ..
        } = sim;
        let makespan = finish_at.iter().copied().max().unwrap_or(Duration::ZERO);
        Plan {
            step,
            workers: self.workers,
            stages,
            makespan,
        }
    }
}

/// The state of a dry run: the scheduler's rules applied to estimates instead of executors.
struct Simulation<'a> {
    graph: &'a StageGraph,
    members: &'a [usize],
    /// The slot of each graph index, or `u32::MAX` outside the step.
    slot_of: &'a [u32],
    wave: Vec<usize>,
    finish_at: Vec<Duration>,
    stages: Vec<PlannedStage>,
    /// The simulated time.
    clock: Duration,
    /// Dependencies inside the phase still to finish, per slot.
    waiting: Vec<u32>,
    /// Ready stages, ordered as the engine's ready queue orders them.
    ready: BinaryHeap<(u64, Reverse<usize>)>,
    /// Stages of each limited group under way.
    group_running: HashMap<&'a str, usize>,
    /// Whether the phase is the finally one.
    finally: bool,
}

impl<'a> Simulation<'a> {
    /// Starts the phase of the finally stages (`finally`) or of the others: counts their
    /// dependencies in the phase and queues those without any.
    fn begin(&mut self, finally: bool) {
        let graph = self.graph;
        self.finally = finally;
        let in_phase = |i: usize| graph.spec(i).finally == finally;
        self.waiting = self
            .members
            .iter()
            .map(|&i| {
                graph
                    .deps_of(i)
                    .iter()
                    .filter(|&&d| self.slot_of[d as usize] != u32::MAX && in_phase(d as usize))
                    .count() as u32
            })
            .collect();
        for (slot, &i) in self.members.iter().enumerate() {
            if in_phase(i) && self.waiting[slot] == 0 {
                self.queue(slot);
            }
        }
    }

    fn queue(&mut self, slot: usize) {
        let i = self.members[slot];
        self.ready.push((self.graph.priority_of(i), Reverse(slot)));
    }

    /// Takes a place in `group` if the engine limits it, as the run does; whether there was
    /// one.
    fn enter(&mut self, engine: &Engine, group: Option<&'a str>) -> bool {
        let Some(group) = group else { return true };
        let Some(&limit) = engine.group_limits.get(group) else {
            return true;
        };
        let count = self.group_running.entry(group).or_insert(0);
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    /// Starts the stage in `slot` now; returns when it finishes.
    fn start(&mut self, slot: usize) -> Duration {
        let i = self.members[slot];
        let spec = self.graph.spec(i);
        // Saturating, as the critical path does: estimates along a chain may pass
        // `Duration::MAX` (a spec can say anything).
        let finish = self
            .clock
            .saturating_add(spec.estimate.unwrap_or(Duration::ZERO));
        self.finish_at[slot] = finish;
        self.stages.push(PlannedStage {
            id: spec.id.clone(),
            wave: self.wave[slot],
            start: self.clock,
            finish,
        });
        finish
    }

    /// The stage in `slot` (of `group`) finished: gives its group place back and queues the
    /// dependents it was the last to wait for.
    fn settle(&mut self, slot: usize, group: Option<&str>) {
        if let Some(count) = group.and_then(|g| self.group_running.get_mut(g)) {
            *count -= 1;
        }
        let graph = self.graph;
        let finally = self.finally;
        for &d in graph.dependents_row(self.members[slot]) {
            let d_slot = self.slot_of[d as usize];
            if d_slot == u32::MAX || graph.spec(d as usize).finally != finally {
                continue;
            }
            let d_slot = d_slot as usize;
            self.wave[d_slot] = self.wave[d_slot].max(self.wave[slot] + 1);
            self.waiting[d_slot] -= 1;
            if self.waiting[d_slot] == 0 {
                self.queue(d_slot);
            }
        }
    }
}
