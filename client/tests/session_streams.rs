//! Sessions (§8) as users meet them: answers and uploads streamed (flat
//! memory), the server's text and progress through the caller's hooks,
//! the runstate following a connection the server ended, the connect
//! timeout and the compression option honoured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_client::TransportError;
use framegate_client::{Connector, Error, Hooks, Options, RunState, Session, Transport};
use framegate_server::command::{Answer, Call, read_command};
use framegate_server::serve_tcp;
use framegate_server::{Gateway, GatewayConfig, Registry};
use framegate_wire::{Arguments, ProgressPayload, TextAtom};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A TCP server on `root` with the file commands and `say` (text-output
/// and progress, then "said").
async fn tcp(
    root: &std::path::Path,
    configure: impl FnOnce(&mut GatewayConfig),
) -> (String, CancellationToken) {
    let mut registry = Registry::files();
    registry.register(
        "say",
        read_command(|mut call: Call| async move {
            call.turn.wait().await?;
            call.ctx
                .text(vec![TextAtom::plain("hello from the server\n")]);
            call.ctx.progress(ProgressPayload {
                pos: 5,
                item: None,
                label: Some("steps".into()),
                topic: "say".into(),
                total: 10,
            });
            Ok(Answer::Bytes(Bytes::from_static(b"said")))
        }),
    );
    let mut config = GatewayConfig::new(root);
    config.allow_writes = true;
    configure(&mut config);
    let gateway = Gateway::new(config, registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(gateway, listener, stop.clone()));
    (addr, stop)
}

/// Text-output and progress reach the caller's hooks (not stderr).
#[tokio::test]
async fn text_and_progress_go_to_the_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = tcp(dir.path(), |_| {}).await;
    let texts = Arc::new(Mutex::new(Vec::<String>::new()));
    let progress = Arc::new(Mutex::new(Vec::<(String, i64, u64)>::new()));
    let (t, p) = (texts.clone(), progress.clone());
    let hooks = Hooks {
        on_text: Some(Arc::new(move |s: &str| {
            t.lock().unwrap().push(s.to_string())
        })),
        on_progress: Some(Arc::new(move |r: &ProgressPayload| {
            p.lock().unwrap().push((r.topic.clone(), r.pos, r.total));
        })),
    };
    let s = Session::new().hooks(hooks);
    s.connect(Connector::Tcp(addr)).await.unwrap();
    assert_eq!(
        s.call("say", &Arguments::new(), None).await.unwrap(),
        "said"
    );
    assert_eq!(*texts.lock().unwrap(), ["hello from the server\n"]);
    assert_eq!(*progress.lock().unwrap(), [("say".to_string(), 5, 10)]);
    s.disconnect().await.unwrap();
}

/// A connection the server ends (idle timeout) takes the session back to
/// idle; calls then say the connection was lost, and it can connect again.
#[tokio::test]
async fn the_runstate_follows_a_connection_the_server_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = tcp(dir.path(), |c| c.idle_timeout = Duration::from_millis(200)).await;
    let s = Session::new();
    let mut transitions = s.transitions();
    s.connect(Connector::Tcp(addr.clone())).await.unwrap();
    assert_eq!(s.state(), RunState::Running);
    let mut watch = s.watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|st| *st == RunState::Idle),
    )
    .await
    .expect("idle after the server closed")
    .unwrap();
    let seen: Vec<RunState> = std::iter::from_fn(|| transitions.try_recv().ok()).collect();
    assert_eq!(
        seen,
        [RunState::Connecting, RunState::Running, RunState::Idle]
    );
    let err = s.call("hello", &Arguments::new(), None).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(TransportError::Lost { .. })),
        "{err}"
    );
    s.connect(Connector::Tcp(addr)).await.unwrap();
    assert!(s.call("hello", &Arguments::new(), None).await.is_ok());
    s.disconnect().await.unwrap();
}

/// A server that accepts but never answers the preamble: the connect
/// timeout ends the wait (the transport's `connect_timeout` too).
#[tokio::test]
async fn the_connect_timeout_is_honoured() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            socks.push(sock);
        }
    });
    let started = Instant::now();
    let s = Session::new().connect_timeout(Duration::from_millis(500));
    let err = s
        .connect(Connector::Tcp(addr.to_string()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Transport(TransportError::Connect { .. })),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.state(), RunState::Idle);
    let mut o = Options::default();
    o.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    Transport::open(&format!("framegate://{addr}/"), o)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// `compress: false` asks for identity answers only in the preamble.
#[tokio::test]
async fn no_compression_is_asked_when_compress_is_off() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let line = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut reader = tokio::io::BufReader::new(sock);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        reader
            .get_mut()
            .write_all(b"framegate/1 ok\n")
            .await
            .unwrap();
        line
    });
    let s = Session::new().compress(false);
    s.connect(Connector::Tcp(addr.to_string())).await.unwrap();
    let line = line.await.unwrap();
    assert!(line.starts_with("framegate/1"), "{line}");
    assert!(!line.contains("zstd"), "{line}");
}

/// The client's peak RSS while `framegate` runs `args` (sampled from
/// /proc every 20 ms), in MiB, and its exit status.
fn cli_peak_rss(args: &[String]) -> (f64, std::process::ExitStatus) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("framegate"))
        .args(args)
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0.0f64;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            for line in status.lines() {
                if let Some(kib) = line.strip_prefix("VmHWM:") {
                    let kib: f64 = kib
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse()
                        .unwrap_or(0.0);
                    peak = peak.max(kib / 1024.0);
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (peak, status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Downloads and uploads over a TCP session stream: the client's memory
/// stays flat whatever the file size (`FRAMEGATE_BIG_MIB`, default 256;
/// 1024 for the figure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_transfers_keep_client_memory_flat() {
    let mib: usize = std::env::var("FRAMEGATE_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("big.bin")).unwrap();
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
    }
    let (addr, _stop) = tcp(dir.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let url = format!("framegate://{addr}/big.bin");
    let (peak, status) = tokio::task::spawn_blocking({
        let args = vec![
            "get".to_string(),
            "-q".into(),
            url.clone(),
            dest.display().to_string(),
        ];
        move || cli_peak_rss(&args)
    })
    .await
    .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), (mib as u64) << 20);
    println!("CLIENT RSS get over TCP {mib} MiB: peak {peak:.1} MiB");
    assert!(peak < 64.0, "get over TCP: client peak RSS {peak:.1} MiB");
    let up = format!("framegate://{addr}/up.bin");
    let (peak, status) = tokio::task::spawn_blocking({
        let args = vec![
            "put".to_string(),
            "-q".into(),
            dest.display().to_string(),
            up,
        ];
        move || cli_peak_rss(&args)
    })
    .await
    .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::metadata(dir.path().join("up.bin")).unwrap().len(),
        (mib as u64) << 20
    );
    println!("CLIENT RSS put over TCP {mib} MiB: peak {peak:.1} MiB");
    assert!(peak < 64.0, "put over TCP: client peak RSS {peak:.1} MiB");
}

/// The CLI shows the server's text output on stderr — not under `-q` or
/// `--json`, where stderr is for errors only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_text_output_is_quiet_under_q_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = tcp(dir.path(), |_| {}).await;
    let run = |extra: &'static [&'static str]| {
        let url = format!("framegate://{addr}/");
        tokio::task::spawn_blocking(move || {
            assert_cmd::Command::cargo_bin("framegate")
                .unwrap()
                .args(extra)
                .args(["call", &url, "say"])
                .output()
                .unwrap()
        })
    };
    let out = run(&[]).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"said");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hello from the server"));
    for quiet in [&["-q"][..], &["--json"][..]] {
        let out = run(quiet).await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "{quiet:?}: {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
