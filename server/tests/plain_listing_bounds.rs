//! Plain-HTTP directory listings are bounded: the JSON is what it always
//! was (nginx `autoindex_format json`), `HEAD` builds no body, a listing
//! holds one of the server's listing slots only while its directory is
//! read and its bytes in the listing memory until its body went out, and a
//! client that stops reading loses them (and its connection) after the
//! send timeout instead of holding them forever.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The listing slots are the server process's, shared by every test of
/// this binary: the tests that list take turns.
static SLOTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The listing as the old implementation built it: one `serde_json::Value`
/// per entry, sorted bytewise by name, reserved names hidden.
fn old_listing_json(dir: &Path) -> Vec<u8> {
    let mut entries: Vec<(String, std::fs::Metadata)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::symlink_metadata(e.path()).unwrap())
        })
        .filter(|(name, _)| name != ".framegate" && !name.starts_with(".framegate-upload-"))
        .collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let items: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(name, meta)| {
            let ft = meta.file_type();
            let kind = if ft.is_file() {
                "file"
            } else if ft.is_dir() {
                "directory"
            } else {
                "other"
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            let date = httpdate::fmt_http_date(
                UNIX_EPOCH + Duration::try_from_secs_f64(mtime.max(0.0)).unwrap_or_default(),
            );
            let mut item = serde_json::json!({ "name": name, "type": kind, "mtime": date });
            if ft.is_file() {
                item["size"] = serde_json::json!(meta.len());
            }
            item
        })
        .collect();
    serde_json::to_vec(&items).unwrap()
}

/// `count` empty files with names `name_len` bytes long.
fn many_files(dir: &Path, count: usize, name_len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        std::fs::File::create(dir.join(format!("{i:0>name_len$}"))).unwrap();
    }
}

/// A client that asks for `path` and then reads nothing, with a tiny
/// receive buffer so the server's side fills up quickly.
async fn non_reader(url: &str, path: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// Reads what the server still sends; returns the byte count, or `None`
/// if the connection stays open for `within`.
async fn drain(mut stream: TcpStream, within: Duration) -> Option<usize> {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()
}

async fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    let resp = http().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_large_listing_is_byte_for_byte_the_old_json() {
    let _turn = SLOTS.lock().await;
    let s = TestServer::start(|_| {}).await;
    let dir = s.path("big");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..20_000usize {
        let name = match i % 5 {
            0 => format!("plain-{i}"),
            1 => format!("quote\"back\\slash-{i}"),
            2 => format!("ctrl\u{1}\n\t-{i}"),
            3 => format!("ünïcödé-😀-{i}"),
            _ => format!("Z{i}"),
        };
        let content = vec![b'x'; i % 7];
        std::fs::write(dir.join(&name), &content).unwrap();
    }
    // Fractional and old modification times, a directory, a symbolic link,
    // a name that is not UTF-8, and names that must stay hidden.
    let f = std::fs::File::options()
        .write(true)
        .open(dir.join("plain-0"))
        .unwrap();
    f.set_modified(UNIX_EPOCH + Duration::new(1_700_000_000, 999_999_999))
        .unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(dir.join("plain-5"))
        .unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(1)).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("plain-0", dir.join("link")).unwrap();
    std::fs::write(dir.join(OsStr::from_bytes(b"bad-\xff-utf8")), b"??").unwrap();
    std::fs::write(dir.join(".framegate-upload-hidden"), b"").unwrap();
    std::fs::create_dir(dir.join(".framegate")).unwrap();

    let (status, body) = get_bytes(&format!("{}/big/", s.url)).await;
    assert_eq!(status, 200);
    let expected = old_listing_json(&dir);
    assert_eq!(body.len(), expected.len());
    assert!(body == expected, "the listing differs from the old JSON");
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed.len(), 20_000 + 3);

    // A small directory too (one piece), and an empty one.
    s.write("small/b.txt", b"0123456789");
    std::fs::create_dir(s.path("small/a")).unwrap();
    let (_, small) = get_bytes(&format!("{}/small/", s.url)).await;
    assert_eq!(small, old_listing_json(&s.path("small")));
    std::fs::create_dir(s.path("empty")).unwrap();
    let (_, empty) = get_bytes(&format!("{}/empty/", s.url)).await;
    assert_eq!(empty, b"[]");
}

#[tokio::test]
async fn head_of_a_directory_has_no_body() {
    let _turn = SLOTS.lock().await;
    let s = TestServer::start(|_| {}).await;
    many_files(&s.path("d"), 2000, 20);
    let (status, text) = raw_request(&s.url, "HEAD", "/d/", &[], b"").await;
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "", "HEAD sent a body");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(!head.contains("content-length: 0"), "{head}");
    // GET of the same directory still lists it.
    let (status, body) = get_bytes(&format!("{}/d/", s.url)).await;
    assert_eq!(status, 200);
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed.len(), 2000);
    // A missing directory is a 404 either way.
    let (status, _) = raw_request(&s.url, "HEAD", "/nope/", &[], b"").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn non_readers_hold_no_listing_slot() {
    let _turn = SLOTS.lock().await;
    // Before, the four held both slots until the send timeout cut them
    // (two of them, then the next two): a bystander's listing waited more
    // than the send timeout.
    let s = TestServer::start(|c| c.send_timeout = Duration::from_secs(4)).await;
    // About 7 MB of JSON: far more than socket buffers hold.
    many_files(&s.path("wide"), 30_000, 200);
    s.write("small/a.txt", b"small");
    let full = old_listing_json(&s.path("wide"));

    // Four non-readers: twice the listing slots, each body stuck on a
    // full socket (before, two held both slots for as long as they stayed).
    let started = Instant::now();
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(non_reader(&s.url, "/wide/").await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Other listings, plain and framegate, are served meanwhile.
    let t = Instant::now();
    let (status, body) = get_bytes(&format!("{}/wide/", s.url)).await;
    assert_eq!(status, 200);
    assert!(body == full, "the bystander's listing is whole");
    let (status, small) = get_bytes(&format!("{}/small/", s.url)).await;
    assert_eq!(status, 200);
    assert_eq!(small, old_listing_json(&s.path("small")));
    let listed = one(&s.ro(), "list_dir", &[("path", b"small")], None).await;
    assert_eq!(listed.cbor::<Vec<String>>(), ["a.txt"]);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bystanders took {:?} beside non-readers",
        t.elapsed()
    );

    // The non-readers' connections are closed at the send timeout, their
    // listings cut short (read only after it: reading would make them
    // readers).
    tokio::time::sleep_until((started + Duration::from_secs(6)).into()).await;
    for holder in holders {
        let got = drain(holder, Duration::from_secs(10))
            .await
            .expect("a non-reader's connection is closed");
        assert!(got < full.len(), "a non-reader got the whole listing");
    }
}

#[tokio::test]
async fn listings_past_the_listing_memory_are_told_to_retry() {
    let _turn = SLOTS.lock().await;
    // One wide listing (about 6.7 MB once read, 8.8 MiB while growing)
    // fits in 10 MiB; a second one beside it does not.
    let s = TestServer::start(|c| {
        c.send_timeout = Duration::from_secs(2);
        c.listing_memory = 10 << 20;
    })
    .await;
    many_files(&s.path("wide"), 30_000, 200);
    many_files(&s.path("wider"), 60_000, 200);
    s.write("small/a.txt", b"small");
    let full = old_listing_json(&s.path("wide"));

    let started = Instant::now();
    let holder = non_reader(&s.url, "/wide/").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A second wide listing is refused at once, retryable.
    let t = Instant::now();
    let resp = http().get(format!("{}/wide/", s.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.text().await.unwrap().contains("retry later"));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // A small one fits beside it.
    let (status, small) = get_bytes(&format!("{}/small/", s.url)).await;
    assert_eq!(status, 200);
    assert_eq!(small, old_listing_json(&s.path("small")));
    // Once the non-reader is cut, its memory is back (read only after the
    // send timeout: reading would make it a reader).
    tokio::time::sleep_until((started + Duration::from_secs(3)).into()).await;
    let got = drain(holder, Duration::from_secs(10))
        .await
        .expect("the non-reader's connection is closed");
    assert!(got < full.len());
    let (status, body) = get_bytes(&format!("{}/wide/", s.url)).await;
    assert_eq!(status, 200);
    assert!(body == full);
    // A listing that could never fit, even alone, is too large, not busy.
    let (status, _) = get_bytes(&format!("{}/wider/", s.url)).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_listing_memory_at_once() {
    let _turn = SLOTS.lock().await;
    let s = TestServer::start(|c| {
        c.send_timeout = Duration::from_secs(60);
        c.listing_memory = 10 << 20;
    })
    .await;
    many_files(&s.path("wide"), 30_000, 200);
    let holder = non_reader(&s.url, "/wide/").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, _) = get_bytes(&format!("{}/wide/", s.url)).await;
    assert_eq!(status, 503, "the holder's listing fills the memory");
    drop(holder);
    // Within the send timeout, the charge comes back because the client left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_bytes(&format!("{}/wide/", s.url)).await;
        if status == 200 {
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed.len(), 30_000);
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the memory never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
