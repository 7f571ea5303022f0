// A fresh release cannot skip the build: `test` exists only on `Release<Built, _>`.
use tollgate::prelude::*;

async fn case(
    fresh: Release<Commit, Delivery>,
    pipeline: &Pipeline<Delivery>,
    artifact: &ArtifactRef,
) {
    let _ = fresh.test(pipeline, artifact).await;
}

fn main() {}
