//! Progressive delivery: rollout strategies (all at once, rolling, blue-green, canary) that
//! drive the host's platform through a [`Target`], with analysis between steps and in the
//! background of pauses, an abort that puts traffic back on the stable version at once when
//! it fails, and forward-only steps after which a failure freezes the rollout and asks a
//! person instead.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::gate::Threshold;
//! use tollgate::rollout::{Analysis, Canary, MetricCheck, Pause, Strategy, Weight};
//!
//! let strategy = Strategy::Canary(
//!     Canary::new()
//!         .weight(Weight::percent(10).unwrap())
//!         .pause(Pause::For(Duration::from_secs(600)))
//!         .forward_only("migrate")
//!         .weight(Weight::percent(50).unwrap())
//!         .pause(Pause::UntilGo),
//! );
//! let analysis = Analysis::new([MetricCheck::new("errors", "5xx rate", Threshold::AtMost(0.01))])
//!     .interval(Duration::from_secs(60));
//! // Rollout::new(strategy, my_target).analysis(analysis, my_metrics).operator(my_people)
//! # let _ = (strategy, analysis);
//! ```
//!
//! | file | job |
//! |---|---|
//! | `target.rs` | [`Target`], [`Version`], [`Weight`], [`Observed`], [`Health`], [`TargetError`] |
//! | `analysis.rs` | [`Analysis`], [`MetricCheck`], [`Analyzer`], [`Evaluation`] |
//! | `strategy.rs` | [`Strategy`], [`Rolling`], [`BlueGreen`], [`Canary`], [`CanaryStep`], [`Pause`], [`Step`] |
//! | `event.rs` | [`RolloutEvent`], [`RolloutObserver`], [`Outcome`], [`Cause`], [`rollout_key`] |
//! | `run.rs` | [`Rollout`] (the runner, and a deploy stage's [`Executor`](crate::executor::Executor)), [`Operator`], [`HealthCheck`], [`RolloutReport`], [`RolloutError`] |

mod analysis;
mod event;
mod run;
mod strategy;
mod target;

pub use analysis::{Analysis, Analyzer, Evaluation, MetricCheck};
pub(crate) use event::tell_contained;
pub use event::{
    Cause, Choice, FnRolloutObserver, Outcome, RolloutEvent, RolloutEventKind, RolloutObserver,
    observer_fn, rollout_key,
};
pub use run::{HealthCheck, Operator, Rollout, RolloutError, RolloutReport};
pub(crate) use run::{Woke, wait_in_pause};
pub use strategy::{BlueGreen, Canary, CanaryStep, Pause, Promotion, Rolling, Step, Strategy};
pub use target::{Health, Observed, Target, TargetError, Version, Weight, WeightError};
