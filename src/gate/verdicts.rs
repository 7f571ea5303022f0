//! Automated verdicts: [`TestResults`] reads the release's own step reports, and
//! [`MetricGate`] samples a [`MetricSource`] (error rate, latency) the way canary analysis
//! does: a threshold, a failure limit, and a run of consecutive good samples to pass.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{Gate, GateContext, Verdict};
use crate::executor::StageStatus;
use crate::forward::forward_impls;
use crate::id::ReleaseId;
use crate::lifecycle::Step;

/// A gate over the release's test results: open when its latest test step succeeded and no
/// more than a set number of its stages needed a retry to pass.
///
/// ```
/// use tollgate::gate::TestResults;
///
/// // Block promotion when more than one test stage was flaky.
/// let tests = TestResults::new().max_flaky(1);
/// assert_eq!(tollgate::gate::Gate::name(&tests), "test-results");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestResults {
    max_flaky: Option<usize>,
}

impl Default for TestResults {
    fn default() -> Self {
        TestResults::new()
    }
}

impl TestResults {
    /// All tests passed, flaky or not.
    #[must_use]
    pub fn new() -> Self {
        TestResults { max_flaky: None }
    }

    /// At most `n` test stages may have needed more than one attempt.
    #[must_use]
    pub fn max_flaky(mut self, n: usize) -> Self {
        self.max_flaky = Some(n);
        self
    }
}

#[async_trait]
impl Gate for TestResults {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let Some(report) = ctx
            .release()
            .steps()
            .iter()
            .rev()
            .find(|r| r.step == Step::Test)
        else {
            return Verdict::closed("the release has no test results");
        };
        let failed: Vec<&str> = report
            .stages
            .iter()
            .filter(|s| s.status != StageStatus::Succeeded)
            .map(|s| s.id.as_str())
            .collect();
        if !failed.is_empty() {
            return Verdict::closed(format!("tests did not pass: {}", failed.join(", ")));
        }
        let flaky: Vec<&str> = report
            .stages
            .iter()
            .filter(|s| s.attempts().len() > 1)
            .map(|s| s.id.as_str())
            .collect();
        match self.max_flaky {
            Some(max) if flaky.len() > max => Verdict::closed(format!(
                "{} test stages passed only on a retry ({}), at most {max} allowed",
                flaky.len(),
                flaky.join(", ")
            )),
            _ => Verdict::Open,
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("test-results")
    }
}

/// Where a [`MetricGate`] reads its numbers: the host implements it over its monitoring
/// system (Prometheus, Datadog, a cloud provider's monitoring).
///
/// Return `None` when there is no data yet (too little traffic, the query matched nothing):
/// the sample is inconclusive and the gate keeps waiting.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate metric source",
    label = "this type does not implement `tollgate::gate::MetricSource`",
    note = "implement `async fn sample(&self, query: &str, ctx: &GateContext<'_>) -> Option<f64>` with `#[async_trait]`"
)]
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// The current value of `query` for the release in `ctx`, or `None` if there is none.
    async fn sample(&self, query: &str, ctx: &GateContext<'_>) -> Option<f64>;
}

forward_impls! {
    #[async_trait]
    impl MetricSource {
        async fn sample(&self, query: &str, ctx: &GateContext<'_>) -> Option<f64>;
    }
}

/// What a good sample looks like. Its serde form is `{"at_most": 0.01}` or
/// `{"at_least": 0.99}` (a rollout's analysis names its thresholds in a strategy's data).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// Good when the value is at most this (error rates, latencies).
    AtMost(f64),
    /// Good when the value is at least this (success rates, throughput).
    AtLeast(f64),
}

impl Threshold {
    /// Whether `value` is a good sample (NaN never is).
    #[must_use]
    pub fn holds(self, value: f64) -> bool {
        match self {
            Threshold::AtMost(limit) => value <= limit,
            Threshold::AtLeast(limit) => value >= limit,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::AtMost(limit) => write!(f, "<= {limit}"),
            Threshold::AtLeast(limit) => write!(f, ">= {limit}"),
        }
    }
}

/// A canary-analysis gate: every evaluation takes one sample of a metric; bad samples count
/// against a failure limit, good ones in a row count towards passing.
///
/// - more bad samples than `failure_limit`: closed (the canary failed);
/// - `consecutive_successes` good samples in a row: open;
/// - otherwise, or when the sample is inconclusive (no data, NaN): pending.
///
/// The counts are kept per release, so one gate serves every release of a pipeline. The host
/// decides how often to sample by how often it tries the move (for example on each clock
/// tick of its own loop).
///
/// ```
/// use async_trait::async_trait;
/// use tollgate::gate::{GateContext, MetricGate, MetricSource, Threshold};
///
/// struct Prometheus;
///
/// #[async_trait]
/// impl MetricSource for Prometheus {
///     async fn sample(&self, _query: &str, _ctx: &GateContext<'_>) -> Option<f64> {
///         Some(0.002) // ask the real server here
///     }
/// }
///
/// let canary = MetricGate::new("error-rate", Prometheus, "rate(http_5xx[5m])", Threshold::AtMost(0.01))
///     .failure_limit(1)
///     .consecutive_successes(3);
/// # let _ = canary;
/// ```
pub struct MetricGate<S> {
    name: String,
    source: S,
    query: String,
    threshold: Threshold,
    failure_limit: u32,
    needed: u32,
    counts: Mutex<HashMap<ReleaseId, Counts>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    failures: u32,
    streak: u32,
    samples: u32,
}

impl<S> fmt::Debug for MetricGate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricGate")
            .field("name", &self.name)
            .field("query", &self.query)
            .field("threshold", &self.threshold)
            .field("failure_limit", &self.failure_limit)
            .field("needed", &self.needed)
            .finish_non_exhaustive()
    }
}

impl<S: MetricSource> MetricGate<S> {
    /// A gate called `name` sampling `query` from `source`, good when `threshold` holds; by
    /// default no bad sample is tolerated and one good sample passes.
    pub fn new(
        name: impl Into<String>,
        source: S,
        query: impl Into<String>,
        threshold: Threshold,
    ) -> Self {
        MetricGate {
            name: name.into(),
            source,
            query: query.into(),
            threshold,
            failure_limit: 0,
            needed: 1,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// How many bad samples are tolerated before the gate closes.
    #[must_use]
    pub fn failure_limit(mut self, n: u32) -> Self {
        self.failure_limit = n;
        self
    }

    /// How many good samples in a row open the gate (at least 1).
    #[must_use]
    pub fn consecutive_successes(mut self, n: u32) -> Self {
        self.needed = n.max(1);
        self
    }

    /// Drops what the gate counted for `release` (for a bot that holds many releases over
    /// time: call it once a release is deployed or abandoned). Returns whether there was
    /// anything to drop.
    pub fn forget(&self, release: &ReleaseId) -> bool {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(release)
            .is_some()
    }
}

#[async_trait]
impl<S: MetricSource> Gate for MetricGate<S> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let value = self
            .source
            .sample(&self.query, ctx)
            .await
            .filter(|v| !v.is_nan());
        let mut all = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = all.entry(ctx.release().id().clone()).or_default();
        if counts.failures > self.failure_limit {
            // A failed canary stays failed: later good samples do not undo it.
            return Verdict::closed(format!(
                "`{}` failed {} of {} samples (limit {})",
                self.query, counts.failures, counts.samples, self.failure_limit
            ));
        }
        let Some(value) = value else {
            return Verdict::pending(format!(
                "data for `{}` ({} of {} good samples in a row)",
                self.query, counts.streak, self.needed
            ));
        };
        counts.samples += 1;
        if self.threshold.holds(value) {
            counts.streak += 1;
        } else {
            counts.failures += 1;
            counts.streak = 0;
            if counts.failures > self.failure_limit {
                return Verdict::closed(format!(
                    "`{}` was {value}, not {}: {} bad samples, limit {}",
                    self.query, self.threshold, counts.failures, self.failure_limit
                ));
            }
        }
        if counts.streak >= self.needed {
            Verdict::Open
        } else {
            Verdict::pending(format!(
                "{} of {} good samples in a row of `{}` {}",
                counts.streak, self.needed, self.query, self.threshold
            ))
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }
}
