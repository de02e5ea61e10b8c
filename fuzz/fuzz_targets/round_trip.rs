//! Whatever decodes re-encodes to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate_wire::fuzzing::round_trip(data));
