//! Continuous delivery: the pipeline runs by itself up to staging, then the release is parked
//! at the button until a person presses it.
//!
//! `deployment.rs` is this file's twin: the same pipeline, the same run, the same output
//! layout. The lines marked `// the decision` are the only ones that differ (`.ci/run`
//! checks it), which is the lesson: delivery and deployment differ in one decision.
//!
//! Run with `cargo run --example delivery`; add `-- --report report.html` to write the
//! run's HTML report (pipeline, timeline, logs, gate verdicts, who approved).

mod common;

use futures::executor::block_on;
use tollgate::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let run = common::Run::from_args();
    let pipeline = Pipeline::<Delivery>::builder("shop") // the decision: a person approves
        .stages(common::stages())
        .engine(run.engine()?)
        .approvals(ApprovalPolicy::any_of(["rita", "dana"])?) // the decision: who may
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

    let approval = common::press_the_button(&pipeline, staged.id().as_str()).await?; // the decision
    let approved = staged.approve(&pipeline, approval).await?; // the decision

    let live = approved.deploy(&pipeline, &artifact).await?;
    common::logs(live.record());
    run.finish(&pipeline, live.record())
}
