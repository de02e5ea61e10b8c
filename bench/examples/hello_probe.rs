//! Probe (not a benchmark row): P7's load alone — 32 tasks sending `hello`
//! messages for `SECS` seconds (3 unless set) — with the rate and the CPU
//! per message of server and client. `FRAMEGATE_SERVER_BIN` names the
//! server; the server's pid is printed first, for a profiler.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use framegate_client::{Options, Transport};
use framegate_wire::Arguments;

mod probe;
use probe::{cpu_ms, env_or, serve};

#[tokio::main]
async fn main() {
    let secs: f64 = env_or("SECS", 3.0);
    let (_dir, gw) = serve(|_| {}, &[]);
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
