//! Closure executors: [`from_fn`] for quick synchronous bodies, [`from_async_fn`] for async
//! ones.

use std::fmt;

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::{Executor, ExecutorError, StageContext, StageOutcome};

/// Wraps a synchronous closure as an executor.
///
/// The closure runs on the thread that polls the step, so it must be quick (no blocking I/O);
/// use [`from_async_fn`] or your own [`Executor`] for real work.
///
/// ```
/// use tollgate::executor::{from_fn, StageOutcome};
///
/// let unit_tests = from_fn(|ctx| Ok(StageOutcome::success().log(format!("{} ok", ctx.stage()))));
/// # let _ = unit_tests;
/// ```
pub fn from_fn<F>(f: F) -> FnExecutor<F>
where
    F: Fn(&StageContext<'_>) -> Result<StageOutcome, ExecutorError> + Send + Sync,
{
    FnExecutor(f)
}

/// Wraps an async closure as an executor. The closure returns a boxed future
/// (`Box::pin(async move { ... })`) that may borrow the context.
///
/// ```
/// use tollgate::executor::{from_async_fn, StageOutcome};
///
/// let deploy = from_async_fn(|ctx| {
///     Box::pin(async move {
///         let digest = ctx.artifact().map(|a| a.digest.to_string()).unwrap_or_default();
///         Ok(StageOutcome::success().output("deployed", digest))
///     })
/// });
/// # let _ = deploy;
/// ```
pub fn from_async_fn<F>(f: F) -> AsyncFnExecutor<F>
where
    F: for<'a> Fn(StageContext<'a>) -> BoxFuture<'a, Result<StageOutcome, ExecutorError>>
        + Send
        + Sync,
{
    AsyncFnExecutor(f)
}

/// The executor made by [`from_fn`].
#[derive(Clone, Copy)]
pub struct FnExecutor<F>(F);

impl<F> fmt::Debug for FnExecutor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnExecutor")
    }
}

#[async_trait]
impl<F> Executor for FnExecutor<F>
where
    F: Fn(&StageContext<'_>) -> Result<StageOutcome, ExecutorError> + Send + Sync,
{
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        (self.0)(&ctx)
    }
}

/// The executor made by [`from_async_fn`].
#[derive(Clone, Copy)]
pub struct AsyncFnExecutor<F>(F);

impl<F> fmt::Debug for AsyncFnExecutor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncFnExecutor")
    }
}

#[async_trait]
impl<F> Executor for AsyncFnExecutor<F>
where
    F: for<'a> Fn(StageContext<'a>) -> BoxFuture<'a, Result<StageOutcome, ExecutorError>>
        + Send
        + Sync,
{
    async fn run(&self, ctx: StageContext<'_>) -> Result<StageOutcome, ExecutorError> {
        (self.0)(ctx).await
    }
}
