// A delivery release cannot approve itself: `auto_approve` exists only in deployment mode.
use tollgate::prelude::*;

async fn case(staged: Release<Staged, Delivery>, pipeline: &Pipeline<Delivery>) {
    let _ = staged.auto_approve(pipeline).await;
}

fn main() {}
