//! Server-wide budgets shared by reactors, and the bound on how far encoded
//! input may inflate: literal frames in, errors and budget counts out.

use bytes::Bytes;
use framegate_wire::frame::*;
use framegate_wire::stream::{DECODE_ALLOWANCE, Encoding, MAX_DECODE_RATIO};
use framegate_wire::{
    ARGUMENT_OVERHEAD, ClientConfig, ClientReactor, ErrorCode, ErrorPayload, FREE_REQUESTS,
    OutputMode, ServerConfig, ServerEvent, ServerReactor, SharedBudget,
};

// ---- literal frames -----------------------------------------------------------

const B: StreamFlags = StreamFlags::BEGIN;
const E: StreamFlags = StreamFlags::END;
const N: StreamFlags = StreamFlags::empty();
const ENC: StreamFlags = StreamFlags::ENCODED;

fn f(req: u16, stream: u8, sflags: StreamFlags, body: FrameBody) -> Frame {
    Frame {
        request_id: RequestId(req),
        stream_id: StreamId(stream),
        stream_flags: sflags,
        body,
    }
}

fn zstd_settings(stream: u8) -> Frame {
    f(
        0,
        stream,
        B,
        FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
    )
}

fn name(req: u16, stream: u8, sflags: StreamFlags, flags: CommandNameFlags, cmd: &[u8]) -> Frame {
    f(
        req,
        stream,
        sflags,
        FrameBody::CommandName(CommandName {
            flags,
            payload: Bytes::copy_from_slice(cmd),
        }),
    )
}

fn arg(req: u16, flags: CommandArgumentFlags, key: &str, declared: u16, part: &[u8]) -> Frame {
    let mut p = Vec::new();
    p.extend_from_slice(&(key.len() as u16).to_le_bytes());
    p.extend_from_slice(&declared.to_le_bytes());
    p.extend_from_slice(key.as_bytes());
    p.extend_from_slice(part);
    f(
        req,
        1,
        N,
        FrameBody::CommandArgument(CommandArgument {
            flags,
            payload: p.into(),
        }),
    )
}

fn data(req: u16, sflags: StreamFlags, payload: impl Into<Bytes>) -> Frame {
    f(
        req,
        1,
        sflags,
        FrameBody::CommandData(CommandData {
            flags: CommandDataFlags::CONTINUATION,
            payload: payload.into(),
        }),
    )
}

// zstd (RFC 8878) by hand: a frame header declaring an 8 MiB window, then
// blocks. A raw block carries its bytes; an RLE block is 4 bytes that
// decode to `size` copies of one byte.
const ZSTD_HEADER: [u8; 6] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, (23 - 10) << 3];

fn block(kind: u32, size: u32) -> [u8; 3] {
    let h = (size << 3) | (kind << 1);
    [h as u8, (h >> 8) as u8, (h >> 16) as u8]
}
fn raw_block(content: &[u8]) -> Vec<u8> {
    let mut b = block(0, content.len() as u32).to_vec();
    b.extend_from_slice(content);
    b
}
fn rle_block(byte: u8, size: u32) -> Vec<u8> {
    let mut b = block(1, size).to_vec();
    b.push(byte);
    b
}

/// Stream 1 as zstd, then an encoded `put` with data (the zstd frame's
/// header and a raw block of the name).
fn encoded_upload_start() -> Vec<Frame> {
    let mut first = ZSTD_HEADER.to_vec();
    first.extend(raw_block(b"put"));
    vec![
        zstd_settings(1),
        f(
            1,
            1,
            ENC,
            FrameBody::CommandName(CommandName {
                flags: CommandNameFlags::HAVE_DATA,
                payload: first.into(),
            }),
        ),
    ]
}

// ---- harness ------------------------------------------------------------------

fn reactor(c: impl FnOnce(&mut ServerConfig)) -> ServerReactor {
    let mut config = ServerConfig::default();
    c(&mut config);
    ServerReactor::new(config, OutputMode::Immediate, Encoding::Identity)
}

fn events(r: &mut ServerReactor) -> Vec<ServerEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// (request id, code, message) of every error-response the reactor sends.
fn errors(r: &mut ServerReactor) -> Vec<(u16, String, String)> {
    std::iter::from_fn(|| r.poll_transmit())
        .filter_map(|fr| match &fr.body {
            FrameBody::ErrorResponse(e) => {
                let p = ErrorPayload::decode(&e.payload).unwrap();
                Some((fr.request_id.0, p.code.to_string(), p.message))
            }
            _ => None,
        })
        .collect()
}

// ---- decoders -----------------------------------------------------------------

#[test]
fn a_server_wide_decoder_budget_refuses_the_stream_past_it_until_one_ends() {
    let decoders = SharedBudget::new(1);
    let with_budget = |c: &mut ServerConfig| c.decoder_budget = Some(decoders.clone());
    let mut first = reactor(with_budget);
    let mut second = reactor(with_budget);

    first.handle_frame(zstd_settings(1)).unwrap();
    assert_eq!(decoders.in_use(), 1);
    // Identity streams hold no decoder and take nothing.
    second
        .handle_frame(f(
            0,
            3,
            B,
            FrameBody::StreamSettings(StreamSettings::new("identity")),
        ))
        .unwrap();
    let err = second.handle_frame(zstd_settings(1)).unwrap_err();
    assert_eq!(err.code, ErrorCode::TOO_MANY_REQUESTS);
    assert!(
        err.message.contains("too many compressed streams") && err.message.contains("identity"),
        "{}",
        err.message
    );
    assert!(second.is_errored());
    // The client reads it as a connection-level protocol error.
    let sent = errors(&mut second);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1.as_str()), (0, "too-many-requests"));
    assert_eq!(decoders.in_use(), 1);

    // The first stream ends: its decoder and its unit go.
    first
        .handle_frame(name(1, 1, E, CommandNameFlags::EOS, b"hello"))
        .unwrap();
    assert_eq!(decoders.in_use(), 0);
    let mut third = reactor(with_budget);
    third.handle_frame(zstd_settings(1)).unwrap();
    assert_eq!(decoders.in_use(), 1);
    // The per-message limit still applies first, with its own error.
    let mut own = reactor(|c| {
        c.decoder_budget = Some(SharedBudget::new(10));
        c.max_encoded_streams = 1;
    });
    own.handle_frame(zstd_settings(1)).unwrap();
    assert_eq!(
        own.handle_frame(zstd_settings(3)).unwrap_err().code,
        ErrorCode::BAD_STREAM
    );
}

#[test]
fn decoder_units_come_back_when_the_reactor_drops_errs_or_input_ends() {
    let decoders = SharedBudget::new(8);
    let with_budget = |c: &mut ServerConfig| c.decoder_budget = Some(decoders.clone());

    let mut dropped = reactor(with_budget);
    dropped.handle_frame(zstd_settings(1)).unwrap();
    dropped.handle_frame(zstd_settings(3)).unwrap();
    assert_eq!(decoders.in_use(), 2);
    drop(dropped);
    assert_eq!(decoders.in_use(), 0);

    // An errored reactor takes no more input: its decoders go at once,
    // though it lives on to send its answers.
    let mut errored = reactor(with_budget);
    errored.handle_frame(zstd_settings(1)).unwrap();
    errored
        .handle_frame(name(0, 1, N, CommandNameFlags::EOS, b"get"))
        .unwrap_err();
    assert_eq!(decoders.in_use(), 0);

    let mut ended = reactor(with_budget);
    ended.handle_frame(zstd_settings(1)).unwrap();
    ended
        .handle_frame(name(1, 1, N, CommandNameFlags::EOS, b"get"))
        .unwrap();
    assert_eq!(decoders.in_use(), 1);
    ended.handle_input_ended();
    assert_eq!(decoders.in_use(), 0);
    assert_eq!(ended.active_requests(), 1, "the request still runs");
}

// ---- held arguments -----------------------------------------------------------

#[test]
fn held_argument_bytes_are_shared_between_reactors_and_refused_as_too_large() {
    let held = SharedBudget::new(1000);
    let with_budget = |c: &mut ServerConfig| c.held_argument_budget = Some(held.clone());
    let mut a = reactor(with_budget);
    let mut b = reactor(with_budget);
    let value = [b'v'; 599];
    // An argument costs its name, its value and ARGUMENT_OVERHEAD.
    let cost = |name: usize, value: usize| name + value + ARGUMENT_OVERHEAD;

    a.handle_frame(name(1, 1, B, CommandNameFlags::HAVE_ARGS, b"get"))
        .unwrap();
    a.handle_frame(arg(1, CommandArgumentFlags::EOA, "p", 599, &value))
        .unwrap();
    let _ = events(&mut a);
    assert_eq!(held.in_use(), cost(1, 599), "name, value and overhead");

    // B is far within its own 8 MiB, but the server holds 696 of 1000: a
    // value of which 300 bytes arrived does not fit (its declared length
    // is not charged: bytes are, as they come).
    b.handle_frame(name(1, 1, B, CommandNameFlags::HAVE_ARGS, b"get"))
        .unwrap();
    let err = b
        .handle_frame(arg(
            1,
            CommandArgumentFlags::CONTINUATION,
            "p",
            5000,
            &[b'v'; 300],
        ))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TOO_LARGE);
    assert!(
        err.message.contains("over all its clients"),
        "{}",
        err.message
    );
    // Answered on the request, like the per-message limit.
    let sent = errors(&mut b);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1.as_str()), (1, "too-large"));
    assert_eq!(held.in_use(), cost(1, 599));

    // What is left fits exactly.
    let rest = 1000 - cost(1, 599) - cost(1, 0);
    let mut c = reactor(with_budget);
    c.handle_frame(name(1, 1, B, CommandNameFlags::HAVE_ARGS, b"get"))
        .unwrap();
    c.handle_frame(arg(
        1,
        CommandArgumentFlags::EOA,
        "p",
        rest as u16,
        &value[..rest],
    ))
    .unwrap();
    assert_eq!(held.in_use(), 1000);

    // Answering A's request gives its share back.
    a.send_answer_data(RequestId(1), Bytes::from_static(b"ok"))
        .unwrap();
    a.finish_answer(RequestId(1)).unwrap();
    assert_eq!(held.in_use(), 1000 - cost(1, 599));
    // Dropping C (its request unanswered) gives back the rest.
    drop(c);
    assert_eq!(held.in_use(), 0);
}

#[test]
fn requests_cut_off_by_end_of_input_give_their_argument_bytes_back() {
    let held = SharedBudget::new(1 << 20);
    let mut r = reactor(|c| c.held_argument_budget = Some(held.clone()));
    r.handle_frame(name(1, 1, B, CommandNameFlags::HAVE_ARGS, b"get"))
        .unwrap();
    r.handle_frame(arg(1, CommandArgumentFlags::CONTINUATION, "p", 5000, b"x"))
        .unwrap();
    // Declared 5,000, arrived 1: a value declared long and never sent
    // holds only what came.
    assert_eq!(held.in_use(), 1 + 1 + ARGUMENT_OVERHEAD);
    r.handle_input_ended();
    assert_eq!(errors(&mut r)[0].1, "incomplete-request");
    assert_eq!(held.in_use(), 0);
}

// ---- held requests ------------------------------------------------------------

#[test]
fn held_requests_past_a_free_share_are_shared_between_reactors() {
    let held = SharedBudget::new(10);
    let with_budget = |c: &mut ServerConfig| c.held_request_budget = Some(held.clone());
    let mut a = reactor(with_budget);
    let mut b = reactor(with_budget);
    let get = |id: u16| {
        name(
            id,
            1,
            if id == 1 { B } else { N },
            CommandNameFlags::EOS,
            b"get",
        )
    };
    // A's first FREE_REQUESTS cost nothing; ten more take the budget.
    let ids: Vec<u16> = (0..FREE_REQUESTS + 10).map(|i| 2 * i as u16 + 1).collect();
    for &id in &ids {
        a.handle_frame(get(id)).unwrap();
    }
    assert_eq!(held.in_use(), 10);
    // B still gets its free share, and no more.
    for &id in &ids[..FREE_REQUESTS] {
        b.handle_frame(get(id)).unwrap();
    }
    let err = b.handle_frame(get(ids[FREE_REQUESTS])).unwrap_err();
    assert_eq!(err.code, ErrorCode::TOO_MANY_REQUESTS);
    assert!(err.message.contains("over all its"), "{}", err.message);
    // A request of A answered and sent gives one unit back.
    let _ = events(&mut a);
    a.finish_answer(RequestId(1)).unwrap();
    a.handle_input_ended();
    while a.poll_transmit().is_some() {}
    assert_eq!(held.in_use(), 9);
    drop(a);
    assert_eq!(held.in_use(), 0);
}

// ---- amplification ------------------------------------------------------------

#[test]
fn rle_frames_inflating_past_the_allowance_and_ratio_are_bad_encoding() {
    // Each data frame is one 4-byte RLE block decoding to a full frame.
    let per_frame = 65_535u64;
    let fit = DECODE_ALLOWANCE / per_frame;
    assert_eq!(fit, 256);
    let mut r = reactor(|_| {});
    for frame in encoded_upload_start() {
        r.handle_frame(frame).unwrap();
    }
    for i in 0..fit {
        r.handle_frame(data(1, ENC, rle_block(b'b', per_frame as u32)))
            .unwrap_or_else(|e| panic!("frame {i}: {e}"));
    }
    assert_eq!(r.decoded_bytes(), 3 + fit * per_frame);
    let err = r
        .handle_frame(data(1, ENC, rle_block(b'b', per_frame as u32)))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BAD_ENCODING);
    assert!(
        err.message
            .contains(&format!("at most {MAX_DECODE_RATIO} times"))
            && err.message.contains("unencoded"),
        "{}",
        err.message
    );
    assert!(r.is_errored());
    let data_events = events(&mut r)
        .iter()
        .filter(|e| matches!(e, ServerEvent::Data { .. }))
        .count() as u64;
    assert_eq!(
        data_events, fit,
        "the refused frame's bytes never reach the command"
    );
}

#[test]
fn unencoded_frames_on_a_zstd_stream_are_not_counted() {
    let mut r = reactor(|_| {});
    for frame in encoded_upload_start() {
        r.handle_frame(frame).unwrap();
    }
    for _ in 0..300 {
        r.handle_frame(data(1, N, vec![b'b'; 65_535])).unwrap();
    }
    assert_eq!(r.decoded_bytes(), 3);
}

#[test]
fn ordinary_content_decodes_past_the_allowance() {
    // 20 MiB of text that compresses like prose (a few times), through the
    // client's own encoder: well within the ratio.
    let mut config = ClientConfig::default();
    config.encoding = Encoding::Zstd8Mb;
    let mut client = ClientReactor::new(config);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let words = [
        "frame ",
        "stream ",
        "the ",
        "server ",
        "decodes ",
        "a ",
        "client ",
        "request ",
        "of ",
        "bytes ",
        "and ",
        "answers\n",
    ];
    let mut text = String::with_capacity(20 << 20);
    while text.len() < 20 << 20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        text.push_str(words[(seed % words.len() as u64) as usize]);
        if seed.is_multiple_of(7) {
            text.push_str(&(seed % 100_000).to_string());
        }
    }
    client
        .request(
            "put",
            &framegate_wire::Arguments::new().with("path", "x").unwrap(),
            Some(Bytes::from(text.clone())),
        )
        .unwrap();
    let mut r = reactor(|_| {});
    let mut received = 0usize;
    while let Some(frame) = client.poll_transmit() {
        r.handle_frame(frame).unwrap();
        for e in events(&mut r) {
            if let ServerEvent::Data { data, .. } = e {
                received += data.len();
            }
        }
    }
    assert_eq!(received, text.len());
    assert!(r.decoded_bytes() > DECODE_ALLOWANCE);
}
