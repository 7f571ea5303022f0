//! The typestate at the heart of tollgate: [`Release<S, M>`](Release), a release in one of the
//! lifecycle's states ([`Commit`] → [`Built`] → [`Tested`] → [`Staged`] → [`Approved`] →
//! [`Deployed`]) of a pipeline in one of its modes ([`Delivery`], [`Deployment`]).
//!
//! Every move consumes the release and returns the next state, or a [`MoveError`] that hands
//! the unmoved release back. A move exists only for the state it starts from (the sealed
//! capabilities in [`capability`] say which), so nothing can be skipped; the
//! Staged → Approved move differs by mode:
//!
//! | mode | Staged → Approved | meaning |
//! |---|---|---|
//! | [`Delivery`] | [`approve`](Release::approve)`(pipeline, approval)` | a person decides |
//! | [`Deployment`] | [`auto_approve`](Release::auto_approve)`(pipeline)` | the automated gates decide |
//!
//! The release drives its [`Pipeline`]; the pipeline never names a release.

mod approvals;
pub mod capability;
mod moves;
mod restore;

use std::fmt;
use std::marker::PhantomData;

use crate::artifact::ArtifactRef;
use crate::engine::CancelHandle;
use crate::error::{Error, ErrorKind, Result};
use crate::fact::Fingerprint;
use crate::id::ReleaseId;
use crate::journal::Seq;
use crate::pipeline::Pipeline;
use crate::record::AnyRelease;
use crate::time::Timestamp;

use capability::HasArtifact;

pub use crate::lifecycle::{
    Approved, Built, Commit, Delivery, Deployed, Deployment, Mode, ModeKind, Staged, State,
    StateName, Tested,
};
pub use crate::record::Revision;
pub use restore::Restored;

/// A release in state `S` of a pipeline in mode `M`.
///
/// Created only by [`Pipeline::start`] or restored from the journal by
/// [`Pipeline::restore`] (which re-derives it from its facts), moved only by the methods its
/// state has, and never copied: a release that has moved cannot be used again. Every move
/// writes its facts to the pipeline's journal first, and a move that another copy of the
/// release (another process) took first is refused ([`ErrorKind::Conflict`]).
///
/// ```compile_fail,E0382
/// # use tollgate::prelude::*;
/// async fn twice(built: Release<Built, Delivery>, p: &Pipeline<Delivery>, a: &ArtifactRef) {
///     let _tested = built.test(p, a).await;
///     let _again = built.test(p, a).await; // `built` was moved by the first call
/// }
/// ```
pub struct Release<S: State, M: Mode> {
    any: AnyRelease,
    /// The journal entry this release was last written or read at; `None` until its first
    /// move writes its start.
    head: Option<Seq>,
    /// The definition of the pipeline that started it.
    fingerprint: Fingerprint,
    /// A move another copy claimed (and when) and had not concluded when this copy was
    /// restored.
    claimed: Option<(crate::lifecycle::Move, Timestamp)>,
    /// Cancels this release's next move only (a child of the pipeline's handle, which
    /// cancels every move). Each move gets a fresh one when it ends.
    cancel: CancelHandle,
    /// The run of the next move that was claimed and not concluded (a crash cut it off, or
    /// its last facts could not be written): the next try of that move continues it.
    run: Option<OpenRun>,
    _marker: PhantomData<fn() -> (S, M)>,
}

/// A run of a move: opened by the claim (the gates' verdicts) at journal position `claim`,
/// it lasts, across copies of the release that take it over after a crash, until a fact
/// concludes the move (moved or refused). `done` holds the stages of the move's step that
/// succeeded in it so far, as their facts say: none is run again.
#[derive(Debug, Clone)]
pub(crate) struct OpenRun {
    /// The move.
    pub mv: crate::lifecycle::Move,
    /// The journal position of the claim that opened the run.
    pub claim: Seq,
    /// The reports of the stages that succeeded in the run, in the order they did.
    pub done: Vec<crate::engine::StageReport>,
}

impl<S: State, M: Mode> fmt::Debug for Release<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Release")
            .field("id", self.any.id())
            .field("state", &S::NAME)
            .field("mode", &M::KIND)
            .field("artifact", &self.any.artifact().map(|a| &a.digest))
            .finish_non_exhaustive()
    }
}

impl<M: Mode> Pipeline<M> {
    /// Starts a release `id` of `revision`. It is headed for the production environment.
    /// The engine's observer hears an [`Event::ReleaseStarted`](crate::engine::Event).
    pub fn start(&self, id: impl Into<String>, revision: Revision) -> Result<Release<Commit, M>> {
        let any = AnyRelease::new(
            ReleaseId::new(id)?,
            self.name().clone(),
            M::KIND,
            revision,
            self.clock().now(),
            self.staging().clone(),
            self.production().clone(),
        );
        self.engine()
            .tell(any.created_at(), || crate::engine::Event::ReleaseStarted {
                release: any.id().clone(),
                pipeline: any.pipeline().clone(),
                mode: M::KIND,
                revision: any.revision().id.clone(),
                author: any.revision().author.clone(),
                at: any.created_at(),
            });
        Ok(Release::new(any, None, self.fingerprint().clone()))
    }
}

impl<S: State, M: Mode> Release<S, M> {
    fn new(any: AnyRelease, head: Option<Seq>, fingerprint: Fingerprint) -> Self {
        Release {
            any,
            head,
            fingerprint,
            claimed: None,
            cancel: CancelHandle::new(),
            run: None,
            _marker: PhantomData,
        }
    }

    /// The same release in state `N`, at journal entry `head`.
    fn moved<N: State>(self) -> Release<N, M> {
        Release::new(self.any, self.head, self.fingerprint)
    }

    /// The same release, restored while another copy had claimed `mv` at `since`.
    fn claimed_by_another(mut self, claim: Option<(crate::lifecycle::Move, Timestamp)>) -> Self {
        self.claimed = claim;
        self
    }

    /// The release's id.
    #[must_use]
    pub fn id(&self) -> &ReleaseId {
        self.any.id()
    }

    /// The state, as a value.
    #[must_use]
    pub fn state(&self) -> StateName {
        S::NAME
    }

    /// The mode, as a value.
    #[must_use]
    pub fn mode(&self) -> ModeKind {
        M::KIND
    }

    /// The full record: revision, artifact, step reports, gate verdicts, approval.
    #[must_use]
    pub fn record(&self) -> &AnyRelease {
        &self.any
    }

    /// The handle that cancels this release's move while it runs, and only it: take it
    /// before starting the move, and cancel while the move's gates evaluate or its step
    /// runs. While the gates evaluate, their futures are dropped and the move fails with
    /// `Error::MoveCancelled` (nothing of their verdicts recorded); while the step runs, its
    /// running stages stop, finally stages run, and the move fails with
    /// `Error::StepCancelled`; either way the release is handed back (with a fresh handle
    /// for the next try). Like every [`CancelHandle`], it stops what is running when it is
    /// used: a cancel before the move's gates start evaluating is not remembered. Other
    /// releases of the pipeline keep running; [`Pipeline::cancel_handle`] cancels every move
    /// at once.
    #[must_use]
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Forgets the typed state, for storage.
    #[must_use]
    pub fn into_any(self) -> AnyRelease {
        self.any
    }
}

impl<S: State, M: Mode> Release<S, M> {
    /// The artifact, fixed by the build move: every state after [`Commit`] has one.
    ///
    /// ```compile_fail,E0277
    /// # use tollgate::prelude::*;
    /// fn peek(fresh: &Release<Commit, Delivery>) {
    ///     let _ = fresh.artifact(); // nothing is built yet
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Never: a typed release past Commit is made only by the build move, which fixes the
    /// artifact, or restored from a record whose consistency check requires one.
    #[must_use]
    pub fn artifact(&self) -> &ArtifactRef
    where
        S: HasArtifact,
    {
        self.any
            .artifact()
            .expect("a release past Commit has an artifact: fixed by build, checked on restore")
    }
}

impl<M: Mode> Release<Deployed, M> {
    /// When the release reached its target.
    #[must_use]
    pub fn deployed_at(&self) -> Timestamp {
        self.any
            .deployed_at()
            .unwrap_or_else(|| self.any.created_at())
    }
}

impl<S: State, M: Mode> From<Release<S, M>> for AnyRelease {
    fn from(release: Release<S, M>) -> Self {
        release.into_any()
    }
}

/// A move that did not happen: the error, and the release handed back in the state it was
/// in (with the attempt recorded in its history), ready to retry or store.
pub struct MoveError<S: State, M: Mode> {
    release: Release<S, M>,
    error: Error,
    approval: Option<crate::approval::Approval>,
}

impl<S: State, M: Mode> MoveError<S, M> {
    fn new(mut release: Release<S, M>, error: Error) -> Self {
        // The next try is a new move with a token of its own.
        release.cancel = CancelHandle::new();
        MoveError {
            release,
            error,
            approval: None,
        }
    }

    /// The approval handed to [`Release::approve`], when the move failed for a reason other
    /// than the approval itself (a gate was closed or pending), so that it can be used again
    /// once the gate opens. `None` once taken, and for every other failure.
    pub fn take_approval(&mut self) -> Option<crate::approval::Approval> {
        self.approval.take()
    }

    /// What went wrong.
    #[must_use]
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The category of what went wrong.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The release, unmoved.
    #[must_use]
    pub fn release(&self) -> &Release<S, M> {
        &self.release
    }

    /// Takes the release back.
    #[must_use]
    pub fn into_release(self) -> Release<S, M> {
        self.release
    }

    /// Splits into the release and the error.
    #[must_use]
    pub fn into_parts(self) -> (Release<S, M>, Error) {
        (self.release, self.error)
    }
}

impl<S: State, M: Mode> fmt::Debug for MoveError<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoveError")
            .field("release", &self.release)
            .field("error", &self.error)
            .field("approval", &self.approval)
            .finish()
    }
}

impl<S: State, M: Mode> fmt::Display for MoveError<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<S: State, M: Mode> std::error::Error for MoveError<S, M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl<S: State, M: Mode> From<MoveError<S, M>> for Error {
    fn from(e: MoveError<S, M>) -> Error {
        e.error
    }
}
