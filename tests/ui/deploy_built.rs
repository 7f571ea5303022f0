// A built release cannot be deployed: only an `Approved` release can be deployed.
use tollgate::prelude::*;

async fn case(
    built: Release<Built, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = built.deploy(pipeline, artifact).await;
}

fn main() {}
