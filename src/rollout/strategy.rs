//! The strategies as data ([`Strategy`], [`Rolling`], [`BlueGreen`], [`Canary`] and its
//! [`CanaryStep`]s), and the plan each one unrolls into: the [`Step`]s a rollout runs in order.
//! Every strategy has a serde form, so a spec can name one.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::target::Weight;

/// How a deploy reaches its environment.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rollout::{Canary, Pause, Strategy, Weight};
///
/// let canary = Strategy::Canary(
///     Canary::new()
///         .weight(Weight::percent(10).unwrap())
///         .pause(Pause::For(Duration::from_secs(300)))
///         .weight(Weight::percent(50).unwrap())
///         .pause(Pause::UntilGo),
/// );
/// let json = serde_json::to_string(&canary).unwrap();
/// assert_eq!(
///     json,
///     r#"{"strategy":"canary","steps":[{"set_weight":10},{"pause":{"for":300000}},{"set_weight":50},{"pause":"until_go"}]}"#
/// );
/// assert_eq!(serde_json::from_str::<Strategy>(&json).unwrap(), canary);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy")]
pub enum Strategy {
    /// Everything at once: prepare, all traffic, check health and analysis once, promote.
    AllAtOnce,
    /// Instances replaced in batches, health checked after each.
    Rolling(Rolling),
    /// A second stack beside the first, traffic switched over at once, the old side kept.
    BlueGreen(BlueGreen),
    /// Steps of traffic weight, each followed by pauses while analysis runs.
    Canary(Canary),
}

impl Strategy {
    /// The strategy's name, as events show it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all_at_once",
            Strategy::Rolling(_) => "rolling",
            Strategy::BlueGreen(_) => "blue_green",
            Strategy::Canary(_) => "canary",
        }
    }

    /// The steps this strategy runs, in order; every plan starts with [`Step::Prepare`] and
    /// ends with [`Step::Promote`] (blue-green then retires the old side).
    #[must_use]
    pub fn plan(&self) -> Vec<Step> {
        let mut plan = vec![Step::Prepare];
        match self {
            Strategy::AllAtOnce => {
                plan.extend([
                    Step::SetWeight(Weight::ALL),
                    Step::CheckHealth,
                    Step::Analyze,
                ]);
                plan.push(Step::Promote);
            }
            Strategy::Rolling(r) => {
                let total = r.instances.max(1);
                let batch = r.batch_size.clamp(1, total);
                let mut done = 0;
                while done < total {
                    done = (done + batch).min(total);
                    plan.push(Step::Replace {
                        done,
                        total,
                        surge: r.max_surge,
                        unavailable: r.max_unavailable,
                    });
                    plan.push(Step::CheckHealth);
                    plan.push(Step::Analyze);
                }
                plan.push(Step::Promote);
            }
            Strategy::BlueGreen(b) => {
                if b.preview_check {
                    plan.push(Step::CheckHealth);
                    plan.push(Step::Analyze);
                }
                if b.promotion == Promotion::Manual {
                    plan.push(Step::Pause(Pause::UntilGo));
                }
                plan.push(Step::SetWeight(Weight::ALL));
                plan.push(Step::Analyze);
                plan.push(Step::Pause(Pause::For(b.keep_old_for)));
                plan.push(Step::Promote);
                plan.push(Step::Retire);
                return plan;
            }
            Strategy::Canary(c) => {
                for step in &c.steps {
                    match step {
                        CanaryStep::SetWeight(w) => {
                            plan.push(Step::SetWeight(*w));
                            plan.push(Step::Analyze);
                        }
                        CanaryStep::Pause(p) => plan.push(Step::Pause(*p)),
                        CanaryStep::Hook { name, forward_only } => plan.push(Step::Hook {
                            name: name.clone(),
                            forward_only: *forward_only,
                        }),
                    }
                }
                plan.push(Step::Promote);
            }
        }
        plan
    }
}

/// Rolling update settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// How many instances the environment runs.
    pub instances: u32,
    /// How many are replaced per batch (at least 1).
    pub batch_size: u32,
    /// How many extra instances may run during a batch.
    #[serde(default)]
    pub max_surge: u32,
    /// How many instances may be missing during a batch.
    #[serde(default)]
    pub max_unavailable: u32,
}

impl Rolling {
    /// `instances` replaced `batch_size` at a time, no surge, none unavailable.
    #[must_use]
    pub fn new(instances: u32, batch_size: u32) -> Self {
        Rolling {
            instances,
            batch_size,
            max_surge: 0,
            max_unavailable: 0,
        }
    }

    /// At most `surge` extra and `unavailable` missing instances during a batch.
    #[must_use]
    pub fn limits(mut self, surge: u32, unavailable: u32) -> Self {
        self.max_surge = surge;
        self.max_unavailable = unavailable;
        self
    }
}

/// Who promotes a blue-green rollout's preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// Traffic switches as soon as the preview passed its check.
    Automatic,
    /// Traffic switches once a person says go.
    Manual,
}

/// Blue-green settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueGreen {
    /// Check the preview (health and analysis) before switching traffic to it.
    #[serde(default)]
    pub preview_check: bool,
    /// Who switches.
    pub promotion: Promotion,
    /// How long the old side is kept after the switch (analysis running meanwhile), so that
    /// switching back is instant (milliseconds, or text such as `"10m"`).
    #[serde(with = "crate::time::millis")]
    pub keep_old_for: Duration,
}

impl BlueGreen {
    /// Switch automatically, keep the old side for `keep_old_for`, no preview check.
    #[must_use]
    pub fn new(keep_old_for: Duration) -> Self {
        BlueGreen {
            preview_check: false,
            promotion: Promotion::Automatic,
            keep_old_for,
        }
    }

    /// Checks the preview before switching.
    #[must_use]
    pub fn preview_check(mut self) -> Self {
        self.preview_check = true;
        self
    }

    /// Switches only once a person says go.
    #[must_use]
    pub fn manual(mut self) -> Self {
        self.promotion = Promotion::Manual;
        self
    }
}

/// A pause between canary steps; analysis samples in the background while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// For a set time (milliseconds in its serde form).
    For(#[serde(with = "crate::time::millis")] Duration),
    /// Until a person says go.
    UntilGo,
}

impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pause::For(d) => write!(f, "pause {}", crate::time::format_duration(*d)),
            Pause::UntilGo => f.write_str("pause until go"),
        }
    }
}

/// One step of a canary, as its definition names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryStep {
    /// Send this share of the traffic to the candidate (analysis is evaluated right after).
    SetWeight(Weight),
    /// Wait, with analysis in the background.
    Pause(Pause),
    /// Run a host action ([`Target::run_hook`](super::Target::run_hook)); a forward-only one
    /// (a database migration) is a point of no return: after it, a failure freezes the
    /// rollout and asks a person instead of rolling back.
    Hook {
        /// The hook's name, as the target knows it.
        name: String,
        /// Whether it cannot be undone.
        #[serde(default)]
        forward_only: bool,
    },
}

/// A canary: its steps in order, then promotion.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The steps.
    pub steps: Vec<CanaryStep>,
}

impl Canary {
    /// A canary with no steps yet (it would promote at once).
    #[must_use]
    pub fn new() -> Self {
        Canary::default()
    }

    /// Adds a traffic step.
    #[must_use]
    pub fn weight(mut self, weight: Weight) -> Self {
        self.steps.push(CanaryStep::SetWeight(weight));
        self
    }

    /// Adds a pause.
    #[must_use]
    pub fn pause(mut self, pause: Pause) -> Self {
        self.steps.push(CanaryStep::Pause(pause));
        self
    }

    /// Adds a host action that can be undone.
    #[must_use]
    pub fn hook(mut self, name: impl Into<String>) -> Self {
        self.steps.push(CanaryStep::Hook {
            name: name.into(),
            forward_only: false,
        });
        self
    }

    /// Adds a forward-only host action (a migration): a point of no return.
    #[must_use]
    pub fn forward_only(mut self, name: impl Into<String>) -> Self {
        self.steps.push(CanaryStep::Hook {
            name: name.into(),
            forward_only: true,
        });
        self
    }
}

/// One step of a rollout's plan, as the runner executes it and its events name it (serde:
/// `"prepare"`, `{"set_weight": 10}`, `{"pause": {"for": 60000}}`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Bring the candidate up beside the stable version.
    Prepare,
    /// Send a share of the traffic to the candidate.
    SetWeight(Weight),
    /// Replace instances (a rolling batch).
    Replace {
        /// Instances running the candidate after this batch.
        done: u32,
        /// All instances.
        total: u32,
        /// Extra instances allowed.
        surge: u32,
        /// Missing instances allowed.
        unavailable: u32,
    },
    /// Wait for the candidate to be healthy; unhealthy stops the rollout.
    CheckHealth,
    /// One evaluation of the analysis (nothing when the rollout has none).
    Analyze,
    /// Wait, analysis sampling in the background.
    Pause(Pause),
    /// A host action.
    Hook {
        /// Its name.
        name: String,
        /// Whether it cannot be undone.
        forward_only: bool,
    },
    /// Make the candidate the stable version.
    Promote,
    /// Take the old side away.
    Retire,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Prepare => f.write_str("prepare"),
            Step::SetWeight(w) => write!(f, "set weight {w}"),
            Step::Replace { done, total, .. } => write!(f, "replace {done}/{total}"),
            Step::CheckHealth => f.write_str("check health"),
            Step::Analyze => f.write_str("analyze"),
            Step::Pause(p) => write!(f, "{p}"),
            Step::Hook {
                name,
                forward_only: true,
            } => write!(f, "run `{name}` (forward-only)"),
            Step::Hook { name, .. } => write!(f, "run `{name}`"),
            Step::Promote => f.write_str("promote"),
            Step::Retire => f.write_str("retire the old side"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_plan_replaces_in_batches_with_a_health_check_after_each() {
        let plan = Strategy::Rolling(Rolling::new(5, 2).limits(1, 0)).plan();
        let replaced: Vec<u32> = plan
            .iter()
            .filter_map(|s| match s {
                Step::Replace { done, .. } => Some(*done),
                _ => None,
            })
            .collect();
        assert_eq!(replaced, [2, 4, 5]);
        for (i, step) in plan.iter().enumerate() {
            if matches!(step, Step::Replace { .. }) {
                assert_eq!(plan[i + 1], Step::CheckHealth);
            }
        }
        assert_eq!(plan.last(), Some(&Step::Promote));
    }

    #[test]
    fn every_strategy_has_a_serde_form_that_reads_back() {
        for strategy in [
            Strategy::AllAtOnce,
            Strategy::Rolling(Rolling::new(10, 3).limits(1, 1)),
            Strategy::BlueGreen(
                BlueGreen::new(Duration::from_secs(600))
                    .preview_check()
                    .manual(),
            ),
            Strategy::Canary(Canary::new().weight(Weight::ALL).forward_only("migrate")),
        ] {
            let json = serde_json::to_string(&strategy).unwrap();
            assert_eq!(
                serde_json::from_str::<Strategy>(&json).unwrap(),
                strategy,
                "{json}"
            );
        }
    }
}
