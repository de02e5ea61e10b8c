//! Acceptance tests of the server's write path, written from the outside
//! against real `framegate-server` processes (PROTOCOL.md §6, §7, §9.3):
//!
//! 1. **Ordering inside one message** (§6): a matrix of rows, each a write
//!    followed in the same message by commands that depend on it, all
//!    queued behind an 8 MiB `put`; every answer and the final tree checked.
//!    `FRAMEGATE_ORDER_REPS` (default 100) repetitions per row,
//!    `FRAMEGATE_ORDER_PARALLEL` (default 2) messages at once.
//! 2. **Concurrent messages on one file**: 20 clients `append` tagged
//!    200,000-byte chunks, or `put` whole versions, through one server and
//!    through two servers sharing the tree (clients alternate instances);
//!    `FRAMEGATE_CONCURRENCY_ROUNDS` (default 3) messages per client.
//! 3. **Crashes**: `kill -9` at a seeded random moment during a large
//!    `put`, a large `append`, or a message of 4,000 renames; restart on the
//!    same tree; old-or-new, never partial, renames an in-order prefix, no
//!    staging leftover. `FRAMEGATE_CRASH_TRIALS` (default 3) per kind,
//!    `FRAMEGATE_CRASH_SEED` to replay a run.
//! 4. **No staging file in sight** while uploads are in flight: not next to
//!    user files on disk, not in `list_dir`, `iter_files_recursive` or the
//!    plain-HTTP listings.
//!
//! The server's private area is `<root>/.framegate/` (staging in
//! `.framegate/staging/`, append journals in `.framegate/journal/`);
//! anything else that is not a user file is a defect, and so is any
//! `.framegate-upload-*` file (the old staging name).
//!
//! Each test prints a summary (per row, per kind) and fails with the full
//! list of wrong answers, so one run reports every broken case. Tests of
//! this file run one at a time: the crash tests time their kills against
//! windows measured on the same machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciborium::Value;
use framegate_e2e::*;

#[path = "write_safety/concurrency.rs"]
mod concurrency;
#[path = "write_safety/crash.rs"]
mod crash;
#[path = "write_safety/ordering.rs"]
mod ordering;
#[path = "write_safety/visibility.rs"]
mod visibility;

const TOKEN: &str = "write-safety-token";

/// The old staging-file name: must never exist anywhere.
const OLD_STAGING_PREFIX: &str = ".framegate-upload-";

// ---- common ------------------------------------------------------------------

fn knob(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// One test of this file at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `test` on a fresh runtime, one test at a time, bounded by `limit`.
/// Gateways owned by the future are killed when it is dropped.
fn run<F: Future<Output = ()>>(limit: Duration, test: F) {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if tokio::time::timeout(limit, test).await.is_err() {
            panic!("test did not finish within {limit:?}");
        }
    });
}

/// A temporary tree and the token file of its gateways.
struct Site {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    token: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        Site {
            _dir: dir,
            tree,
            token,
        }
    }

    fn gateway(&self) -> Gateway {
        Gateway::start(&self.tree, &self.token, &[])
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let path = self.tree.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// The endpoint URL of base `base` ("" for the root).
fn endpoint(gw: &Gateway, base: &str, rw: bool) -> String {
    let end = if rw { "rw" } else { "ro" };
    if base.is_empty() {
        format!("{}/.framegate/{end}", gw.url())
    } else {
        format!("{}/{base}/.framegate/{end}", gw.url())
    }
}

/// Sends `batch` whole as one message.
async fn send(
    http: &reqwest::Client,
    url: &str,
    batch: &mut Batch,
) -> Result<Vec<Outcome>, String> {
    let body = batch.take_body();
    let bytes = post_message(http, url, TOKEN, reqwest::Body::from(body)).await?;
    Ok(batch.decode(&bytes))
}

/// One command alone.
async fn one(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    pairs: &[(&str, &[u8])],
    data: Option<Bytes>,
) -> Result<Outcome, String> {
    let mut b = Batch::new();
    b.add(name, pairs, data);
    Ok(send(http, url, &mut b).await?.remove(0))
}

/// Paths that betray staging: old-style staging files anywhere, and
/// anything inside `.framegate/staging/` or `.framegate/journal/`.
fn leftovers(tree: &Path) -> Vec<String> {
    list_tree(tree)
        .into_iter()
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(OLD_STAGING_PREFIX))
                || p.starts_with(".framegate/staging/")
                || p.starts_with(".framegate/journal/")
        })
        .collect()
}

/// Paths that are neither user paths (`user`) nor inside the private area.
fn strangers(tree: &Path, user: &dyn Fn(&str) -> bool) -> Vec<String> {
    list_tree(tree)
        .into_iter()
        .filter(|p| p != ".framegate" && !p.starts_with(".framegate/") && !user(p))
        .collect()
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
}

/// `n` bytes described for a report without dumping them.
fn summarize(b: &[u8]) -> String {
    if b.len() <= 48 {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!("{} bytes", b.len())
    }
}

/// Cuts a body into pieces of `size` bytes.
fn cut(body: &Bytes, size: usize) -> Vec<Bytes> {
    (0..body.len())
        .step_by(size)
        .map(|at| body.slice(at..body.len().min(at + size)))
        .collect()
}

fn fail_report(title: &str, failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    let shown: Vec<&String> = failures.iter().take(60).collect();
    let mut text = format!("{title}: {} failure(s)\n", failures.len());
    for f in shown {
        text.push_str("  - ");
        text.push_str(f);
        text.push('\n');
    }
    if failures.len() > 60 {
        text.push_str(&format!("  ... and {} more\n", failures.len() - 60));
    }
    panic!("{text}");
}

// ---- expected answers ----------------------------------------------------------

/// What a command must answer.
#[derive(Clone, Debug)]
enum Expect {
    /// CBOR null (`put`, `mkdir`, `rename`, `delete`, `rmdir`).
    Null,
    /// CBOR uint (`append`: the size before).
    Uint(u64),
    /// CBOR bool (`has`).
    Bool(bool),
    /// Raw bytes (`get`).
    Content(Vec<u8>),
    /// CBOR array of names (`list_dir`).
    Names(Vec<String>),
    /// `stat` of a file of this size.
    FileOfSize(u64),
    /// An application error with this code.
    Code(&'static str),
    /// Any application error.
    AnyError,
}

fn cbor_map_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn check(expect: &Expect, got: &Outcome) -> Result<(), String> {
    let ok = match (expect, got) {
        (
            Expect::Code(code),
            Outcome::Err {
                protocol, code: c, ..
            },
        ) => !protocol && c == code,
        (Expect::AnyError, Outcome::Err { protocol, .. }) => !protocol,
        (_, Outcome::Err { .. } | Outcome::Unanswered)
        | (Expect::Code(_) | Expect::AnyError, _) => false,
        (Expect::Content(want), Outcome::Ok(b)) => b[..] == want[..],
        (Expect::Null, o) => o.cbor() == Some(Value::Null),
        (Expect::Uint(n), o) => o.cbor() == Some(Value::Integer((*n).into())),
        (Expect::Bool(v), o) => o.cbor() == Some(Value::Bool(*v)),
        (Expect::Names(names), o) => {
            o.cbor()
                == Some(Value::Array(
                    names.iter().map(|n| Value::Text(n.clone())).collect(),
                ))
        }
        (Expect::FileOfSize(size), o) => o.cbor().is_some_and(|v| {
            cbor_map_get(&v, "kind").and_then(Value::as_text) == Some("file")
                && cbor_map_get(&v, "size") == Some(&Value::Integer((*size).into()))
        }),
    };
    if ok {
        Ok(())
    } else {
        let want = match expect {
            Expect::Content(b) => format!("bytes {}", summarize(b)),
            other => format!("{other:?}"),
        };
        Err(format!("expected {want}, got {}", got.describe()))
    }
}
