// One `Approval` approves one release: approving consumes it.
use tollgate::prelude::*;

async fn case(
    first: Release<Staged, Delivery>,
    second: Release<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
    approval: Approval,
) {
    let _ = first.approve(pipeline, approval).await;
    let _ = second.approve(pipeline, approval).await;
}

fn main() {}
