//! File validators (docs/protocol.md, "File versions"): `stat` answers an
//! etag, `get`/`readv` take `if-match` and fail `file-changed` on another
//! version, large file answers start with one progress frame naming their
//! version, and plain HTTP's `ETag`, `If-Match` and `If-Range` describe the
//! file whose bytes are sent — so a resumed download never splices two
//! versions of a file. Over HTTP and over the byte-stream binding (TCP).

mod common;
#[path = "validators/plain.rs"]
mod plain;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use framegate_server::{VALIDATED_ANSWER_MIN, serve_tcp};
use framegate_wire::frame::FrameBody;
use framegate_wire::{ErrorKind, Frame, ProgressPayload, RequestId, StatAnswer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How a message reaches the server.
#[derive(Debug, Clone, Copy)]
enum Binding {
    /// A POST to the `ro` endpoint (deferred output).
    Http,
    /// A TCP session (immediate output).
    Tcp,
}

const BINDINGS: [Binding; 2] = [Binding::Http, Binding::Tcp];

/// A gateway on a temporary tree, on HTTP and on TCP.
struct Site {
    server: TestServer,
    tcp: String,
    stop: CancellationToken,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Site {
    async fn start() -> Site {
        let server = TestServer::start(|_| {}).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        tokio::spawn(serve_tcp(server.gateway.clone(), listener, stop.clone()));
        Site { server, tcp, stop }
    }

    /// The raw answer bytes of `batch` (after the preamble line on TCP).
    async fn raw(&self, binding: Binding, batch: &mut Batch) -> Bytes {
        let body = batch.body();
        match binding {
            Binding::Http => {
                let resp = post(&self.server.ro(), body, &[]).await;
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap()
            }
            Binding::Tcp => {
                let mut sock = self.tcp_session(&body).await;
                let mut out = Vec::new();
                tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut out))
                    .await
                    .unwrap()
                    .unwrap();
                let ok = b"framegate/1 ok\n";
                assert!(out.starts_with(ok), "{:?}", String::from_utf8_lossy(&out));
                Bytes::copy_from_slice(&out[ok.len()..])
            }
        }
    }

    /// A TCP session that sent `body` and its end of input (the server
    /// answers everything, then closes).
    async fn tcp_session(&self, body: &[u8]) -> tokio::net::TcpStream {
        let mut sock = tokio::net::TcpStream::connect(&self.tcp).await.unwrap();
        sock.write_all(b"framegate/1 accept-encoding=identity\n")
            .await
            .unwrap();
        sock.write_all(body).await.unwrap();
        sock.shutdown().await.unwrap();
        sock
    }

    /// Runs `batch`: its outcomes, and every frame as sent.
    async fn run(&self, binding: Binding, mut batch: Batch) -> (Vec<Outcome>, Vec<Frame>, Batch) {
        let raw = self.raw(binding, &mut batch).await;
        let frames = framegate_wire::codec::decode_all(&raw, 1 << 20).unwrap();
        let (outcomes, _) = batch.decode(&raw);
        (outcomes, frames, batch)
    }

    async fn one(&self, binding: Binding, name: &str, pairs: &[(&str, &[u8])]) -> Outcome {
        let mut batch = Batch::new();
        batch.add(name, pairs, None);
        self.run(binding, batch).await.0.remove(0)
    }

    async fn stat(&self, path: &str) -> StatAnswer {
        let outcome = self
            .one(Binding::Http, "stat", &[("path", path.as_bytes())])
            .await;
        StatAnswer::decode(outcome.ok()).unwrap()
    }

    async fn etag(&self, path: &str) -> String {
        self.stat(path)
            .await
            .etag
            .expect("a regular file has an etag")
    }
}

/// `len` bytes that differ from any shift of themselves.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Replaces `path` the way `put` and editors do: a new file, renamed over.
fn replace(site: &Site, rel: &str, content: &[u8]) {
    let tmp = site.server.path(&format!("{rel}.new"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, site.server.path(rel)).unwrap();
}

fn set_mtime(site: &Site, rel: &str, time: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(site.server.path(rel))
        .unwrap()
        .set_modified(time)
        .unwrap();
}

#[tokio::test]
async fn stat_answers_an_etag_that_changes_with_the_file() {
    let site = Site::start().await;
    site.server.write("f.txt", b"version one");
    site.server.write("d/inner", b"x");
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    set_mtime(&site, "f.txt", time);
    let first = site.etag("f.txt").await;
    assert_eq!(site.etag("f.txt").await, first, "stable while unchanged");
    let root = site.server.dir.path().to_string_lossy().into_owned();
    assert!(!first.contains(&root) && !first.contains("f.txt"));

    // Replaced by an identical file with the same mtime: only the inode
    // tells them apart.
    let tmp = site.server.path("f.txt.new");
    std::fs::write(&tmp, b"version one").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(time)
        .unwrap();
    std::fs::rename(&tmp, site.server.path("f.txt")).unwrap();
    let replaced = site.etag("f.txt").await;
    assert_ne!(replaced, first, "replaced by rename");

    // Rewritten in place: a different size…
    use std::io::Write as _;
    std::fs::File::options()
        .append(true)
        .open(site.server.path("f.txt"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    set_mtime(&site, "f.txt", time);
    let grown = site.etag("f.txt").await;
    assert_ne!(grown, replaced, "grown in place, same mtime");
    // …or only another mtime (same inode, same size, same bytes).
    set_mtime(&site, "f.txt", time + Duration::from_nanos(1));
    assert_ne!(site.etag("f.txt").await, grown, "touched");

    // Directories and symlinks have none: the key is absent.
    std::os::unix::fs::symlink("f.txt", site.server.path("link")).unwrap();
    for path in ["d", "link", "."] {
        let outcome = site
            .one(Binding::Http, "stat", &[("path", path.as_bytes())])
            .await;
        assert_eq!(
            StatAnswer::decode(outcome.ok()).unwrap().etag,
            None,
            "{path}"
        );
        let map: ciborium::Value = outcome.cbor();
        let keys: Vec<String> = map
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert!(!keys.contains(&"etag".to_owned()), "{path}: {keys:?}");
    }
}

#[tokio::test]
async fn if_match_reads_the_named_version_or_fails_file_changed() {
    let site = Site::start().await;
    for binding in BINDINGS {
        let old = pattern(40_000, 1);
        site.server.write("f.bin", &old);
        let etag = site.etag("f.bin").await;
        let get = site
            .one(
                binding,
                "get",
                &[("path", b"f.bin"), ("if-match", etag.as_bytes())],
            )
            .await;
        assert_eq!(get.ok().as_ref(), &old[..], "{binding:?}");
        let readv = site
            .one(
                binding,
                "readv",
                &[
                    ("path", b"f.bin"),
                    ("ranges", b"30000,10000"),
                    ("if-match", etag.as_bytes()),
                ],
            )
            .await;
        assert_eq!(readv.ok().as_ref(), &old[30_000..], "{binding:?}");

        // The file is replaced by a shorter one: the stale version is
        // `file-changed` (not `short-read`: the question was the version).
        replace(&site, "f.bin", &pattern(20_000, 2));
        let mut batch = Batch::new();
        batch.add(
            "get",
            &[("path", b"f.bin"), ("if-match", etag.as_bytes())],
            None,
        );
        batch.add(
            "readv",
            &[
                ("path", b"f.bin"),
                ("ranges", b"30000,10000"),
                ("if-match", etag.as_bytes()),
            ],
            None,
        );
        batch.add("get", &[("path", b"f.bin")], None);
        batch.add("get", &[("path", b"f.bin"), ("if-match", b"\xff")], None);
        let (outcomes, _, _) = site.run(binding, batch).await;
        let root = site.server.dir.path().to_string_lossy().into_owned();
        for stale in &outcomes[..2] {
            let Outcome::Err(kind, code, message) = stale else {
                panic!("{binding:?}: expected file-changed, got {stale:?}");
            };
            assert_eq!(*kind, ErrorKind::Application, "{binding:?}");
            assert_eq!(code.as_str(), "file-changed", "{binding:?}");
            assert!(!message.contains(&root), "{message}");
        }
        // Without `if-match` nothing changes.
        assert_eq!(outcomes[2].ok().as_ref(), &pattern(20_000, 2)[..]);
        assert_eq!(outcomes[3].code(), "bad-argument");
        // The new version reads with its own tag.
        let fresh = site.etag("f.bin").await;
        let get = site
            .one(
                binding,
                "get",
                &[("path", b"f.bin"), ("if-match", fresh.as_bytes())],
            )
            .await;
        assert_eq!(get.ok().len(), 20_000);
    }
}

/// The frames of one request, in the order sent.
fn frames_of(frames: &[Frame], id: RequestId) -> Vec<&FrameBody> {
    frames
        .iter()
        .filter(|f| f.request_id == id)
        .map(|f| &f.body)
        .collect()
}

/// The version a request's answer announced: its one progress frame, which
/// must come before every bytes frame; `None` if it has none.
fn announced(frames: &[Frame], id: RequestId) -> Option<ProgressPayload> {
    let bodies = frames_of(frames, id);
    let progress: Vec<usize> = bodies
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b, FrameBody::Progress(_)))
        .map(|(i, _)| i)
        .collect();
    assert!(
        bodies
            .iter()
            .all(|b| matches!(b, FrameBody::Progress(_) | FrameBody::BytesResponse(_))),
        "request {id:?}: {bodies:?}"
    );
    match progress.as_slice() {
        [] => None,
        [0] => match bodies[0] {
            FrameBody::Progress(p) => Some(ProgressPayload::decode(&p.payload).unwrap()),
            _ => unreachable!(),
        },
        _ => panic!("request {id:?}: progress frames at {progress:?} of {bodies:?}"),
    }
}

#[tokio::test]
async fn large_file_answers_start_with_one_progress_frame_naming_their_version() {
    let site = Site::start().await;
    let big = pattern(200_000, 3);
    site.server.write("big.bin", &big);
    site.server.write("small.txt", &pattern(1_000, 4));
    let etag = site.etag("big.bin").await;
    let min = VALIDATED_ANSWER_MIN as usize;
    assert_eq!(min, 65_536);
    for binding in BINDINGS {
        let mut batch = Batch::new();
        batch.add("get", &[("path", b"big.bin")], None);
        batch.add(
            "readv",
            &[("path", b"big.bin"), ("ranges", b"0,65536")],
            None,
        );
        batch.add(
            "readv",
            &[("path", b"big.bin"), ("ranges", b"1000,70000\n5,5")],
            None,
        );
        batch.add(
            "get",
            &[("path", b"big.bin"), ("if-match", etag.as_bytes())],
            None,
        );
        // Below the bound: no frame.
        batch.add(
            "readv",
            &[("path", b"big.bin"), ("ranges", b"0,65535")],
            None,
        );
        batch.add("get", &[("path", b"small.txt")], None);
        let (outcomes, frames, batch) = site.run(binding, batch).await;
        let expect = [
            Some(("get", 200_000)),
            Some(("readv", 65_536)),
            Some(("readv", 70_005)),
            Some(("get", 200_000)),
            None,
            None,
        ];
        for (i, want) in expect.into_iter().enumerate() {
            let got = announced(&frames, batch.ids[i]);
            let answer = outcomes[i].ok();
            match want {
                Some((topic, total)) => {
                    let want = ProgressPayload {
                        topic: topic.into(),
                        pos: 0,
                        total,
                        label: Some("bytes".into()),
                        item: Some(etag.clone()),
                    };
                    assert_eq!(got, Some(want), "{binding:?} request {i}");
                    assert_eq!(answer.len() as u64, total);
                }
                None => assert_eq!(got, None, "{binding:?} request {i}"),
            }
        }
        assert_eq!(outcomes[0].ok().as_ref(), &big[..]);
        assert_eq!(outcomes[2].ok()[..70_000], big[1_000..71_000]);
    }
}

/// Rewrites `rel` in place: the same length, other bytes, another mtime.
fn rewrite_in_place(site: &Site, rel: &str, content: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::options()
        .write(true)
        .open(site.server.path(rel))
        .unwrap();
    file.write_all(content).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
}

/// A file rewritten in place while its answer is being sent fails that
/// answer (`file-changed`, after the bytes already sent): the client never
/// takes a mix of two versions for the file. The server looks at the file
/// again as it reads the last piece (in the same job as that read).
#[tokio::test]
async fn a_file_rewritten_in_place_while_it_is_sent_fails_its_answer() {
    let site = Site::start().await;
    // Larger than socket buffers and the server's output budget hold: the
    // answer is still being read from the file when it is rewritten.
    let len = 64 << 20;
    for binding in BINDINGS {
        std::fs::write(site.server.path("big"), pattern(len, 1)).unwrap();
        let mut batch = Batch::new();
        batch.add("get", &[("path", b"big")], None);
        let body = batch.body();
        let mut raw = Vec::new();
        match binding {
            Binding::Http => {
                let mut resp = post(&site.server.ro(), body, &[]).await;
                assert_eq!(resp.status(), 200);
                while let Some(chunk) = resp.chunk().await.unwrap() {
                    let before = raw.len();
                    raw.extend_from_slice(&chunk);
                    if before < 1 << 20 && raw.len() >= 1 << 20 {
                        rewrite_in_place(&site, "big", &pattern(len, 2));
                    }
                }
            }
            Binding::Tcp => {
                let mut sock = site.tcp_session(&body).await;
                let mut first = vec![0; 1 << 20];
                sock.read_exact(&mut first).await.unwrap();
                rewrite_in_place(&site, "big", &pattern(len, 2));
                let mut rest = Vec::new();
                tokio::time::timeout(Duration::from_secs(30), sock.read_to_end(&mut rest))
                    .await
                    .unwrap()
                    .unwrap();
                let ok = b"framegate/1 ok\n";
                assert!(first.starts_with(ok));
                raw.extend_from_slice(&first[ok.len()..]);
                raw.extend_from_slice(&rest);
            }
        }
        let (outcomes, _) = batch.decode(&raw);
        assert_eq!(outcomes.len(), 1, "{binding:?}");
        assert_eq!(outcomes[0].code(), "file-changed", "{binding:?}");
    }
}
