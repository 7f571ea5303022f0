//! A real pipeline of shell commands (being written).

fn main() {}
