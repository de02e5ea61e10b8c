//! Probe (not a benchmark row): CPU time of server and client for one
//! message of 1,000 × 1 MiB `get`s, through the client library (answers
//! held, `MODE=lib`) and as a raw POST read and dropped (`MODE=raw`);
//! `FRAMEGATE_SERVER_BIN` names the server, `N` the files.
use std::time::Instant;

use framegate_client::{Options, Transport};
use framegate_e2e::{Batch, message_client, noise};
use futures_util::StreamExt;

mod probe;
use probe::{cpu_ms, env_or, serve};

#[tokio::main]
async fn main() {
    let n: usize = env_or("N", 1000);
    let extra: Vec<String> = std::env::var("EXTRA")
        .map(|e| e.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let fill = |tree: &std::path::Path| {
        std::fs::create_dir_all(tree.join("m")).unwrap();
        for i in 0..n {
            std::fs::write(tree.join(format!("m/{i:04}")), noise(1 << 20, i as u64)).unwrap();
        }
    };
    let (_dir, gw) = serve(fill, &extra);
    let spid = gw.pid().to_string();
    let url = format!("{}/", gw.url());
    let t = Transport::open(&url, Options::default()).await.unwrap();
    let http = message_client();
    let mode = std::env::var("MODE").unwrap_or_default();
    for round in 0..6 {
        if mode != "raw" {
            // A: the client library, answers held.
            let (s0, c0, w) = (cpu_ms(&spid), cpu_ms("self"), Instant::now());
            let mut batch = t.batch();
            let slots: Vec<_> = (0..n).map(|i| batch.get(&format!("m/{i:04}"))).collect();
            let mut r = batch.send().await.unwrap();
            for s in slots {
                assert_eq!(r.take(s).unwrap().len(), 1 << 20);
            }
            drop(r);
            println!(
                "round {round}: lib {:.0} ms (server cpu {:.0}, client cpu {:.0})",
                w.elapsed().as_secs_f64() * 1e3,
                cpu_ms(&spid) - s0,
                cpu_ms("self") - c0
            );
            if mode == "lib" {
                continue;
            }
        }
        // B: raw POST, response read and dropped chunk by chunk.
        let mut b = Batch::new();
        for i in 0..n {
            b.add("get", &[("path", format!("m/{i:04}").as_bytes())], None);
        }
        let (s0, c0, w) = (cpu_ms(&spid), cpu_ms("self"), Instant::now());
        let resp = http
            .post(format!("{}/.framegate/ro", gw.url()))
            .header("content-type", "application/vnd.framegate.frames-v1")
            .header("accept", "application/vnd.framegate.frames-v1")
            .header("authorization", "Bearer bench")
            .body(b.take_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut st = resp.bytes_stream();
        let mut total = 0usize;
        let mut chunks = 0usize;
        while let Some(c) = st.next().await {
            total += c.unwrap().len();
            chunks += 1;
        }
        let bb = (
            w.elapsed().as_secs_f64() * 1e3,
            cpu_ms(&spid) - s0,
            cpu_ms("self") - c0,
        );
        println!(
            "round {round}: raw {:.0} ms (server cpu {:.0}, client cpu {:.0}) {total} B in {chunks} chunks",
            bb.0, bb.1, bb.2
        );
    }
}
