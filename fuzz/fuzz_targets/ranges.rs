//! The `ranges` argument of `readv`: parse, re-encode, re-parse.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate_wire::fuzzing::ranges(data));
