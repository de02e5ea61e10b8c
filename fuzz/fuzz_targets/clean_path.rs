//! The server's lexical path rules.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate_server::fuzzing::clean_path(data));
