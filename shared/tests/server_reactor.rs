//! Server reactor tests: literal frames in, expected events and frames out.

use bytes::{BufMut, Bytes, BytesMut};
use framegate_wire::codec::FrameDecoder;
use framegate_wire::frame::*;
use framegate_wire::stream::{Encoding, OutboundStream};
use framegate_wire::{
    ClientConfig, ClientEvent, ClientReactor, ErrorCode, ErrorPayload, OutputMode, ProgressPayload,
    ServerConfig, ServerEvent, ServerReactor, TextAtom, server::ApiMisuse,
};

// ---- literal frame builders -------------------------------------------------

fn f(req: u16, stream: u8, sflags: StreamFlags, body: FrameBody) -> Frame {
    Frame {
        request_id: RequestId(req),
        stream_id: StreamId(stream),
        stream_flags: sflags,
        body,
    }
}
const B: StreamFlags = StreamFlags::BEGIN;
const N: StreamFlags = StreamFlags::empty();

fn name(req: u16, s: StreamFlags, flags: CommandNameFlags, cmd: &str) -> Frame {
    f(
        req,
        1,
        s,
        FrameBody::CommandName(CommandName {
            flags,
            payload: Bytes::copy_from_slice(cmd.as_bytes()),
        }),
    )
}
fn eos_cmd(req: u16, s: StreamFlags, cmd: &str) -> Frame {
    name(req, s, CommandNameFlags::EOS, cmd)
}
fn arg_raw(req: u16, flags: CommandArgumentFlags, payload: Vec<u8>) -> Frame {
    f(
        req,
        1,
        N,
        FrameBody::CommandArgument(CommandArgument {
            flags,
            payload: payload.into(),
        }),
    )
}
fn arg(req: u16, flags: CommandArgumentFlags, key: &str, value: &[u8]) -> Frame {
    arg_decl(req, flags, key, value.len() as u16, value)
}
fn arg_decl(req: u16, flags: CommandArgumentFlags, key: &str, declared: u16, part: &[u8]) -> Frame {
    let mut p = Vec::new();
    p.extend_from_slice(&(key.len() as u16).to_le_bytes());
    p.extend_from_slice(&declared.to_le_bytes());
    p.extend_from_slice(key.as_bytes());
    p.extend_from_slice(part);
    arg_raw(req, flags, p)
}
fn data(req: u16, flags: CommandDataFlags, payload: &[u8]) -> Frame {
    f(
        req,
        1,
        N,
        FrameBody::CommandData(CommandData {
            flags,
            payload: Bytes::copy_from_slice(payload),
        }),
    )
}
const EOA: CommandArgumentFlags = CommandArgumentFlags::EOA;
const CONT: CommandArgumentFlags = CommandArgumentFlags::CONTINUATION;
const NOF: CommandArgumentFlags = CommandArgumentFlags::empty();
const DCONT: CommandDataFlags = CommandDataFlags::CONTINUATION;
const DEOS: CommandDataFlags = CommandDataFlags::EOS;
fn args_flag() -> CommandNameFlags {
    CommandNameFlags::HAVE_ARGS
}
fn data_flag() -> CommandNameFlags {
    CommandNameFlags::HAVE_DATA
}

// ---- harness ------------------------------------------------------------------

fn deferred() -> ServerReactor {
    ServerReactor::new(
        ServerConfig::default(),
        OutputMode::Deferred,
        Encoding::Identity,
    )
}
fn immediate() -> ServerReactor {
    ServerReactor::new(
        ServerConfig::default(),
        OutputMode::Immediate,
        Encoding::Identity,
    )
}
fn with_config(c: impl FnOnce(&mut ServerConfig)) -> ServerReactor {
    let mut config = ServerConfig::default();
    c(&mut config);
    ServerReactor::new(config, OutputMode::Deferred, Encoding::Identity)
}

fn events(r: &mut ServerReactor) -> Vec<ServerEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}
fn out(r: &mut ServerReactor) -> Vec<Frame> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

/// (request id, code) of every error-response in `frames`.
fn errors(frames: &[Frame]) -> Vec<(u16, String)> {
    frames
        .iter()
        .filter_map(|fr| match &fr.body {
            FrameBody::ErrorResponse(e) => Some((
                fr.request_id.0,
                ErrorPayload::decode(&e.payload).unwrap().code.to_string(),
            )),
            _ => None,
        })
        .collect()
}

/// Feeds frames, expecting the last one to raise `code`.
fn expect_error(r: &mut ServerReactor, frames: Vec<Frame>, code: ErrorCode) {
    let n = frames.len();
    for (i, frame) in frames.into_iter().enumerate() {
        let result = r.handle_frame(frame);
        if i + 1 < n {
            result.unwrap_or_else(|e| panic!("frame {i} failed early: {e}"));
        } else {
            assert_eq!(result.unwrap_err().code, code);
        }
    }
    assert!(r.is_errored());
}

/// Answers every started command with `"<name>:<args>"` or its data.
fn answer_all(r: &mut ServerReactor) -> Vec<ServerEvent> {
    let evs = events(r);
    let mut data: std::collections::HashMap<RequestId, BytesMut> = Default::default();
    for ev in &evs {
        match ev {
            ServerEvent::Command(c) => {
                let mut answer = c.name.clone();
                for (k, v) in c.arguments.iter() {
                    answer.push_str(&format!(" {k}={}", String::from_utf8_lossy(v)));
                }
                data.entry(c.request_id)
                    .or_default()
                    .put_slice(answer.as_bytes());
            }
            ServerEvent::Data {
                request_id,
                data: d,
            } => data.entry(*request_id).or_default().put_slice(d),
            ServerEvent::Complete { request_id, .. } => {
                let body = data.remove(request_id).unwrap_or_default().freeze();
                r.send_answer_data(*request_id, body).unwrap();
                r.finish_answer(*request_id).unwrap();
            }
            _ => {}
        }
    }
    evs
}

fn answer_text(frames: &[Frame], req: u16) -> Vec<u8> {
    frames
        .iter()
        .filter(|fr| fr.request_id.0 == req)
        .filter_map(|fr| match &fr.body {
            FrameBody::BytesResponse(b) => Some(b.payload.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

// ---- output modes -------------------------------------------------------------

#[test]
fn deferred_mode_sends_nothing_before_input_ends() {
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B, "hello")).unwrap();
    answer_all(&mut r);
    assert!(!r.can_send());
    assert_eq!(out(&mut r), vec![]);
    assert!(r.pending_output_bytes() > 0);
    r.handle_input_ended();
    let frames = out(&mut r);
    assert_eq!(
        frames,
        vec![f(
            1,
            2,
            B,
            FrameBody::BytesResponse(BytesResponse {
                flags: BytesResponseFlags::EOS,
                payload: "hello".into()
            })
        )]
    );
    assert!(r.is_done());
}

#[test]
fn immediate_mode_sends_as_soon_as_ready() {
    let mut r = immediate();
    r.handle_frame(eos_cmd(1, B, "hello")).unwrap();
    answer_all(&mut r);
    assert_eq!(answer_text(&out(&mut r), 1), b"hello");
    assert!(!r.is_done(), "input has not ended");
    r.handle_input_ended();
    assert!(r.is_done());
}

#[test]
fn commands_run_before_input_ends_in_deferred_mode() {
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B, "hello")).unwrap();
    let evs = events(&mut r);
    assert!(matches!(&evs[0], ServerEvent::Command(c) if c.name == "hello" && !c.has_data));
    assert_eq!(
        evs[1],
        ServerEvent::Complete {
            request_id: RequestId(1),
            seq: 0
        }
    );
}

// ---- requests -----------------------------------------------------------------

#[test]
fn arguments_are_delivered_with_the_command() {
    let mut r = deferred();
    r.handle_frame(name(3, B, args_flag(), "readv")).unwrap();
    r.handle_frame(arg(3, NOF, "path", b"a/b.txt")).unwrap();
    assert!(events(&mut r).is_empty(), "no command before eoa");
    r.handle_frame(arg(3, EOA, "ranges", b"0,10")).unwrap();
    let evs = events(&mut r);
    let ServerEvent::Command(c) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(c.arguments.get("path").unwrap(), "a/b.txt");
    assert_eq!(c.arguments.get("ranges").unwrap(), "0,10");
    assert_eq!(
        evs[1],
        ServerEvent::Complete {
            request_id: RequestId(3),
            seq: 0
        }
    );
}

#[test]
fn argument_value_continues_over_several_frames() {
    let mut r = deferred();
    r.handle_frame(name(1, B, args_flag(), "x")).unwrap();
    r.handle_frame(arg_decl(1, CONT, "v", 9, b"abc")).unwrap();
    r.handle_frame(arg_raw(1, CONT, b"def".to_vec())).unwrap();
    r.handle_frame(arg_raw(1, EOA, b"ghi".to_vec())).unwrap();
    let evs = events(&mut r);
    let ServerEvent::Command(c) = &evs[0] else {
        panic!()
    };
    assert_eq!(c.arguments.get("v").unwrap(), "abcdefghi");
}

#[test]
fn long_argument_from_the_encoder_round_trips() {
    let mut client = ClientReactor::new(ClientConfig::default());
    let value = vec![b'z'; 65_535];
    let args = framegate_wire::Arguments::new()
        .with("big", value.clone())
        .unwrap()
        .with("a", "1")
        .unwrap();
    client.request("echo", &args, None).unwrap();
    let frames: Vec<Frame> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert!(
        frames.len() >= 4,
        "the 64 KiB value needs continuation frames"
    );
    let mut r = deferred();
    for fr in frames {
        r.handle_frame(fr).unwrap();
    }
    let ServerEvent::Command(c) = &events(&mut r)[0] else {
        panic!()
    };
    assert_eq!(c.arguments.get("big").unwrap().as_ref(), &value[..]);
}

#[test]
fn data_spanning_frames_arrives_in_order_then_completes() {
    let mut r = deferred();
    r.handle_frame(name(1, B, args_flag() | data_flag(), "put"))
        .unwrap();
    r.handle_frame(arg(1, EOA, "path", b"x")).unwrap();
    r.handle_frame(data(1, DCONT, b"hello ")).unwrap();
    r.handle_frame(data(1, DCONT, b"")).unwrap();
    r.handle_frame(data(1, DEOS, b"world")).unwrap();
    let evs = events(&mut r);
    assert!(matches!(&evs[0], ServerEvent::Command(c) if c.has_data));
    assert_eq!(
        evs[1],
        ServerEvent::Data {
            request_id: RequestId(1),
            data: "hello ".into()
        }
    );
    assert_eq!(
        evs[2],
        ServerEvent::Data {
            request_id: RequestId(1),
            data: "world".into()
        }
    );
    assert_eq!(
        evs[3],
        ServerEvent::Complete {
            request_id: RequestId(1),
            seq: 0
        }
    );
    assert_eq!(evs.len(), 4, "empty data frames make no event");
}

#[test]
fn data_only_request_starts_at_command_name() {
    let mut r = deferred();
    r.handle_frame(name(9, B, data_flag(), "append")).unwrap();
    assert!(matches!(&events(&mut r)[0], ServerEvent::Command(c) if c.arguments.is_empty()));
    r.handle_frame(data(9, DEOS, b"abc")).unwrap();
    let evs = events(&mut r);
    assert_eq!(
        evs[1],
        ServerEvent::Complete {
            request_id: RequestId(9),
            seq: 0
        }
    );
}

#[test]
fn interleaved_requests_are_kept_apart() {
    let mut r = deferred();
    r.handle_frame(name(1, B, args_flag() | data_flag(), "put"))
        .unwrap();
    r.handle_frame(name(3, N, args_flag(), "get")).unwrap();
    r.handle_frame(arg(1, EOA, "path", b"one")).unwrap();
    r.handle_frame(data(1, DCONT, b"1a")).unwrap();
    r.handle_frame(arg(3, EOA, "path", b"three")).unwrap();
    r.handle_frame(data(1, DEOS, b"1b")).unwrap();
    r.handle_input_ended();
    answer_all(&mut r);
    let frames = out(&mut r);
    assert_eq!(answer_text(&frames, 1), b"put path=one1a1b");
    assert_eq!(answer_text(&frames, 3), b"get path=three");
    assert!(r.is_done());
}

#[test]
fn completion_order_gives_sequence_numbers() {
    let mut r = deferred();
    r.handle_frame(name(1, B, data_flag(), "put")).unwrap();
    r.handle_frame(eos_cmd(3, N, "get")).unwrap();
    r.handle_frame(data(1, DEOS, b"x")).unwrap();
    r.handle_frame(eos_cmd(5, N, "get")).unwrap();
    let seqs: Vec<(u16, u64)> = events(&mut r)
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::Complete { request_id, seq } => Some((request_id.0, seq)),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![(3, 0), (1, 1), (5, 2)]);
}

#[test]
fn request_id_is_reusable_after_its_answer_went_out() {
    let mut r = immediate();
    r.handle_frame(eos_cmd(1, B, "a")).unwrap();
    answer_all(&mut r);
    assert_eq!(out(&mut r).len(), 1);
    assert!(!r.is_active(RequestId(1)));
    r.handle_frame(eos_cmd(1, N, "b")).unwrap();
    answer_all(&mut r);
    assert_eq!(answer_text(&out(&mut r), 1), b"b");
}

#[test]
fn request_id_stays_active_until_the_answer_is_sent() {
    // Deferred: the answer of request 1 cannot have gone out yet.
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B, "a")).unwrap();
    answer_all(&mut r);
    expect_error(
        &mut r,
        vec![eos_cmd(1, N, "b")],
        ErrorCode::REQUEST_ID_IN_USE,
    );
    r.handle_input_ended();
    let frames = out(&mut r);
    assert_eq!(
        answer_text(&frames, 1),
        b"a",
        "the first request is still answered"
    );
    assert_eq!(errors(&frames), vec![(0, "request-id-in-use".into())]);
}

#[test]
fn request_id_in_use_while_receiving() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![name(1, B, args_flag(), "a"), name(1, N, args_flag(), "b")],
        ErrorCode::REQUEST_ID_IN_USE,
    );
}

#[test]
fn request_id_zero_is_refused() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![eos_cmd(0, B, "a")],
        ErrorCode::REQUEST_ID_IN_USE,
    );
}

#[test]
fn end_of_input_answers_partial_requests_and_keeps_complete_ones() {
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B, "done")).unwrap();
    r.handle_frame(name(7, N, args_flag(), "partial")).unwrap();
    r.handle_frame(name(5, N, data_flag(), "upload")).unwrap();
    r.handle_frame(data(5, DCONT, b"half")).unwrap();
    answer_all(&mut r);
    r.handle_input_ended();
    let evs = events(&mut r);
    assert!(evs.iter().any(|e| matches!(e, ServerEvent::Aborted { request_id: RequestId(5), error } if error.code == ErrorCode::INCOMPLETE_REQUEST)));
    assert!(
        !evs.iter().any(|e| matches!(
            e,
            ServerEvent::Aborted {
                request_id: RequestId(7),
                ..
            }
        )),
        "7 never started"
    );
    let frames = out(&mut r);
    assert_eq!(answer_text(&frames, 1), b"done");
    assert_eq!(
        errors(&frames),
        vec![
            (7, "incomplete-request".into()),
            (5, "incomplete-request".into())
        ]
    );
    assert!(r.is_done());
}

#[test]
fn truncated_body_via_decoder_is_reported() {
    let mut wire = BytesMut::new();
    eos_cmd(1, B, "hello").encode(&mut wire).unwrap();
    wire.put_slice(&[5, 0, 0, 3, 0]); // half a header
    let mut dec = FrameDecoder::default();
    let mut r = deferred();
    let err = loop {
        match dec.decode_eof(&mut wire) {
            Ok(Some(fr)) => r.handle_frame(fr).unwrap(),
            Ok(None) => panic!("truncation not detected"),
            Err(e) => break e,
        }
    };
    let perr = r.handle_decode_error(err);
    assert_eq!(perr.code, ErrorCode::TRUNCATED_FRAME);
    answer_all(&mut r);
    r.handle_input_ended();
    let frames = out(&mut r);
    assert_eq!(
        answer_text(&frames, 1),
        b"hello",
        "complete request still answered"
    );
    assert_eq!(errors(&frames), vec![(0, "truncated-frame".into())]);
}

#[test]
fn frame_too_large_is_refused_before_reading_the_payload() {
    let mut wire = BytesMut::from(&[0xff, 0xff, 0x01, 1, 0, 1, 1, 0x11][..]);
    let cap = wire.capacity();
    let mut dec = FrameDecoder::new(65_535);
    let err = dec.decode(&mut wire).unwrap_err();
    assert!(
        wire.capacity() <= cap + 8,
        "no room was reserved for the payload"
    );
    let mut r = deferred();
    assert_eq!(r.handle_decode_error(err).code, ErrorCode::FRAME_TOO_LARGE);
    r.handle_input_ended();
    assert_eq!(errors(&out(&mut r)), vec![(0, "frame-too-large".into())]);
}

// ---- protocol errors ---------------------------------------------------------------

#[test]
fn stream_with_server_parity_is_bad_stream() {
    let mut r = deferred();
    let frame = f(
        2,
        4,
        N,
        FrameBody::CommandName(CommandName {
            flags: CommandNameFlags::empty(),
            payload: "foo".into(),
        }),
    );
    expect_error(&mut r, vec![frame], ErrorCode::BAD_STREAM);
}

#[test]
fn begin_on_open_stream_is_bad_stream() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![eos_cmd(1, B, "a"), eos_cmd(3, B, "b")],
        ErrorCode::BAD_STREAM,
    );
}

#[test]
fn frame_on_unopened_stream_is_bad_stream() {
    let mut r = deferred();
    expect_error(&mut r, vec![eos_cmd(1, N, "a")], ErrorCode::BAD_STREAM);
}

#[test]
fn stream_can_be_reused_after_end() {
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B | StreamFlags::END, "a"))
        .unwrap();
    r.handle_frame(eos_cmd(3, B, "b")).unwrap();
    r.handle_frame(eos_cmd(5, StreamFlags::END, "c")).unwrap();
    expect_error(&mut r, vec![eos_cmd(7, N, "d")], ErrorCode::BAD_STREAM);
}

#[test]
fn encoded_on_identity_stream_is_bad_stream() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![eos_cmd(1, B | StreamFlags::ENCODED, "a")],
        ErrorCode::BAD_STREAM,
    );
}

#[test]
fn stream_settings_after_first_frame_is_bad_stream() {
    let mut r = deferred();
    let settings = f(
        0,
        1,
        N,
        FrameBody::StreamSettings(StreamSettings::new("identity")),
    );
    expect_error(
        &mut r,
        vec![eos_cmd(1, B, "a"), settings],
        ErrorCode::BAD_STREAM,
    );
}

#[test]
fn stream_settings_with_request_id_is_bad_stream() {
    let mut r = deferred();
    let settings = f(
        1,
        1,
        B,
        FrameBody::StreamSettings(StreamSettings::new("identity")),
    );
    expect_error(&mut r, vec![settings], ErrorCode::BAD_STREAM);
}

#[test]
fn unknown_encoding_is_unsupported_encoding() {
    let mut r = deferred();
    let settings = f(
        0,
        1,
        B,
        FrameBody::StreamSettings(StreamSettings::new("brotli")),
    );
    expect_error(&mut r, vec![settings], ErrorCode::UNSUPPORTED_ENCODING);
}

#[test]
fn server_frame_type_from_client_is_bad_frame_type() {
    let mut r = deferred();
    let frame = f(
        1,
        1,
        B,
        FrameBody::BytesResponse(BytesResponse {
            flags: BytesResponseFlags::EOS,
            payload: "x".into(),
        }),
    );
    expect_error(&mut r, vec![frame], ErrorCode::BAD_FRAME_TYPE);
}

#[test]
fn unknown_frame_type_is_bad_frame_type() {
    let err = FrameDecoder::default()
        .decode(&mut BytesMut::from(&[0, 0, 0, 1, 0, 1, 1, 0x90][..]))
        .unwrap_err();
    let mut r = deferred();
    assert_eq!(r.handle_decode_error(err).code, ErrorCode::BAD_FRAME_TYPE);
}

#[test]
fn data_before_end_of_arguments_is_bad_frame_type() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag() | data_flag(), "put"),
            data(1, DEOS, b"x"),
        ],
        ErrorCode::BAD_FRAME_TYPE,
    );
    r.handle_input_ended();
    assert_eq!(errors(&out(&mut r)), vec![(1, "bad-frame-type".into())]);
}

#[test]
fn data_for_unknown_request_is_bad_frame_type() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![eos_cmd(1, B, "a"), data(3, DEOS, b"x")],
        ErrorCode::BAD_FRAME_TYPE,
    );
}

#[test]
fn invalid_command_name_is_refused() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![eos_cmd(1, B, "Bad Name")],
        ErrorCode::BAD_FRAME_TYPE,
    );
    let mut r = deferred();
    expect_error(&mut r, vec![eos_cmd(1, B, "")], ErrorCode::BAD_FRAME_TYPE);
}

#[test]
fn command_name_without_flags_is_bad_flags() {
    // The conformance vector `empty-payload`: decodes, but a reactor rejects it.
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![name(1, B, CommandNameFlags::empty(), "a")],
        ErrorCode::BAD_FLAGS,
    );
}

#[test]
fn eos_with_other_command_flags_is_bad_flags() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![name(1, B, CommandNameFlags::EOS | args_flag(), "a")],
        ErrorCode::BAD_FLAGS,
    );
}

#[test]
fn data_with_both_or_no_flags_is_bad_flags() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![name(1, B, data_flag(), "put"), data(1, DCONT | DEOS, b"")],
        ErrorCode::BAD_FLAGS,
    );
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, data_flag(), "put"),
            data(1, CommandDataFlags::empty(), b""),
        ],
        ErrorCode::BAD_FLAGS,
    );
}

#[test]
fn undefined_flag_bits_are_bad_flags() {
    for raw in [
        [0u8, 0, 0, 1, 0, 1, 1, 0x19],
        [0, 0, 0, 1, 0, 1, 1, 0x61],
        [0, 0, 0, 1, 0, 1, 0x81, 0x11],
    ] {
        let err = FrameDecoder::default()
            .decode(&mut BytesMut::from(&raw[..]))
            .unwrap_err();
        let mut r = deferred();
        assert_eq!(
            r.handle_decode_error(err).code,
            ErrorCode::BAD_FLAGS,
            "{raw:x?}"
        );
    }
}

#[test]
fn short_argument_header_is_bad_argument_frame() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![name(1, B, args_flag(), "a"), arg_raw(1, EOA, vec![1, 0, 1])],
        ErrorCode::BAD_ARGUMENT_FRAME,
    );
}

#[test]
fn name_not_in_first_argument_frame_is_bad_argument_frame() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg_raw(1, CONT, vec![4, 0, 1, 0, b'p', b'a']),
        ],
        ErrorCode::BAD_ARGUMENT_FRAME,
    );
}

#[test]
fn value_longer_than_declared_is_bad_argument_frame() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg_decl(1, CONT, "p", 4, b"abc"),
            arg_raw(1, EOA, b"de".to_vec()),
        ],
        ErrorCode::BAD_ARGUMENT_FRAME,
    );
}

#[test]
fn value_ending_early_is_bad_argument_frame() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg_decl(1, EOA, "p", 4, b"abc"),
        ],
        ErrorCode::BAD_ARGUMENT_FRAME,
    );
}

#[test]
fn continuation_on_completing_frame_is_bad_argument_frame() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg_decl(1, CONT | EOA, "p", 3, b"abc"),
        ],
        ErrorCode::BAD_ARGUMENT_FRAME,
    );
}

#[test]
fn argument_for_request_without_arguments_is_bad_argument_frame() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![name(1, B, data_flag(), "a"), arg(1, EOA, "p", b"x")],
        ErrorCode::BAD_ARGUMENT_FRAME,
    );
    r.handle_input_ended();
    assert_eq!(errors(&out(&mut r)), vec![(1, "bad-argument-frame".into())]);
}

#[test]
fn duplicate_argument_is_refused() {
    let mut r = deferred();
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg(1, NOF, "p", b"x"),
            arg(1, EOA, "p", b"y"),
        ],
        ErrorCode::DUPLICATE_ARGUMENT,
    );
}

#[test]
fn too_many_receiving_requests() {
    let mut r = with_config(|c| c.max_receiving_requests = 2);
    expect_error(
        &mut r,
        vec![
            name(1, B, data_flag(), "a"),
            name(3, N, data_flag(), "b"),
            name(5, N, data_flag(), "c"),
        ],
        ErrorCode::TOO_MANY_REQUESTS,
    );
    r.handle_input_ended();
    let errs = errors(&out(&mut r));
    assert_eq!(errs[0], (5, "too-many-requests".into()));
    assert!(errs.contains(&(1, "server-errored".into())));
}

#[test]
fn receiving_limit_counts_only_incomplete_requests() {
    let mut r = with_config(|c| c.max_receiving_requests = 1);
    for id in (1..20).step_by(2) {
        r.handle_frame(eos_cmd(id, if id == 1 { B } else { N }, "a"))
            .unwrap();
    }
}

#[test]
fn too_many_requests_in_one_message() {
    let mut r = with_config(|c| c.max_requests_per_message = 3);
    let frames = vec![
        eos_cmd(1, B, "a"),
        eos_cmd(3, N, "a"),
        eos_cmd(5, N, "a"),
        eos_cmd(7, N, "a"),
    ];
    expect_error(&mut r, frames, ErrorCode::TOO_MANY_REQUESTS);
    answer_all(&mut r);
    r.handle_input_ended();
    let frames = out(&mut r);
    assert_eq!(
        answer_text(&frames, 5),
        b"a",
        "requests within the limit are answered"
    );
}

#[test]
fn per_message_limit_does_not_apply_to_byte_streams() {
    let mut config = ServerConfig::default();
    config.max_requests_per_message = 2;
    let mut r = ServerReactor::new(config, OutputMode::Immediate, Encoding::Identity);
    for (i, id) in (1..12).step_by(2).enumerate() {
        r.handle_frame(eos_cmd(id, if i == 0 { B } else { N }, "a"))
            .unwrap();
    }
}

#[test]
fn too_many_arguments() {
    let mut r = with_config(|c| c.max_arguments = 2);
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg(1, NOF, "a", b""),
            arg(1, NOF, "b", b""),
            arg(1, EOA, "c", b""),
        ],
        ErrorCode::TOO_MANY_ARGUMENTS,
    );
}

#[test]
fn too_many_argument_bytes_is_too_large_before_the_value_arrives() {
    let mut r = with_config(|c| c.max_argument_bytes = 100);
    // Declared 200 bytes; refused on the first frame, nothing buffered.
    expect_error(
        &mut r,
        vec![
            name(1, B, args_flag(), "a"),
            arg_decl(1, CONT, "v", 200, b"x"),
        ],
        ErrorCode::TOO_LARGE,
    );
}

#[test]
fn arguments_held_by_unanswered_requests_are_bounded_and_freed_by_answers() {
    let mut r = with_config(|c| c.max_unanswered_argument_bytes = 1000);
    let value = [b'v'; 400];
    for id in [1u16, 3] {
        r.handle_frame(name(id, if id == 1 { B } else { N }, args_flag(), "get"))
            .unwrap();
        r.handle_frame(arg(id, EOA, "p", &value)).unwrap();
    }
    let _ = events(&mut r);
    // Answering the first frees its 401 bytes: a third fits.
    r.send_answer_data(RequestId(1), Bytes::from_static(b"ok"))
        .unwrap();
    r.finish_answer(RequestId(1)).unwrap();
    r.handle_frame(name(5, N, args_flag(), "get")).unwrap();
    r.handle_frame(arg(5, EOA, "p", &value)).unwrap();
    // Two unanswered (3 and 5) hold 802 bytes: a fourth does not fit,
    // refused on its first argument frame (its value was only declared).
    r.handle_frame(name(7, N, args_flag(), "get")).unwrap();
    let err = r
        .handle_frame(arg_decl(7, CONT, "p", 400, b"v"))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TOO_LARGE);
    assert!(err.message.contains("not yet answered"), "{}", err.message);
}

#[test]
fn message_larger_than_limit_is_too_large() {
    let mut r = with_config(|c| c.max_message_bytes = 100);
    let frames = vec![
        name(1, B, data_flag(), "put"),
        data(1, DCONT, &[0; 60]),
        data(1, DEOS, &[0; 60]),
    ];
    expect_error(&mut r, frames, ErrorCode::TOO_LARGE);
}

#[test]
fn errored_reactor_refuses_further_frames_and_cuts_off_partial_requests() {
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B, "complete")).unwrap();
    r.handle_frame(name(3, N, data_flag(), "upload")).unwrap();
    r.handle_frame(data(3, DCONT, b"part")).unwrap();
    let bad = f(
        5,
        1,
        N,
        FrameBody::Progress(Progress {
            payload: Bytes::new(),
        }),
    );
    expect_error(&mut r, vec![bad], ErrorCode::BAD_FRAME_TYPE);
    assert!(!r.wants_input());
    let err = r.handle_frame(data(3, DEOS, b"rest")).unwrap_err();
    assert_eq!(err.code, ErrorCode::SERVER_ERRORED);
    let evs = answer_all(&mut r);
    assert!(evs.iter().any(|e| matches!(e, ServerEvent::Aborted { request_id: RequestId(3), error } if error.code == ErrorCode::SERVER_ERRORED)));
    assert!(evs.iter().any(
        |e| matches!(e, ServerEvent::ProtocolError(p) if p.code == ErrorCode::BAD_FRAME_TYPE)
    ));
    assert!(
        !r.can_send(),
        "deferred output waits for the driver to finish draining input"
    );
    r.handle_input_ended();
    let frames = out(&mut r);
    assert_eq!(answer_text(&frames, 1), b"complete");
    assert_eq!(
        errors(&frames),
        vec![(0, "bad-frame-type".into()), (3, "server-errored".into())]
    );
    assert!(r.is_done());
}

// ---- answers ----------------------------------------------------------------------

#[test]
fn streamed_answer_pieces_fill_frames() {
    let mut r = immediate();
    r.handle_frame(eos_cmd(1, B, "get")).unwrap();
    let _ = events(&mut r);
    for _ in 0..10 {
        r.send_answer_data(RequestId(1), Bytes::from(vec![7u8; 10_000]))
            .unwrap();
    }
    r.finish_answer(RequestId(1)).unwrap();
    let frames = out(&mut r);
    let sizes: Vec<usize> = frames.iter().map(|fr| fr.body.payload().len()).collect();
    assert_eq!(sizes, vec![32_768, 32_768, 32_768, 1_696]);
    assert_eq!(
        frames.last().unwrap().body.flag_bits(),
        BytesResponseFlags::EOS.bits()
    );
}

#[test]
fn empty_answer_is_one_empty_eos_frame() {
    let mut r = immediate();
    r.handle_frame(eos_cmd(1, B, "x")).unwrap();
    let _ = events(&mut r);
    r.finish_answer(RequestId(1)).unwrap();
    let frames = out(&mut r);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].body.payload().is_empty());
}

#[test]
fn failing_a_command_while_its_data_arrives_discards_the_rest() {
    let mut r = immediate();
    r.handle_frame(name(1, B, data_flag(), "put")).unwrap();
    r.handle_frame(data(1, DCONT, b"a")).unwrap();
    let _ = events(&mut r);
    r.fail_command(
        RequestId(1),
        ErrorPayload::new(ErrorCode::PERMISSION_DENIED, "no"),
    )
    .unwrap();
    assert_eq!(errors(&out(&mut r)), vec![(1, "permission-denied".into())]);
    assert!(r.is_active(RequestId(1)), "still receiving");
    r.handle_frame(data(1, DCONT, b"b")).unwrap();
    r.handle_frame(data(1, DEOS, b"c")).unwrap();
    assert!(events(&mut r).is_empty(), "discarded data makes no events");
    assert!(!r.is_active(RequestId(1)));
}

#[test]
fn text_output_and_progress_reach_the_client() {
    let mut client = ClientReactor::default();
    let id = client
        .request("get", &framegate_wire::Arguments::new(), None)
        .unwrap();
    let mut r = immediate();
    while let Some(fr) = client.poll_transmit() {
        r.handle_frame(fr).unwrap();
    }
    let _ = events(&mut r);
    r.send_text(id, &[TextAtom::plain("50% done")]).unwrap();
    let progress = ProgressPayload {
        pos: 1,
        item: None,
        label: None,
        topic: "get".into(),
        total: 2,
    };
    r.send_progress(id, &progress).unwrap();
    assert!(r.queue_keepalive());
    r.finish_answer(id).unwrap();
    while let Some(fr) = r.poll_transmit() {
        client.handle_frame(fr).unwrap();
    }
    let evs: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        matches!(&evs[0], ClientEvent::TextOutput { atoms, .. } if atoms[0].render() == "50% done")
    );
    assert_eq!(
        evs[1],
        ClientEvent::Progress {
            request_id: id,
            progress
        }
    );
    assert_eq!(
        evs[2],
        ClientEvent::End { request_id: id },
        "keepalive is not reported"
    );
}

#[test]
fn keepalive_only_when_output_is_allowed_and_a_command_runs() {
    let mut r = deferred();
    r.handle_frame(eos_cmd(1, B, "slow")).unwrap();
    let _ = events(&mut r);
    assert!(!r.queue_keepalive(), "deferred: not before input ended");
    r.handle_input_ended();
    assert!(r.queue_keepalive());
    let frames = out(&mut r);
    assert_eq!(
        frames,
        vec![f(
            1,
            2,
            B,
            FrameBody::TextOutput(TextOutput {
                payload: Bytes::new()
            })
        )]
    );
    r.finish_answer(RequestId(1)).unwrap();
    let _ = out(&mut r);
    assert!(!r.queue_keepalive(), "nothing runs any more");
}

#[test]
fn driver_misuse_is_reported_not_panicked() {
    let mut r = deferred();
    assert_eq!(
        r.finish_answer(RequestId(9)),
        Err(ApiMisuse::UnknownRequest(RequestId(9)))
    );
    r.handle_frame(name(1, B, args_flag(), "a")).unwrap();
    assert_eq!(
        r.finish_answer(RequestId(1)),
        Err(ApiMisuse::NotStarted(RequestId(1)))
    );
    r.handle_frame(arg(1, EOA, "p", b"")).unwrap();
    r.finish_answer(RequestId(1)).unwrap();
    assert_eq!(
        r.finish_answer(RequestId(1)),
        Err(ApiMisuse::AnswerEnded(RequestId(1)))
    );
    assert_eq!(
        r.send_answer_data(RequestId(1), "x".into()),
        Err(ApiMisuse::AnswerEnded(RequestId(1)))
    );
}

#[test]
fn four_thousand_requests_in_one_message() {
    let mut r = deferred();
    let mut client = ClientReactor::default();
    for _ in 0..4096 {
        client
            .request(
                "has",
                &framegate_wire::Arguments::new().with("path", "x").unwrap(),
                None,
            )
            .unwrap();
    }
    while let Some(fr) = client.poll_transmit() {
        r.handle_frame(fr).unwrap();
    }
    r.handle_input_ended();
    answer_all(&mut r);
    let mut answered = 0;
    while let Some(fr) = r.poll_transmit() {
        client.handle_frame(fr).unwrap();
    }
    while let Some(ev) = client.poll_event() {
        if matches!(ev, ClientEvent::End { .. }) {
            answered += 1;
        }
    }
    assert_eq!(answered, 4096);
    assert!(r.is_done());
}

// ---- zstd -----------------------------------------------------------------------------

fn zstd_server() -> ServerReactor {
    ServerReactor::new(
        ServerConfig::default(),
        OutputMode::Deferred,
        Encoding::Zstd8Mb,
    )
}

#[test]
fn zstd_answers_start_with_stream_settings_and_decode() {
    let mut r = zstd_server();
    r.handle_frame(eos_cmd(1, B, "get")).unwrap();
    let _ = events(&mut r);
    let text = Bytes::from("the quick brown fox jumps over the lazy dog. ".repeat(200));
    r.send_answer_data(RequestId(1), text.clone()).unwrap();
    r.finish_answer(RequestId(1)).unwrap();
    r.handle_input_ended();
    let frames = out(&mut r);
    assert_eq!(
        frames[0],
        f(
            0,
            2,
            B,
            FrameBody::StreamSettings(StreamSettings::new("zstd-8mb"))
        )
    );
    assert!(frames[1].stream_flags.contains(StreamFlags::ENCODED));
    assert!(frames[1].body.payload().len() < text.len() / 10);
    let mut client = ClientReactor::default();
    let id = client
        .request("get", &framegate_wire::Arguments::new(), None)
        .unwrap();
    assert_eq!(id, RequestId(1));
    for fr in frames {
        client.handle_frame(fr).unwrap();
    }
    let mut got = BytesMut::new();
    while let Some(ev) = client.poll_event() {
        if let ClientEvent::Data { data, .. } = ev {
            got.put_slice(&data);
        }
    }
    assert_eq!(got.freeze(), text);
}

#[test]
fn zstd_context_spans_requests() {
    let mut r = zstd_server();
    r.handle_frame(eos_cmd(1, B, "get")).unwrap();
    r.handle_frame(eos_cmd(3, N, "get")).unwrap();
    let _ = events(&mut r);
    // Same 4 KiB of noise-like text twice: the second answer is a back-reference.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let chunk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for id in [1, 3] {
        r.send_answer_data(RequestId(id), Bytes::from(chunk.clone()))
            .unwrap();
        r.finish_answer(RequestId(id)).unwrap();
    }
    r.handle_input_ended();
    let frames = out(&mut r);
    let first = frames[1].body.payload().len();
    let second = frames[2].body.payload().len();
    assert!(first > 3000, "noise does not compress on its own ({first})");
    assert!(
        second < 100,
        "repeat across requests compresses to a reference ({second})"
    );
}

#[test]
fn a_reactor_that_forgoes_compression_sends_nothing_encoded() {
    let mut r = zstd_server();
    r.forgo_compression();
    r.handle_frame(eos_cmd(1, B, "get")).unwrap();
    r.handle_frame(eos_cmd(3, N, "nope")).unwrap();
    let _ = events(&mut r);
    r.send_answer_data(RequestId(1), Bytes::from(vec![b'a'; 10_000]))
        .unwrap();
    r.finish_answer(RequestId(1)).unwrap();
    r.fail_command(
        RequestId(3),
        ErrorPayload::new(ErrorCode::UNKNOWN_COMMAND, "x"),
    )
    .unwrap();
    r.handle_input_ended();
    let frames = out(&mut r);
    assert!(frames.len() >= 3);
    assert!(
        frames
            .iter()
            .all(|f| !f.stream_flags.contains(StreamFlags::ENCODED)),
        "{frames:?}"
    );
    // The same answer, compressed, is a few bytes.
    let mut r = zstd_server();
    r.handle_frame(eos_cmd(1, B, "get")).unwrap();
    let _ = events(&mut r);
    r.send_answer_data(RequestId(1), Bytes::from(vec![b'a'; 10_000]))
        .unwrap();
    r.finish_answer(RequestId(1)).unwrap();
    r.handle_input_ended();
    assert!(
        out(&mut r)
            .iter()
            .any(|f| f.stream_flags.contains(StreamFlags::ENCODED))
    );
}

#[test]
fn uncompressed_frame_mixed_into_zstd_stream_passes_through() {
    let mut client = ClientReactor::default();
    let id1 = client
        .request("a", &framegate_wire::Arguments::new(), None)
        .unwrap();
    let id2 = client
        .request("b", &framegate_wire::Arguments::new(), None)
        .unwrap();
    let mut stream = OutboundStream::new(StreamId(2), Encoding::Zstd8Mb);
    let mut frames = Vec::new();
    let resp = |p: &str| {
        FrameBody::BytesResponse(BytesResponse {
            flags: BytesResponseFlags::EOS,
            payload: Bytes::copy_from_slice(p.as_bytes()),
        })
    };
    stream.prepare(id1, resp("compressed answer"), true, &mut frames);
    stream.prepare(id2, resp("raw answer"), false, &mut frames);
    assert!(!frames[2].stream_flags.contains(StreamFlags::ENCODED));
    for fr in frames {
        client.handle_frame(fr).unwrap();
    }
    let datas: Vec<Bytes> = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| {
            if let ClientEvent::Data { data, .. } = e {
                Some(data)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        datas,
        vec![Bytes::from("compressed answer"), Bytes::from("raw answer")]
    );
}

#[test]
fn zstd_request_stream_is_decoded_by_the_server() {
    let mut config = ClientConfig::default();
    config.encoding = Encoding::Zstd8Mb;
    let mut client = ClientReactor::new(config);
    let payload = Bytes::from("data ".repeat(20_000));
    client
        .request(
            "put",
            &framegate_wire::Arguments::new().with("path", "x").unwrap(),
            Some(payload.clone()),
        )
        .unwrap();
    let frames: Vec<Frame> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert!(matches!(frames[0].body, FrameBody::StreamSettings(_)));
    // The command's name and argument (a few bytes) go out as they are:
    // no compressor is made for the first 4 KiB (`framegate_wire::gain`);
    // the data is compressed, every frame of it.
    let (data, head): (Vec<&Frame>, Vec<&Frame>) = frames[1..]
        .iter()
        .partition(|fr| matches!(fr.body, FrameBody::CommandData(_)));
    assert!(
        head.iter()
            .all(|fr| !fr.stream_flags.contains(StreamFlags::ENCODED))
    );
    assert!(
        !data.is_empty()
            && data
                .iter()
                .all(|fr| fr.stream_flags.contains(StreamFlags::ENCODED))
    );
    let wire: usize = frames.iter().map(Frame::wire_len).sum();
    assert!(wire < payload.len() / 20, "compressed on the wire: {wire}");
    let mut r = deferred();
    for fr in frames {
        r.handle_frame(fr).unwrap();
    }
    let received: Vec<u8> = events(&mut r)
        .into_iter()
        .filter_map(|e| {
            if let ServerEvent::Data { data, .. } = e {
                Some(data.to_vec())
            } else {
                None
            }
        })
        .flatten()
        .collect();
    assert_eq!(received, payload.to_vec());
}

#[test]
fn garbage_in_zstd_stream_is_bad_encoding() {
    let mut r = deferred();
    let settings = f(
        0,
        1,
        B,
        FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
    );
    let junk = f(
        1,
        1,
        StreamFlags::ENCODED,
        FrameBody::CommandName(CommandName {
            flags: CommandNameFlags::EOS,
            payload: Bytes::from_static(b"\x01\x02\x03\x04garbage"),
        }),
    );
    expect_error(&mut r, vec![settings, junk], ErrorCode::BAD_ENCODING);
}

#[test]
fn zstd_bomb_is_bad_encoding_without_allocating() {
    // 64 MiB of zeros compress to a few KiB; the decoder must stop at the
    // frame limit instead of inflating them.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    assert!(bomb.len() < 65_535);
    let mut r = deferred();
    let settings = f(
        0,
        1,
        B,
        FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
    );
    let frame = f(
        1,
        1,
        StreamFlags::ENCODED,
        FrameBody::CommandData(CommandData {
            flags: DEOS,
            payload: bomb.into(),
        }),
    );
    expect_error(&mut r, vec![settings, frame], ErrorCode::BAD_ENCODING);
}

#[test]
fn zstd_window_above_8_mib_is_bad_encoding() {
    let mut cctx = zstd::stream::raw::Encoder::new(1).unwrap();
    use zstd::stream::raw::{CParameter, InBuffer, Operation, OutBuffer};
    cctx.set_parameter(CParameter::WindowLog(27)).unwrap();
    let input = vec![1u8; 100];
    let mut out_buf = vec![0u8; 1024];
    let mut ob = OutBuffer::around(&mut out_buf[..]);
    cctx.run(&mut InBuffer::around(&input), &mut ob).unwrap();
    cctx.flush(&mut ob).unwrap();
    let n = ob.pos();
    out_buf.truncate(n);
    let mut r = deferred();
    let settings = f(
        0,
        1,
        B,
        FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
    );
    let frame = f(
        1,
        1,
        StreamFlags::ENCODED,
        FrameBody::CommandName(CommandName {
            flags: CommandNameFlags::EOS,
            payload: out_buf.into(),
        }),
    );
    expect_error(&mut r, vec![settings, frame], ErrorCode::BAD_ENCODING);
}

#[test]
fn answer_encoding_can_be_switched_off_for_incompressible_data() {
    let mut r = zstd_server();
    r.handle_frame(eos_cmd(1, B, "get")).unwrap();
    let _ = events(&mut r);
    r.set_answer_encoding(RequestId(1), false).unwrap();
    r.send_answer_data(RequestId(1), Bytes::from(vec![9u8; 40_000]))
        .unwrap();
    r.finish_answer(RequestId(1)).unwrap();
    r.handle_input_ended();
    let frames = out(&mut r);
    assert!(matches!(frames[0].body, FrameBody::StreamSettings(_)));
    assert!(
        frames[1..]
            .iter()
            .all(|f| !f.stream_flags.contains(StreamFlags::ENCODED))
    );
    assert_eq!(
        frames[1..]
            .iter()
            .map(|f| f.body.payload().len())
            .sum::<usize>(),
        40_000
    );
    assert_eq!(
        r.set_answer_encoding(RequestId(9), false),
        Err(ApiMisuse::UnknownRequest(RequestId(9)))
    );
}

/// The fuzz finding (`server_reactor`, ~200k runs): a request answered
/// before its data ended stayed active forever. Minimized input:
/// `[Command{req 3, have-data, put}, Finish{req 3}, Transmit, Data{req 3,
/// eos, empty}]`, then end of input.
#[test]
fn a_request_answered_before_its_data_ended_leaves_when_the_data_ends() {
    for mut r in [immediate(), deferred()] {
        r.handle_frame(name(3, B, data_flag(), "put")).unwrap();
        let evs = events(&mut r);
        assert!(matches!(&evs[0], ServerEvent::Command(_)));
        r.finish_answer(RequestId(3)).unwrap();
        let _ = out(&mut r);
        r.handle_frame(data(3, DEOS, b"")).unwrap();
        r.handle_input_ended();
        let _ = out(&mut r);
        let _ = events(&mut r);
        assert_eq!(r.active_requests(), 0);
        assert!(r.is_done());
    }
}

/// The same over a byte stream: data keeps arriving after the answer; it
/// is discarded (no `Data` events) and the id becomes reusable.
#[test]
fn data_after_an_early_answer_is_discarded_and_the_id_freed() {
    let mut r = immediate();
    r.handle_frame(name(5, B, data_flag(), "hello")).unwrap();
    let _ = events(&mut r);
    r.send_answer_data(RequestId(5), Bytes::from_static(b"hi"))
        .unwrap();
    r.finish_answer(RequestId(5)).unwrap();
    let _ = out(&mut r);
    r.handle_frame(data(5, DCONT, b"ignored")).unwrap();
    r.handle_frame(data(5, DEOS, b"")).unwrap();
    assert!(
        events(&mut r)
            .iter()
            .all(|e| !matches!(e, ServerEvent::Data { .. })),
        "no data after the answer"
    );
    assert_eq!(r.active_requests(), 0);
    r.handle_frame(name(5, N, data_flag(), "put")).unwrap();
    assert!(matches!(&events(&mut r)[0], ServerEvent::Command(_)));
}

/// Case 1 of the resource audit: one message opened every odd stream with
/// `zstd-8mb` (a decoder with an 8 MiB window each) and took a GiB. The
/// encoded streams open at once are bounded (default 2); closing one
/// makes room again.
#[test]
fn encoded_streams_open_at_once_are_bounded() {
    let settings = |stream: u8, flags: StreamFlags| {
        f(
            0,
            stream,
            flags,
            FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
        )
    };
    let mut r = immediate();
    assert_eq!(r.config().max_encoded_streams, 2);
    r.handle_frame(settings(1, B)).unwrap();
    r.handle_frame(settings(3, B)).unwrap();
    // Identity streams cost nothing and are not counted.
    r.handle_frame(f(
        0,
        5,
        B,
        FrameBody::StreamSettings(StreamSettings::new("identity")),
    ))
    .unwrap();
    let err = r.handle_frame(settings(7, B)).unwrap_err();
    assert_eq!(err.code, ErrorCode::BAD_STREAM);
    assert!(err.message.contains("encoded streams"), "{}", err.message);

    let mut r = immediate();
    r.handle_frame(settings(1, B)).unwrap();
    r.handle_frame(settings(3, B)).unwrap();
    // A frame ending stream 3 frees its decoder.
    let mut end3 = eos_cmd(1, StreamFlags::END, "hello");
    end3.stream_id = StreamId(3);
    r.handle_frame(end3).unwrap();
    r.handle_frame(settings(5, B)).unwrap();
}
