//! File validators against the real binary (docs/protocol.md, "File
//! versions"): a plain GET of a large file — whole, or resumed with
//! `Range` + `If-Range` — is read from the file the request opened, in
//! pieces as the client takes them, so the server's memory stays flat
//! whatever the file's size; its `ETag` is the quoted `stat` etag. The
//! validators' semantics are tested in-process in
//! `server/tests/validators.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use framegate_e2e::hostile::*;
use framegate_e2e::*;
use futures_util::StreamExt;

/// The test file: 1 MiB of noise, `mib` times.
const BLOCK: usize = 1 << 20;

/// Reads a plain response body as it streams in, checking it against the
/// file from byte `from` on, pausing once after the first chunk (a server
/// that read ahead of its client would show it then); its length.
async fn check_streamed(resp: reqwest::Response, block: &[u8], from: usize) -> usize {
    let mut stream = resp.bytes_stream();
    let mut at = from;
    let mut paused = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for (i, byte) in chunk.iter().enumerate() {
            assert_eq!(*byte, block[(at + i) % BLOCK], "byte {}", at + i);
        }
        at += chunk.len();
        if !paused {
            paused = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    at - from
}

#[test]
fn plain_get_of_a_64_mib_file_keeps_server_memory_flat() {
    run(Duration::from_secs(300), async {
        let mib = 64;
        let site = Site::new();
        let block = noise(BLOCK, 11);
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(site.tree.join("big.bin")).unwrap();
            for _ in 0..mib {
                file.write_all(&block).unwrap();
            }
        }
        let size = mib * BLOCK;
        let gw = site.gateway(&[]);
        let pid = gw.pid();
        bystander(&gw).await;

        let mut batch = Batch::new();
        batch.add("stat", &[("path", b"big.bin")], None);
        let body = batch.take_body();
        let http = message_client();
        let answer = post_message(&http, &ro(&gw), TOKEN, body.into()).await;
        let stat = framegate_wire::StatAnswer::decode(match &batch.decode(&answer.unwrap())[0] {
            Outcome::Ok(bytes) => bytes,
            other => panic!("stat: {}", other.describe()),
        })
        .unwrap();
        let etag = format!("\"{}\"", stat.etag.expect("a file's etag"));

        gw.reset_peak_rss();
        let base = rss_mib(pid);
        let url = format!("{}/big.bin", gw.url());
        let whole = http.get(&url).send().await.unwrap();
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(whole.content_length(), Some(size as u64));
        assert_eq!(check_streamed(whole, &block, 0).await, size);

        // Resumed after the first 5 MiB + 3 bytes, as `curl -C -` would.
        let from = 5 * BLOCK + 3;
        let rest = http
            .get(&url)
            .header("range", format!("bytes={from}-"))
            .header("if-range", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), 206);
        assert_eq!(
            rest.headers()["content-range"].to_str().unwrap(),
            format!("bytes {from}-{}/{size}", size - 1)
        );
        assert_eq!(check_streamed(rest, &block, from).await, size - from);
        let peak = gw.peak_rss_mib();
        report(
            "validators-plain-64mib",
            &[
                ("file_mib", mib.to_string()),
                ("rss_base_mib", format!("{base:.1}")),
                ("rss_peak_mib", format!("{peak:.1}")),
            ],
        );
        // A piece (256 KiB) and hyper's buffers per GET, plus allocator
        // slack: far from the 64 MiB a buffered answer would cost.
        assert!(
            peak <= base + 16.0,
            "peak RSS {peak:.1} MiB, base {base:.1} MiB"
        );
        bystander(&gw).await;
    });
}
