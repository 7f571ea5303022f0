//! The release lifecycle through the public API, one file per topic:
//!
//! | file | topic |
//! |---|---|
//! | `flows.rs` | full delivery and deployment flows; a release deploys to its target, driven by its own pipeline |
//! | `artifacts.rs` | the artifact fixed at build, and stage outputs handed to dependents |
//! | `failures.rs` | failing, panicking and erroring stages; a move cancelled through its release's handle |
//! | `approvals.rs` | approvals bound to pipeline, release, artifact and environment; expiry; who may approve |
//! | `gates.rs` | closed, pending and time-bound gates on moves; an approval handed back by a closed gate |
//! | `definitions.rs` | pipeline definition errors, the default executor |
//!
//! The pipelines they run on come from the shared fixtures in `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod approvals;
mod artifacts;
mod definitions;
mod failures;
mod flows;
mod gates;

use std::time::Duration;

use support::block_on;
use tollgate::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);

/// Asks `rita` to approve `staged` and approves it; the happy path after a refusal.
fn approve_properly(
    staged: Release<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
) -> Release<Approved, Delivery> {
    let approval = pipeline
        .sign_off(&staged.approval_request(), "rita", "signed off")
        .expect("rita may approve");
    block_on(staged.approve(pipeline, approval)).expect("a proper approval moves the release")
}
