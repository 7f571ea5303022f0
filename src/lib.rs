//! Typed CI/CD pipelines: a release moves Commit → Built → Tested → Staged → Approved →
//! Deployed, and whether a person must approve it is a compile-time fact.
#![doc = include_str!("../docs/overview.md")]
#![doc(test(attr(deny(warnings))))]

pub mod artifact;
pub mod engine;
pub mod environment;
pub mod error;
pub mod executor;
pub mod gate;
pub mod graph;
mod name;
pub mod pipeline;
pub mod release;
pub mod time;

pub use error::{Error, ErrorKind, Result};

/// The petgraph this crate builds on: [`StageGraph`](graph::StageGraph) implements its visit
/// traits, so its algorithms run on a pipeline's graph, and this re-export keeps the versions
/// matched.
pub use petgraph;

/// The items most programs need, for a glob import.
pub mod prelude {
    pub use crate::artifact::{Artifact, ArtifactRef, Digest, FileArtifact};
    pub use crate::environment::Environment;
    pub use crate::error::{Error, ErrorKind};
    pub use crate::executor::{Executor, StageContext, StageOutcome};
    pub use crate::gate::{
        Approval, ApprovalPolicy, ApprovalRequest, Gate, GateExt, Move, Verdict,
    };
    pub use crate::pipeline::{Pipeline, Stage};
    pub use crate::release::{
        AnyRelease, Approved, Built, Commit, Delivery, Deployed, Deployment, Release, Revision,
        Staged, Tested,
    };
}
