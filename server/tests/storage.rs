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

/// Leaves a journal as a writer killed mid-append does: a hard link to the
/// file and a record of its length before the append.
fn plant_journal(root: &Path, rel: &str, len: u64, created: bool) {
    let file = root.join(rel);
    let name = journal_name(&file);
    let journal = root.join(".framegate/journal");
    std::fs::hard_link(&file, journal.join(format!("{name}.file"))).unwrap();
    std::fs::write(
        journal.join(&name),
        format!(
            "framegate-append v2\nlen {len}\ncreated {}\nbtime {}\npath {}\n",
            u8::from(created),
            birth(&file),
            hex::encode(rel)
        ),
    )
    .unwrap();
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
    plant_journal(root, "d/log", 4, false);
    // A file created by an append that was cut off: removed again.
    let fresh = root.join("d/fresh");
    std::fs::write(&fresh, b"half").unwrap();
    plant_journal(root, "d/fresh", 0, true);
    // A record without its link (torn before the append wrote anything):
    // dropped, nothing touched.
    let other = root.join("other");
    std::fs::write(&other, b"whole new version").unwrap();
    std::fs::write(
        root.join(".framegate/journal/1-2"),
        format!(
            "framegate-append v2\nlen 1\ncreated 0\nbtime 0\npath {}\n",
            hex::encode("other")
        ),
    )
    .unwrap();
    // Found through its link even though a directory above it was renamed
    // after the crash, and with a newline in its name.
    std::fs::create_dir(root.join("before")).unwrap();
    std::fs::write(root.join("before/odd\nname"), b"kept+torn").unwrap();
    plant_journal(root, "before/odd\nname", 4, false);
    std::fs::rename(root.join("before"), root.join("after")).unwrap();
    // Not ours: a FIFO in each private directory must not hang start-up.
    for fifo in [".framegate/journal/fifo", ".framegate/staging/upload-fifo"] {
        assert!(
            std::process::Command::new("mkfifo")
                .arg(root.join(fifo))
                .status()
                .unwrap()
                .success()
        );
    }
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
            appends_rolled_back: 3,
        }
    );
    assert_eq!(std::fs::read(&log).unwrap(), b"old!");
    assert!(!fresh.exists(), "a file the cut-off append created is gone");
    assert_eq!(std::fs::read(&other).unwrap(), b"whole new version");
    assert_eq!(
        std::fs::read(root.join("after/odd\nname")).unwrap(),
        b"kept"
    );
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

#[tokio::test]
async fn the_next_writer_rolls_back_a_dead_writers_append_first() {
    // Two instances share a tree; one was killed mid-append while the other
    // keeps running: its next append to that file (also after a rename)
    // must not build on the torn bytes.
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("log", b"old!TORN");
    plant_journal(s.dir.path(), "log", 4, false);
    let before: u64 = one(&s.rw(), "append", &[("path", b"log")], Some(b"NEW"))
        .await
        .cbor();
    assert_eq!(before, 4);
    assert_eq!(std::fs::read(s.path("log")).unwrap(), b"old!NEW");

    s.write("moving", b"kept|TORN");
    plant_journal(s.dir.path(), "moving", 5, false);
    one(
        &s.rw(),
        "rename",
        &[("from", b"moving"), ("to", b"moved")],
        None,
    )
    .await
    .ok();
    // The rename kept the record (it follows the inode); the next writer
    // of the file honours it.
    let before: u64 = one(&s.rw(), "append", &[("path", b"moved")], Some(b"+"))
        .await
        .cbor();
    assert_eq!(before, 5);
    assert_eq!(std::fs::read(s.path("moved")).unwrap(), b"kept|+");
    let journals: Vec<_> = std::fs::read_dir(s.path(".framegate/journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(journals.is_empty(), "{journals:?}");
}

#[test]
fn old_style_staging_leftovers_are_swept_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    let old = |rel: &str, content: &[u8]| {
        let p = root.join(rel);
        std::fs::write(&p, content).unwrap();
        // Older than an old instance still running could have made.
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    };
    old("d/.framegate-upload-6315-0", &[1u8; 300]);
    old("d/e/.framegate-upload-1-7", b"xy");
    // A user's own file with the prefix, and a fresh leftover (an old
    // instance may still be writing it): both stay.
    old("d/.framegate-upload-notes.txt", b"mine");
    std::fs::write(root.join("d/.framegate-upload-9-9"), b"fresh").unwrap();
    let gw = writable(root);
    assert_eq!(gw.swept().staging_files, 2);
    assert_eq!(gw.swept().staging_bytes, 302);
    assert!(!root.join("d/.framegate-upload-6315-0").exists());
    assert!(root.join("d/.framegate-upload-notes.txt").exists());
    assert!(root.join("d/.framegate-upload-9-9").exists());
    // Something was left to look at: the next start walks again.
    old("d/.framegate-upload-9-9", b"fresh");
    assert_eq!(writable(root).swept().staging_files, 1);
    // Then the walk is done for good.
    old("d/.framegate-upload-5-5", b"z");
    assert_eq!(writable(root).swept().staging_files, 0);
}

#[tokio::test]
async fn fifos_in_the_tree_do_not_hold_the_server() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    s.write("small", b"ok");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(s.path("ff"))
            .status()
            .unwrap()
            .success()
    );
    let mut b = Batch::new();
    for _ in 0..12 {
        b.add("get", &[("path", b"ff")], None);
    }
    b.add("append", &[("path", b"ff")], Some(b"x"));
    b.add("get", &[("path", b"small")], None);
    let (o, _) = tokio::time::timeout(std::time::Duration::from_secs(10), b.send(&s.rw()))
        .await
        .expect("answered");
    for outcome in &o[..13] {
        assert_eq!(outcome.code(), "not-supported");
    }
    assert_eq!(o[13].ok().as_ref(), b"ok");
    // A put replaces the FIFO entry with a file.
    one(&s.rw(), "put", &[("path", b"ff")], Some(b"file now"))
        .await
        .ok();
    assert_eq!(std::fs::read(s.path("ff")).unwrap(), b"file now");
}

#[tokio::test]
async fn a_symlink_to_the_private_area_takes_no_writes() {
    let s = TestServer::start(|c| c.allow_writes = true).await;
    std::os::unix::fs::symlink(".framegate", s.path("pa")).unwrap();
    for (cmd, args) in [
        ("put", vec![("path", &b"pa/staging/evil"[..])]),
        ("put", vec![("path", &b"pa/journal/1-2"[..])]),
        ("mkdir", vec![("path", &b"pa/x"[..])]),
        ("delete", vec![("path", &b"pa/legacy-staging-swept"[..])]),
    ] {
        let data = (cmd == "put").then_some(&b"x"[..]);
        let o = one(&s.rw(), cmd, &args, data).await;
        assert_eq!(o.code(), "invalid-path", "{cmd} {args:?}");
    }
    assert!(!s.path(".framegate/staging/evil").exists());
    assert!(!s.path(".framegate/journal/1-2").exists());
}
