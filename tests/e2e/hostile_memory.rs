//! Hostile suite, memory with many busy clients (case 5's last part,
//! docs/resources.md): every client reads a large compressible file at
//! once, answers compressed where the server's compressor budget allows.
//! The server's peak RSS must stay under 256 MiB whatever the core count:
//! each message holds a bounded amount (answers queued, one piece being
//! fed, the chunks between it and the socket) and at most
//! `--max-compressing-messages` compressors exist. `FRAMEGATE_HOSTILE=full`
//! runs 64 clients × 64 MiB; CI 16 × 16 MiB.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use framegate_e2e::hostile::*;
use framegate_e2e::*;
use framegate_wire::{ClientEvent, ClientReactor, FrameDecoder, MEDIA_TYPE};
use futures_util::StreamExt;

/// Compressible text, `len` bytes.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} of a text that compresses well\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// One message of one `get`, its answer decoded as it streams in (never
/// held whole); returns the answer's length, and whether any frame came
/// compressed.
async fn streamed_get(url: String, path: &'static str) -> (u64, bool) {
    let mut client = ClientReactor::default();
    client
        .request("get", &arguments(&[("path", path.as_bytes())]), None)
        .unwrap();
    let mut body = BytesMut::new();
    client.write_transmit(&mut body);
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .header("framegate-accept-encoding", "zstd-8mb, identity")
        .body(body.freeze())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let (mut len, mut ended, mut encoded) = (0u64, false, false);
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            encoded |= frame
                .stream_flags
                .contains(framegate_wire::frame::StreamFlags::ENCODED);
            client.handle_frame(frame).unwrap();
            while let Some(event) = client.poll_event() {
                match event {
                    ClientEvent::Data { data, .. } => len += data.len() as u64,
                    ClientEvent::End { .. } => ended = true,
                    ClientEvent::Failed { error, .. } => panic!("get failed: {error:?}"),
                    _ => {}
                }
            }
        }
    }
    assert!(ended, "the answer ended");
    (len, encoded)
}

#[test]
fn case5_many_busy_clients_stay_under_256_mib() {
    run(Duration::from_secs(600), async {
        let (clients, mib) = (size(16, 64), size(16, 64));
        let site = Site::new();
        site.write("text.bin", &text(mib << 20));
        let gw = site.gateway(&[]);
        let pid = gw.pid();
        bystander(&gw).await;
        gw.reset_peak_rss();
        let baseline = rss_mib(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(bystanders_until(
            gw.url(),
            Duration::from_millis(200),
            stop.clone(),
        ));
        let started = Instant::now();
        let reads: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(streamed_get(ro(&gw), "text.bin")))
            .collect();
        let mut compressed = 0;
        for read in reads {
            let (len, encoded) = read.await.unwrap();
            assert_eq!(len, (mib as u64) << 20);
            compressed += usize::from(encoded);
        }
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        let seen = watch.await.unwrap();
        let peak = gw.peak_rss_mib();
        let worst = seen.iter().max().copied().unwrap_or_default();
        report(
            "5-busy",
            &[
                ("clients", clients.to_string()),
                ("file_mib", mib.to_string()),
                ("compressed_answers", compressed.to_string()),
                ("took_s", secs(took)),
                ("rss_base_mib", format!("{baseline:.1}")),
                ("rss_peak_mib", format!("{peak:.1}")),
                ("bystanders", seen.len().to_string()),
                ("bystander_max_ms", millis(worst)),
            ],
        );
        assert!(compressed >= 1, "the server compresses within its budget");
        assert!(peak <= 256.0, "peak RSS {peak:.1} MiB > 256");
        assert!(worst <= Duration::from_secs(2), "bystander took {worst:?}");
        bystander(&gw).await;
    });
}

/// A prior-knowledge h2c connection posting `body` (a framegate message)
/// on `streams` streams, that never grants flow-control window beyond the
/// initial 64 KiB (per stream and for the whole connection) and reads
/// what comes; how long until the server closed it, `None` if still open
/// after `limit`.
async fn h2_message_non_reader(
    port: u16,
    streams: u32,
    body: Bytes,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let path = b"/.framegate/ro";
    // HPACK (RFC 7541): :method POST, :scheme http (static, indexed),
    // :path, :authority, content-type and accept as literals with indexed
    // names.
    let mut block = vec![0x83, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x41, 1, b'x']);
    for name in [0x5f, 0x53] {
        block.extend_from_slice(&[name, MEDIA_TYPE.len() as u8]);
        block.extend_from_slice(MEDIA_TYPE.as_bytes());
    }
    let mut out = H2_PREFACE.to_vec();
    for k in 0..streams {
        let id = 1 + 2 * k;
        out.extend(h2_frame(0x01, 0x04, id, &block));
        out.extend(h2_frame(0x00, 0x01, id, &body));
    }
    sock.write_all(&out).await.unwrap();
    read_until_closed(&mut sock, Instant::now(), false, limit).await
}

/// HTTP/2 clients whose messages ask a large file and that never grant
/// flow-control window: each such message holds a small chunk beyond the
/// output budget — not a whole chunk in hyper's stream buffer, not a chunk
/// buffer grown to twice its size (512 streams once held 378 MiB) — and is
/// cut at the send timeout. `FRAMEGATE_HOSTILE=full`: 64 connections × 8
/// streams, with the default output budget; CI: 16 × 8 with an 8 MiB one.
#[test]
fn http2_message_non_readers_hold_a_small_chunk_each() {
    run(Duration::from_secs(120), async {
        let site = Site::new();
        site.write("big", &noise(16 << 20, 5));
        let (conns, budget_mib) = (size(16u32, 64), size(8usize, 64));
        let budget = (budget_mib << 20).to_string();
        let gw = site.gateway(&["--send-timeout", "5s", "--output-buffer", &budget]);
        let pid = gw.pid();
        bystander(&gw).await;
        let base = rss_mib(pid);
        gw.reset_peak_rss();
        let mut batch = Batch::new();
        batch.add("get", &[("path", b"big")], None);
        let body = batch.take_body();
        let streams = 8;
        let held: Vec<_> = (0..conns)
            .map(|_| {
                tokio::spawn(h2_message_non_reader(
                    gw.port,
                    streams,
                    body.clone(),
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
            "5-h2-non-readers",
            &[
                ("messages", messages.to_string()),
                ("output_buffer_mib", budget_mib.to_string()),
                ("rss_base_mib", format!("{base:.1}")),
                ("rss_peak_mib", format!("{peak:.1}")),
                ("bystander_ms", millis(during)),
            ],
        );
        // Measured (release, 2 cores): 2 × the budget (allocator slack)
        // plus 80–250 KiB a message; before, ~0.5 MiB a message beyond it.
        let bound = base + 2.0 * budget_mib as f64 + f64::from(messages) * 0.25;
        assert!(peak <= bound, "peak RSS {peak:.1} MiB > {bound:.1}");
        assert!(peak <= 256.0, "peak RSS {peak:.1} MiB > 256");
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
