//! Hostile suite, the HTTP surface (docs/resources.md, cases 2, 7 and 10):
//! huge multi-range GETs, slowloris and idle connections of both HTTP
//! versions, and thousands of concurrent messages. Each case runs against
//! the real binary on loopback and asserts the server's memory or
//! descriptors from `/proc`, what the client sees, and that a bystander is
//! still served. `FRAMEGATE_HOSTILE=full` runs the original sizes; every
//! case prints one `HOSTILE case=...` line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use framegate_e2e::hostile::*;
use framegate_e2e::*;

#[path = "hostile_http/slow.rs"]
mod slow;

// ---- case 2: a multi-range GET of a huge file ------------------------------------

/// A file of `len` pseudo-random bytes: one 16 MiB noise block written at
/// a different rotation each time, so no two 16 MiB stretches are equal.
fn write_noise_file(path: &Path, len: u64) {
    const BLOCK: usize = 16 << 20;
    let block = noise(BLOCK, 2);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0u64;
    let mut i = 0usize;
    while written < len {
        let rot = (i * 7919) % BLOCK;
        for part in [&block[rot..], &block[..rot]] {
            let take = part.len().min((len - written) as usize);
            out.write_all(&part[..take]).unwrap();
            written += take as u64;
        }
        i += 1;
    }
    out.flush().unwrap();
}

/// Checks a `multipart/byteranges` body as it streams in, against the file
/// itself: every part's bytes are compared with the file at the part's
/// `Content-Range`.
struct MultipartCheck {
    file: std::fs::File,
    delimiter: Vec<u8>,
    buf: BytesMut,
    /// Inside a part: the file offset of the next byte and what is left.
    part: Option<(u64, u64)>,
    parts: Vec<(u64, u64)>,
    done: bool,
    scratch: Vec<u8>,
}

impl MultipartCheck {
    fn new(file: std::fs::File, boundary: &str) -> Self {
        MultipartCheck {
            file,
            delimiter: format!("--{boundary}").into_bytes(),
            buf: BytesMut::new(),
            part: None,
            parts: Vec::new(),
            done: false,
            scratch: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        loop {
            if let Some((offset, left)) = self.part {
                let n = (left as usize).min(self.buf.len());
                if n == 0 {
                    return;
                }
                self.scratch.resize(n, 0);
                self.file.read_exact_at(&mut self.scratch, offset).unwrap();
                assert!(
                    self.buf[..n] == self.scratch[..],
                    "bytes differ from the file in {offset}..{}",
                    offset + n as u64
                );
                self.buf.advance(n);
                self.part = (left > n as u64).then_some((offset + n as u64, left - n as u64));
                continue;
            }
            if self.done {
                return;
            }
            let Some(at) = find(&self.buf, &self.delimiter) else {
                assert!(
                    self.buf.len() < 4096,
                    "no boundary in {} bytes",
                    self.buf.len()
                );
                return;
            };
            let after = at + self.delimiter.len();
            if self.buf.len() < after + 2 {
                return;
            }
            if &self.buf[after..after + 2] == b"--" {
                self.done = true;
                return;
            }
            let Some(end) = find(&self.buf[after..], b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.buf[after..after + end]).to_lowercase();
            let range = head
                .lines()
                .find_map(|l| l.strip_prefix("content-range: bytes "))
                .expect("a Content-Range in every part");
            let (span, _total) = range.split_once('/').unwrap();
            let (a, b) = span.split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            self.parts.push((a, b));
            self.part = Some((a, b - a + 1));
            self.buf.advance(after + end + 4);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One client's multi-range GET, checked as it streams; slow readers take
/// small bites with pauses for their first two seconds.
async fn ranged_get(url: String, path: std::path::PathBuf, range: String, slow: bool) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut resp = http.get(url).header("range", range).send().await.unwrap();
    assert_eq!(resp.status(), 206);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    let boundary = ctype
        .split("boundary=")
        .nth(1)
        .expect("multipart/byteranges")
        .trim_matches('"')
        .to_string();
    let mut check = MultipartCheck::new(std::fs::File::open(path).unwrap(), &boundary);
    let started = Instant::now();
    let mut received = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        received += chunk.len() as u64;
        check.feed(&chunk);
        if slow && started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        check.done && check.part.is_none(),
        "the body ends after its parts"
    );
    let len = check.file.metadata().unwrap().len();
    assert_eq!(check.parts, [(0, len / 2 - 1), (len / 2, len - 1)]);
    received
}

#[test]
fn case2_multi_range_gets_of_a_huge_file_stream_in_bounded_memory() {
    run(Duration::from_secs(600), async {
        let site = Site::new();
        let len: u64 = size(256 << 20, 1 << 30);
        let path = site.tree.join("huge.bin");
        write_noise_file(&path, len);
        let gw = site.gateway(&[]);
        let pid = gw.pid();
        bystander(&gw).await;
        gw.reset_peak_rss();
        let baseline = rss_mib(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(bystanders_until(
            gw.url(),
            Duration::from_millis(250),
            stop.clone(),
        ));
        let range = format!("bytes=0-{},{}-", len / 2 - 1, len / 2);
        let started = Instant::now();
        let readers: Vec<_> = (0..8)
            .map(|i| {
                let url = format!("{}/huge.bin", gw.url());
                tokio::spawn(ranged_get(url, path.clone(), range.clone(), i % 2 == 1))
            })
            .collect();
        let mut total = 0;
        for r in readers {
            total += r.await.unwrap();
        }
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        let seen = watch.await.unwrap();
        let worst = seen.iter().max().copied().unwrap_or_default();
        let peak = gw.peak_rss_mib();
        report(
            "2",
            &[
                ("file_mib", (len >> 20).to_string()),
                ("clients", "8".into()),
                ("took_s", secs(took)),
                (
                    "mib_per_s",
                    format!("{:.0}", total as f64 / 1048576.0 / took.as_secs_f64()),
                ),
                ("rss_base_mib", format!("{baseline:.1}")),
                ("rss_peak_mib", format!("{peak:.1}")),
                ("fds", fd_count(pid).to_string()),
                ("bystander_max_ms", millis(worst)),
            ],
        );
        assert!(
            peak <= baseline + 32.0,
            "peak RSS {peak:.1} MiB > baseline {baseline:.1} + 32"
        );
        assert!(worst <= Duration::from_secs(2), "bystander took {worst:?}");
    });
}

// ---- case 7: slowloris, idle keep-alive, trickled bodies, idle HTTP/2 -------------

#[test]
fn case7_slow_and_idle_http1_connections_are_closed_at_their_timeouts() {
    run(Duration::from_secs(120), slow::slowloris_case());
}

#[test]
fn case7_idle_http2_connections_are_closed_at_the_connection_idle_timeout() {
    run(Duration::from_secs(60), slow::idle_http2_case());
}

// ---- case 10: many connections at once ---------------------------------------------

/// This process's own soft descriptor limit.
fn own_fd_limit() -> u64 {
    fd_limit_of(std::process::id()).unwrap_or(1024)
}

/// `wanted` concurrent messages, each `hello` plus a `get` of `files[i %
/// len]` (path and content), all held in flight at once before their
/// bodies end; every answer must be correct. Returns after reporting.
async fn many_messages(
    variant: &str,
    gw: &Gateway,
    wanted: usize,
    files: Arc<Vec<(String, Vec<u8>)>>,
) {
    let pid = gw.pid();
    bystander(gw).await;
    let fds_before = quiet_fd_count(pid).await;
    // Our own descriptors bound one batch (no unsafe: we cannot raise the
    // limit); keep 256 spare for the runtime and the checks.
    let per_batch = wanted.min(own_fd_limit().saturating_sub(256) as usize);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(0)
        .http1_only()
        .build()
        .unwrap();
    let started = Instant::now();
    let (mut ok, mut failed, mut wrong) = (0usize, Vec::new(), Vec::new());
    let (mut in_flight_peak, mut fds_peak, mut batches) = (0f64, 0usize, 0usize);
    let mut left = wanted;
    while left > 0 {
        let n = left.min(per_batch);
        left -= n;
        batches += 1;
        let (release, released) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..n {
            let (http, url, mut released) = (http.clone(), ro(gw), released.clone());
            let files = files.clone();
            tasks.push(tokio::spawn(async move {
                let (path, content) = &files[i % files.len()];
                let mut batch = Batch::new();
                batch.add("hello", &[], None);
                batch.add("get", &[("path", path.as_bytes())], None);
                let (tx, body) = fed_body();
                let sent = tokio::spawn(post_message_owned(http, url, body));
                tx.send(batch.take_body()).await.ok();
                // Hold the body open until every client of the batch has
                // its message in flight.
                let _ = released.wait_for(|r| *r).await;
                drop(tx);
                match sent.await.unwrap() {
                    Ok(answer) => {
                        let o = batch.decode(&answer);
                        let right = o.len() == 2
                            && o[0].cbor().is_some()
                            && matches!(&o[1], Outcome::Ok(b) if b.as_ref() == content.as_slice());
                        Ok(right.then_some(()).ok_or_else(|| {
                            format!(
                                "{path}: {}",
                                o.iter()
                                    .map(Outcome::describe)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }))
                    }
                    Err(e) => Err(e),
                }
            }));
        }
        // Every message in flight at once (or as many as the server takes:
        // past --max-connections they wait in the backlog).
        // A server out of descriptors may not answer on its metrics port:
        // an unanswered probe counts as no progress.
        let mut last = (0f64, Instant::now());
        loop {
            let now = metric(gw.metrics_port, "framegate_messages_in_flight")
                .await
                .unwrap_or(0.0);
            fds_peak = fds_peak.max(fd_count(pid));
            if now > last.0 {
                last = (now, Instant::now());
            }
            if now >= n as f64 || last.1.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fds_peak = fds_peak.max(fd_count(pid));
        in_flight_peak = in_flight_peak.max(last.0);
        release.send(true).unwrap();
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            tokio::spawn(async move {
                let mut peak = 0;
                while sampling.load(Ordering::SeqCst) {
                    peak = peak.max(fd_count(pid));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak
            })
        };
        for t in tasks {
            match t.await.unwrap() {
                Ok(Ok(())) => ok += 1,
                Ok(Err(w)) => wrong.push(w),
                Err(e) => failed.push(e),
            }
        }
        sampling.store(false, Ordering::SeqCst);
        fds_peak = fds_peak.max(sampler.await.unwrap());
    }
    let took = started.elapsed();
    let peak = gw.peak_rss_mib();
    let after = bystander(gw).await;
    report(
        "10",
        &[
            ("variant", variant.into()),
            ("connections", wanted.to_string()),
            ("batches", batches.to_string()),
            ("in_flight_peak", in_flight_peak.to_string()),
            ("ok", ok.to_string()),
            ("failed", failed.len().to_string()),
            ("wrong", wrong.len().to_string()),
            ("took_s", secs(took)),
            ("rss_peak_mib", format!("{peak:.1}")),
            ("fds", format!("{fds_before}/{fds_peak}/{}", fd_count(pid))),
            ("fd_limit", fd_limit_of(pid).unwrap_or(0).to_string()),
            ("bystander_after_ms", millis(after)),
        ],
    );
    // "g/0001: ..." and "POST url: status ...": counted by what follows.
    let reasons = |all: &[String]| {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for f in all {
            let reason = f.split_once(": ").map_or(f.as_str(), |(_, r)| r);
            // Paths and ports differ; the kind of failure is what counts.
            let kind: String = reason
                .trim()
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            *counts.entry(kind).or_default() += 1;
        }
        counts
    };
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        reasons(&wrong)
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        reasons(&failed)
    );
    assert!(peak <= 256.0, "peak RSS {peak:.1} MiB > 256");
    assert!(
        after <= Duration::from_secs(2),
        "bystander after took {after:?}"
    );
}

#[test]
fn case10_thousands_of_concurrent_messages() {
    run(Duration::from_secs(600), async {
        let site = Site::new();
        let gw = site.gateway(&[]);
        let small = vec![(SMALL.to_string(), SMALL_CONTENT.to_vec())];
        many_messages("default", &gw, size(500, 10_000), Arc::new(small)).await;
    });
}

#[test]
fn case10_as_many_messages_as_connections_allowed_under_1024_descriptors() {
    // At 1,024 descriptors the server allows 320 connections, 320 messages
    // and 240 open answers: of 470 messages, each holding a 20 KiB file
    // answer, 150 wait in the listen backlog; none may fail.
    run(Duration::from_secs(300), async {
        let site = Site::new();
        let files: Vec<(String, Vec<u8>)> = (0..470)
            .map(|i| (format!("g/{i:04}"), noise(20 * 1024, 10_000 + i as u64)))
            .collect();
        for (path, content) in &files {
            site.write(path, content);
        }
        // A stalled body is cut after 15 s, not 60 (the held bodies wait
        // ≤ 6 s for the others to be in flight).
        let gw = Gateway::start_with_fd_limit(
            &site.tree,
            &site.token,
            1024,
            &["--body-read-timeout", "15s"],
        );
        many_messages("fd-limit-1024", &gw, 470, Arc::new(files)).await;
    });
}

async fn post_message_owned(
    http: reqwest::Client,
    url: String,
    body: reqwest::Body,
) -> Result<bytes::Bytes, String> {
    post_message(&http, &url, TOKEN, body).await
}

// ---- non-readers of small answers ------------------------------------------------

/// The sixth attack's F1: clients that post many small `get`s (answers
/// read at once, holding no file) and never read. A message waiting for
/// its client to take output used to take nothing in, so its finished
/// commands kept their server-wide answer slots (16 a message) until the
/// send timeout: with `--open-answers 32`, four such clients starved every
/// other message for 30 s. Now finished commands give their slots back
/// while the message waits, and none starts until the client reads.
#[test]
fn clients_that_never_read_small_answers_hold_no_answer_slots() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        site.write(SMALL, SMALL_CONTENT);
        site.write("k12", &noise(12 << 10, 12));
        let gw = site.gateway(&["--open-answers", "32", "--send-timeout", "30s"]);
        bystander(&gw).await;
        // 512 × 12 KiB: far more than the sockets buffer.
        let body = gets(512, b"k12");
        let mut held = Vec::new();
        for _ in 0..size(8, 16) {
            held.push(post_unread(gw.port, &body, false).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut took = Vec::new();
        for _ in 0..5 {
            let (got, t) = tokio::time::timeout(Duration::from_secs(15), get_once(&ro(&gw), SMALL))
                .await
                .expect("a bystander waited 15 s for an answer slot");
            assert!(
                matches!(got, Ok(Outcome::Ok(ref b)) if b.as_ref() == SMALL_CONTENT),
                "{got:?}"
            );
            took.push(t);
        }
        let worst = took.iter().max().copied().unwrap();
        report(
            "unread-small-answers",
            &[
                ("clients", held.len().to_string()),
                ("bystander_worst", millis(worst)),
            ],
        );
        assert!(worst < Duration::from_secs(2), "bystanders took {took:?}");
        drop(held);
    });
}
