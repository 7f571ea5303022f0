// A deployment release takes no human approval: `approve` exists only in delivery mode.
use tollgate::prelude::*;

async fn case(
    staged: Release<Staged, Deployment>,
    pipeline: &Pipeline<Deployment>,
    approval: Approval,
) {
    let _ = staged.approve(pipeline, approval).await;
}

fn main() {}
