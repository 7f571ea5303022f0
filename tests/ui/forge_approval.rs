// An `Approval` cannot be forged with a struct literal: its fields are private.
use tollgate::gate::{Approval, ApprovalRecord, ApprovalRequest};

fn case(request: ApprovalRequest, record: ApprovalRecord) -> Approval {
    Approval { request, record }
}

fn main() {}
