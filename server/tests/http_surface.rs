//! The HTTP surface: status codes of §7.3 decided before the body, plain
//! file access, health, and metrics.

mod common;

use std::time::Duration;

use common::*;
use framegate_wire::MEDIA_TYPE;

async fn status(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap) {
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

#[tokio::test]
async fn every_status_code_of_section_7_3() {
    let s = TestServer::start(|c| {
        c.allow_writes = true;
        c.write_token = Some("sesame".into());
        c.limits.max_message_bytes = 1000;
    })
    .await;
    std::fs::create_dir(s.path("sub")).unwrap();
    let c = http();
    let body = || {
        let mut b = Batch::new();
        b.add("hello", &[], None);
        b.body()
    };
    let framed = |url: String| {
        c.post(url)
            .header("content-type", MEDIA_TYPE)
            .header("accept", MEDIA_TYPE)
            .body(body())
    };

    let (code, headers) = status(c.get(s.ro())).await;
    assert_eq!((code, headers["allow"].to_str().unwrap()), (405, "POST"));
    assert_eq!(status(c.put(s.rw())).await.0, 405);
    assert_eq!(
        status(c.post(s.ro()).header("accept", MEDIA_TYPE).body(body()))
            .await
            .0,
        415
    );
    assert_eq!(
        status(
            c.post(s.ro())
                .header("content-type", "text/plain")
                .header("accept", MEDIA_TYPE)
        )
        .await
        .0,
        415
    );
    assert_eq!(
        status(
            c.post(s.ro())
                .header("content-type", MEDIA_TYPE)
                .header("accept", "text/html")
        )
        .await
        .0,
        406
    );
    assert_eq!(
        status(
            c.post(s.ro())
                .header("content-type", MEDIA_TYPE)
                .header("accept", "application/json, text/*")
        )
        .await
        .0,
        406
    );
    // Accept lists and */* are fine; content-type parameters are ignored.
    let ok = c
        .post(s.ro())
        .header("content-type", format!("{MEDIA_TYPE}; charset=binary"))
        .header("accept", format!("text/html, {MEDIA_TYPE};q=0.9"))
        .body(body());
    assert_eq!(status(ok).await.0, 200);
    assert_eq!(status(framed(s.ro()).header("accept", "*/*")).await.0, 200);
    let (code, headers) = status(framed(s.rw())).await;
    assert_eq!(code, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(status(framed(s.rw()).bearer_auth("wrong")).await.0, 401);
    assert_eq!(status(framed(s.rw()).bearer_auth("sesame")).await.0, 200);
    let big = c
        .post(s.ro())
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .body(vec![0u8; 2000]);
    assert_eq!(status(big).await.0, 413);
    assert_eq!(
        status(framed(format!("{}/nope/.framegate/ro", s.url)))
            .await
            .0,
        404
    );
    let fg = [("content-type", MEDIA_TYPE), ("accept", MEDIA_TYPE)];
    for path in [
        "/%2e%2e/.framegate/ro",
        "/sub/%2E%2E/%2e%2e/.framegate/ro",
        "/../.framegate/ro",
    ] {
        assert_eq!(
            raw_request(&s.url, "POST", path, &fg, &body()).await.0,
            404,
            "{path}"
        );
    }
    let (code, headers) = status(framed(format!("{}/sub/.framegate/ro", s.url))).await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], MEDIA_TYPE);
    assert_eq!(headers["cache-control"], "no-store, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
}

#[tokio::test]
async fn rw_is_forbidden_when_writes_are_off() {
    let s = TestServer::start(|_| {}).await;
    let mut b = Batch::new();
    b.add("hello", &[], None);
    let resp = post(&s.rw(), b.body(), &[]).await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn paths_resolve_against_the_base() {
    let s = TestServer::start(|_| {}).await;
    s.write("sub/inner.txt", b"inner");
    s.write("top.txt", b"top");
    let url = format!("{}/sub/.framegate/ro", s.url);
    assert_eq!(
        one(&url, "get", &[("path", b"inner.txt")], None)
            .await
            .ok()
            .as_ref(),
        b"inner"
    );
    assert_eq!(
        one(&url, "get", &[("path", b"../top.txt")], None)
            .await
            .code(),
        "path-outside-base"
    );
}

#[tokio::test]
async fn plain_get_head_ranges_etag_and_listing() {
    let s = TestServer::start(|_| {}).await;
    s.write("d/n.txt", b"0123456789");
    s.write("d/e/x", b"x");
    let c = http();
    let url = format!("{}/d/n.txt", s.url);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(resp.headers().contains_key("last-modified"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"0123456789");
    let head = c.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "10");
    let single = c
        .get(&url)
        .header("range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 206);
    assert_eq!(single.bytes().await.unwrap().as_ref(), b"234");
    let multi = c
        .get(&url)
        .header("range", "bytes=0-1,8-9")
        .send()
        .await
        .unwrap();
    assert_eq!(multi.status(), 206);
    let ctype = multi.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("multipart/byteranges; boundary="));
    let text = String::from_utf8(multi.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("Content-Range: bytes 0-1/10\r\n\r\n01\r\n"));
    assert!(text.contains("Content-Range: bytes 8-9/10\r\n\r\n89\r\n"));
    let unsat = c
        .get(&url)
        .header("range", "bytes=50-60,70-80")
        .send()
        .await
        .unwrap();
    assert_eq!(unsat.status(), 416);
    let cached = c
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let listing: serde_json::Value = serde_json::from_slice(
        &c.get(format!("{}/d/", s.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listing[0]["name"], "e");
    assert_eq!(listing[0]["type"], "directory");
    assert_eq!(listing[1]["name"], "n.txt");
    assert_eq!(listing[1]["type"], "file");
    assert_eq!(listing[1]["size"], 10);
    assert!(listing[1]["mtime"].as_str().unwrap().ends_with("GMT"));
    assert_eq!(c.post(&url).send().await.unwrap().status(), 405);
    assert_eq!(
        c.get(format!("{}/.framegate/healthz", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/.framegate/ro", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        c.get(format!("{}/d/.framegate", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn metrics_count_messages_and_commands() {
    let s = TestServer::start(|_| {}).await;
    s.write("a", b"a");
    let mut b = Batch::new();
    b.add("get", &[("path", b"a")], None);
    b.add("get", &[("path", b"zz")], None);
    b.send(&s.ro()).await;
    let text = s.gateway.metrics.render();
    assert!(
        text.contains("framegate_messages_total{endpoint=\"ro\"} 1"),
        "{text}"
    );
    assert!(text.contains("framegate_commands_total{command=\"get\",outcome=\"ok\"} 1"));
    assert!(text.contains("framegate_commands_total{command=\"get\",outcome=\"no-such-file\"} 1"));
}

#[tokio::test]
async fn multi_range_parts_larger_than_a_piece_arrive_whole_and_in_order() {
    // Parts are read piece by piece while the body is sent; the pieces
    // must join up exactly, and Content-Length must match the body.
    let s = TestServer::start(|_| {}).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.write("big.bin", &data);
    let resp = http()
        .get(format!("{}/big.bin", s.url))
        .header("range", "bytes=10-1000009,1500000-2999999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let declared: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), declared);
    for (start, end) in [(10usize, 1_000_009usize), (1_500_000, 2_999_999)] {
        let head = format!("Content-Range: bytes {start}-{end}/3000000\r\n\r\n");
        let at = body
            .windows(head.len())
            .position(|w| w == head.as_bytes())
            .expect("part header")
            + head.len();
        assert_eq!(&body[at..=at + end - start], &data[start..=end]);
    }
}

#[tokio::test]
async fn slow_and_idle_http1_connections_are_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    s.write("a.txt", b"alpha");
    let addr = s.url.trim_start_matches("http://").to_string();
    // Slowloris: headers begun, never finished.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Idle keep-alive: one request answered, then silence.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for (what, sock) in [("slowloris", &mut slow), ("idle keep-alive", &mut idle)] {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out))
            .await
            .unwrap_or_else(|_| panic!("{what} connection still open"))
            .ok();
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(4), "{what}: {waited:?}");
        if what == "idle keep-alive" {
            assert!(String::from_utf8_lossy(&out).contains("alpha"));
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The server still answers.
    let body = http()
        .get(format!("{}/a.txt", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), b"alpha");
}
