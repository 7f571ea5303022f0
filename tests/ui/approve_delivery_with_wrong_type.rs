// Approving a delivery release needs an `Approval`: a person's name is not one.
use tollgate::prelude::*;

async fn case(staged: Release<Staged, Delivery>, pipeline: &Pipeline<Delivery>) {
    let _ = staged.approve(pipeline, "rita").await;
}

fn main() {}
