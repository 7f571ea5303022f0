//! Where the desired state comes from: the [`DesiredSource`] host trait (a git repository,
//! an OCI artifact, a bucket), the [`DesiredState`] it hands over at a [`SourceRevision`],
//! and [`MemorySource`], a source kept in memory for tests, simulations and hosts that
//! compute their desired state.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::environment::EnvironmentName;
use crate::forward::forward_impls;
use crate::rollout::Version;

/// The revision of a desired-state source (a git commit, an artifact's digest, a bucket
/// object's generation): a new revision is a new desired state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceRevision(String);

impl SourceRevision {
    /// The revision called `id`.
    pub fn new(id: impl Into<String>) -> Self {
        SourceRevision(id.into())
    }

    /// The revision's id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one environment should run: a release, by id and digest (both must match what the
/// fleet registered), and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// The release and the digest of its artifact.
    pub version: Version,
    /// The configuration the environment should run with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl Desired {
    /// `version` with no configuration.
    #[must_use]
    pub fn new(version: Version) -> Self {
        Desired {
            version,
            config: BTreeMap::new(),
        }
    }

    /// The same, with `key` set to `value` in its configuration.
    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }
}

/// The desired state of every environment a source manages, at one revision. Environments
/// it does not name are not managed: the reconciler leaves them alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The source's revision.
    pub revision: SourceRevision,
    /// Per environment, what should run there.
    pub environments: BTreeMap<EnvironmentName, Desired>,
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The source is still at the revision the reconciler knows.
    Unchanged,
    /// The source has a (new) desired state.
    Changed(DesiredState),
}

/// A source that could not be read, with the host's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("the desired-state source `{source_name}` could not be read: {message}")]
pub struct SourceError {
    /// The source (a repository's URL, a path).
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

/// Where the desired state of a fleet's environments comes from (GitOps: a git repository
/// holding a file per environment; Flux's and Argo CD's sources).
///
/// Implement [`fetch`](DesiredSource::fetch): hand back the whole desired state, or
/// [`Fetched::Unchanged`] when the source is still at revision `known` (what the reconciler
/// holds), so that a pass over an unchanged source parses nothing. A source that cannot tell
/// may always answer [`Fetched::Changed`]. Reading the source is the host's job: the library
/// has no git in it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a desired-state source",
    label = "this type does not implement `tollgate::reconcile::DesiredSource`",
    note = "implement `async fn fetch(&self, known: Option<&SourceRevision>) -> Result<Fetched, SourceError>` with `#[async_trait]`, or use `MemorySource`"
)]
#[async_trait]
pub trait DesiredSource: Send + Sync {
    /// The desired state, unless the source is still at revision `known`.
    async fn fetch(&self, known: Option<&SourceRevision>) -> Result<Fetched, SourceError>;
}

forward_impls! {
    #[async_trait]
    impl DesiredSource {
        async fn fetch(&self, known: Option<&SourceRevision>) -> Result<Fetched, SourceError>;
    }
}

/// A desired-state source kept in memory: each [`commit`](MemorySource::commit) is a new
/// revision. Clones share the state, so a test keeps one and hands the reconciler another.
///
/// ```
/// use tollgate::reconcile::{Desired, DesiredSource, Fetched, MemorySource};
/// use tollgate::rollout::Version;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let source = MemorySource::new();
/// let version = Version { release: "1.0".parse()?, digest: tollgate::prelude::Digest::sha256(b"app") };
/// source.commit("c1", [("production", Desired::new(version))])?;
/// let fetched = futures::executor::block_on(source.fetch(None))?;
/// assert!(matches!(fetched, Fetched::Changed(state) if state.revision.as_str() == "c1"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemorySource(Arc<Mutex<Option<DesiredState>>>);

impl MemorySource {
    /// A source with no desired state yet (a fetch fails until the first commit).
    #[must_use]
    pub fn new() -> Self {
        MemorySource::default()
    }

    /// Sets the desired state of the environments named (the others keep theirs) as a new
    /// revision `revision`.
    pub fn commit<I, N>(
        &self,
        revision: impl Into<String>,
        environments: I,
    ) -> Result<(), crate::id::IdError>
    where
        I: IntoIterator<Item = (N, Desired)>,
        N: Into<String>,
    {
        let mut changes = Vec::new();
        for (name, desired) in environments {
            changes.push((EnvironmentName::new(name)?, desired));
        }
        let mut state = self.lock();
        let mut next = state.take().map(|s| s.environments).unwrap_or_default();
        next.extend(changes);
        *state = Some(DesiredState {
            revision: SourceRevision::new(revision),
            environments: next,
        });
        Ok(())
    }

    /// Replaces the whole desired state.
    pub fn set(&self, state: DesiredState) {
        *self.lock() = Some(state);
    }

    /// The desired state now, if any.
    #[must_use]
    pub fn current(&self) -> Option<DesiredState> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DesiredState>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DesiredSource for MemorySource {
    async fn fetch(&self, known: Option<&SourceRevision>) -> Result<Fetched, SourceError> {
        let state = self.lock();
        match &*state {
            None => Err(SourceError {
                source_name: "memory".to_owned(),
                message: "nothing committed yet".to_owned(),
            }),
            Some(s) if Some(&s.revision) == known => Ok(Fetched::Unchanged),
            Some(s) => Ok(Fetched::Changed(s.clone())),
        }
    }
}
