//! The transport against a real framegate-server on loopback.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use framegate_client::{Error, FileKind, Options, Transport};
use framegate_client::{Refusal, TransportError};
use framegate_wire::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_method_against_a_smart_server() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |c| c.allow_writes = true).await;
    let t = Transport::open(&s.url, Options::default()).await.unwrap();
    assert!(t.is_smart());
    // The probe asks the ro endpoint: its hello says not writable, even
    // though this server allows writes on rw.
    let hello = t.hello().unwrap();
    assert!(!hello.writable);
    assert!(hello.server.starts_with("framegate-server/"));
    assert_eq!(
        t.get("hello.txt").await.unwrap().as_ref(),
        b"hello, world\n"
    );
    assert_eq!(t.get("space name.txt").await.unwrap().as_ref(), b"spaced");
    let mut out = Vec::new();
    assert_eq!(t.get_into("sub/a.bin", &mut out).await.unwrap(), 100_000);
    assert_eq!(out.len(), 100_000);
    let parts = t
        .readv("sub/a.bin", &[(0, 3), (256, 2), (99_999, 1)])
        .await
        .unwrap();
    assert_eq!(
        parts,
        vec![
            Bytes::from_static(&[0, 1, 2]),
            Bytes::from_static(&[0, 1]),
            Bytes::from(vec![(99_999 % 256) as u8])
        ]
    );
    assert!(
        t.readv("hello.txt", &[(10, 100)])
            .await
            .unwrap_err()
            .is(&ErrorCode::SHORT_READ)
    );
    assert!(t.has("hello.txt").await.unwrap());
    assert!(!t.has("nope").await.unwrap());
    let st = t.stat("sub/a.bin").await.unwrap();
    assert_eq!((st.kind, st.size), (FileKind::File, 100_000));
    assert_eq!(t.stat("sub").await.unwrap().kind, FileKind::Dir);
    assert_eq!(
        t.list_dir("").await.unwrap(),
        ["hello.txt", "space name.txt", "sub"]
    );
    assert_eq!(
        t.iter_files_recursive("").await.unwrap(),
        [
            "hello.txt",
            "space name.txt",
            "sub/a.bin",
            "sub/deeper/z.txt"
        ]
    );
    t.put("new.txt", "fresh", Some(0o600)).await.unwrap();
    assert_eq!(t.append("new.txt", " more").await.unwrap(), 5);
    assert_eq!(t.get("new.txt").await.unwrap().as_ref(), b"fresh more");
    let mut source: &[u8] = &[9u8; 300_000];
    t.put_from("streamed.bin", &mut source, None).await.unwrap();
    assert_eq!(
        std::fs::read(tree.path().join("streamed.bin"))
            .unwrap()
            .len(),
        300_000
    );
    t.mkdir("d", None).await.unwrap();
    t.rename("new.txt", "d/moved.txt").await.unwrap();
    assert!(t.has("d/moved.txt").await.unwrap());
    t.delete("d/moved.txt").await.unwrap();
    t.rmdir("d").await.unwrap();
    let err = t.get("missing.txt").await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code, .. } if *code == ErrorCode::NO_SUCH_FILE),
        "{err}"
    );
    assert!(err.to_string().contains("no such file"));
    let err = t
        .call("frobnicate", Default::default(), None, false)
        .await
        .unwrap_err();
    assert!(err.is(&ErrorCode::UNKNOWN_COMMAND));
}

#[tokio::test]
async fn a_thousand_reads_are_one_post() {
    let tree = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        std::fs::write(tree.path().join(format!("f{i}")), format!("content {i}")).unwrap();
    }
    let s = smart_server(tree.path(), |_| {}).await;
    let t = Transport::open(&s.url, Options::default()).await.unwrap();
    let before = s.messages("ro");
    let mut batch = t.batch();
    let slots: Vec<_> = (0..1000).map(|i| batch.get(&format!("f{i}"))).collect();
    let missing = batch.get("nope");
    let mut results = batch.send().await.unwrap();
    assert_eq!(s.messages("ro") - before, 1, "one POST for the whole batch");
    for (i, slot) in slots.into_iter().enumerate() {
        assert_eq!(results.take(slot).unwrap(), format!("content {i}"));
    }
    assert!(
        results
            .take(missing)
            .unwrap_err()
            .is(&ErrorCode::NO_SUCH_FILE)
    );
}

#[tokio::test]
async fn zstd_on_and_off() {
    let tree = tempfile::tempdir().unwrap();
    let text = "compressible framegate text ".repeat(20_000);
    std::fs::write(tree.path().join("t.txt"), &text).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let mut sizes = Vec::new();
    for compress in [true, false] {
        let mut o = Options::default();
        o.compress = compress;
        let t = Transport::open(&s.url, o).await.unwrap();
        let before = s.gateway.metrics.bytes_out.get();
        assert_eq!(t.get("t.txt").await.unwrap(), text.as_bytes());
        sizes.push(s.gateway.metrics.bytes_out.get() - before);
    }
    assert!(
        sizes[0] * 20 < sizes[1],
        "zstd answer {} vs identity {}",
        sizes[0],
        sizes[1]
    );
}

#[tokio::test]
async fn token_auth_for_writes() {
    let tree = tempfile::tempdir().unwrap();
    let s = smart_server(tree.path(), |c| {
        c.allow_writes = true;
        c.write_token = Some("s3cret".into());
    })
    .await;
    let mut o = Options::default();
    o.token = None;
    let t = Transport::open(&s.url, o).await.unwrap();
    let err = t.put("x", "y", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Credentials { status: 401, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("FRAMEGATE_TOKEN"));
    let mut o = Options::default();
    o.token = Some("s3cret".into());
    let t = Transport::open(&s.url, o).await.unwrap();
    t.put("x", "y", None).await.unwrap();
    assert_eq!(std::fs::read(tree.path().join("x")).unwrap(), b"y");
}

#[tokio::test]
async fn framegate_scheme_requires_smart_and_refused_is_an_error() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let url = s.url.replace("http://", "framegate+http://");
    assert!(
        Transport::open(&url, Options::default())
            .await
            .unwrap()
            .is_smart()
    );
    let port = free_port();
    let err = Transport::open(&format!("http://127.0.0.1:{port}/"), Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Transport(TransportError::Connect { .. })),
        "connection refused is an error, not a fallback: {err}"
    );
}

/// A TCP proxy that cuts the first connection after `limit` response bytes.
async fn cutting_proxy(upstream: std::net::SocketAddr, limit: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let cut = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = sr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let n = if cut { n.min(limit - sent) } else { n };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        if cut && sent >= limit {
                            break;
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

#[tokio::test]
async fn interrupted_download_resumes_with_readv() {
    let tree = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    // The proxy cuts its first connection after 1 MB of answers. reqwest
    // keeps that connection (opened by the probe) for the download, so the
    // download breaks mid-way and must resume on a new connection.
    let proxy = cutting_proxy(s.handle.local_addr, 1_000_000).await;
    let mut o = Options::default();
    o.compress = false;
    o.read_timeout = Duration::from_secs(10);
    let t = Transport::open(&format!("http://{proxy}/"), o)
        .await
        .unwrap();
    assert!(t.is_smart());
    let dest = tree.path().join("copy.bin");
    let got = t.download("big.bin", &dest).await.unwrap();
    assert_eq!(got, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let resumed = s
        .gateway
        .metrics
        .commands
        .with_label_values(&["readv", "ok"])
        .get();
    assert_eq!(resumed, 1, "the download resumed once with readv");
}

#[tokio::test]
async fn idempotent_reads_are_retried_once_on_a_dropped_connection() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("big.bin"), vec![3u8; 200_000]).unwrap();
    std::fs::write(tree.path().join("small.txt"), b"small").unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    // The probe's connection (reused for the batch) is cut after 20 kB.
    let proxy = cutting_proxy(s.handle.local_addr, 20_000).await;
    let mut o = Options::default();
    o.compress = false;
    let t = Transport::open(&format!("http://{proxy}/"), o)
        .await
        .unwrap();
    let before = s.messages("ro");
    let mut batch = t.batch();
    let big = batch.get("big.bin");
    let small = batch.get("small.txt");
    let mut r = batch.send().await.unwrap();
    assert_eq!(r.take(big).unwrap().len(), 200_000);
    assert_eq!(r.take(small).unwrap().as_ref(), b"small");
    assert_eq!(
        s.messages("ro") - before,
        2,
        "the batch was sent twice: cut, then retried"
    );
}

#[tokio::test]
async fn basic_auth_from_url_userinfo_is_sent() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        // "alice:open sesame" in base64.
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some("Basic YWxpY2U6b3BlbiBzZXNhbWU=");
        if ok {
            (StatusCode::NOT_FOUND, "no framegate here").into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let err = Transport::open(&format!("http://{addr}/a/"), Options::default())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(Refusal::Credentials { status: 401, .. })
    ));
    let t = Transport::open(
        &format!("http://alice:open%20sesame@{addr}/b/"),
        Options::default(),
    )
    .await
    .unwrap();
    assert!(!t.is_smart(), "credentials accepted; 404 means plain");
    assert!(
        !t.base_url().as_str().contains("alice"),
        "credentials are not kept in the URL"
    );
}

/// A server that takes only 4 KiB frames (`hello`'s `max-frame-size`)
/// gets request frames that fit: a 100 kB `put` succeeds over HTTP.
#[tokio::test]
async fn the_servers_frame_size_is_respected_over_http() {
    let tree = tempfile::tempdir().unwrap();
    let s = smart_server(tree.path(), |c| {
        c.allow_writes = true;
        c.limits.max_frame_size = 4096;
    })
    .await;
    let t = Transport::open(&s.url, Options::default()).await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    t.put("big.bin", data.clone(), None).await.unwrap();
    assert_eq!(std::fs::read(tree.path().join("big.bin")).unwrap(), data);
    let mut source: &[u8] = &data;
    t.put_from("streamed.bin", &mut source, None).await.unwrap();
    assert_eq!(
        std::fs::read(tree.path().join("streamed.bin")).unwrap(),
        data
    );
}
