//! cargo-fuzz target: `fulcrum::fuzzing::rule_table` (what it checks is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::rule_table(data));
