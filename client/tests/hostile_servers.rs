//! What a second fresh tester (helper-16) did to the client, each as a
//! test: a listing that names paths outside the mirror, endless bodies
//! where an answer or an error was expected, destinations that are not
//! regular files, an edited partial record, a byte-stream server that is
//! not up yet, and the CLI's messages and exit codes for them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::proxy::*;
use common::*;
use framegate_client::{
    DownloadOptions, Layer, Options, Transport, local_path_below, partial_path,
};
use framegate_server::{Gateway, GatewayConfig, Registry, serve_tcp};
use tokio_util::sync::CancellationToken;

async fn serve_router(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// An endless body (1 KiB pieces, forever).
fn endless() -> Body {
    let piece = bytes::Bytes::from(vec![b'x'; 1024]);
    Body::from_stream(futures_util::stream::repeat_with(move || {
        Ok::<_, std::io::Error>(piece.clone())
    }))
}

fn cli(args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("framegate")
        .unwrap()
        .args(args)
        .env_remove("FRAMEGATE_TOKEN")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap()
}

async fn cli_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args)
    })
    .await
    .unwrap()
}

#[test]
fn local_paths_stay_below_their_directory() {
    let dir = Path::new("/m");
    assert_eq!(
        local_path_below(dir, "a/b.txt").unwrap(),
        Path::new("/m/a/b.txt")
    );
    for bad in [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "./a",
        "",
        "a/",
        "a\0b",
    ] {
        assert!(local_path_below(dir, bad).is_none(), "{bad:?}");
    }
}

/// A plain server whose listing names `/abs/path` (JSON) or `%2F…`
/// (HTML, decoded), or a framegate server whose file list names
/// `../x`, cannot make `mirror` write outside its directory: the names
/// are skipped, the good file is mirrored; a framegate server that names
/// them is reported as misbehaving (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cannot_make_mirror_write_outside_its_directory() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("PWNED");
    let encoded = format!("{}", target.display()).replace('/', "%2F");
    let json = serde_json::json!([
        { "name": target.display().to_string(), "type": "file" },
        { "name": "..", "type": "directory" },
        { "name": "ok.txt", "type": "file" },
    ])
    .to_string();
    let html = format!("<html><a href=\"{encoded}\">x</a><a href=\"ok.txt\">ok</a></html>");
    for (ctype, listing) in [("application/json", json), ("text/html", html)] {
        let app = Router::new()
            .route(
                "/",
                axum::routing::get(move || async move {
                    ([(header::CONTENT_TYPE, ctype)], listing.clone()).into_response()
                }),
            )
            .route("/ok.txt", axum::routing::get(|| async { "fine\n" }))
            .fallback(|| async { StatusCode::NOT_FOUND });
        let addr = serve_router(app).await;
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mir");
        let out = cli_async(vec![
            "-q".into(),
            "mirror".into(),
            format!("http://{addr}/"),
            mirror.display().to_string(),
        ])
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!target.exists(), "{ctype}: wrote outside the mirror: {err}");
        assert_eq!(
            std::fs::read_to_string(mirror.join("ok.txt")).unwrap(),
            "fine\n"
        );
        // A listing names entries of its directory: a path is none of
        // them, and is dropped with the listing.
        assert_eq!(out.status.code(), Some(0), "{ctype}: {err}");
    }

    // A framegate server whose `tree` (or, without it, whose
    // `iter_files_recursive`) names paths outside, and links out: the
    // mirror skips them and says the server misbehaved (exit 5).
    let tree = sample_tree();
    let names = vec![
        target.display().to_string(),
        "../escape.txt".to_string(),
        "hello.txt".to_string(),
    ];
    let entry = |path: &str, kind: &str, target: Option<&str>| framegate_wire::TreeEntry {
        kind: framegate_wire::FileKind::from_name(kind),
        mode: 0o644,
        path: path.into(),
        size: 13,
        mtime: 0.0,
        target: target.map(Into::into),
    };
    let entries = vec![
        entry(&target.display().to_string(), "file", None),
        entry("../escape.txt", "file", None),
        entry("../up", "dir", None),
        entry("sneaky", "symlink", Some("../../escape-link")),
        entry("abs", "symlink", Some("/etc")),
        // A chain: `x/c -> ..` is inside, `esc -> x/c/..` passes through
        // it to the mirror's parent; a file below `esc`.
        entry("x", "dir", None),
        entry("x/c", "symlink", Some("..")),
        entry("esc", "symlink", Some("x/c/..")),
        entry("esc/victim", "file", None),
        // Sizes that overflow a sum (the debug client once panicked).
        framegate_wire::TreeEntry {
            size: u64::MAX,
            ..entry("huge1", "file", None)
        },
        framegate_wire::TreeEntry {
            size: u64::MAX,
            ..entry("huge2", "file", None)
        },
        // A time that is no time (the client once panicked on it).
        framegate_wire::TreeEntry {
            mtime: f64::INFINITY,
            ..entry("hello.txt", "file", None)
        },
    ];
    for with_tree in [true, false] {
        let mut registry = Registry::files();
        let names = names.clone();
        registry.register(
            "iter_files_recursive",
            framegate_server::command::read_command(move |_call| {
                let names = names.clone();
                async move {
                    Ok(framegate_server::command::Answer::Bytes(
                        framegate_wire::payload::encode_cbor(&names),
                    ))
                }
            }),
        );
        let entries = entries.clone();
        registry.register(
            "tree",
            framegate_server::command::read_command(move |_call| {
                let entries = entries.clone();
                async move {
                    Ok(framegate_server::command::Answer::Bytes(
                        framegate_wire::payload::encode_cbor(&entries),
                    ))
                }
            }),
        );
        if !with_tree {
            registry
                .apply(&framegate_server::CommandPolicy {
                    allow: None,
                    deny: vec!["tree".into()],
                })
                .unwrap();
        }
        let gateway = Gateway::new(GatewayConfig::new(tree.path()), registry).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = framegate_server::serve(gateway, listener, None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mir");
        let out = cli_async(vec![
            "-q".into(),
            "mirror".into(),
            format!("http://{}/", handle.local_addr),
            mirror.display().to_string(),
        ])
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!target.exists(), "wrote outside the mirror: {err}");
        assert!(!dir.path().join("escape.txt").exists(), "{err}");
        assert!(!dir.path().join("up").exists(), "{err}");
        assert!(
            std::fs::symlink_metadata(mirror.join("sneaky")).is_err(),
            "{err}"
        );
        assert!(
            std::fs::symlink_metadata(mirror.join("abs")).is_err(),
            "{err}"
        );
        assert!(!dir.path().join("victim").exists(), "{err}");
        assert!(
            std::fs::symlink_metadata(mirror.join("esc")).map_or(true, |m| m.is_dir()),
            "esc is no link: {err}"
        );
        assert_eq!(out.status.code(), Some(5), "tree {with_tree}: {err}");
        assert!(err.contains("are not relative paths"), "{err}");
        assert_eq!(
            std::fs::read(mirror.join("hello.txt")).unwrap(),
            b"hello, world\n"
        );
    }
}

/// A server that claims framegate and sends an endless body, and one that
/// answers an endless error page: the client reads a bounded prefix and
/// fails, it does not hold the body (before: 1–2 GB in seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_bodies_are_not_read_whole() {
    let app = Router::new().fallback(|| async {
        (
            [(header::CONTENT_TYPE, framegate_wire::MEDIA_TYPE)],
            endless(),
        )
            .into_response()
    });
    let addr = serve_router(app).await;
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        Transport::open(&format!("http://{addr}/"), Options::default()),
    )
    .await
    .expect("the probe gives up on an endless hello")
    .unwrap_err();
    assert_eq!(err.layer(), Layer::Misbehaved, "{err}");

    let app = Router::new().fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, endless()) });
    let addr = serve_router(app).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.bin");
    std::fs::write(&dest, b"mine").unwrap();
    let mut o = download_options(Duration::ZERO);
    o.compress = false;
    let t = Transport::open(&format!("http://{addr}/"), o).await;
    let err = match t {
        Ok(t) => tokio::time::timeout(Duration::from_secs(30), t.download("x.bin", &dest))
            .await
            .expect("an endless error page is not read whole")
            .unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.layer(), Layer::Refused, "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
}

/// A FIFO destination is written into (a reader gets the file; the FIFO
/// stays a FIFO), and a symbolic link is followed: the file it names gets
/// the content, the link stays a link. Before, both were replaced by a
/// regular file (as root, `framegate get URL /dev/null` replaced
/// /dev/null).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_destinations_are_written_into_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // The reader blocks until a writer opens the FIFO: if the download
    // replaced it instead, nothing ever comes (a timeout, not a hang).
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || tx.send(std::fs::read(fifo).unwrap()));
    }
    let t = Transport::open(&s.url, Options::default()).await.unwrap();
    t.download("hello.txt", &fifo).await.unwrap();
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the FIFO's reader got the file");
    assert_eq!(got, b"hello, world\n");
    assert!(!partial_path(&fifo).exists());

    let target = dir.path().join("notes.txt");
    std::fs::write(&target, b"old notes").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("notes.txt", &link).unwrap();
    t.download("hello.txt", &link).await.unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"hello, world\n");
}

/// A partial record edited by hand to a smaller size (with the right
/// version) is not trusted: `--continue` starts over and the file comes
/// out whole. Before, it continued to the edited size and committed a
/// short file, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_partial_record_is_not_trusted() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(3 << 20, 7);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let upstream: SocketAddr = s
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    // The first connection is cut after 1 MiB; later ones (the
    // continuation, through the same base URL) go through.
    let cut = proxy(
        upstream,
        std::sync::Arc::new(|n| {
            if n == 0 {
                Conn::CutAfter(1 << 20)
            } else {
                Conn::Forward
            }
        }),
        no_hook(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let url = format!("http://{}/", cut.addr);
    let t = Transport::open(&url, download_options(Duration::ZERO))
        .await
        .unwrap();
    assert!(t.download("big.bin", &dest).await.is_err());
    let meta = dest.with_file_name(".big.bin.framegate-partial.json");
    let record = std::fs::read_to_string(&meta).unwrap();
    let edited = record.replace(&format!("\"size\":{}", data.len()), "\"size\":2000000");
    assert_ne!(record, edited, "the record names the size: {record}");
    std::fs::write(&meta, edited).unwrap();
    let t = Transport::open(&url, download_options(Duration::ZERO))
        .await
        .unwrap();
    t.download_with("big.bin", &dest, &DownloadOptions::default().resume(true))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

/// `framegate://` to a server that is not up yet: the download retries
/// connecting within the retry deadline (before, the open failed at once,
/// outside the retry loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_stream_server_not_up_yet_is_waited_for() {
    let tree = sample_tree();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let root = tree.path().to_path_buf();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let gateway = Gateway::new(GatewayConfig::new(&root), Registry::files()).unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        serve_tcp(gateway, listener, CancellationToken::new()).await
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("hello.txt");
    let t = Transport::open_lazy(
        &format!("framegate://{addr}/"),
        download_options(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    t.download("hello.txt", &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello, world\n");
    server.abort();
}

/// The CLI on what the tester saw: a local source that is missing or a
/// directory names its path (exit 6, the cause once); an HTTP server on a
/// `framegate://` port is a refusal (4); a missing directory over
/// `framegate://` is "no such directory" (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_messages_name_the_path_and_the_layer() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |c| c.allow_writes = true).await;
    let out = cli_async(vec![
        "put".into(),
        "/nonexistent-source.txt".into(),
        format!("{}x.txt", s.url),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("/nonexistent-source.txt"), "{err}");
    assert_eq!(
        err.matches("os error 2").count(),
        1,
        "the cause once: {err}"
    );

    let app = Router::new().fallback(|| async { StatusCode::BAD_REQUEST });
    let addr = serve_router(app).await;
    let out = cli_async(vec![
        "-q".into(),
        "cat".into(),
        format!("framegate://{addr}/hello.txt"),
        "--retry-deadline".into(),
        "0s".into(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");

    let gateway = Gateway::new(GatewayConfig::new(tree.path()), Registry::files()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(gateway, listener, stop.clone()));
    let out = cli_async(vec!["probe".into(), format!("framegate://{tcp}/nodir/")]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no such directory"), "{err}");
    let out = cli_async(vec!["probe".into(), format!("framegate://{tcp}/sub/")]).await;
    assert_eq!(out.status.code(), Some(0));
    stop.cancel();
}

/// Found by the third tester (helper-17): the token went to another host
/// after a redirect. A redirect to another origin is not followed with
/// credentials: the probe takes the site for a plain one, and its GET
/// follows without the token; the other host never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let other = Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("?").to_string());
            log.lock()
                .unwrap()
                .push(format!("{} {} {auth:?}", req.method(), req.uri()));
            if req.uri().path().starts_with("/again") {
                "the file\n".into_response()
            } else {
                // A hop within this origin, which the client follows.
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("/again{}", req.uri().path()))],
                )
                    .into_response()
            }
        }
    });
    let b = serve_router(other).await;
    let first = Router::new().fallback(move |req: axum::extract::Request| async move {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                header::LOCATION,
                format!("http://localhost:{}{}", b.port(), req.uri().path()),
            )],
        )
    });
    let a = serve_router(first).await;
    let mut o = Options::default();
    o.token = Some("secret123".into());
    let t = Transport::open(&format!("http://127.0.0.1:{}/", a.port()), o)
        .await
        .unwrap();
    assert!(!t.is_smart());
    assert_eq!(t.get("f.bin").await.unwrap(), "the file\n");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the GET reached the other origin");
    assert!(
        seen.iter().all(|l| !l.contains("secret123")),
        "the token reached another origin: {seen:?}"
    );
}

/// A 502/503 from a proxy whose upstream is restarting is no verdict of
/// "plain HTTP" (before: writes said "needs a framegate server", and the
/// verdict stuck for the process): it is a refusal, exit 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_error_is_not_a_plain_server() {
    let app = Router::new().fallback(|| async { (StatusCode::BAD_GATEWAY, "upstream down") });
    let addr = serve_router(app).await;
    let err = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap_err();
    assert_eq!(err.layer(), Layer::Refused, "{err}");
    assert!(err.to_string().contains("502"), "{err}");
    let out = cli_async(vec!["probe".into(), format!("http://{addr}/")]).await;
    assert_eq!(out.status.code(), Some(4));
}

/// A redirect loop is a refusal at once (exit 4), not a lost connection
/// retried until the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_is_refused_at_once() {
    let app = Router::new().fallback(|req: axum::extract::Request| async move {
        (
            StatusCode::FOUND,
            [(header::LOCATION, req.uri().path().to_string())],
        )
    });
    let addr = serve_router(app).await;
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let out = cli_async(vec![
        "-q".into(),
        "get".into(),
        format!("http://{addr}/f.bin"),
        dir.path().join("f.bin").display().to_string(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("redirect"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not retried for a minute"
    );
}

/// `get URL /dev/stdout >> log` appends to the log (the shell's open
/// file), as curl does; before, the log was replaced by the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stdout_is_the_open_descriptor() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.txt");
    std::fs::write(&log, "line1 of log\n").unwrap();
    let url = format!("{}hello.txt", s.url);
    let log2 = log.clone();
    let status = tokio::task::spawn_blocking(move || {
        let append = std::fs::OpenOptions::new()
            .append(true)
            .open(&log2)
            .unwrap();
        std::process::Command::new(assert_cmd::cargo::cargo_bin("framegate"))
            .args(["-q", "get", &url, "/dev/stdout"])
            .stdout(append)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "line1 of log\nhello, world\n"
    );
}

/// A plain site whose every directory lists a subdirectory (a symlink
/// loop served by autoindex) is walked to a bounded depth, then refused
/// with a clear error — not until memory runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_walk_is_bounded_in_depth() {
    let app = Router::new().fallback(|req: axum::extract::Request| async move {
        if req.uri().path().ends_with('/') {
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"[{"name":"loop","type":"directory"},{"name":"f","type":"file"}]"#,
            )
                .into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    });
    let addr = serve_router(app).await;
    let t = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), t.iter_files_recursive(""))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(err.to_string().contains("deeper than"), "{err}");
}
