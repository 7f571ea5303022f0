// An `Approval` comes only from the pipeline's policy: its constructor is private to tollgate,
// so a record (which anyone can deserialize) cannot be turned back into one.
use tollgate::gate::{Approval, ApprovalRecord, ApprovalRequest};

fn forge(request: ApprovalRequest, record: ApprovalRecord) -> Approval {
    Approval::new(request, record)
}

fn main() {}
