// A release that has moved cannot be used again: every move consumes it.
use tollgate::prelude::*;

async fn case(
    built: Release<Built, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = built.test(pipeline, artifact).await;
    let _ = built.test(pipeline, artifact).await;
}

fn main() {}
