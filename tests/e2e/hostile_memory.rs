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

use bytes::BytesMut;
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
