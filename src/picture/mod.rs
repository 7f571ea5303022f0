//! Pictures for people: the whole pipeline as Mermaid or Graphviz DOT (steps chained in
//! order, gates as diamonds, the button or the automatic check, finally stages marked), a
//! run as a Mermaid gantt, and a self-contained HTML report of a run.
//!
//! [`Pipeline::picture`](crate::pipeline::Pipeline::picture) gives a [`PipelinePicture`];
//! [`gantt`] draws the events an [`Observer`](crate::engine::Observer) collected, and
//! [`html_report`] puts both beside a release's logs, gate verdicts and approval in one file
//! that needs no server and no network.
//!
//! ```
//! use tollgate::executor::from_fn;
//! use tollgate::prelude::*;
//!
//! let ok = || from_fn(|_| Ok(StageOutcome::success()));
//! let pipeline = Pipeline::<Delivery>::builder("shop")
//!     .stage(Stage::build("compile").run(ok()))
//!     .stage(Stage::test("unit").after("compile").run(ok()))
//!     .stage(Stage::stage("staging").run(ok()))
//!     .stage(Stage::deploy("production").run(ok()))
//!     .approvals(ApprovalPolicy::any_of(["rita"])?)
//!     .build()?;
//!
//! let mermaid = pipeline.picture().to_mermaid();
//! // The button is in the picture: a person-operated node between staging and production.
//! assert!(mermaid.contains(r#"approval[\"👤 the button: a person approves (approvers: 1 of rita)"/]"#));
//! assert!(pipeline.picture().to_dot().contains("shape=invtrapezium"));
//! # Ok::<(), tollgate::Error>(())
//! ```

mod report;
mod svg;
mod timeline;

use std::fmt::{self, Write as _};

pub use report::html_report;
pub use timeline::gantt;

use crate::graph::StageGraph;
use crate::id::{EnvironmentName, PipelineName};
use crate::lifecycle::{ModeKind, Move, StateName, Step};

/// The whole pipeline, ready to draw: its stage graph, the gates on each move and who
/// decides the approve move. Made by [`Pipeline::picture`](crate::pipeline::Pipeline::picture).
///
/// The picture reads left to right as a release moves: the commit, then for each move its
/// gates (diamonds) and what it runs (a step's stages, boxed and titled with the step, or
/// the approval), each link labelled with the state the release reaches. In continuous
/// delivery the approval is **the button**, drawn as ISO 5807's manual-operation shape (a
/// trapezoid, wide side up) with a person; in continuous deployment it is an automatic
/// check (a hexagon). Finally stages are dashed and say so.
#[derive(Debug, Clone)]
pub struct PipelinePicture<'a> {
    name: &'a PipelineName,
    mode: ModeKind,
    graph: &'a StageGraph,
    gates: Vec<(Move, String)>,
    approvers: Vec<String>,
    staging: &'a EnvironmentName,
    production: &'a EnvironmentName,
}

/// One element of the chain a release walks through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link<'p> {
    Commit,
    Gate(Move, usize, &'p str),
    Step(Step),
    Approval,
    Deployed,
}

impl<'a> PipelinePicture<'a> {
    /// A picture of the pipeline `name` in `mode` with `graph`, `gates` (each move's gates by
    /// name, in evaluation order), the people or groups who may approve (delivery) and its
    /// two environments.
    pub(crate) fn new(
        name: &'a PipelineName,
        mode: ModeKind,
        graph: &'a StageGraph,
        gates: Vec<(Move, String)>,
        approvers: Vec<String>,
        staging: &'a EnvironmentName,
        production: &'a EnvironmentName,
    ) -> Self {
        PipelinePicture {
            name,
            mode,
            graph,
            gates,
            approvers,
            staging,
            production,
        }
    }

    /// The pipeline's mode.
    #[must_use]
    pub fn mode(&self) -> ModeKind {
        self.mode
    }

    /// The stage graph drawn.
    #[must_use]
    pub fn graph(&self) -> &'a StageGraph {
        self.graph
    }

    /// The chain, in the order a release walks it, with the state reached after each link
    /// that ends a move.
    fn chain(&self) -> Vec<(Link<'_>, Option<StateName>)> {
        let mut chain = vec![(Link::Commit, None)];
        for mv in Move::ALL {
            for (i, (_, gate)) in self.gates.iter().filter(|(m, _)| *m == mv).enumerate() {
                chain.push((Link::Gate(mv, i, gate), None));
            }
            let body = match mv.step() {
                Some(step) => Link::Step(step),
                None => Link::Approval,
            };
            chain.push((body, Some(mv.to())));
        }
        chain.push((Link::Deployed, None));
        chain
    }

    fn title(&self) -> String {
        let practice = match self.mode {
            ModeKind::Delivery => "continuous delivery",
            ModeKind::Deployment => "continuous deployment",
        };
        format!("{} ({practice})", self.name)
    }

    fn step_title(&self, step: Step) -> String {
        match step {
            Step::Build | Step::Test => step.to_string(),
            Step::Stage => format!("stage in {}", self.staging),
            Step::Deploy => format!("deploy to {}", self.production),
        }
    }

    fn approval_label(&self) -> String {
        match self.mode {
            ModeKind::Delivery if self.approvers.is_empty() => {
                "👤 the button: a person approves".to_owned()
            }
            ModeKind::Delivery => format!(
                "👤 the button: a person approves ({})",
                self.approvers.join(", ")
            ),
            ModeKind::Deployment => "⚙ automatic: every gate open approves".to_owned(),
        }
    }

    /// The pipeline as a [Mermaid](https://mermaid.js.org) flowchart, left to right.
    ///
    /// Stages are `s0`, `s1`, … (by the order they were added) inside a subgraph per step;
    /// gates are diamonds `g_<move>_<n>`; the approval is `approval`; the ends are `commit`
    /// and `deployed`. Solid edges between stages are dependencies; the chain's edges carry
    /// the state each move reaches.
    #[must_use]
    pub fn to_mermaid(&self) -> String {
        let mut out = String::with_capacity(256 + self.graph.len() * 48);
        // Writing to a `String` cannot fail.
        let _ = self.write_mermaid(&mut out);
        out
    }

    /// The pipeline in Graphviz [DOT](https://graphviz.org/doc/info/lang.html), left to
    /// right, laid out like [`to_mermaid`](Self::to_mermaid): a `cluster_<step>` per step,
    /// gates as `diamond`s, the button as an `invtrapezium` (delivery) or the automatic check
    /// as a `hexagon` (deployment), finally stages `dashed`. The chain between steps joins
    /// the clusters (`compound=true`, `ltail` / `lhead`).
    #[must_use]
    pub fn to_dot(&self) -> String {
        let mut out = String::with_capacity(256 + self.graph.len() * 56);
        // Writing to a `String` cannot fail.
        let _ = self.write_dot(&mut out);
        out
    }

    /// The pipeline as an SVG drawing (what [`html_report`] embeds): the same chain as
    /// [`to_mermaid`](Self::to_mermaid), laid out by tollgate itself so that it shows with
    /// no script and no network.
    #[must_use]
    pub fn to_svg(&self) -> String {
        svg::pipeline(self)
    }

    fn write_mermaid(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "---\ntitle: {}\n---", mermaid_text(&self.title()))?;
        out.push_str("flowchart LR\n");
        let chain = self.chain();
        for (link, _) in &chain {
            match *link {
                Link::Commit => out.push_str("    commit((\"commit\"))\n"),
                Link::Deployed => out.push_str("    deployed((\"deployed\"))\n"),
                Link::Gate(mv, i, gate) => {
                    writeln!(out, "    g_{mv}_{i}{{\"{}\"}}", mermaid_text(gate))?;
                }
                Link::Approval => {
                    let label = mermaid_text(&self.approval_label());
                    match self.mode {
                        ModeKind::Delivery => writeln!(out, "    approval[\\\"{label}\"/]")?,
                        ModeKind::Deployment => writeln!(out, "    approval{{{{\"{label}\"}}}}")?,
                    }
                }
                Link::Step(step) => {
                    let title = mermaid_text(&self.step_title(step));
                    let mut members = self.members(step).peekable();
                    if members.peek().is_none() {
                        writeln!(out, "    step_{step}[\"{title} (no stages)\"]")?;
                        continue;
                    }
                    writeln!(out, "    subgraph step_{step} [\"{title}\"]")?;
                    for i in members {
                        let id = self.graph.spec(i).id.as_str();
                        if self.graph.is_finally(i) {
                            writeln!(out, "        s{i}[\"{id} (finally)\"]:::finally")?;
                        } else {
                            writeln!(out, "        s{i}[\"{id}\"]")?;
                        }
                    }
                    out.push_str("    end\n");
                }
            }
        }
        for pair in chain.windows(2) {
            let (from, reached) = pair[0];
            let to = pair[1].0;
            let (from, to) = (mermaid_id(from), mermaid_id(to));
            match reached {
                Some(state) => writeln!(out, "    {from} ==>|{state}| {to}")?,
                None => writeln!(out, "    {from} ==> {to}")?,
            }
        }
        for stage in 0..self.graph.len() {
            for &dependency in self.graph.deps_of(stage) {
                writeln!(out, "    s{dependency} --> s{stage}")?;
            }
        }
        if (0..self.graph.len()).any(|i| self.graph.is_finally(i)) {
            out.push_str("    classDef finally stroke-dasharray: 5 5\n");
        }
        Ok(())
    }

    fn write_dot(&self, out: &mut String) -> fmt::Result {
        out.push_str("digraph pipeline {\n    rankdir=LR;\n    compound=true;\n");
        writeln!(
            out,
            "    label=\"{}\";\n    labelloc=t;",
            dot_text(&self.title())
        )?;
        let chain = self.chain();
        for (link, _) in &chain {
            match *link {
                Link::Commit => {
                    out.push_str("    \"the commit\" [label=\"commit\", shape=circle];\n");
                }
                Link::Deployed => {
                    out.push_str(
                        "    \"the deployed release\" [label=\"deployed\", shape=doublecircle];\n",
                    );
                }
                Link::Gate(..) => {
                    writeln!(
                        out,
                        "    \"{}\" [label=\"{}\", shape=diamond];",
                        dot_id(*link, self),
                        dot_text(gate_name(*link))
                    )?;
                }
                Link::Approval => {
                    let shape = match self.mode {
                        ModeKind::Delivery => "invtrapezium",
                        ModeKind::Deployment => "hexagon",
                    };
                    writeln!(
                        out,
                        "    \"the approval\" [label=\"{}\", shape={shape}];",
                        dot_text(&self.approval_label())
                    )?;
                }
                Link::Step(step) => {
                    let title = dot_text(&self.step_title(step));
                    let mut members = self.members(step).peekable();
                    if members.peek().is_none() {
                        writeln!(
                            out,
                            "    \"{}\" [label=\"{title} (no stages)\", shape=box, style=dotted];",
                            dot_id(*link, self)
                        )?;
                        continue;
                    }
                    self.graph.write_dot_cluster(out, step, &title, members)?;
                }
            }
        }
        self.write_dot_chain(out, &chain)?;
        for stage in 0..self.graph.len() {
            for &dependency in self.graph.deps_of(stage) {
                let dependency = &self.graph.spec(dependency as usize).id;
                writeln!(
                    out,
                    "    \"{dependency}\" -> \"{}\";",
                    self.graph.spec(stage).id
                )?;
            }
        }
        out.push_str("}\n");
        Ok(())
    }

    /// The chain's edges in DOT: thick, labelled with the state reached, joining clusters.
    fn write_dot_chain(
        &self,
        out: &mut String,
        chain: &[(Link<'_>, Option<StateName>)],
    ) -> fmt::Result {
        for pair in chain.windows(2) {
            let (from, reached) = pair[0];
            let to = pair[1].0;
            let mut attributes = vec!["penwidth=2".to_owned()];
            if let Some(state) = reached {
                attributes.push(format!("label=\"{state}\""));
            }
            if let Link::Step(step) = from {
                if self.members(step).next().is_some() {
                    attributes.push(format!("ltail=cluster_{step}"));
                }
            }
            if let Link::Step(step) = to {
                if self.members(step).next().is_some() {
                    attributes.push(format!("lhead=cluster_{step}"));
                }
            }
            writeln!(
                out,
                "    \"{}\" -> \"{}\" [{}];",
                dot_id(from, self),
                dot_id(to, self),
                attributes.join(", ")
            )?;
        }
        Ok(())
    }

    /// The indices of the stages of `step`, in the order they were added.
    fn members(&self, step: Step) -> impl Iterator<Item = usize> + '_ {
        (0..self.graph.len()).filter(move |&i| self.graph.step_of(i) == step)
    }
}

fn gate_name(link: Link<'_>) -> &str {
    match link {
        Link::Gate(_, _, name) => name,
        _ => "",
    }
}

fn mermaid_id(link: Link<'_>) -> String {
    match link {
        Link::Commit => "commit".to_owned(),
        Link::Gate(mv, i, _) => format!("g_{mv}_{i}"),
        Link::Step(step) => format!("step_{step}"),
        Link::Approval => "approval".to_owned(),
        Link::Deployed => "deployed".to_owned(),
    }
}

/// A DOT node id for a link. Ids of the chain's own nodes hold a space, which no stage id
/// may, so they never collide with a stage; a step with stages stands for its cluster
/// through its first stage.
fn dot_id(link: Link<'_>, picture: &PipelinePicture<'_>) -> String {
    match link {
        Link::Commit => "the commit".to_owned(),
        Link::Gate(mv, i, _) => format!("gate {mv} {i}"),
        Link::Step(step) => match picture.members(step).next() {
            Some(first) => picture.graph.spec(first).id.as_str().to_owned(),
            None => format!("the {step} step"),
        },
        Link::Approval => "the approval".to_owned(),
        Link::Deployed => "the deployed release".to_owned(),
    }
}

/// Text inside a quoted Mermaid label: quotes, angle brackets and `#` as Mermaid's entity
/// codes, line breaks as spaces.
pub(crate) fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text inside a quoted DOT string: backslashes and quotes escaped, line breaks as spaces.
pub(crate) fn dot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text inside HTML or SVG: the five characters XML reserves as entities.
pub(crate) fn xml_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_escape_what_would_end_them() {
        assert_eq!(
            mermaid_text(r#"a "b" <c> #1"#),
            "a #quot;b#quot; #lt;c#gt; #35;1"
        );
        assert_eq!(dot_text("a \"b\" \\ c\nd"), "a \\\"b\\\" \\\\ c d");
        assert_eq!(
            xml_text("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
