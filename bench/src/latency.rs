//! Latency rows: P2, P3 and P8 with a round trip added by a userspace
//! delay proxy ([`link_proxy`], which also charges every new connection
//! TCP's handshake round trip), cold (a new client: connect, TLS, probe or
//! protocol hello, then the reads) and warm (the connection open).
//!
//! Runs: `FRAMEGATE_BENCH_RTT_RUNS` (default 3) for the fast rows — a
//! framegate message, HTTP/2 multiplexed GETs — and
//! `FRAMEGATE_BENCH_SLOW_RUNS` (default 1) for the rows that take a round
//! trip per file (sequential HTTP/1.1, Breezy: 1,000 × the RTT each).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use framegate_client::{Options, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::delay::link_proxy;
use crate::report::{Row, row};
use crate::{Env, framegate_batch, h2_gets, median, sequential_gets};

/// Round trips measured, in milliseconds.
pub(crate) const RTTS_MS: [u64; 2] = [20, 50];

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Median and range of `v` (seconds) as milliseconds.
fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() == 1 {
        format!("{:.1} ms (1 run)", v[0] * 1e3)
    } else {
        format!(
            "{:.1} ms ({:.1}–{:.1})",
            median(v.to_vec()) * 1e3,
            lo * 1e3,
            hi * 1e3
        )
    }
}

/// Cold and warm times (seconds) of one way of reading, one per run.
#[derive(Default)]
struct Times {
    cold: Vec<f64>,
    warm: Vec<f64>,
}

impl Times {
    fn push(&mut self, cold: f64, warm: f64) {
        self.cold.push(cold);
        self.warm.push(warm);
    }
}

/// An echo server behind the proxy: what a ping-pong of one byte takes on
/// an open connection, and the first one on a new connection (connect
/// included), as medians of a few, in milliseconds.
async fn calibrate(rtt: Duration) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() {
                    if s.write_all(&b).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (mut first, mut open) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let proxy = link_proxy(echo, rtt).await;
        let started = Instant::now();
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [7u8; 1];
        s.write_all(&b).await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        first.push(started.elapsed().as_secs_f64());
        for _ in 0..5 {
            let started = Instant::now();
            s.write_all(&b).await.unwrap();
            s.read_exact(&mut b).await.unwrap();
            open.push(started.elapsed().as_secs_f64());
        }
    }
    server.abort();
    (median(open) * 1e3, median(first) * 1e3)
}

/// 1,000 multiplexed HTTP/2 GETs from a new client: the first GET opens the
/// connection (TCP + TLS), the other 999 follow it at once, multiplexed.
/// Returns (cold, warm): warm is all 1,000 again on that connection.
async fn h2_cold_warm(env: &Env, base: &str) -> (f64, f64) {
    let client = env.tls_client();
    let started = Instant::now();
    let first = client
        .get(format!("{base}small/f0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(first.bytes().await.unwrap().len(), 1024);
    h2_gets(&client, base, 1).await;
    let cold = started.elapsed().as_secs_f64();
    let started = Instant::now();
    h2_gets(&client, base, 0).await;
    (cold, started.elapsed().as_secs_f64())
}

/// A framegate batch from a new client (`open_lazy`: `hello` goes with the
/// batch), then again on the open connection.
async fn framegate_cold_warm(url: &str, options: Options) -> (f64, f64) {
    let started = Instant::now();
    let t = Transport::open_lazy(url, options).await.unwrap();
    framegate_batch(&t).await;
    let cold = started.elapsed().as_secs_f64();
    (cold, framegate_batch(&t).await)
}

/// The latency rows, and notes for the report (calibration, what was
/// skipped). `brz_port`: a running `brz serve` of the small files, if any.
pub(crate) async fn rows(env: &Env, brz_port: Option<u16>) -> (Vec<Row>, Vec<String>) {
    let runs = knob("FRAMEGATE_BENCH_RTT_RUNS", 3);
    let slow_runs = knob("FRAMEGATE_BENCH_SLOW_RUNS", 1);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut calibration = Vec::new();
    for rtt_ms in RTTS_MS {
        let rtt = Duration::from_millis(rtt_ms);
        eprintln!("latency rows at {rtt_ms} ms...");
        let (open, first) = calibrate(rtt).await;
        calibration.push(format!(
            "at {rtt_ms} ms a one-byte ping-pong on an open connection took {open:.1} ms, \
             the first on a new connection (connect included) {first:.1} ms (a real link: \
             {rtt_ms} and {} ms)",
            2 * rtt_ms
        ));
        let gateway = addr(env.gateways[0].port);
        let nginx = addr(env.nginx.port);
        let mut fg = Times::default();
        let mut fg_tls = Times::default();
        let mut h1 = Times::default();
        let mut h2 = Times::default();
        let mut brz = Times::default();
        for _ in 0..runs {
            // A new proxy per run: an address this process never probed.
            let p = link_proxy(gateway, rtt).await;
            let (c, w) = framegate_cold_warm(&format!("http://{p}/"), Options::default()).await;
            fg.push(c, w);
            let p = link_proxy(nginx, rtt).await;
            let (c, w) = framegate_cold_warm(&format!("https://{p}/"), env.options()).await;
            fg_tls.push(c, w);
            let p = link_proxy(nginx, rtt).await;
            let (c, w) = h2_cold_warm(env, &format!("https://{p}/static/")).await;
            h2.push(c, w);
        }
        for _ in 0..slow_runs {
            let p = link_proxy(addr(env.plain_port), rtt).await;
            let client = reqwest::Client::builder().http1_only().build().unwrap();
            let base = format!("http://{p}/");
            let cold = sequential_gets(&client, &base).await;
            h1.push(cold, sequential_gets(&client, &base).await);
            if let Some(port) = brz_port {
                let p = link_proxy(addr(port), rtt).await;
                match crate::breezy::brz_read(&format!("bzr://{p}/"), 1) {
                    Some((c, w)) => brz.push(c, w),
                    None => notes.push(format!("P8 at {rtt_ms} ms: the Breezy client failed.")),
                }
            }
        }
        for (state, pick) in [("warm", 1), ("cold", 0)] {
            let get = |t: &Times| {
                if pick == 1 {
                    t.warm.clone()
                } else {
                    t.cold.clone()
                }
            };
            let goal = |at20: f64| if rtt_ms == 20 && pick == 1 { at20 } else { 0.0 };
            let ratio = |other: &Times, ours: &Times| median(get(other)) / median(get(ours));
            let r = ratio(&h1, &fg);
            rows.push(row(
                leak(format!("P2-{rtt_ms}{}", &state[..1])),
                format!(
                    "P2 at {rtt_ms} ms RTT, {state}: one framegate message vs sequential HTTP/1.1 \
                     keep-alive GETs (nginx static)"
                ),
                spread(&get(&fg)),
                spread(&get(&h1)),
                r,
                format!("{r:.0}× faster"),
                goal(500.0),
                if goal(1.0) > 0.0 { "≥ 500×" } else { "—" },
            ));
            let r = ratio(&h2, &fg_tls);
            rows.push(row(
                leak(format!("P3-{rtt_ms}{}", &state[..1])),
                format!(
                    "P3 at {rtt_ms} ms RTT, {state}: one framegate message through nginx TLS vs \
                     1,000 multiplexed HTTP/2 GETs (nginx static)"
                ),
                spread(&get(&fg_tls)),
                spread(&get(&h2)),
                r,
                format!("{r:.1}× faster"),
                goal(5.0),
                if goal(1.0) > 0.0 { "≥ 5×" } else { "—" },
            ));
            if !brz.warm.is_empty() {
                let r = ratio(&brz, &fg);
                rows.push(row(
                    leak(format!("P8-{rtt_ms}{}", &state[..1])),
                    format!(
                        "P8 at {rtt_ms} ms RTT, {state}: one framegate message vs Breezy's smart \
                         server (bzr://, one get each)"
                    ),
                    spread(&get(&fg)),
                    spread(&get(&brz)),
                    r,
                    format!("{r:.0}× faster"),
                    goal(300.0),
                    if goal(1.0) > 0.0 { "≥ 300×" } else { "—" },
                ));
            }
        }
    }
    notes.push(format!(
        "Latency rows (P2/P3/P8 at 20 and 50 ms): the round trip is added by a userspace delay \
         proxy between the client and the server (every chunk held RTT/2 each way; a new \
         connection's first bytes held a further RTT, for TCP's handshake, which the proxy \
         cannot delay). Cold: a new client — connect, TLS where used, framegate's `hello` (sent \
         with the batch), Breezy's protocol negotiation — then the 1,000 reads; HTTP/2's first \
         GET opens the connection and the other 999 follow it. Warm: the same again on the open \
         connection. Medians and ranges of {runs} runs (sequential GETs and Breezy: {slow_runs}, \
         each taking 1,000 round trips). Calibration: {}.",
        calibration.join("; ")
    ));
    (rows, notes)
}

/// Row ids are `&'static str`; the few made here live for the run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
