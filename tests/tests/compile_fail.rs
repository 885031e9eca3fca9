//! Compile-fail tests: misuse of the derives, of typed columns and of the
//! session is a compile error with a message pointing at the mistake.

#[test]
fn misuse_does_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
