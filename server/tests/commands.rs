//! Every command's success and error paths over real HTTP, ordering, big
//! batches, argument continuation (compression: `compression.rs`).

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
