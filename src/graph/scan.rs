//! The one pass over the specs that [`StageGraphBuilder::build`](super::StageGraphBuilder::build)
//! makes: checks 1 to 7 and the dependency rows, reading each spec once.
//!
//! At a million stages the specs (about 190 bytes each, plus their ids) are far bigger than
//! the caches, so every pass over them is a trip through memory; this pass makes the only one.
//! It maps each stage's id as it reaches the stage and resolves each dependency right away
//! when it names an earlier stage (the usual case). A dependency on a later stage leaves a
//! placeholder and is resolved once every id is mapped. Each check remembers only its first
//! failure (in stage order, then dependency order), and the failures are reported in the
//! order [`build`](super::StageGraphBuilder::build) documents once the pass ends. Ids are
//! hashed, and their slots touched, a few stages before they are used, so that the cache
//! misses of consecutive lookups overlap.

use std::collections::VecDeque;

use super::build::Csr;
use super::intern::{Interner, hash};
use super::{GraphError, Result};
use super::{Placement, StageSpec, Step};

/// How many stages the pass hashes ids and touches slots for at a time, ahead of using them.
const AHEAD: usize = 16;

/// What the pass hands to the rest of `build`.
pub(super) struct Scanned {
    /// The id → index map.
    pub(super) index: Interner,
    /// Each stage's step, finally flag and whether it has a timeout.
    pub(super) placement: Vec<Placement>,
    /// Each stage's own weight for the critical path.
    pub(super) weights: Vec<u64>,
    /// Each stage's dependencies, repeats dropped.
    pub(super) deps: Csr,
}

/// Runs checks 1 to 7 and resolves every dependency; see the module docs.
///
/// # Panics
///
/// If there are more than `u32::MAX` dependencies (see `build`).
// One pass on purpose: split up, its dozen pieces of state would travel as arguments.
#[allow(clippy::too_many_lines)]
pub(super) fn scan(
    stages: &mut [StageSpec],
    required: [bool; Step::ALL.len()],
    links: &[(u32, u32)],
) -> Result<Scanned> {
    let n = stages.len();
    let linked = group_links(n, links);
    let mut index = Interner::with_capacity(n);
    let mut placement = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    let mut rows = Rows {
        offsets: Vec::with_capacity(n + 1),
        targets: Vec::with_capacity(n),
        listed_by: vec![0u32; n],
        rewrite: Vec::new(),
        self_dependency: None,
        later: None,
        check7: None,
    };
    rows.offsets.push(0);
    let mut invalid = None;
    let mut duplicate = None;
    let mut pending = Vec::new();
    let mut present = [false; Step::ALL.len()];

    // The hashes of the ids of the stages just ahead: each stage's own id, then its `after`.
    let mut ahead: VecDeque<u64> = VecDeque::with_capacity(AHEAD * 4);
    let mut hashed = 0;

    for i in 0..n {
        if hashed == i {
            // A batch at a time, in a tight loop: the touches then sit close together in
            // the processor's window, and more of their misses overlap.
            while hashed < n && hashed < i + AHEAD {
                let spec = &stages[hashed];
                for id in std::iter::once(&spec.id).chain(&spec.after) {
                    let h = hash(id.as_str());
                    index.touch(h);
                    ahead.push_back(h);
                }
                hashed += 1;
            }
        }
        let spec = &stages[i];
        let own = ahead.pop_front().unwrap_or_else(|| hash(spec.id.as_str()));

        // Checks 1 and 2 for the stage's own id, and what later checks need of it.
        if invalid.is_none() {
            if let Some(reason) = spec.id.problem() {
                invalid = Some(GraphError::InvalidStageId {
                    id: spec.id.as_str().to_owned(),
                    reason,
                });
            }
        }
        if !index.insert(own, i as u32, spec.id.as_str(), stages) {
            duplicate.get_or_insert_with(|| GraphError::DuplicateStage {
                id: spec.id.clone(),
            });
        }
        placement.push(Placement {
            step: spec.step,
            finally: spec.finally,
            timed: spec.timeout.is_some() || spec.attempt_timeout.is_some(),
            conditional: !spec.when.is_on_success(),
            exclusive: spec.concurrency.is_some(),
        });
        weights.push(weight(spec));
        present[spec.step as usize] = true;
        if rows.check7.is_none() {
            if let Some(reason) = policy_problem(spec) {
                rows.check7 = Some((
                    key(i, 0),
                    GraphError::InvalidPolicy {
                        stage: spec.id.clone(),
                        reason,
                    },
                ));
            }
        }

        // Checks 1 and 3 to 5 for its dependencies: named ones, then those added by index.
        for (k, dependency) in spec.after.iter().enumerate() {
            let h = ahead
                .pop_front()
                .unwrap_or_else(|| hash(dependency.as_str()));
            if let Some(d) = index.find(h, dependency.as_str(), stages) {
                // Check 1 needs nothing here: the id is stage `d`'s own, already checked
                // (`d <= i`), so an invalid one has already been kept as the first failure.
                rows.push(stages, &placement, i, d, k + 1);
            } else {
                if invalid.is_none() {
                    if let Some(reason) = dependency.problem() {
                        invalid = Some(GraphError::InvalidStageId {
                            id: dependency.as_str().to_owned(),
                            reason,
                        });
                    }
                }
                pending.push(Pending {
                    at: rows.targets.len(),
                    stage: i,
                    position: k + 1,
                    dependency: Dependency::Named(k),
                });
                rows.targets.push(u32::MAX);
            }
        }
        if let Some(linked) = &linked {
            let row = linked.row(i);
            if !row.is_empty() && rows.rewrite.last() != Some(&i) {
                rows.rewrite.push(i);
            }
            for (k, &d) in row.iter().enumerate() {
                let position = spec.after.len() + 1 + k;
                if d as usize <= i {
                    rows.push(stages, &placement, i, d, position);
                } else {
                    pending.push(Pending {
                        at: rows.targets.len(),
                        stage: i,
                        position,
                        dependency: Dependency::Index(d),
                    });
                    rows.targets.push(u32::MAX);
                }
            }
        }
        rows.offsets.push(
            u32::try_from(rows.targets.len())
                .expect("a stage graph holds at most u32::MAX stages and dependencies"),
        );
    }

    if let Some(err) = invalid.or(duplicate).or(rows.self_dependency.take()) {
        return Err(err);
    }
    if !pending.is_empty() {
        rows.resolve_pending(stages, &index, &placement, &pending)?;
    }
    if let Some((_, err)) = rows.later.take() {
        return Err(err);
    }
    // Check 6.
    if let Some(step) = Step::ALL
        .into_iter()
        .find(|&step| required[step as usize] && !present[step as usize])
    {
        return Err(GraphError::EmptyStep { step });
    }
    if let Some((_, err)) = rows.check7.take() {
        return Err(err);
    }

    let deps = Csr {
        offsets: rows.offsets,
        targets: rows.targets,
    };
    for i in rows.rewrite {
        let after = deps
            .row(i)
            .iter()
            .map(|&d| stages[d as usize].id.clone())
            .collect();
        stages[i].after = after;
    }
    Ok(Scanned {
        index,
        placement,
        weights,
        deps,
    })
}

/// Where a failure happened: its stage, then its position in the stage (0 for the stage's
/// own policy, then its dependencies from 1), so that the smallest key is the first failure.
fn key(stage: usize, position: usize) -> u64 {
    ((stage as u64) << 32) | position as u64
}

/// Keeps `error` if it happened before the failure kept so far.
fn keep_first(kept: &mut Option<(u64, GraphError)>, at: u64, error: impl FnOnce() -> GraphError) {
    if kept.as_ref().is_none_or(|&(first, _)| at < first) {
        *kept = Some((at, error()));
    }
}

/// Why a stage's run policy is unusable, if it is (the first half of check 7).
fn policy_problem(spec: &StageSpec) -> Option<&'static str> {
    if spec.retry.is_some_and(|r| r.max_attempts == 0) {
        Some("a retry policy needs at least one attempt")
    } else if spec.retry.is_some_and(|r| r.jitter_percent > 100) {
        // The serde form takes any byte; past 100 the jitter would cut more than the delay.
        Some("a retry's jitter is a percentage, from 0 to 100")
    } else if spec.attempt_timeout.is_some_and(|d| d.is_zero())
        || spec.timeout.is_some_and(|d| d.is_zero())
    {
        Some("a timeout must be longer than zero")
    } else if spec.group.as_deref().is_some_and(|g| g.trim().is_empty())
        || spec
            .concurrency
            .as_ref()
            .is_some_and(|c| c.group.trim().is_empty())
    {
        Some("a concurrency group needs a name")
    } else if spec.finally && !spec.when.is_on_success() {
        Some("a finally stage always runs: it takes no condition")
    } else {
        None
    }
}

/// The weight of a stage when looking for the longest path: its estimate in whole
/// milliseconds, at least 1, and 1 when it has no estimate, so that the number of stages
/// still counts between paths without estimates.
fn weight(spec: &StageSpec) -> u64 {
    spec.estimate.map_or(1, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// A dependency on a stage the pass had not reached, left as a placeholder in the rows.
struct Pending {
    /// The placeholder's position in the targets.
    at: usize,
    stage: usize,
    /// Its position among the stage's dependencies, for [`key`].
    position: usize,
    dependency: Dependency,
}

enum Dependency {
    /// The `k`th id of the stage's `after` list.
    Named(usize),
    /// Added by index.
    Index(u32),
}

/// The dependency rows as the pass fills them, and the first failure of each check that
/// looks at a resolved dependency.
struct Rows {
    offsets: Vec<u32>,
    targets: Vec<u32>,
    /// `listed_by[d] == i + 1` once stage `i` has listed `d`; one array serves every stage.
    listed_by: Vec<u32>,
    /// The stages whose `after` list must be rewritten from their row: they listed a
    /// dependency twice or got some by index.
    rewrite: Vec<usize>,
    /// Check 3.
    self_dependency: Option<GraphError>,
    /// Check 5.
    later: Option<(u64, GraphError)>,
    /// Check 7: an unusable policy or a dependency on a finally stage.
    check7: Option<(u64, GraphError)>,
}

impl Rows {
    /// Adds dependency `d`, at `position`, to the row of stage `i`, the row being filled,
    /// or notes why it cannot be. `placement` covers `d` (it is not a later stage).
    fn push(
        &mut self,
        stages: &[StageSpec],
        placement: &[Placement],
        i: usize,
        d: u32,
        position: usize,
    ) {
        let spec = &stages[i];
        if d as usize == i {
            self.self_dependency
                .get_or_insert_with(|| GraphError::SelfDependency {
                    stage: spec.id.clone(),
                });
            return;
        }
        self.check(stages, placement[d as usize], i, d, position);
        let stamp = i as u32 + 1;
        if self.listed_by[d as usize] == stamp {
            if self.rewrite.last() != Some(&i) {
                self.rewrite.push(i);
            }
        } else {
            self.listed_by[d as usize] = stamp;
            self.targets.push(d);
        }
    }

    /// Checks 5 and (the second half of) 7 for dependency `d` of stage `i`.
    fn check(
        &mut self,
        stages: &[StageSpec],
        dependency: Placement,
        i: usize,
        d: u32,
        position: usize,
    ) {
        let spec = &stages[i];
        let at = key(i, position);
        if dependency.step > spec.step {
            keep_first(&mut self.later, at, || GraphError::DependencyOnLaterStep {
                stage: spec.id.clone(),
                stage_step: spec.step,
                dependency: stages[d as usize].id.clone(),
                dependency_step: dependency.step,
            });
        }
        if !spec.finally && dependency.finally && dependency.step == spec.step {
            keep_first(&mut self.check7, at, || GraphError::DependsOnFinally {
                stage: spec.id.clone(),
                finally: stages[d as usize].id.clone(),
            });
        }
    }

    /// Resolves the dependencies on later stages now that every id is mapped (check 4 for
    /// them), checks them, and drops the repeats they made.
    fn resolve_pending(
        &mut self,
        stages: &[StageSpec],
        index: &Interner,
        placement: &[Placement],
        pending: &[Pending],
    ) -> Result<()> {
        let mut unknown = None;
        for p in pending {
            let spec = &stages[p.stage];
            let d = match p.dependency {
                Dependency::Index(d) => d,
                Dependency::Named(k) => {
                    let dependency = &spec.after[k];
                    let Some(d) = index.get(dependency.as_str(), stages) else {
                        // Pending entries are in stage order, so the first is the first.
                        unknown.get_or_insert_with(|| GraphError::UnknownDependency {
                            stage: spec.id.clone(),
                            dependency: dependency.clone(),
                        });
                        continue;
                    };
                    d
                }
            };
            // A stage's own id is mapped before its dependencies are looked up, so a
            // pending dependency is never the stage itself.
            self.targets[p.at] = d;
            self.check(stages, placement[d as usize], p.stage, d, p.position);
        }
        if let Some(err) = unknown {
            return Err(err);
        }

        // Drop the repeats within each row, keeping first positions, and close the gaps.
        let mut seen = vec![0u32; stages.len()];
        let mut write = 0;
        let mut start = 0;
        for i in 0..stages.len() {
            let end = self.offsets[i + 1] as usize;
            for at in start..end {
                let d = self.targets[at];
                if seen[d as usize] == i as u32 + 1 {
                    self.rewrite.push(i);
                } else {
                    seen[d as usize] = i as u32 + 1;
                    self.targets[write] = d;
                    write += 1;
                }
            }
            start = end;
            self.offsets[i + 1] = write as u32;
        }
        self.targets.truncate(write);
        Ok(())
    }
}

/// The dependencies added by index, grouped by stage in the order they were added, or `None`
/// if there are none.
fn group_links(n: usize, links: &[(u32, u32)]) -> Option<Csr> {
    if links.is_empty() {
        return None;
    }
    let mut offsets = vec![0u32; n + 1];
    for &(stage, _) in links {
        offsets[stage as usize + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut cursor = offsets.clone();
    let mut targets = vec![0u32; links.len()];
    for &(stage, dependency) in links {
        let at = &mut cursor[stage as usize];
        targets[*at as usize] = dependency;
        *at += 1;
    }
    Some(Csr { offsets, targets })
}
