//! cargo-fuzz entry point; the checks live in `fuzz/checks/entity_json.rs`, which the stable smoke run
//! (`tests/tests/fuzz_smoke.rs`) shares.

#![no_main]

#[path = "../checks/entity_json.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
