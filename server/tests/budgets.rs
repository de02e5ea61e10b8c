//! The answer budgets: when a message or the server holds as many answers
//! as allowed, further commands wait — they never fail, never lose their
//! order, and never deadlock behind a write waiting for its turn.

mod common;

use std::time::Duration;

use common::*;

/// 20 KiB: above the inline threshold, so each answer holds its file open.
const FILE: usize = 20 * 1024;

fn content(i: usize) -> Vec<u8> {
    (0..FILE).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[tokio::test]
async fn tiny_budgets_keep_every_answer_and_the_order() {
    let s = TestServer::start(|c| {
        c.allow_writes = true;
        c.message_open_answers = 3;
        c.message_held_bytes = 40_000;
        c.open_answers = 4;
    })
    .await;
    for i in 0..200 {
        s.write(&format!("f{i}"), &content(i));
    }
    s.write("x", b"old");
    let mut b = Batch::new();
    for i in 0..100 {
        b.add("get", &[("path", format!("f{i}").as_bytes())], None);
    }
    let before_put = b.add("get", &[("path", b"x")], None);
    b.add("put", &[("path", b"x")], Some(b"new"));
    let after_put = b.add("get", &[("path", b"x")], None);
    for i in 100..200 {
        b.add("get", &[("path", format!("f{i}").as_bytes())], None);
    }
    b.add("delete", &[("path", b"f0")], None);
    let after_delete = b.add("get", &[("path", b"f0")], None);
    let (o, _) = tokio::time::timeout(Duration::from_secs(60), b.send(&s.rw()))
        .await
        .expect("a message under tiny budgets finishes");
    for (i, answer) in o.iter().take(100).enumerate() {
        assert_eq!(answer.ok().as_ref(), content(i).as_slice(), "f{i}");
    }
    assert_eq!(o[before_put].ok().as_ref(), b"old");
    assert_eq!(o[after_put].ok().as_ref(), b"new");
    for i in 100..200 {
        assert_eq!(
            o[after_put + 1 + i - 100].ok().as_ref(),
            content(i).as_slice()
        );
    }
    assert_eq!(o[after_delete].code(), "no-such-file");
    // Every slot came back.
    assert_eq!(s.gateway.answer_slots_free(), 4);
}

#[tokio::test]
async fn messages_wait_for_server_slots_instead_of_failing() {
    let s = TestServer::start(|c| c.open_answers = 1).await;
    for i in 0..100 {
        s.write(&format!("f{i}"), &content(i));
    }
    let send = |first: usize| {
        let url = s.ro();
        async move {
            let mut b = Batch::new();
            for i in first..first + 50 {
                b.add("get", &[("path", format!("f{i}").as_bytes())], None);
            }
            b.send(&url).await.0
        }
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send(0), send(50))
    })
    .await
    .expect("both messages finish with one server-wide slot");
    for (i, o) in a.iter().chain(b.iter()).enumerate() {
        assert_eq!(o.ok().as_ref(), content(i).as_slice(), "f{i}");
    }
    assert_eq!(s.gateway.answer_slots_free(), 1);
}

#[tokio::test]
async fn a_put_waiting_for_its_turn_does_not_block_the_reads_before_it() {
    // One open answer per message: the get ahead of the puts holds it while
    // their data is staged; the puts wait for their turn, not for the slot.
    let s = TestServer::start(|c| {
        c.allow_writes = true;
        c.message_open_answers = 1;
    })
    .await;
    s.write("a", &content(1));
    let mut b = Batch::new();
    b.add("get", &[("path", b"a")], None);
    for i in 0..8 {
        b.add(
            "put",
            &[("path", format!("p{i}").as_bytes())],
            Some(&content(i)),
        );
    }
    b.add("get", &[("path", b"p7")], None);
    let (o, _) = tokio::time::timeout(Duration::from_secs(30), b.send(&s.rw()))
        .await
        .expect("no deadlock");
    assert_eq!(o[0].ok().as_ref(), content(1).as_slice());
    assert_eq!(o[9].ok().as_ref(), content(7).as_slice());
}

#[tokio::test]
async fn a_client_that_never_reads_gives_its_slots_back() {
    let s = TestServer::start(|c| {
        c.open_answers = 8;
        c.send_timeout = Duration::from_secs(1);
    })
    .await;
    for i in 0..64 {
        s.write(&format!("f{i}"), &vec![b'z'; 1 << 20]);
    }
    let mut b = Batch::new();
    for i in 0..64 {
        b.add("get", &[("path", format!("f{i}").as_bytes())], None);
    }
    // Raw request, never read: the answers fill the socket buffers.
    let addr = s.url.trim_start_matches("http://").to_string();
    let body = b.body();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /.framegate/ro HTTP/1.1\r\nhost: x\r\ncontent-type: {0}\r\naccept: {0}\r\ncontent-length: {1}\r\n\r\n",
        framegate_wire::MEDIA_TYPE,
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &body)
        .await
        .unwrap();
    // While it holds slots, the budget is in use...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.gateway.answer_slots_free() < 8);
    // ...and after the send timeout it is all back, and others are served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.gateway.answer_slots_free() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = one(&s.ro(), "get", &[("path", b"f0")], None).await;
    assert_eq!(o.ok().len(), 1 << 20);
    drop(tcp);
}

/// Whether any answer frame of a raw message body is compressed.
fn any_encoded(body: &[u8]) -> bool {
    let mut dec = framegate_wire::FrameDecoder::default();
    let mut buf = bytes::BytesMut::from(body);
    let mut encoded = false;
    while let Some(frame) = dec.decode_eof(&mut buf).unwrap() {
        encoded |= frame
            .stream_flags
            .contains(framegate_wire::frame::StreamFlags::ENCODED);
    }
    encoded
}

#[tokio::test]
async fn past_the_compressor_budget_answers_go_out_unencoded_and_whole() {
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    for budget in [0, 1] {
        let s = TestServer::start(|c| c.max_compressing_messages = budget).await;
        s.write("t.txt", &text);
        let send = || {
            let url = s.ro();
            async move {
                let mut b = Batch::new();
                b.add("get", &[("path", b"t.txt")], None);
                let resp = post(
                    &url,
                    b.body(),
                    &[("framegate-accept-encoding", "zstd-8mb, identity")],
                )
                .await;
                let raw = resp.bytes().await.unwrap();
                let (o, _) = b.decode(&raw);
                (any_encoded(&raw), o[0].ok().clone())
            }
        };
        // Two messages at once: with one slot, one compresses and the
        // other does not; with none, neither does.
        let ((enc_a, a), (enc_b, b)) = tokio::join!(send(), send());
        assert_eq!(a.as_ref(), text.as_slice());
        assert_eq!(b.as_ref(), text.as_slice());
        let compressed = usize::from(enc_a) + usize::from(enc_b);
        if budget == 0 {
            assert_eq!(compressed, 0);
        } else {
            assert!(compressed >= 1, "a message with the slot compresses");
        }
        // The slot comes back: a later message compresses again.
        if budget == 1 {
            let (enc, _) = send().await;
            assert!(enc);
        }
    }
}

#[tokio::test]
async fn plain_gets_hold_an_answer_slot_while_their_body_is_sent() {
    let s = TestServer::start(|c| c.open_answers = 2).await;
    s.write("big", &vec![b'b'; 8 << 20]);
    s.write("small", b"tiny");
    let addr = s.url.trim_start_matches("http://").to_string();
    // Two GETs whose bodies nobody reads: each keeps its file open.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.gateway.answer_slots_free() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "slots not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third waits for a slot...
    let url = format!("{}/small", s.url);
    let third = tokio::spawn(async move { http().get(url).send().await.unwrap().text().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served past the budget");
    // ...and is served once the stalled clients leave.
    drop(stalled);
    let text = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served after the slots came back")
        .unwrap()
        .unwrap();
    assert_eq!(text, "tiny");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.gateway.answer_slots_free() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
