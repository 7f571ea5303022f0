//! The release lifecycle through the public API, one file per topic:
//!
//! | file | topic |
//! |---|---|
//! | `flows.rs` | full delivery and deployment flows; a release deploys to its target, driven by its own pipeline |
//! | `artifacts.rs` | the artifact fixed at build, and stage outputs handed to dependents |
//! | `failures.rs` | failing, panicking and erroring stages; an executor's error as the move's source |
//! | `cancellation.rs` | a release's own cancel handle, the pipeline's, and the fresh handle after a cancelled move |
//! | `approvals.rs` | approvals bound to pipeline (name and definition), release, artifact and environment, and to the journal's votes; expiry at approve and at deploy; who may approve, and still may when it is used |
//! | `gates.rs` | closed, pending and time-bound gates on moves; an approval handed back by a closed gate |
//! | `definitions.rs` | pipeline definition errors, the default executor |
//! | `restores.rs` | a release restored from the journal after any move goes on from there; one id, one release; two copies cannot both move |
//! | `interleavings.rs` | random interleavings of starts, moves, votes (admitted people, the author, the triggerer, an outsider), approvals, deploys, crashes mid-step, restarts and restores on the memory and the file journal, against a reference model |
//! | `resume.rs` | a move cut off mid-step resumes with the stages that finished, runs only the others, under the same idempotency keys; forged stage facts are refused |
//!
//! The pipelines they run on come from the shared fixtures in `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod approvals;
mod artifacts;
mod cancellation;
mod definitions;
mod failures;
mod flows;
mod gates;
mod interleavings;
mod restores;
mod resume;
mod workflow;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use support::block_on;
use tollgate::journal::{
    ChainHash, ChainKey, Entry, Journal, JournalError, MemoryJournal, Seq, Stored,
};
use tollgate::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);

/// Asks `rita` to approve `staged` and approves it; the happy path after a refusal.
fn approve_properly(
    staged: Release<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
) -> Release<Approved, Delivery> {
    let approval = block_on(pipeline.sign_off(staged.id().as_str(), "rita", "signed off"))
        .expect("rita may approve");
    block_on(staged.approve(pipeline, approval)).expect("a proper approval moves the release")
}

/// One in-memory journal that several pipelines write (a bot restarted with a new pipeline
/// value, two pipelines on one store): the builder takes its journal by value, so each gets
/// a clone of this handle.
#[derive(Debug, Clone)]
struct SharedJournal(Arc<MemoryJournal>);

impl SharedJournal {
    fn new() -> Self {
        SharedJournal(Arc::new(MemoryJournal::new(ChainKey::derive(
            b"tollgate lifecycle tests",
        ))))
    }
}

#[async_trait]
impl Journal for SharedJournal {
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError> {
        self.0.append(entries).await
    }

    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        self.0.read(from, limit).await
    }

    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        self.0.read_key(key).await
    }

    async fn head(&self) -> Result<(Seq, ChainHash), JournalError> {
        self.0.head().await
    }

    fn key(&self) -> &ChainKey {
        self.0.key()
    }
}
