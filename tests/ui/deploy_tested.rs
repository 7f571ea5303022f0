// A tested release cannot be deployed: staging and approval come first.
use tollgate::prelude::*;

async fn case(
    tested: Release<Tested, Deployment>,
    pipeline: &Pipeline<Deployment>,
    artifact: &ArtifactRef,
    environment: &Environment,
) {
    let _ = tested.deploy(pipeline, artifact, environment).await;
}

fn main() {}
