//! Hostile paths: none reads, writes or reveals anything outside the tree.

mod common;

use common::*;

const HOSTILE: &[&[u8]] = &[
    b"..",
    b"../",
    b"../secret.txt",
    b"../../etc/passwd",
    b"a/../../secret.txt",
    b"a/b/../../../secret.txt",
    b"./../secret.txt",
    b"a/./../../secret.txt",
    b"..//secret.txt",
    b"/etc/passwd",
    b"/",
    b"//etc/passwd",
    b"a\0b",
    b"\0",
    b"secret.txt\0.png",
    b"\xff\xfe",
    b"to-etc/passwd",
    b"to-etc",
    b"to-secret",
    b"loop/x",
    b"loop",
    b"file.txt/child",
    b"dir/../../..",
    b".framegate/ro",
    b"a/.framegate",
    b"abs-link",
    b"up-link/secret.txt",
];

/// Hostile paths that name a symlink entry inside the tree.
const SYMLINK_ENTRIES: &[&[u8]] = &[b"to-etc", b"to-secret", b"loop", b"abs-link", b"up-link"];

fn setup(s: &TestServer) {
    // The tree is `<tmp>/tree`; `<tmp>/secret.txt` sits beside it.
    s.write("tree/file.txt", b"inside");
    s.write("tree/a/b/c.txt", b"c");
    s.write("tree/dir/d.txt", b"d");
    s.write("secret.txt", b"SECRET");
    let t = s.path("tree");
    std::os::unix::fs::symlink("/etc", t.join("to-etc")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", t.join("to-secret")).unwrap();
    std::os::unix::fs::symlink(s.path("secret.txt"), t.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("..", t.join("up-link")).unwrap();
    std::os::unix::fs::symlink("loop", t.join("loop")).unwrap();
}

fn reveals(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Ok(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            text.contains("SECRET")
                || text.contains("root:")
                || text.contains("passwd")
                || text.contains("secret")
        }
        Outcome::Err(_, _, message) => {
            message.contains("/tmp") || message.contains("/etc") || message.contains(".tmp")
        }
        Outcome::Unanswered => false,
    }
}

const COMMANDS: usize = 11;

#[tokio::test]
async fn hostile_paths_are_refused_by_every_command() {
    assert!(HOSTILE.len() >= 25);
    for p in HOSTILE {
        // A fresh tree per path, so one path's effects cannot mask another's.
        let s = TestServer::start(|c| c.allow_writes = true).await;
        setup(&s);
        let rw = format!("{}/tree/.framegate/rw", s.url);
        let mut b = Batch::new();
        b.add("get", &[("path", p)], None);
        b.add("readv", &[("path", p), ("ranges", b"0,1")], None);
        b.add("stat", &[("path", p)], None);
        b.add("has", &[("path", p)], None);
        b.add("list_dir", &[("path", p)], None);
        b.add("append", &[("path", p)], Some(b"PWNED"));
        b.add("mkdir", &[("path", p)], None);
        b.add("put", &[("path", p)], Some(b"PWNED"));
        b.add("delete", &[("path", p)], None);
        b.add("rename", &[("from", p), ("to", b"stolen")], None);
        b.add("rename", &[("from", b"file.txt"), ("to", p)], None);
        let (outcomes, _) = b.send(&rw).await;
        assert_eq!(outcomes.len(), COMMANDS);
        let path = String::from_utf8_lossy(p);
        let link_entry = SYMLINK_ENTRIES.contains(p);
        for (command, o) in outcomes.iter().enumerate() {
            assert!(
                !reveals(o),
                "{path:?} command {command} revealed something: {o:?}"
            );
            match o {
                Outcome::Err(..) => {}
                // `has` may say false; `stat` may describe a symlink entry
                // inside the tree; put, delete and rename may act on a
                // symlink *entry* (replace or unlink it, never its target).
                Outcome::Ok(bytes) => assert!(
                    (command == 3 && bytes.as_ref() == [0xf4])
                        || (command == 2 && link_entry)
                        || (link_entry && [7, 8, 9, 10].contains(&command)),
                    "{path:?} command {command} succeeded: {bytes:?}"
                ),
                Outcome::Unanswered => panic!("{path:?} command {command} unanswered"),
            }
        }
        // Nothing outside the tree changed or appeared.
        assert_eq!(
            std::fs::read(s.path("secret.txt")).unwrap(),
            b"SECRET",
            "{path:?}"
        );
        // (`.framegate` is the server's private area at the served root.)
        let outside: Vec<_> = std::fs::read_dir(s.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name != ".framegate")
            .collect();
        assert_eq!(
            outside.len(),
            2,
            "{path:?}: only `tree` and `secret.txt` beside the tree: {outside:?}"
        );
        assert!(s.stray_files().is_empty(), "{path:?}");
    }
}

#[tokio::test]
async fn hostile_url_bases_and_plain_paths_are_404() {
    let s = TestServer::start(|_| {}).await;
    setup(&s);
    for url in [
        "/tree/to-etc/passwd",
        "/tree/to-secret",
        "/tree/abs-link",
        "/tree/up-link/secret.txt",
        "/tree/%2e%2e/secret.txt",
        "/tree/to-etc/",
        "/tree/loop",
        "/tree/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/../../../../etc/passwd",
        "/tree/%2E%2E%2F%2E%2E%2Fetc/passwd",
    ] {
        let (status, text) = raw_request(&s.url, "GET", url, &[], b"").await;
        // The gateway serves the whole temp dir here, so `secret.txt` itself
        // is inside; what matters is that no symlink leads out to /etc.
        assert!(!text.contains("root:"), "{url} revealed /etc");
        if url.contains("etc")
            || url.contains("loop")
            || url.contains("%2")
            || url.starts_with("/..")
        {
            assert_eq!(status, 404, "{url}");
        }
    }
    let mut b = Batch::new();
    b.add("hello", &[], None);
    let body = b.body();
    let fg = [
        ("content-type", framegate_wire::MEDIA_TYPE),
        ("accept", framegate_wire::MEDIA_TYPE),
    ];
    for base in [
        "/tree/to-etc",
        "/tree/%2e%2e/%2e%2e",
        "/tree/file.txt",
        "/tree/loop",
        "/..",
        "/tree/%00",
    ] {
        let path = format!("{base}/.framegate/ro");
        assert_eq!(
            raw_request(&s.url, "POST", &path, &fg, &body).await.0,
            404,
            "{base}"
        );
    }
}
