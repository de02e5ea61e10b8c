//! Arbitrary bytes into the frame decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate_wire::fuzzing::decode(data));
