//! P4m (1,000 × 1 MiB files in one message) and P5-64 with 16 runtime
//! threads.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use framegate_client::{Options, Transport};
use framegate_e2e::{Gateway, noise};

use crate::{Env, fg_get, framegate_gets, median};

/// P5-64 against a gateway whose runtime has 16 worker threads: its peak
/// RSS in MiB.
pub(crate) async fn peak_with_16_threads(env: &Env) -> f64 {
    let env16 = [("TOKIO_WORKER_THREADS".to_string(), "16".to_string())];
    let token = env.tree.parent().unwrap().join("token");
    let gw = Gateway::start_with_env(&env.tree, &token, &[], &env16);
    let t = Arc::new(
        Transport::open(&format!("{}/", gw.url()), Options::default())
            .await
            .unwrap(),
    );
    fg_get(&t, "small/f0000").await;
    gw.reset_peak_rss();
    let reads = (0..64).map(|_| {
        let t = t.clone();
        async move { fg_get(&t, "mid.bin").await }
    });
    let results = futures_util::future::join_all(reads).await;
    assert!(results.iter().all(|(_, n)| *n == 64 << 20));
    gw.peak_rss_mib()
}

const MEDIUM_FILES: usize = 1000;

pub(crate) fn write_medium(tree: &Path) {
    let medium = tree.join("medium");
    std::fs::create_dir_all(&medium).unwrap();
    for i in 0..MEDIUM_FILES {
        std::fs::write(
            medium.join(format!("m{i:04}")),
            noise(1 << 20, 5000 + i as u64),
        )
        .unwrap();
    }
}

/// P4m: one framegate message of 1,000 `get`s of 1 MiB files (answers
/// held by the client until the batch ends, then dropped) against the same
/// files by sequential HTTP/1.1 GETs to nginx, interleaved; medians (s).
pub(crate) async fn medium_reads(env: &Env, rounds: usize) -> (f64, f64) {
    let t = Transport::open(&env.direct(), Options::default())
        .await
        .unwrap();
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let (mut fg, mut ngx) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let fg_took =
            framegate_gets(&t, MEDIUM_FILES, |i| format!("medium/m{i:04}"), 1 << 20).await;
        let started = Instant::now();
        for i in 0..MEDIUM_FILES {
            let body = h1
                .get(env.plain(&format!("medium/m{i:04}")))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(body.len(), 1 << 20);
        }
        // Round 0 warms caches and connections.
        if round > 0 {
            fg.push(fg_took);
            ngx.push(started.elapsed().as_secs_f64());
        }
    }
    (median(fg), median(ngx))
}
