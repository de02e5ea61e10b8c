//! Concurrent messages on one file, through one server and through two
//! servers sharing the tree.

use super::*;

const CLIENTS: usize = 20;
const CHUNK: usize = 200_000;
/// Readers polling the file during the concurrent puts.
const READERS: usize = 3;

/// The chunk client `c` appends in round `r`: 8-byte words
/// `[0xC7, c, r, i_lo, i_hi, c^r^0x5A, '|', '\n']`, so any byte of the
/// file names its chunk and its place in it.
fn tagged_chunk(c: usize, r: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK);
    for i in 0..CHUNK / 8 {
        let (c, r) = (c as u8, r as u8);
        out.extend_from_slice(&[
            0xC7,
            c,
            r,
            i as u8,
            (i >> 8) as u8,
            c ^ r ^ 0x5A,
            b'|',
            b'\n',
        ]);
    }
    out
}

/// The servers the clients alternate between.
fn pick(servers: &[String], client: usize, round: usize) -> &str {
    &servers[(client + round) % servers.len()]
}

/// 20 clients append distinct tagged chunks to one file, each append its
/// own message, spread over `servers` (URLs of rw endpoints of the root).
async fn concurrent_appends(tree: &Path, servers: Vec<String>) {
    let rounds = knob("FRAMEGATE_CONCURRENCY_ROUNDS", 3).max(1);
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let servers = servers.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let http = message_client();
            let mut acks = Vec::new();
            barrier.wait().await;
            for r in 0..rounds {
                let url = pick(&servers, c, r);
                let got = one(
                    &http,
                    url,
                    "append",
                    &[("path", b"log")],
                    Some(Bytes::from(tagged_chunk(c, r))),
                )
                .await;
                acks.push((c, r, got));
            }
            acks
        }));
    }
    let mut failures = Vec::new();
    let mut acked: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for t in tasks {
        for (c, r, got) in t.await.unwrap() {
            match got.as_ref().map(Outcome::cbor) {
                Ok(Some(Value::Integer(n))) => {
                    acked.insert((c, r), u64::try_from(n).unwrap());
                }
                Ok(_) => failures.push(format!(
                    "append of client {c} round {r}: {}",
                    got.unwrap().describe()
                )),
                Err(e) => failures.push(format!("append of client {c} round {r}: {e}")),
            }
        }
    }
    let elapsed = started.elapsed();
    let data = std::fs::read(tree.join("log")).unwrap_or_default();
    // Walk the file chunk by chunk: every chunk whole, each once.
    let mut layout: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let whole_at = |at: usize| -> Option<(usize, usize)> {
        let word = data.get(at..at + 8)?;
        let (c, r) = (word[1] as usize, word[2] as usize);
        (word[0] == 0xC7
            && word[3] == 0
            && word[4] == 0
            && c < CLIENTS
            && r < rounds
            && data.get(at..at + CHUNK)? == &tagged_chunk(c, r)[..])
            .then_some((c, r))
    };
    let mut at = 0usize;
    let mut torn_spots = 0;
    let mut torn_bytes = 0;
    while at < data.len() {
        if let Some(key) = whole_at(at) {
            layout.insert(at as u64, key);
            *seen.entry(key).or_default() += 1;
            at += CHUNK;
            continue;
        }
        // Not a whole chunk here: skip to where the next one starts.
        let next = (at + 1..data.len())
            .find(|&p| whole_at(p).is_some())
            .unwrap_or(data.len());
        torn_spots += 1;
        torn_bytes += next - at;
        if torn_spots <= 5 {
            let word = &data[at..data.len().min(at + 8)];
            failures.push(format!(
                "{} bytes at offset {at} are no whole chunk (they start with {word:02x?})",
                next - at
            ));
        }
        at = next;
    }
    let expected_len = CLIENTS * rounds * CHUNK;
    if data.len() != acked.len() * CHUNK {
        failures.push(format!(
            "log has {} bytes; {} acknowledged appends of {CHUNK} make {} (all: {expected_len})",
            data.len(),
            acked.len(),
            acked.len() * CHUNK
        ));
    }
    for (key, n) in &seen {
        if *n != 1 {
            failures.push(format!("chunk {key:?} appears {n} times"));
        }
        if !acked.contains_key(key) {
            failures.push(format!(
                "chunk {key:?} is in the file but was not acknowledged"
            ));
        }
    }
    let mut missing = 0;
    let mut wrong_offset = 0;
    for (key, offset) in &acked {
        match layout.get(offset) {
            Some(k) if k == key => {}
            found => {
                if !seen.contains_key(key) {
                    missing += 1;
                } else {
                    wrong_offset += 1;
                }
                if missing + wrong_offset <= 5 {
                    failures.push(format!(
                        "append {key:?} answered size-before {offset}, but the file has {} there{}",
                        found.map_or("no whole chunk".to_string(), |k| format!("chunk {k:?}")),
                        if seen.contains_key(key) {
                            ""
                        } else {
                            " (and the chunk is nowhere)"
                        }
                    ));
                }
            }
        }
    }
    let answers: BTreeSet<u64> = acked.values().copied().collect();
    if answers.len() != acked.len() {
        failures.push(format!(
            "{} appends got the same size-before answer as another",
            acked.len() - answers.len()
        ));
    }
    let stray = leftovers(tree);
    if !stray.is_empty() {
        failures.push(format!("staging leftovers after all appends: {stray:?}"));
    }
    println!(
        "appends via {} server(s): {CLIENTS} clients x {rounds} rounds x {CHUNK} B in {:.1} s: \
         {} acknowledged, file {} B, {} whole chunks, {torn_spots} torn spots ({torn_bytes} B), \
         {missing} acknowledged chunks missing, {wrong_offset} at another offset than answered",
        servers.len(),
        elapsed.as_secs_f64(),
        acked.len(),
        data.len(),
        layout.len(),
    );
    fail_report(
        &format!("concurrent appends via {} server(s)", servers.len()),
        &failures,
    );
}

/// Version `v` of the file the concurrent puts write (256 KiB, named in
/// its first bytes).
fn version(v: usize) -> Vec<u8> {
    let mut out = format!("version {v:04}\n").into_bytes();
    out.extend_from_slice(&noise(256 * 1024 - out.len(), 1000 + v as u64));
    out
}

/// 20 clients `put` whole versions of one file, spread over `servers`,
/// while a reader `get`s it through them: every read and the end state
/// must be one whole version.
async fn concurrent_puts(tree: &Path, servers: Vec<String>) {
    let rounds = knob("FRAMEGATE_CONCURRENCY_ROUNDS", 3).max(1);
    std::fs::write(tree.join("doc"), version(9999)).unwrap();
    let versions: HashMap<Vec<u8>, usize> = (0..CLIENTS * rounds)
        .chain([9999])
        .map(|v| (version(v), v))
        .collect();
    let versions = Arc::new(versions);
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS + READERS));
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (servers, barrier, done, versions) = (
                servers.clone(),
                barrier.clone(),
                writers_done.clone(),
                versions.clone(),
            );
            tokio::spawn(async move {
                let http = message_client();
                let mut bad = Vec::new();
                let mut reads = 0usize;
                barrier.wait().await;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let url = pick(&servers, reads, reader).replace("/rw", "/ro");
                    match one(&http, &url, "get", &[("path", b"doc")], None).await {
                        Ok(Outcome::Ok(b)) if versions.contains_key(&b[..]) => {}
                        Ok(o) => bad.push(format!("a concurrent get saw {}", o.describe())),
                        Err(e) => bad.push(format!("a concurrent get failed: {e}")),
                    }
                    reads += 1;
                }
                (reads, bad)
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (servers, barrier) = (servers.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let http = message_client();
            barrier.wait().await;
            let mut out = Vec::new();
            for r in 0..rounds {
                let v = c * rounds + r;
                let got = one(
                    &http,
                    pick(&servers, c, r),
                    "put",
                    &[("path", b"doc")],
                    Some(Bytes::from(version(v))),
                )
                .await;
                out.push((v, got));
            }
            out
        }));
    }
    let mut failures = Vec::new();
    let mut acked = BTreeSet::new();
    for t in tasks {
        for (v, got) in t.await.unwrap() {
            match got {
                Ok(o) if o.cbor() == Some(Value::Null) => {
                    acked.insert(v);
                }
                Ok(o) => failures.push(format!("put of version {v}: {}", o.describe())),
                Err(e) => failures.push(format!("put of version {v}: {e}")),
            }
        }
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut reads, mut bad_reads) = (0, 0);
    for r in readers {
        let (n, bad) = r.await.unwrap();
        reads += n;
        bad_reads += bad.len();
        failures.extend(bad.into_iter().take(3));
    }
    let end = std::fs::read(tree.join("doc")).unwrap_or_default();
    let end_version = versions.get(&end).copied();
    match end_version {
        Some(v) if acked.contains(&v) => {}
        Some(v) => failures.push(format!(
            "the file ends as version {v}, which no put acknowledged"
        )),
        None => failures.push(format!(
            "the file ends as no version at all ({} bytes, starts {:?})",
            end.len(),
            String::from_utf8_lossy(&end[..end.len().min(13)])
        )),
    }
    let stray = leftovers(tree);
    if !stray.is_empty() {
        failures.push(format!("staging leftovers after all puts: {stray:?}"));
    }
    let others = strangers(tree, &|p| p == "doc");
    if !others.is_empty() {
        failures.push(format!("unexpected paths after all puts: {others:?}"));
    }
    println!(
        "puts via {} server(s): {CLIENTS} clients x {rounds} rounds in {:.1} s: {} acknowledged, \
         end state version {end_version:?}; {reads} concurrent reads, {bad_reads} bad",
        servers.len(),
        elapsed_secs(started),
        acked.len(),
    );
    fail_report(
        &format!("concurrent puts via {} server(s)", servers.len()),
        &failures,
    );
}

fn elapsed_secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Many messages appending to one file through one server: each append
/// whole, once, at the offset it answered.
#[test]
fn concurrent_appends_one_server() {
    run(Duration::from_secs(300), async {
        let site = Site::new();
        let gw = site.gateway();
        concurrent_appends(&site.tree, vec![endpoint(&gw, "", true)]).await;
    });
}

/// The same through two server processes serving the same tree (the
/// documented deployment behind a load balancer).
#[test]
fn concurrent_appends_two_servers() {
    run(Duration::from_secs(300), async {
        let site = Site::new();
        let (a, b) = (site.gateway(), site.gateway());
        concurrent_appends(
            &site.tree,
            vec![endpoint(&a, "", true), endpoint(&b, "", true)],
        )
        .await;
    });
}

/// Many messages putting whole versions of one file through one server:
/// readers and the end state see exactly one version.
#[test]
fn concurrent_puts_one_server() {
    run(Duration::from_secs(300), async {
        let site = Site::new();
        let gw = site.gateway();
        concurrent_puts(&site.tree, vec![endpoint(&gw, "", true)]).await;
    });
}

/// The same through two server processes serving the same tree.
#[test]
fn concurrent_puts_two_servers() {
    run(Duration::from_secs(300), async {
        let site = Site::new();
        let (a, b) = (site.gateway(), site.gateway());
        concurrent_puts(
            &site.tree,
            vec![endpoint(&a, "", true), endpoint(&b, "", true)],
        )
        .await;
    });
}
