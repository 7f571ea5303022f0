// A built release cannot skip testing: only a `Tested` release can be staged.
use tollgate::prelude::*;

async fn case(
    built: Release<Built, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = built.stage(pipeline, artifact).await;
}

fn main() {}
