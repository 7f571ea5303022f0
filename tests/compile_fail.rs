//! Compile-fail suite: the typestate rejects every illegal move, forged or reused approval,
//! hand-built release and foreign state or mode at compile time (cases in `tests/ui/`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
