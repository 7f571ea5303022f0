// `State` is sealed: no state can be added outside tollgate.
use tollgate::lifecycle::{State, StateName};

struct Hotfix;

impl State for Hotfix {
    const NAME: StateName = StateName::Deployed;
}

fn main() {}
