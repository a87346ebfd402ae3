//! cargo-fuzz entry point; the checks live in `fuzz/checks/batch_multipart.rs`, which the stable smoke run
//! (`tests/tests/fuzz_smoke.rs`) shares.

#![no_main]

#[path = "../checks/batch_multipart.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
