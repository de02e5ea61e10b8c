//! Hostile suite, what a client can hold for long (docs/resources.md):
//! answer slots held by bodies that never end, connection slots held by
//! connections that never carry a request, staging files of uploads that
//! never end — and the other side of the send timeout: a client that reads
//! slowly but steadily is not cut. Real binary, loopback, `/proc`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_e2e::hostile::*;
use framegate_e2e::*;
use framegate_wire::MEDIA_TYPE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// When each connection closed (`open` if it did not), for the report.
fn close_list(closed: &[Option<Duration>]) -> String {
    closed
        .iter()
        .map(|c| c.map_or("open".into(), secs))
        .collect::<Vec<_>>()
        .join(",")
}

/// The server's pid and its descriptor count once a bystander was served
/// and it settled: the baseline of a case.
async fn warm(gw: &Gateway) -> (u32, usize) {
    let pid = gw.pid();
    bystander(gw).await;
    (pid, quiet_fd_count(pid).await)
}

/// A POST of `batch`'s requests, then one more whose frame never
/// completes: all but its last 30,000 bytes are sent at once, the rest
/// trickled `rate` bytes a second for as long as the socket lives (the
/// task is aborted to stop it). To the `ro` or (with the token) `rw`
/// endpoint.
fn endless_post(
    port: u16,
    endpoint: &'static str,
    mut batch: Batch,
    rate: usize,
) -> tokio::task::JoinHandle<()> {
    batch.add("get", &[("path", &vec![b'a'; 60_000])], None);
    let body = batch.take_body();
    let (head, tail) = body.split_at(body.len() - 30_000);
    let (head, tail) = (Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail));
    tokio::spawn(async move {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "POST /.framegate/{endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: {MEDIA_TYPE}\r\nAccept: {MEDIA_TYPE}\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all(request.as_bytes()).await.unwrap();
        sock.write_all(&head).await.unwrap();
        for piece in tail.chunks(rate) {
            if sock.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Messages whose body never ends (trickled above the minimum rate) hold
/// at most half the server's answer slots: a bystander whose message was
/// sent whole is still answered.
#[test]
fn bodies_that_never_end_hold_at_most_half_the_answer_slots() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        site.write("big", &noise(1 << 20, 7));
        let gw = site.gateway(&[
            "--open-answers",
            "4",
            "--min-body-rate",
            "16",
            "--body-read-timeout",
            "10s",
        ]);
        bystander(&gw).await;
        let hogs: Vec<_> = (0..3)
            .map(|_| {
                let mut head = Batch::new();
                for _ in 0..8 {
                    head.add("get", &[("path", b"big")], None);
                }
                endless_post(gw.port, "ro", head, 64)
            })
            .collect();
        // The hogs' gets run and hold their answers (output is deferred).
        let held = wait_until(Duration::from_secs(10), || {
            // Half of 4 slots: the other half stays free.
            gw.metric("framegate_messages_in_flight") >= 3.0
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut took = Vec::new();
        for _ in 0..5 {
            let (got, t) = get_once(&ro(&gw), SMALL).await;
            assert_eq!(
                got,
                Ok(Outcome::Ok(SMALL_CONTENT.into())),
                "bystander beside the endless bodies"
            );
            took.push(t);
        }
        let worst = took.iter().max().copied().unwrap_or_default();
        report(
            "slots",
            &[
                ("part", "endless-bodies".into()),
                ("hogs", hogs.len().to_string()),
                ("hogs_in_flight", held.to_string()),
                ("bystander_max_ms", millis(worst)),
                ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
            ],
        );
        for h in hogs {
            h.abort();
        }
        assert!(held, "the hogs' messages were in flight");
        assert!(worst <= Duration::from_secs(2), "bystander took {worst:?}");
    });
}

/// Uploads whose data never ends hold at most `--max-staging-files`
/// staging files (a descriptor each); one more upload waits, then fails
/// with a clear, retryable error instead of taking a descriptor.
#[test]
fn uploads_that_never_end_hold_at_most_the_staging_budget() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        let gw = site.gateway(&[
            "--max-staging-files",
            "4",
            "--header-read-timeout",
            "3s",
            "--min-body-rate",
            "16",
        ]);
        let (pid, fds_before) = warm(&gw).await;
        let (messages, puts) = (4, 4);
        let mut hogs = Vec::new();
        for m in 0..messages {
            let mut head = Batch::new();
            for p in 0..puts {
                let path = format!("up-{m}-{p}");
                let slot = head.start("put", &[("path", path.as_bytes())]);
                head.data(slot, Bytes::from(vec![b'x'; 1024]), false);
            }
            hogs.push(endless_post(gw.port, "rw", head, 64));
        }
        let mut fds_peak = 0;
        wait_until(Duration::from_secs(4), || {
            fds_peak = fds_peak.max(fd_count(pid));
            false
        })
        .await;
        // One more upload, complete, from a normal client: it waits for a
        // staging file, then is refused (retryable), while reads go on.
        let mut batch = Batch::new();
        batch.add(
            "put",
            &[("path", b"late")],
            Some(Bytes::from_static(b"late\n")),
        );
        let started = Instant::now();
        let answer = post_message(
            &message_client(),
            &format!("{}/.framegate/rw", gw.url()),
            TOKEN,
            batch.take_body().into(),
        )
        .await
        .unwrap();
        let late = batch.decode(&answer).remove(0);
        let late_took = started.elapsed();
        let during = bystander(&gw).await;
        report(
            "slots",
            &[
                ("part", "staging".into()),
                ("uploads", (messages * puts).to_string()),
                ("fds", format!("{fds_before}/{fds_peak}")),
                ("late_put_s", secs(late_took)),
                ("bystander_ms", millis(during)),
            ],
        );
        for h in hogs {
            h.abort();
        }
        // The connections, 4 staging files, and a little slack.
        assert!(
            fds_peak <= fds_before + messages + 4 + 4,
            "{fds_peak} descriptors with {} uploads (before: {fds_before})",
            messages * puts
        );
        match late {
            Outcome::Err { code, message, .. } => {
                assert_eq!(code, "busy");
                assert!(message.contains("retry later"), "{message}");
            }
            other => panic!("the late put: {other:?}"),
        }
        assert!(
            during <= Duration::from_secs(1),
            "bystander took {during:?}"
        );
    });
}

/// How a connection that never sends a request behaves.
#[derive(Clone, Copy, Debug)]
enum NoRequest {
    /// Connects and sends nothing.
    Silent,
    /// HTTP/2 preface, then a PING a second (each answered by the server).
    Pinging,
    /// Half a request head, then nothing.
    HalfHead,
}

/// Runs `how` until the server closes; how long that took.
async fn no_request(port: u16, how: NoRequest) -> Option<Duration> {
    let started = Instant::now();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    match how {
        NoRequest::Silent => {}
        NoRequest::Pinging => sock.write_all(H2_PREFACE).await.unwrap(),
        NoRequest::HalfHead => sock.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap(),
    }
    let ping = matches!(how, NoRequest::Pinging);
    read_until_closed(&mut sock, started, ping, Duration::from_secs(15)).await
}

/// Connections that never carry a request — silent, HTTP/2 PINGs only,
/// half a head — are closed at the header-read timeout, not at the (longer)
/// idle timeout: a connection slot costs a request.
#[test]
fn connections_without_requests_are_closed_at_the_header_timeout() {
    run(Duration::from_secs(60), async {
        let site = Site::new();
        let gw = site.gateway(&[
            "--header-read-timeout",
            "3s",
            "--connection-idle-timeout",
            "20s",
        ]);
        let (pid, fds_before) = warm(&gw).await;
        let k = size(10, 50);
        let mut tasks = Vec::new();
        for how in [NoRequest::Silent, NoRequest::Pinging, NoRequest::HalfHead] {
            for _ in 0..k {
                tasks.push((how, tokio::spawn(no_request(gw.port, how))));
            }
        }
        let during = bystander(&gw).await;
        let mut closed = Vec::new();
        for (how, t) in tasks {
            let after = t.await.unwrap();
            closed.push((how, after));
        }
        let settled = wait_until(Duration::from_secs(5), || {
            fd_count(pid).abs_diff(fds_before) <= 5
        })
        .await;
        let worst = closed
            .iter()
            .filter_map(|(_, c)| *c)
            .max()
            .unwrap_or_default();
        report(
            "slots",
            &[
                ("part", "no-request".into()),
                ("connections", closed.len().to_string()),
                ("latest_close_s", secs(worst)),
                ("bystander_ms", millis(during)),
            ],
        );
        for (how, after) in closed {
            let after = after.unwrap_or_else(|| panic!("{how:?}: still open after 15 s"));
            let s = after.as_secs_f64();
            assert!(
                (2.0..=4.5).contains(&s),
                "{how:?}: closed after {s:.2} s, expected the 3 s header timeout"
            );
        }
        assert!(
            during <= Duration::from_secs(1),
            "bystander took {during:?}"
        );
        assert!(settled, "descriptors back to {fds_before}");
    });
}

/// A client that reads steadily but slower than a body chunk per send
/// timeout gets its whole answer: the send timeout counts time without any
/// byte taken, not the time one chunk takes.
#[test]
fn a_slow_steady_reader_is_not_cut_by_the_send_timeout() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        // More than the buffers on the way absorb (the server's send buffer
        // may grow to 4 MiB, hyper's and the body channel's hold ~1 MiB).
        let len = 8 << 20;
        site.write("big", &noise(len, 3));
        let gw = site.gateway(&["--send-timeout", "1s"]);
        let mut batch = Batch::new();
        batch.add("get", &[("path", b"big")], None);
        let body = batch.take_body();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut sock = socket
            .connect(([127, 0, 0, 1], gw.port).into())
            .await
            .unwrap();
        sock.write_all(post_head(gw.port, body.len()).as_bytes())
            .await
            .unwrap();
        sock.write_all(&body).await.unwrap();
        // The buffers fill (a pause shorter than the send timeout), then
        // 6 s at 160 KiB/s — a 256 KiB chunk takes 1.6 s to be taken,
        // longer than the send timeout — then the rest at full speed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let slow = Duration::from_secs(6);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut cut = None;
        loop {
            match sock.read(&mut buf).await {
                Ok(0) => break,
                Err(e) => {
                    cut = Some(e.to_string());
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
            if started.elapsed() < slow {
                let due = Duration::from_secs_f64(got.len() as f64 / (160.0 * 1024.0));
                tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            }
        }
        report(
            "slots",
            &[
                ("part", "slow-reader".into()),
                ("bytes", got.len().to_string()),
                ("took_s", secs(started.elapsed())),
            ],
        );
        assert!(cut.is_none(), "connection broke: {cut:?}");
        assert!(got.starts_with(b"HTTP/1.1 200"), "answered");
        assert!(
            got.ends_with(b"\r\n0\r\n\r\n"),
            "the chunked body ended properly after {} bytes",
            got.len()
        );
        assert!(got.len() > len, "the whole file came: {} bytes", got.len());
    });
}

/// Byte streams: a request dripped a frame a second (each frame well
/// within the idle timeout) is cut at the minimum rate — `--idle-timeout`
/// of grace, then 1 KiB/s on average — instead of holding its connection
/// for as long as the peer likes.
#[test]
fn a_request_dripped_over_a_byte_stream_is_cut_at_the_minimum_rate() {
    run(Duration::from_secs(60), async {
        let site = Site::new();
        let (gw, tcp) = site.gateway_tcp(&["--idle-timeout", "3s", "--min-body-rate", "1024"]);
        bystander(&gw).await;
        let args: Vec<(String, Vec<u8>)> = (0..12)
            .map(|i| (format!("arg{i}"), vec![b'v'; 16]))
            .collect();
        let pairs: Vec<(&str, &[u8])> = args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let mut batch = Batch::new();
        batch.start("get", &pairs);
        let frames = framegate_wire::codec::decode_all(&batch.take_body(), 65_535).unwrap();
        let k = size(5, 20);
        let mut peers = Vec::new();
        for _ in 0..k {
            let frames = frames.clone();
            peers.push(tokio::spawn(async move {
                let mut sock = stream_session(tcp).await;
                let started = Instant::now();
                // All but the last frame: the request never completes.
                for frame in &frames[..frames.len() - 1] {
                    let mut out = bytes::BytesMut::new();
                    frame.encode(&mut out).unwrap();
                    if sock.write_all(&out).await.is_err() {
                        return Some(started.elapsed());
                    }
                    let mut buf = [0u8; 1024];
                    let read = tokio::time::timeout(Duration::from_secs(1), sock.read(&mut buf));
                    if let Ok(Ok(0) | Err(_)) = read.await {
                        return Some(started.elapsed());
                    }
                }
                None
            }));
        }
        let mut closed = Vec::new();
        for p in peers {
            closed.push(p.await.unwrap());
        }
        let during = bystander(&gw).await;
        report(
            "slots",
            &[
                ("part", "stream-drip".into()),
                ("peers", k.to_string()),
                ("closed_after_s", close_list(&closed)),
                ("bystander_ms", millis(during)),
            ],
        );
        for c in closed {
            let c = c.expect("a dripping peer was never closed").as_secs_f64();
            assert!((2.5..=5.0).contains(&c), "closed after {c:.2} s");
        }
        assert!(
            during <= Duration::from_secs(1),
            "bystander took {during:?}"
        );
    });
}

/// A prior-knowledge h2c connection that asks `path` on streams 1 and 3,
/// never grants flow-control window beyond the initial one, and sends a
/// PING a second; when the server closed it (from the first request).
async fn pinging_non_reader(port: u16, path: &str) -> Option<Duration> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    sock.write_all(H2_PREFACE).await.unwrap();
    // HPACK (RFC 7541): :method GET, :scheme http (static indexed), :path
    // and :authority as literals with an indexed name.
    let mut block = vec![0x82, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x41, 1, b'x']);
    for stream in [1u8, 3] {
        let mut frame = vec![0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, stream];
        frame.extend_from_slice(&block);
        sock.write_all(&frame).await.unwrap();
    }
    let started = Instant::now();
    read_until_closed(&mut sock, started, true, Duration::from_secs(20)).await
}

/// HTTP/2 clients that never read but keep their connection busy with
/// PINGs are cut at the send timeout all the same (their PING
/// acknowledgements are not progress of their answers), for plain files and
/// framegate messages alike, and their answer slots come back.
#[test]
fn http2_non_readers_that_ping_are_cut_at_the_send_timeout() {
    run(Duration::from_secs(90), async {
        let site = Site::new();
        site.write("big", &noise(4 << 20, 9));
        // Enough answer slots for every stream to start at once: a plain
        // GET waiting for a slot has no body yet, and its send timeout
        // starts only when its first frame is ready (at full size with 16
        // slots, the streams were cut 3, 6 and 9 s after connecting, in
        // three waves).
        let gw = site.gateway(&["--send-timeout", "3s", "--open-answers", "80"]);
        let (pid, fds_before) = warm(&gw).await;
        let k = size(8, 31);
        let conns: Vec<_> = (0..k)
            .map(|_| tokio::spawn(pinging_non_reader(gw.port, "/big")))
            .collect();
        let mut closed = Vec::new();
        for c in conns {
            closed.push(c.await.unwrap());
        }
        let during = bystander(&gw).await;
        let settled = wait_until(Duration::from_secs(5), || {
            fd_count(pid).abs_diff(fds_before) <= 5
        })
        .await;
        report(
            "slots",
            &[
                ("part", "h2-ping-non-readers".into()),
                ("connections", k.to_string()),
                ("closed_after_s", close_list(&closed)),
                ("bystander_ms", millis(during)),
                ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
            ],
        );
        for c in closed {
            let c = c.expect("a pinging non-reader still open after 20 s");
            let s = c.as_secs_f64();
            assert!(
                (2.5..=5.0).contains(&s),
                "closed after {s:.2} s, send timeout 3 s"
            );
        }
        assert!(
            during <= Duration::from_secs(1),
            "bystander took {during:?}"
        );
        assert!(settled, "descriptors back to {fds_before}");
    });
}

/// Upload data waiting for its command (here: uploads waiting for a staging
/// file) is bounded over the whole server by `--max-queued-upload-bytes`:
/// past it, the input of the messages that send more waits.
#[test]
fn upload_data_queued_over_the_server_is_bounded() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        let gw = site.gateway(&[
            "--max-staging-files",
            "4",
            "--max-queued-upload-bytes",
            "8388608",
            "--header-read-timeout",
            "20s",
            "--min-body-rate",
            "16",
        ]);
        let (pid, _) = warm(&gw).await;
        let base = rss_mib(pid);
        gw.reset_peak_rss();
        // 4 messages x 32 uploads x 8 frames of 60,000 bytes, frames
        // interleaved across the uploads, never ended: about 60 MB of data
        // waits for 4 staging files.
        let mut hogs = Vec::new();
        for m in 0..4 {
            let mut head = Batch::new();
            let slots: Vec<usize> = (0..32)
                .map(|p| head.start("put", &[("path", format!("q-{m}-{p}").as_bytes())]))
                .collect();
            for _ in 0..8 {
                for &slot in &slots {
                    head.data(slot, Bytes::from(vec![b'q'; 60_000]), false);
                }
            }
            hogs.push(endless_post(gw.port, "rw", head, 64));
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let peak = gw.peak_rss_mib();
        let during = bystander(&gw).await;
        report(
            "slots",
            &[
                ("part", "queued-upload-data".into()),
                ("rss_base_mib", format!("{base:.1}")),
                ("rss_peak_mib", format!("{peak:.1}")),
                ("bystander_ms", millis(during)),
            ],
        );
        for h in hogs {
            h.abort();
        }
        assert!(
            peak <= base + 32.0,
            "peak RSS {peak:.1} MiB (base {base:.1}) with 8 MiB of queued upload data allowed"
        );
        assert!(
            during <= Duration::from_secs(1),
            "bystander took {during:?}"
        );
    });
}
