//! [`Matrix`]: one stage expanded into a stage per combination of its axes' values, with
//! readable ids (`test (os=linux, rust=1.85)`), `exclude` and `include`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{GraphError, StageSpec};
use crate::id::StageId;

/// The axes a stage is run over: every combination of one value per axis, less the
/// combinations an `exclude` matches, plus the `include`d ones (GitHub Actions'
/// `strategy.matrix`).
///
/// [`StageGraphBuilder::matrix`](super::StageGraphBuilder::matrix) adds one stage per
/// combination, with the id `<id> (<axis>=<value>, …)` (axes in the order they were added)
/// and the combination in [`StageSpec::matrix`]; a stage that names the base id in `after`
/// depends on every combination.
///
/// - An `exclude` entry removes every combination that has all of its values (it may name
///   fewer axes than there are).
/// - An `include` entry is one more combination, unless a combination with exactly those
///   values is already there; it may name axes of its own.
///
/// ```
/// use tollgate::graph::{Matrix, StageGraph, StageSpec};
///
/// let matrix = Matrix::new()
///     .axis("os", ["linux", "macos"])
///     .axis("rust", ["1.85", "stable"])
///     .exclude([("os", "macos"), ("rust", "1.85")])
///     .include([("os", "windows"), ("rust", "stable")]);
/// let graph = StageGraph::builder()
///     .stage(StageSpec::build("compile"))
///     .matrix(StageSpec::test("test").after("compile"), &matrix)
///     .stage(StageSpec::test("report").after("test"))
///     .build()?;
/// let ids: Vec<&str> = graph.stages_in(tollgate::graph::Step::Test).map(|s| s.id.as_str()).collect();
/// assert_eq!(ids, [
///     "test (os=linux, rust=1.85)",
///     "test (os=linux, rust=stable)",
///     "test (os=macos, rust=stable)",
///     "test (os=windows, rust=stable)",
///     "report",
/// ]);
/// assert_eq!(graph.dependencies("report")?.count(), 4);
/// assert_eq!(graph.get("test (os=linux, rust=1.85)").unwrap().matrix["rust"], "1.85");
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// The axes, in order: a name and its values.
    #[serde(default)]
    pub axes: Vec<(String, Vec<String>)>,
    /// Partial combinations to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Vec<(String, String)>>,
    /// Combinations to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<Vec<(String, String)>>,
}

/// One combination: axis and value pairs, in the order they appear in the id.
type Combination = Vec<(String, String)>;

fn pairs<K: Into<String>, V: Into<String>>(
    entry: impl IntoIterator<Item = (K, V)>,
) -> Vec<(String, String)> {
    entry
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

impl Matrix {
    /// A matrix without axes.
    #[must_use]
    pub fn new() -> Self {
        Matrix::default()
    }

    /// Adds the axis `name` with `values`, after the axes added before.
    #[must_use]
    pub fn axis<V: Into<String>>(
        mut self,
        name: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        self.axes
            .push((name.into(), values.into_iter().map(Into::into).collect()));
        self
    }

    /// Leaves out every combination that has all these values.
    #[must_use]
    pub fn exclude<K: Into<String>, V: Into<String>>(
        mut self,
        entry: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.exclude.push(pairs(entry));
        self
    }

    /// Adds this combination.
    #[must_use]
    pub fn include<K: Into<String>, V: Into<String>>(
        mut self,
        entry: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.include.push(pairs(entry));
        self
    }

    /// The combinations, in order: the product of the axes (the last axis varying fastest)
    /// less the excluded ones, then the included ones that are new.
    #[must_use]
    pub fn combinations(&self) -> Vec<Vec<(String, String)>> {
        let mut out: Vec<Combination> = Vec::new();
        if !self.axes.is_empty() && self.axes.iter().all(|(_, values)| !values.is_empty()) {
            // An odometer over the axes: no recursion, one combination per turn.
            let mut at = vec![0usize; self.axes.len()];
            'product: loop {
                let combination: Combination = self
                    .axes
                    .iter()
                    .zip(&at)
                    .map(|((name, values), &i)| (name.clone(), values[i].clone()))
                    .collect();
                if !self
                    .exclude
                    .iter()
                    .any(|entry| matches(entry, &combination))
                {
                    out.push(combination);
                }
                for axis in (0..at.len()).rev() {
                    at[axis] += 1;
                    if at[axis] < self.axes[axis].1.len() {
                        continue 'product;
                    }
                    at[axis] = 0;
                }
                break;
            }
        }
        for entry in &self.include {
            let combination = self.ordered(entry);
            let as_set = |c: &Combination| c.iter().cloned().collect::<BTreeMap<_, _>>();
            let wanted = as_set(&combination);
            if !out.iter().any(|c| as_set(c) == wanted) {
                out.push(combination);
            }
        }
        out
    }

    /// The stage of each combination: `spec` with the combination's id and values.
    pub fn expand(&self, spec: &StageSpec) -> Result<Vec<StageSpec>, GraphError> {
        let combinations = self.combinations();
        if combinations.is_empty() {
            return Err(GraphError::EmptyMatrix {
                stage: spec.id.clone(),
            });
        }
        let mut seen = HashSet::with_capacity(combinations.len());
        let mut stages = Vec::with_capacity(combinations.len());
        for combination in combinations {
            let mut id = format!("{} (", spec.id);
            for (n, (axis, value)) in combination.iter().enumerate() {
                let comma = if n == 0 { "" } else { ", " };
                let _ = write!(id, "{comma}{axis}={value}");
            }
            id.push(')');
            let id = StageId::unchecked(id);
            if !seen.insert(id.clone()) {
                return Err(GraphError::MatrixClash {
                    stage: spec.id.clone(),
                    id,
                });
            }
            let mut stage = spec.clone();
            stage.id = id;
            stage.matrix = combination.into_iter().collect();
            stages.push(stage);
        }
        Ok(stages)
    }

    /// An include entry's pairs with the matrix's axes first, in axis order, then its own.
    fn ordered(&self, entry: &[(String, String)]) -> Combination {
        let mut ordered: Combination = self
            .axes
            .iter()
            .filter_map(|(axis, _)| entry.iter().find(|(k, _)| k == axis).cloned())
            .collect();
        ordered.extend(
            entry
                .iter()
                .filter(|(k, _)| !self.axes.iter().any(|(axis, _)| axis == k))
                .cloned(),
        );
        ordered
    }
}

/// Whether `combination` has every value of the (non-empty) exclude `entry`.
fn matches(entry: &[(String, String)], combination: &[(String, String)]) -> bool {
    !entry.is_empty()
        && entry
            .iter()
            .all(|pair| combination.iter().any(|have| have == pair))
}
