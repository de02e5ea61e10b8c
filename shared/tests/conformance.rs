//! Every vector of the conformance file (`tests/data/frames.tsv`, a copy of
//! `../shared/conformance/frames.tsv`): decoding gives the described frames,
//! and encoding the same inputs gives the same bytes.

use bytes::Bytes;
use framegate_wire::codec::{decode_all, encode_all};
use framegate_wire::frame::*;
use framegate_wire::payload::{decode_atoms, encode_atoms};
use framegate_wire::request::{Arguments, RequestEncoder};
use framegate_wire::stream::{Encoding, OutboundStream};
use framegate_wire::{ErrorCode, ErrorPayload, HelloPayload, ProgressPayload, TextAtom};

const VECTORS: &str = include_str!("data/frames.tsv");

fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    VECTORS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0], hex::decode(cols[2]).expect("hex"))
        })
        .collect()
}

fn frame(req: u16, stream: u8, sflags: StreamFlags, body: FrameBody) -> Frame {
    Frame {
        request_id: RequestId(req),
        stream_id: StreamId(stream),
        stream_flags: sflags,
        body,
    }
}

fn bytes_resp(flags: BytesResponseFlags, payload: impl Into<Bytes>) -> FrameBody {
    FrameBody::BytesResponse(BytesResponse {
        flags,
        payload: payload.into(),
    })
}

/// Frames a request encoder produces on a fresh identity stream 1.
fn request_frames(
    req: u16,
    name: &str,
    args: &[(&str, &[u8])],
    data: Option<Vec<u8>>,
) -> Vec<Frame> {
    let mut arguments = Arguments::new();
    for (k, v) in args {
        arguments.insert(k, Bytes::copy_from_slice(v)).unwrap();
    }
    let bodies = RequestEncoder::default()
        .request(name, &arguments, data.map(Bytes::from))
        .unwrap();
    let mut stream = OutboundStream::new(StreamId(1), Encoding::Identity);
    let mut frames = Vec::new();
    for body in bodies {
        stream.prepare(RequestId(req), body, true, &mut frames);
    }
    frames
}

/// Frames a server answer produces on a fresh identity stream 2.
fn answer_frames(req: u16, data: &[u8]) -> Vec<Frame> {
    use framegate_wire::{OutputMode, ServerConfig, ServerEvent, ServerReactor};
    // Drive a real reactor so the answer comes out of the production path.
    let mut server = ServerReactor::new(
        ServerConfig::default(),
        OutputMode::Immediate,
        Encoding::Identity,
    );
    let get = FrameBody::CommandName(CommandName::new("get", CommandNameFlags::EOS));
    server
        .handle_frame(frame(req, 1, StreamFlags::BEGIN, get))
        .unwrap();
    while let Some(ev) = server.poll_event() {
        if let ServerEvent::Command(c) = ev {
            server
                .send_answer_data(c.request_id, Bytes::copy_from_slice(data))
                .unwrap();
            server.finish_answer(c.request_id).unwrap();
        }
    }
    std::iter::from_fn(|| server.poll_transmit()).collect()
}

fn expected(name: &str) -> Vec<Frame> {
    use StreamFlags as S;
    let begin = S::BEGIN;
    let none = S::empty();
    match name {
        "command-name-eos" => vec![frame(
            1,
            1,
            begin,
            FrameBody::CommandName(CommandName::new("mycommand", CommandNameFlags::EOS)),
        )],
        "empty-payload" => vec![frame(
            1,
            1,
            none,
            FrameBody::CommandName(CommandName {
                flags: CommandNameFlags::empty(),
                payload: Bytes::new(),
            }),
        )],
        "request-id-2-stream-4" => vec![frame(
            2,
            4,
            none,
            FrameBody::CommandName(CommandName {
                flags: CommandNameFlags::empty(),
                payload: "foo".into(),
            }),
        )],
        "request-id-max" => vec![frame(
            65535,
            255,
            S::BEGIN | S::END | S::ENCODED,
            bytes_resp(BytesResponseFlags::EOS, "x"),
        )],
        "bytes-response-eos" => vec![frame(
            1,
            2,
            begin,
            bytes_resp(BytesResponseFlags::EOS, "response"),
        )],
        "text-output-empty" => {
            vec![frame(
                3,
                2,
                none,
                FrameBody::TextOutput(TextOutput {
                    payload: Bytes::new(),
                }),
            )]
        }
        "request-no-args" => request_frames(1, "hello", &[], None),
        "request-two-args" => request_frames(
            3,
            "readv",
            &[("ranges", b"0,10\n20,5"), ("path", b"a/b.txt")],
            None,
        ),
        "request-args-and-data" => {
            request_frames(5, "put", &[("path", b"x")], Some(b"hello world".to_vec()))
        }
        "request-data-two-frames" => {
            let data: Vec<u8> = (0..160).flat_map(|_| 0..=255u8).collect();
            request_frames(7, "put", &[("path", b"big")], Some(data))
        }
        "request-data-only" => request_frames(9, "append", &[], Some(b"abc".to_vec())),
        "bytes-response-small" => answer_frames(1, b"hello"),
        "bytes-response-multi" => answer_frames(3, &[0x61; 70000]),
        "text-output-atoms" => {
            let atoms = vec![
                TextAtom {
                    format: "foo %s".into(),
                    labels: vec!["label1".into()],
                    args: vec!["bar".into()],
                },
                TextAtom {
                    format: "baz\n".into(),
                    labels: vec![],
                    args: vec![],
                },
            ];
            vec![frame(
                1,
                2,
                begin,
                FrameBody::TextOutput(TextOutput {
                    payload: encode_atoms(&atoms).unwrap(),
                }),
            )]
        }
        "error-application" => vec![frame(
            5,
            2,
            begin,
            FrameBody::ErrorResponse(ErrorResponse::new(
                ErrorKind::Application,
                &ErrorPayload::new(ErrorCode::NO_SUCH_FILE, "no such file: a.txt"),
            )),
        )],
        "error-protocol" => vec![frame(
            7,
            2,
            none,
            FrameBody::ErrorResponse(ErrorResponse::new(
                ErrorKind::Protocol,
                &ErrorPayload::new(
                    ErrorCode::INCOMPLETE_REQUEST,
                    "input ended inside request 7",
                ),
            )),
        )],
        "progress" => {
            let p = ProgressPayload {
                pos: 4096,
                item: None,
                label: Some("bytes".into()),
                topic: "get".into(),
                total: 65536,
            };
            vec![frame(
                1,
                2,
                none,
                FrameBody::Progress(Progress {
                    payload: p.encode(),
                }),
            )]
        }
        "stream-settings-zstd" => vec![frame(
            0,
            2,
            begin,
            FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
        )],
        "stream-settings-identity" => vec![frame(
            0,
            1,
            begin,
            FrameBody::StreamSettings(StreamSettings::new("identity")),
        )],
        "hello-answer" => {
            let hello = HelloPayload {
                server: "example/0.1".into(),
                commands: vec!["get".into(), "hello".into()],
                protocol: 1,
                writable: false,
                encodings: vec!["zstd-8mb".into(), "identity".into()],
                max_frame_size: 65535,
            };
            vec![frame(
                1,
                2,
                begin,
                bytes_resp(BytesResponseFlags::EOS, hello.encode()),
            )]
        }
        other => panic!("no expectation for vector {other}"),
    }
}

#[test]
fn every_vector_decodes_to_the_described_frames() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 20, "the conformance file has 20 vectors");
    for (name, wire) in &vectors {
        let decoded = decode_all(wire, 65_535).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected(name), "{name}: decoded frames differ");
    }
}

#[test]
fn every_vector_encodes_to_the_same_bytes() {
    for (name, wire) in vectors() {
        let encoded = encode_all(&expected(name)).unwrap();
        assert_eq!(
            hex::encode(&encoded),
            hex::encode(&wire),
            "{name}: encoded bytes differ"
        );
    }
}

#[test]
fn cbor_payloads_decode_to_the_same_values() {
    for (name, wire) in vectors() {
        let frames = decode_all(&wire, 65_535).unwrap();
        match name {
            "hello-answer" => {
                let hello = HelloPayload::decode(frames[0].body.payload()).unwrap();
                assert_eq!(hello.server, "example/0.1");
                assert_eq!(hello.commands, ["get", "hello"]);
                assert_eq!(hello.max_frame_size, 65535);
                assert!(!hello.writable);
            }
            "error-application" | "error-protocol" => {
                let e = ErrorPayload::decode(frames[0].body.payload()).unwrap();
                assert!(e.code.is_known());
                assert_eq!(e.code.is_protocol(), name == "error-protocol");
            }
            "progress" => {
                let p = ProgressPayload::decode(frames[0].body.payload()).unwrap();
                assert_eq!((p.pos, p.total, p.topic.as_str()), (4096, 65536, "get"));
            }
            "text-output-atoms" => {
                let atoms = decode_atoms(frames[0].body.payload()).unwrap();
                assert_eq!(atoms.len(), 2);
                assert_eq!(atoms[0].render(), "foo bar");
                assert_eq!(atoms[1].render(), "baz\n");
            }
            _ => {}
        }
    }
}
