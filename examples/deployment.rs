//! Continuous deployment: the same pipeline, but nobody presses a button. Passing every
//! automated gate is the approval.
//!
//! Run with `cargo run --example deployment`.

mod common;

use futures::executor::block_on;
use tollgate::gate::from_fn;
use tollgate::prelude::*;

fn main() -> Result<(), Error> {
    block_on(run())
}

/// The automated gate that replaces the person: staging's error rate must be below 1%.
fn healthy_in_staging() -> impl Gate {
    from_fn("staging-error-rate", |ctx| {
        let rate = ctx
            .release()
            .output("staging", "error_rate")
            .and_then(|rate| rate.parse::<f64>().ok());
        match rate {
            Some(rate) if rate < 0.01 => Verdict::Open,
            Some(rate) => Verdict::closed(format!("error rate {rate} is above 0.01")),
            None => Verdict::pending("an error-rate reading from staging"),
        }
    })
}

async fn run() -> Result<(), Error> {
    let pipeline = Pipeline::<Deployment>::builder("shop")
        .stages(common::stages())
        .gate(Move::Approve, healthy_in_staging())
        .build()?;

    println!("pipeline `{}` (continuous deployment):\n", pipeline.name());
    let revision = Revision::new("4f2a9c1", "dana")?.message("Add checkout flow");
    let release = pipeline.start("shop-1.4.0", revision)?;
    println!("release {} of revision 4f2a9c1 by dana:", release.id());

    let built = release.build(&pipeline).await?;
    let artifact = built.artifact().clone();
    common::moved("commit", "built", &artifact.digest);

    let tested = built.test(&pipeline, &artifact).await?;
    common::moved("built", "tested", "unit and lint ran in parallel");

    let staged = tested.stage(&pipeline, &artifact).await?;
    common::moved("tested", "staged", "deployed to staging, acceptance passed");

    // No person: the automated gates decide, and their verdicts are recorded.
    let approved = staged.auto_approve(&pipeline).await?;
    for verdict in approved.record().gates() {
        common::moved(
            "staged",
            "approved",
            format!("gate `{}` is open", verdict.gate),
        );
    }

    let live = approved.deploy(&pipeline, &artifact).await?;
    common::moved("approved", "deployed", pipeline.production());
    common::logs(live.record());
    println!("\n{} shipped with no human in the loop", live.id());
    Ok(())
}
