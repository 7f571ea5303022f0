// An `Approval` cannot be forged with a struct literal: its fields are private.
use tollgate::approval::{Approval, ApprovalRequest};
use tollgate::record::ApprovalRecord;

fn case(request: ApprovalRequest, record: ApprovalRecord) -> Approval {
    Approval { request, record }
}

fn main() {}
