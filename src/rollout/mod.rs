//! Progressive delivery: rollout strategies (all at once, rolling, blue-green, canary) that
//! drive the host's platform through a [`Target`].
//!
//! | file | job |
//! |---|---|
//! | `target.rs` | [`Target`], [`Version`], [`Weight`], [`Observed`], [`Health`], [`TargetError`] |

mod target;

pub use target::{Health, Observed, Target, TargetError, Version, Weight, WeightError};
