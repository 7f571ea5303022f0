//! Typed CI/CD pipelines: a release moves Commit → Built → Tested → Staged → Approved →
//! Deployed, and whether a person must approve it is a compile-time fact.
#![doc = include_str!("../docs/overview.md")]
#![doc(test(attr(deny(warnings))))]

// The layers, from the ground up (ARCHITECTURE.md draws them; tests/architecture.rs checks
// that every import points down and that no two modules import each other).
pub mod approval;
pub mod artifact;
pub mod audit;
#[cfg(feature = "cdevents")]
pub mod cdevents;
pub mod engine;
pub mod environment;
pub mod error;
pub mod executor;
pub mod fact;
pub mod flag;
pub mod fleet;
mod forward;
pub mod gate;
pub mod graph;
pub mod guide;
pub mod id;
pub mod journal;
pub mod lifecycle;
pub mod picture;
pub mod pipeline;
pub mod reconcile;
pub mod record;
pub mod release;
pub mod rollout;
pub mod spec;
pub mod time;

pub use error::{Error, ErrorKind, Result};

/// The petgraph this crate builds on: [`StageGraph`](graph::StageGraph) implements its visit
/// traits, so its algorithms run on a pipeline's graph, and this re-export keeps the versions
/// matched.
pub use petgraph;

/// The items most programs need, for a glob import.
pub mod prelude {
    pub use crate::approval::{Approval, ApprovalPolicy, ApprovalRequest};
    pub use crate::artifact::{Artifact, ArtifactRef, Digest, FileArtifact};
    pub use crate::environment::Environment;
    pub use crate::error::{Error, ErrorKind};
    pub use crate::executor::{Executor, StageContext, StageOutcome};
    pub use crate::gate::{Gate, GateExt, Verdict};
    pub use crate::lifecycle::{
        Approved, Built, Commit, Delivery, Deployed, Deployment, Move, Staged, Tested,
    };
    pub use crate::pipeline::{Pipeline, Stage};
    pub use crate::record::{AnyRelease, Revision};
    pub use crate::release::Release;
}
