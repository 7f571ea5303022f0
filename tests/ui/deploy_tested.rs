// A tested release cannot be deployed: staging and approval come first.
use tollgate::prelude::*;

async fn case(
    tested: Release<Tested, Deployment>,
    pipeline: &Pipeline<Deployment>,
    artifact: &ArtifactRef,
) {
    let _ = tested.deploy(pipeline, artifact).await;
}

fn main() {}
