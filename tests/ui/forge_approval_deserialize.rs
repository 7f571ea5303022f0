// An `Approval` cannot be forged from JSON: it does not implement `Deserialize`.
use tollgate::approval::Approval;

fn case(json: &str) -> Approval {
    serde_json::from_str::<Approval>(json).unwrap()
}

fn main() {}
