//! The server-wide budgets every message's reactor shares: zstd decoders
//! (`--max-decoding-streams`) and argument bytes held by unanswered
//! requests (`--max-held-argument-bytes`). Over raw TCP byte streams, so a
//! connection can hold its share while another asks for more.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use framegate_server::{Gateway, GatewayConfig, Registry, serve_tcp};
use framegate_wire::frame::*;
use framegate_wire::{ErrorPayload, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

async fn tcp_server(
    configure: impl FnOnce(&mut GatewayConfig),
) -> (Arc<Gateway>, String, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::new(dir.path());
    configure(&mut config);
    let gateway = Gateway::new(config, Registry::files()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(gateway.clone(), listener, stop.clone()));
    (gateway, addr, stop, dir)
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::from(&b"framegate/1 accept-encoding=identity\n"[..]);
    for frame in frames {
        frame.encode(&mut out).unwrap();
    }
    out.to_vec()
}

fn f(req: u16, sflags: StreamFlags, body: FrameBody) -> Frame {
    Frame {
        request_id: RequestId(req),
        stream_id: StreamId(1),
        stream_flags: sflags,
        body,
    }
}

fn zstd_settings() -> Frame {
    f(
        0,
        StreamFlags::BEGIN,
        FrameBody::StreamSettings(StreamSettings::new("zstd-8mb")),
    )
}

/// Request 1, `get` with an argument `p` declaring 60,000 bytes of which
/// `sent` arrive: it holds them (and `ARGUMENT_OVERHEAD` and its name) and
/// never completes.
fn holding_request(sent: usize) -> Vec<Frame> {
    let mut p = Vec::new();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&60_000u16.to_le_bytes());
    p.push(b'p');
    p.extend(std::iter::repeat_n(b'x', sent));
    vec![
        f(
            1,
            StreamFlags::BEGIN,
            FrameBody::CommandName(CommandName {
                flags: CommandNameFlags::HAVE_ARGS,
                payload: Bytes::from_static(b"get"),
            }),
        ),
        f(
            1,
            StreamFlags::empty(),
            FrameBody::CommandArgument(CommandArgument {
                flags: CommandArgumentFlags::CONTINUATION,
                payload: p.into(),
            }),
        ),
    ]
}

/// Sends `bytes` and reads until the server closes: (request id, code,
/// message) of each error-response.
async fn refused(addr: &str, bytes: &[u8]) -> Vec<(u16, String, String)> {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out))
        .await
        .expect("the server ends a connection after a protocol error")
        .unwrap();
    let line = out.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert_eq!(&out[..line], b"framegate/1 ok\n");
    let mut buf = BytesMut::from(&out[line..]);
    let mut decoder = FrameDecoder::new(65_535);
    let mut errors = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        if let FrameBody::ErrorResponse(e) = &frame.body {
            let p = ErrorPayload::decode(&e.payload).unwrap();
            errors.push((frame.request_id.0, p.code.to_string(), p.message));
        }
    }
    errors
}

/// Waits (a little) for a count that a closing connection brings down.
async fn settles(count: impl Fn() -> usize, want: usize) {
    for _ in 0..200 {
        if count() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(), want);
}

#[tokio::test]
async fn a_decoder_past_the_server_budget_is_refused_until_one_closes() {
    let (gw, addr, _stop, _dir) = tcp_server(|c| c.max_decoding_streams = 1).await;
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    holder.write_all(&wire(&[zstd_settings()])).await.unwrap();
    settles(|| gw.decoding_streams(), 1).await;

    let errors = refused(&addr, &wire(&[zstd_settings()])).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (id, code, message) = &errors[0];
    assert_eq!((*id, code.as_str()), (0, "too-many-requests"));
    assert!(message.contains("too many compressed streams"), "{message}");

    // The holder goes: its decoder's unit comes back, the next one fits.
    drop(holder);
    settles(|| gw.decoding_streams(), 0).await;
    let mut next = TcpStream::connect(&addr).await.unwrap();
    next.write_all(&wire(&[zstd_settings()])).await.unwrap();
    settles(|| gw.decoding_streams(), 1).await;
}

#[tokio::test]
async fn argument_bytes_held_over_all_connections_are_bounded() {
    let (gw, addr, _stop, _dir) = tcp_server(|c| c.max_held_argument_bytes = 1000).await;
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    holder
        .write_all(&wire(&holding_request(600)))
        .await
        .unwrap();
    let holds = 1 + 600 + framegate_wire::ARGUMENT_OVERHEAD;
    settles(|| gw.held_argument_bytes(), holds).await;

    // Well within its own connection's 8 MiB, but not within the server's.
    let errors = refused(&addr, &wire(&holding_request(500))).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (id, code, message) = &errors[0];
    assert_eq!((*id, code.as_str()), (1, "too-large"));
    assert!(message.contains("over all its clients"), "{message}");
    assert_eq!(gw.held_argument_bytes(), holds);

    drop(holder);
    settles(|| gw.held_argument_bytes(), 0).await;
}

#[test]
fn the_flags_are_documented_and_zero_is_refused() {
    let help = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--max-decoding-streams"), "{text}");
    assert!(text.contains("--max-held-argument-bytes"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args(["serve", "--max-decoding-streams", "0"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad setting is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-decoding-streams must be at least 1"),
        "{err}"
    );

    // The same settings as TOML keys.
    let config = dir.path().join("framegate.toml");
    std::fs::write(&config, "max-held-argument-bytes = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad setting is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-held-argument-bytes must be at least 1"),
        "{err}"
    );

    // The memory budget: below its minimum, a usage error (flag or key).
    std::fs::write(&config, "memory-budget = 1000\n").unwrap();
    for args in [
        vec!["serve", "--memory-budget", "1000"],
        vec!["serve", "--config", config.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
            .args(&args)
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--memory-budget must be at least 16777216"),
            "{err}"
        );
    }
}

/// A memory budget sets the default connection and message bounds that go
/// with it: what a quarter and an eighth of it reserve, at most what the
/// descriptor limit allows.
#[test]
fn a_memory_budget_sizes_the_default_connections_and_messages() {
    use framegate_server::{GatewayConfig, budgets_for, connections_for, fd_limit, messages_for};
    let fds = budgets_for(fd_limit());
    let default = GatewayConfig::new("/nonexistent");
    assert_eq!(
        (default.max_connections, default.max_messages),
        (fds.connections.min(256), fds.messages.min(219))
    );
    let small = GatewayConfig::new("/nonexistent").with_memory_budget(32 << 20);
    assert_eq!(
        (connections_for(32 << 20), messages_for(32 << 20)),
        (42, 36)
    );
    assert_eq!(
        (
            small.max_connections,
            small.max_messages,
            small.memory_budget
        ),
        (fds.connections.min(42), fds.messages.min(36), 32 << 20)
    );
    let big = GatewayConfig::new("/nonexistent").with_memory_budget(4 << 30);
    assert_eq!(
        (big.max_connections, big.max_messages),
        (fds.connections, fds.messages),
        "a large budget leaves the descriptor limit's bounds"
    );
}
