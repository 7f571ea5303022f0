//! [`Stage`]: a stage's spec and the executor that runs it, as a pipeline is built from them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{AttemptFailure, RetryPolicy, RetryPredicate};
use crate::executor::Executor;
use crate::graph::{Concurrency, Condition, Matrix, StageSpec};

/// A stage of a pipeline: its [`StageSpec`] and the executor that runs it.
pub struct Stage {
    pub(super) spec: StageSpec,
    pub(super) executor: Option<Arc<dyn Executor>>,
    pub(super) retry_if: Option<Arc<RetryPredicate>>,
    pub(super) matrix: Option<Matrix>,
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("spec", &self.spec)
            .field("has_executor", &self.executor.is_some())
            .field("has_retry_if", &self.retry_if.is_some())
            .field("matrix", &self.matrix)
            .finish()
    }
}

impl Stage {
    /// A stage from a full spec.
    #[must_use]
    pub fn from_spec(spec: StageSpec) -> Self {
        Stage {
            spec,
            executor: None,
            retry_if: None,
            matrix: None,
        }
    }

    /// A stage of the build step.
    pub fn build(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::build(id))
    }

    /// A stage of the test step.
    pub fn test(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::test(id))
    }

    /// A stage of the stage (staging) step.
    #[allow(clippy::self_named_constructors)] // Named after `Step::Stage`, like its siblings.
    pub fn stage(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::stage(id))
    }

    /// A stage of the deploy step.
    pub fn deploy(id: impl Into<String>) -> Self {
        Stage::from_spec(StageSpec::deploy(id))
    }

    /// Runs this stage after `dependency` succeeded.
    #[must_use]
    pub fn after(mut self, dependency: impl Into<String>) -> Self {
        self.spec = self.spec.after(dependency);
        self
    }

    /// Sets a description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec = self.spec.description(text);
        self
    }

    /// Sets the expected duration (used to order ready stages by critical path).
    #[must_use]
    pub fn estimate(mut self, duration: Duration) -> Self {
        self.spec = self.spec.estimate(duration);
        self
    }

    /// Retries failed attempts by `policy` (see [`RetryPolicy`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.spec = self.spec.retry(policy);
        self
    }

    /// Retries only the failures for which `predicate` returns true (default: every failure
    /// and timeout, up to the policy's attempt limit).
    ///
    /// ```
    /// use tollgate::engine::RetryPolicy;
    /// use tollgate::pipeline::Stage;
    ///
    /// // Retry network flakes, not compile errors.
    /// let fetch = Stage::build("fetch")
    ///     .retry(RetryPolicy::attempts(3))
    ///     .retry_if(|failure| failure.timed_out || failure.reason.contains("connection reset"));
    /// # let _ = fetch;
    /// ```
    #[must_use]
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&AttemptFailure) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }

    /// Cuts each attempt off after `limit`.
    #[must_use]
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.spec = self.spec.attempt_timeout(limit);
        self
    }

    /// Cuts the stage off after `limit`, over all its attempts.
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.spec = self.spec.timeout(limit);
        self
    }

    /// Puts the stage in a concurrency group.
    #[must_use]
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.spec = self.spec.group(name);
        self
    }

    /// Makes this a finally stage: it runs after the step's other stages, whatever happened.
    #[must_use]
    pub fn finally(mut self) -> Self {
        self.spec = self.spec.finally();
        self
    }

    /// Sets when the stage runs (see [`Condition`]).
    #[must_use]
    pub fn when(mut self, condition: Condition) -> Self {
        self.spec = self.spec.when(condition);
        self
    }

    /// Runs the stage when its dependency `dependency` failed (see
    /// [`StageSpec::when_failed`]).
    #[must_use]
    pub fn when_failed(mut self, dependency: impl Into<String>) -> Self {
        self.spec = self.spec.when_failed(dependency);
        self
    }

    /// Lets the stage fail without failing its step (see
    /// [`StageSpec::continue_on_error`]).
    #[must_use]
    pub fn continue_on_error(mut self) -> Self {
        self.spec = self.spec.continue_on_error();
        self
    }

    /// Puts the stage in a concurrency group across releases (see [`Concurrency`]).
    #[must_use]
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.spec = self.spec.concurrency(concurrency);
        self
    }

    /// Expands the stage into one stage per combination of `matrix`, each run by this
    /// stage's executor, which reads its combination from
    /// [`StageContext::spec`](crate::executor::StageContext::spec)`().matrix` (see
    /// [`Matrix`]).
    ///
    /// ```
    /// use tollgate::executor::{self, StageOutcome};
    /// use tollgate::graph::Matrix;
    /// use tollgate::pipeline::{Pipeline, Stage};
    /// use tollgate::prelude::*;
    ///
    /// let ok = || executor::from_fn(|_| Ok(StageOutcome::success()));
    /// let pipeline = Pipeline::<Deployment>::builder("shop")
    ///     .stage(Stage::build("compile").run(ok()))
    ///     .stage(Stage::test("test").after("compile").matrix(Matrix::new().axis("os", ["linux", "macos"])).run(ok()))
    ///     .stage(Stage::stage("staging").after("test").run(ok()))
    ///     .stage(Stage::deploy("production").run(ok()))
    ///     .build()?;
    /// assert!(pipeline.graph().contains("test (os=macos)"));
    /// assert_eq!(pipeline.graph().dependencies("staging")?.count(), 2);
    /// # Ok::<(), tollgate::Error>(())
    /// ```
    #[must_use]
    pub fn matrix(mut self, matrix: Matrix) -> Self {
        self.matrix = Some(matrix);
        self
    }

    /// Sets the executor that runs this stage.
    #[must_use]
    pub fn run(mut self, executor: impl Executor + 'static) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }
}
