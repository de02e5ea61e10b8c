//! `cargo run --release -p framegate-bench --bin rtt` — a batch of 1,000
//! `get`s of 1 KiB files through a userspace delay proxy (the kernel here
//! has no netem) with a 20 ms round trip: warm (connection open, probe
//! done) and cold (a new client: connect, probe, then the batch), set
//! against the round trip. The same over HTTPS through a real nginx
//! (`deploy/nginx/`, certificates made at run time), the proxy between
//! the client and nginx so TLS handshakes pay the round trip. Also timed
//! through the proxy: a bare TCP connect, and a TCP connect plus a TLS
//! handshake (tokio-rustls), the budgets of the cold acceptance checks.
//! `FRAMEGATE_RTT_MS` changes the round trip, `FRAMEGATE_RTT_RUNS` the
//! repetitions (default 7); prints medians and ranges, then the acceptance
//! checks (warm ≤ 1.5 RTT + 10 ms; cold ≤ connect [+ TLS] + 1.5 RTT + 10 ms).
//!
//! The proxy delays bytes, not TCP handshakes: the client's connect
//! completes against the proxy on loopback, so "connect" here is about
//! zero where a real link takes one round trip, on both sides of the cold
//! checks alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framegate_client::{Options, Transport};
use framegate_e2e::{Gateway, Nginx, Tls, noise};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const FILES: usize = 1000;

#[path = "../delay.rs"]
mod delay;
use delay::delay_proxy;

/// A TLS client trusting only `ca` and offering what the framegate
/// client offers (ALPN `h2`, then `http/1.1`); it never resumes a
/// session, so every handshake is a full one, as a new client's is.
fn tls_connector(ca: &Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// A bare TCP connect to `addr`, timed.
async fn connect(addr: SocketAddr) -> (TcpStream, Duration) {
    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let took = started.elapsed();
    tcp.set_nodelay(true).unwrap();
    (tcp, took)
}

/// A bare TCP connect to `addr` and a TLS handshake over it, timed
/// together; with what was agreed (protocol version and ALPN).
async fn connect_and_handshake(addr: SocketAddr, tls: &TlsConnector) -> (Duration, String) {
    let started = Instant::now();
    let (tcp, _) = connect(addr).await;
    let stream = tls.connect(ServerName::from(addr.ip()), tcp).await.unwrap();
    let took = started.elapsed();
    let session = stream.get_ref().1;
    let agreed = format!(
        "{:?}, ALPN {}",
        session.protocol_version().unwrap(),
        session
            .alpn_protocol()
            .map_or_else(|| "none".into(), String::from_utf8_lossy)
    );
    (took, agreed)
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

/// The measurements of one row, in milliseconds, one per run.
#[derive(Default)]
struct Row(Vec<f64>);

impl Row {
    fn push(&mut self, d: Duration) {
        self.0.push(ms(d));
    }

    fn median(&self) -> f64 {
        median(&self.0)
    }

    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// Prints `label`, median and range, and the median in round trips.
    fn print(&self, label: &str, rtt: f64) {
        println!(
            "  {label:<26}{}  = {:.2} RTT",
            summary(self.0.clone()),
            self.median() / rtt
        );
    }

    /// Prints whether the median is within `budget` (ms, spelled out as
    /// `formula`), and how many runs are.
    fn check(&self, label: &str, formula: &str, budget: f64) {
        let within = self.0.iter().filter(|&&v| v <= budget).count();
        println!(
            "  {label:<11}median {:6.1} ms (max {:6.1}) <= {formula} = {budget:.1} ms: {} ({within}/{} runs within)",
            self.median(),
            self.max(),
            if self.median() <= budget {
                "holds"
            } else {
                "FAILS"
            },
            self.0.len(),
        );
    }
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
    // HTTPS as deployed: nginx in front of two gateways on the same tree.
    let tls = Tls::generate(dir.path());
    let gw2 = Gateway::start(&tree, &token, &[]);
    let ngx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let nginx = Nginx::start(&ngx_dir, &tls, [gw.port, gw2.port], &tree, "");
    let nginx_addr: SocketAddr = format!("127.0.0.1:{}", nginx.port).parse().unwrap();
    let tls_client = tls_connector(&tls.ca);
    let (mut cold, mut open, mut warm, mut direct, mut tcp) = (
        Row::default(),
        Row::default(),
        Row::default(),
        Row::default(),
        Row::default(),
    );
    let (mut https_cold, mut https_warm, mut https_open, mut tcp_tls) = (
        Row::default(),
        Row::default(),
        Row::default(),
        Row::default(),
    );
    let mut agreed = String::new();
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
        cold.push(started.elapsed());
        warm.push(batch(&t).await);
        // Cold the old way: a probe of its own, then the batch.
        let proxy = delay_proxy(upstream, rtt).await;
        let url = format!("http://{proxy}/small/");
        let started = Instant::now();
        let t = Transport::open(&url, o.clone()).await.unwrap();
        batch(&t).await;
        open.push(started.elapsed());
        let t = Transport::open(&format!("http://{upstream}/small/"), o.clone())
            .await
            .unwrap();
        batch(&t).await;
        direct.push(batch(&t).await);
        // What a cold plain-HTTP batch may add to its round trips.
        let proxy = delay_proxy(upstream, rtt).await;
        tcp.push(connect(proxy).await.1);

        // HTTPS: client -> delay proxy -> nginx -> gateway.
        let mut o = o;
        o.ca_cert = Some(tls.ca.clone());
        let proxy = delay_proxy(nginx_addr, rtt).await;
        let (took, what) = connect_and_handshake(proxy, &tls_client).await;
        tcp_tls.push(took);
        agreed = what;
        let proxy = delay_proxy(nginx_addr, rtt).await;
        let url = format!("https://{proxy}/small/");
        let started = Instant::now();
        let t = Transport::open_lazy(&url, o.clone()).await.unwrap();
        https_open.push(started.elapsed());
        batch(&t).await;
        https_cold.push(started.elapsed());
        https_warm.push(batch(&t).await);
    }
    let r = ms(rtt);
    println!("1,000 gets of 1 KiB, one batch, injected RTT {r:.0} ms, {runs} runs:");
    warm.print("warm batch", r);
    cold.print("cold, hello folded", r);
    open.print("cold, probe first", r);
    println!("  {:<26}{}", "warm, no proxy", summary(direct.0));
    tcp.print("connect", r);
    https_warm.print("https warm batch", r);
    https_cold.print("https cold, hello folded", r);
    https_open.print("  of which open_lazy", r);
    tcp_tls.print("connect + TLS", r);
    println!(
        "  (connect: a bare TCP connect through the proxy; connect + TLS: the same and a \
         tokio-rustls handshake with nginx: {agreed})"
    );
    println!("acceptance (the median against the budget; budgets from the measured medians):");
    let slack = 1.5 * r + 10.0;
    warm.check("warm", "1.5 RTT + 10 ms", slack);
    cold.check(
        "cold",
        &format!("connect {:.1} + 1.5 RTT + 10 ms", tcp.median()),
        tcp.median() + slack,
    );
    https_warm.check("https warm", "1.5 RTT + 10 ms", slack);
    https_cold.check(
        "https cold",
        &format!("connect + TLS {:.1} + 1.5 RTT + 10 ms", tcp_tls.median()),
        tcp_tls.median() + slack,
    );
    if tcp.median() < r / 2.0 {
        println!(
            "  (the proxy delays bytes, not TCP handshakes: connect is loopback here; \
             a real link adds 1 RTT to connect and to both cold figures)"
        );
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
