// A staged delivery release cannot be deployed before a person approves it.
use tollgate::prelude::*;

async fn case(
    staged: Release<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = staged.deploy(pipeline, artifact).await;
}

fn main() {}
