//! Runs the fuzz entry points on pseudo-random inputs with the stable
//! toolchain, so CI exercises them without cargo-fuzz. Needs `--features fuzzing`.
#![cfg(feature = "fuzzing")]

use arbitrary::{Arbitrary, Unstructured};
use framegate_wire::fuzzing;

/// Deterministic xorshift bytes; a failing seed is printed by the assert.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Up to 80 operations drawn one by one (a `Vec` drawn whole is mostly empty).
fn ops(bytes: &[u8]) -> Vec<fuzzing::Op> {
    let mut u = Unstructured::new(bytes);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 80 {
        match fuzzing::Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Valid frames from random fields, encoded, then a few bytes mutated.
fn frame_bytes(seed: u64) -> Vec<u8> {
    use framegate_wire::frame::*;
    let r = random_bytes(seed, 64);
    let mut wire = bytes::BytesMut::new();
    for i in 0..(r[0] % 8) as usize {
        let ty = FrameType::from_nibble(r[i + 1] % 8 + 1).unwrap();
        let flags = r[i + 9] & ty.defined_flags();
        let payload = bytes::Bytes::from(random_bytes(seed + i as u64, usize::from(r[i + 17])));
        let body = FrameBody::load(ty, flags, payload).unwrap();
        let frame = Frame {
            request_id: RequestId(u16::from(r[i + 25])),
            stream_id: StreamId(r[i + 33]),
            stream_flags: StreamFlags::from_bits(r[i + 41] & 7).unwrap(),
            body,
        };
        frame.encode(&mut wire).unwrap();
    }
    let mut wire = wire.to_vec();
    if !wire.is_empty() && r[50].is_multiple_of(2) {
        let at = usize::from(r[51]) * 31 % wire.len();
        wire[at] ^= r[52] | 1;
    }
    if r[53].is_multiple_of(3) {
        let keep = wire.len() * usize::from(r[54]) / 255;
        wire.truncate(keep);
    }
    wire
}

#[test]
fn decoder_and_round_trip_on_random_input() {
    for seed in 0..3000 {
        let bytes = frame_bytes(seed);
        fuzzing::decode(&bytes);
        fuzzing::round_trip(&bytes);
        fuzzing::decode(&random_bytes(seed, 64));
    }
}

#[test]
fn server_reactor_operation_sequences() {
    for seed in 0..1500 {
        fuzzing::server_reactor(&ops(&random_bytes(seed, 400)));
    }
}

#[test]
fn smoke_inputs_are_not_trivial() {
    let mut ops_total = 0;
    let mut frames_total = 0;
    for seed in 0..200 {
        ops_total += ops(&random_bytes(seed, 400)).len();
        let mut dec = framegate_wire::FrameDecoder::default();
        let mut buf = bytes::BytesMut::from(&frame_bytes(seed)[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {
            frames_total += 1;
        }
    }
    assert!(
        ops_total > 200 * 20,
        "op sequences average more than 20 ops ({ops_total})"
    );
    assert!(
        frames_total > 200,
        "most inputs hold decodable frames ({frames_total})"
    );
}

/// The seed corpus of a fuzz target (`fuzz/seeds/<target>`), if any.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Text made of `alphabet`'s pieces, picked by the random bytes.
fn text_from(seed: u64, len: usize, alphabet: &[&[u8]]) -> Vec<u8> {
    random_bytes(seed, len)
        .into_iter()
        .flat_map(|b| alphabet[usize::from(b) % alphabet.len()].iter().copied())
        .collect()
}

#[test]
fn ranges_on_random_input() {
    let alphabet: &[&[u8]] = &[
        b"0",
        b"1",
        b"7",
        b"9",
        b"12",
        b",",
        b",",
        b"\n",
        b"\n",
        b" ",
        b"\r",
        b"-",
        b"+",
        b"18446744073709551615",
        b"18446744073709551616",
        b"\xff",
        b"x",
    ];
    for seed in 0..3000 {
        fuzzing::ranges(&text_from(
            seed,
            usize::from(random_bytes(seed, 1)[0] % 40),
            alphabet,
        ));
        fuzzing::ranges(&random_bytes(seed, 24));
    }
    let encoded = framegate_wire::ranges::encode_ranges(&[(0, 3), (u64::MAX, 0), (7, 9)]);
    fuzzing::ranges(encoded.as_bytes());
    for seed in seeds("ranges") {
        fuzzing::ranges(&seed);
    }
}

#[test]
fn preamble_on_random_input() {
    let alphabet: &[&[u8]] = &[
        b"framegate/",
        b"framegate/1",
        b"1",
        b"2",
        b" ",
        b" ",
        b"accept-encoding=",
        b"zstd-8mb",
        b"identity",
        b",",
        b"ok",
        b"error ",
        b"\n",
        b"\r",
        b"\t",
        b"\xff",
        b"\xc3\xa9",
        b"x=y",
    ];
    for seed in 0..3000 {
        fuzzing::preamble(&text_from(
            seed,
            usize::from(random_bytes(seed, 1)[0] % 12),
            alphabet,
        ));
        fuzzing::preamble(&random_bytes(seed, 16));
    }
    for seed in seeds("preamble") {
        fuzzing::preamble(&seed);
    }
}

#[test]
fn message_scripts_through_the_server_reactor() {
    for seed in 0..1500 {
        let script = fuzzing::MessageScript::from_bytes(&random_bytes(seed, 300));
        fuzzing::message_reactor(&script);
    }
    for seed in seeds("driver_ops") {
        fuzzing::message_reactor(&fuzzing::MessageScript::from_bytes(&seed));
    }
}

#[test]
fn message_scripts_are_not_trivial() {
    let limits = framegate_wire::ServerConfig::default();
    let (mut well_formed, mut requests) = (0, 0);
    for seed in 0..300 {
        let script = fuzzing::MessageScript::from_bytes(&random_bytes(seed, 300));
        let message = script.encode();
        if message.must_be_answered(&limits) {
            well_formed += 1;
        }
        requests += message.requests();
    }
    assert!(
        well_formed > 60,
        "well-formed messages: {well_formed} of 300"
    );
    assert!(requests > 300 * 10, "requests: {requests} in 300 messages");
}
