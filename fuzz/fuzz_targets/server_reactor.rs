//! Operation sequences against the server reactor.
#![no_main]
use framegate_wire::fuzzing::Op;
libfuzzer_sys::fuzz_target!(|ops: Vec<Op>| framegate_wire::fuzzing::server_reactor(&ops));
