//! Messages of real commands through the server reactor, read back by the
//! client reactor that wrote them.
#![no_main]
use framegate_wire::fuzzing::{MessageScript, message_reactor};
libfuzzer_sys::fuzz_target!(|data: &[u8]| message_reactor(&MessageScript::from_bytes(data)));
