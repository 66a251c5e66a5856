//! Compiler guidance: the mistakes a router's author makes most often get an
//! error that names the fix. Each `tests/ui/*.rs` must fail to compile with
//! exactly the error kept beside it in `*.stderr` (regenerate with
//! `TRYBUILD=overwrite cargo test -p signalbox --test ui` after checking the
//! new text).

#[test]
fn mistakes_get_errors_that_name_the_fix() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
