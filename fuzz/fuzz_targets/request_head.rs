//! cargo-fuzz target: `fulcrum::fuzzing::request_head` (what it checks is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::request_head(data));
