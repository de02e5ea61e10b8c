//! `cargo run --release -p framegate-bench --bin rtt` — a batch of 1,000
//! `get`s of 1 KiB files through a userspace delay proxy (the kernel here
//! has no netem) with a 20 ms round trip: warm (connection open, probe
//! done) and cold (a new client: connect, probe, then the batch), set
//! against the round trip. `FRAMEGATE_RTT_MS` changes the round trip,
//! `FRAMEGATE_RTT_RUNS` the repetitions (default 7); prints medians and
//! ranges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use framegate_client::{Options, Transport};
use framegate_e2e::{Gateway, noise};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const FILES: usize = 1000;

/// Copies `from` to `to`, each read delivered `delay` after it was read
/// (in order): a one-way latency.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due.into()).await;
        if to.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

/// A proxy to `upstream` adding `rtt / 2` each way.
async fn delay_proxy(upstream: SocketAddr, rtt: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed(cr, sw, rtt / 2));
            tokio::spawn(delayed(sr, cw, rtt / 2));
        }
    });
    addr
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "median {:.1} ms (range {:.1}-{:.1})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

async fn batch(t: &Transport) -> Duration {
    let started = Instant::now();
    let mut b = t.batch();
    let slots: Vec<_> = (0..FILES).map(|i| b.get(&format!("f{i:04}"))).collect();
    let mut results = b.send().await.unwrap();
    for slot in slots {
        assert_eq!(results.take(slot).unwrap().len(), 1024);
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let rtt = Duration::from_millis(
        std::env::var("FRAMEGATE_RTT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    let runs: usize = std::env::var("FRAMEGATE_RTT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("small")).unwrap();
    for i in 0..FILES {
        std::fs::write(tree.join(format!("small/f{i:04}")), noise(1024, i as u64)).unwrap();
    }
    let token = dir.path().join("token");
    std::fs::write(&token, "bench-token\n").unwrap();
    let gw = Gateway::start(&tree, &token, &[]);
    let upstream: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let (mut cold, mut open, mut warm, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        // A new proxy per run: a base URL this process never probed.
        let proxy = delay_proxy(upstream, rtt).await;
        let url = format!("http://{proxy}/small/");
        let mut o = Options::default();
        o.compress = false;
        // Cold: a lazy open, `hello` going with the batch.
        let started = Instant::now();
        let t = Transport::open_lazy(&url, o.clone()).await.unwrap();
        batch(&t).await;
        cold.push(ms(started.elapsed()));
        warm.push(ms(batch(&t).await));
        // Cold the old way: a probe of its own, then the batch.
        let proxy = delay_proxy(upstream, rtt).await;
        let url = format!("http://{proxy}/small/");
        let started = Instant::now();
        let t = Transport::open(&url, o.clone()).await.unwrap();
        batch(&t).await;
        open.push(ms(started.elapsed()));
        let t = Transport::open(&format!("http://{upstream}/small/"), o)
            .await
            .unwrap();
        batch(&t).await;
        direct.push(ms(batch(&t).await));
    }
    let r = ms(rtt);
    println!("1,000 gets of 1 KiB, one batch, injected RTT {r:.0} ms, {runs} runs:");
    println!(
        "  warm batch          {}  = {:.2} RTT",
        summary(warm.clone()),
        median(&warm) / r
    );
    println!(
        "  cold, hello folded  {}  = {:.2} RTT",
        summary(cold.clone()),
        median(&cold) / r
    );
    println!(
        "  cold, probe first   {}  = {:.2} RTT",
        summary(open.clone()),
        median(&open) / r
    );
    println!("  warm, no proxy      {}", summary(direct));
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
