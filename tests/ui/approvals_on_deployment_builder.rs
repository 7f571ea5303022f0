// A deployment pipeline has no approvers: `approvals` exists only on the delivery builder.
use tollgate::prelude::*;

fn case(policy: ApprovalPolicy) {
    let _ = Pipeline::<Deployment>::builder("web").approvals(policy);
}

fn main() {}
