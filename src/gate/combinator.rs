//! Gates made of gates: [`GateExt`] (`and`, `or`, `not`, `timeout`, `named`, `boxed`), the
//! collection combinators [`all`], [`any`] and [`k_of_n`], and the soak timer [`soak`].
//!
//! Every combinator evaluates its parts concurrently and explains itself: a closed verdict
//! names each part that closed it and why, a pending one names each part it waits for, and
//! `until` is the earliest time at which a part said it would decide on its own.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{Either, join, join_all, select};

use super::GateError;
use super::{BoxGate, Gate, GateContext, Verdict};

type Result<T, E = GateError> = std::result::Result<T, E>;
use crate::time::Timestamp;

/// Combinators for every [`Gate`], in the style of `Iterator` adapters.
///
/// ```
/// use std::time::Duration;
/// use tollgate::gate::{self, GateExt, Verdict};
///
/// let green = gate::from_fn("ci-green", |_| Verdict::Open);
/// let frozen = gate::from_fn("freeze", |_| Verdict::closed("holiday freeze"));
/// let ready = green
///     .and(frozen.not())
///     .and(gate::soak(Duration::from_secs(30 * 60)))
///     .timeout(Duration::from_secs(4 * 3600))
///     .named("ready-for-production");
/// assert_eq!(tollgate::gate::Gate::name(&ready), "ready-for-production");
/// ```
pub trait GateExt: Gate + Sized {
    /// Open when both are open; closed when either is closed; pending otherwise.
    fn and<G: Gate>(self, other: G) -> And<Self, G> {
        And(self, other)
    }

    /// Open when either is open; closed when both are closed; pending otherwise.
    fn or<G: Gate>(self, other: G) -> Or<Self, G> {
        Or(self, other)
    }

    /// Open when this is closed, closed when this is open; pending stays pending.
    fn not(self) -> Not<Self> {
        Not(self)
    }

    /// Gives the gate until the release has been in its current state for `limit` (counted
    /// from [`AnyRelease::entered_at`](crate::record::AnyRelease::entered_at) on the
    /// pipeline's clock): the gate is raced against that deadline, and one that has not
    /// decided by then (still evaluating, or pending) is closed, its evaluation dropped.
    /// Open and closed verdicts given in time pass through; a pending one before the
    /// deadline says it will decide by then at the latest.
    ///
    /// At the same instant the verdict wins: a gate that decides exactly at the deadline
    /// is heard, as an attempt that finishes at its deadline succeeds.
    fn timeout(self, limit: Duration) -> Timeout<Self> {
        Timeout { gate: self, limit }
    }

    /// The same gate under another name, for errors, records and events.
    fn named(self, name: impl Into<String>) -> Named<Self> {
        Named {
            gate: self,
            name: name.into(),
        }
    }

    /// Boxes the gate, for collections that mix kinds ([`all`], [`any`], [`k_of_n`]).
    fn boxed(self) -> BoxGate
    where
        Self: 'static,
    {
        Box::new(self)
    }
}

impl<G: Gate> GateExt for G {}

/// Open when all `gates` are open (an empty list is open).
///
/// ```
/// use tollgate::gate::{self, GateExt, Verdict};
///
/// let checks = gate::all([
///     gate::from_fn("tests", |_| Verdict::Open).boxed(),
///     gate::from_fn("security-scan", |_| Verdict::pending("scanner")).boxed(),
/// ]);
/// assert_eq!(tollgate::gate::Gate::name(&checks), "all(tests, security-scan)");
/// ```
pub fn all(gates: impl IntoIterator<Item = BoxGate>) -> KOfN {
    let gates: Vec<BoxGate> = gates.into_iter().collect();
    KOfN {
        need: gates.len(),
        gates,
        kind: Kind::All,
    }
}

/// Open when any of `gates` is open (an empty list is closed).
///
/// ```
/// use tollgate::gate::{self, GateExt, Verdict};
///
/// let either = gate::any([
///     gate::from_fn("canary-healthy", |_| Verdict::closed("error rate 2.1%")).boxed(),
///     gate::from_fn("manual-override", |_| Verdict::Open).boxed(),
/// ]);
/// # let _ = either;
/// ```
pub fn any(gates: impl IntoIterator<Item = BoxGate>) -> KOfN {
    KOfN {
        need: 1,
        gates: gates.into_iter().collect(),
        kind: Kind::Any,
    }
}

/// Open when at least `k` of `gates` are open; closed as soon as too many are closed for `k`
/// to be reachable; pending otherwise.
///
/// `k` must be between 1 and the number of gates, else [`GateError::Invalid`](super::GateError::Invalid).
///
/// ```
/// use tollgate::gate::{self, GateExt, Verdict};
///
/// let regions = ["eu", "us", "ap"].map(|r| gate::from_fn(r, |_| Verdict::Open).boxed());
/// let quorum = gate::k_of_n(2, regions)?;
/// assert_eq!(tollgate::gate::Gate::name(&quorum), "2 of (eu, us, ap)");
/// assert!(gate::k_of_n(4, Vec::new()).is_err());
/// # Ok::<(), tollgate::Error>(())
/// ```
pub fn k_of_n(k: usize, gates: impl IntoIterator<Item = BoxGate>) -> Result<KOfN> {
    let gates: Vec<BoxGate> = gates.into_iter().collect();
    let gate = KOfN {
        need: k,
        gates,
        kind: Kind::KOfN,
    };
    if k == 0 || k > gate.gates.len() {
        return Err(GateError::Invalid {
            gate: gate.name().into_owned(),
            reason: format!(
                "needs between 1 and {} open gates, not {k}",
                gate.gates.len()
            ),
        });
    }
    Ok(gate)
}

/// A soak (wait) timer: pending until the release has been in its current state for
/// `duration` on the pipeline's clock, then open.
///
/// Typical use: a gate on [`Move::Approve`](super::Move::Approve) that keeps a release in
/// staging for 30 minutes before anyone, or anything, may promote it.
///
/// ```
/// use std::time::Duration;
///
/// let soak = tollgate::gate::soak(Duration::from_secs(30 * 60));
/// assert_eq!(tollgate::gate::Gate::name(&soak), "soak 30m");
/// ```
#[must_use]
pub fn soak(duration: Duration) -> Soak {
    Soak { duration }
}

/// See [`GateExt::and`].
#[derive(Debug, Clone)]
pub struct And<A, B>(A, B);

/// See [`GateExt::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B>(A, B);

/// See [`GateExt::not`].
#[derive(Debug, Clone)]
pub struct Not<G>(G);

/// See [`GateExt::timeout`].
#[derive(Debug, Clone)]
pub struct Timeout<G> {
    gate: G,
    limit: Duration,
}

/// See [`GateExt::named`].
#[derive(Debug, Clone)]
pub struct Named<G> {
    gate: G,
    name: String,
}

/// See [`soak`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Soak {
    duration: Duration,
}

/// See [`all`], [`any`] and [`k_of_n`].
pub struct KOfN {
    need: usize,
    gates: Vec<BoxGate>,
    kind: Kind,
}

/// How a [`KOfN`] names itself.
#[derive(Debug, Clone, Copy)]
enum Kind {
    All,
    Any,
    KOfN,
}

impl fmt::Debug for KOfN {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KOfN")
            .field("need", &self.need)
            .field(
                "gates",
                &self.gates.iter().map(|g| g.name()).collect::<Vec<_>>(),
            )
            .field("kind", &self.kind)
            .finish()
    }
}

#[async_trait]
impl<A: Gate, B: Gate> Gate for And<A, B> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let (a, b) = join(self.0.evaluate(ctx), self.1.evaluate(ctx)).await;
        combine(2, vec![(self.0.name(), a), (self.1.name(), b)])
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Owned(format!("({} and {})", self.0.name(), self.1.name()))
    }
}

#[async_trait]
impl<A: Gate, B: Gate> Gate for Or<A, B> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let (a, b) = join(self.0.evaluate(ctx), self.1.evaluate(ctx)).await;
        combine(1, vec![(self.0.name(), a), (self.1.name(), b)])
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Owned(format!("({} or {})", self.0.name(), self.1.name()))
    }
}

#[async_trait]
impl<G: Gate> Gate for Not<G> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        match self.0.evaluate(ctx).await {
            Verdict::Open | Verdict::Overridden { .. } => {
                Verdict::closed(format!("`{}` is open", self.0.name()))
            }
            Verdict::Closed { .. } => Verdict::Open,
            pending @ Verdict::Pending { .. } => pending,
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Owned(format!("not {}", self.0.name()))
    }
}

#[async_trait]
impl<G: Gate> Gate for Timeout<G> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let deadline = ctx.release().entered_at().saturating_add(self.limit);
        // The gate is polled first at every wake-up, so a verdict ready at the deadline
        // wins over it.
        let verdict = match select(self.gate.evaluate(ctx), ctx.sleep_until(deadline)).await {
            Either::Left((verdict, _)) => verdict,
            Either::Right(((), _)) => {
                return Verdict::closed(format!(
                    "gave up after {} waiting for `{}` to decide",
                    human(self.limit),
                    self.gate.name()
                ));
            }
        };
        match verdict {
            Verdict::Pending { waiting_for, until } => {
                if ctx.now() >= deadline {
                    Verdict::closed(format!(
                        "gave up after {} waiting for {waiting_for}",
                        human(self.limit)
                    ))
                } else {
                    Verdict::Pending {
                        waiting_for,
                        until: Some(until.map_or(deadline, |u| u.min(deadline))),
                    }
                }
            }
            decided => decided,
        }
    }

    fn name(&self) -> Cow<'_, str> {
        self.gate.name()
    }
}

#[async_trait]
impl<G: Gate> Gate for Named<G> {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        self.gate.evaluate(ctx).await
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }

    fn replayable(&self) -> bool {
        self.gate.replayable()
    }
}

#[async_trait]
impl Gate for Soak {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let release = ctx.release();
        let deadline = release.entered_at().saturating_add(self.duration);
        if ctx.now() >= deadline {
            Verdict::Open
        } else {
            Verdict::Pending {
                waiting_for: format!(
                    "{} in {} ({} left)",
                    human(self.duration),
                    release.state(),
                    human(deadline.saturating_since(ctx.now()))
                ),
                until: Some(deadline),
            }
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Owned(format!("soak {}", human(self.duration)))
    }

    fn replayable(&self) -> bool {
        true
    }
}

#[async_trait]
impl Gate for KOfN {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let verdicts = join_all(self.gates.iter().map(|g| g.evaluate(ctx))).await;
        let named = self.gates.iter().map(|g| g.name()).zip(verdicts).collect();
        combine(self.need, named)
    }

    fn name(&self) -> Cow<'_, str> {
        let mut names = String::new();
        for (i, gate) in self.gates.iter().enumerate() {
            if i > 0 {
                names.push_str(", ");
            }
            names.push_str(&gate.name());
        }
        Cow::Owned(match self.kind {
            Kind::All => format!("all({names})"),
            Kind::Any => format!("any({names})"),
            Kind::KOfN => format!("{} of ({names})", self.need),
        })
    }
}

/// The verdict of "at least `need` of these are open".
fn combine(need: usize, verdicts: Vec<(Cow<'_, str>, Verdict)>) -> Verdict {
    let total = verdicts.len();
    let open = verdicts.iter().filter(|(_, v)| v.is_open()).count();
    if open >= need {
        return Verdict::Open;
    }
    let mut closed = Vec::new();
    let mut pending = Vec::new();
    let mut until: Option<Timestamp> = None;
    for (name, verdict) in verdicts {
        match verdict {
            Verdict::Open | Verdict::Overridden { .. } => {}
            Verdict::Closed { reason } => closed.push(format!("`{name}`: {reason}")),
            Verdict::Pending {
                waiting_for,
                until: u,
            } => {
                pending.push(format!("`{name}`: {waiting_for}"));
                until = match (until, u) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    let progress = if total > 1 {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = write!(s, "{open} of {need} open; ");
        s
    } else {
        String::new()
    };
    if open + pending.len() < need {
        Verdict::closed(format!("{progress}{}", closed.join("; ")))
    } else {
        Verdict::Pending {
            waiting_for: format!("{progress}{}", pending.join("; ")),
            until,
        }
    }
}

/// A duration as people write it: `45s`, `30m`, `1h30m`, `2d4h`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut out = String::new();
    for (value, unit) in [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")] {
        if value > 0 {
            let _ = write!(out, "{value}{unit}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &'static str, verdict: Verdict) -> (Cow<'static, str>, Verdict) {
        (Cow::Borrowed(name), verdict)
    }

    #[test]
    fn combine_counts_open_closed_and_pending() {
        let closed = || Verdict::closed("no");
        let pending = |at| Verdict::Pending {
            waiting_for: "later".to_owned(),
            until: Some(Timestamp::from_millis(at)),
        };
        assert!(combine(2, vec![v("a", Verdict::Open), v("b", Verdict::Open)]).is_open());
        assert_eq!(
            combine(2, vec![v("a", Verdict::Open), v("b", closed())]),
            Verdict::closed("1 of 2 open; `b`: no")
        );
        assert_eq!(
            combine(
                2,
                vec![
                    v("a", Verdict::Open),
                    v("b", pending(9)),
                    v("c", pending(4))
                ]
            ),
            Verdict::Pending {
                waiting_for: "1 of 2 open; `b`: later; `c`: later".to_owned(),
                until: Some(Timestamp::from_millis(4)),
            }
        );
        assert!(combine(1, vec![v("a", closed()), v("b", Verdict::Open)]).is_open());
        assert!(matches!(combine(1, vec![]), Verdict::Closed { .. }));
        assert!(combine(0, vec![]).is_open());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human(Duration::from_secs(30 * 60)), "30m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2d4h");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
