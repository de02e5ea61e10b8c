//! Probe (not a benchmark row): one message of 1,000 `get`s of 1 KiB files
//! (random; `TEXT=1`: text), zstd asked for and not, `ROUNDS` of each (60
//! unless set): median time and CPU
//! per message of server and client. `FRAMEGATE_SERVER_BIN` names the
//! server.
use std::time::Instant;

use framegate_client::{Options, Transport};
use framegate_e2e::noise;

mod probe;
use probe::{cpu_ms, env_or, serve};

#[tokio::main]
async fn main() {
    let n = 1000;
    let text = std::env::var("TEXT").is_ok();
    let fill = |tree: &std::path::Path| {
        std::fs::create_dir_all(tree.join("s")).unwrap();
        for i in 0..n {
            let body = if text {
                let mut t = format!("line {i} of some text, repeated\n")
                    .repeat(64)
                    .into_bytes();
                t.truncate(1024);
                t
            } else {
                noise(1024, i as u64)
            };
            std::fs::write(tree.join(format!("s/{i:04}")), body).unwrap();
        }
    };
    let (_dir, gw) = serve(fill, &[]);
    let spid = gw.pid().to_string();
    let url = format!("{}/", gw.url());
    for compress in [true, false] {
        let mut o = Options::default();
        o.compress = compress;
        let t = Transport::open(&url, o).await.unwrap();
        let mut walls = Vec::new();
        let (s0, c0) = (cpu_ms(&spid), cpu_ms("self"));
        let rounds: usize = env_or("ROUNDS", 60).max(1);
        for _ in 0..rounds {
            let w = Instant::now();
            let mut batch = t.batch();
            let slots: Vec<_> = (0..n).map(|i| batch.get(&format!("s/{i:04}"))).collect();
            let mut r = batch.send().await.unwrap();
            for s in slots {
                assert_eq!(r.take(s).unwrap().len(), 1024);
            }
            walls.push(w.elapsed().as_secs_f64() * 1e3);
        }
        walls.sort_by(f64::total_cmp);
        println!(
            "compress {compress}: median {:.2} ms (p10 {:.2}, p90 {:.2}); per message server cpu {:.1} ms, client cpu {:.1} ms",
            walls[rounds / 2],
            walls[rounds / 10],
            walls[rounds * 9 / 10],
            (cpu_ms(&spid) - s0) / rounds as f64,
            (cpu_ms("self") - c0) / rounds as f64
        );
    }
}
