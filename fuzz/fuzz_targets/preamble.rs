//! Byte-stream preamble lines, as a server and as a client reads them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate_wire::fuzzing::preamble(data));
