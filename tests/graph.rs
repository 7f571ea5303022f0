//! Integration tests of the stage graph through the public API: huge graphs build without
//! deep recursion, random DAGs and random cycles are handled correctly, and the serde form
//! round-trips and validates.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::graph::{GraphError, StageGraph, StageGraphBuilder, StageSpec, Step};

const HUGE: usize = 1_000_000;

fn stage_name(i: usize) -> String {
    format!("s{i}")
}

// ---- huge graphs ----
//
// The checks compare against the graph's own insertion order rather than formatting a
// million names again, so that the tests stay fast in debug builds.

/// Builds `s0 <- s1 <- … <- s(n-1)`, where `s0` also runs after `first_after` if given.
fn chain(n: usize, first_after: Option<&str>) -> StageGraphBuilder {
    let mut builder = StageGraph::builder();
    let mut previous = stage_name(0);
    builder.push(match first_after {
        Some(dependency) => StageSpec::build(previous.clone()).after(dependency),
        None => StageSpec::build(previous.clone()),
    });
    for i in 1..n {
        let name = stage_name(i);
        builder.push(StageSpec::build(name.clone()).after(previous));
        previous = name;
    }
    builder
}

/// Whether the graph's topological order is the order its stages were added in.
fn runs_in_insertion_order(graph: &StageGraph) -> bool {
    graph
        .topological_order()
        .zip(graph.stages())
        .all(|(ordered, added)| std::ptr::eq(ordered, added))
}

#[test]
fn million_stage_chain() {
    let graph = chain(HUGE, None).build().unwrap();
    assert_eq!(graph.len(), HUGE);
    assert_eq!(graph.topological_order().len(), HUGE);
    assert!(runs_in_insertion_order(&graph));

    let path = graph.critical_path();
    assert_eq!(path.stages.len(), HUGE);
    assert!(path.stages.iter().eq(graph.stages().map(|spec| &spec.id)));
    assert_eq!(path.estimate, Duration::ZERO);

    let dot = graph.to_dot();
    // Header, one cluster of three lines plus a line per stage, an edge per link, the end.
    assert_eq!(dot.lines().count(), 2 + 3 + HUGE + (HUGE - 1) + 1);
    assert!(dot.ends_with("    \"s999998\" -> \"s999999\";\n}\n"));
}

#[test]
fn million_stage_fan_out() {
    let mut builder = StageGraph::builder();
    builder.push(StageSpec::build("root").estimate(Duration::from_secs(1)));
    for i in 1..HUGE {
        builder.push(StageSpec::test(stage_name(i)).after("root"));
    }
    let graph = builder.require_step(Step::Test).build().unwrap();
    assert_eq!(graph.len(), HUGE);
    assert_eq!(graph.dependents("root").unwrap().count(), HUGE - 1);
    assert_eq!(graph.topological_order().len(), HUGE);
    assert!(runs_in_insertion_order(&graph));

    let path = graph.critical_path();
    assert_eq!(path.stages, ["root", "s1"]);
    assert_eq!(path.estimate, Duration::from_secs(1));

    let dot = graph.to_dot();
    // Header, two clusters of three lines plus a line per stage, an edge per link, the end.
    assert_eq!(dot.lines().count(), 2 + 6 + HUGE + (HUGE - 1) + 1);
    assert!(dot.contains("    subgraph cluster_test {\n"));
    assert!(dot.ends_with("    \"root\" -> \"s999999\";\n}\n"));
}

#[test]
fn million_stage_cycle_is_reported_whole() {
    // The chain, closed into a loop by making its first stage run after its last.
    let err = chain(HUGE, Some(&stage_name(HUGE - 1)))
        .build()
        .unwrap_err();
    let GraphError::Cycle { stages } = err else {
        panic!("expected a cycle, got {err:?}");
    };
    assert_eq!(stages.len(), HUGE);
    assert_eq!(stages[0], "s0");
    assert!(
        stages
            .windows(2)
            .all(|pair| index_of(pair[1].as_str()) == index_of(pair[0].as_str()) + 1)
    );
}

// ---- random DAGs ----

/// A random DAG: stage `k` (named `s{k}`) may depend only on stages `j < k`, and steps never
/// decrease with `k`, so every dependency is on the same or an earlier step. Stages are
/// added in a shuffled order so that the builder cannot rely on dependencies coming first.
#[derive(Debug, Clone)]
struct Dag {
    /// `deps[k]`: the dependencies stage `k` declares, repeats included.
    deps: Vec<Vec<usize>>,
    steps: Vec<Step>,
    estimates: Vec<Option<u64>>,
    insertion: Vec<usize>,
}

impl Dag {
    fn len(&self) -> usize {
        self.deps.len()
    }

    fn spec(&self, k: usize, extra_dependency: Option<usize>) -> StageSpec {
        let mut spec = StageSpec::new(stage_name(k), self.steps[k]);
        for &d in self.deps[k].iter().chain(&extra_dependency) {
            spec = spec.after(stage_name(d));
        }
        if let Some(ms) = self.estimates[k] {
            spec = spec.estimate(Duration::from_millis(ms));
        }
        spec
    }

    fn specs(&self) -> Vec<StageSpec> {
        self.insertion.iter().map(|&k| self.spec(k, None)).collect()
    }

    fn weight(&self, k: usize) -> u64 {
        self.estimates[k].map_or(1, |ms| ms.max(1))
    }

    /// The weight of the heaviest path, by dynamic programming over stage numbers (every
    /// edge goes from a lower to a higher number).
    fn heaviest_path_weight(&self) -> u64 {
        let mut ending_at = vec![0u64; self.len()];
        for k in 0..self.len() {
            let before = self.deps[k]
                .iter()
                .map(|&d| ending_at[d])
                .max()
                .unwrap_or(0);
            ending_at[k] = before + self.weight(k);
        }
        ending_at.into_iter().max().unwrap_or(0)
    }

    /// Whether stage `to` depends on stage `from`, directly or not.
    fn reaches(&self, from: usize, to: usize) -> bool {
        let mut reached = vec![false; self.len()];
        reached[from] = true;
        for k in from + 1..=to {
            reached[k] = self.deps[k].iter().any(|&d| reached[d]);
        }
        reached[to]
    }
}

fn index_of(name: &str) -> usize {
    name.strip_prefix('s').unwrap().parse().unwrap()
}

fn dag(max_stages: usize) -> impl Strategy<Value = Dag> {
    (1..=max_stages)
        .prop_flat_map(|n| {
            let deps = (0..n)
                .map(|k| {
                    if k == 0 {
                        Just(Vec::new()).boxed()
                    } else {
                        prop::collection::vec(0..k, 0..=4.min(2 * k)).boxed()
                    }
                })
                .collect::<Vec<_>>();
            let steps = prop::collection::vec(0..Step::ALL.len(), n);
            let estimates = prop::collection::vec(prop::option::of(0..500u64), n);
            let insertion = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            (deps, steps, estimates, insertion)
        })
        .prop_map(|(deps, mut steps, estimates, insertion)| {
            steps.sort_unstable();
            Dag {
                deps,
                steps: steps.into_iter().map(|s| Step::ALL[s]).collect(),
                estimates,
                insertion,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_dags_build_and_order_correctly(dag in dag(60)) {
        let graph = StageGraph::builder().stages(dag.specs()).build().unwrap();
        prop_assert_eq!(graph.len(), dag.len());

        // Dependencies are the declared ones without repeats, first occurrence first.
        for k in 0..dag.len() {
            let declared: Vec<usize> = {
                let mut seen = HashSet::new();
                dag.deps[k].iter().copied().filter(|d| seen.insert(*d)).collect()
            };
            let actual: Vec<usize> = graph
                .dependencies(&stage_name(k))
                .unwrap()
                .map(|s| index_of(s.id.as_str()))
                .collect();
            prop_assert_eq!(actual, declared);
        }

        // The topological order is a permutation with every dependency first.
        let mut position = vec![usize::MAX; dag.len()];
        for (at, spec) in graph.topological_order().enumerate() {
            let k = index_of(spec.id.as_str());
            prop_assert_eq!(position[k], usize::MAX, "{} listed twice", spec.id);
            position[k] = at;
        }
        prop_assert!(position.iter().all(|&p| p != usize::MAX));
        for k in 0..dag.len() {
            for &d in &dag.deps[k] {
                prop_assert!(position[d] < position[k], "s{} ran before its dependency s{}", k, d);
            }
        }

        // The critical path is a chain of dependencies as heavy as the heaviest path.
        let path = graph.critical_path();
        let chain: Vec<usize> = path.stages.iter().map(|id| index_of(id.as_str())).collect();
        prop_assert!(!chain.is_empty());
        for pair in chain.windows(2) {
            prop_assert!(dag.deps[pair[1]].contains(&pair[0]), "s{} does not depend on s{}", pair[1], pair[0]);
        }
        let weight: u64 = chain.iter().map(|&k| dag.weight(k)).sum();
        prop_assert_eq!(weight, dag.heaviest_path_weight());
        let estimate: u64 = chain.iter().filter_map(|&k| dag.estimates[k]).sum();
        prop_assert_eq!(path.estimate, Duration::from_millis(estimate));
    }

    #[test]
    fn a_back_edge_is_reported_as_a_real_cycle(
        dag in dag(60),
        pick in any::<prop::sample::Index>(),
    ) {
        // Pick a pair `from` → `to` (`to` depends on `from`, maybe indirectly) and make
        // `from` depend on `to` too. All stages share one step so that the back edge is
        // not a dependency on a later step.
        let pairs: Vec<(usize, usize)> = (0..dag.len())
            .flat_map(|to| (0..to).map(move |from| (from, to)))
            .filter(|&(from, to)| dag.reaches(from, to))
            .collect();
        prop_assume!(!pairs.is_empty());
        let (from, to) = pairs[pick.index(pairs.len())];
        let specs = dag.insertion.iter().map(|&k| {
            let extra = (k == from).then_some(to);
            let mut spec = dag.spec(k, extra);
            spec.step = Step::Test;
            spec
        });

        let err = StageGraph::builder().stages(specs).build().unwrap_err();
        let GraphError::Cycle { stages } = err else {
            return Err(TestCaseError::fail(format!("expected a cycle, got {err:?}")));
        };
        let cycle: Vec<usize> = stages.iter().map(|id| index_of(id.as_str())).collect();
        prop_assert!(cycle.len() >= 2);
        let distinct: HashSet<usize> = cycle.iter().copied().collect();
        prop_assert_eq!(distinct.len(), cycle.len());
        let depends_on = |stage: usize, dependency: usize| {
            dag.deps[stage].contains(&dependency) || (stage == from && dependency == to)
        };
        for (i, &stage) in cycle.iter().enumerate() {
            let before = cycle[(i + cycle.len() - 1) % cycle.len()];
            prop_assert!(depends_on(stage, before), "s{} does not depend on s{}", stage, before);
        }
    }
}

// ---- serde ----

fn sample() -> StageGraph {
    StageGraph::builder()
        .stage(
            StageSpec::build("compile")
                .description("cargo build --release")
                .estimate(Duration::from_secs(90)),
        )
        .stage(StageSpec::test("unit").after("compile"))
        .stage(StageSpec::test("lint").after("compile").after("compile"))
        .stage(StageSpec::deploy("ship").after("unit").after("lint"))
        .build()
        .unwrap()
}

#[test]
fn serde_round_trip_keeps_stages_and_order() {
    let graph = sample();
    let json = serde_json::to_string(&graph).unwrap();
    assert!(json.contains(r#""estimate":90000"#), "{json}");
    let back: StageGraph = serde_json::from_str(&json).unwrap();

    let specs = |g: &StageGraph| g.stages().cloned().collect::<Vec<_>>();
    let order = |g: &StageGraph| {
        g.topological_order()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(specs(&back), specs(&graph));
    assert_eq!(order(&back), order(&graph));
    assert_eq!(back.critical_path(), graph.critical_path());
    assert_eq!(back.to_dot(), graph.to_dot());
    // The repeated dependency was dropped before serializing.
    assert_eq!(back.get("lint").unwrap().after, ["compile"]);
}

#[test]
fn serde_rejects_an_unknown_dependency_naming_the_stage() {
    let json = r#"[
        {"id": "compile", "step": "build"},
        {"id": "unit", "step": "test", "after": ["compil"]}
    ]"#;
    let err = serde_json::from_str::<StageGraph>(json).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("stage `unit` depends on unknown stage `compil`"),
        "{message}"
    );
}

#[test]
fn serde_rejects_a_cycle_naming_its_stages() {
    let json = r#"[
        {"id": "a", "step": "test", "after": ["b"]},
        {"id": "b", "step": "test", "after": ["a"]}
    ]"#;
    let err = serde_json::from_str::<StageGraph>(json).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("dependency cycle: a -> b -> a"),
        "{message}"
    );
}

#[test]
fn serde_rejects_an_invalid_id() {
    let json = r#"[{"id": "two;words", "step": "build"}]"#;
    let err = serde_json::from_str::<StageGraph>(json).unwrap_err();
    assert!(err.to_string().contains("two;words"), "{err}");
}
