//! The capabilities of a release state and mode: sealed traits that say which moves a
//! `Release<S, M>` has. Each carries a diagnostic, so a program that tries a move the
//! lifecycle does not allow fails to compile with a message that names the fix.

use crate::lifecycle::{Approved, Built, Commit, Deployed, Staged, State, Tested};

pub use crate::lifecycle::{AutomaticApproval, HumanApproval};

mod sealed {
    /// Seals the capability traits: which state may do what is tollgate's to say.
    pub trait Sealed {}
    impl Sealed for crate::lifecycle::Commit {}
    impl Sealed for crate::lifecycle::Built {}
    impl Sealed for crate::lifecycle::Tested {}
    impl Sealed for crate::lifecycle::Staged {}
    impl Sealed for crate::lifecycle::Approved {}
    impl Sealed for crate::lifecycle::Deployed {}
}

/// A state a release can be built from: [`Commit`] only.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release is already built: it cannot be built again",
    label = "only a `Commit` release has `build`",
    note = "the lifecycle is build → test → stage → approve → deploy; take the move this state offers next"
)]
pub trait CanBuild: State + sealed::Sealed {}
impl CanBuild for Commit {}

/// A state a release can be tested from: [`Built`] only.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release cannot be tested: only a `Built` release can",
    label = "`test` needs a built release",
    note = "build it first with `release.build(&pipeline)` (build → test → stage → approve → deploy)"
)]
pub trait CanTest: HasArtifact {}
impl CanTest for Built {}

/// A state a release can be staged from: [`Tested`] only.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release cannot be staged: only a `Tested` release can",
    label = "`stage` needs a tested release",
    note = "build and test it first (build → test → stage → approve → deploy)"
)]
pub trait CanStage: HasArtifact {}
impl CanStage for Tested {}

/// A state a release can be approved from: [`Staged`] only.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release cannot be approved: only a `Staged` release can",
    label = "approval comes after staging",
    note = "build, test and stage it first (build → test → stage → approve → deploy)"
)]
pub trait CanApprove: HasArtifact {}
impl CanApprove for Staged {}

/// A state a release can be deployed from: [`Approved`] only.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release cannot be deployed yet: only an `Approved` release can",
    label = "not approved yet",
    note = "test, stage and approve it first (build → test → stage → approve → deploy); in delivery mode `approve` takes a person's `Approval`, in deployment mode `auto_approve` asks the automated gates"
)]
pub trait CanDeploy: HasArtifact {}
impl CanDeploy for Approved {}

/// A state whose release carries its artifact: every state after [`Commit`].
#[diagnostic::on_unimplemented(
    message = "a `{Self}` release has no artifact yet",
    label = "the artifact is fixed by the build move",
    note = "build the release first: `release.build(&pipeline).await?` fixes its artifact and digest"
)]
pub trait HasArtifact: State + sealed::Sealed {}
impl HasArtifact for Built {}
impl HasArtifact for Tested {}
impl HasArtifact for Staged {}
impl HasArtifact for Approved {}
impl HasArtifact for Deployed {}
