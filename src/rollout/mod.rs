//! Progressive delivery: rollout strategies (all at once, rolling, blue-green, canary) that
//! drive the host's platform through a [`Target`].
//!
//! | file | job |
//! |---|---|
//! | `target.rs` | [`Target`], [`Version`], [`Weight`], [`Observed`], [`Health`], [`TargetError`] |
//! | `analysis.rs` | [`Analysis`], [`MetricCheck`], [`Analyzer`], [`Evaluation`] |
//! | `strategy.rs` | [`Strategy`], [`Rolling`], [`BlueGreen`], [`Canary`], [`CanaryStep`], [`Pause`], [`Step`] |

mod analysis;
mod strategy;
mod target;

pub use analysis::{Analysis, Analyzer, Evaluation, MetricCheck};
pub use strategy::{BlueGreen, Canary, CanaryStep, Pause, Promotion, Rolling, Step, Strategy};
pub use target::{Health, Observed, Target, TargetError, Version, Weight, WeightError};
