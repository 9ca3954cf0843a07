//! cargo-fuzz target: `fulcrum::fuzzing::response_head` (what it checks is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::response_head(data));
