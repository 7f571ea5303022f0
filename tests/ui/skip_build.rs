// A fresh release cannot skip the build: only a `Built` release can be tested.
use tollgate::prelude::*;

async fn case(
    fresh: Release<Commit, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = fresh.test(pipeline, artifact).await;
}

fn main() {}
