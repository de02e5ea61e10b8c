//! Sessions over real TCP on loopback and over a child's pipes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use framegate_client::TransportError;
use framegate_client::{Connector, Error, RunState, Session};
use framegate_server::command::{Answer, Call, CommandError, read_command};
use framegate_server::serve_tcp;
use framegate_server::{Gateway, GatewayConfig, Registry};
use framegate_wire::{Arguments, ErrorCode};
use tokio_util::sync::CancellationToken;

struct Tcp {
    addr: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
    gateway: Arc<Gateway>,
}

fn registry() -> Registry {
    let mut r = Registry::files();
    r.register(
        "sleep",
        read_command(|mut call: Call| async move {
            call.turn.wait().await?;
            let ms: u64 = call
                .arg_str("ms")?
                .parse()
                .map_err(|_| CommandError::bad("ms", "not a number"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Answer::Bytes(Bytes::from(format!("slept {ms}"))))
        }),
    );
    r
}

async fn tcp(configure: impl FnOnce(&mut GatewayConfig)) -> Tcp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"alpha").unwrap();
    let mut config = GatewayConfig::new(dir.path());
    configure(&mut config);
    let gateway = Gateway::new(config, registry()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve_tcp(gateway.clone(), listener, stop.clone()));
    Tcp {
        addr,
        stop,
        task,
        dir,
        gateway,
    }
}

fn args(pairs: &[(&str, &str)]) -> Arguments {
    let mut a = Arguments::new();
    for (k, v) in pairs {
        a.insert(k, v.to_string()).unwrap();
    }
    a
}

#[tokio::test]
async fn runstates_follow_connect_and_disconnect() {
    let server = tcp(|_| {}).await;
    let session = Session::new();
    let mut transitions = session.transitions();
    let watch = session.watch();
    assert_eq!(session.state(), RunState::Idle);
    session
        .connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    assert_eq!(session.state(), RunState::Running);
    assert_eq!(
        session
            .call("get", &args(&[("path", "a.txt")]), None)
            .await
            .unwrap(),
        "alpha"
    );
    session.disconnect().await.unwrap();
    assert_eq!(session.state(), RunState::Idle);
    let seen: Vec<RunState> = std::iter::from_fn(|| transitions.try_recv().ok()).collect();
    assert_eq!(
        seen,
        [
            RunState::Connecting,
            RunState::Running,
            RunState::Disconnecting,
            RunState::Idle
        ]
    );
    assert_eq!(*watch.borrow(), RunState::Idle);
    // And again: a session can be reused.
    session
        .connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    session.disconnect().await.unwrap();
}

#[tokio::test]
async fn calls_in_the_wrong_state_name_the_state() {
    let session = Session::new();
    let err = session
        .call("hello", &Arguments::new(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session {
                state: RunState::Idle,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "cannot call: the session is idle");
    assert!(matches!(
        session.disconnect().await.unwrap_err(),
        Error::Session {
            state: RunState::Idle,
            ..
        }
    ));
    let server = tcp(|_| {}).await;
    session
        .connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let err = session
        .connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Session {
                state: RunState::Running,
                ..
            }
        ),
        "{err}"
    );
    session.disconnect().await.unwrap();
}

#[tokio::test]
async fn failed_connect_wraps_the_root_cause_and_stays_idle() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let session = Session::new();
    let err = session
        .connect(Connector::Tcp(format!("127.0.0.1:{port}")))
        .await
        .unwrap_err();
    let Error::Transport(TransportError::Connect { source, .. }) = &err else {
        panic!("{err}")
    };
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("the root cause is the io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(session.state(), RunState::Idle);
    // A server that refuses the preamble.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"framegate/1 error unsupported-version\n")
            .await
            .unwrap();
    });
    let err = session
        .connect(Connector::Tcp(addr.to_string()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported-version"), "{err}");
    assert_eq!(session.state(), RunState::Idle);
}

#[tokio::test]
async fn every_command_over_tcp() {
    let server = tcp(|c| c.allow_writes = true).await;
    let s = Session::new();
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let hello = framegate_wire::HelloPayload::decode(
        &s.call("hello", &Arguments::new(), None).await.unwrap(),
    )
    .unwrap();
    assert!(hello.writable && hello.has_command("sleep"));
    s.call(
        "put",
        &args(&[("path", "b.txt")]),
        Some(Bytes::from("bravo")),
    )
    .await
    .unwrap();
    assert_eq!(
        s.call(
            "append",
            &args(&[("path", "b.txt")]),
            Some(Bytes::from("!"))
        )
        .await
        .unwrap()
        .as_ref(),
        [0x05]
    );
    assert_eq!(
        s.call("get", &args(&[("path", "b.txt")]), None)
            .await
            .unwrap(),
        "bravo!"
    );
    assert_eq!(
        s.call(
            "readv",
            &args(&[("path", "b.txt"), ("ranges", "1,2\n5,1")]),
            None
        )
        .await
        .unwrap(),
        "ra!"
    );
    assert_eq!(
        s.call("has", &args(&[("path", "b.txt")]), None)
            .await
            .unwrap()
            .as_ref(),
        [0xf5]
    );
    assert!(
        !s.call("stat", &args(&[("path", "b.txt")]), None)
            .await
            .unwrap()
            .is_empty()
    );
    s.call("mkdir", &args(&[("path", "d")]), None)
        .await
        .unwrap();
    s.call(
        "rename",
        &args(&[("from", "b.txt"), ("to", "d/c.txt")]),
        None,
    )
    .await
    .unwrap();
    let names: Vec<String> = ciborium::from_reader(
        &s.call("list_dir", &args(&[("path", "d")]), None)
            .await
            .unwrap()[..],
    )
    .unwrap();
    assert_eq!(names, ["c.txt"]);
    let all: Vec<String> = ciborium::from_reader(
        &s.call("iter_files_recursive", &Arguments::new(), None)
            .await
            .unwrap()[..],
    )
    .unwrap();
    assert_eq!(all, ["a.txt", "d/c.txt"]);
    s.call("delete", &args(&[("path", "d/c.txt")]), None)
        .await
        .unwrap();
    s.call("rmdir", &args(&[("path", "d")]), None)
        .await
        .unwrap();
    let err = s
        .call("get", &args(&[("path", "../etc/passwd")]), None)
        .await
        .unwrap_err();
    assert!(err.is(&ErrorCode::PATH_OUTSIDE_BASE), "{err}");
    assert!(
        s.call("get", &args(&[("path", "nope")]), None)
            .await
            .unwrap_err()
            .is(&ErrorCode::NO_SUCH_FILE)
    );
    s.disconnect().await.unwrap();
}

#[tokio::test]
async fn writes_over_tcp_need_the_token_in_hello() {
    let server = tcp(|c| {
        c.allow_writes = true;
        c.write_token = Some("tok".into());
    })
    .await;
    let s = Session::new();
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let err = s
        .call("put", &args(&[("path", "x")]), Some(Bytes::from("1")))
        .await
        .unwrap_err();
    assert!(err.is(&ErrorCode::READ_ONLY), "{err}");
    s.call("hello", &args(&[("token", "wrong")]), None)
        .await
        .unwrap();
    assert!(
        s.call("put", &args(&[("path", "x")]), Some(Bytes::from("1")))
            .await
            .unwrap_err()
            .is(&ErrorCode::READ_ONLY)
    );
    let hello = s
        .call("hello", &args(&[("token", "tok")]), None)
        .await
        .unwrap();
    assert!(
        framegate_wire::HelloPayload::decode(&hello)
            .unwrap()
            .writable
    );
    s.call("put", &args(&[("path", "x")]), Some(Bytes::from("1")))
        .await
        .unwrap();
    assert_eq!(std::fs::read(server.dir.path().join("x")).unwrap(), b"1");
    s.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let server = tcp(|_| {}).await;
    for i in 0..100 {
        std::fs::write(server.dir.path().join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    let s = Arc::new(Session::new());
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let calls = (0..1000).map(|i| {
        let s = s.clone();
        async move {
            let got = s
                .call("get", &args(&[("path", &format!("f{}", i % 100))]), None)
                .await
                .unwrap();
            assert_eq!(got, format!("file {}", i % 100));
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(
        server
            .gateway
            .metrics
            .messages
            .with_label_values(&["stream"])
            .get(),
        1,
        "one connection"
    );
    s.disconnect().await.unwrap();
}

#[tokio::test]
async fn answers_arrive_out_of_order() {
    let server = tcp(|_| {}).await;
    let s = Arc::new(Session::new());
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let call = |ms: &'static str| {
        let (s, order) = (s.clone(), order.clone());
        async move {
            let got = s.call("sleep", &args(&[("ms", ms)]), None).await.unwrap();
            order.lock().unwrap().push(got);
        }
    };
    futures_util::future::join(call("400"), call("10")).await;
    assert_eq!(
        *order.lock().unwrap(),
        [Bytes::from("slept 10"), Bytes::from("slept 400")]
    );
    s.disconnect().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_and_pending_calls_fail_clearly() {
    let server = tcp(|c| c.idle_timeout = Duration::from_millis(200)).await;
    let s = Session::new();
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    // A running command keeps the connection alive past the idle timeout.
    assert_eq!(
        s.call("sleep", &args(&[("ms", "400")]), None)
            .await
            .unwrap(),
        "slept 400"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = s.call("hello", &Arguments::new(), None).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(TransportError::Lost { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("closed the connection"), "{err}");
    // disconnect() still brings the session back to idle.
    let _ = s.disconnect().await;
    assert_eq!(s.state(), RunState::Idle);
}

#[tokio::test]
async fn graceful_stop_finishes_calls_in_flight() {
    let server = tcp(|c| c.shutdown_grace = Duration::from_secs(5)).await;
    let s = Arc::new(Session::new());
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let pending = {
        let s = s.clone();
        tokio::spawn(async move { s.call("sleep", &args(&[("ms", "300")]), None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop.cancel();
    assert_eq!(pending.await.unwrap().unwrap(), "slept 300");
    tokio::time::timeout(Duration::from_secs(3), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(&server.addr).await.is_err(),
        "no longer accepting"
    );
    let _ = s.disconnect().await;
}

#[tokio::test]
async fn disconnect_with_calls_pending_drains_them() {
    let server = tcp(|_| {}).await;
    let s = Arc::new(Session::new());
    s.connect(Connector::Tcp(server.addr.clone()))
        .await
        .unwrap();
    let pending: Vec<_> = (0..5)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.call("sleep", &args(&[("ms", "150")]), None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.disconnect().await.unwrap();
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap(), "slept 150");
    }
    assert_eq!(s.state(), RunState::Idle);
}

#[tokio::test]
async fn dropped_connection_fails_every_pending_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that accepts the preamble, reads a little, then vanishes.
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.write_all(b"framegate/1 ok\n").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = sock.read(&mut buf).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let s = Arc::new(Session::new());
    s.connect(Connector::Tcp(addr.to_string())).await.unwrap();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.call("hello", &Arguments::new(), None).await })
        })
        .collect();
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Transport(TransportError::Lost { .. })),
            "{err}"
        );
    }
    let _ = s.disconnect().await;
    assert_eq!(s.state(), RunState::Idle);
}

#[tokio::test]
async fn stdio_server_through_a_child_process() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("via-pipes.txt"), b"piped").unwrap();
    let server = common::server_binary();
    let mut child = tokio::process::Command::new(server)
        .args(["serve", "--stdio", "--allow-writes"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the framegate-server binary is built by the workspace test run");
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let s = Session::new();
    s.connect(Connector::streams(stdout, stdin)).await.unwrap();
    assert_eq!(
        s.call("get", &args(&[("path", "via-pipes.txt")]), None)
            .await
            .unwrap(),
        "piped"
    );
    s.call(
        "put",
        &args(&[("path", "written.txt")]),
        Some(Bytes::from("over stdio")),
    )
    .await
    .unwrap();
    s.disconnect().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the stdio server exits cleanly when its input ends"
    );
    assert_eq!(
        std::fs::read(dir.path().join("written.txt")).unwrap(),
        b"over stdio"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_and_cli_accept_framegate_tcp_urls() {
    use framegate_client::{FileKind, Options, Transport};
    let server = tcp(|c| c.allow_writes = true).await;
    std::fs::create_dir(server.dir.path().join("sub")).unwrap();
    std::fs::write(server.dir.path().join("sub/s.txt"), b"sub file").unwrap();
    // The URL path is a prefix: the transport is rooted at /sub.
    let url = format!("framegate://{}/sub/", server.addr);
    let t = Transport::open(&url, Options::default()).await.unwrap();
    assert!(t.is_smart());
    assert_eq!(t.get("s.txt").await.unwrap(), "sub file");
    assert_eq!(
        t.readv("s.txt", &[(0, 3), (4, 4)]).await.unwrap(),
        vec![Bytes::from("sub"), Bytes::from("file")]
    );
    assert!(t.has("s.txt").await.unwrap());
    assert_eq!(t.stat("s.txt").await.unwrap().kind, FileKind::File);
    t.put("n.txt", "new", None).await.unwrap();
    assert_eq!(t.append("n.txt", "er").await.unwrap(), 3);
    t.mkdir("d", None).await.unwrap();
    t.rename("n.txt", "d/n.txt").await.unwrap();
    assert_eq!(t.list_dir("").await.unwrap(), ["d", "s.txt"]);
    assert_eq!(
        t.iter_files_recursive("").await.unwrap(),
        ["d/n.txt", "s.txt"]
    );
    assert_eq!(
        std::fs::read(server.dir.path().join("sub/d/n.txt")).unwrap(),
        b"newer"
    );
    t.delete("d/n.txt").await.unwrap();
    t.rmdir("d").await.unwrap();
    let mut batch = t.batch();
    let slots: Vec<_> = (0..500).map(|_| batch.get("s.txt")).collect();
    let mut r = batch.send().await.unwrap();
    for s in slots {
        assert_eq!(r.take(s).unwrap(), "sub file");
    }
    t.close().await.unwrap();

    let out = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("framegate")
            .unwrap()
            .args(["cat", &format!("{url}s.txt")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"sub file");
}

/// A server that takes only 4 KiB frames (`hello`'s `max-frame-size`)
/// gets request frames that fit: a 100 kB `put` and a 3 kB argument
/// succeed over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_frame_size_is_respected_over_tcp() {
    use framegate_client::{Options, Transport};
    let server = tcp(|c| {
        c.allow_writes = true;
        c.limits.max_frame_size = 4096;
    })
    .await;
    let t = Transport::open(&format!("framegate://{}/", server.addr), Options::default())
        .await
        .unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    t.put("big.bin", data.clone(), None).await.unwrap();
    assert_eq!(
        std::fs::read(server.dir.path().join("big.bin")).unwrap(),
        data
    );
    let long = format!("{}.txt", "n".repeat(200));
    t.put(&long, "x", None).await.unwrap();
    assert_eq!(t.get(&long).await.unwrap(), "x");
}
