//! Arbitrary bytes as a whole message, through the HTTP and byte-stream
//! bindings of an in-process gateway.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate_server::fuzzing::drive_message(data));
