//! What guards a move: the [`Gate`] trait and its [`Verdict`], closure gates
//! ([`from_fn`]), combinators ([`GateExt`]), and the built-in gates (soak timers, change
//! windows, test verdicts, metric thresholds). The human decision of continuous delivery has
//! a module of its own, [`approval`](crate::approval).
//!
//! Automated gates attach to moves with
//! [`PipelineBuilder::gate`](crate::pipeline::PipelineBuilder::gate). Every gate on a move
//! must be open for the move to happen: a closed gate stops it with its reason, a pending one
//! with what it waits for, and the release is handed back unchanged either way.

mod combinator;
mod verdicts;
mod window;

use std::borrow::Cow;
use std::fmt;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::environment::Environment;
use crate::forward::forward_impls;

use crate::record::AnyRelease;
use crate::time::{Clock, Timestamp};

pub use crate::lifecycle::{Move, Verdict};
pub use crate::record::GateRecord;
pub use combinator::{And, GateExt, KOfN, Named, Not, Or, Soak, Timeout, all, any, k_of_n, soak};
pub use verdicts::{MetricGate, MetricSource, TestResults, Threshold};
pub use window::{ChangeWindows, Override, Overrides, Window};

/// A gate that is built wrong, or a gate that stopped a move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// A gate is built with settings that can never make sense (for example 3 of 2 gates).
    #[error("invalid gate `{gate}`: {reason}")]
    Invalid {
        /// The gate, as it would be named.
        gate: String,
        /// What is wrong.
        reason: String,
    },
    /// A gate on a move is closed.
    #[error("gate `{gate}` is closed: {reason}")]
    Closed {
        /// The gate's name.
        gate: String,
        /// Why it is closed.
        reason: String,
    },
    /// A gate on a move has not decided yet.
    #[error("gate `{gate}` is pending: waiting for {waiting_for}")]
    Pending {
        /// The gate's name.
        gate: String,
        /// What it waits for (a person, a time, a verdict).
        waiting_for: String,
        /// When it will decide on its own, if it knows.
        until: Option<Timestamp>,
    },
    /// A name given to a gate (a person granting an override) is malformed.
    #[error(transparent)]
    Id(#[from] crate::id::IdError),
}

/// What a gate may look at: the release, the move asked for, the target environment and the
/// time; and the pipeline's clock, to wait on.
#[derive(Clone, Copy)]
pub struct GateContext<'a> {
    pub(crate) release: &'a AnyRelease,
    pub(crate) mv: Move,
    pub(crate) environment: &'a Environment,
    pub(crate) now: Timestamp,
    pub(crate) clock: Option<&'a dyn Clock>,
}

impl fmt::Debug for GateContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateContext")
            .field("release", &self.release.id())
            .field("mv", &self.mv)
            .field("environment", &self.environment.name())
            .field("now", &self.now)
            .field("clock", &self.clock.is_some())
            .finish()
    }
}

impl<'a> GateContext<'a> {
    /// A context for evaluating a gate outside a pipeline: in a gate's own tests, in a
    /// dashboard asking "what if", or in a host that drives moves itself.
    #[must_use]
    pub fn new(
        release: &'a AnyRelease,
        mv: Move,
        environment: &'a Environment,
        now: Timestamp,
    ) -> Self {
        GateContext {
            release,
            mv,
            environment,
            now,
            clock: None,
        }
    }

    /// The same context with `clock` to wait on (a pipeline evaluates its gates with its
    /// own clock). Without one, a context is frozen at [`now`](Self::now): a sleep to a
    /// later time never ends.
    #[must_use]
    pub fn with_clock(mut self, clock: &'a dyn Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A future that ends once the clock reads `deadline`: on the context's clock, or at
    /// once for a deadline not after [`now`](Self::now) when it has none (and never for a
    /// later one). [`GateExt::timeout`] races a gate against it.
    ///
    /// ```
    /// use async_trait::async_trait;
    /// use tollgate::gate::{Gate, GateContext, Verdict};
    /// use tollgate::time::Timestamp;
    ///
    /// /// Waits for a fixed instant, then opens (a pending verdict is usually better: the move
    /// /// is handed back instead of waiting; wrap a waiting gate in `.timeout(..)`).
    /// struct OpensAt(Timestamp);
    ///
    /// #[async_trait]
    /// impl Gate for OpensAt {
    ///     async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
    ///         ctx.sleep_until(self.0).await;
    ///         Verdict::Open
    ///     }
    /// }
    /// # let _ = OpensAt(Timestamp::EPOCH);
    /// ```
    #[must_use]
    pub fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        match self.clock {
            Some(clock) => clock.sleep_until(deadline),
            None if deadline <= self.now => Box::pin(std::future::ready(())),
            None => Box::pin(std::future::pending()),
        }
    }

    /// The release, as it is before the move.
    #[must_use]
    pub fn release(&self) -> &'a AnyRelease {
        self.release
    }

    /// The move being attempted.
    #[must_use]
    pub fn move_(&self) -> Move {
        self.mv
    }

    /// The environment the move is aimed at (staging for the stage move, the release's target
    /// for approve and deploy).
    #[must_use]
    pub fn environment(&self) -> &'a Environment {
        self.environment
    }

    /// The pipeline clock's time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.now
    }
}

/// Decides whether a move may happen.
///
/// Implement [`Gate::evaluate`]; override [`Gate::name`] so verdicts read well in errors and
/// reports.
///
/// ```
/// use async_trait::async_trait;
/// use tollgate::gate::{Gate, GateContext, Verdict};
///
/// /// Closed while an incident is open.
/// struct NoOpenIncidents { open: bool }
///
/// #[async_trait]
/// impl Gate for NoOpenIncidents {
///     async fn evaluate(&self, _ctx: &GateContext<'_>) -> Verdict {
///         if self.open { Verdict::closed("an incident is open") } else { Verdict::Open }
///     }
/// }
///
/// let pipeline = tollgate::pipeline::Pipeline::<tollgate::release::Deployment>::builder("web")
///     .gate(tollgate::gate::Move::Deploy, NoOpenIncidents { open: false });
/// # let _ = pipeline;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate gate",
    label = "this type does not implement `tollgate::gate::Gate`",
    note = "wrap a closure with `tollgate::gate::from_fn(name, |ctx| ...)`, or implement `async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict` with `#[async_trait]`"
)]
#[async_trait]
pub trait Gate: Send + Sync {
    /// Decides on the move described by `ctx`.
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict;

    /// The gate's name in errors and reports. Defaults to the type's name.
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }

    /// Whether the gate's verdict follows from the release and the time alone (a soak timer,
    /// a change window), so that a restore asks it again at the time the journal records
    /// rather than trusting the recorded verdict. Gates that read the world (metrics, test
    /// results elsewhere) are not: by default, false.
    fn replayable(&self) -> bool {
        false
    }
}

forward_impls! {
    #[async_trait]
    impl Gate {
        async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict;
        fn name(&self) -> Cow<'_, str>;
        fn replayable(&self) -> bool;
    }
}

/// A type-erased gate, for collections that mix implementations.
pub type BoxGate = Box<dyn Gate>;

/// A named gate from a synchronous closure.
///
/// ```
/// use tollgate::gate::{from_fn, Verdict};
///
/// let business_hours = from_fn("business-hours", |ctx| {
///     let hour = (ctx.now().as_millis() / 3_600_000) % 24;
///     if (9..17).contains(&hour) { Verdict::Open } else { Verdict::closed("outside 09-17 UTC") }
/// });
/// # let _ = business_hours;
/// ```
pub fn from_fn<F>(name: impl Into<String>, f: F) -> FnGate<F>
where
    F: Fn(&GateContext<'_>) -> Verdict + Send + Sync,
{
    FnGate {
        name: name.into(),
        f,
    }
}

/// The gate made by [`from_fn`].
#[derive(Clone)]
pub struct FnGate<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for FnGate<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnGate")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F> Gate for FnGate<F>
where
    F: Fn(&GateContext<'_>) -> Verdict + Send + Sync,
{
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        (self.f)(ctx)
    }
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }
}
