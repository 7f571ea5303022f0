// An `Approval` cannot be copied: it does not implement `Clone`.
use tollgate::gate::Approval;

fn case(approval: Approval) -> (Approval, Approval) {
    let copy = approval.clone();
    (approval, copy)
}

fn main() {}
