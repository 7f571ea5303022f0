// A built release cannot skip testing: `stage` exists only on `Release<Tested, _>`.
use tollgate::prelude::*;

async fn case(
    built: Release<Built, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = built.stage(pipeline, artifact).await;
}

fn main() {}
