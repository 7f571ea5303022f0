//! Continuous delivery: the pipeline runs by itself up to staging, then a person decides.
//!
//! Run with `cargo run --example delivery`.

mod common;

use futures::executor::block_on;
use tollgate::prelude::*;

fn main() -> Result<(), Error> {
    block_on(run())
}

async fn run() -> Result<(), Error> {
    let pipeline = Pipeline::<Delivery>::builder("shop")
        .stages(common::stages())
        // The human gate: only the release managers may approve, and never their own change.
        .approvals(ApprovalPolicy::any_of(["rita", "dana"])?)
        .build()?;

    println!("pipeline `{}` (continuous delivery):\n", pipeline.name());
    println!("{}", pipeline.graph().to_mermaid());

    let revision = Revision::new("4f2a9c1", "dana")?.message("Add checkout flow");
    let release = pipeline.start("shop-1.4.0", revision)?;
    println!("release {} of revision 4f2a9c1 by dana:", release.id());

    let built = release.build(&pipeline).await?;
    let artifact = built.artifact().clone();
    common::moved("commit", "built", &artifact.digest);
    common::logs(built.record());

    let tested = built.test(&pipeline, &artifact).await?;
    common::moved("built", "tested", "unit and lint ran in parallel");
    common::logs(tested.record());

    // The artifact is checked at every move: a rebuilt binary is refused, and the release is
    // handed back unmoved.
    let rebuilt = ArtifactRef::from_bytes("shop-api", b"a different build");
    let tested = match tested.stage(&pipeline, &rebuilt).await {
        Ok(_) => unreachable!("a different artifact never moves a release"),
        Err(refused) => {
            println!("  refused:  {refused}");
            refused.into_release()
        }
    };

    let staged = tested.stage(&pipeline, &artifact).await?;
    common::moved("tested", "staged", "deployed to staging, acceptance passed");
    common::logs(staged.record());

    // Delivery: the release now waits for a person.
    let request = staged.approval_request();
    println!(
        "\n  waiting for approval: {} ({}) to {}",
        request.release, request.digest, request.environment
    );
    let id = staged.id().as_str();
    match pipeline.sign_off(id, "dana", "ship it").await {
        Err(refused) => println!("  refused:  {refused}"),
        Ok(_) => unreachable!("authors never approve their own change"),
    }
    let approval = pipeline
        .sign_off(id, "rita", "checkout flow signed off by product")
        .await?;
    println!("  approved by {}\n", approval.approver());

    let approved = staged.approve(&pipeline, approval).await?;
    let record = approved
        .record()
        .approval()
        .expect("delivery approvals are recorded");
    common::moved(
        "staged",
        "approved",
        format!("by {} ({})", record.approver, record.reason),
    );

    let live = approved.deploy(&pipeline, &artifact).await?;
    common::moved("approved", "deployed", pipeline.production());
    common::logs(live.record());

    println!(
        "\n{} is live: the bytes tested are the bytes deployed ({})",
        live.id(),
        live.artifact().digest.short()
    );
    Ok(())
}
