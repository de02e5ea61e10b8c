//! Every command's success and error paths over real HTTP, ordering, big
//! batches, zstd, argument continuation.

mod common;

use common::*;
use framegate_wire::ErrorKind;

#[tokio::test]
async fn hello_lists_commands_and_writability() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    let ro = hello_of(&one(&s.ro(), "hello", &[], None).await);
    assert_eq!(ro.protocol, 1);
    assert!(!ro.writable);
    assert!(ro.server.starts_with("framegate-server/"));
    for cmd in [
        "get",
        "readv",
        "has",
        "stat",
        "list_dir",
        "iter_files_recursive",
        "put",
        "append",
        "mkdir",
        "rename",
        "delete",
        "rmdir",
        "hello",
    ] {
        assert!(ro.has_command(cmd), "{cmd} listed");
    }
    assert_eq!(ro.encodings, ["zstd-8mb", "identity"]);
    assert_eq!(ro.max_frame_size, 65_535);
    assert!(hello_of(&one(&s.rw(), "hello", &[], None).await).writable);
}

#[tokio::test]
async fn get_and_its_errors() {
    let s = TestServer::start(|_| {}).await;
    s.write("a.txt", b"hello");
    s.write("big.bin", &vec![7u8; 300_000]);
    std::fs::create_dir(s.path("d")).unwrap();
    let mut b = Batch::new();
    b.add("get", &[("path", b"a.txt")], None);
    b.add("get", &[("path", b"big.bin")], None);
    b.add("get", &[("path", b"missing")], None);
    b.add("get", &[("path", b"d")], None);
    b.add("get", &[], None);
    b.add("get", &[("path", b"a.txt/x")], None);
    let (o, _) = b.send(&s.ro()).await;
    assert_eq!(o[0].ok().as_ref(), b"hello");
    assert_eq!(o[1].ok().len(), 300_000);
    assert_eq!(o[2].code(), "no-such-file");
    assert_eq!(o[3].code(), "is-a-directory");
    assert_eq!(o[4].code(), "missing-argument");
    assert_eq!(o[5].code(), "not-a-directory");
    assert!(
        matches!(&o[2], Outcome::Err(ErrorKind::Application, _, m) if m == "no such file: missing")
    );
}

#[tokio::test]
async fn readv_ranges_and_short_read() {
    let s = TestServer::start(|_| {}).await;
    s.write("n.txt", b"0123456789");
    let mut b = Batch::new();
    b.add(
        "readv",
        &[("path", b"n.txt"), ("ranges", b"0,2\n5,3\n9,1")],
        None,
    );
    b.add("readv", &[("path", b"n.txt"), ("ranges", b"8,5")], None);
    b.add("readv", &[("path", b"n.txt"), ("ranges", b"x,1")], None);
    b.add("readv", &[("path", b"n.txt")], None);
    let (o, _) = b.send(&s.ro()).await;
    assert_eq!(o[0].ok().as_ref(), b"015679");
    assert_eq!(o[1].code(), "short-read");
    assert_eq!(o[2].code(), "bad-argument");
    assert_eq!(o[3].code(), "missing-argument");
}

#[tokio::test]
async fn argument_continuation_carries_long_values() {
    let s = TestServer::start(|_| {}).await;
    s.write("n.txt", b"ab");
    // 12,000 ranges of "1,1\n" are 48,000 bytes: more than one frame.
    let ranges = "1,1\n".repeat(12_000);
    let o = one(
        &s.ro(),
        "readv",
        &[("path", b"n.txt"), ("ranges", ranges.as_bytes())],
        None,
    )
    .await;
    assert_eq!(o.ok().len(), 12_000);
    assert!(o.ok().iter().all(|&b| b == b'b'));
}

#[tokio::test]
async fn has_stat_list_and_iter() {
    let s = TestServer::start(|_| {}).await;
    s.write("b.txt", b"12345");
    s.write("a/x.txt", b"x");
    s.write("a/deep/y.txt", b"y");
    std::os::unix::fs::symlink("b.txt", s.path("link")).unwrap();
    let mut b = Batch::new();
    b.add("has", &[("path", b"b.txt")], None);
    b.add("has", &[("path", b"nope")], None);
    b.add("stat", &[("path", b"b.txt")], None);
    b.add("stat", &[("path", b"a")], None);
    b.add("stat", &[("path", b"link")], None);
    b.add("stat", &[("path", b"nope")], None);
    b.add("list_dir", &[("path", b"")], None);
    b.add("list_dir", &[("path", b"b.txt")], None);
    b.add("iter_files_recursive", &[], None);
    b.add("iter_files_recursive", &[("path", b"a")], None);
    let (o, _) = b.send(&s.ro()).await;
    assert!(o[0].cbor::<bool>());
    assert!(!o[1].cbor::<bool>());
    let stat: std::collections::BTreeMap<String, ciborium::Value> = o[2].cbor();
    assert_eq!(stat["kind"], ciborium::Value::Text("file".into()));
    assert_eq!(stat["size"], ciborium::Value::Integer(5.into()));
    assert!(stat["mtime"].as_float().unwrap() > 1.0e9);
    assert!(stat.contains_key("mode"));
    let kind = |o: &Outcome| {
        o.cbor::<std::collections::BTreeMap<String, ciborium::Value>>()["kind"].clone()
    };
    assert_eq!(kind(&o[3]), ciborium::Value::Text("dir".into()));
    assert_eq!(kind(&o[4]), ciborium::Value::Text("symlink".into()));
    assert_eq!(o[5].code(), "no-such-file");
    assert_eq!(o[6].cbor::<Vec<String>>(), ["a", "b.txt", "link"]);
    assert_eq!(o[7].code(), "not-a-directory");
    assert_eq!(
        o[8].cbor::<Vec<String>>(),
        ["a/deep/y.txt", "a/x.txt", "b.txt", "link"]
    );
    assert_eq!(o[9].cbor::<Vec<String>>(), ["deep/y.txt", "x.txt"]);
}

#[tokio::test]
async fn writes_and_their_errors() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("old.txt", b"old");
    s.write("full/f", b"");
    let mut b = Batch::new();
    b.add(
        "put",
        &[("path", b"new.txt"), ("mode", b"600")],
        Some(b"fresh"),
    );
    b.add("append", &[("path", b"new.txt")], Some(b" and more"));
    b.add("append", &[("path", b"log.txt")], Some(b"first"));
    b.add("mkdir", &[("path", b"dir")], None);
    b.add("mkdir", &[("path", b"dir")], None);
    b.add("mkdir", &[("path", b"no/such/parent")], None);
    b.add(
        "rename",
        &[("from", b"old.txt"), ("to", b"dir/moved.txt")],
        None,
    );
    b.add("rename", &[("from", b"gone"), ("to", b"x")], None);
    b.add("delete", &[("path", b"dir/moved.txt")], None);
    b.add("delete", &[("path", b"dir/moved.txt")], None);
    b.add("delete", &[("path", b"dir")], None);
    b.add("rmdir", &[("path", b"full")], None);
    b.add("rmdir", &[("path", b"dir")], None);
    b.add("put", &[("path", b"x"), ("mode", b"9z")], Some(b""));
    b.add("put", &[("path", b"")], Some(b"x"));
    b.add("put", &[("path", b"missing-dir/f")], Some(b"x"));
    let (o, _) = b.send(&s.rw()).await;
    assert_eq!(o[0].ok().as_ref(), [0xf6], "CBOR null");
    assert_eq!(o[1].cbor::<u64>(), 5);
    assert_eq!(o[2].cbor::<u64>(), 0);
    assert_eq!(std::fs::read(s.path("new.txt")).unwrap(), b"fresh and more");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(s.path("new.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(s.path("log.txt")).unwrap(), b"first");
    assert!(o[3].ok().len() == 1);
    assert_eq!(o[4].code(), "file-exists");
    assert_eq!(o[5].code(), "no-such-file");
    assert!(o[6].ok().len() == 1);
    assert_eq!(o[7].code(), "no-such-file");
    assert!(o[8].ok().len() == 1);
    assert_eq!(o[9].code(), "no-such-file");
    assert_eq!(o[10].code(), "is-a-directory");
    assert_eq!(o[11].code(), "directory-not-empty");
    assert!(o[12].ok().len() == 1);
    assert!(!s.path("dir").exists());
    assert_eq!(o[13].code(), "bad-argument");
    assert_eq!(o[14].code(), "invalid-path");
    assert_eq!(o[15].code(), "no-such-file");
    assert!(s.stray_files().is_empty());
}

#[tokio::test]
async fn ro_refuses_writes_but_answers_the_rest() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("a", b"A");
    let mut b = Batch::new();
    b.add("get", &[("path", b"a")], None);
    b.add("put", &[("path", b"a")], Some(&vec![1u8; 100_000]));
    b.add("delete", &[("path", b"a")], None);
    b.add("has", &[("path", b"a")], None);
    let (o, _) = b.send(&s.ro()).await;
    assert_eq!(o[0].ok().as_ref(), b"A");
    assert_eq!(o[1].code(), "read-only");
    assert_eq!(o[2].code(), "read-only");
    assert!(o[3].cbor::<bool>());
    assert_eq!(std::fs::read(s.path("a")).unwrap(), b"A");
}

#[tokio::test]
async fn unknown_command_is_answered() {
    let s = TestServer::start(|_| {}).await;
    assert_eq!(
        one(&s.ro(), "frobnicate", &[], None).await.code(),
        "unknown-command"
    );
}

#[tokio::test]
async fn writes_are_barriers_within_a_message() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("a", &vec![b'o'; 100_000]);
    let mut b = Batch::new();
    for round in 0..5u8 {
        b.add("get", &[("path", b"a")], None);
        b.add("has", &[("path", b"a")], None);
        b.add(
            "put",
            &[("path", b"a")],
            Some(&vec![b'0' + round; 50_000 + usize::from(round)]),
        );
    }
    b.add("get", &[("path", b"a")], None);
    let (o, _) = b.send(&s.rw()).await;
    assert_eq!(o[0].ok().len(), 100_000, "first get sees the old content");
    for round in 1..5usize {
        let got = o[round * 3].ok();
        assert_eq!(got.len(), 50_000 + round - 1);
        assert!(
            got.iter().all(|&c| c == b'0' + round as u8 - 1),
            "round {round} sees the previous put"
        );
    }
    assert!(o[15].ok().iter().all(|&c| c == b'4'));
}

#[tokio::test]
async fn four_thousand_ninety_six_requests_in_one_message() {
    let s = TestServer::start(|_| {}).await;
    for i in 0..64 {
        s.write(&format!("f{i}"), format!("file {i}").as_bytes());
    }
    let mut b = Batch::new();
    for i in 0..4096 {
        let p = format!("f{}", i % 64);
        b.add("get", &[("path", p.as_bytes())], None);
    }
    let (o, _) = b.send(&s.ro()).await;
    for (i, out) in o.iter().enumerate() {
        assert_eq!(out.ok().as_ref(), format!("file {}", i % 64).as_bytes());
    }
    let mut b = Batch::new();
    for _ in 0..4097 {
        b.add("hello", &[], None);
    }
    let (o, _) = b.send(&s.ro()).await;
    assert_eq!(o[4096].code(), "too-many-requests");
    assert!(matches!(o[4095], Outcome::Ok(_)));
}

#[tokio::test]
async fn zstd_when_asked_identity_otherwise() {
    let s = TestServer::start(|_| {}).await;
    let text = "framegate gateway answers ".repeat(5000);
    s.write("t.txt", text.as_bytes());
    for (header, compressed) in [
        (Some("zstd-8mb, identity"), true),
        (Some("br, identity"), false),
        (None, false),
    ] {
        let mut b = Batch::new();
        b.add("get", &[("path", b"t.txt")], None);
        let body = b.body();
        let extra: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("framegate-accept-encoding", *h))
            .collect();
        let bytes = post(&s.ro(), body, &extra).await.bytes().await.unwrap();
        assert_eq!(
            bytes.len() < text.len() / 10,
            compressed,
            "{header:?}: {} bytes",
            bytes.len()
        );
        let (o, _) = b.decode(&bytes);
        assert_eq!(o[0].ok().as_ref(), text.as_bytes());
    }
}

#[tokio::test]
async fn interleaved_requests_from_literal_frames() {
    use framegate_wire::frame::*;
    let s = TestServer::start(|_| {}).await;
    s.write("one", b"1");
    s.write("two", b"2");
    let f = |req: u16, sf: StreamFlags, body: FrameBody| Frame {
        request_id: RequestId(req),
        stream_id: StreamId(1),
        stream_flags: sf,
        body,
    };
    let arg = |req: u16, v: &[u8]| {
        f(
            req,
            StreamFlags::empty(),
            FrameBody::CommandArgument(CommandArgument {
                flags: CommandArgumentFlags::EOA,
                payload: CommandArgument::start_payload("path", v.len() as u16, v),
            }),
        )
    };
    let frames = vec![
        f(
            1,
            StreamFlags::BEGIN,
            FrameBody::CommandName(CommandName::new("get", CommandNameFlags::HAVE_ARGS)),
        ),
        f(
            3,
            StreamFlags::empty(),
            FrameBody::CommandName(CommandName::new("get", CommandNameFlags::HAVE_ARGS)),
        ),
        arg(3, b"two"),
        arg(1, b"one"),
    ];
    let body = framegate_wire::codec::encode_all(&frames).unwrap().freeze();
    let bytes = post(&s.ro(), body, &[]).await.bytes().await.unwrap();
    let answers = framegate_wire::codec::decode_all(&bytes, 65_535).unwrap();
    let of = |req: u16| {
        answers
            .iter()
            .find(|fr| fr.request_id.0 == req)
            .unwrap()
            .body
            .payload()
            .clone()
    };
    assert_eq!(of(1).as_ref(), b"1");
    assert_eq!(of(3).as_ref(), b"2");
}

#[tokio::test]
async fn truncated_body_answers_complete_requests() {
    let s = TestServer::start(|_| {}).await;
    s.write("a", b"A");
    let mut b = Batch::new();
    b.add("get", &[("path", b"a")], None);
    b.add("get", &[("path", b"a")], None);
    let body = b.body();
    // Cut inside the second request's argument frame.
    let cut = body.slice(..body.len() - 3);
    let bytes = post(&s.ro(), cut, &[]).await.bytes().await.unwrap();
    let frames = framegate_wire::codec::decode_all(&bytes, 65_535).unwrap();
    let codes: Vec<(u16, String)> = frames
        .iter()
        .filter_map(|fr| match &fr.body {
            framegate_wire::FrameBody::ErrorResponse(e) => Some((
                fr.request_id.0,
                framegate_wire::ErrorPayload::decode(&e.payload)
                    .unwrap()
                    .code
                    .to_string(),
            )),
            _ => None,
        })
        .collect();
    assert!(codes.contains(&(0, "truncated-frame".into())), "{codes:?}");
    assert!(
        codes.contains(&(3, "server-errored".into()))
            || codes.contains(&(3, "incomplete-request".into())),
        "{codes:?}"
    );
    assert!(
        frames
            .iter()
            .any(|fr| fr.request_id.0 == 1 && fr.body.payload().as_ref() == b"A")
    );

    // A body that ends cleanly between frames, inside a request.
    let mut b = Batch::new();
    b.add("get", &[("path", b"a")], None);
    let first = b.body();
    b.client
        .start_request("get", &args(&[("path", b"a")]), true)
        .unwrap();
    let mut partial = bytes::BytesMut::from(&first[..]);
    b.client.write_transmit(&mut partial);
    let bytes = post(&s.ro(), partial.freeze(), &[])
        .await
        .bytes()
        .await
        .unwrap();
    let frames = framegate_wire::codec::decode_all(&bytes, 65_535).unwrap();
    let err = frames.iter().find(|fr| fr.request_id.0 == 3).unwrap();
    let framegate_wire::FrameBody::ErrorResponse(e) = &err.body else {
        panic!()
    };
    assert_eq!(
        framegate_wire::ErrorPayload::decode(&e.payload)
            .unwrap()
            .code
            .as_str(),
        "incomplete-request"
    );
    assert!(
        frames
            .iter()
            .any(|fr| fr.request_id.0 == 1 && fr.body.payload().as_ref() == b"A")
    );
}

#[tokio::test]
async fn incompressible_files_are_sent_unencoded_on_a_zstd_stream() {
    let s = TestServer::start(|_| {}).await;
    let mut x: u64 = 88172645463325252;
    let noise: Vec<u8> = (0..500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    s.write("noise.bin", &noise);
    s.write(
        "text.txt",
        "plain words compress well ".repeat(20_000).as_bytes(),
    );
    let mut b = Batch::new();
    b.add("get", &[("path", b"noise.bin")], None);
    b.add("get", &[("path", b"text.txt")], None);
    let body = b.body();
    let bytes = post(&s.ro(), body, &[("framegate-accept-encoding", "zstd-8mb")])
        .await
        .bytes()
        .await
        .unwrap();
    let frames = framegate_wire::codec::decode_all(&bytes, 65_535).unwrap();
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
        let body: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
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
        let body: Vec<u8> = (0..20 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.write(&format!("thumb{i}"), &body);
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

/// `digest`: the SHA-256 of a file (read in pieces on the pool), with its
/// size and version; a version that no longer holds is `file-changed`; a
/// directory is not a file.
#[tokio::test]
async fn digest_is_the_files_sha256() {
    use sha2::{Digest, Sha256};
    let s = TestServer::start(|_| {}).await;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    s.write("big.bin", &big);
    s.write("small.txt", b"abc");
    std::fs::create_dir(s.path("d")).unwrap();
    let hex = |b: &[u8]| -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    let mut b = Batch::new();
    b.add("digest", &[("path", b"big.bin")], None);
    b.add("digest", &[("path", b"small.txt")], None);
    b.add(
        "digest",
        &[("path", b"small.txt"), ("if-match", b"not-the-version")],
        None,
    );
    b.add("digest", &[("path", b"d")], None);
    b.add("digest", &[("path", b"missing")], None);
    let (o, _) = b.send(&s.ro()).await;
    let big_d: framegate_wire::DigestAnswer = o[0].cbor();
    assert_eq!(big_d.algorithm, "sha256");
    assert_eq!(big_d.digest, hex(&big));
    assert_eq!(big_d.size, big.len() as u64);
    let small: framegate_wire::DigestAnswer = o[1].cbor();
    assert_eq!(small.digest, hex(b"abc"));
    assert_eq!(o[2].code(), "file-changed");
    assert_eq!(o[3].code(), "is-a-directory");
    assert_eq!(o[4].code(), "no-such-file");
}
