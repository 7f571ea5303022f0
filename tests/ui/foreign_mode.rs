// `Mode` is sealed: no mode can be added outside tollgate.
use tollgate::lifecycle::{Mode, ModeKind};

struct Cowboy;

impl Mode for Cowboy {
    const KIND: ModeKind = ModeKind::Deployment;
}

fn main() {}
