//! Analysis: metric checks a rollout evaluates between its steps and, every
//! [`interval`](Analysis::interval), in the background while it pauses ([`Analysis`],
//! [`MetricCheck`]), and the running counts that turn samples into a verdict ([`Analyzer`],
//! [`Evaluation`]).
//!
//! The checks reuse the gate layer's [`MetricSource`] and [`Threshold`]: the same source a
//! [`MetricGate`](crate::gate::MetricGate) samples between moves is sampled here between
//! traffic steps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gate::{GateContext, MetricSource, Threshold};

/// One metric and what a good sample of it looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    /// The check's name, as events and errors show it (`error-rate`).
    pub name: String,
    /// The query handed to the [`MetricSource`].
    pub query: String,
    /// A good sample.
    pub threshold: Threshold,
}

impl MetricCheck {
    /// A check called `name` sampling `query`, good when `threshold` holds.
    pub fn new(name: impl Into<String>, query: impl Into<String>, threshold: Threshold) -> Self {
        MetricCheck {
            name: name.into(),
            query: query.into(),
            threshold,
        }
    }
}

/// The analysis of a rollout: its checks, how often they are sampled while the rollout
/// pauses, and how many bad or inconclusive samples are tolerated.
///
/// Every evaluation samples every check once. A check fails the analysis once it has had
/// more than [`failure_limit`](Self::failure_limit) bad samples in all, or more than
/// [`inconclusive_limit`](Self::inconclusive_limit) samples in a row without data (no data
/// for that long means nobody can say the candidate is healthy, so it is not promoted). A
/// failed analysis stays failed.
///
/// ```
/// use std::time::Duration;
/// use tollgate::gate::Threshold;
/// use tollgate::rollout::{Analysis, MetricCheck};
///
/// let analysis = Analysis::new([MetricCheck::new("error-rate", "rate(http_5xx[1m])", Threshold::AtMost(0.01))])
///     .interval(Duration::from_secs(30))
///     .failure_limit(1);
/// let json = serde_json::to_string(&analysis).unwrap();
/// assert_eq!(serde_json::from_str::<Analysis>(&json).unwrap(), analysis);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// The checks, all sampled at every evaluation.
    pub checks: Vec<MetricCheck>,
    /// How often the checks are sampled while the rollout pauses (milliseconds, or text such
    /// as `"30s"`); at least one millisecond is waited between two samples.
    #[serde(with = "crate::time::millis", default = "default_interval")]
    pub interval: Duration,
    /// Bad samples tolerated per check; one more fails the analysis.
    #[serde(default)]
    pub failure_limit: u32,
    /// Samples in a row without data tolerated per check; one more fails the analysis.
    #[serde(default = "default_inconclusive_limit")]
    pub inconclusive_limit: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_inconclusive_limit() -> u32 {
    3
}

impl Analysis {
    /// An analysis of `checks`, sampled every minute during pauses, failing at the first bad
    /// sample or at the fourth sample in a row without data.
    pub fn new(checks: impl IntoIterator<Item = MetricCheck>) -> Self {
        Analysis {
            checks: checks.into_iter().collect(),
            interval: default_interval(),
            failure_limit: 0,
            inconclusive_limit: default_inconclusive_limit(),
        }
    }

    /// Samples every `interval` while the rollout pauses.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Tolerates `n` bad samples per check.
    #[must_use]
    pub fn failure_limit(mut self, n: u32) -> Self {
        self.failure_limit = n;
        self
    }

    /// Tolerates `n` samples without data per check.
    #[must_use]
    pub fn inconclusive_limit(mut self, n: u32) -> Self {
        self.inconclusive_limit = n;
        self
    }

    /// The wait between two background samples: the interval, at least one millisecond.
    pub(crate) fn period(&self) -> Duration {
        self.interval.max(Duration::from_millis(1))
    }
}

/// What one evaluation of an [`Analysis`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Evaluation {
    /// Every check is within its limits.
    Passed,
    /// A check went past its limit: the rollout must stop.
    Failed {
        /// The check.
        check: String,
        /// Its last sample (`None`: the check failed for lack of data).
        value: Option<f64>,
        /// Why, in words.
        reason: String,
    },
}

impl Evaluation {
    /// Whether the analysis failed.
    #[must_use]
    pub fn is_failed(&self) -> bool {
        matches!(self, Evaluation::Failed { .. })
    }
}

/// The counts of one rollout's analysis: bad and inconclusive samples per check. One
/// analyzer per rollout (a flag's rollout included); a failed analyzer stays failed.
#[derive(Debug, Clone)]
pub struct Analyzer {
    analysis: Analysis,
    failures: Vec<u32>,
    inconclusive: Vec<u32>,
    failed: Option<Evaluation>,
    evaluations: u64,
}

impl Analyzer {
    /// An analyzer with nothing counted yet.
    #[must_use]
    pub fn new(analysis: Analysis) -> Self {
        let n = analysis.checks.len();
        Analyzer {
            analysis,
            failures: vec![0; n],
            inconclusive: vec![0; n],
            failed: None,
            evaluations: 0,
        }
    }

    /// The analysis it counts for.
    #[must_use]
    pub fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    /// How many evaluations it has made.
    #[must_use]
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Samples every check once from `source` and counts the samples. Once failed, it
    /// answers the same failure without sampling again.
    pub async fn evaluate(
        &mut self,
        source: &(dyn MetricSource + '_),
        ctx: &GateContext<'_>,
    ) -> Evaluation {
        if let Some(failed) = &self.failed {
            return failed.clone();
        }
        self.evaluations += 1;
        for (i, check) in self.analysis.checks.iter().enumerate() {
            let value = source
                .sample(&check.query, ctx)
                .await
                .filter(|v| !v.is_nan());
            let failed = match value {
                None => {
                    self.inconclusive[i] += 1;
                    (self.inconclusive[i] > self.analysis.inconclusive_limit).then(|| {
                        format!(
                            "`{}` had no data {} times, limit {}",
                            check.query, self.inconclusive[i], self.analysis.inconclusive_limit
                        )
                    })
                }
                Some(v) if check.threshold.holds(v) => {
                    self.inconclusive[i] = 0;
                    None
                }
                Some(v) => {
                    self.inconclusive[i] = 0;
                    self.failures[i] += 1;
                    (self.failures[i] > self.analysis.failure_limit).then(|| {
                        format!(
                            "`{}` was {v}, not {}: {} bad samples, limit {}",
                            check.query,
                            check.threshold,
                            self.failures[i],
                            self.analysis.failure_limit
                        )
                    })
                }
            };
            if let Some(reason) = failed {
                let evaluation = Evaluation::Failed {
                    check: check.name.clone(),
                    value,
                    reason,
                };
                self.failed = Some(evaluation.clone());
                return evaluation;
            }
        }
        Evaluation::Passed
    }
}
