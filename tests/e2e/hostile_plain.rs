//! The fourth attack on the bounded resources (its findings F1, F3, F4,
//! F6, F7), each against the real binary: plain GETs and plain listings
//! charged to the output budget, listings that hold no answer slot while
//! they wait, `HEAD` of a directory that reads nothing, a `Range` of
//! thousands of ranges, `list_dir` answers of clients that never read held
//! in the listing memory, byte-stream non-readers cut at the send timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_e2e::hostile::*;
use framegate_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `count` empty files with names `len` bytes long in `dir`.
fn many_files(dir: &std::path::Path, count: usize, len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        std::fs::File::create(dir.join(format!("{i:0>len$}"))).unwrap();
    }
}

/// A prior-knowledge h2c connection that GETs `path` on `streams`
/// streams with an initial window of 1 byte and never grants more; how
/// long until the server closed it, `None` if still open after `limit`.
async fn h2_get_non_reader(
    port: u16,
    path: &str,
    streams: u32,
    limit: Duration,
) -> Option<Duration> {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (4) = 1.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x04, 0, 0, &[0, 4, 0, 0, 0, 1]));
    // HPACK: :method GET, :scheme http (indexed), :path and :authority
    // as literals with indexed names.
    let mut block = vec![0x82, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x41, 1, b'x']);
    for k in 0..streams {
        out.extend(h2_frame(0x01, 0x05, 1 + 2 * k, &block));
    }
    sock.write_all(&out).await.unwrap();
    read_until_closed(&mut sock, Instant::now(), false, limit).await
}

/// Plain GETs of a large file on HTTP/2 streams that grant no window:
/// each holds a small piece beyond the output budget (before: two whole
/// 256 KiB pieces in hyper's stream, 2,000 streams 1,061 MiB), and is cut
/// at the send timeout. CI: 16 × 8 streams with an 8 MiB budget;
/// `FRAMEGATE_HOSTILE=full`: 64 × 8 with the default budget.
#[test]
fn plain_http2_non_readers_hold_a_small_piece_each() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        site.write("big", &noise(8 << 20, 5));
        let (conns, budget_mib) = (size(16u32, 64), size(8usize, 64));
        let budget = (budget_mib << 20).to_string();
        let gw = site.gateway(&["--send-timeout", "5s", "--output-buffer", &budget]);
        let pid = gw.pid();
        bystander(&gw).await;
        let base = rss_mib(pid);
        gw.reset_peak_rss();
        let streams = 8;
        let held: Vec<_> = (0..conns)
            .map(|_| {
                tokio::spawn(h2_get_non_reader(
                    gw.port,
                    "/big",
                    streams,
                    Duration::from_secs(20),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = bystander(&gw).await;
        let mut closed = Vec::new();
        for h in held {
            closed.push(h.await.unwrap());
        }
        let peak = gw.peak_rss_mib();
        let messages = conns * streams;
        report(
            "plain-h2-non-readers",
            &[
                ("streams", messages.to_string()),
                ("output_buffer_mib", budget_mib.to_string()),
                ("rss_base_mib", format!("{base:.1}")),
                ("rss_peak_mib", format!("{peak:.1}")),
                ("bystander_ms", millis(during)),
            ],
        );
        let bound = base + 2.0 * budget_mib as f64 + f64::from(messages) * 0.25;
        assert!(peak <= bound, "peak RSS {peak:.1} MiB > {bound:.1}");
        for c in closed {
            let s = c.expect("a non-reader still open after 20 s").as_secs_f64();
            assert!(
                (4.0..=8.0).contains(&s),
                "closed after {s:.2} s, send timeout 5 s"
            );
        }
        assert!(
            during <= Duration::from_secs(1),
            "bystander took {during:?}"
        );
    });
}

/// Many GETs of a large directory queue for the two listing slots
/// without holding answer slots (before: each waiter held one, and a
/// bystander's file waited behind the queue), wait at most
/// `LISTING_WAIT` (then 503 + Retry-After), and `HEAD` of a directory
/// reads nothing.
#[test]
fn listing_floods_hold_no_answer_slots() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        many_files(&site.tree.join("huge"), size(60_000, 400_000), 24);
        let gw = site.gateway(&["--open-answers", "4"]);
        bystander(&gw).await;
        let url = gw.url();
        // 100 HEADs at once: each answered without a listing slot.
        let t = Instant::now();
        let heads: Vec<_> = (0..100)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    reqwest::Client::new()
                        .head(format!("{url}/huge/"))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        for h in heads {
            assert_eq!(h.await.unwrap(), 200);
        }
        let heads_took = t.elapsed();
        // 24 GETs at once: most wait for a listing slot.
        let gets: Vec<_> = (0..24)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let resp = reqwest::Client::new()
                        .get(format!("{url}/huge/"))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let retry = resp.headers().contains_key("retry-after");
                    let _ = resp.bytes().await;
                    (status, retry)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut bystanders = Vec::new();
        for _ in 0..5 {
            bystanders.push(bystander(&gw).await);
            let t = Instant::now();
            let plain = reqwest::get(format!("{url}/{SMALL}")).await.unwrap();
            assert_eq!(plain.bytes().await.unwrap(), SMALL_CONTENT);
            bystanders.push(t.elapsed());
        }
        let mut statuses = Vec::new();
        for g in gets {
            statuses.push(g.await.unwrap());
        }
        let worst = bystanders.iter().max().copied().unwrap_or_default();
        report(
            "plain-listing-flood",
            &[
                ("heads", "100".into()),
                ("heads_took_ms", millis(heads_took)),
                ("gets", "24".into()),
                (
                    "gets_ok",
                    statuses.iter().filter(|s| s.0 == 200).count().to_string(),
                ),
                (
                    "gets_503",
                    statuses.iter().filter(|s| s.0 == 503).count().to_string(),
                ),
                ("bystander_max_ms", millis(worst)),
            ],
        );
        assert!(
            heads_took < Duration::from_secs(5),
            "100 HEADs took {heads_took:?}"
        );
        // Measured 64–78 ms alone, 605 ms once in a CI run (debug build, two
        // cores shared with 24 listings being built); the old binary: 6.9 s.
        assert!(worst < Duration::from_secs(2), "bystander took {worst:?}");
        for (status, retry) in statuses {
            assert!(
                status == 200 || (status == 503 && retry),
                "a listing got {status}"
            );
        }
    });
}

/// A `Range` of thousands of ranges is not honoured (the whole file, 200)
/// instead of costing time quadratic in their number.
#[test]
fn thousands_of_ranges_are_not_honoured() {
    run(Duration::from_secs(60), async {
        let site = Site::new();
        let body = noise(100_000, 9);
        site.write("f.bin", &body);
        let gw = site.gateway(&[]);
        let many: Vec<String> = (0..2_000)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 4))
            .collect();
        let t = Instant::now();
        let resp = reqwest::Client::new()
            .get(format!("{}/f.bin", gw.url()))
            .header("range", format!("bytes={}", many.join(",")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.bytes().await.unwrap(), body);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        // 255 ranges are still honoured.
        let some = many[..255].join(",");
        let resp = reqwest::Client::new()
            .get(format!("{}/f.bin", gw.url()))
            .header("range", format!("bytes={some}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 206);
    });
}

/// A client that posts `list_dir` and never reads, with a tiny receive
/// buffer; the socket (kept open).
async fn list_dir_non_reader(port: u16, body: Bytes) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sock = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let head = post_head(port, body.len());
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    sock
}

/// `list_dir` answers of clients that never read are held in the listing
/// memory (before: without bound, 865 MB for 20 clients of a 1M-entry
/// directory): past it, a large listing is `busy`, and the memory comes
/// back when the send timeout cut the non-readers.
#[test]
fn unsent_list_dir_answers_are_charged_to_the_listing_memory() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        // ~60,000 names of 30 bytes: a CBOR answer of about 1.9 MB.
        many_files(&site.tree.join("wide"), 60_000, 30);
        let gw = site.gateway(&["--listing-memory", "4194304", "--send-timeout", "3s"]);
        let mut batch = Batch::new();
        batch.add("list_dir", &[("path", b"wide")], None);
        let body = batch.take_body();
        let started = Instant::now();
        let mut holders = Vec::new();
        for _ in 0..2 {
            holders.push(list_dir_non_reader(gw.port, body.clone()).await);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (got, _) = get_once_listing(&gw).await;
        assert_eq!(got.code(), Some("busy"), "{}", got.describe());
        // After the send timeout the holders are cut and it fits again.
        tokio::time::sleep_until((started + Duration::from_secs(5)).into()).await;
        let (got, _) = get_once_listing(&gw).await;
        let Some(ciborium::Value::Array(names)) = got.cbor() else {
            panic!("{}", got.describe());
        };
        assert_eq!(names.len(), 60_000);
        drop(holders);
    });
}

async fn get_once_listing(gw: &Gateway) -> (Outcome, Duration) {
    let mut batch = Batch::new();
    batch.add("list_dir", &[("path", b"wide")], None);
    let t = Instant::now();
    let answer = post_message(&message_client(), &ro(gw), "", batch.take_body().into())
        .await
        .unwrap();
    let o = batch.decode(&answer);
    (o[0].clone(), t.elapsed())
}

/// A byte-stream peer that stops reading is cut at the send timeout, not
/// the (longer) idle timeout: its answer slots come back for the others.
#[test]
fn byte_stream_non_readers_are_cut_at_the_send_timeout() {
    run(Duration::from_secs(60), async {
        let site = Site::new();
        site.write("big", &noise(32 << 20, 4));
        let (gw, tcp) = site.gateway_tcp(&["--idle-timeout", "60s", "--send-timeout", "2s"]);
        let mut batch = Batch::new();
        batch.add("get", &[("path", b"big")], None);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut sock = socket.connect(([127, 0, 0, 1], tcp).into()).await.unwrap();
        sock.write_all(b"framegate/1\n").await.unwrap();
        sock.write_all(&batch.take_body()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        // Now read: a cut session ends after what was already sent.
        let t = Instant::now();
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0usize;
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match sock.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        report(
            "stream-non-reader",
            &[
                ("bytes_before_cut", total.to_string()),
                ("drained_ms", millis(t.elapsed())),
            ],
        );
        assert!(ended.is_ok(), "the session was not cut");
        assert!(total < 32 << 20, "the whole answer went out: not cut");
        drop(gw);
    });
}
