//! Hostile suite, the sum of the memory budgets (docs/resources.md, the
//! sixth attack's F3): each kind of memory a client can make the server
//! hold has its own cap, and the caps add up past what a small machine
//! has; decoders filled by byte streams plus requests held by HTTP/2
//! non-readers once peaked at 393 MiB. Every kind now also draws on one
//! `--memory-budget` in bytes, at its worst-case cost, and a kind whose
//! share is taken by the others acts as at its own cap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::BytesMut;
use framegate_e2e::hostile::*;
use framegate_e2e::*;
use framegate_wire::frame::{StreamFlags, StreamSettings};
use framegate_wire::{Frame, FrameBody, RequestId, StreamId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A byte-stream session that opened one `zstd-8mb` client stream and
/// keeps it open: the server holds a decoder for it (charged at
/// `DECODER_COST`, 8.375 MiB, whatever it decoded so far). With `confirm`,
/// a `get` follows and is answered: the server read the settings before.
async fn decoding_session(port: u16, confirm: bool) -> tokio::net::TcpStream {
    let mut sock = stream_session(port).await;
    let mut out = BytesMut::new();
    Frame {
        request_id: RequestId::CONNECTION,
        stream_id: StreamId(3),
        stream_flags: StreamFlags::BEGIN,
        body: FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
    }
    .encode(&mut out)
    .unwrap();
    if confirm {
        out.extend_from_slice(&gets(1, b"small"));
    }
    sock.write_all(&out).await.unwrap();
    if confirm {
        read_answers(&mut sock, 1).await.unwrap();
    }
    sock
}

/// Everything the server sends on `sock` until it closes it (or `limit`).
async fn read_to_close(sock: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(limit, sock.read_to_end(&mut all)).await;
    all
}

/// A message of `n` `get`s of a small file, read whole: how many were
/// answered, and how many requests or protocol errors (of the message)
/// said `too-many-requests`.
async fn big_message(gw: &Gateway, n: usize) -> (usize, usize) {
    let mut batch = Batch::new();
    for _ in 0..n {
        batch.add("get", &[("path", b"small")], None);
    }
    let bytes = post_message(&message_client(), &ro(gw), TOKEN, batch.take_body().into())
        .await
        .unwrap();
    let outcomes = batch.decode(&bytes);
    let ok = outcomes.iter().filter(|o| o.code().is_none()).count();
    let frames = framegate_wire::codec::decode_all(&bytes, 1 << 20).unwrap();
    let refused = outcomes
        .iter()
        .filter_map(|o| o.code())
        .chain(protocol_errors(&frames).iter().map(String::as_str))
        .filter(|c| *c == "too-many-requests")
        .count();
    (ok, refused)
}

/// Three decoders (3 × 8.375 MiB) of a 25.3 MiB memory budget leave no
/// room for a fourth, though `--max-decoding-streams` (16) does, and room
/// for about 170 held requests (at 1,152 bytes) beyond a message's free
/// 64, which a 4,096-request message passes (the request past it is
/// refused; measured: the 218th); once the decoders' sessions end, both
/// fit again.
#[test]
fn decoders_and_held_requests_share_one_memory_budget() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        site.write("small", b"hello\n");
        let (gw, port) = site.gateway_tcp(&["--memory-budget", "26545472"]);
        let (ok, refused) = big_message(&gw, 4096).await;
        assert_eq!((ok, refused), (4096, 0), "alone, the message fits");
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(decoding_session(port, true).await);
        }
        let mut fourth = decoding_session(port, false).await;
        let answer = read_to_close(&mut fourth, Duration::from_secs(10)).await;
        let frames = framegate_wire::codec::decode_all(&answer, 1 << 20).unwrap();
        let errors = protocol_errors(&frames);
        let (ok_during, refused_during) = big_message(&gw, 4096).await;
        report(
            "F3-one-memory-budget",
            &[
                ("decoders_held", "3".into()),
                ("fourth_decoder", format!("{errors:?}")),
                ("message_ok", ok_during.to_string()),
                ("message_refused", refused_during.to_string()),
            ],
        );
        assert_eq!(errors, ["too-many-requests"], "the fourth decoder");
        assert!(
            refused_during >= 1 && (64..4096).contains(&ok_during),
            "{ok_during} answered, {refused_during} refused"
        );
        // A small message needs no budget and still goes through.
        assert_eq!(big_message(&gw, 64).await, (64, 0));
        // The sessions end: their decoders go back (once the server has
        // seen the close).
        drop(held);
        let mut after = (0, 0);
        for _ in 0..50 {
            after = big_message(&gw, 4096).await;
            if after == (4096, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(after, (4096, 0), "after the decoders' sessions ended");
        let _fourth_now_fits = decoding_session(port, true).await;
        bystander(&gw).await;
    });
}

/// A memory budget far below what anything asks (64 KiB: no decoder, no
/// compressor, no output charge fits) slows nothing to a halt: a 4 MiB
/// upload goes through a piece at a time, its download a free chunk at a
/// time, compressed answers come unencoded, and a message of 64 requests
/// (the free share) is answered whole.
#[test]
fn a_spent_memory_budget_slows_nothing_to_a_halt() {
    run(Duration::from_secs(120), async {
        use framegate_client::{Options, Transport};
        let site = Site::new();
        site.write("small", b"hello\n");
        let gw = site.gateway(&["--memory-budget", "65536"]);
        let mut options = Options::default();
        options.token = Some(TOKEN.to_string());
        assert!(options.compress, "asks for compressed answers");
        let t = Transport::open(&format!("{}/", gw.url()), options)
            .await
            .unwrap();
        let data = noise(4 << 20, 7);
        t.put("big.bin", data.clone(), None).await.unwrap();
        assert_eq!(t.get("big.bin").await.unwrap().as_ref(), &data[..]);
        let text = b"compressible ".repeat(200_000);
        t.put("text", text.clone(), None).await.unwrap();
        assert_eq!(t.get("text").await.unwrap().as_ref(), &text[..]);
        assert_eq!(big_message(&gw, 64).await, (64, 0));
        bystander(&gw).await;
    });
}
