//! Fallback to plain HTTP against a real nginx, and probe verdicts against
//! servers that are not framegate.

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use common::*;
use framegate_client::{Error, FileKind, Options, Transport};
use framegate_client::{Misbehavior, Refusal};
use framegate_wire::ErrorCode;

async fn compare(plain: &Transport, smart: &Transport) {
    assert_eq!(
        plain.get("hello.txt").await.unwrap(),
        smart.get("hello.txt").await.unwrap()
    );
    assert_eq!(
        plain.get("space name.txt").await.unwrap(),
        smart.get("space name.txt").await.unwrap()
    );
    let ranges = [(0, 10), (1000, 5), (50_000, 3), (99_990, 10), (5, 0)];
    assert_eq!(
        plain.readv("sub/a.bin", &ranges).await.unwrap(),
        smart.readv("sub/a.bin", &ranges).await.unwrap()
    );
    assert!(
        plain
            .readv("hello.txt", &[(5, 100)])
            .await
            .unwrap_err()
            .is(&ErrorCode::SHORT_READ)
    );
    assert!(plain.has("hello.txt").await.unwrap());
    assert!(!plain.has("nope.txt").await.unwrap());
    let (ps, ss) = (
        plain.stat("sub/a.bin").await.unwrap(),
        smart.stat("sub/a.bin").await.unwrap(),
    );
    assert_eq!((ps.kind, ps.size), (ss.kind, ss.size));
    assert!(
        (ps.mtime - ss.mtime).abs() < 1.0,
        "Last-Modified has second precision"
    );
    assert_eq!(plain.stat("sub").await.unwrap().kind, FileKind::Dir);
    assert_eq!(
        plain.list_dir("").await.unwrap(),
        smart.list_dir("").await.unwrap()
    );
    assert_eq!(
        plain.list_dir("sub").await.unwrap(),
        smart.list_dir("sub").await.unwrap()
    );
    assert_eq!(
        plain.iter_files_recursive("").await.unwrap(),
        smart.iter_files_recursive("").await.unwrap()
    );
    assert!(
        plain
            .get("nope")
            .await
            .unwrap_err()
            .is(&ErrorCode::NO_SUCH_FILE)
    );
    for err in [
        plain.put("x", "y", None).await.unwrap_err(),
        plain.mkdir("d", None).await.unwrap_err(),
        plain.delete("hello.txt").await.unwrap_err(),
    ] {
        assert!(err.is(&ErrorCode::NOT_SUPPORTED), "{err}");
        assert!(
            err.to_string().contains("needs a framegate server"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn nginx_static_is_plain_and_gives_the_same_results() {
    let tree = sample_tree();
    let ngx = nginx(tree.path());
    let s = smart_server(tree.path(), |_| {}).await;
    let smart = Transport::open(&s.url, Options::default()).await.unwrap();
    for location in ["json", "html"] {
        let plain = Transport::open(&ngx.url(location), Options::default())
            .await
            .unwrap();
        assert!(!plain.is_smart(), "{location}");
        compare(&plain, &smart).await;
    }
    // No index: reads work, listings are not supported.
    let bare = Transport::open(&ngx.url("bare"), Options::default())
        .await
        .unwrap();
    assert_eq!(
        bare.get("hello.txt").await.unwrap().as_ref(),
        b"hello, world\n"
    );
    let err = bare.list_dir("").await.unwrap_err();
    assert!(
        err.is(&ErrorCode::PERMISSION_DENIED),
        "nginx answers 403 for a directory without index: {err}"
    );
    // framegate+http:// refuses a plain server.
    let err = Transport::open(
        &ngx.url("json").replace("http://", "framegate+http://"),
        Options::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::NotSmart { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn batches_work_in_plain_mode() {
    let tree = sample_tree();
    let ngx = nginx(tree.path());
    let t = Transport::open(&ngx.url("json"), Options::default())
        .await
        .unwrap();
    let mut batch = t.batch();
    let a = batch.get("hello.txt");
    let b = batch.has("sub/a.bin");
    let c = batch.put("x", Bytes::from_static(b"y"), None);
    let mut r = batch.send().await.unwrap();
    assert_eq!(r.take(a).unwrap().as_ref(), b"hello, world\n");
    assert!(r.take(b).unwrap());
    assert!(r.take(c).unwrap_err().is(&ErrorCode::NOT_SUPPORTED));
}

async fn serve_router(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A captive portal (or a catch-all site) answers every path with the
/// same 200 page: the probe finds that a path that cannot exist is
/// "found" too and refuses with a clear error, instead of saving the page
/// as the user's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captive_portal_is_an_error_not_file_content() {
    let app = Router::new().fallback(|| async {
        (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>log in to the hotel wifi</html>",
        )
            .into_response()
    });
    let addr = serve_router(app).await;
    let err = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::CatchAll { .. })),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let out = assert_cmd::Command::cargo_bin("framegate")
        .unwrap()
        .args(["get", "-q", &format!("http://{addr}/file.bin")])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "a refusal");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("captive portal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dest.exists());
}

/// A naive server that answers the probe's POST with a 200 page but has
/// real files (a missing path is a 404), and ignores `Range`: plain mode,
/// ranges sliced from the whole body.
#[tokio::test]
async fn a_200_page_for_the_probe_with_real_files_means_plain() {
    let app = Router::new()
        .route(
            "/f",
            axum::routing::get(|| async { "<html>0123456789</html>" }),
        )
        .fallback(|method: axum::http::Method| async move {
            if method == axum::http::Method::POST {
                ([(header::CONTENT_TYPE, "text/html")], "<html>hi</html>").into_response()
            } else {
                axum::http::StatusCode::NOT_FOUND.into_response()
            }
        });
    let addr = serve_router(app).await;
    let t = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap();
    assert!(!t.is_smart());
    let parts = t.readv("f", &[(6, 3), (0, 1)]).await.unwrap();
    assert_eq!(parts, vec![Bytes::from("012"), Bytes::from("<")]);
}

/// A missing directory on a framegate server is "no such directory" (the
/// server's refusal says so), not "no framegate server": no fallback to
/// plain HTTP, and writes under it are not told to find a framegate server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_on_a_framegate_server_is_no_such_directory() {
    let tree = tempfile::tempdir().unwrap();
    let s = smart_server(tree.path(), |c| c.allow_writes = true).await;
    let err = Transport::open(&format!("{}nodir/", s.url), Options::default())
        .await
        .unwrap_err();
    assert!(err.is(&ErrorCode::NO_SUCH_FILE), "{err}");
    assert!(err.to_string().contains("no such directory"), "{err}");
    let out = assert_cmd::Command::cargo_bin("framegate")
        .unwrap()
        .args(["probe", &format!("{}nodir/", s.url)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such directory"));
    // A directory that existed at open and went away: the message is the
    // same, not "needs a framegate server".
    std::fs::create_dir(tree.path().join("d")).unwrap();
    let t = Transport::open(&format!("{}d/", s.url), Options::default())
        .await
        .unwrap();
    std::fs::remove_dir(tree.path().join("d")).unwrap();
    let err = t.put("x", "x", None).await.unwrap_err();
    assert!(err.is(&ErrorCode::NO_SUCH_FILE), "{err}");
}

#[tokio::test]
async fn framegate_media_type_with_garbage_is_a_hard_error() {
    let app = Router::new().fallback(|| async {
        (
            [(header::CONTENT_TYPE, framegate_wire::MEDIA_TYPE)],
            vec![0xffu8; 40],
        )
            .into_response()
    });
    let addr = serve_router(app).await;
    let err = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Misbehaved(Misbehavior::Protocol { .. })),
        "no fallback after a framegate answer: {err}"
    );
    assert_eq!(err.layer(), framegate_client::Layer::Misbehaved);
    // The CLI's exit code for the layer.
    let out = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("framegate")
            .unwrap()
            .args(["cat", &format!("http://{addr}/f.txt")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn not_found_and_method_not_allowed_mean_plain_but_401_asks_for_credentials() {
    for status in [404u16, 405, 501] {
        let app = Router::new().fallback(move || async move {
            axum::http::StatusCode::from_u16(status)
                .unwrap()
                .into_response()
        });
        let addr = serve_router(app).await;
        let t = Transport::open(&format!("http://{addr}/"), Options::default())
            .await
            .unwrap();
        assert!(!t.is_smart(), "{status}");
    }
    let app =
        Router::new().fallback(|| async { axum::http::StatusCode::UNAUTHORIZED.into_response() });
    let addr = serve_router(app).await;
    let err = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Credentials { status: 401, .. })
        ),
        "{err}"
    );
}
