//! Hostile suite, byte streams and unread request data (docs/resources.md,
//! cases 3, 4 and 8): peers that send data nobody reads, announce requests
//! and fall silent, or stop reading their answers. Each case runs against
//! the real binary on loopback and asserts the server's descriptors and
//! memory from `/proc`, what the client sees, and that a bystander is still
//! served. `FRAMEGATE_HOSTILE=full` runs the original sizes; every case
//! prints one `HOSTILE case=...` line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_e2e::hostile::*;
use framegate_e2e::*;
use framegate_wire::FrameBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until the server closes (EOF or reset); how long that took from
/// `since`, or `None` if still open after `limit`.
async fn closed_within(
    sock: &mut tokio::net::TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut sink = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match sock.read(&mut sink).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()
}

/// Waits (≤ 10 s) for the server's descriptors to come back to
/// `baseline` ± 5; the count it ended at.
async fn fds_settle(pid: u32, baseline: usize) -> usize {
    wait_until(Duration::from_secs(10), || {
        fd_count(pid).abs_diff(baseline) <= 5
    })
    .await;
    fd_count(pid)
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

// ---- case 3: request data nobody reads -----------------------------------------

/// A `get` carrying 32 `command-data` frames (the command reads none of
/// them), then a plain `get`: both of `small.txt`.
fn unread_data_message() -> (Batch, Bytes) {
    let mut batch = Batch::new();
    let slot = batch.start("get", &[("path", SMALL.as_bytes())]);
    for i in 0..32 {
        batch.data(slot, Bytes::from(vec![b'd'; 32 * 1024]), i == 31);
    }
    batch.add("get", &[("path", SMALL.as_bytes())], None);
    let body = batch.take_body();
    let frames = framegate_wire::codec::decode_all(&body, 65_535).unwrap();
    let data = frames
        .iter()
        .filter(|f| matches!(f.body, FrameBody::CommandData(_)))
        .count();
    assert_eq!(data, 32, "the message carries 32 command-data frames");
    (batch, body)
}

fn check_unread_data_outcomes(outcomes: &[Outcome]) {
    assert!(
        !matches!(outcomes[0], Outcome::Unanswered),
        "the get with data is answered (either way): {outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        Outcome::Ok(SMALL_CONTENT.into()),
        "the message goes on"
    );
}

#[test]
fn case3_request_data_nobody_reads_does_not_hold_the_message() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        let (gw, tcp) = site.gateway_tcp(&["--body-read-timeout", "2s"]);
        let pid = gw.pid();
        bystander(&gw).await;
        let fds_before = quiet_fd_count(pid).await;
        // Within the body-read timeout: `get` discards data it does not
        // read, so nothing may wait for that timeout to fire.
        let bound = Duration::from_secs(2);
        let clients = size(4, 16);
        let stop = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(bystanders_until(
            gw.url(),
            Duration::from_millis(200),
            stop.clone(),
        ));
        let mut tasks = Vec::new();
        for c in 0..2 * clients {
            let url = ro(&gw);
            tasks.push(tokio::spawn(async move {
                let (mut batch, body) = unread_data_message();
                let started = Instant::now();
                let answer = if c % 2 == 0 {
                    let body = reqwest::Body::from(body);
                    post_message(&message_client(), &url, TOKEN, body)
                        .await
                        .unwrap()
                } else {
                    // Immediate mode; the peer keeps its side open.
                    let mut sock = stream_session(tcp).await;
                    sock.write_all(&body).await.unwrap();
                    tokio::time::timeout(Duration::from_secs(30), read_answers(&mut sock, 2))
                        .await
                        .expect("answered within 30 s")
                        .unwrap()
                };
                let took = started.elapsed();
                check_unread_data_outcomes(&batch.decode(&answer));
                (c % 2 == 0, took)
            }));
        }
        let mut http = Vec::new();
        let mut stream = Vec::new();
        for t in tasks {
            let (is_http, took) = t.await.unwrap();
            if is_http {
                http.push(took)
            } else {
                stream.push(took)
            }
        }
        stop.store(true, Ordering::SeqCst);
        let seen = watch.await.unwrap();
        let worst = seen.iter().max().copied().unwrap_or_default();
        let fds_after = fds_settle(pid, fds_before).await;
        report(
            "3",
            &[
                ("clients", format!("{clients}+{clients}")),
                ("http_answered_s", spread(&http)),
                ("stream_answered_s", spread(&stream)),
                ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
                ("fds", format!("{fds_before}->{fds_after}")),
                ("bystander_max_ms", millis(worst)),
            ],
        );
        for (what, took) in [("HTTP", &http), ("byte stream", &stream)] {
            let slowest = percentile(took, 100.0);
            assert!(slowest <= bound, "{what}: answered after {slowest:?}");
        }
        assert!(worst <= Duration::from_secs(2), "bystander took {worst:?}");
        assert!(
            fds_after.abs_diff(fds_before) <= 5,
            "{fds_before} -> {fds_after}"
        );
    });
}

// ---- case 4: hello with an empty data stream ----------------------------------------

#[test]
fn case4_hello_with_empty_data_sessions_are_all_closed() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        let (gw, tcp) = site.gateway_tcp(&["--idle-timeout", "3s"]);
        let pid = gw.pid();
        bystander(&gw).await;
        let fds_before = quiet_fd_count(pid).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            tasks.push(tokio::spawn(async move {
                let mut batch = Batch::new();
                batch.add("hello", &[], Some(Bytes::new()));
                let body = batch.take_body();
                let mut sock = stream_session(tcp).await;
                sock.write_all(&body).await.unwrap();
                // Half of them say they are done; half stay silent.
                let half_close = i % 2 == 0;
                if half_close {
                    sock.shutdown().await.unwrap();
                }
                let sent = Instant::now();
                let answer = read_answers(&mut sock, 1).await.unwrap();
                let outcome = batch.decode(&answer).remove(0);
                assert!(
                    outcome.cbor().is_some(),
                    "hello answered: {}",
                    outcome.describe()
                );
                let closed = closed_within(&mut sock, sent, Duration::from_secs(10)).await;
                (half_close, closed, sock)
            }));
        }
        let mut half = Vec::new();
        let mut silent = Vec::new();
        let mut socks = Vec::new();
        for t in tasks {
            let (half_close, closed, sock) = t.await.unwrap();
            let closed = closed.expect("the server closed the session");
            if half_close {
                half.push(closed);
            } else {
                silent.push(closed);
            }
            socks.push(sock);
        }
        let fds_open = fd_count(pid);
        let seen = bystander(&gw).await;
        drop(socks);
        let fds_after = fds_settle(pid, fds_before).await;
        report(
            "4",
            &[
                ("sessions", "50".into()),
                ("half_closed_closed_after_s", spread(&half)),
                ("silent_closed_after_s", spread(&silent)),
                ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
                ("fds", format!("{fds_before}/{fds_open}/{fds_after}")),
                ("bystander_ms", millis(seen)),
            ],
        );
        assert!(
            percentile(&half, 100.0) <= Duration::from_secs(1),
            "a peer that ended its side is closed at once"
        );
        for s in &silent {
            assert!(
                (2.0..=4.0).contains(&s.as_secs_f64()),
                "silent session closed after {s:?}, idle timeout 3 s"
            );
        }
        assert!(
            fds_after.abs_diff(fds_before) <= 5,
            "{fds_before} -> {fds_after}"
        );
        assert!(seen <= Duration::from_secs(2), "bystander took {seen:?}");
    });
}

// ---- case 8: silent and non-reading peers ---------------------------------------

#[test]
fn case8_silent_and_non_reading_peers_are_closed_at_the_idle_timeout() {
    run(Duration::from_secs(180), async {
        let site = Site::new();
        let big = site.tree.join("big64.bin");
        std::fs::write(&big, noise(64 << 20, 8)).unwrap();
        let (gw, tcp) = site.gateway_tcp(&["--idle-timeout", "3s"]);
        let pid = gw.pid();
        bystander(&gw).await;
        let fds_before = quiet_fd_count(pid).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(bystanders_until(
            gw.url(),
            Duration::from_millis(200),
            stop.clone(),
        ));
        // 50 peers: a command-name announcing arguments, then silence.
        let mut half_sent = Vec::new();
        for _ in 0..50 {
            half_sent.push(tokio::spawn(async move {
                let mut batch = Batch::new();
                batch.start("get", &[("path", SMALL.as_bytes())]);
                let frames = batch.take_body();
                let name_len = 8
                    + (frames[0] as usize | (frames[1] as usize) << 8 | (frames[2] as usize) << 16);
                let mut sock = stream_session(tcp).await;
                sock.write_all(&frames[..name_len]).await.unwrap();
                let sent = Instant::now();
                (
                    closed_within(&mut sock, sent, Duration::from_secs(10)).await,
                    sock,
                )
            }));
        }
        let mut fds_attack = 0;
        wait_until(Duration::from_millis(1500), || {
            fds_attack = fds_attack.max(fd_count(pid));
            fds_attack >= fds_before + 50
        })
        .await;
        // One peer asks for 64 MiB and never reads.
        let mut batch = Batch::new();
        batch.add("get", &[("path", b"big64.bin")], None);
        let mut reader_less = stream_session(tcp).await;
        reader_less.write_all(&batch.take_body()).await.unwrap();
        let port = reader_less.local_addr().unwrap().port();
        let times = watch_closes(pid, tcp, &[port], Duration::from_secs(30)).await;
        let mut silent = Vec::new();
        let mut socks = vec![reader_less];
        for t in half_sent {
            let (closed, sock) = t.await.unwrap();
            silent.push(closed.expect("a silent peer was closed within 10 s"));
            socks.push(sock);
        }
        stop.store(true, Ordering::SeqCst);
        let seen = watch.await.unwrap();
        let worst = seen.iter().max().copied().unwrap_or_default();
        let fds_open = fd_count(pid);
        drop(socks);
        let fds_after = fds_settle(pid, fds_before).await;
        let t = times[0];
        let shut = t.shut.map(|s| s.saturating_duration_since(t.stalled));
        let released = t.released.map(|r| r.saturating_duration_since(t.stalled));
        let show = |d: Option<Duration>| d.map_or("open".into(), secs);
        report(
            "8",
            &[
                ("silent_closed_after_s", spread(&silent)),
                ("non_reader_shut_after_s", show(shut)),
                ("non_reader_fd_released_after_s", show(released)),
                ("rss_peak_mib", format!("{:.1}", gw.peak_rss_mib())),
                (
                    "fds",
                    format!("{fds_before}/{fds_attack}/{fds_open}/{fds_after}"),
                ),
                ("bystander_max_ms", millis(worst)),
            ],
        );
        assert!(fds_attack >= fds_before + 50, "the 50 sessions were open");
        for s in &silent {
            assert!(
                (2.0..=4.0).contains(&s.as_secs_f64()),
                "silent peer closed after {s:?}, idle timeout 3 s"
            );
        }
        let closed = t
            .closed_after()
            .expect("the non-reading peer's session ended");
        assert!(
            closed <= Duration::from_secs(3 + 1),
            "non-reading peer's session ended {closed:?} after its buffers filled"
        );
        assert!(
            fds_after.abs_diff(fds_before) <= 5,
            "{fds_before} -> {fds_after}"
        );
        assert!(worst <= Duration::from_secs(2), "bystander took {worst:?}");
    });
}

/// The sixth attack's F1 on byte streams: sessions that send thousands of
/// small `get`s and never read held their finished commands' answer slots
/// while the server's write waited (up to the send timeout), so a
/// byte-stream bystander waited 19–24 s. Now the session takes finished
/// commands in while its write waits, and starts none.
#[test]
fn byte_streams_that_never_read_small_answers_hold_no_answer_slots() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        site.write(SMALL, SMALL_CONTENT);
        site.write("k12", &noise(12 << 10, 12));
        let (gw, tcp) = site.gateway_tcp(&["--open-answers", "32", "--send-timeout", "30s"]);
        let body = gets(4096, b"k12");
        let mut held = Vec::new();
        for _ in 0..size(8, 16) {
            let mut sock = stream_session(tcp).await;
            // Written in the background: the server stops reading when its
            // answers back up.
            let body = body.clone();
            let (_, mut w) = sock.split();
            let _ = tokio::time::timeout(Duration::from_millis(500), w.write_all(&body)).await;
            held.push(sock);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut took = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let mut sock = stream_session(tcp).await;
            let mut one = Batch::new();
            one.add("get", &[("path", SMALL.as_bytes())], None);
            sock.write_all(&one.take_body()).await.unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(15), read_answers(&mut sock, 1))
                .await
                .expect("a byte-stream bystander waited 15 s for an answer slot")
                .unwrap();
            let outcome = one.decode(&answer).remove(0);
            assert!(
                matches!(outcome, Outcome::Ok(ref b) if b.as_ref() == SMALL_CONTENT),
                "{outcome:?}"
            );
            took.push(started.elapsed());
        }
        let worst = took.iter().max().copied().unwrap();
        report(
            "stream-unread-small-answers",
            &[
                ("sessions", held.len().to_string()),
                ("bystander_worst", millis(worst)),
            ],
        );
        assert!(worst < Duration::from_secs(2), "bystanders took {took:?}");
        drop(held);
        drop(gw);
    });
}
