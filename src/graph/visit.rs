//! petgraph's visit traits on [`StageGraph`], over its compressed adjacency arrays, so that
//! petgraph's algorithms and walkers run on a pipeline's graph without copying it; and the
//! iterator and set types they hand out.
//!
//! Edges point from a dependency to its dependent (the order stages run in): `Outgoing`
//! neighbours are dependents, `Incoming` ones dependencies.

use std::iter::FusedIterator;

use petgraph::visit::{
    Data, EdgeCount, GraphBase, GraphProp, IntoEdgeReferences, IntoEdges, IntoEdgesDirected,
    IntoNeighbors, IntoNeighborsDirected, IntoNodeIdentifiers, IntoNodeReferences,
    NodeCompactIndexable, NodeCount, NodeIndexable, VisitMap, Visitable,
};
use petgraph::{Directed, Direction};

use super::{StageGraph, StageIndex, StageSpec};

/// Stage indices read from one of the graph's arrays: a stage's dependencies or dependents,
/// or the topological order.
#[derive(Debug, Clone)]
pub struct StageIndices<'a>(std::slice::Iter<'a, u32>);

impl<'a> StageIndices<'a> {
    pub(crate) fn new(indices: &'a [u32]) -> Self {
        StageIndices(indices.iter())
    }
}

impl Iterator for StageIndices<'_> {
    type Item = StageIndex;

    fn next(&mut self) -> Option<StageIndex> {
        self.0.next().map(|&i| StageIndex::from_u32(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for StageIndices<'_> {
    fn next_back(&mut self) -> Option<StageIndex> {
        self.0.next_back().map(|&i| StageIndex::from_u32(i))
    }
}

impl ExactSizeIterator for StageIndices<'_> {}
impl FusedIterator for StageIndices<'_> {}

/// Every stage index of a graph, in the order the stages were added.
#[derive(Debug, Clone)]
pub struct AllStages(std::ops::Range<u32>);

impl Iterator for AllStages {
    type Item = StageIndex;

    fn next(&mut self) -> Option<StageIndex> {
        self.0.next().map(StageIndex::from_u32)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for AllStages {
    fn next_back(&mut self) -> Option<StageIndex> {
        self.0.next_back().map(StageIndex::from_u32)
    }
}

impl ExactSizeIterator for AllStages {}
impl FusedIterator for AllStages {}

/// Every stage with its index, in the order the stages were added (petgraph's node
/// references: `(index, spec)`).
#[derive(Debug, Clone)]
pub struct StageRefs<'a>(std::iter::Zip<AllStages, std::slice::Iter<'a, StageSpec>>);

impl<'a> Iterator for StageRefs<'a> {
    type Item = (StageIndex, &'a StageSpec);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for StageRefs<'_> {}
impl FusedIterator for StageRefs<'_> {}

/// Edges as petgraph's edge references `(source, target, &())`, where the source is the
/// dependency and the target the dependent, whichever direction they were asked for in.
#[derive(Debug, Clone)]
pub struct Dependencies<'a> {
    /// The stage whose edges these are.
    stage: StageIndex,
    /// Its neighbours in the direction asked for.
    others: StageIndices<'a>,
    /// Whether `stage` is the source (its dependents) or the target (its dependencies).
    direction: Direction,
}

impl<'a> Iterator for Dependencies<'a> {
    type Item = (StageIndex, StageIndex, &'a ());

    fn next(&mut self) -> Option<Self::Item> {
        let other = self.others.next()?;
        Some(match self.direction {
            Direction::Outgoing => (self.stage, other, &()),
            Direction::Incoming => (other, self.stage, &()),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.others.size_hint()
    }
}

impl ExactSizeIterator for Dependencies<'_> {}
impl FusedIterator for Dependencies<'_> {}

/// Every edge of a graph as `(dependency, dependent, &())`, grouped by dependency in index
/// order.
#[derive(Debug, Clone)]
pub struct AllDependencies<'a> {
    graph: &'a StageGraph,
    /// The dependency whose dependents are being listed.
    source: u32,
    /// The next position in the graph's array of dependents.
    at: usize,
}

impl<'a> Iterator for AllDependencies<'a> {
    type Item = (StageIndex, StageIndex, &'a ());

    fn next(&mut self) -> Option<Self::Item> {
        let (offsets, targets) = (&self.graph.out_offsets, &self.graph.out_targets);
        let &target = targets.get(self.at)?;
        // Skip the stages whose rows end here (those without dependents).
        while offsets[self.source as usize + 1] as usize <= self.at {
            self.source += 1;
        }
        self.at += 1;
        Some((
            StageIndex::from_u32(self.source),
            StageIndex::from_u32(target),
            &(),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.graph.out_targets.len() - self.at;
        (left, Some(left))
    }
}

impl ExactSizeIterator for AllDependencies<'_> {}
impl FusedIterator for AllDependencies<'_> {}

/// A set of stages as a bitset: petgraph's visit map for a [`StageGraph`], and what
/// walkers such as [`Dfs`](petgraph::visit::Dfs) keep their `discovered` stages in.
///
/// Inserting an index past the set's capacity grows it, so no index panics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageSet {
    words: Vec<u64>,
}

impl StageSet {
    /// An empty set with room for `stages` stages without growing.
    #[must_use]
    pub fn with_capacity(stages: usize) -> Self {
        StageSet {
            words: vec![0; stages.div_ceil(64)],
        }
    }

    /// Adds `stage`; returns whether it was not there before.
    pub fn insert(&mut self, stage: StageIndex) -> bool {
        let (word, bit) = (stage.index() / 64, 1u64 << (stage.index() % 64));
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        fresh
    }

    /// Removes `stage`; returns whether it was there.
    pub fn remove(&mut self, stage: StageIndex) -> bool {
        let (word, bit) = (stage.index() / 64, 1u64 << (stage.index() % 64));
        match self.words.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }

    /// Whether `stage` is in the set.
    #[must_use]
    pub fn contains(&self, stage: StageIndex) -> bool {
        self.words
            .get(stage.index() / 64)
            .is_some_and(|w| w & (1 << (stage.index() % 64)) != 0)
    }

    /// The number of stages in the set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Removes every stage, keeping the capacity.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// The stages in the set, in increasing index order.
    pub fn iter(&self) -> impl Iterator<Item = StageIndex> + '_ {
        self.words.iter().enumerate().flat_map(|(at, &word)| {
            let base = at as u32 * 64;
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(StageIndex::from_u32(base + bit))
            })
        })
    }

    /// Grows the set to hold `stages` stages without growing again, and empties it.
    fn reset(&mut self, stages: usize) {
        self.words.clear();
        self.words.resize(stages.div_ceil(64), 0);
    }
}

impl VisitMap<StageIndex> for StageSet {
    fn visit(&mut self, stage: StageIndex) -> bool {
        self.insert(stage)
    }

    fn is_visited(&self, stage: &StageIndex) -> bool {
        self.contains(*stage)
    }

    fn unvisit(&mut self, stage: StageIndex) -> bool {
        self.remove(stage)
    }
}

impl FromIterator<StageIndex> for StageSet {
    fn from_iter<I: IntoIterator<Item = StageIndex>>(iter: I) -> Self {
        let mut set = StageSet::default();
        for stage in iter {
            set.insert(stage);
        }
        set
    }
}

// ---- petgraph's traits ----
//
// Traits on `StageGraph` itself petgraph forwards to `&StageGraph`; the `Into…` traits take
// the graph by reference, as petgraph's algorithms call them.

impl GraphBase for StageGraph {
    type NodeId = StageIndex;
    /// An edge is named by its ends, `(dependency, dependent)`.
    type EdgeId = (StageIndex, StageIndex);
}

impl Data for StageGraph {
    type NodeWeight = StageSpec;
    type EdgeWeight = ();
}

impl GraphProp for StageGraph {
    type EdgeType = Directed;
}

impl NodeCount for StageGraph {
    fn node_count(&self) -> usize {
        self.len()
    }
}

impl EdgeCount for StageGraph {
    fn edge_count(&self) -> usize {
        self.out_targets.len()
    }
}

impl NodeIndexable for StageGraph {
    fn node_bound(&self) -> usize {
        self.len()
    }

    fn to_index(&self, stage: StageIndex) -> usize {
        stage.index()
    }

    /// The index `i`; like petgraph's own graphs, it does not check that `i` is in range, and
    /// an index past the last stage saturates at `u32::MAX`, which no stage has.
    fn from_index(&self, i: usize) -> StageIndex {
        StageIndex::new(i).unwrap_or(StageIndex::from_u32(u32::MAX))
    }
}

impl NodeCompactIndexable for StageGraph {}

impl Visitable for StageGraph {
    type Map = StageSet;

    fn visit_map(&self) -> StageSet {
        StageSet::with_capacity(self.len())
    }

    fn reset_map(&self, map: &mut StageSet) {
        map.reset(self.len());
    }
}

impl<'a> IntoNeighbors for &'a StageGraph {
    type Neighbors = StageIndices<'a>;

    /// The dependents of `stage` (the stages that run after it), or none for an index past
    /// the last stage.
    fn neighbors(self, stage: StageIndex) -> StageIndices<'a> {
        self.dependents_of(stage)
            .unwrap_or_else(|| StageIndices::new(&[]))
    }
}

impl<'a> IntoNeighborsDirected for &'a StageGraph {
    type NeighborsDirected = StageIndices<'a>;

    /// `Outgoing`: the dependents of `stage`; `Incoming`: its dependencies.
    fn neighbors_directed(self, stage: StageIndex, direction: Direction) -> StageIndices<'a> {
        match direction {
            Direction::Outgoing => self.dependents_of(stage),
            Direction::Incoming => self.dependencies_of(stage),
        }
        .unwrap_or_else(|| StageIndices::new(&[]))
    }
}

impl IntoNodeIdentifiers for &StageGraph {
    type NodeIdentifiers = AllStages;

    fn node_identifiers(self) -> AllStages {
        self.stage_indices()
    }
}

impl<'a> IntoNodeReferences for &'a StageGraph {
    type NodeRef = (StageIndex, &'a StageSpec);
    type NodeReferences = StageRefs<'a>;

    fn node_references(self) -> StageRefs<'a> {
        StageRefs(self.stage_indices().zip(self.stages.iter()))
    }
}

impl<'a> IntoEdgeReferences for &'a StageGraph {
    type EdgeRef = (StageIndex, StageIndex, &'a ());
    type EdgeReferences = AllDependencies<'a>;

    fn edge_references(self) -> AllDependencies<'a> {
        AllDependencies {
            graph: self,
            source: 0,
            at: 0,
        }
    }
}

impl<'a> IntoEdges for &'a StageGraph {
    type Edges = Dependencies<'a>;

    fn edges(self, stage: StageIndex) -> Dependencies<'a> {
        self.edges_directed(stage, Direction::Outgoing)
    }
}

impl<'a> IntoEdgesDirected for &'a StageGraph {
    type EdgesDirected = Dependencies<'a>;

    fn edges_directed(self, stage: StageIndex, direction: Direction) -> Dependencies<'a> {
        Dependencies {
            stage,
            others: self.neighbors_directed(stage, direction),
            direction,
        }
    }
}

impl AllStages {
    pub(crate) fn new(len: usize) -> Self {
        AllStages(0..len as u32)
    }
}
