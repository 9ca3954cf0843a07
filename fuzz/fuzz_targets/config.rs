//! cargo-fuzz target: `fulcrum::fuzzing::config` (what it checks is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::config(data));
