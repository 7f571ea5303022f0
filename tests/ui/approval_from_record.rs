// An `Approval` comes only from the pipeline's policy: its constructor is private to tollgate,
// so a record (which anyone can deserialize) cannot be turned back into one.
use tollgate::approval::{Approval, ApprovalRequest};
use tollgate::record::ApprovalRecord;

fn forge(request: ApprovalRequest, record: ApprovalRecord) -> Approval {
    Approval::new(request, record, "a pipeline I made up".to_owned())
}

fn main() {}
