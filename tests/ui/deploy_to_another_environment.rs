// A release deploys to the environment it was approved for: `deploy` takes no environment.
use tollgate::prelude::*;

async fn case(
    approved: Release<Approved, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
    elsewhere: &Environment,
) {
    let _ = approved.deploy(pipeline, artifact, elsewhere).await;
}

fn main() {}
