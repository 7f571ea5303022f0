//! Integration tests of the stage graph as a petgraph graph: petgraph's own algorithms and
//! walkers run on a `StageGraph` directly and agree with a naive reference on random DAGs, and
//! so do the index-based queries (`dependencies_of`, `ancestors`, `descendants`) and the
//! redundant-dependency lint. Also the index-based builder.

// The reference is a reachability matrix indexed by stage number; loops over numbers say so.
#![allow(clippy::needless_range_loop)]

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use tollgate::graph::{RedundantDependency, StageGraph, StageIndex, StageSpec, Step};
use tollgate::petgraph::Direction::{Incoming, Outgoing};
use tollgate::petgraph::algo::dominators::simple_fast;
use tollgate::petgraph::algo::{has_path_connecting, toposort};
use tollgate::petgraph::visit::{
    Dfs, EdgeCount, EdgeRef, IntoEdgeReferences, IntoEdgesDirected, IntoNeighborsDirected,
    IntoNodeReferences, NodeCount, NodeIndexable, Reversed, Topo,
};

/// A random DAG in plain form: `deps[k]` are the stages `s{k}` runs after, all with smaller
/// `k`; `insertion` is the order the stages are added to the builder, so that a stage's index
/// in the graph is not its `k`.
#[derive(Debug, Clone)]
struct Dag {
    deps: Vec<Vec<usize>>,
    insertion: Vec<usize>,
}

impl Dag {
    fn graph(&self) -> StageGraph {
        let specs = self.insertion.iter().map(|&k| {
            let mut spec = StageSpec::test(format!("s{k}"));
            for &d in &self.deps[k] {
                spec = spec.after(format!("s{d}"));
            }
            spec
        });
        StageGraph::builder().stages(specs).build().unwrap()
    }

    /// `reach[a][b]`: whether `s{b}` runs after `s{a}` through one or more dependencies.
    fn reach(&self) -> Vec<Vec<bool>> {
        let n = self.deps.len();
        let mut reach = vec![vec![false; n]; n];
        // `k` only depends on smaller ones, so index order is a run order.
        for k in 0..n {
            for &d in &self.deps[k] {
                reach[d][k] = true;
                for a in 0..n {
                    if reach[a][d] {
                        reach[a][k] = true;
                    }
                }
            }
        }
        reach
    }
}

fn dag(max_stages: usize) -> impl Strategy<Value = Dag> {
    (1..=max_stages)
        .prop_flat_map(|n| {
            let deps = (0..n)
                .map(|k| proptest::sample::subsequence((0..k).collect::<Vec<_>>(), 0..=k.min(4)))
                .collect::<Vec<_>>();
            (deps, Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
        .prop_map(|(deps, insertion)| Dag { deps, insertion })
}

/// The `k` of every stage of `graph`, by index.
fn ks(graph: &StageGraph) -> Vec<usize> {
    graph
        .stages()
        .map(|s| s.id.as_str()[1..].parse().unwrap())
        .collect()
}

fn index(graph: &StageGraph, k: usize) -> StageIndex {
    graph.stage_index(&format!("s{k}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn petgraph_algorithms_agree_with_the_reference(dag in dag(40)) {
        let graph = dag.graph();
        let k_of = ks(&graph);
        let reach = dag.reach();
        let n = graph.len();
        prop_assert_eq!(graph.node_count(), n);
        prop_assert_eq!(graph.edge_count(), dag.deps.iter().map(Vec::len).sum::<usize>());

        // toposort and Topo: every dependency comes before its dependent.
        let sorted = toposort(&graph, None).unwrap();
        let mut topo = Vec::new();
        let mut walk = Topo::new(&graph);
        while let Some(stage) = walk.next(&graph) {
            topo.push(stage);
        }
        for order in [&sorted, &topo] {
            prop_assert_eq!(order.len(), n);
            let mut position = vec![usize::MAX; n];
            for (at, stage) in order.iter().enumerate() {
                position[k_of[stage.index()]] = at;
            }
            for (k, deps) in dag.deps.iter().enumerate() {
                for &d in deps {
                    prop_assert!(position[d] < position[k]);
                }
            }
        }

        // Dfs and has_path_connecting against the reference reachability.
        for a in 0..n {
            let from = index(&graph, a);
            let mut seen = BTreeSet::new();
            let mut dfs = Dfs::new(&graph, from);
            while let Some(stage) = dfs.next(&graph) {
                seen.insert(k_of[stage.index()]);
            }
            let expected: BTreeSet<usize> =
                (0..n).filter(|&b| b == a || reach[a][b]).collect();
            prop_assert_eq!(&seen, &expected);
            for b in 0..n {
                let path = has_path_connecting(&graph, from, index(&graph, b), None);
                prop_assert_eq!(path, a == b || reach[a][b]);
            }
        }

        // Neighbours both ways agree with the declared dependencies.
        for k in 0..n {
            let stage = index(&graph, k);
            let incoming: BTreeSet<usize> =
                graph.neighbors_directed(stage, Incoming).map(|d| k_of[d.index()]).collect();
            prop_assert_eq!(incoming, dag.deps[k].iter().copied().collect::<BTreeSet<_>>());
            let outgoing: BTreeSet<usize> =
                graph.neighbors_directed(stage, Outgoing).map(|d| k_of[d.index()]).collect();
            let dependents: BTreeSet<usize> =
                (0..n).filter(|&j| dag.deps[j].contains(&k)).collect();
            prop_assert_eq!(outgoing, dependents);
            for edge in graph.edges_directed(stage, Incoming) {
                prop_assert_eq!(edge.target(), stage);
            }
        }
        let mut edges: Vec<(usize, usize)> = graph
            .edge_references()
            .map(|e| (k_of[e.source().index()], k_of[e.target().index()]))
            .collect();
        edges.sort_unstable();
        let mut declared: Vec<(usize, usize)> = dag
            .deps
            .iter()
            .enumerate()
            .flat_map(|(k, deps)| deps.iter().map(move |&d| (d, k)))
            .collect();
        declared.sort_unstable();
        prop_assert_eq!(edges, declared);
    }

    #[test]
    fn ancestors_descendants_and_redundant_edges_agree_with_the_reference(dag in dag(40)) {
        let graph = dag.graph();
        let k_of = ks(&graph);
        let reach = dag.reach();
        let n = graph.len();
        for k in 0..n {
            let stage = index(&graph, k);
            let ancestors: BTreeSet<usize> =
                graph.ancestors(stage).unwrap().iter().map(|i| k_of[i.index()]).collect();
            prop_assert_eq!(ancestors, (0..n).filter(|&a| reach[a][k]).collect::<BTreeSet<_>>());
            let descendants = graph.descendants(stage).unwrap();
            prop_assert!(descendants.windows(2).all(|w| w[0] < w[1]), "in index order");
            let descendants: BTreeSet<usize> =
                descendants.iter().map(|i| k_of[i.index()]).collect();
            prop_assert_eq!(descendants, (0..n).filter(|&b| reach[k][b]).collect::<BTreeSet<_>>());
        }

        // An edge d -> k is redundant iff another dependency of k is reached from d.
        let mut expected: Vec<RedundantDependency> = Vec::new();
        for (k, deps) in dag.deps.iter().enumerate() {
            for &d in deps {
                if deps.iter().any(|&other| other != d && reach[d][other]) {
                    expected.push(RedundantDependency {
                        stage: index(&graph, k),
                        dependency: index(&graph, d),
                    });
                }
            }
        }
        expected.sort_unstable();
        prop_assert_eq!(graph.redundant_dependencies(), expected);
    }
}

/// The pipeline from the docs, with `ship` the only sink and `compile` the only root:
/// compile -> {unit, lint} -> package -> ship, and docs -> ship, docs after compile.
fn pipeline() -> StageGraph {
    StageGraph::builder()
        .stage(StageSpec::build("compile"))
        .stage(StageSpec::test("unit").after("compile"))
        .stage(StageSpec::test("lint").after("compile"))
        .stage(StageSpec::test("docs").after("compile"))
        .stage(StageSpec::stage("package").after("unit").after("lint"))
        .stage(StageSpec::deploy("ship").after("package").after("docs"))
        .build()
        .unwrap()
}

fn ids(graph: &StageGraph, indices: impl IntoIterator<Item = StageIndex>) -> Vec<&str> {
    indices
        .into_iter()
        .map(|i| graph.stage_at(i).unwrap().id.as_str())
        .collect()
}

#[test]
fn dominators_run_on_the_graph() {
    let graph = pipeline();
    let compile = graph.stage_index("compile").unwrap();
    let dominators = simple_fast(&graph, compile);
    let idom = |id| {
        dominators
            .immediate_dominator(graph.stage_index(id).unwrap())
            .map(|d| graph.stage_at(d).unwrap().id.as_str())
    };
    assert_eq!(idom("compile"), None);
    assert_eq!(idom("unit"), Some("compile"));
    assert_eq!(idom("package"), Some("compile"));
    assert_eq!(idom("ship"), Some("compile"));

    // Against the edges, `ship` is the root, and `package` dominates `unit` and `lint`.
    let ship = graph.stage_index("ship").unwrap();
    let post = simple_fast(Reversed(&graph), ship);
    let pidom = |id| {
        post.immediate_dominator(graph.stage_index(id).unwrap())
            .map(|d| graph.stage_at(d).unwrap().id.as_str())
    };
    assert_eq!(pidom("unit"), Some("package"));
    assert_eq!(pidom("lint"), Some("package"));
    assert_eq!(pidom("compile"), Some("ship"));
}

#[test]
fn dependencies_and_dependents_by_index() {
    let graph = pipeline();
    let package = graph.stage_index("package").unwrap();
    let compile = graph.stage_index("compile").unwrap();
    assert_eq!(
        ids(&graph, graph.dependencies_of(package).unwrap()),
        ["unit", "lint"]
    );
    assert_eq!(
        ids(&graph, graph.dependents_of(compile).unwrap()),
        ["unit", "lint", "docs"]
    );
    assert_eq!(graph.dependencies_of(compile).unwrap().len(), 0);
    assert_eq!(
        ids(&graph, graph.ancestors(package).unwrap()),
        ["compile", "unit", "lint"]
    );
    assert_eq!(
        ids(&graph, graph.descendants(compile).unwrap()),
        ["unit", "lint", "docs", "package", "ship"]
    );
    assert_eq!(
        ids(&graph, graph.topological_indices()),
        ["compile", "unit", "lint", "docs", "package", "ship"]
    );
    let names: Vec<&str> = graph
        .node_references()
        .map(|(_, spec)| spec.id.as_str())
        .collect();
    assert_eq!(names.len(), graph.len());
}

#[test]
fn indices_out_of_range_are_none_not_panics() {
    let graph = pipeline();
    let past = StageIndex::new(graph.len()).unwrap();
    let far = StageIndex::from(u32::MAX);
    for stage in [past, far] {
        assert!(graph.stage_at(stage).is_none());
        assert!(graph.dependencies_of(stage).is_none());
        assert!(graph.dependents_of(stage).is_none());
        assert!(graph.ancestors(stage).is_none());
        assert!(graph.descendants(stage).is_none());
        assert_eq!(graph.neighbors_directed(stage, Outgoing).count(), 0);
        assert_eq!(graph.neighbors_directed(stage, Incoming).count(), 0);
        let compile = graph.stage_index("compile").unwrap();
        assert!(!has_path_connecting(&graph, compile, stage, None));
    }
    // petgraph's `from_index` does not check, but saturates rather than wrapping around.
    assert_eq!(graph.from_index(usize::MAX), far);
    assert!(StageIndex::new(usize::MAX).is_none());

    let empty = StageGraph::builder().build().unwrap();
    assert!(empty.dependents_of(StageIndex::default()).is_none());
    assert!(empty.redundant_dependencies().is_empty());
    assert!(toposort(&empty, None).unwrap().is_empty());
}

#[test]
fn the_shortcut_around_a_chain_is_redundant() {
    let graph = StageGraph::builder()
        .stage(StageSpec::build("a"))
        .stage(StageSpec::build("b").after("a"))
        .stage(StageSpec::build("c").after("b").after("a"))
        .build()
        .unwrap();
    let [a, c] = ["a", "c"].map(|id| graph.stage_index(id).unwrap());
    assert_eq!(
        graph.redundant_dependencies(),
        [RedundantDependency {
            stage: c,
            dependency: a
        }]
    );
    assert!(pipeline().redundant_dependencies().is_empty());
}

#[test]
fn dependencies_added_by_index_are_checked_and_recorded() {
    let mut builder = StageGraph::builder();
    let a = builder.add_stage(StageSpec::build("a"));
    let b = builder.add_stage(StageSpec::test("b").after("a"));
    let c = builder.add_stage(StageSpec::test("c"));
    builder
        .add_dependency(c, b)
        .unwrap()
        .add_dependency(c, a)
        .unwrap();
    // A repeat of a dependency named in `after` is kept once.
    builder.add_dependency(b, a).unwrap();
    let past = StageIndex::new(3).unwrap();
    let err = builder.add_dependency(past, a).map(|_| ()).unwrap_err();
    assert_eq!((err.index, err.len), (past, 3));
    assert_eq!(
        err.to_string(),
        "stage index 3 is out of range: there are 3 stages"
    );
    assert!(builder.add_dependency(a, past).is_err());

    let graph = builder.build().unwrap();
    assert_eq!(graph.get("b").unwrap().after, ["a"]);
    assert_eq!(graph.get("c").unwrap().after, ["b", "a"]);
    assert_eq!(ids(&graph, graph.dependencies_of(c).unwrap()), ["b", "a"]);
    assert_eq!(
        graph.redundant_dependencies(),
        [RedundantDependency {
            stage: c,
            dependency: a
        }]
    );
    // The serde form carries them, as ids.
    let json = serde_json::to_string(&graph).unwrap();
    let back: StageGraph = serde_json::from_str(&json).unwrap();
    assert_eq!(back.get("c").unwrap().after, ["b", "a"]);
}

#[test]
fn dependencies_added_by_index_fail_like_named_ones() {
    let mut builder = StageGraph::builder();
    let a = builder.add_stage(StageSpec::test("a"));
    builder.add_dependency(a, a).unwrap();
    assert!(
        matches!(builder.build(), Err(tollgate::graph::GraphError::SelfDependency { stage }) if stage == "a")
    );

    let mut builder = StageGraph::builder();
    let x = builder.add_stage(StageSpec::test("x"));
    let y = builder.add_stage(StageSpec::test("y").after("x"));
    builder.add_dependency(x, y).unwrap();
    let err = builder.build().unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: x -> y -> x");

    let mut builder = StageGraph::builder();
    let test = builder.add_stage(StageSpec::test("unit"));
    let ship = builder.add_stage(StageSpec::deploy("ship"));
    builder.add_dependency(test, ship).unwrap();
    assert!(matches!(
        builder.build(),
        Err(tollgate::graph::GraphError::DependencyOnLaterStep { stage, dependency, dependency_step: Step::Deploy, .. })
            if stage == "unit" && dependency == "ship"
    ));
}

#[test]
fn a_big_graph_wired_by_index_matches_one_wired_by_id() {
    // A layered graph of 5,000 stages, each after up to three stages of the layer before.
    let n = 5_000;
    let dep = |i: usize, j: usize| (i / 50 - 1) * 50 + (i * 7 + j * 13) % 50;
    let mut by_index = StageGraph::builder();
    let mut by_id = StageGraph::builder();
    for i in 0..n {
        let at = by_index.add_stage(StageSpec::test(format!("s{i}")));
        let mut spec = StageSpec::test(format!("s{i}"));
        if i >= 50 {
            for j in 0..3 {
                let d = StageIndex::new(dep(i, j)).unwrap();
                by_index.add_dependency(at, d).unwrap();
                spec = spec.after(format!("s{}", dep(i, j)));
            }
        }
        by_id.push(spec);
    }
    let (by_index, by_id) = (by_index.build().unwrap(), by_id.build().unwrap());
    assert!(by_index.stages().eq(by_id.stages()));
    let order = |g: &StageGraph| g.topological_indices().collect::<Vec<_>>();
    assert_eq!(order(&by_index), order(&by_id));
    let counts: HashMap<usize, usize> = by_index
        .stage_indices()
        .map(|i| (i.index(), by_index.dependencies_of(i).unwrap().len()))
        .collect();
    assert_eq!(counts[&0], 0);
    assert_eq!(counts[&(n - 1)], 3);
}
