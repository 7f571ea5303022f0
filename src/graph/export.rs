//! Renderings of a [`StageGraph`] for people: Mermaid flowcharts and Graphviz DOT.

use std::fmt::{self, Write as _};

use super::{StageGraph, StageId, Step};

impl StageGraph {
    /// The graph as a [Mermaid](https://mermaid.js.org) flowchart, left to right.
    ///
    /// Each step with stages is a subgraph titled with the step's name. Nodes are named `s0`,
    /// `s1`, … by the order stages were added and labelled with their ids (a finally stage's
    /// with `(finally)`, dashed); each dependency is an edge from the dependency to the stage
    /// that needs it. The whole pipeline, gates and approval included, is
    /// [`Pipeline::picture`](crate::pipeline::Pipeline::picture).
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
                if self.is_finally(i) {
                    writeln!(out, "        s{i}[\"{id} (finally)\"]:::finally")?;
                } else {
                    writeln!(out, "        s{i}[\"{id}\"]")?;
                }
            }
            out.push_str("    end\n");
        }
        for stage in 0..self.len() {
            for &dependency in self.deps_of(stage) {
                writeln!(out, "    s{dependency} --> s{stage}")?;
            }
        }
        if (0..self.len()).any(|i| self.is_finally(i)) {
            out.push_str("    classDef finally stroke-dasharray: 5 5\n");
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
            self.write_dot_cluster(out, step, &step.to_string(), members.map(|(i, _)| i))?;
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

    /// The DOT cluster of `step`'s stages `members`, titled `title` (already escaped for a
    /// DOT string): each stage a node, a finally stage dashed. Shared with
    /// [`PipelinePicture`](crate::picture::PipelinePicture)'s drawing.
    pub(crate) fn write_dot_cluster(
        &self,
        out: &mut String,
        step: Step,
        title: &str,
        members: impl Iterator<Item = usize>,
    ) -> fmt::Result {
        writeln!(out, "    subgraph cluster_{step} {{")?;
        writeln!(out, "        label=\"{title}\";")?;
        for i in members {
            let id = &self.stages[i].id;
            if self.is_finally(i) {
                writeln!(
                    out,
                    "        \"{id}\" [label=\"{id}\\n(finally)\", style=dashed];"
                )?;
            } else {
                writeln!(out, "        \"{id}\";")?;
            }
        }
        out.push_str("    }\n");
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::graph::StageSpec;

    fn diamond() -> StageGraph {
        StageGraph::builder()
            .stage(StageSpec::build("top").estimate(Duration::from_millis(10)))
            .stage(
                StageSpec::test("left")
                    .after("top")
                    .estimate(Duration::from_millis(100)),
            )
            .stage(StageSpec::test("right").after("top"))
            .stage(StageSpec::deploy("bottom").after("left").after("right"))
            .build()
            .unwrap()
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
    fn finally_stages_are_marked() {
        let graph = StageGraph::builder()
            .stage(StageSpec::build("compile"))
            .stage(StageSpec::build("cleanup").finally())
            .build()
            .unwrap();
        let mermaid = graph.to_mermaid();
        assert!(
            mermaid.contains("s1[\"cleanup (finally)\"]:::finally"),
            "{mermaid}"
        );
        assert!(mermaid.ends_with("classDef finally stroke-dasharray: 5 5\n"));
        assert!(!diamond().to_mermaid().contains("classDef"));
        let dot = graph.to_dot();
        assert!(
            dot.contains(r#""cleanup" [label="cleanup\n(finally)", style=dashed];"#),
            "{dot}"
        );
        assert!(dot.contains("        \"compile\";\n"));
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
