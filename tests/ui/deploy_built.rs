// A built release cannot be deployed: `deploy` exists only on `Release<Approved, _>`.
use tollgate::prelude::*;

async fn case(
    built: Release<Built, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
    environment: &Environment,
) {
    let _ = built.deploy(pipeline, artifact, environment).await;
}

fn main() {}
