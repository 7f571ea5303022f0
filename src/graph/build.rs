//! [`StageGraphBuilder`]: collects [`StageSpec`]s and validates them into a [`StageGraph`].
//!
//! Validation and every algorithm here are iterative and linear in stages plus dependencies,
//! so a graph of millions of stages builds without deep recursion. The graph is stored in
//! compressed sparse rows (one offsets array and one targets array per direction) instead of
//! a vector per stage, which keeps building to a handful of allocations.

use std::collections::{HashMap, HashSet};

use super::scan::{Scanned, scan};
use super::{Condition, GraphError, Matrix, Result, StageId};
use super::{IndexOutOfRange, StageGraph, StageIndex, StageSpec, Step};

/// Collects stage definitions and checks them into a [`StageGraph`].
///
/// Stages may name dependencies that are added later; nothing is checked until
/// [`build`](StageGraphBuilder::build).
///
/// ```
/// use tollgate::graph::{StageGraph, StageSpec, Step};
///
/// let graph = StageGraph::builder()
///     .stage(StageSpec::build("compile"))
///     .stage(StageSpec::test("unit").after("compile"))
///     .stage(StageSpec::test("lint").after("compile"))
///     .require_step(Step::Test)
///     .build()?;
///
/// let order: Vec<&str> = graph.topological_order().map(|s| s.id.as_str()).collect();
/// assert_eq!(order, ["compile", "unit", "lint"]);
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct StageGraphBuilder {
    /// The stages, in the order they were added.
    stages: Vec<StageSpec>,
    /// Whether each step (indexed by `Step as usize`) must end up with at least one stage.
    required: [bool; Step::ALL.len()],
    /// Dependencies added by index, `(stage, dependency)`, in the order they were added.
    links: Vec<(u32, u32)>,
    /// Each matrix stage's base id and the positions of its combinations' stages.
    matrices: Vec<(StageId, std::ops::Range<usize>)>,
    /// The first matrix that could not be expanded.
    matrix_error: Option<GraphError>,
}

impl StageGraphBuilder {
    /// Adds a stage.
    #[must_use]
    pub fn stage(mut self, spec: StageSpec) -> Self {
        self.stages.push(spec);
        self
    }

    /// Adds several stages, in order.
    #[must_use]
    pub fn stages(mut self, specs: impl IntoIterator<Item = StageSpec>) -> Self {
        if self.stages.is_empty() {
            // Collecting a `Vec`'s own iterator keeps its buffer, where extending would copy
            // every spec; loading a graph from a spec file takes this path.
            self.stages = specs.into_iter().collect();
        } else {
            self.stages.extend(specs);
        }
        self
    }

    /// Adds one stage per combination of `matrix` (see [`Matrix`]): `spec` with the
    /// combination's id and values. A stage that names `spec`'s id in `after` depends on
    /// every one of them. An empty matrix or a clashing id fails [`build`](Self::build)
    /// ([`GraphError::EmptyMatrix`], [`GraphError::MatrixClash`]).
    #[must_use]
    pub fn matrix(mut self, spec: StageSpec, matrix: &Matrix) -> Self {
        self.push_matrix(spec, matrix);
        self
    }

    /// [`matrix`](Self::matrix) without consuming the builder; returns how many stages it
    /// added (none when the matrix cannot be expanded).
    pub fn push_matrix(&mut self, spec: StageSpec, matrix: &Matrix) -> usize {
        match matrix.expand(&spec) {
            Ok(stages) => {
                let start = self.stages.len();
                self.stages.extend(stages);
                self.matrices.push((spec.id, start..self.stages.len()));
                self.stages.len() - start
            }
            Err(error) => {
                self.matrix_error.get_or_insert(error);
                0
            }
        }
    }

    /// Adds a stage without consuming the builder, for use in loops.
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let mut builder = StageGraph::builder();
    /// builder.push(StageSpec::build("compile"));
    /// for shard in 0..4 {
    ///     builder.push(StageSpec::test(format!("unit-{shard}")).after("compile"));
    /// }
    /// let graph = builder.build()?;
    /// assert_eq!(graph.dependents("compile")?.count(), 4);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    pub fn push(&mut self, spec: StageSpec) -> &mut Self {
        self.stages.push(spec);
        self
    }

    /// Adds a stage and returns the index it will have in the built graph, for
    /// [`add_dependency`](StageGraphBuilder::add_dependency).
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let mut builder = StageGraph::builder();
    /// let compile = builder.add_stage(StageSpec::build("compile"));
    /// for shard in 0..4 {
    ///     let unit = builder.add_stage(StageSpec::test(format!("unit-{shard}")));
    ///     builder.add_dependency(unit, compile)?;
    /// }
    /// let graph = builder.build()?;
    /// assert_eq!(graph.dependents_of(compile).map(|d| d.len()), Some(4));
    /// // The dependencies are in the specs, as if `after` had named them.
    /// assert_eq!(graph.get("unit-0").unwrap().after, ["compile"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_stage(&mut self, spec: StageSpec) -> StageIndex {
        let index = StageIndex::from_u32(self.stages.len() as u32);
        self.stages.push(spec);
        index
    }

    /// Makes the stage at `stage` run after the one at `dependency`, both indices from
    /// [`add_stage`](StageGraphBuilder::add_stage) (or positions in the order stages were
    /// added).
    ///
    /// The cheap way to wire a big graph: nothing is hashed, and [`build`] checks the
    /// dependency like one named in `after` (self-dependency, step order, finally stages,
    /// cycles) and appends its id to the stage's `after` list, after the ids named there.
    /// Fails, changing nothing, if either index is not a stage added so far.
    ///
    /// [`build`]: StageGraphBuilder::build
    pub fn add_dependency(
        &mut self,
        stage: StageIndex,
        dependency: StageIndex,
    ) -> std::result::Result<&mut Self, IndexOutOfRange> {
        let len = self.stages.len();
        if let Some(&index) = [stage, dependency].iter().find(|i| i.index() >= len) {
            return Err(IndexOutOfRange { index, len });
        }
        self.links.push((stage.as_u32(), dependency.as_u32()));
        Ok(self)
    }

    /// Makes [`build`](StageGraphBuilder::build) fail with [`GraphError::EmptyStep`] unless `step`
    /// has at least one stage.
    ///
    /// ```
    /// use tollgate::graph::GraphError;
    /// use tollgate::graph::{StageGraph, StageSpec, Step};
    ///
    /// let err = StageGraph::builder()
    ///     .stage(StageSpec::build("compile"))
    ///     .require_step(Step::Test)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, GraphError::EmptyStep { step: Step::Test }));
    /// ```
    #[must_use]
    pub fn require_step(mut self, step: Step) -> Self {
        self.required[step as usize] = true;
        self
    }

    /// Validates the stages and builds the graph.
    ///
    /// The checks run in this order, and the first one that fails is reported for the first
    /// stage (in the order stages were added) that fails it:
    ///
    /// 1. every stage id and every dependency id is well formed ([`GraphError::InvalidStageId`]);
    /// 2. no two stages share an id ([`GraphError::DuplicateStage`], naming the second one);
    /// 3. no stage depends on itself ([`GraphError::SelfDependency`]);
    /// 4. every dependency names a stage ([`GraphError::UnknownDependency`]);
    /// 5. no stage depends on a stage of a later step ([`GraphError::DependencyOnLaterStep`]);
    /// 6. every step passed to [`require_step`](StageGraphBuilder::require_step) has a stage
    ///    ([`GraphError::EmptyStep`], the earliest such step);
    /// 7. retry and timeout policies are usable ([`GraphError::InvalidPolicy`]) and no ordinary
    ///    stage depends on a finally stage of its own step ([`GraphError::DependsOnFinally`]);
    /// 8. the dependencies are acyclic ([`GraphError::Cycle`], listing the stages of one cycle).
    ///
    /// A dependency listed twice by one stage is kept once, at its first position.
    ///
    /// ```
    /// use tollgate::graph::GraphError;
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let err = StageGraph::builder()
    ///     .stage(StageSpec::test("a").after("b"))
    ///     .stage(StageSpec::test("b").after("a"))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "dependency cycle: a -> b -> a");
    /// assert!(matches!(err, GraphError::Cycle { .. }));
    /// ```
    ///
    /// # Panics
    ///
    /// If there are more than `u32::MAX` (about 4.3 billion) stages or dependencies: the graph
    /// stores indices as `u32` to halve its memory.
    pub fn build(self) -> Result<StageGraph> {
        let StageGraphBuilder {
            mut stages,
            required,
            links,
            matrices,
            matrix_error,
        } = self;
        if let Some(error) = matrix_error {
            return Err(error);
        }
        if !matrices.is_empty() {
            wire_matrices(&mut stages, &matrices)?;
        }
        let n = stages.len();
        assert!(
            u32::try_from(n).is_ok(),
            "a stage graph holds at most u32::MAX stages and dependencies"
        );

        // Checks 1 to 7 in one pass over the specs (see `scan`).
        let Scanned {
            index,
            placement,
            weights,
            deps,
        } = scan(&mut stages, required, &links)?;
        check_conditions(&stages, &placement)?;
        let dependents = deps.transpose(n);
        let topo = topological_order(&deps, &dependents).map_err(|cycle| GraphError::Cycle {
            stages: cycle
                .into_iter()
                .map(|i| stages[i as usize].id.clone())
                .collect(),
        })?;
        let priority = priorities(weights, &topo, &dependents);

        Ok(StageGraph {
            placement,
            stages,
            index,
            dep_offsets: deps.offsets,
            dep_targets: deps.targets,
            out_offsets: dependents.offsets,
            out_targets: dependents.targets,
            topo,
            priority,
        })
    }
}

/// Makes every `after` that names a matrix stage's base id name each of its combinations
/// instead; a base id that is also a stage's id is a clash.
fn wire_matrices(
    stages: &mut [StageSpec],
    matrices: &[(StageId, std::ops::Range<usize>)],
) -> Result<()> {
    let ids: HashSet<&str> = stages.iter().map(|s| s.id.as_str()).collect();
    if let Some((base, _)) = matrices
        .iter()
        .find(|(base, _)| ids.contains(base.as_str()))
    {
        return Err(GraphError::MatrixClash {
            stage: base.clone(),
            id: base.clone(),
        });
    }
    let expansions: HashMap<&StageId, Vec<StageId>> = matrices
        .iter()
        .map(|(base, range)| {
            (
                base,
                stages[range.clone()].iter().map(|s| s.id.clone()).collect(),
            )
        })
        .collect();
    for stage in stages.iter_mut() {
        if stage.after.iter().any(|d| expansions.contains_key(d)) {
            let after = std::mem::take(&mut stage.after);
            for dependency in after {
                match expansions.get(&dependency) {
                    Some(all) => stage.after.extend(all.iter().cloned()),
                    None => stage.after.push(dependency),
                }
            }
        }
    }
    Ok(())
}

/// Every condition that names a stage names one of the stage's own dependencies.
fn check_conditions(stages: &[StageSpec], placement: &[super::Placement]) -> Result<()> {
    for (spec, place) in stages.iter().zip(placement) {
        if !place.conditional {
            continue;
        }
        if let Condition::DependencyFailed(dependency) = &spec.when {
            if !spec.after.contains(dependency) {
                return Err(GraphError::ConditionOnNonDependency {
                    stage: spec.id.clone(),
                    dependency: dependency.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Adjacency in compressed sparse rows: the neighbours of stage `i` are
/// `targets[offsets[i]..offsets[i + 1]]`.
pub(super) struct Csr {
    pub(super) offsets: Vec<u32>,
    pub(super) targets: Vec<u32>,
}

impl Csr {
    pub(super) fn row(&self, i: usize) -> &[u32] {
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The reverse adjacency, each row in increasing stage index.
    ///
    /// A counting sort: count each target, turn the counts into row ends, then fill every row
    /// from its end while walking the sources backwards, which leaves the rows ascending and
    /// the ends moved to the starts, with no cursor array.
    fn transpose(&self, n: usize) -> Csr {
        let mut offsets = vec![0u32; n + 1];
        for &t in &self.targets {
            offsets[t as usize] += 1;
        }
        let mut end = 0;
        for offset in &mut offsets[..n] {
            end += *offset;
            *offset = end;
        }
        offsets[n] = end;
        let mut targets = vec![0u32; self.targets.len()];
        for source in (0..n).rev() {
            for &t in self.row(source) {
                let slot = &mut offsets[t as usize];
                *slot -= 1;
                targets[*slot as usize] = source as u32;
            }
        }
        Csr { offsets, targets }
    }
}

/// Check 8 and the run order: Kahn's algorithm with a FIFO queue.
///
/// Stages with no dependencies come first in the order they were added, then each stage as
/// soon as its last dependency is placed. The order vector doubles as the queue. On a cycle,
/// returns the indices of one cycle in run order instead.
fn topological_order(deps: &Csr, dependents: &Csr) -> Result<Vec<u32>, Vec<u32>> {
    let n = deps.offsets.len() - 1;
    let mut unplaced: Vec<u32> = deps.offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let mut order = Vec::with_capacity(n);
    order.extend((0..n as u32).filter(|&i| unplaced[i as usize] == 0));
    let mut next = 0;
    while let Some(&stage) = order.get(next) {
        next += 1;
        for &dependent in dependents.row(stage as usize) {
            let count = &mut unplaced[dependent as usize];
            *count -= 1;
            if *count == 0 {
                order.push(dependent);
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err(find_cycle(deps, &unplaced))
    }
}

/// One cycle among the stages Kahn's algorithm could not place, in run order, starting with
/// its earliest-added stage.
///
/// Every unplaced stage has an unplaced dependency (or it would have been placed), so
/// walking from dependency to unplaced dependency must revisit a stage; the walk from that
/// stage's first visit on, reversed, is a cycle in run order.
fn find_cycle(deps: &Csr, unplaced: &[u32]) -> Vec<u32> {
    const UNVISITED: u32 = u32::MAX;
    let mut visited_at = vec![UNVISITED; unplaced.len()];
    let mut walk: Vec<u32> = Vec::new();
    let mut stage = unplaced.iter().position(|&count| count > 0);
    while let Some(s) = stage {
        let seen = visited_at[s];
        if seen != UNVISITED {
            walk.drain(..seen as usize);
            break;
        }
        visited_at[s] = walk.len() as u32;
        walk.push(s as u32);
        stage = deps
            .row(s)
            .iter()
            .map(|&d| d as usize)
            .find(|&d| unplaced[d] > 0);
    }
    walk.reverse();
    let earliest = (0..walk.len()).min_by_key(|&at| walk[at]).unwrap_or(0);
    walk.rotate_left(earliest);
    walk
}

/// For each stage, the weight of the heaviest path from it through its dependents, itself
/// included, starting from each stage's own weight. Walking the run order backwards sees
/// every dependent before its dependencies.
fn priorities(weights: Vec<u64>, topo: &[u32], dependents: &Csr) -> Vec<u64> {
    let mut priority = weights;
    for &stage in topo.iter().rev() {
        let stage = stage as usize;
        let heaviest_rest = dependents
            .row(stage)
            .iter()
            .map(|&d| priority[d as usize])
            .max()
            .unwrap_or(0);
        priority[stage] = priority[stage].saturating_add(heaviest_rest);
    }
    priority
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ids(graph: &StageGraph) -> Vec<&str> {
        graph.topological_order().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn invalid_stage_id_is_reported_before_anything_else() {
        let err = StageGraph::builder()
            .stage(StageSpec::build("a"))
            .stage(StageSpec::build("a"))
            .stage(StageSpec::build("ok").after("bad;id"))
            .build()
            .unwrap_err();
        match err {
            GraphError::InvalidStageId { id, reason } => {
                assert_eq!(id, "bad;id");
                assert!(reason.contains("ASCII"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_stage_id_is_invalid() {
        let err = StageGraph::builder()
            .stage(StageSpec::build(""))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::InvalidStageId { id, .. } if id.is_empty()),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_stage_names_the_id() {
        let err = StageGraph::builder()
            .stage(StageSpec::build("a"))
            .stage(StageSpec::test("b").after("missing"))
            .stage(StageSpec::test("a"))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::DuplicateStage { id } if id == "a"),
            "{err:?}"
        );
    }

    #[test]
    fn self_dependency_outranks_an_earlier_unknown_dependency() {
        let err = StageGraph::builder()
            .stage(StageSpec::build("a").after("missing"))
            .stage(StageSpec::build("b").after("b"))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::SelfDependency { stage } if stage == "b"),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_dependency_names_both_stages() {
        let err = StageGraph::builder()
            .stage(StageSpec::build("a"))
            .stage(StageSpec::test("b").after("a").after("nope"))
            .stage(StageSpec::test("c").after("nada"))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::UnknownDependency { stage, dependency }
                if stage == "b" && dependency == "nope"),
            "{err:?}"
        );
    }

    #[test]
    fn dependency_on_a_later_step_names_both_steps() {
        let err = StageGraph::builder()
            .stage(StageSpec::test("unit").after("ship"))
            .stage(StageSpec::deploy("ship"))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::DependencyOnLaterStep {
                stage, stage_step: Step::Test, dependency, dependency_step: Step::Deploy,
            } if stage == "unit" && dependency == "ship"),
            "{err:?}"
        );
    }

    #[test]
    fn dependency_on_the_same_or_an_earlier_step_is_fine() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("compile"))
            .stage(StageSpec::build("package").after("compile"))
            .stage(StageSpec::deploy("ship").after("package"))
            .build()
            .unwrap();
        assert_eq!(ids(&graph), ["compile", "package", "ship"]);
    }

    #[test]
    fn first_empty_required_step_in_step_order() {
        let err = StageGraph::builder()
            .stage(StageSpec::build("compile"))
            .require_step(Step::Deploy)
            .require_step(Step::Stage)
            .require_step(Step::Build)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, GraphError::EmptyStep { step: Step::Stage }),
            "{err:?}"
        );
    }

    #[test]
    fn empty_step_outranks_a_cycle() {
        let err = StageGraph::builder()
            .stage(StageSpec::build("a").after("b"))
            .stage(StageSpec::build("b").after("a"))
            .require_step(Step::Test)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, GraphError::EmptyStep { step: Step::Test }),
            "{err:?}"
        );
    }

    #[test]
    fn cycle_lists_exactly_the_cycle_in_run_order() {
        // a -> b -> c -> a, with `tail` hanging off the cycle and added first so that the
        // search for the cycle starts outside it.
        let err = StageGraph::builder()
            .stage(StageSpec::test("tail").after("c"))
            .stage(StageSpec::test("root"))
            .stage(StageSpec::test("a").after("root").after("c"))
            .stage(StageSpec::test("b").after("a"))
            .stage(StageSpec::test("c").after("b"))
            .build()
            .unwrap_err();
        match err {
            GraphError::Cycle { stages } => assert_eq!(stages, ["a", "b", "c"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn two_stage_cycle() {
        let err = StageGraph::builder()
            .stage(StageSpec::test("x").after("y"))
            .stage(StageSpec::test("y").after("x"))
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: x -> y -> x");
    }

    #[test]
    fn topological_order_puts_dependencies_first_and_is_stable() {
        let graph = StageGraph::builder()
            .stage(StageSpec::test("d").after("b").after("c"))
            .stage(StageSpec::test("c").after("a"))
            .stage(StageSpec::test("b").after("a"))
            .stage(StageSpec::build("a"))
            .stage(StageSpec::build("e"))
            .build()
            .unwrap();
        assert_eq!(ids(&graph), ["a", "e", "c", "b", "d"]);
    }

    #[test]
    fn dependents_are_listed_in_insertion_order() {
        let graph = StageGraph::builder()
            .stage(StageSpec::test("z").after("root"))
            .stage(StageSpec::build("root"))
            .stage(StageSpec::test("m").after("root"))
            .stage(StageSpec::test("a").after("root"))
            .build()
            .unwrap();
        let dependents: Vec<&str> = graph
            .dependents("root")
            .unwrap()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(dependents, ["z", "m", "a"]);
    }

    #[test]
    fn priority_is_the_heaviest_path_through_dependents() {
        // A diamond: top -> {left, right} -> bottom.
        let ms = Duration::from_millis;
        let graph = StageGraph::builder()
            .stage(StageSpec::build("top").estimate(ms(10)))
            .stage(StageSpec::test("left").after("top").estimate(ms(100)))
            .stage(StageSpec::test("right").after("top"))
            .stage(
                StageSpec::test("bottom")
                    .after("left")
                    .after("right")
                    .estimate(ms(0)),
            )
            .build()
            .unwrap();
        let priority = |id| graph.priority_of(graph.index_of(id).unwrap());
        assert_eq!(priority("bottom"), 1);
        assert_eq!(priority("right"), 2);
        assert_eq!(priority("left"), 101);
        assert_eq!(priority("top"), 111);
    }

    #[test]
    fn huge_estimates_saturate() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("a").estimate(Duration::MAX))
            .stage(StageSpec::build("b").after("a").estimate(Duration::MAX))
            .build()
            .unwrap();
        assert_eq!(graph.priority_of(0), u64::MAX);
    }

    #[test]
    fn repeated_dependencies_are_kept_once_in_first_order() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("a"))
            .stage(StageSpec::build("b"))
            .stage(
                StageSpec::test("c")
                    .after("b")
                    .after("a")
                    .after("b")
                    .after("a"),
            )
            .build()
            .unwrap();
        let deps: Vec<&str> = graph
            .dependencies("c")
            .unwrap()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(deps, ["b", "a"]);
        assert_eq!(graph.get("c").unwrap().after, ["b", "a"]);
        assert_eq!(graph.dependents_row(0), [2]);
        assert_eq!(graph.dependents_row(1), [2]);
    }

    #[test]
    fn empty_graph_builds() {
        let graph = StageGraph::builder().build().unwrap();
        assert!(graph.is_empty());
        assert_eq!(graph.topological_order().len(), 0);
    }

    #[test]
    fn push_adds_like_stage() {
        let mut builder = StageGraph::builder();
        builder
            .push(StageSpec::build("a"))
            .push(StageSpec::test("b").after("a"));
        let graph = builder
            .stages([StageSpec::test("c").after("b")])
            .build()
            .unwrap();
        assert_eq!(ids(&graph), ["a", "b", "c"]);
        assert_eq!(graph.deps_of(2), [1]);
    }
}
