//! `cargo run --release -p framegate-bench` — the end-to-end benchmarks of
//! issue P2–P8, every comparison measured side by side in one run
//! (interleaved where it matters), written to `BENCHMARKS.md` and
//! `benchmarks.svg` at the repository root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod breezy;
mod delay;
mod latency;
mod medium;
mod quick;
mod report;
mod sections;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use framegate_client::{Options, Transport};
use framegate_e2e::*;

use breezy::{Breezy, brz_read};
use framegate_wire::{Arguments, ClientReactor, MEDIA_TYPE};
use futures_util::StreamExt;
use report::{Row, row, write_report};

const SMALL_FILES: usize = 1000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Env {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    tls: Tls,
    gateways: Vec<Gateway>,
    nginx: Nginx,
    plain_port: u16,
}

fn write_small(tree: &Path) {
    let small = tree.join("small");
    std::fs::create_dir_all(&small).unwrap();
    for i in 0..SMALL_FILES {
        std::fs::write(small.join(format!("f{i:04}")), noise(1024, i as u64)).unwrap();
    }
}

fn setup(big: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    write_small(&tree);
    if big {
        write_text(&tree.join("text"));
        write_noise_file(&tree.join("big.bin"), 1 << 30);
        write_noise_file(&tree.join("mid.bin"), 64 << 20);
        medium::write_medium(&tree);
    }
    let token = dir.path().join("token");
    std::fs::write(&token, "bench").unwrap();
    let tls = Tls::generate(dir.path());
    let gateways = vec![
        Gateway::start(&tree, &token, &[]),
        Gateway::start(&tree, &token, &[]),
    ];
    let plain_port = free_port();
    // nginx ends a connection after 1,000 requests by default (HTTP/2
    // too): the 1,000-GET rows would pay a reconnect each round.
    let extra = format!(
        "gzip on; gzip_types text/plain application/octet-stream; gzip_min_length 0;\n\
         keepalive_requests 100000;\n\
         server {{ listen 127.0.0.1:{plain_port}; location / {{ root {}; }} }}",
        tree.display()
    );
    let ngx = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx).unwrap();
    let nginx = Nginx::start(
        &ngx,
        &tls,
        [gateways[0].port, gateways[1].port],
        &tree,
        &extra,
    );
    Env {
        _dir: dir,
        tree,
        tls,
        gateways,
        nginx,
        plain_port,
    }
}

fn write_noise_file(path: &Path, len: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    // Every MiB different: no long-range repeats for a compressor to find.
    for i in 0..len >> 20 {
        f.write_all(&noise(1 << 20, 1000 + i as u64)).unwrap();
    }
}

/// 1,000 small text files: Rust sources from the cargo registry, else generated.
fn write_text(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sources = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let registry = Path::new(&home).join(".cargo/registry/src");
        collect_rs(&registry, &mut sources, 4000);
    }
    sources.sort();
    let mut written = 0;
    for src in sources {
        let Ok(text) = std::fs::read(&src) else {
            continue;
        };
        if text.len() < 200 || text.len() > 8192 {
            continue;
        }
        std::fs::write(dir.join(format!("t{written:04}.txt")), text).unwrap();
        written += 1;
        if written == SMALL_FILES {
            return;
        }
    }
    while written < SMALL_FILES {
        let text = format!(
            "fn item_{written}() -> usize {{\n    // generated text\n    {written} * 2\n}}\n"
        )
        .repeat(20);
        std::fs::write(dir.join(format!("t{written:04}.txt")), text).unwrap();
        written += 1;
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>, max: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if out.len() >= max {
            return;
        }
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out, max);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The four ways the benchmarks read: framegate direct and through nginx,
/// plain HTTP/1.1, and HTTPS (HTTP/2 by ALPN) to nginx.
struct Clients {
    direct: Transport,
    via: Transport,
    h1: reqwest::Client,
    tls: reqwest::Client,
}

impl Env {
    async fn clients(&self) -> Clients {
        Clients {
            direct: Transport::open(&self.direct(), Options::default())
                .await
                .unwrap(),
            via: Transport::open(&self.nginx.url("/"), self.options())
                .await
                .unwrap(),
            h1: reqwest::Client::builder().http1_only().build().unwrap(),
            tls: self.tls_client(),
        }
    }

    fn options(&self) -> Options {
        let mut o = Options::default();
        o.ca_cert = Some(self.tls.ca.clone());
        o
    }
    fn direct(&self) -> String {
        format!("http://127.0.0.1:{}/", self.gateways[0].port)
    }
    fn plain(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.plain_port)
    }
    /// An HTTPS client trusting the test CA (HTTP/2 by ALPN).
    fn tls_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.tls.ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }
}

async fn framegate_batch(t: &Transport) -> f64 {
    framegate_gets(t, SMALL_FILES, |i| format!("small/f{i:04}"), 1024).await
}

/// One batch of `count` `get`s of the files `name(i)`, each `len` bytes
/// long (asserted); seconds until every answer was taken (the answers are
/// dropped after the clock stops).
async fn framegate_gets(
    t: &Transport,
    count: usize,
    name: impl Fn(usize) -> String,
    len: usize,
) -> f64 {
    let started = Instant::now();
    let mut batch = t.batch();
    let slots: Vec<_> = (0..count).map(|i| batch.get(&name(i))).collect();
    let mut r = batch.send().await.unwrap();
    for s in slots {
        assert_eq!(r.take(s).unwrap().len(), len);
    }
    started.elapsed().as_secs_f64()
}

async fn sequential_gets(client: &reqwest::Client, base: &str) -> f64 {
    let started = Instant::now();
    for i in 0..SMALL_FILES {
        let body = client
            .get(format!("{base}small/f{i:04}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), 1024);
    }
    started.elapsed().as_secs_f64()
}

async fn multiplexed_gets(client: &reqwest::Client, base: &str) -> f64 {
    // One request first, so the HTTP/2 connection exists and the 1,000
    // multiplex onto it instead of racing to open connections of their own.
    client
        .get(format!("{base}small/f0000"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let started = Instant::now();
    h2_gets(client, base, 0).await;
    started.elapsed().as_secs_f64()
}

/// The small files from number `from` on, all GETs at once on `client`
/// (HTTP/2, multiplexed).
async fn h2_gets(client: &reqwest::Client, base: &str, from: usize) {
    let gets = (from..SMALL_FILES).map(|i| {
        let url = format!("{base}small/f{i:04}");
        async move {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            assert_eq!(resp.bytes().await.unwrap().len(), 1024);
        }
    });
    futures_util::future::join_all(gets).await;
}

/// P2 and P3: returns (fg direct, nginx h1 sequential, fg via nginx h2, nginx h2 multiplexed) medians.
async fn small_reads(env: &Env, rounds: usize) -> [f64; 4] {
    let Clients {
        direct,
        via,
        h1,
        tls: h2,
    } = env.clients().await;
    let static_base = env.nginx.url("/static/");
    let plain_base = env.plain("");
    // Warm-up: connections and caches.
    framegate_batch(&direct).await;
    framegate_batch(&via).await;
    sequential_gets(&h1, &plain_base).await;
    multiplexed_gets(&h2, &static_base).await;
    let mut m: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        m[0].push(framegate_batch(&direct).await);
        m[1].push(sequential_gets(&h1, &plain_base).await);
        m[2].push(framegate_batch(&via).await);
        m[3].push(multiplexed_gets(&h2, &static_base).await);
    }
    m.map(median)
}

struct Sink(u64);
impl tokio::io::AsyncWrite for Sink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0 += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn fg_get(t: &Transport, path: &str) -> (f64, u64) {
    let started = Instant::now();
    let mut sink = Sink(0);
    let n = t.get_into(path, &mut sink).await.unwrap();
    (started.elapsed().as_secs_f64(), n)
}

async fn http_get(client: &reqwest::Client, url: &str) -> (f64, u64) {
    let started = Instant::now();
    let resp = client.get(url).send().await.unwrap();
    assert!(resp.status().is_success());
    let mut stream = resp.bytes_stream();
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        n += c.unwrap().len() as u64;
    }
    (started.elapsed().as_secs_f64(), n)
}

fn mib_s(secs: f64, bytes: u64) -> f64 {
    bytes as f64 / secs / (1 << 20) as f64
}

/// Bytes of the response body of one framegate message of 1,000 `get`s.
async fn framegate_wire_bytes(url: &str, compress: bool) -> u64 {
    let mut reactor = ClientReactor::default();
    for i in 0..SMALL_FILES {
        reactor
            .request(
                "get",
                &Arguments::new()
                    .with("path", format!("text/t{i:04}.txt"))
                    .unwrap(),
                None,
            )
            .unwrap();
    }
    let mut body = BytesMut::new();
    reactor.write_transmit(&mut body);
    let resp = reqwest::Client::new()
        .post(format!("{url}.framegate/ro"))
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .header(
            "framegate-accept-encoding",
            if compress {
                "zstd-8mb, identity"
            } else {
                "identity"
            },
        )
        .body(body.freeze())
        .send()
        .await
        .unwrap();
    resp.bytes().await.unwrap().len() as u64
}

async fn nginx_gzip_bytes(base: &str) -> (u64, u64) {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let (mut wire, mut raw) = (0u64, 0u64);
    for i in 0..SMALL_FILES {
        let url = format!("{base}text/t{i:04}.txt");
        let resp = client
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("gzip")
        );
        wire += resp.bytes().await.unwrap().len() as u64;
        raw += client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len() as u64;
    }
    (wire, raw)
}

/// Completed operations per second with `tasks` concurrent loops for `secs`.
async fn rate<F, Fut>(tasks: usize, secs: f64, op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    op().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--latency-only") {
        // The latency rows alone, printed (BENCHMARKS.md untouched).
        let env = setup(false);
        let brz = Breezy::start(&env);
        let (rows, notes) = latency::rows(&env, brz.as_ref().map(|b| b.port)).await;
        for r in rows {
            println!(
                "{} | {} | {} | {} | {}",
                r.id, r.framegate, r.other, r.ratio_text, r.goal_text
            );
        }
        for n in notes {
            println!("{n}");
        }
        return;
    }
    if std::env::args().any(|a| a == "--quick") {
        quick::run().await;
        return;
    }
    let started = Instant::now();
    eprintln!(
        "setting up (1 GiB and 64 MiB files, 1,000 small, 1,000 × 1 MiB and 1,000 text files)..."
    );
    let env = setup(true);
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    eprintln!("P2/P3: 1,000 small reads...");
    let [fg_direct, ngx_seq, fg_via, ngx_h2] = small_reads(&env, 7).await;
    rows.push(row("P2", "1,000 × 1 KiB reads: one framegate message vs sequential HTTP/1.1 keep-alive GETs (nginx static, loopback)", ms(fg_direct), ms(ngx_seq), ngx_seq / fg_direct, format!("{:.1}× faster", ngx_seq / fg_direct), 10.0, "≥ 10×"));
    rows.push(row("P3", "1,000 × 1 KiB reads through nginx TLS: one framegate message vs 1,000 multiplexed HTTP/2 GETs", ms(fg_via), ms(ngx_h2), ngx_h2 / fg_via, format!("{:.2}× faster", ngx_h2 / fg_via), 2.0, "≥ 2×"));
    eprintln!("P4/P5: 1 GiB...");
    let Clients {
        direct,
        via,
        h1: plain,
        tls,
    } = env.clients().await;
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut peak_single: f64 = 0.0;
    for _ in 0..3 {
        env.gateways[0].reset_peak_rss();
        let (s, n) = fg_get(&direct, "big.bin").await;
        peak_single = peak_single.max(env.gateways[0].peak_rss_mib());
        assert_eq!(n, 1 << 30);
        a.push(mib_s(s, n));
        let (s, n) = http_get(&plain, &env.plain("big.bin")).await;
        assert_eq!(n, 1 << 30);
        b.push(mib_s(s, n));
        let (s, n) = fg_get(&via, "big.bin").await;
        c.push(mib_s(s, n));
        let (s, n) = http_get(&tls, &env.nginx.url("/static/big.bin")).await;
        d.push(mib_s(s, n));
    }
    let (a, b, c, d) = (median(a), median(b), median(c), median(d));
    rows.push(row(
        "P4",
        "1 GiB file, direct on loopback: framegate `get` vs nginx static GET (sendfile)",
        format!("{a:.0} MiB/s"),
        format!("{b:.0} MiB/s"),
        a / b,
        format!("{:.2}× nginx", a / b),
        0.8,
        "≥ 0.8×",
    ));
    rows.push(row(
        "P4-nginx",
        "1 GiB file through nginx TLS: framegate `get` vs nginx static",
        format!("{c:.0} MiB/s"),
        format!("{d:.0} MiB/s"),
        c / d,
        format!("{:.2}× nginx", c / d),
        0.8,
        "≥ 0.8×",
    ));
    rows.push(row(
        "P5",
        "server peak RSS during the 1 GiB `get` (P4)",
        format!("{peak_single:.1} MiB"),
        "—".into(),
        64.0 / peak_single,
        format!("{peak_single:.1} MiB"),
        1.0,
        "≤ 64 MiB",
    ));
    env.gateways[0].reset_peak_rss();
    let direct = Arc::new(direct);
    let reads = (0..64).map(|_| {
        let t = direct.clone();
        async move { fg_get(&t, "mid.bin").await }
    });
    let results = futures_util::future::join_all(reads).await;
    assert!(results.iter().all(|(_, n)| *n == 64 << 20));
    let peak_many = env.gateways[0].peak_rss_mib();
    let peak_16 = medium::peak_with_16_threads(&env).await;
    rows.push(row(
        "P5-64",
        "server peak RSS, 64 concurrent clients each reading 64 MiB",
        format!("{peak_many:.1} MiB"),
        "—".into(),
        256.0 / peak_many,
        format!("{peak_many:.1} MiB"),
        1.0,
        "≤ 256 MiB",
    ));
    rows.push(row(
        "P5-64/16",
        "P5-64 with 16 runtime threads, as on a 16-core machine (`TOKIO_WORKER_THREADS=16`; the file pool has 8 threads on any machine)",
        format!("{peak_16:.1} MiB"),
        "—".into(),
        256.0 / peak_16,
        format!("{peak_16:.1} MiB"),
        1.0,
        "≤ 256 MiB",
    ));

    eprintln!("P4m: 1,000 × 1 MiB...");
    let (fg_medium, ngx_medium) = medium::medium_reads(&env, 3).await;
    rows.push(row(
        "P4m",
        "1,000 × 1 MiB files, loopback: one framegate message vs sequential HTTP/1.1 keep-alive GETs (nginx static, sendfile)",
        ms(fg_medium),
        ms(ngx_medium),
        ngx_medium / fg_medium,
        format!("{:.2}× faster", ngx_medium / fg_medium),
        1.5,
        "≥ 1.5×",
    ));

    eprintln!("P6: bytes on the wire for 1,000 text files...");
    let fg_zstd = framegate_wire_bytes(&env.direct(), true).await;
    let fg_identity = framegate_wire_bytes(&env.direct(), false).await;
    let (gzip, raw) = nginx_gzip_bytes(&env.plain("")).await;
    rows.push(row("P6", format!("bytes on the wire (bodies) for 1,000 text files, {raw} bytes raw: framegate zstd-8mb (one message) vs nginx gzip (per file)"), format!("{fg_zstd} B (identity: {fg_identity} B)"), format!("{gzip} B"), 0.5 / (fg_zstd as f64 / gzip as f64), format!("{:.2}× nginx's bytes", fg_zstd as f64 / gzip as f64), 1.0, "≤ 0.5×"));

    eprintln!("P7: small messages per second...");
    let t = Arc::new(
        Transport::open(&env.direct(), Options::default())
            .await
            .unwrap(),
    );
    let fg_rate = rate(32, 3.0, {
        let t = t.clone();
        move || {
            let t = t.clone();
            async move {
                t.call("hello", Arguments::new(), None, false)
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let url = env.plain("small/f0000");
    let ngx_rate = rate(32, 3.0, move || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
    })
    .await;
    rows.push(row("P7", "small messages per second, 32 concurrent clients, loopback: framegate `hello` POSTs vs nginx static 1 KiB GETs", format!("{fg_rate:.0}/s"), format!("{ngx_rate:.0}/s"), fg_rate / ngx_rate, format!("{:.2}× nginx", fg_rate / ngx_rate), 0.5, "≥ 0.5×"));

    eprintln!("P8: Breezy smart server...");
    let brz = Breezy::start(&env);
    let brz_url = |b: &Breezy| format!("bzr://127.0.0.1:{}/", b.port);
    match brz.as_ref().and_then(|b| brz_read(&brz_url(b), 3)) {
        Some((_, brz)) => rows.push(row("P8", "1,000 × 1 KiB reads: Breezy smart server (`brz serve`, bzr://, one get each) vs one framegate message", ms(fg_direct), ms(brz), brz / fg_direct, format!("{:.0}× faster", brz / fg_direct), 50.0, "≥ 50×")),
        None => {
            eprintln!("P8 skipped: Breezy could not be installed or run");
            notes.push("P8 was not run: Breezy could not be installed or run.".into());
        }
    }

    let (latency_rows, latency_notes) = latency::rows(&env, brz.as_ref().map(|b| b.port)).await;
    rows.extend(latency_rows);
    notes.extend(latency_notes);
    drop(brz);

    let elapsed = started.elapsed().as_secs_f64();
    write_report(&rows, &notes, elapsed);
    eprintln!("done in {elapsed:.0} s: BENCHMARKS.md and benchmarks.svg written");
}
