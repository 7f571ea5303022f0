// Approving a delivery release needs an `Approval`: the argument cannot be left out.
use tollgate::prelude::*;

async fn case(staged: Release<Staged, Delivery>, pipeline: &Pipeline<Delivery>) {
    let _ = staged.approve(pipeline).await;
}

fn main() {}
