//! `cargo run --release -p framegate-bench --bin object_store` — objects
//! in a real three-node Garage cluster (tests/garage.rs), fetched through
//! a framegate gateway next to the store (one message) and directly from
//! Garage's S3 API by the client (`object_store`, sequentially and 64 in
//! flight), at 0 and 20 ms round trip between the client and the gateway
//! or the store (a userspace delay proxy in front of each; the gateway
//! reaches the store on loopback, as one next to it does). Rows: 1,000 ×
//! 1 KiB and 100 × 10 MiB. Prints a markdown table of medians with their
//! range and the ratios. `FRAMEGATE_OS_RUNS` (default 5) repetitions
//! (`FRAMEGATE_OS_SEQ_RUNS` of the sequential ones), `FRAMEGATE_OS_BIG`
//! (default 100) large objects (0 skips that row),
//! `FRAMEGATE_OS_GATEWAY_FLAGS` more `serve` flags for the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_client::{Options, Transport};
use framegate_e2e::garage::{BUCKET, Garage, KEY_ID, REGION, SECRET};
use framegate_e2e::{Batch, Gateway, Outcome, message_client, noise, post_message};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

#[path = "../delay.rs"]
mod delay;
#[path = "../sections.rs"]
mod sections;

const TOKEN: &str = "bench-token";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and range of `v`, in ms.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2] * 1e3, v[0] * 1e3, v[v.len() - 1] * 1e3)
}

fn show((median, lo, hi): (f64, f64, f64)) -> String {
    format!("{median:.1} ms ({lo:.1}–{hi:.1})")
}

/// The direct S3 client of the benchmark, on `endpoint`.
fn s3(endpoint: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap(),
    )
}

/// Uploads `count` objects of `size` bytes as `dir/oNNNN` through the
/// gateway, in messages of at most 256 MiB.
async fn upload(gw: &Gateway, dir: &str, count: usize, size: usize) {
    let body = Bytes::from(noise(size, 7));
    let per_message = (256 << 20) / size.max(1);
    let mut i = 0;
    while i < count {
        let mut batch = Batch::new();
        for k in i..(i + per_message.max(1)).min(count) {
            let path = format!("{dir}/o{k:04}");
            batch.add("put", &[("path", path.as_bytes())], Some(body.clone()));
        }
        let answer = post_message(
            &message_client(),
            &format!("{}/.framegate/rw", gw.url()),
            TOKEN,
            batch.take_body().into(),
        )
        .await
        .unwrap();
        for o in batch.decode(&answer) {
            assert!(matches!(o, Outcome::Ok(_)), "{}", o.describe());
        }
        i += per_message.max(1);
    }
}

async fn framegate_once(t: &Transport, dir: &str, count: usize, size: usize) -> f64 {
    let started = Instant::now();
    let mut batch = t.batch();
    let slots: Vec<_> = (0..count)
        .map(|k| batch.get(&format!("{dir}/o{k:04}")))
        .collect();
    let mut r = batch.send().await.unwrap();
    for s in slots {
        assert_eq!(r.take(s).unwrap().len(), size);
    }
    started.elapsed().as_secs_f64()
}

async fn direct_once(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
    count: usize,
    size: usize,
    in_flight: usize,
) -> f64 {
    let started = Instant::now();
    let keys: Vec<Key> = (0..count)
        .map(|k| Key::from(format!("bench/{dir}/o{k:04}")))
        .collect();
    let sizes: Vec<usize> = futures_util::stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            async move { store.get(&key).await?.bytes().await.map(|b| b.len()) }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await
        .unwrap();
    assert!(sizes.iter().all(|s| *s == size));
    started.elapsed().as_secs_f64()
}

/// Whether the store takes a conditional PUT (`If-Match` on the object's
/// ETag, `object_store`'s `PutMode::Update`): what an append without lost
/// writes would need. Printed, for docs/object-store.md.
async fn conditional_put_check(store: &Arc<dyn ObjectStore>) -> String {
    use object_store::{PutMode, PutOptions, UpdateVersion};
    let key = Key::from("bench/conditional");
    let first = store
        .put(&key, Bytes::from_static(b"one").into())
        .await
        .unwrap();
    let stale = UpdateVersion {
        e_tag: Some("\"not-the-etag\"".into()),
        version: None,
    };
    let wrong = store
        .put_opts(
            &key,
            Bytes::from_static(b"two").into(),
            PutOptions::from(PutMode::Update(stale)),
        )
        .await;
    let right = store
        .put_opts(
            &key,
            Bytes::from_static(b"three").into(),
            PutOptions::from(PutMode::Update(UpdateVersion {
                e_tag: first.e_tag.clone(),
                version: None,
            })),
        )
        .await;
    let now = store.get(&key).await.unwrap().bytes().await.unwrap();
    let text = format!(
        "Conditional PUT (`If-Match`) on this store: stale ETag → {}, current ETag → {}, object now {:?}.",
        match &wrong {
            Ok(_) => "accepted (not honoured)".to_string(),
            Err(e) => format!(
                "refused ({})",
                e.to_string().chars().take(80).collect::<String>()
            ),
        },
        match &right {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!(
                "refused ({})",
                e.to_string().chars().take(80).collect::<String>()
            ),
        },
        String::from_utf8_lossy(&now)
    );
    println!("{text}");
    text
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // object_store's reqwest 0.13 has no TLS provider of its own.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let runs = env_usize("FRAMEGATE_OS_RUNS", 5);
    // Sequential fetches at 20 ms take 40 s a run: fewer of them.
    let seq_runs = env_usize("FRAMEGATE_OS_SEQ_RUNS", runs).max(1);
    let big = env_usize("FRAMEGATE_OS_BIG", 100);
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut flags = garage.flags(0);
    // E.g. `--message-open-answers 64`: how many of a message's commands
    // run at once against the store.
    if let Ok(extra) = std::env::var("FRAMEGATE_OS_GATEWAY_FLAGS") {
        flags.extend(extra.split_whitespace().map(str::to_owned));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Gateway::start_with_env(
        Path::new(&format!("s3://{BUCKET}/bench")),
        &token,
        &flags,
        &garage.env(),
    );
    let conditional = conditional_put_check(&s3(&garage.nodes[0].endpoint())).await;
    upload(&gw, "small", 1000, 1024).await;
    if big > 0 {
        upload(&gw, "big", big, 10 << 20).await;
    }
    let gw_addr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let s3_addr = format!("127.0.0.1:{}", garage.nodes[0].s3_port)
        .parse()
        .unwrap();
    let mut table = String::from(
        "| objects | RTT | one framegate message | direct S3, sequential | direct S3, 64 in flight | message vs sequential | message vs 64 in flight |\n|---|---|---|---|---|---|---|\n",
    );
    print!("{table}");
    let mut rows = vec![("small", 1000usize, 1024usize, "1,000 × 1 KiB")];
    if big > 0 {
        rows.push(("big", big, 10 << 20, "100 × 10 MiB"));
    }
    // The store's own floor: 1,000 × 1 KiB fetched directly with 256 in
    // flight on loopback, the fastest this machine's store serves them.
    // No message can take less than that plus one round trip.
    let mut floor = Vec::new();
    // The 20 ms row of 1,000 × 1 KiB: sequential and 64-in-flight medians.
    let mut small_at_20 = (0.0, 0.0);
    for rtt_ms in [0u64, 20] {
        let rtt = Duration::from_millis(rtt_ms);
        let (gw_url, s3_url) = if rtt_ms == 0 {
            (format!("http://{gw_addr}"), format!("http://{s3_addr}"))
        } else {
            let g = delay::delay_proxy(gw_addr, rtt).await;
            let s = delay::delay_proxy(s3_addr, rtt).await;
            (format!("http://{g}"), format!("http://{s}"))
        };
        let t = Transport::open(&gw_url, Options::default()).await.unwrap();
        let store = s3(&s3_url);
        for &(name, count, size, label) in &rows {
            // Warm: connections open, one untimed round first.
            framegate_once(&t, name, count, size).await;
            direct_once(&store, name, count, size, 64).await;
            let (mut fg, mut seq, mut par) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                fg.push(framegate_once(&t, name, count, size).await);
                if seq.len() < seq_runs && (!(size > 1 << 20 && rtt_ms > 0) || seq.len() < 2) {
                    seq.push(direct_once(&store, name, count, size, 1).await);
                }
                par.push(direct_once(&store, name, count, size, 64).await);
            }
            if rtt_ms == 0 && name == "small" {
                for _ in 0..runs {
                    floor.push(direct_once(&store, name, count, size, 256).await);
                }
            }
            let (f, s, p) = (stats(fg), stats(seq), stats(par));
            if rtt_ms == 20 && name == "small" {
                small_at_20 = (s.0, p.0);
            }
            let line = format!(
                "| {label} | {rtt_ms} ms | {} | {} | {} | {:.0}× faster | {:.1}× faster |\n",
                show(f),
                show(s),
                show(p),
                s.0 / f.0,
                p.0 / f.0
            );
            print!("{line}");
            table.push_str(&line);
        }
    }
    let floor = stats(floor);
    // The fastest run: the store's best on this machine (ms).
    let best = floor.1 + 20.0;
    let bound = format!(
        "The store's floor on this machine: 1,000 × 1 KiB fetched directly with 256 in flight on loopback take {} \
         (median and range of {runs} runs). A message at 20 ms cannot take less than the fastest of them plus one round trip \
         ({:.1} ms), so at best it is {:.0}× faster than sequential GETs and {:.1}× faster than 64 in flight here \
         (goals 200× and 4×): on this machine the goals are bounded by the store, whose three nodes share the two \
         cores with the gateway and the client.\n",
        show(floor),
        best,
        small_at_20.0 / best,
        small_at_20.1 / best
    );
    print!("{bound}");
    let flags = std::env::var("FRAMEGATE_OS_GATEWAY_FLAGS").unwrap_or_default();
    let body = format!(
        "## Object store (Garage, three nodes)\n\nWritten by `cargo run --release -p framegate-bench --bin object_store` \
         (extra gateway flags: `{flags}`; {runs} runs, medians with ranges; the round trip added by a userspace delay \
         proxy between the client and the gateway, and between the client and Garage; the gateway reaches Garage on \
         loopback). Goals at 20 ms for 1,000 × 1 KiB: ≥ 200× sequential GETs, ≥ 4× 64 in flight.\n\n{table}\n{bound}\n{conditional}\n"
    );
    sections::replace_section(
        &framegate_e2e::repo_root().join("BENCHMARKS.md"),
        "object-store",
        &body,
    );
}
