//! The local storage's crash recovery and health, on real files: what
//! start-up sweeps from the private area, what it must leave alone (another
//! live instance's work), and healthz when the tree goes away.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use common::*;
use framegate_server::{Gateway, GatewayConfig, Registry, SweepReport};

fn journal_name(file: &Path) -> String {
    let meta = std::fs::metadata(file).unwrap();
    format!("{:x}-{:x}", meta.dev(), meta.ino())
}

fn birth(file: &Path) -> u128 {
    std::fs::metadata(file)
        .unwrap()
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn writable(root: &Path) -> std::sync::Arc<Gateway> {
    let mut config = GatewayConfig::new(root);
    config.allow_writes = true;
    Gateway::new(config, Registry::files()).unwrap()
}

#[test]
fn start_up_rolls_back_cut_off_appends_and_removes_dead_staging_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A first start makes the private area.
    drop(writable(root));
    std::fs::create_dir(root.join("d")).unwrap();
    let log = root.join("d/log");
    std::fs::write(&log, b"old!PARTIAL-APPEND").unwrap();
    let journal = root.join(".framegate/journal").join(journal_name(&log));
    std::fs::write(
        &journal,
        format!(
            "framegate-append v1\nlen 4\ncreated 0\nbtime {}\npath d/log\n",
            birth(&log)
        ),
    )
    .unwrap();
    // A file created by an append that was cut off: removed again.
    let fresh = root.join("d/fresh");
    std::fs::write(&fresh, b"half").unwrap();
    std::fs::write(
        root.join(".framegate/journal").join(journal_name(&fresh)),
        format!(
            "framegate-append v1\nlen 0\ncreated 1\nbtime {}\npath d/fresh\n",
            birth(&fresh)
        ),
    )
    .unwrap();
    // A journal whose file was since replaced (another inode): dropped,
    // the file untouched.
    let other = root.join("other");
    std::fs::write(&other, b"whole new version").unwrap();
    std::fs::write(
        root.join(".framegate/journal/1-2"),
        "framegate-append v1\nlen 1\ncreated 0\nbtime 0\npath other\n",
    )
    .unwrap();
    std::fs::write(root.join(".framegate/journal/garbage"), b"\xff\x00junk").unwrap();
    std::fs::write(root.join(".framegate/staging/upload-dead"), vec![7u8; 1000]).unwrap();
    std::fs::write(root.join(".framegate/staging/upload-dead2"), b"xy").unwrap();
    // A staging file a live writer (another instance) holds: left alone.
    let live = root.join(".framegate/staging/upload-live");
    std::fs::write(&live, b"in flight").unwrap();
    let held = std::fs::File::open(&live).unwrap();
    held.lock().unwrap();

    let gw = writable(root);
    assert_eq!(
        gw.swept(),
        SweepReport {
            staging_files: 2,
            staging_bytes: 1002,
            appends_rolled_back: 2,
        }
    );
    assert_eq!(std::fs::read(&log).unwrap(), b"old!");
    assert!(!fresh.exists(), "a file the cut-off append created is gone");
    assert_eq!(std::fs::read(&other).unwrap(), b"whole new version");
    let journals: Vec<_> = std::fs::read_dir(root.join(".framegate/journal"))
        .unwrap()
        .collect();
    assert!(journals.is_empty(), "{journals:?}");
    let staging: Vec<_> = std::fs::read_dir(root.join(".framegate/staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(staging, vec!["upload-live"]);
    drop(held);
}

#[test]
fn a_read_only_server_makes_no_private_area() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::new(GatewayConfig::new(dir.path()), Registry::files()).unwrap();
    assert_eq!(gw.swept(), SweepReport::default());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn the_private_area_is_invisible() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("a.txt", b"a");
    std::fs::write(s.path(".framegate/staging/upload-x"), b"secret").unwrap();
    let http = http();
    for url in [
        "/.framegate/staging/upload-x",
        "/.framegate/",
        "/.framegate/staging/",
    ] {
        let status = http
            .get(format!("{}{url}", s.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{url}");
    }
    let listing = http
        .get(format!("{}/", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listing.contains(".framegate"), "{listing}");
    let names: Vec<String> = one(&s.ro(), "list_dir", &[("path", b"")], None)
        .await
        .cbor();
    assert_eq!(names, vec!["a.txt"]);
    // Nor can a message use it as its base.
    let status = post(
        &format!("{}/.framegate/staging/.framegate/ro", s.url),
        bytes::Bytes::new(),
        &[],
    )
    .await
    .status();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn healthz_fails_once_the_tree_is_gone() {
    let s = TestServer::start(|_| {}).await;
    let health = || async {
        http()
            .get(format!("{}/.framegate/healthz", s.url))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(health().await, 200);
    let moved = s.dir.path().with_extension("moved");
    std::fs::rename(s.dir.path(), &moved).unwrap();
    assert_eq!(health().await, 503, "the tree was moved away");
    std::fs::create_dir(s.dir.path()).unwrap();
    assert_eq!(health().await, 503, "another directory at the same path");
    std::fs::remove_dir(s.dir.path()).unwrap();
    std::fs::rename(&moved, s.dir.path()).unwrap();
    assert_eq!(health().await, 200, "back in place");
}

/// A journal as a dead writer (another instance, killed mid-append) leaves it.
fn orphan_journal(root: &Path, rel: &str, len: u64) {
    let file = root.join(rel);
    std::fs::write(
        root.join(".framegate/journal").join(journal_name(&file)),
        format!(
            "framegate-append v1\nlen {len}\ncreated 0\nbtime {}\npath {rel}\n",
            birth(&file)
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn the_next_writer_rolls_back_a_dead_writers_append_first() {
    // Two instances share a tree; one was killed mid-append while the other
    // keeps running: its next append to that file, a rename of it, must
    // not build on the torn bytes.
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("log", b"old!TORN");
    orphan_journal(s.dir.path(), "log", 4);
    let before: u64 = one(&s.rw(), "append", &[("path", b"log")], Some(b"NEW"))
        .await
        .cbor();
    assert_eq!(before, 4);
    assert_eq!(std::fs::read(s.path("log")).unwrap(), b"old!NEW");

    s.write("moving", b"kept|TORN");
    orphan_journal(s.dir.path(), "moving", 5);
    one(
        &s.rw(),
        "rename",
        &[("from", b"moving"), ("to", b"moved")],
        None,
    )
    .await
    .ok();
    assert_eq!(std::fs::read(s.path("moved")).unwrap(), b"kept|");

    let journals = std::fs::read_dir(s.path(".framegate/journal"))
        .unwrap()
        .count();
    assert_eq!(journals, 0);
}
