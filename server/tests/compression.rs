//! Compression of answers over real HTTP: what is compressed, what goes
//! out as it is, and that every answer arrives exactly either way.

mod common;

use common::*;

/// Random bytes (xorshift), which zstd cannot shrink; `state` carries on.
fn random(len: usize, state: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

/// POSTs a message asking for zstd answers; its response frames and body.
async fn post_zstd(s: &TestServer, b: &mut Batch) -> (Vec<framegate_wire::Frame>, bytes::Bytes) {
    let bytes = post(
        &s.ro(),
        b.body(),
        &[("framegate-accept-encoding", "zstd-8mb")],
    )
    .await
    .bytes()
    .await
    .unwrap();
    let frames = framegate_wire::codec::decode_all(&bytes, 65_535).unwrap();
    (frames, bytes)
}

#[tokio::test]
async fn incompressible_files_are_sent_unencoded_on_a_zstd_stream() {
    let s = TestServer::start(|_| {}).await;
    let noise = random(500_000, &mut 88172645463325252);
    s.write("noise.bin", &noise);
    s.write(
        "text.txt",
        "plain words compress well ".repeat(20_000).as_bytes(),
    );
    let mut b = Batch::new();
    b.add("get", &[("path", b"noise.bin")], None);
    b.add("get", &[("path", b"text.txt")], None);
    let (frames, bytes) = post_zstd(&s, &mut b).await;
    // The answer's bytes, that is: the progress frame naming the file's
    // version before them (answers of 64 KiB and more) is small CBOR.
    assert!(
        frames
            .iter()
            .filter(|f| f.request_id.0 == 1)
            .filter(|f| matches!(f.body, framegate_wire::frame::FrameBody::BytesResponse(_)))
            .all(|f| !f
                .stream_flags
                .contains(framegate_wire::frame::StreamFlags::ENCODED)),
        "noise goes out raw"
    );
    // Its answer's bytes, that is: the small progress frame before them
    // goes out raw (no compressor is made for the first 4 KiB).
    assert!(
        frames
            .iter()
            .filter(|f| f.request_id.0 == 3)
            .filter(|f| matches!(f.body, framegate_wire::frame::FrameBody::BytesResponse(_)))
            .all(|f| f
                .stream_flags
                .contains(framegate_wire::frame::StreamFlags::ENCODED)),
        "text is compressed"
    );
    let (o, _) = b.decode(&bytes);
    assert_eq!(o[0].ok().as_ref(), &noise[..]);
    assert_eq!(o[1].ok().len(), 520_000);
}

/// Many small files, each answered whole in one frame: random ones mostly
/// go out raw once the stream has seen that compressing them gains nothing
/// (no per-file sample: that cost a zstd context per file); text ones are
/// compressed; every answer arrives exactly.
#[tokio::test]
async fn small_incompressible_answers_stop_being_compressed_and_text_ones_are_not_affected() {
    use framegate_wire::frame::{FrameBody, StreamFlags};
    let s = TestServer::start(|_| {}).await;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let files = 400;
    let mut noise = Vec::new();
    for i in 0..files {
        let body = random(2048, &mut x);
        s.write(&format!("n{i}"), &body);
        s.write(
            &format!("t{i}"),
            format!("file {i}: words that compress well. ")
                .repeat(60)
                .as_bytes(),
        );
        noise.push(body);
    }
    for (prefix, want_raw) in [("n", true), ("t", false)] {
        let mut b = Batch::new();
        let names: Vec<String> = (0..files).map(|i| format!("{prefix}{i}")).collect();
        for n in &names {
            b.add("get", &[("path", n.as_bytes())], None);
        }
        let (frames, bytes) = post_zstd(&s, &mut b).await;
        let answers: Vec<bool> = frames
            .iter()
            .filter(|f| matches!(f.body, FrameBody::BytesResponse(_)))
            .map(|f| f.stream_flags.contains(StreamFlags::ENCODED))
            .collect();
        let encoded = answers.iter().filter(|e| **e).count();
        if want_raw {
            assert!(
                encoded <= answers.len() / 4,
                "random answers encoded: {encoded} of {}",
                answers.len()
            );
        } else {
            // All but the first two (their 4,080 bytes come before the
            // stream makes its compressor, at 4 KiB: `framegate_wire::gain`).
            let raw = answers.iter().take_while(|e| !**e).count();
            assert!(
                raw == 2 && answers[raw..].iter().all(|e| *e),
                "text answers are compressed: {encoded} of {}",
                answers.len()
            );
            assert!(
                bytes.len() < files * 2100 / 4,
                "text shrinks: {}",
                bytes.len()
            );
        }
        let (o, _) = b.decode(&bytes);
        for (i, answer) in o.iter().enumerate() {
            if want_raw {
                assert_eq!(answer.ok().as_ref(), &noise[i][..]);
            } else {
                assert_eq!(
                    answer.ok().len(),
                    format!("file {i}: words that compress well. ").len() * 60
                );
            }
        }
    }
}

/// A large text answer that passed its own sample is compressed even when
/// small random answers before it made the stream stop compressing the
/// rest (an attack on the stream's gain: a 1 MiB log went out raw).
#[tokio::test]
async fn a_sampled_text_answer_is_compressed_after_small_random_ones() {
    use framegate_wire::frame::{FrameBody, StreamFlags};
    let s = TestServer::start(|_| {}).await;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let thumbs = 80;
    for i in 0..thumbs {
        s.write(&format!("thumb{i}"), &random(20 * 1024, &mut x));
    }
    let log: String = (0..20_000)
        .map(|i| {
            format!(
                "2026-11-27 05:{:02}:{:02} request {i} served in 3 ms\n",
                i / 60 % 60,
                i % 60
            )
        })
        .collect();
    s.write("server.log", log.as_bytes());
    let mut b = Batch::new();
    for i in 0..thumbs {
        b.add("get", &[("path", format!("thumb{i}").as_bytes())], None);
    }
    let log_slot = b.add("get", &[("path", b"server.log")], None);
    let (frames, bytes) = post_zstd(&s, &mut b).await;
    let log_id = (2 * log_slot + 1) as u16;
    let log_frames: Vec<_> = frames
        .iter()
        .filter(|f| f.request_id.0 == log_id)
        .filter(|f| matches!(f.body, FrameBody::BytesResponse(_)))
        .collect();
    assert!(!log_frames.is_empty());
    assert!(
        log_frames
            .iter()
            .all(|f| f.stream_flags.contains(StreamFlags::ENCODED)),
        "every frame of the log is compressed"
    );
    let log_wire: usize = log_frames.iter().map(|f| f.wire_len()).sum();
    assert!(
        log_wire < log.len() / 5,
        "the log takes {log_wire} bytes on the wire for {} raw",
        log.len()
    );
    let (o, _) = b.decode(&bytes);
    assert_eq!(o[log_slot].ok().as_ref(), log.as_bytes());
}
