//! `cargo run --release -p framegate-bench --bin client_memory` — the
//! client's peak RSS while it moves one large file (`FRAMEGATE_BIG_MIB`,
//! default 1024) each way it can: a download over HTTP (framegate), over
//! TCP, over plain HTTPS (nginx) with a connection cut mid-way (resumed
//! with `Range` + `If-Range`), and a `readv` emulated with a streamed `get`
//! (a framegate server without `readv`). Each runs in a child process of
//! its own (this binary, re-executed), which reports its own `VmHWM`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use framegate_client::{Options, Transport};
use framegate_e2e::{Gateway, Nginx, Tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This process's peak RSS in MiB.
fn own_peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The child: one operation, then its peak RSS on stdout.
async fn child(op: &str, url: &str, ca: &str, dest: &str) {
    let mut o = Options::default();
    o.compress = false;
    if !ca.is_empty() {
        o.ca_cert = Some(ca.into());
    }
    let (dir, name) = url.rsplit_once('/').unwrap();
    let t = Transport::open(&format!("{dir}/"), o).await.unwrap();
    let started = Instant::now();
    let bytes = match op {
        "readv" => {
            let mib = 1u64 << 20;
            let size = std::fs::metadata(dest).map_or(0, |m| m.len());
            let ranges = [(0, mib), (size / 2, mib), (size - mib, mib)];
            let parts = t.readv(name, &ranges).await.unwrap();
            parts.iter().map(|p| p.len() as u64).sum()
        }
        _ => t.download(name, Path::new(dest)).await.unwrap(),
    };
    println!(
        "{bytes} {:.1} {:.2}",
        own_peak_mib(),
        started.elapsed().as_secs_f64()
    );
}

/// A proxy that cuts its first connection after `limit` response bytes.
async fn cutting_proxy(upstream: SocketAddr, limit: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let cut = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = sr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        if cut && sent >= limit {
                            break;
                        }
                    }
                };
                tokio::select! { _ = up => {}, () = down => {} }
            });
        }
    });
    addr
}

fn run_child(op: &str, url: &str, ca: &Path, dest: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", op, url])
        .arg(ca)
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], &args[3], &args[4], &args[5]).await;
        return;
    }
    let mib: u64 = std::env::var("FRAMEGATE_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    {
        use std::io::Write;
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
        let mut f = std::fs::File::create(tree.join("big.bin")).unwrap();
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
    }
    let token = dir.path().join("token");
    std::fs::write(&token, "bench-token\n").unwrap();
    let tcp_port = framegate_e2e::free_port();
    let gw = Gateway::start(&tree, &token, &[&format!("--tcp=127.0.0.1:{tcp_port}")]);
    let gw2 = Gateway::start(&tree, &token, &[]);
    // A framegate server without `readv` (it answers unknown-command):
    // the client emulates readv with a streamed get.
    let mut registry = framegate_server::Registry::files();
    registry.register(
        "readv",
        framegate_server::command::read_command(|_call| async {
            Err(framegate_server::command::CommandError::new(
                framegate_wire::ErrorCode::UNKNOWN_COMMAND,
                "no readv here",
            ))
        }),
    );
    let old = framegate_server::Gateway::new(framegate_server::GatewayConfig::new(&tree), registry)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let no_readv = framegate_server::serve(old.clone(), listener, None)
        .await
        .unwrap();
    let tls = Tls::generate(dir.path());
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir, &tls, [gw.port, gw2.port], &tree, "");
    let nginx_addr: SocketAddr = format!("127.0.0.1:{}", nginx.port).parse().unwrap();
    let cut = cutting_proxy(nginx_addr, ((mib as usize) << 20) / 3).await;
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let none = Path::new("");
    let cases: Vec<(&str, &str, String, &Path)> = vec![
        (
            "get over HTTP (framegate)",
            "get",
            format!("http://127.0.0.1:{}/big.bin", gw.port),
            none,
        ),
        (
            "get over TCP (framegate://)",
            "get",
            format!("framegate://127.0.0.1:{tcp_port}/big.bin"),
            none,
        ),
        (
            "get over plain HTTPS, cut at 1/3, resumed",
            "get",
            format!("https://localhost:{}/static/big.bin", cut.port()),
            &tls.ca,
        ),
        (
            "readv emulated with get (3 x 1 MiB)",
            "readv",
            format!("http://{}/big.bin", no_readv.local_addr),
            none,
        ),
    ];
    let _keep = Arc::new(nginx);
    println!("client peak RSS moving a {mib} MiB file:");
    for (what, op, url, ca) in cases {
        let dest = if op == "readv" {
            tree.join("big.bin")
        } else {
            out.join(format!("{}.bin", op.len() + url.len()))
        };
        let line = run_child(op, &url, ca, &dest);
        let mut f = line.split_whitespace();
        let (bytes, peak, secs) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        println!("  {what:<44} {peak:>7} MiB  ({bytes} bytes, {secs} s)");
        if op != "readv" {
            let _ = std::fs::remove_file(&dest);
        }
    }
    let emulated = old.metrics.commands.with_label_values(&["get", "ok"]).get();
    println!("  (the server without readv ran {emulated} get for the emulation)");
}
