// An `Approval` cannot be copied: it does not implement `Clone`.
use tollgate::approval::Approval;

fn case(approval: Approval) -> (Approval, Approval) {
    let copy = approval.clone();
    (approval, copy)
}

fn main() {}
