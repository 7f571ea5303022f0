//! Read-only views of a [`StageGraph`]: its [`CriticalPath`] and Mermaid and Graphviz DOT
//! renderings.

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::{StageGraph, StageId, Step};

/// The heaviest chain of dependencies in a graph: the stages that bound how fast a run can
/// finish, however many stages run in parallel.
///
/// Its serde form gives `estimate` in whole milliseconds, as [`StageSpec`](super::StageSpec)
/// does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CriticalPath {
    /// The stages of the chain in run order: each depends on the one before it.
    pub stages: Vec<StageId>,
    /// The sum of the chain's estimates; stages without an estimate add nothing.
    #[serde(serialize_with = "millis")]
    pub estimate: Duration,
}

impl StageGraph {
    /// The heaviest dependency chain.
    ///
    /// A stage weighs its estimate in milliseconds, or 1 ms when it has none (or an estimate
    /// under 1 ms), so among chains without estimates the longest wins. Ties go to the stages
    /// added first. An empty graph has an empty path.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let minutes = |m: u64| Duration::from_secs(m * 60);
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::build("compile").estimate(minutes(5)))
    ///     .stage(StageSpec::test("unit").after("compile").estimate(minutes(2)))
    ///     .stage(StageSpec::test("e2e").after("compile").estimate(minutes(20)))
    ///     .stage(StageSpec::deploy("ship").after("unit").after("e2e"))
    ///     .build()?;
    ///
    /// let path = graph.critical_path();
    /// assert_eq!(path.stages, ["compile", "e2e", "ship"]);
    /// assert_eq!(path.estimate, minutes(25));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn critical_path(&self) -> CriticalPath {
        // The first stage of greatest priority. It has no dependencies: a dependency of it
        // would weigh at least 1 more.
        let mut next = heaviest(&self.priority, 0..self.len() as u32);
        let mut stages = Vec::new();
        let mut estimate = Duration::ZERO;
        while let Some(stage) = next {
            let spec = &self.stages[stage];
            stages.push(spec.id.clone());
            estimate = estimate.saturating_add(spec.estimate.unwrap_or_default());
            next = heaviest(&self.priority, self.dependents_row(stage).iter().copied());
        }
        CriticalPath { stages, estimate }
    }

    /// The graph as a [Mermaid](https://mermaid.js.org) flowchart, left to right.
    ///
    /// Each step with stages is a subgraph titled with the step's name. Nodes are named `s0`,
    /// `s1`, … by the order stages were added and labelled with their ids; each dependency is
    /// an edge from the dependency to the stage that needs it.
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::build("compile"))
    ///     .stage(StageSpec::test("unit").after("compile"))
    ///     .build()?;
    ///
    /// let mermaid = graph.to_mermaid();
    /// assert!(mermaid.starts_with("flowchart LR\n"));
    /// assert!(mermaid.contains("subgraph step_test [test]"));
    /// assert!(mermaid.contains(r#"s0["compile"]"#));
    /// assert!(mermaid.contains("s0 --> s1"));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn to_mermaid(&self) -> String {
        let mut out = String::with_capacity(64 + self.len() * 32);
        // Writing to a `String` cannot fail.
        let _ = self.write_mermaid(&mut out);
        out
    }

    /// The graph in Graphviz [DOT](https://graphviz.org/doc/info/lang.html), left to right.
    ///
    /// Each step with stages is a `cluster_<step>` subgraph labelled with the step's name.
    /// Nodes are the quoted stage ids, which never need escaping; each dependency is an edge
    /// from the dependency to the stage that needs it.
    ///
    /// ```
    /// use tollgate::graph::{StageGraph, StageSpec};
    ///
    /// let graph = StageGraph::builder()
    ///     .stage(StageSpec::build("compile"))
    ///     .stage(StageSpec::test("unit").after("compile"))
    ///     .build()?;
    ///
    /// let dot = graph.to_dot();
    /// assert!(dot.starts_with("digraph pipeline {\n    rankdir=LR;\n"));
    /// assert!(dot.contains("subgraph cluster_build {"));
    /// assert!(dot.contains(r#"label="build";"#));
    /// assert!(dot.contains(r#""compile" -> "unit";"#));
    /// assert!(dot.ends_with("}\n"));
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn to_dot(&self) -> String {
        let mut out = String::with_capacity(64 + self.len() * 40);
        // Writing to a `String` cannot fail.
        let _ = self.write_dot(&mut out);
        out
    }

    fn write_mermaid(&self, out: &mut String) -> fmt::Result {
        out.push_str("flowchart LR\n");
        for step in Step::ALL {
            let mut members = self.members(step).peekable();
            if members.peek().is_none() {
                continue;
            }
            writeln!(out, "    subgraph step_{step} [{step}]")?;
            for (i, id) in members {
                writeln!(out, "        s{i}[\"{id}\"]")?;
            }
            out.push_str("    end\n");
        }
        for stage in 0..self.len() {
            for &dependency in self.deps_of(stage) {
                writeln!(out, "    s{dependency} --> s{stage}")?;
            }
        }
        Ok(())
    }

    fn write_dot(&self, out: &mut String) -> fmt::Result {
        out.push_str("digraph pipeline {\n    rankdir=LR;\n");
        for step in Step::ALL {
            let mut members = self.members(step).peekable();
            if members.peek().is_none() {
                continue;
            }
            writeln!(out, "    subgraph cluster_{step} {{")?;
            writeln!(out, "        label=\"{step}\";")?;
            for (_, id) in members {
                writeln!(out, "        \"{id}\";")?;
            }
            out.push_str("    }\n");
        }
        for (stage, spec) in self.stages.iter().enumerate() {
            for &dependency in self.deps_of(stage) {
                let dependency = &self.stages[dependency as usize].id;
                writeln!(out, "    \"{dependency}\" -> \"{}\";", spec.id)?;
            }
        }
        out.push_str("}\n");
        Ok(())
    }

    /// The index and id of each stage of `step`, in the order they were added.
    fn members(&self, step: Step) -> impl Iterator<Item = (usize, &StageId)> + '_ {
        self.stages
            .iter()
            .enumerate()
            .filter(move |(_, spec)| spec.step == step)
            .map(|(i, spec)| (i, &spec.id))
    }
}

/// The first of `candidates` with the greatest priority.
fn heaviest(priority: &[u64], candidates: impl IntoIterator<Item = u32>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for candidate in candidates {
        let candidate = candidate as usize;
        if best.is_none_or(|b| priority[candidate] > priority[b]) {
            best = Some(candidate);
        }
    }
    best
}

/// Serializes a duration as whole milliseconds, saturating.
fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::StageSpec;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn diamond() -> StageGraph {
        StageGraph::builder()
            .stage(StageSpec::build("top").estimate(ms(10)))
            .stage(StageSpec::test("left").after("top").estimate(ms(100)))
            .stage(StageSpec::test("right").after("top"))
            .stage(StageSpec::deploy("bottom").after("left").after("right"))
            .build()
            .unwrap()
    }

    #[test]
    fn critical_path_follows_the_heaviest_branch() {
        let path = diamond().critical_path();
        assert_eq!(path.stages, ["top", "left", "bottom"]);
        assert_eq!(path.estimate, ms(110));
    }

    #[test]
    fn without_estimates_the_longest_chain_wins() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("short"))
            .stage(StageSpec::build("a"))
            .stage(StageSpec::build("b").after("a"))
            .stage(StageSpec::build("c").after("b"))
            .build()
            .unwrap();
        let path = graph.critical_path();
        assert_eq!(path.stages, ["a", "b", "c"]);
        assert_eq!(path.estimate, Duration::ZERO);
    }

    #[test]
    fn critical_path_ties_go_to_the_first_added() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("x"))
            .stage(StageSpec::build("y"))
            .build()
            .unwrap();
        assert_eq!(graph.critical_path().stages, ["x"]);
    }

    #[test]
    fn critical_path_of_an_empty_graph_is_empty() {
        let path = StageGraph::builder().build().unwrap().critical_path();
        assert!(path.stages.is_empty());
        assert_eq!(path.estimate, Duration::ZERO);
    }

    #[test]
    fn critical_path_serializes_estimate_in_millis() {
        let json = serde_json::to_string(&diamond().critical_path()).unwrap();
        assert_eq!(json, r#"{"stages":["top","left","bottom"],"estimate":110}"#);
    }

    #[test]
    fn mermaid_layout() {
        assert_eq!(
            diamond().to_mermaid(),
            "flowchart LR
    subgraph step_build [build]
        s0[\"top\"]
    end
    subgraph step_test [test]
        s1[\"left\"]
        s2[\"right\"]
    end
    subgraph step_deploy [deploy]
        s3[\"bottom\"]
    end
    s0 --> s1
    s0 --> s2
    s1 --> s3
    s2 --> s3
"
        );
    }

    #[test]
    fn dot_layout() {
        assert_eq!(
            diamond().to_dot(),
            r#"digraph pipeline {
    rankdir=LR;
    subgraph cluster_build {
        label="build";
        "top";
    }
    subgraph cluster_test {
        label="test";
        "left";
        "right";
    }
    subgraph cluster_deploy {
        label="deploy";
        "bottom";
    }
    "top" -> "left";
    "top" -> "right";
    "left" -> "bottom";
    "right" -> "bottom";
}
"#
        );
    }

    #[test]
    fn ids_with_every_allowed_character_render() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("a-b_c.d/e:F9"))
            .stage(StageSpec::build("end").after("a-b_c.d/e:F9"))
            .build()
            .unwrap();
        assert!(graph.to_mermaid().contains("s0 --> s1"));
        assert!(graph.to_mermaid().contains(r#"s1["end"]"#));
        assert!(graph.to_dot().contains(r#""a-b_c.d/e:F9" -> "end";"#));
    }
}
