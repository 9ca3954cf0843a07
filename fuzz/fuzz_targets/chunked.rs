//! cargo-fuzz target: `fulcrum::fuzzing::chunked` (what it checks is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::chunked(data));
