// An approved release cannot be approved again.
use tollgate::prelude::*;

async fn case(approved: Release<Approved, Delivery>, pipeline: &Pipeline<Delivery>, approval: Approval) {
    let _ = approved.approve(pipeline, approval).await;
}

fn main() {}
