//! Downloads never damage the user's files: a failed download leaves the
//! destination as it was, a file replaced mid-download is never spliced,
//! dropped connections are retried until the deadline, and a partial file
//! is continued by a later run only while the server has the same version.
//! Real servers on loopback (framegate in process, nginx for plain HTTP),
//! a TCP proxy in between that cuts, refuses or throttles connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::proxy::*;
use common::*;
use framegate_client::{DownloadOptions, Error, Options, Transport, partial_path};

fn options(retry: Duration) -> Options {
    download_options(retry)
}

fn leftovers(dest: &Path) -> Vec<String> {
    let dir = dest.parent().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("framegate-partial"))
        .collect()
}

fn meta_of(dest: &Path) -> std::path::PathBuf {
    let mut name = partial_path(dest).into_os_string();
    name.push(".json");
    name.into()
}

fn readv_count(s: &Smart, outcome: &str) -> u64 {
    s.gateway
        .metrics
        .commands
        .with_label_values(&["readv", outcome])
        .get()
}

/// A `get` that fails — no such file, a directory — leaves an existing
/// destination byte-identical and no partial file behind, smart and plain.
#[tokio::test]
async fn a_failed_get_leaves_the_destination_untouched() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let nginx = nginx(tree.path());
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("notes.txt");
    for base in [s.url.clone(), nginx.url("json")] {
        let t = Transport::open(&base, options(Duration::from_secs(2)))
            .await
            .unwrap();
        for missing in ["missing.txt", "sub"] {
            std::fs::write(&dest, b"my notes\n").unwrap();
            let err = t.download(missing, &dest).await.unwrap_err();
            assert!(
                matches!(err, Error::Remote { .. }),
                "{base}{missing}: {err}"
            );
            assert_eq!(
                std::fs::read(&dest).unwrap(),
                b"my notes\n",
                "{base}{missing}"
            );
            assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));
        }
    }
}

/// A connection cut again and again, or a server gone for good: the
/// download fails at the retry deadline, the destination is untouched,
/// and the partial file is kept to be continued.
#[tokio::test]
async fn cut_connections_fail_at_the_deadline_without_touching_the_destination() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(4_000_000, 1);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    // Every connection is cut after 300 kB (the probe's included).
    let p = proxy(
        s.handle.local_addr,
        Arc::new(|_| Conn::CutAfter(300_000)),
        no_hook(),
    )
    .await;
    let t = Transport::open(
        &format!("http://{}/", p.addr),
        options(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    std::fs::write(&dest, b"the old copy").unwrap();
    let started = Instant::now();
    let err = t.download("big.bin", &dest).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_dropped_connection(), "{err}");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&took),
        "gave up after {took:?} (deadline 2 s)"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"the old copy");
    let kept = std::fs::read(partial_path(&dest)).unwrap();
    assert!(
        !kept.is_empty() && data.starts_with(&kept),
        "{} bytes kept",
        kept.len()
    );
    assert!(
        readv_count(&s, "ok") >= 1,
        "it continued with readv meanwhile"
    );
}

/// A file replaced on the server while the download was cut comes out as
/// the new file, whole — never old bytes followed by new ones (smart: the
/// `readv` carries `if-match` and fails `file-changed`; plain: `If-Range`
/// gets the whole new file).
#[tokio::test]
async fn a_file_replaced_mid_download_is_never_spliced() {
    let tree = tempfile::tempdir().unwrap();
    let file = tree.path().join("big.bin");
    let (old, new) = (content(4_000_000, 1), content(4_500_000, 2));
    let s = smart_server(tree.path(), |_| {}).await;
    let nginx = nginx(tree.path());
    let nginx_addr: SocketAddr = format!("127.0.0.1:{}", nginx.port).parse().unwrap();
    for (upstream, path) in [(s.handle.local_addr, ""), (nginx_addr, "json/")] {
        std::fs::write(&file, &old).unwrap();
        let target = file.clone();
        let new_content = new.clone();
        let on_cut: Hook = Arc::new(move || replace(&target, &new_content));
        let p = proxy(
            upstream,
            Arc::new(|n| {
                if n == 0 {
                    Conn::CutAfter(1_000_000)
                } else {
                    Conn::Forward
                }
            }),
            on_cut,
        )
        .await;
        let base = format!("http://{}/{path}", p.addr);
        let t = Transport::open(&base, options(Duration::from_secs(10)))
            .await
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("copy.bin");
        let got = t.download("big.bin", &dest).await.unwrap();
        let copy = std::fs::read(&dest).unwrap();
        assert_eq!(got, new.len() as u64, "{base}");
        assert!(
            copy == new,
            "{base}: {} bytes, not the new file",
            copy.len()
        );
        assert!(leftovers(&dest).is_empty());
    }
    assert_eq!(readv_count(&s, "ok"), 0);
    assert!(
        readv_count(&s, "file-changed") >= 1,
        "the readv was refused"
    );
}

/// A server that goes away for a while (restarting) is waited for: the
/// retries back off and the download continues where it was.
#[tokio::test]
async fn a_server_back_within_the_deadline_is_survived() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(4_000_000, 3);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let down_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let until = down_until.clone();
    let plan: Plan = Arc::new(move |n| {
        if n == 0 {
            return Conn::CutAfter(1_000_000);
        }
        match *until.lock().unwrap() {
            Some(t) if Instant::now() < t => Conn::Refuse,
            _ => Conn::Forward,
        }
    });
    let set = down_until.clone();
    let on_cut: Hook = Arc::new(move || {
        *set.lock().unwrap() = Some(Instant::now() + Duration::from_millis(1500));
    });
    let p = proxy(s.handle.local_addr, plan, on_cut).await;
    let t = Transport::open(
        &format!("http://{}/", p.addr),
        options(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let started = Instant::now();
    assert_eq!(
        t.download("big.bin", &dest).await.unwrap(),
        data.len() as u64
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(readv_count(&s, "ok"), 1, "continued with one readv");
    assert!(
        p.down.load(Ordering::SeqCst) < data.len() as u64 + 200_000,
        "the first megabyte was not fetched again"
    );
}

/// `resume` continues an earlier run's partial file when the server still
/// has that version, and starts over when it does not.
#[tokio::test]
async fn resume_continues_only_the_same_version() {
    let tree = tempfile::tempdir().unwrap();
    let file = tree.path().join("big.bin");
    let data = content(3_000_000, 4);
    std::fs::write(&file, &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    // A first run that fails: its connection is cut after 1 MB, and it
    // does not retry. The second run's connections are not cut.
    let cut_first: Plan = Arc::new(|n| {
        if n == 0 {
            Conn::CutAfter(1_000_000)
        } else {
            Conn::Forward
        }
    });
    let p = proxy(s.handle.local_addr, cut_first.clone(), no_hook()).await;
    let url = format!("http://{}/", p.addr);
    let t = Transport::open(&url, options(Duration::ZERO))
        .await
        .unwrap();
    t.download("big.bin", &dest).await.unwrap_err();
    let kept = std::fs::metadata(partial_path(&dest)).unwrap().len();
    assert!(kept > 500_000, "{kept} bytes kept");
    // Another URL (the server directly): not the same source, starts over.
    let direct = Transport::open(&s.url, options(Duration::from_secs(5)))
        .await
        .unwrap();
    let again = DownloadOptions::default().resume(true);
    std::fs::copy(partial_path(&dest), out.path().join("saved")).unwrap();
    std::fs::copy(meta_of(&dest), out.path().join("saved.json")).unwrap();
    direct
        .download_with("big.bin", &dest, &again)
        .await
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(readv_count(&s, "ok"), 0, "another source is not continued");
    std::fs::rename(out.path().join("saved"), partial_path(&dest)).unwrap();
    std::fs::rename(out.path().join("saved.json"), meta_of(&dest)).unwrap();
    // A second run with resume, same URL.
    let t = Transport::open(&url, options(Duration::from_secs(5)))
        .await
        .unwrap();
    t.download_with("big.bin", &dest, &again).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(readv_count(&s, "ok"), 1);
    // Again, but the file changed in between: starts over, whole.
    std::fs::write(&dest, b"old").unwrap();
    let p = proxy(s.handle.local_addr, cut_first, no_hook()).await;
    let url = format!("http://{}/", p.addr);
    let t2 = Transport::open(&url, options(Duration::ZERO))
        .await
        .unwrap();
    t2.download("big.bin", &dest).await.unwrap_err();
    let t = Transport::open(&url, options(Duration::from_secs(5)))
        .await
        .unwrap();
    let changed = content(3_000_000, 5);
    replace(&file, &changed);
    t.download_with("big.bin", &dest, &again).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == changed, "spliced or stale");
    assert!(leftovers(&dest).is_empty());
}

/// The CLI: `framegate get` of a missing file exits 1 and leaves the
/// user's file; a `get` killed with SIGKILL mid-way is continued by
/// `get --continue` from its partial file and ends identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_get_continue_after_kill_9() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(6_000_000, 6);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let bin = assert_cmd::cargo::cargo_bin("framegate");

    std::fs::write(&dest, b"mine").unwrap();
    let missing = std::process::Command::new(&bin)
        .args(["get", "-q", &format!("{}missing.bin", s.url)])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine");

    // About 2 MB/s through the proxy; killed once 1 MB is in the partial.
    let p = proxy(
        s.handle.local_addr,
        Arc::new(|n| {
            if n == 0 {
                Conn::Slow(2_000_000)
            } else {
                Conn::Forward
            }
        }),
        no_hook(),
    )
    .await;
    let mut child = std::process::Command::new(&bin)
        // Uncompressed: the answer must take its time through the proxy
        // (these bytes compress 100-fold).
        .args([
            "get",
            "-q",
            "--no-compress",
            &format!("http://{}/big.bin", p.addr),
        ])
        .arg(&dest)
        .spawn()
        .unwrap();
    let partial = partial_path(&dest);
    let started = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 1_000_000 {
        assert!(started.elapsed() < Duration::from_secs(20), "no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the first get ended ({status}) after {:?}, {} bytes through the proxy",
                started.elapsed(),
                p.down.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"mine",
        "killed: dest untouched"
    );
    let kept = std::fs::metadata(&partial).unwrap().len();
    let again = std::process::Command::new(&bin)
        .args([
            "get",
            "-q",
            "--continue",
            &format!("http://{}/big.bin", p.addr),
        ])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(std::fs::read(&dest).unwrap() == data, "not identical");
    assert_eq!(readv_count(&s, "ok"), 1, "continued from {kept} bytes");
    assert!(leftovers(&dest).is_empty());
}

/// `framegate get` of one file is one POST: the probe's `hello` goes in
/// the same message as the `get` (and nothing else is asked). Against a
/// plain server the same command falls back and gets the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_get_is_one_post() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(300_000, 7);
    std::fs::write(tree.path().join("f.bin"), &data).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("framegate");
    let before = s.messages("ro");
    let dest = out.path().join("f.bin");
    let got = std::process::Command::new(&bin)
        .args(["get", "-q", &format!("{}f.bin", s.url)])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(s.messages("ro") - before, 1, "one POST for probe and get");
    let nginx = nginx(tree.path());
    let dest = out.path().join("plain.bin");
    let got = std::process::Command::new(&bin)
        .args(["get", "-q", &format!("{}f.bin", nginx.url("bare"))])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(std::fs::read(&dest).unwrap() == data);
}

/// A lazily opened transport's first batch of reads carries `hello`: one
/// message, the answers right, and the verdict known after it.
#[tokio::test]
async fn a_cold_batch_is_one_message() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let before = s.messages("ro");
    let t = Transport::open_lazy(&s.url, options(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(!t.is_smart(), "not known before the first message");
    let mut b = t.batch();
    let hello = b.get("hello.txt");
    let st = b.stat("sub/a.bin");
    let missing = b.get("nope");
    let mut r = b.send().await.unwrap();
    assert_eq!(r.take(hello).unwrap(), "hello, world\n");
    assert_eq!(r.take(st).unwrap().size, 100_000);
    assert!(r.take(missing).is_err());
    assert_eq!(s.messages("ro") - before, 1);
    assert!(t.is_smart());
    let nginx = nginx(tree.path());
    let t = Transport::open_lazy(&nginx.url("json"), options(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(t.get("hello.txt").await.unwrap(), "hello, world\n");
    assert!(!t.is_smart());
}

/// A plain server (nginx) that still has the same file is continued with
/// `Range` + `If-Range` (a 206), not fetched again: the bytes through the
/// cutting proxy stay near one file's worth, and the copy is whole.
#[tokio::test]
async fn a_plain_download_continues_with_a_range() {
    let tree = tempfile::tempdir().unwrap();
    let data = content(4_000_000, 3);
    std::fs::write(tree.path().join("big.bin"), &data).unwrap();
    // A file modified within the second before the answer has no version
    // to continue (its date is weak): this one is a minute old.
    std::fs::File::options()
        .write(true)
        .open(tree.path().join("big.bin"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let nginx = nginx(tree.path());
    let upstream: SocketAddr = format!("127.0.0.1:{}", nginx.port).parse().unwrap();
    let p = proxy(
        upstream,
        Arc::new(|n| {
            if n == 0 {
                Conn::CutAfter(2_500_000)
            } else {
                Conn::Forward
            }
        }),
        no_hook(),
    )
    .await;
    let t = Transport::open(
        &format!("http://{}/json/", p.addr),
        options(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert!(!t.is_smart());
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy.bin");
    assert_eq!(t.download("big.bin", &dest).await.unwrap(), 4_000_000);
    assert!(std::fs::read(&dest).unwrap() == data, "the copy is whole");
    let down = p.down.load(Ordering::SeqCst);
    assert!(
        down < 4_000_000 + 200_000,
        "{down} bytes came down for a 4 MB file cut at 2.5 MB: continued, not fetched again"
    );
}
