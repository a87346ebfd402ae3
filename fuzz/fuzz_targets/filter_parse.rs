//! cargo-fuzz entry point; the checks live in `fuzz/checks/filter_parse.rs`, which the stable smoke run
//! (`tests/tests/fuzz_smoke.rs`) shares.

#![no_main]

#[path = "../checks/filter_parse.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
