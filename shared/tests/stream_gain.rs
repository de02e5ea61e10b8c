//! A `zstd-8mb` stream stops compressing payloads that do not shrink and
//! takes it up again when they do; the receiver gets every payload back
//! either way (literal frames through the client reactor).

use bytes::Bytes;
use framegate_wire::frame::*;
use framegate_wire::gain::{GAIN_PROBE_BYTES, GAIN_SKIP_BYTES, GAIN_START_BYTES};
use framegate_wire::stream::{Encoding, OutboundStream};
use framegate_wire::{ClientEvent, ClientReactor};

/// Random bytes (xorshift64*): zstd cannot shrink them.
fn random(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn text(len: usize, i: usize) -> Bytes {
    format!("line {i}: the quick brown fox jumps over the lazy dog\n")
        .repeat(len / 40 + 1)
        .into_bytes()
        .into_iter()
        .take(len)
        .collect()
}

#[test]
fn incompressible_answers_mostly_go_out_raw_and_compressible_ones_encoded_again() {
    const N: usize = 2000;
    const LEN: usize = 1024;
    let mut client = ClientReactor::default();
    let mut stream = OutboundStream::new(StreamId(2), Encoding::Zstd8Mb);
    let mut sent = Vec::new();
    let mut frames = Vec::new();
    let mut encoded = Vec::new();
    for i in 0..2 * N {
        let payload = if i < N {
            random(LEN, i as u64 + 1)
        } else {
            text(LEN, i)
        };
        let id = client
            .request("get", &framegate_wire::Arguments::new(), None)
            .unwrap();
        let before = frames.len();
        stream.prepare(
            id,
            FrameBody::BytesResponse(BytesResponse {
                flags: BytesResponseFlags::EOS,
                payload: payload.clone(),
            }),
            true,
            &mut frames,
        );
        let last: &Frame = frames.last().unwrap();
        encoded.push(last.stream_flags.contains(StreamFlags::ENCODED));
        assert!(frames.len() > before);
        sent.push(payload);
    }
    // Random: the first few go out raw (no compressor made for them), the
    // first window is tried, then most are skipped.
    let start = (GAIN_START_BYTES as usize).div_ceil(LEN);
    let probe = (GAIN_PROBE_BYTES as usize).div_ceil(LEN);
    let random_encoded = encoded[..N].iter().filter(|e| **e).count();
    assert!(
        encoded[..start - 1].iter().all(|e| !*e),
        "none before the start"
    );
    assert!(
        encoded[start - 1..start - 1 + probe].iter().all(|e| *e),
        "first window tried"
    );
    assert!(
        random_encoded <= 2 * probe,
        "random payloads encoded: {random_encoded} of {N}"
    );
    // Text: once the skip runs out, every payload is encoded again.
    let skip = (GAIN_SKIP_BYTES as usize).div_ceil(LEN);
    assert!(
        encoded[N + skip..].iter().all(|e| *e),
        "text after the skip is compressed"
    );
    for f in frames {
        client.handle_frame(f).unwrap();
    }
    let got: Vec<Bytes> = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| match e {
            ClientEvent::Data { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "every payload arrives whole and in order");
}

/// Payloads the sender judged on a sample of its own (`Encode::Always`)
/// are compressed while the stream skips the others, and neither feed nor
/// end the skip.
#[test]
fn judged_payloads_are_compressed_while_the_stream_skips_the_others() {
    use framegate_wire::stream::Encode;
    const LEN: usize = 1024;
    let mut stream = OutboundStream::new(StreamId(2), Encoding::Zstd8Mb);
    let mut frames = Vec::new();
    let mut send = |stream: &mut OutboundStream, payload: Bytes, mode: Encode| {
        stream.prepare_as(
            RequestId(1),
            FrameBody::BytesResponse(BytesResponse {
                flags: BytesResponseFlags::empty(),
                payload,
            }),
            mode,
            &mut frames,
        );
        frames
            .last()
            .unwrap()
            .stream_flags
            .contains(StreamFlags::ENCODED)
    };
    // Enough random payloads to start the stream and fail a window.
    let start = (GAIN_START_BYTES + GAIN_PROBE_BYTES) as usize / LEN + 1;
    for i in 0..start {
        send(&mut stream, random(LEN, i as u64), Encode::Auto);
    }
    assert!(
        !send(&mut stream, text(LEN, 0), Encode::Auto),
        "the stream skips"
    );
    // 2 MiB of judged text: every payload compressed, the skip unchanged.
    for i in 0..2048 {
        assert!(
            send(&mut stream, text(LEN, i), Encode::Always),
            "payload {i}"
        );
    }
    assert!(
        !send(&mut stream, text(LEN, 1), Encode::Auto),
        "still skipping: judged payloads do not count"
    );
    // Judged random payloads do not start a skip of their own either.
    let mut stream = OutboundStream::new(StreamId(2), Encoding::Zstd8Mb);
    for i in 0..200 {
        send(&mut stream, random(LEN, 1000 + i), Encode::Always);
    }
    for i in 0..200 {
        assert!(send(&mut stream, text(LEN, i as usize), Encode::Auto) || i < 4);
    }
}
