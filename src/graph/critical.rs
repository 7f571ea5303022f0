//! The critical path of a [`StageGraph`]: [`CriticalPath`], the heaviest chain of
//! dependencies, read from the priorities the builder computes (the same weights the engine
//! ranks ready stages by).

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::{StageGraph, StageId};

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
}
