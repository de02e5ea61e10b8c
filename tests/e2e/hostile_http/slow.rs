//! Case 7: clients that are slow or silent at the HTTP level — headers a
//! byte a second (slowloris), keep-alive connections that never send the
//! next request, bodies trickled a byte a second, and idle HTTP/2
//! connections (prior-knowledge h2c).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use framegate_e2e::hostile::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes (EOF or reset) or `limit` passes; what
/// came, and when it closed.
async fn read_until_closed(sock: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Err(_) => return (out, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(Instant::now())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` one a second (the first at once), reading meanwhile,
/// until the server closes or all are sent; what came, and when it closed.
async fn trickle(sock: &mut TcpStream, bytes: &[u8]) -> (Vec<u8>, Option<Instant>) {
    let (mut r, mut w) = sock.split();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    for b in bytes {
        if w.write_all(std::slice::from_ref(b)).await.is_err() {
            return (got, Some(Instant::now()));
        }
        let wait = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                n = r.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return (got, Some(Instant::now())),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
            }
        }
    }
    (got, None)
}

fn spread(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "none".into();
    }
    format!(
        "{}..{}",
        secs(percentile(samples, 0.0)),
        secs(percentile(samples, 100.0))
    )
}

fn assert_around(what: &str, samples: &[Duration], target: f64) {
    for s in samples {
        let s = s.as_secs_f64();
        assert!(
            (target - 1.0..=target + 1.0).contains(&s),
            "{what}: closed after {s:.2} s, expected {target} s ± 1 s"
        );
    }
}

/// A slowloris: headers begun, one more byte a second; how long until the
/// server closed.
async fn slowloris(port: u16) -> Option<Duration> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    let mut head = format!("GET /{SMALL} HTTP/1.1\r\nHost: x\r\nX-Slow: ").into_bytes();
    head.resize(head.len() + 30, b'a');
    let (_, closed) = trickle(&mut sock, &head).await;
    closed.map(|c| c - started)
}

/// One complete request, its answer read, then silence; how long after
/// the answer until the server closed. `Err`: the answer never came whole.
async fn idle_keep_alive(port: u16) -> Result<Option<Duration>, String> {
    let started = Instant::now();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let failed = |why: String| {
            Err(format!(
                "{why} {:.2} s after connecting, {} bytes in",
                started.elapsed().as_secs_f64(),
                got.len()
            ))
        };
        match sock.read(&mut buf).await {
            Ok(0) => return failed("closed".into()),
            Err(e) => return failed(e.to_string()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.ends_with(SMALL_CONTENT) {
            break Instant::now();
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    let (_, closed) = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    Ok(closed.map(|c| c - answered))
}

/// A framegate POST whose 100-byte body comes a byte a second; when it was
/// cut after the headers, and whether with a 408.
async fn trickled_body(port: u16) -> (Option<Duration>, bool) {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sock.write_all(post_head(port, 100).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let (mut got, closed) = trickle(&mut sock, &[0u8; 100]).await;
    let closed = match closed {
        // A 408 may come before the close: wait for the close too.
        None if !got.is_empty() => {
            let (more, closed) = read_until_closed(&mut sock, Duration::from_secs(5)).await;
            got.extend_from_slice(&more);
            closed
        }
        other => other,
    };
    (
        closed.map(|c| c - started),
        got.starts_with(b"HTTP/1.1 408"),
    )
}

/// Slowloris, idle keep-alive and trickled bodies at once; bystanders
/// served meanwhile.
pub(crate) async fn slowloris_case() {
    let site = Site::new();
    let gw = site.gateway(&[
        "--header-read-timeout",
        "3s",
        "--body-read-timeout",
        "2s",
        "--min-body-rate",
        "1024",
    ]);
    let pid = gw.pid();
    bystander(&gw).await;
    let fds_before = quiet_fd_count(pid).await;
    let (n, m, t) = (size(50, 150), size(20, 50), size(5, 20));
    let port = gw.port;
    let loris: Vec<_> = (0..n).map(|_| tokio::spawn(slowloris(port))).collect();
    let idle: Vec<_> = (0..m)
        .map(|_| tokio::spawn(idle_keep_alive(port)))
        .collect();
    let bodies: Vec<_> = (0..t).map(|_| tokio::spawn(trickled_body(port))).collect();
    // The attack's connections are all accepted (the machine may be busy).
    let mut fds_open = 0;
    wait_until(Duration::from_millis(1500), || {
        fds_open = fds_open.max(fd_count(pid));
        fds_open >= fds_before + n + m + t
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn(bystanders_until(
        gw.url(),
        Duration::from_millis(200),
        stop.clone(),
    ));
    let mut loris_closed = Vec::new();
    for l in loris {
        loris_closed.push(l.await.unwrap().expect("slowloris still open after 30 s"));
    }
    let mut idle_closed = Vec::new();
    let mut unanswered = Vec::new();
    for i in idle {
        match i.await.unwrap() {
            Ok(closed) => {
                idle_closed.push(closed.expect("idle keep-alive still open after 10 s"));
            }
            Err(e) => unanswered.push(e),
        }
    }
    let mut body_cut = Vec::new();
    let mut got_408 = 0;
    for b in bodies {
        let (cut, was_408) = b.await.unwrap();
        body_cut.push(cut.expect("trickled body still going after 100 s"));
        got_408 += usize::from(was_408);
    }
    stop.store(true, Ordering::SeqCst);
    let seen = watch.await.unwrap();
    let worst = seen.iter().max().copied().unwrap_or_default();
    let settled = wait_until(Duration::from_secs(5), || {
        fd_count(pid).abs_diff(fds_before) <= 5
    })
    .await;
    report(
        "7",
        &[
            ("part", "http1".into()),
            ("slowloris", n.to_string()),
            ("slowloris_closed_after_s", spread(&loris_closed)),
            ("idle", m.to_string()),
            ("idle_closed_after_s", spread(&idle_closed)),
            ("idle_unanswered", unanswered.len().to_string()),
            ("trickled", t.to_string()),
            ("trickled_cut_after_s", spread(&body_cut)),
            ("trickled_408", got_408.to_string()),
            ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
            ("fds", format!("{fds_before}/{fds_open}/{}", fd_count(pid))),
            ("bystanders", seen.len().to_string()),
            ("bystander_p50_ms", millis(percentile(&seen, 50.0))),
            ("bystander_max_ms", millis(worst)),
        ],
    );
    assert!(
        fds_open >= fds_before + n,
        "the attack's connections were open: {fds_open} descriptors"
    );
    assert!(
        unanswered.is_empty(),
        "{} complete GETs were not answered: {unanswered:?}",
        unanswered.len()
    );
    assert_around("slowloris", &loris_closed, 3.0);
    assert_around("idle keep-alive", &idle_closed, 3.0);
    assert_around("trickled body", &body_cut, 2.0);
    assert!(!seen.is_empty(), "bystanders ran during the attack");
    assert!(worst <= Duration::from_secs(1), "bystander took {worst:?}");
    assert!(
        settled,
        "descriptors back to {fds_before}: {}",
        fd_count(pid)
    );
}

/// The client preface and an empty SETTINGS frame (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// SETTINGS with the ACK flag.
const H2_SETTINGS_ACK: &[u8] = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";

/// An h2c connection (prior knowledge): settings exchanged, then silence;
/// how long after our last byte until the server closed, and how many
/// bytes it sent meanwhile.
async fn idle_http2(port: u16) -> (Option<Duration>, usize) {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sock.write_all(H2_PREFACE).await.unwrap();
    let mut first = [0u8; 9];
    sock.read_exact(&mut first).await.unwrap();
    assert_eq!(first[3], 0x04, "the server speaks HTTP/2: SETTINGS first");
    sock.write_all(H2_SETTINGS_ACK).await.unwrap();
    let quiet = Instant::now();
    let (got, closed) = read_until_closed(&mut sock, Duration::from_secs(15)).await;
    (closed.map(|c| c - quiet), got.len())
}

/// Idle HTTP/2 connections are closed at `--connection-idle-timeout`.
pub(crate) async fn idle_http2_case() {
    let site = Site::new();
    let gw = site.gateway(&[
        "--connection-idle-timeout",
        "4s",
        "--keepalive-interval",
        "1s",
    ]);
    let pid = gw.pid();
    bystander(&gw).await;
    let fds_before = quiet_fd_count(pid).await;
    let k = size(25, 50);
    let port = gw.port;
    let conns: Vec<_> = (0..k).map(|_| tokio::spawn(idle_http2(port))).collect();
    let mut fds_open = 0;
    wait_until(Duration::from_millis(1500), || {
        fds_open = fds_open.max(fd_count(pid));
        fds_open >= fds_before + k
    })
    .await;
    let during = bystander(&gw).await;
    let mut closed = Vec::new();
    let mut open = 0;
    let mut sent = 0;
    for c in conns {
        let (done, bytes) = c.await.unwrap();
        // The server's SETTINGS and its ACK of ours may come after our ACK.
        sent += bytes;
        match done {
            Some(d) => closed.push(d),
            None => open += 1,
        }
    }
    let settled = wait_until(Duration::from_secs(5), || {
        fd_count(pid).abs_diff(fds_before) <= 5
    })
    .await;
    report(
        "7",
        &[
            ("part", "h2-idle".into()),
            ("connections", k.to_string()),
            ("closed_after_s", spread(&closed)),
            ("open_after_15s", open.to_string()),
            ("server_bytes_after_quiet", sent.to_string()),
            ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
            ("fds", format!("{fds_before}/{fds_open}/{}", fd_count(pid))),
            ("bystander_ms", millis(during)),
        ],
    );
    assert!(fds_open >= fds_before + k, "the h2 connections were open");
    assert_eq!(open, 0, "idle h2 connections still open after 15 s");
    assert_around("idle HTTP/2", &closed, 4.0);
    assert!(
        during <= Duration::from_secs(1),
        "bystander took {during:?}"
    );
    assert!(
        settled,
        "descriptors back to {fds_before}: {}",
        fd_count(pid)
    );
}
