//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the
//! stable-toolchain smoke test (`tests/fuzz_smoke.rs`). Each takes untrusted
//! input and must never panic; most also check invariants, and a failed
//! check panics, which is how a fuzz target reports.
//!
//! * [`decode`], [`round_trip`]: the frame decoder and encoder.
//! * [`server_reactor`]: operation sequences against the server reactor.
//! * [`ranges`], [`preamble`]: the text formats (`readv` ranges, §8 lines).
//! * [`MessageScript`]: whole messages of real commands for servers (the
//!   server crate's `drive_ops` target), and [`message_reactor`], which
//!   sends them through the server reactor here.

// Failing an invariant is how a fuzz target reports; that is the point here.
#![allow(clippy::panic)]

mod message;
mod text;

pub use message::{
    COMMANDS, EncodedMessage, MessageOp, MessageScript, Outcome, PATHS, Payload, SEED_FILES,
};
pub use text::{preamble, ranges};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};

use crate::codec::{FrameDecoder, encode_all};
use crate::frame::*;
use crate::payload::ErrorPayload;
use crate::{Encoding, ErrorCode, OutputMode, ServerConfig, ServerEvent, ServerReactor};

/// Decodes arbitrary bytes as frames, under a small and a default maximum.
pub fn decode(data: &[u8]) {
    for max in [300, DEFAULT_MAX_FRAME_SIZE] {
        let mut decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = decoder.decode_eof(&mut buf) {
            assert!(frame.body.payload().len() <= max);
        }
    }
}

/// Whatever decodes re-encodes to the same bytes and decodes to the same frames.
pub fn round_trip(data: &[u8]) {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let mut consumed = 0;
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        consumed += frame.wire_len();
        frames.push(frame);
    }
    let Ok(wire) = encode_all(&frames) else {
        panic!("decoded frames must re-encode")
    };
    assert_eq!(&wire[..], data.get(..consumed).unwrap_or_default());
    let again = crate::codec::decode_all(&wire, DEFAULT_MAX_FRAME_SIZE);
    assert_eq!(again.ok(), Some(frames));
}

/// One step of a server-reactor session.
#[derive(Debug, Clone, Arbitrary)]
#[allow(missing_docs)]
pub enum Op {
    /// A `command-name`; `id` is folded into a few ids to provoke reuse.
    Command {
        id: u8,
        flags: u8,
        stream_flags: u8,
        name: u8,
    },
    Argument {
        id: u8,
        flags: u8,
        name: u8,
        declared: u8,
        part: u8,
    },
    ArgumentRaw {
        id: u8,
        flags: u8,
        bytes: Vec<u8>,
    },
    Data {
        id: u8,
        flags: u8,
        len: u16,
    },
    Settings {
        stream: u8,
        stream_flags: u8,
        profile: u8,
    },
    Encoded {
        id: u8,
        bytes: Vec<u8>,
    },
    Answer {
        id: u8,
        len: u16,
    },
    Finish {
        id: u8,
    },
    Fail {
        id: u8,
    },
    Keepalive,
    Transmit,
    InputEnded,
}

fn rid(id: u8) -> RequestId {
    RequestId(u16::from(id % 6))
}

fn frame(id: u8, stream_flags: u8, body: FrameBody) -> Frame {
    Frame {
        request_id: rid(id),
        stream_id: StreamId(1),
        stream_flags: StreamFlags::from_bits(stream_flags & 0x07).unwrap_or_default(),
        body,
    }
}

/// Runs a sequence of operations against a server reactor in both modes,
/// checking that nothing panics and that a finished session is done.
pub fn server_reactor(ops: &[Op]) {
    for (mode, encoding) in [
        (OutputMode::Deferred, Encoding::Identity),
        (OutputMode::Immediate, Encoding::Zstd8Mb),
    ] {
        let config = ServerConfig {
            max_receiving_requests: 3,
            max_requests_per_message: 20,
            max_arguments: 4,
            max_argument_bytes: 300,
            ..ServerConfig::default()
        };
        let mut r = ServerReactor::new(config, mode, encoding);
        let mut first = true;
        for op in ops {
            let input = match op {
                Op::Command {
                    id,
                    flags,
                    stream_flags,
                    name,
                } => {
                    let sf = if first {
                        stream_flags | 1
                    } else {
                        *stream_flags
                    };
                    let names = ["get", "put", "", "Bad", "x.y-z_0"];
                    let name = names
                        .get(usize::from(*name) % names.len())
                        .copied()
                        .unwrap_or("get");
                    let flags = CommandNameFlags::from_bits(flags & 0x07).unwrap_or_default();
                    Some(frame(
                        *id,
                        sf,
                        FrameBody::CommandName(CommandName::new(name, flags)),
                    ))
                }
                Op::Argument {
                    id,
                    flags,
                    name,
                    declared,
                    part,
                } => {
                    let key = ["path", "mode", "p", "ranges"];
                    let key = key
                        .get(usize::from(*name) % key.len())
                        .copied()
                        .unwrap_or("p");
                    let part = vec![b'v'; usize::from(*part % 16)];
                    let payload =
                        CommandArgument::start_payload(key, u16::from(*declared % 24), &part);
                    let flags = CommandArgumentFlags::from_bits(flags & 0x03).unwrap_or_default();
                    Some(frame(
                        *id,
                        0,
                        FrameBody::CommandArgument(CommandArgument { flags, payload }),
                    ))
                }
                Op::ArgumentRaw { id, flags, bytes } => {
                    let flags = CommandArgumentFlags::from_bits(flags & 0x03).unwrap_or_default();
                    let payload = Bytes::copy_from_slice(bytes);
                    Some(frame(
                        *id,
                        0,
                        FrameBody::CommandArgument(CommandArgument { flags, payload }),
                    ))
                }
                Op::Data { id, flags, len } => {
                    let flags = CommandDataFlags::from_bits(flags & 0x03).unwrap_or_default();
                    let payload = Bytes::from(vec![0u8; usize::from(*len % 2048)]);
                    Some(frame(
                        *id,
                        0,
                        FrameBody::CommandData(CommandData { flags, payload }),
                    ))
                }
                Op::Settings {
                    stream,
                    stream_flags,
                    profile,
                } => {
                    let profiles = ["identity", "zstd-8mb", "nope"];
                    let p = profiles
                        .get(usize::from(*profile) % 3)
                        .copied()
                        .unwrap_or("identity");
                    let mut f = frame(
                        0,
                        *stream_flags,
                        FrameBody::StreamSettings(StreamSettings::new(p)),
                    );
                    f.stream_id = StreamId(*stream % 4);
                    Some(f)
                }
                Op::Encoded { id, bytes } => {
                    let payload = Bytes::copy_from_slice(bytes);
                    let body = CommandData {
                        flags: CommandDataFlags::CONTINUATION,
                        payload,
                    };
                    Some(frame(*id, 0x04, FrameBody::CommandData(body)))
                }
                Op::Answer { id, len } => {
                    let _ = r.send_answer_data(rid(*id), Bytes::from(vec![1u8; usize::from(*len)]));
                    None
                }
                Op::Finish { id } => {
                    let _ = r.finish_answer(rid(*id));
                    None
                }
                Op::Fail { id } => {
                    let _ = r.fail_command(rid(*id), ErrorPayload::new(ErrorCode::INTERNAL, "x"));
                    None
                }
                Op::Keepalive => {
                    let _ = r.queue_keepalive();
                    None
                }
                Op::Transmit => {
                    while r.poll_transmit().is_some() {}
                    None
                }
                Op::InputEnded => {
                    r.handle_input_ended();
                    None
                }
            };
            if let Some(f) = input {
                first = false;
                let _ = r.handle_frame(f);
            }
            while r.poll_event().is_some() {}
        }
        // Finish the session like a driver: end input, answer what runs.
        r.handle_input_ended();
        let mut started = Vec::new();
        while let Some(ev) = r.poll_event() {
            if let ServerEvent::Command(c) = ev {
                started.push(c.request_id);
            }
        }
        for id in (0..6).map(RequestId) {
            let _ = r.finish_answer(id);
        }
        let _ = started;
        while r.poll_transmit().is_some() {}
        assert!(
            r.is_done(),
            "a drained session with every answer finished is done"
        );
    }
}

/// Sends a [`MessageScript`] through a server reactor in deferred mode
/// with small limits, answering each complete request with its command
/// name, and checks the answer as a client reads it
/// ([`EncodedMessage::check_answer`]) and that the reactor ends done.
pub fn message_reactor(script: &MessageScript) {
    let limits = ServerConfig {
        max_receiving_requests: 4,
        max_requests_per_message: 24,
        ..ServerConfig::default()
    };
    let encoding = if script.knobs & 1 == 1 {
        Encoding::Zstd8Mb
    } else {
        Encoding::Identity
    };
    let message = script.encode();
    let mut server = ServerReactor::new(limits.clone(), OutputMode::Deferred, encoding);
    let mut names = std::collections::HashMap::new();
    let mut answer = |server: &mut ServerReactor| {
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Command(c) => {
                    names.insert(c.request_id, c.name);
                }
                ServerEvent::Complete { request_id, .. } => {
                    let name = names.remove(&request_id).unwrap_or_default();
                    let sent = server.send_answer_data(request_id, Bytes::from(name));
                    assert_eq!(sent, Ok(()), "answering a complete request");
                    assert_eq!(server.finish_answer(request_id), Ok(()));
                }
                _ => {}
            }
        }
    };
    let mut decoder = FrameDecoder::new(limits.max_frame_size);
    let mut buf = BytesMut::from(&message.body[..]);
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(frame)) => {
                let stop = server.handle_frame(frame).is_err();
                answer(&mut server);
                if stop {
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => {
                let _ = server.handle_decode_error(err);
                break;
            }
        }
    }
    server.handle_input_ended();
    answer(&mut server);
    let mut wire = BytesMut::new();
    server.write_transmit(&mut wire);
    assert!(server.is_done(), "every request was answered or aborted");
    let well_formed = message.is_well_formed();
    let outcomes = message.check_answer(&wire, &limits);
    if well_formed {
        for outcome in outcomes {
            if let Outcome::Answered(name) = outcome {
                assert!(COMMANDS.iter().any(|c| c.as_bytes() == &name[..]));
            }
        }
    }
}
