//! Messages of real commands through an in-process gateway, answers read
//! by the client reactor that wrote them.
#![no_main]
use framegate_wire::fuzzing::MessageScript;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = framegate_server::fuzzing::drive_ops(&MessageScript::from_bytes(data));
});
