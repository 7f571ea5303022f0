//! The engine through the public API, in virtual time: worker and group limits, critical-path
//! priority, retries with backoff and jitter, timeouts, cancellation, failure policies and
//! finally stages, outputs, events, dry-run plans, bad input and huge graphs, and property
//! tests on random DAGs.
//!
//! One module per topic; the helpers they share are in `fixture`.

#[path = "../support/mod.rs"]
mod support;

mod fixture;

mod cancellation;
mod concurrency;
mod conditions;
mod events;
mod failure_policy;
mod faults;
mod matrix;
mod misbehaving;
mod outputs;
mod plans;
mod properties;
mod retries;
mod scale;
mod scheduling;
mod ties;
mod timeouts;
