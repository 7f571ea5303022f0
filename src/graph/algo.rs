//! Index-based queries on a [`StageGraph`]: looking stages up by [`StageIndex`], their direct
//! dependencies and dependents, everything upstream or downstream of a stage (the stages a
//! change affects), and a lint for redundant dependencies built on petgraph's transitive
//! reduction.

use petgraph::adj::List;
use petgraph::algo::tred::dag_transitive_reduction_closure;
use petgraph::visit::{Bfs, IntoNeighbors, Reversed};

use super::visit::{AllStages, StageIndices, StageSet};
use super::{StageGraph, StageIndex, StageSpec};

/// A dependency that other dependencies already imply: `stage` runs after `dependency`
/// through another path as well, so listing it in `stage`'s `after` changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedundantDependency {
    /// The stage whose `after` list names the redundant dependency.
    pub stage: StageIndex,
    /// The dependency it could drop.
    pub dependency: StageIndex,
}

impl StageGraph {
    /// The index of the stage with this id, if there is one.
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::build("compile"))
    ///     .stage(StageSpec::test("unit").after("compile"))
    ///     .build()?;
    /// let unit = graph.stage_index("unit").expect("unit is a stage");
    /// assert_eq!(unit.index(), 1);
    /// assert_eq!(graph.stage_at(unit).map(|s| s.id.as_str()), Some("unit"));
    /// assert!(graph.stage_index("lint").is_none());
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn stage_index(&self, id: &str) -> Option<StageIndex> {
        self.index_of(id).map(|i| StageIndex::from_u32(i as u32))
    }

    /// The stage at `index`, or `None` past the last stage.
    #[must_use]
    pub fn stage_at(&self, index: StageIndex) -> Option<&StageSpec> {
        self.stages.get(index.index())
    }

    /// Every stage index, in the order the stages were added.
    #[must_use]
    pub fn stage_indices(&self) -> AllStages {
        AllStages::new(self.len())
    }

    /// Every stage index in the graph's topological order (dependencies first), the order of
    /// [`topological_order`](StageGraph::topological_order).
    #[must_use]
    pub fn topological_indices(&self) -> StageIndices<'_> {
        StageIndices::new(&self.topo)
    }

    /// The direct dependencies of `stage` (its `after` list, repeats dropped, in order), or
    /// `None` past the last stage. petgraph's `Incoming` neighbours.
    #[must_use]
    pub fn dependencies_of(&self, stage: StageIndex) -> Option<StageIndices<'_>> {
        let i = stage.index();
        let (start, end) = (*self.dep_offsets.get(i)?, *self.dep_offsets.get(i + 1)?);
        Some(StageIndices::new(
            &self.dep_targets[start as usize..end as usize],
        ))
    }

    /// The stages that depend directly on `stage`, in index order, or `None` past the last
    /// stage. petgraph's `Outgoing` neighbours.
    #[must_use]
    pub fn dependents_of(&self, stage: StageIndex) -> Option<StageIndices<'_>> {
        let i = stage.index();
        let (start, end) = (*self.out_offsets.get(i)?, *self.out_offsets.get(i + 1)?);
        Some(StageIndices::new(
            &self.out_targets[start as usize..end as usize],
        ))
    }

    /// Every stage `stage` depends on, directly or through others (not itself), in index
    /// order; `None` past the last stage.
    ///
    /// Linear in the stages and dependencies upstream of `stage`, plus a pass over a bitset of
    /// one bit per stage.
    #[must_use]
    pub fn ancestors(&self, stage: StageIndex) -> Option<Vec<StageIndex>> {
        self.stage_at(stage)?;
        let mut walk = Bfs::new(Reversed(self), stage);
        while walk.next(Reversed(self)).is_some() {}
        Some(collect_except(&walk.discovered, stage))
    }

    /// Every stage that depends on `stage`, directly or through others (not itself), in index
    /// order; `None` past the last stage. These are the stages a change to `stage` affects.
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::build("compile"))
    ///     .stage(StageSpec::build("docs"))
    ///     .stage(StageSpec::test("unit").after("compile"))
    ///     .stage(StageSpec::deploy("ship").after("unit").after("docs"))
    ///     .build()?;
    /// let compile = graph.stage_index("compile").unwrap();
    /// let affected: Vec<&str> = graph
    ///     .descendants(compile)
    ///     .unwrap()
    ///     .into_iter()
    ///     .filter_map(|i| graph.stage_at(i))
    ///     .map(|s| s.id.as_str())
    ///     .collect();
    /// assert_eq!(affected, ["unit", "ship"]);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn descendants(&self, stage: StageIndex) -> Option<Vec<StageIndex>> {
        self.stage_at(stage)?;
        let mut walk = Bfs::new(self, stage);
        while walk.next(self).is_some() {}
        Some(collect_except(&walk.discovered, stage))
    }

    /// The dependencies that other dependencies already imply (the edges a transitive
    /// reduction drops), sorted by stage and then dependency index.
    ///
    /// Built on petgraph's [`dag_transitive_reduction_closure`], which also computes the
    /// transitive closure: time and memory grow with the closure's size, up to quadratic in the
    /// number of stages (a chain of n stages has n²/2 pairs). Fine for pipelines of thousands
    /// of stages; not something to run on a million-stage chain.
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// // a -> b -> c, and c also lists a: that `after("a")` is implied by b.
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::build("a"))
    ///     .stage(StageSpec::build("b").after("a"))
    ///     .stage(StageSpec::build("c").after("b").after("a"))
    ///     .build()?;
    /// let redundant = graph.redundant_dependencies();
    /// assert_eq!(redundant.len(), 1);
    /// assert_eq!(graph.stage_at(redundant[0].stage).unwrap().id, "c");
    /// assert_eq!(graph.stage_at(redundant[0].dependency).unwrap().id, "a");
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn redundant_dependencies(&self) -> Vec<RedundantDependency> {
        // petgraph's algorithm wants the nodes numbered in a topological order and each
        // node's neighbours in that order too: renumber every stage by its rank.
        let n = self.len();
        let mut rank = vec![0u32; n];
        for (r, &stage) in self.topo.iter().enumerate() {
            rank[stage as usize] = r as u32;
        }
        let mut ranked: List<(), u32> = List::with_capacity(n);
        for &stage in &self.topo {
            ranked.add_node_with_capacity(self.dependents_row(stage as usize).len());
        }
        let mut row = Vec::new();
        for (source, &stage) in self.topo.iter().enumerate() {
            row.clear();
            row.extend(
                self.dependents_row(stage as usize)
                    .iter()
                    .map(|&d| rank[d as usize]),
            );
            row.sort_unstable();
            for &target in &row {
                ranked.add_edge(source as u32, target, ());
            }
        }
        let (reduction, _closure) = dag_transitive_reduction_closure(&ranked);

        let mut kept = StageSet::with_capacity(n);
        let mut redundant = Vec::new();
        for (r, &stage) in self.topo.iter().enumerate() {
            let source = r as u32;
            for target in (&reduction).neighbors(source) {
                kept.insert(StageIndex::from_u32(target));
            }
            for &dependent in self.dependents_row(stage as usize) {
                if !kept.contains(StageIndex::from_u32(rank[dependent as usize])) {
                    redundant.push(RedundantDependency {
                        stage: StageIndex::from_u32(dependent),
                        dependency: StageIndex::from_u32(stage),
                    });
                }
            }
            for target in (&reduction).neighbors(source) {
                kept.remove(StageIndex::from_u32(target));
            }
        }
        redundant.sort_unstable();
        redundant
    }
}

/// The stages in `set` but `except`, in index order.
fn collect_except(set: &StageSet, except: StageIndex) -> Vec<StageIndex> {
    set.iter().filter(|&s| s != except).collect()
}
