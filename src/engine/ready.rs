//! The ready queue: stages whose dependencies are done, in the order they may start (the
//! longest remaining critical path first when something limits how many run at once).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::graph::StageGraph;

/// The stages ready to start, by slot. With a worker or group limit they wait in priority
/// order (the longest remaining critical path first, then the order of the graph); without
/// one every ready stage starts at once, so order cannot change the schedule and a queue will
/// do.
pub(super) enum Ready {
    Ranked(BinaryHeap<(u64, Reverse<u32>)>),
    Unranked(VecDeque<u32>),
}

impl Ready {
    /// An empty queue: ranked by critical path when `limited` (a worker or group limit makes
    /// stages wait, so which one goes first matters), a plain queue otherwise.
    pub(super) fn new(limited: bool) -> Self {
        if limited {
            Ready::Ranked(BinaryHeap::new())
        } else {
            Ready::Unranked(VecDeque::new())
        }
    }

    /// Queues the stage in `slot`, graph index `i`.
    #[inline]
    pub(super) fn push(&mut self, graph: &StageGraph, i: usize, slot: usize) {
        match self {
            Ready::Ranked(heap) => heap.push((graph.priority_of(i), Reverse(slot as u32))),
            Ready::Unranked(queue) => queue.push_back(slot as u32),
        }
    }

    /// Whether no stage is ready.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Ready::Ranked(heap) => heap.is_empty(),
            Ready::Unranked(queue) => queue.is_empty(),
        }
    }

    /// The slot of the stage to start next.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<usize> {
        match self {
            Ready::Ranked(heap) => heap.pop().map(|(_, Reverse(slot))| slot as usize),
            Ready::Unranked(queue) => queue.pop_front().map(|slot| slot as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::StageSpec;

    #[test]
    fn ranked_stages_leave_by_critical_path_then_graph_order() {
        let graph = StageGraph::builder()
            .stage(StageSpec::test("short"))
            .stage(StageSpec::test("long-a"))
            .stage(StageSpec::test("long-b"))
            .stage(StageSpec::test("tail").after("long-a").after("long-b"))
            .build()
            .unwrap();
        let mut ready = Ready::new(true);
        // A step's slots follow the graph's order, so a tie goes to the stage added first.
        for i in [0, 2, 1] {
            ready.push(&graph, i, i);
        }
        let order: Vec<usize> = std::iter::from_fn(|| ready.pop()).collect();
        assert_eq!(order, [1, 2, 0]);
        assert!(ready.is_empty());
    }

    #[test]
    fn unranked_stages_leave_in_arrival_order() {
        let graph = StageGraph::builder()
            .stage(StageSpec::test("a"))
            .stage(StageSpec::test("b").after("a"))
            .build()
            .unwrap();
        let mut ready = Ready::new(false);
        ready.push(&graph, 1, 1);
        ready.push(&graph, 0, 0);
        assert_eq!(ready.pop(), Some(1));
        assert_eq!(ready.pop(), Some(0));
        assert_eq!(ready.pop(), None);
    }
}
