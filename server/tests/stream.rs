//! The byte-stream binding (§8) over raw TCP: preamble handling and clients
//! that vanish mid-request.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use framegate_server::serve_tcp;
use framegate_server::{Gateway, GatewayConfig, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn tcp_server(dir: &std::path::Path) -> (String, CancellationToken) {
    let mut config = GatewayConfig::new(dir);
    config.allow_writes = true;
    let gateway = Gateway::new(config, Registry::files()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(gateway, listener, stop.clone()));
    (addr, stop)
}

async fn exchange(addr: &str, send: &[u8]) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(send).await.unwrap();
    // End of input: the server answers what it has, then closes.
    sock.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn unknown_preambles_are_refused_with_a_line_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = tcp_server(dir.path()).await;
    assert_eq!(
        exchange(&addr, b"GET / HTTP/1.1\r\n\r\n").await,
        "framegate/1 error unsupported-protocol\n"
    );
    assert_eq!(
        exchange(&addr, b"SSH-2.0-OpenSSH_9.2\r\n").await,
        "framegate/1 error unsupported-protocol\n"
    );
    assert_eq!(
        exchange(&addr, b"framegate/2 accept-encoding=identity\n").await,
        "framegate/1 error unsupported-version\n"
    );
    // A good preamble, then end of input: ok, and a clean close.
    assert_eq!(
        exchange(&addr, b"framegate/1 accept-encoding=zstd-8mb,identity\n").await,
        "framegate/1 ok\n"
    );
}

#[tokio::test]
async fn half_sent_frame_then_disconnect_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), b"old").unwrap();
    let (addr, _stop) = tcp_server(dir.path()).await;
    let mut batch = Batch::new();
    batch.add("put", &[("path", b"keep.txt")], Some(&vec![7u8; 300_000]));
    let body = batch.body();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"framegate/1\n").await.unwrap();
    // Everything but the last few bytes: the last data frame is cut in half.
    sock.write_all(&body[..body.len() - 10]).await.unwrap();
    let mut ok = [0u8; 15];
    sock.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"framegate/1 ok\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Uploads are staged in the private area, never beside their target.
    let staging = || {
        std::fs::read_dir(dir.path().join(".framegate/staging"))
            .unwrap()
            .count()
    };
    assert_eq!(staging(), 1, "the upload was being staged");
    drop(sock);
    for _ in 0..50 {
        if staging() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(staging(), 0, "staging file removed");
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".framegate" && n != "keep.txt")
        .collect();
    assert!(beside.is_empty(), "nothing beside the target: {beside:?}");
    assert_eq!(std::fs::read(dir.path().join("keep.txt")).unwrap(), b"old");
}

#[tokio::test]
async fn answers_go_out_while_the_client_is_still_sending() {
    // Immediate mode: the answer to the first request arrives before the
    // second request is even complete.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"first").unwrap();
    let (addr, _stop) = tcp_server(dir.path()).await;
    let mut batch = Batch::new();
    batch.add("get", &[("path", b"a")], None);
    let first = batch.body();
    batch
        .client
        .start_request("put", &args(&[("path", b"b")]), true)
        .unwrap();
    let mut second = BytesMut::new();
    batch.client.write_transmit(&mut second);
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"framegate/1\n").await.unwrap();
    sock.write_all(&first).await.unwrap();
    sock.write_all(&second).await.unwrap();
    let mut buf = vec![0u8; 15 + 8 + 5];
    tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf.ends_with(b"first"), "{buf:?}");
}

#[tokio::test]
async fn requests_with_data_for_commands_that_take_none_end_their_sessions() {
    // `hello` (and `get`) read no data: sent with `have-data` and an empty
    // `eos`, they are answered and the session ends when the peer closes —
    // 50 such connections, none left open.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"A").unwrap();
    let (addr, _stop) = tcp_server(dir.path()).await;
    let mut sessions = Vec::new();
    for i in 0..50 {
        let addr = addr.clone();
        sessions.push(tokio::spawn(async move {
            let mut batch = Batch::new();
            if i % 2 == 0 {
                batch.add("hello", &[], Some(b""));
            } else {
                batch.add("get", &[("path", b"a")], Some(b"ignored"));
            }
            let body = batch.body();
            let mut send = b"framegate/1\n".to_vec();
            send.extend_from_slice(&body);
            let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
            sock.write_all(&send).await.unwrap();
            sock.shutdown().await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out))
                .await
                .expect("the server closed the session")
                .unwrap();
            let frames = out.get(15..).unwrap_or_default();
            let (outcomes, _) = batch.decode(frames);
            assert!(
                matches!(outcomes.first(), Some(Outcome::Ok(_))),
                "{outcomes:?}"
            );
        }));
    }
    for s in sessions {
        s.await.unwrap();
    }
}

#[tokio::test]
async fn a_half_sent_request_does_not_keep_a_silent_peer_connected() {
    // Preamble, then a `command-name` announcing arguments, then silence:
    // the idle timeout still ends the session.
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::new(dir.path());
    config.idle_timeout = Duration::from_secs(1);
    let gateway = Gateway::new(config, Registry::files()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _stop = CancellationToken::new();
    tokio::spawn(serve_tcp(gateway, listener, _stop.clone()));
    let mut batch = Batch::new();
    batch
        .client
        .start_request("get", &args(&[("path", b"a")]), false)
        .unwrap();
    let mut frames = BytesMut::new();
    batch.client.write_transmit(&mut frames);
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"framegate/1\n").await.unwrap();
    // Only the command-name frame: its arguments never come.
    let name_len =
        8 + (frames[0] as usize | (frames[1] as usize) << 8 | (frames[2] as usize) << 16);
    sock.write_all(&frames[..name_len]).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out))
        .await
        .expect("closed by the idle timeout")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_stop_lets_a_request_still_arriving_finish_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop) = tcp_server(dir.path()).await;
    let mut batch = Batch::new();
    let id = batch
        .client
        .start_request("put", &args(&[("path", b"up.bin")]), true)
        .unwrap();
    batch.ids.push(id);
    let mut head = BytesMut::new();
    batch.client.write_transmit(&mut head);
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"framegate/1\n").await.unwrap();
    sock.write_all(&head).await.unwrap();
    let mut part = BytesMut::new();
    batch
        .client
        .send_data(id, bytes::Bytes::from(vec![b'a'; 100_000]), false)
        .unwrap();
    batch.client.write_transmit(&mut part);
    sock.write_all(&part).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The server is told to stop while the upload is half sent.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A new request between the upload's frames: read (the stream's
    // state is shared) but refused; then the upload's end.
    let mut rest = BytesMut::new();
    let late = batch
        .client
        .start_request("get", &args(&[("path", b"up.bin")]), false)
        .unwrap();
    batch.ids.push(late);
    batch
        .client
        .send_data(id, bytes::Bytes::from(vec![b'b'; 100_000]), true)
        .unwrap();
    batch.client.write_transmit(&mut rest);
    sock.write_all(&rest).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out))
        .await
        .expect("the session ended")
        .unwrap();
    let (outcomes, _) = batch.decode(out.get(15..).unwrap_or_default());
    assert!(matches!(outcomes[0], Outcome::Ok(_)), "{outcomes:?}");
    assert_eq!(outcomes[1].code(), "internal", "a new request is refused");
    let written = std::fs::read(dir.path().join("up.bin")).unwrap();
    assert_eq!(written.len(), 200_000);
}
