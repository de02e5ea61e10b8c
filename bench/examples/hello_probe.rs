//! Probe (not a benchmark row): P7's load alone — 32 tasks sending `hello`
//! messages for `SECS` seconds (3 unless set) — with the rate and the CPU
//! per message of server and client. `FRAMEGATE_SERVER_BIN` names the
//! server; the server's pid is printed first, for a profiler.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use framegate_client::{Options, Transport};
use framegate_e2e::Gateway;
use framegate_wire::Arguments;

fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) * 10.0
}

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::var("SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "bench").unwrap();
    let gw = Gateway::start(&tree, &token, &[]);
    let spid = gw.pid().to_string();
    println!("server pid {spid}");
    let t = Arc::new(
        Transport::open(&format!("{}/", gw.url()), Options::default())
            .await
            .unwrap(),
    );
    for _ in 0..3 {
        let done = Arc::new(AtomicU64::new(0));
        let (s0, c0) = (cpu_ms(&spid), cpu_ms("self"));
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (t, done) = (t.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        t.call("hello", Arguments::new(), None, false)
                            .await
                            .unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in tasks {
            h.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed) as f64;
        println!(
            "{:.0}/s; per message: server cpu {:.1} µs, client cpu {:.1} µs",
            n / secs,
            (cpu_ms(&spid) - s0) * 1e3 / n,
            (cpu_ms("self") - c0) * 1e3 / n
        );
    }
}
