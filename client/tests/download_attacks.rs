//! Downloads under the attacks a fresh tester tried (helper-13): a
//! symbolic link planted at the partial file's name, a byte-stream server
//! restarted or gone silent mid-download, a complete partial continued
//! after the file changed, a file rewritten in place while it is sent, a
//! single-page app answering every path, a private destination.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use common::proxy::*;
use common::*;
use framegate_client::Refusal;
use framegate_client::{DownloadOptions, Error, Options, Transport, partial_path};
use framegate_server::{Gateway, GatewayConfig, Registry, serve_tcp};
use tokio_util::sync::CancellationToken;

fn options(retry: Duration) -> Options {
    download_options(retry)
}

/// A TCP (`framegate://`) server on `root`; its gateway and address.
async fn tcp_server(root: &Path) -> (Arc<Gateway>, std::net::SocketAddr, CancellationToken) {
    let gateway = Gateway::new(GatewayConfig::new(root), Registry::files()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(gateway.clone(), listener, stop.clone()));
    (gateway, addr, stop)
}

fn readv_ok(g: &Gateway) -> u64 {
    g.metrics.commands.with_label_values(&["readv", "ok"]).get()
}

/// A symbolic link planted at `.NAME.framegate-partial` is never
/// followed: its target is not truncated or written, the download fails
/// with a local error naming the partial, the destination is untouched.
#[tokio::test]
async fn a_symlink_at_the_partial_path_is_not_followed() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let precious = out.path().join("precious");
    std::fs::write(&precious, b"precious data").unwrap();
    let dest = out.path().join("out");
    std::fs::write(&dest, b"mine").unwrap();
    std::os::unix::fs::symlink(&precious, partial_path(&dest)).unwrap();
    let t = Transport::open(&s.url, options(Duration::from_secs(1)))
        .await
        .unwrap();
    for path in ["hello.txt", "missing.txt"] {
        let err = t.download(path, &dest).await.unwrap_err();
        assert!(matches!(err, Error::Local { .. }), "{path}: {err}");
        assert_eq!(std::fs::read(&precious).unwrap(), b"precious data");
        assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    }
}

/// Over `framegate://`, a connection cut mid-download and a server gone
/// for a while are survived: the session connects again and the download
/// continues with `readv` where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_stream_download_survives_a_restart() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(4_000_000, 11);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let (gateway, addr, _stop) = tcp_server(tree.path()).await;
    let down_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let until = down_until.clone();
    let plan: Plan = Arc::new(move |n| {
        if n == 0 {
            return Conn::CutAfter(1_000_000);
        }
        match *until.lock().unwrap() {
            Some(t) if Instant::now() < t => Conn::Refuse,
            _ => Conn::Forward,
        }
    });
    let on_cut: Hook = Arc::new(move || {
        *down_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(1500));
    });
    let p = proxy(addr, plan, on_cut).await;
    let t = Transport::open(
        &format!("framegate://{}/", p.addr),
        options(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    assert_eq!(
        t.download("big.bin", &dest).await.unwrap(),
        data.len() as u64
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(readv_ok(&gateway), 1, "continued with one readv");
}

/// A byte-stream server that goes silent mid-answer: the read timeout
/// gives the connection up, and the retry continues on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_byte_stream_is_given_up_at_the_read_timeout() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(4_000_000, 12);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let (gateway, addr, _stop) = tcp_server(tree.path()).await;
    let plan: Plan = Arc::new(|n| {
        if n == 0 {
            Conn::StallAfter(1_000_000)
        } else {
            Conn::Forward
        }
    });
    let p = proxy(addr, plan, no_hook()).await;
    let mut o = options(Duration::from_secs(20));
    o.read_timeout = Duration::from_secs(1);
    let t = Transport::open(&format!("framegate://{}/", p.addr), o)
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let started = Instant::now();
    assert_eq!(
        t.download("big.bin", &dest).await.unwrap(),
        data.len() as u64
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(readv_ok(&gateway), 1);
}

/// A partial file that already holds its whole version is still checked
/// against the server on `--continue`: a file replaced since comes out
/// new and whole, one deleted since is an error (and the destination is
/// untouched).
#[tokio::test]
async fn continuing_a_complete_partial_checks_the_server() {
    let tree = tempfile::tempdir().unwrap();
    let file = tree.path().join("c.bin");
    let old = content(500_000, 13);
    std::fs::write(&file, &old).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("c.bin");
    // A complete partial and its record: a run killed just before its rename.
    let p = proxy(
        s.handle.local_addr,
        Arc::new(|n| {
            if n == 0 {
                Conn::CutAfter(400_000)
            } else {
                Conn::Forward
            }
        }),
        no_hook(),
    )
    .await;
    let url = format!("http://{}/", p.addr);
    let t = Transport::open(&url, options(Duration::ZERO))
        .await
        .unwrap();
    t.download("c.bin", &dest).await.unwrap_err();
    let mut partial = std::fs::OpenOptions::new()
        .append(true)
        .open(partial_path(&dest))
        .unwrap();
    let kept = partial.metadata().unwrap().len() as usize;
    std::io::Write::write_all(&mut partial, &old[kept..]).unwrap();
    drop(partial);
    let new = content(500_000, 14);
    replace(&file, &new);
    let t = Transport::open(&url, options(Duration::from_secs(5)))
        .await
        .unwrap();
    let again = DownloadOptions::default().resume(true);
    t.download_with("c.bin", &dest, &again).await.unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == new,
        "the old version was kept"
    );
}

/// A file rewritten in place (same inode, same size) while it is sent:
/// the server fails the answer (`file-changed`) and the download starts
/// over; the result is the new file whole, never old bytes then new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_while_sent_is_not_spliced() {
    let tree = tempfile::tempdir().unwrap();
    let file = tree.path().join("big.bin");
    let (old, new) = (content(3_000_000, 15), content(3_000_000, 16));
    std::fs::write(&file, &old).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    // About 1 MB/s, so the rewrite lands mid-answer.
    let p = proxy(
        s.handle.local_addr,
        Arc::new(|n| {
            if n == 0 {
                Conn::Slow(1_000_000)
            } else {
                Conn::Forward
            }
        }),
        no_hook(),
    )
    .await;
    let t = Transport::open(
        &format!("http://{}/", p.addr),
        options(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let rewrite = {
        let (partial, file, new) = (partial_path(&dest), file.clone(), new.clone());
        tokio::spawn(async move {
            while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 500_000 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            std::io::Write::write_all(&mut f, &new).unwrap();
        })
    };
    t.download("big.bin", &dest).await.unwrap();
    rewrite.await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == new, "spliced");
}

/// A single-page app (POST refused, every GET answered with its index
/// page) is a catch-all: `get` of a file fails, nothing is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_app_fallback_is_not_saved_as_the_file() {
    let app = Router::new().fallback(|method: axum::http::Method| async move {
        if method == axum::http::Method::GET {
            ([(header::CONTENT_TYPE, "text/html")], "<html>My SPA</html>").into_response()
        } else {
            axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("notes");
    std::fs::write(&dest, b"my notes").unwrap();
    let t = Transport::open_lazy(&format!("http://{addr}/"), options(Duration::from_secs(1)))
        .await
        .unwrap();
    let err = t.download("backup.tar.gz", &dest).await.unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::CatchAll { .. })),
        "{err}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"my notes");
}

/// A download over an existing private file keeps it private.
#[tokio::test]
async fn the_destination_keeps_its_permissions() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("secret");
    std::fs::write(&dest, b"old").unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    let t = Transport::open(&s.url, options(Duration::from_secs(1)))
        .await
        .unwrap();
    t.download("hello.txt", &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello, world\n");
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
