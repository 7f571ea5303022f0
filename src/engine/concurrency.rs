//! [`ConcurrencyGroups`]: the registry behind [`Concurrency`](crate::graph::Concurrency)
//! groups, shared by every step an engine runs (so by every release of a pipeline): one
//! stage at a time per group, a newcomer queueing behind the one in flight or, with
//! cancel-in-progress, cancelling it ([`Superseded`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::oneshot;
use futures::future::{self, BoxFuture, Either};

use crate::executor::{ExecutorError, StageOutcome};
use crate::graph::Concurrency;

/// Why a stage was cancelled by its concurrency group: a newer run with cancel-in-progress
/// took the group while it ran or waited for it. Its stage ends
/// [`Cancelled`](crate::executor::StageStatus::Cancelled), is not retried, and keeps this as
/// its [`error`](crate::engine::StageReport::error), which a host downcasts:
///
/// ```
/// use tollgate::engine::{StageReport, Superseded};
///
/// fn superseded_by(report: &StageReport) -> Option<&str> {
///     let error = report.error()?.downcast_ref::<Superseded>()?;
///     Some(&error.by)
/// }
/// # let _ = superseded_by;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cancelled: {by} took concurrency group `{group}`")]
#[non_exhaustive]
pub struct Superseded {
    /// The group.
    pub group: String,
    /// Who took it: the release and stage.
    pub by: String,
}

/// The concurrency groups of every step an engine runs: at most one stage holds a group at a
/// time. Cheap to clone (shared); an engine makes its own, or shares one given to
/// [`EngineBuilder::concurrency_groups`](crate::engine::EngineBuilder::concurrency_groups).
///
/// Two releases of one pipeline share its engine, so its groups; two pipelines that deploy
/// to one place share a registry:
///
/// ```
/// use tollgate::engine::{ConcurrencyGroups, Engine};
///
/// let production = ConcurrencyGroups::new();
/// let web = Engine::builder().concurrency_groups(production.clone()).build()?;
/// let api = Engine::builder().concurrency_groups(production.clone()).build()?;
/// // Nothing holds a group until a stage in one runs.
/// assert!(web.concurrency_groups().busy().is_empty());
/// assert!(api.concurrency_groups().busy().is_empty());
/// # Ok::<(), tollgate::engine::EngineError>(())
/// ```
#[derive(Clone, Default)]
pub struct ConcurrencyGroups(Arc<Mutex<HashMap<String, Group>>>);

impl std::fmt::Debug for ConcurrencyGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyGroups")
            .field("busy", &self.lock().len())
            .finish()
    }
}

/// One group: who holds it, and who waits, oldest first.
#[derive(Default)]
struct Group {
    next: u64,
    holder: Option<(u64, oneshot::Sender<String>)>,
    queue: VecDeque<(u64, oneshot::Sender<Grant>)>,
}

/// What a waiter is told.
enum Grant {
    /// It holds the group; the receiver fires with the newcomer's name if it is superseded.
    Held(oneshot::Receiver<String>),
    /// A newer run with cancel-in-progress came first.
    Superseded(String),
}

impl ConcurrencyGroups {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        ConcurrencyGroups::default()
    }

    /// The groups held right now, by name, sorted.
    #[must_use]
    pub fn busy(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        // Only this file's short, panic-free sections run under the lock.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `work` run inside `concurrency`'s group for `who` (a release and stage): it waits for
    /// the group, runs holding it, and gives it back when it ends or is dropped; it ends
    /// with [`Superseded`] if a newer run with cancel-in-progress takes the group.
    pub(crate) fn run<'a>(
        &self,
        concurrency: &Concurrency,
        who: &str,
        work: BoxFuture<'a, Result<StageOutcome, ExecutorError>>,
    ) -> BoxFuture<'a, Result<StageOutcome, ExecutorError>> {
        let name = concurrency.group.clone();
        let (id, grant) = self.join(&name, concurrency.cancel_in_progress, who);
        let member = Member {
            groups: self.clone(),
            name,
            id,
        };
        Box::pin(async move {
            let superseded = |by: String| -> ExecutorError {
                Box::new(Superseded {
                    group: member.name.clone(),
                    by,
                })
            };
            let preempted = match grant {
                Either::Left(held) => held,
                Either::Right(waiting) => match waiting.await {
                    Ok(Grant::Held(preempted)) => preempted,
                    Ok(Grant::Superseded(by)) => return Err(superseded(by)),
                    // The registry dropped the waiter without a word: only when it is gone.
                    Err(_) => return Err(superseded("nobody".to_owned())),
                },
            };
            match future::select(work, preempted).await {
                Either::Left((result, _)) => result,
                Either::Right((Ok(by), _)) => Err(superseded(by)),
                // The sender went without a word (only if the registry let go of the
                // group): nothing supersedes the work, so it runs on.
                Either::Right((Err(_), work)) => work.await,
            }
        })
    }

    /// Enters `name`'s queue (or takes it at once), superseding whoever holds it or waits
    /// for it when `cancel` is set.
    #[allow(clippy::type_complexity)]
    fn join(
        &self,
        name: &str,
        cancel: bool,
        who: &str,
    ) -> (
        u64,
        Either<oneshot::Receiver<String>, oneshot::Receiver<Grant>>,
    ) {
        let mut groups = self.lock();
        let group = groups.entry(name.to_owned()).or_default();
        let id = group.next;
        group.next += 1;
        if group.holder.is_none() && group.queue.is_empty() {
            let (tx, rx) = oneshot::channel();
            group.holder = Some((id, tx));
            return (id, Either::Left(rx));
        }
        if cancel {
            if let Some((_, preempt)) = group.holder.as_mut().map(|h| {
                let (tx, _) = oneshot::channel();
                std::mem::replace(h, (h.0, tx))
            }) {
                let _ = preempt.send(who.to_owned());
            }
            for (_, waiter) in group.queue.drain(..) {
                let _ = waiter.send(Grant::Superseded(who.to_owned()));
            }
        }
        let (tx, rx) = oneshot::channel();
        group.queue.push_back((id, tx));
        (id, Either::Right(rx))
    }

    /// `id` leaves `name`: if it held the group, the oldest waiter still there takes it.
    fn leave(&self, name: &str, id: u64) {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(name) else {
            return;
        };
        if group
            .holder
            .as_ref()
            .is_some_and(|(holder, _)| *holder == id)
        {
            group.holder = None;
            while let Some((next, waiter)) = group.queue.pop_front() {
                let (tx, rx) = oneshot::channel();
                if waiter.send(Grant::Held(rx)).is_ok() {
                    group.holder = Some((next, tx));
                    break;
                }
            }
        } else {
            group.queue.retain(|(waiting, _)| *waiting != id);
        }
        if group.holder.is_none() && group.queue.is_empty() {
            groups.remove(name);
        }
    }
}

/// A place in a group, held by the attempt's future: dropping it (the attempt ended, was
/// cut off, or was superseded) gives the group back or leaves the queue.
struct Member {
    groups: ConcurrencyGroups,
    name: String,
    id: u64,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.groups.leave(&self.name, self.id);
    }
}
