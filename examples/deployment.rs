//! Continuous deployment: the same pipeline, and nobody presses a button. Passing every
//! automated gate is the approval.
//!
//! `delivery.rs` is this file's twin: the same pipeline, the same run, the same output
//! layout. The lines marked `// the decision` are the only ones that differ (`.ci/run`
//! checks it), which is the lesson: delivery and deployment differ in one decision.
//!
//! Run with `cargo run --example deployment`; add `-- --report report.html` to write the
//! run's HTML report (pipeline, timeline, logs, gate verdicts, who approved).

mod common;

use futures::executor::block_on;
use tollgate::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let run = common::Run::from_args();
    let pipeline = Pipeline::<Deployment>::builder("shop") // the decision: the gates approve
        .stages(common::stages())
        .engine(run.engine()?)
        .build()?;
    common::show(&pipeline);

    let revision = Revision::new("4f2a9c1", "dana")?.message("Add checkout flow");
    let release = pipeline.start("shop-1.4.0", revision)?;

    let built = release.build(&pipeline).await?;
    let artifact = built.artifact().clone();
    common::logs(built.record());

    let tested = built.test(&pipeline, &artifact).await?;
    common::logs(tested.record());
    let tested = common::try_a_rebuilt_binary(&pipeline, tested).await;

    let staged = tested.stage(&pipeline, &artifact).await?;
    common::logs(staged.record());
    common::waiting(&pipeline, staged.record()).await;

    let approved = staged.auto_approve(&pipeline).await?; // the decision

    let live = approved.deploy(&pipeline, &artifact).await?;
    common::logs(live.record());
    run.finish(&pipeline, live.record())
}
