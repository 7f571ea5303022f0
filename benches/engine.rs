//! Engine benchmarks (being written): see BENCHMARKS.md.

fn main() {}
