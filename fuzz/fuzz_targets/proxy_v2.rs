//! cargo-fuzz target: `fulcrum::fuzzing::proxy_v2` (what it checks is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::proxy_v2(data));
