//! What guards a move: the [`Gate`] trait and its [`Verdict`], closure gates
//! ([`from_fn`]), and the human approval capability ([`Approval`]).
//!
//! Automated gates attach to moves with
//! [`PipelineBuilder::gate`](crate::pipeline::PipelineBuilder::gate). Every gate on a move
//! must be open for the move to happen: a closed gate stops it with its reason, a pending one
//! with what it waits for, and the release is handed back unchanged either way.

mod approval;
mod combinator;
mod explain;
mod policy;
mod verdicts;
mod window;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::name::Person;
use crate::release::AnyRelease;
use crate::time::Timestamp;

pub use approval::{Approval, ApprovalRecord, ApprovalRequest, Signoff};
pub use combinator::{And, GateExt, KOfN, Named, Not, Or, Soak, Timeout, all, any, k_of_n, soak};
pub use explain::{ApprovalNeed, Explanation, GateVerdict};
pub use policy::{
    ApprovalPolicy, Approver, Ballot, Decision, Directory, Groups, NoGroups, Progress, Rule,
    RuleProgress, Vote,
};
pub use verdicts::{MetricGate, MetricSource, TestResults, Threshold};
pub use window::{ChangeWindows, Override, Overrides, Window};

/// A move of a release from one state to the next; gates attach to moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Move {
    /// Commit → Built.
    Build,
    /// Built → Tested.
    Test,
    /// Tested → Staged.
    Stage,
    /// Staged → Approved.
    Approve,
    /// Approved → Deployed.
    Deploy,
}

impl Move {
    /// The move's lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Move::Build => "build",
            Move::Test => "test",
            Move::Stage => "stage",
            Move::Approve => "approve",
            Move::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gate's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verdict {
    /// The move may happen.
    Open,
    /// A person opened a gate that would otherwise block (a change-window override, a
    /// break-glass deploy); counts as open, and records who and why.
    Overridden {
        /// Who opened it.
        by: Person,
        /// Why, in their words.
        reason: String,
    },
    /// The move may not happen.
    Closed {
        /// Why.
        reason: String,
    },
    /// The gate has not decided yet.
    Pending {
        /// What it waits for: a person, a verdict, a time.
        waiting_for: String,
        /// When it will decide on its own, if it knows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
    },
}

impl Verdict {
    /// A closed verdict.
    pub fn closed(reason: impl Into<String>) -> Self {
        Verdict::Closed {
            reason: reason.into(),
        }
    }

    /// A pending verdict with no known deadline.
    pub fn pending(waiting_for: impl Into<String>) -> Self {
        Verdict::Pending {
            waiting_for: waiting_for.into(),
            until: None,
        }
    }

    /// Whether the gate is open (or was opened by a person's override).
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self, Verdict::Open | Verdict::Overridden { .. })
    }
}

impl fmt::Display for Verdict {
    /// `open`, `open (overridden by rita: hotfix)`, `closed: <reason>`,
    /// `pending: <what it waits for>` with `until @<ms>` when known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Open => f.write_str("open"),
            Verdict::Overridden { by, reason } => write!(f, "open (overridden by {by}: {reason})"),
            Verdict::Closed { reason } => write!(f, "closed: {reason}"),
            Verdict::Pending {
                waiting_for,
                until: None,
            } => write!(f, "pending: {waiting_for}"),
            Verdict::Pending {
                waiting_for,
                until: Some(until),
            } => write!(f, "pending until {until}: {waiting_for}"),
        }
    }
}

/// What a gate may look at: the release, the move asked for, the target environment and the
/// time.
#[derive(Debug, Clone, Copy)]
pub struct GateContext<'a> {
    pub(crate) release: &'a AnyRelease,
    pub(crate) mv: Move,
    pub(crate) environment: &'a Environment,
    pub(crate) now: Timestamp,
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
}

#[async_trait]
impl<G: Gate + ?Sized> Gate for &G {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        (**self).evaluate(ctx).await
    }
    fn name(&self) -> Cow<'_, str> {
        (**self).name()
    }
}

#[async_trait]
impl<G: Gate + ?Sized> Gate for Box<G> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        (**self).evaluate(ctx).await
    }
    fn name(&self) -> Cow<'_, str> {
        (**self).name()
    }
}

#[async_trait]
impl<G: Gate + ?Sized> Gate for Arc<G> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        (**self).evaluate(ctx).await
    }
    fn name(&self) -> Cow<'_, str> {
        (**self).name()
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

/// One gate's verdict on one move, as recorded in the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    /// The gate's name.
    pub gate: String,
    /// The move it guarded.
    #[serde(rename = "move")]
    pub mv: Move,
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// When it was given.
    pub at: Timestamp,
}
