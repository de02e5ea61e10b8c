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
    assert!(matches!(err, Error::NotSmart { .. }), "{err}");
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

#[tokio::test]
async fn captive_portal_html_200_means_plain() {
    // Answers every request with 200 text/html, ignoring Range, like a
    // captive portal or a naive server.
    let app = Router::new().fallback(|| async {
        (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>0123456789</html>",
        )
            .into_response()
    });
    let addr = serve_router(app).await;
    let t = Transport::open(&format!("http://{addr}/"), Options::default())
        .await
        .unwrap();
    assert!(!t.is_smart());
    // A server that ignores Range: the whole body is sliced locally.
    let parts = t.readv("f", &[(6, 3), (0, 1)]).await.unwrap();
    assert_eq!(parts, vec![Bytes::from("012"), Bytes::from("<")]);
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
        matches!(err, Error::Misbehaved { .. }),
        "no fallback after a framegate answer: {err}"
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
        matches!(err, Error::NeedsCredentials { status: 401, .. }),
        "{err}"
    );
}
