//! Plain-HTTP directory listings in nginx's `autoindex_format json` shape,
//! with bounded memory and time.
//!
//! * The directory is read on the file pool, never on the executor's
//!   threads, into a compact [`Listing`]: one buffer of names and 24 bytes
//!   per entry (kind, size, mtime) — not one JSON value per entry. More
//!   than [`MAX_LIST_ENTRIES`] entries is refused (403) as soon as the next
//!   name is read.
//! * The JSON is encoded in pieces of about [`LISTING_PIECE`] bytes only as
//!   the client takes them ([`JsonPieces`]), at most two pieces ahead of
//!   hyper; the body has no `Content-Length` (chunked on HTTP/1.1).
//! * One of the server's listing slots ([`crate::fs::listing_slot`], shared
//!   with `list_dir`) is held while the directory is read, no longer: the
//!   slots bound how many directories are read at once, not how long a
//!   client takes to read the answer.
//! * The listing's memory is charged to the gateway's `listing_memory`
//!   budget as the directory is read, and the charge is held until the
//!   last piece went out, the client went away, or hyper took no piece for
//!   the gateway's `send_timeout` (then its connection is cut). A listing
//!   that does not fit is answered 503 with `Retry-After` at once: slow
//!   readers hold bytes, and only enough of them together make others
//!   retry, where before two held both slots and everybody waited.
//! * `HEAD` only counts the entries (for the 403) and builds no body.
//!
//! What it is not for: files (see the parent module) and framegate
//! `list_dir` answers (`fs/read.rs`).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use cap_std::fs::Dir;
use framegate_wire::budget::{Permit, SharedBudget};

use crate::outflow::{Charge, Outflow, OutputBudget};
use http::{Method, StatusCode, header};
use tokio::sync::{SemaphorePermit, mpsc};

use super::{LATEST_HTTP_DATE, plain};
use crate::answer::CommandError;
use crate::fs::MAX_LIST_ENTRIES;
use crate::gateway::Gateway;
use crate::http::connection::ConnectionHandle;
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX, io_error};

/// About this many bytes of JSON are encoded at a time, as the client
/// takes them.
const LISTING_PIECE: usize = 64 * 1024;

/// Answers `GET`/`HEAD` of the directory `rel` (already known to be one,
/// its URL ending in `/`).
pub(super) async fn answer(gw: &Arc<Gateway>, rel: PathBuf, request: Request) -> Response {
    let conn = request.extensions().get::<ConnectionHandle>().cloned();
    if request.method() == Method::HEAD {
        return head_of_listing();
    }
    drop(request);
    let slot = match wait_for_slot().await {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let Some(root) = gw.root.clone() else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let budget = gw.listing_budget.clone();
    // The slot goes with the scan, not with this future: a client that
    // leaves mid-scan does not free it while the file pool still reads.
    let scanned = crate::pool::blocking(move || {
        let _slot = slot;
        scan(&root, &rel, MAX_LIST_ENTRIES, true, &budget)
    })
    .await;
    let (listing, charge) = match scanned {
        Ok(Scan::Listed(listing, charge)) => (listing, charge),
        Ok(Scan::TooLarge) => {
            return plain(StatusCode::FORBIDDEN, "directory too large to list");
        }
        Ok(Scan::Busy) => return busy(gw),
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    respond(gw, listing, charge, conn)
}

/// Hands the listing's pieces to the response body one at a time, holding
/// the listing's memory charge until the last one was taken. Returns early
/// — dropping the listing and the charge — when the body is gone (client away) or took
/// no piece for `send_timeout` (then the connection is cut: hyper waits on
/// a full socket and would not look at the body again). A body whose
/// listing was dropped ends with an error, never as if complete.
async fn feed(
    mut pieces: JsonPieces,
    _charge: Permit,
    tx: mpsc::Sender<Option<(Bytes, Charge)>>,
    output: (OutputBudget, Duration),
    conn: Option<ConnectionHandle>,
) {
    let (budget, send_timeout) = output;
    let flow = Arc::new(Outflow::default());
    loop {
        // Each piece is charged to the output budget until hyper asks for
        // the next (past it, small free pieces): a client that takes no
        // piece holds one, whatever the JSON's growth over the charge.
        let Ok(granted) =
            tokio::time::timeout(send_timeout, flow.charge(&budget, LISTING_PIECE)).await
        else {
            tracing::info!("client stopped reading a listing; closing its connection");
            if let Some(conn) = &conn {
                conn.cut();
            }
            return;
        };
        let piece = match pieces.next_piece(granted.limit()) {
            Ok(piece) => piece.map(|p| (p, granted)),
            Err(err) => {
                tracing::warn!(error = %err, "listing could not be encoded");
                return;
            }
        };
        let last = piece.is_none();
        match tokio::time::timeout(send_timeout, tx.send(piece)).await {
            Ok(Ok(())) if last => return,
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                tracing::debug!("client went away during a listing");
                return;
            }
            Err(_) => {
                tracing::info!(
                    send_timeout_secs = send_timeout.as_secs_f64(),
                    "client stopped reading a listing; closing its connection"
                );
                if let Some(conn) = &conn {
                    conn.cut();
                }
                return;
            }
        }
    }
}

/// The response body fed by [`feed`]: `Some(piece)`s, then `None` at the
/// end; a channel closed before that `None` ends the body with an error.
/// A piece's charge is held until hyper asks for the next one.
fn body_of(rx: mpsc::Receiver<Option<(Bytes, Charge)>>) -> Body {
    let stream =
        futures_util::stream::unfold((Some(rx), None::<Charge>), |(rx, held)| async move {
            drop(held);
            let mut rx = rx?;
            match rx.recv().await {
                Some(Some((piece, charge))) => Some((Ok(piece), (Some(rx), Some(charge)))),
                Some(None) => None,
                None => Some((
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "listing abandoned before it was sent",
                    )),
                    (None, None),
                )),
            }
        });
    Body::from_stream(stream)
}

/// What reading a directory found.
#[derive(Debug)]
enum Scan {
    /// Its entries, sorted (none kept when only counted), and their charge
    /// to the listing memory.
    Listed(Listing, Permit),
    /// More entries than the bound.
    TooLarge,
    /// The listing memory could not hold it.
    Busy,
}

/// Reads the directory `rel` below `root`: entries (when `keep`) with their
/// metadata, reserved names hidden, sorted bytewise by name; at most `max`
/// (one more is read, then it is [`Scan::TooLarge`]). The listing's memory
/// (the buffers' capacity) is charged to `budget` as it grows; when the
/// budget cannot hold it, it is [`Scan::Busy`] — or [`Scan::TooLarge`] if
/// it would not fit even alone.
fn scan(
    root: &Dir,
    rel: &Path,
    max: usize,
    keep: bool,
    budget: &SharedBudget,
) -> Result<Scan, CommandError> {
    let mut listing = Listing::default();
    let Some(mut charge) = budget.try_take(0) else {
        return Ok(Scan::Busy);
    };
    let mut count = 0usize;
    for entry in root.read_dir(rel).map_err(|e| io_error(&e, rel))? {
        let entry = entry.map_err(|e| io_error(&e, rel))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == RESERVED_COMPONENT || name.starts_with(TEMP_PREFIX) {
            continue;
        }
        if count == max {
            return Ok(Scan::TooLarge);
        }
        count += 1;
        if keep {
            // Not followed: a symbolic link is listed as `other`.
            let meta = entry.metadata().map_err(|e| io_error(&e, rel))?;
            if !listing.push(&name, &meta) {
                return Ok(Scan::TooLarge);
            }
            if let Some(refused) = listing.charge(&mut charge, budget) {
                return Ok(refused);
            }
        }
    }
    Ok(listing.done(charge))
}

/// Answers `GET`/`HEAD` of the directory `rel` of a gateway over another
/// storage (an object store): its entries from the storage's `list`, then
/// as [`answer`] does, with the same slot, memory charge and timeouts.
pub(super) async fn answer_stored(gw: &Arc<Gateway>, rel: PathBuf, request: Request) -> Response {
    let conn = request.extensions().get::<ConnectionHandle>().cloned();
    if request.method() == Method::HEAD {
        return head_of_listing();
    }
    drop(request);
    let slot = match wait_for_slot().await {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let listed = gw.storage.list(&rel).await;
    drop(slot);
    let entries = match listed {
        Ok(entries) => entries,
        Err(err) if err.code == framegate_wire::ErrorCode::NOT_SUPPORTED => {
            return plain(StatusCode::FORBIDDEN, "directory too large to list");
        }
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let mut listing = Listing::default();
    let Some(mut charge) = gw.listing_budget.try_take(0) else {
        return busy(gw);
    };
    for (name, meta) in &entries {
        let kind = match meta.kind {
            crate::storage::EntryKind::File => Kind::File,
            crate::storage::EntryKind::Dir => Kind::Directory,
            _ => Kind::Other,
        };
        if !listing.push_entry(name, kind, meta.size, meta.mtime) {
            return plain(StatusCode::FORBIDDEN, "directory too large to list");
        }
        match listing.charge(&mut charge, &gw.listing_budget) {
            Some(Scan::TooLarge) => {
                return plain(StatusCode::FORBIDDEN, "directory too large to list");
            }
            Some(_) => return busy(gw),
            None => {}
        }
    }
    drop(entries);
    let Scan::Listed(listing, charge) = listing.done(charge) else {
        return busy(gw);
    };
    respond(gw, listing, charge, conn)
}

/// 503 + `Retry-After` for a listing the listing memory cannot hold now.
fn busy(gw: &Gateway) -> Response {
    tracing::info!(
        listing_memory = gw.config.listing_memory,
        "a listing did not fit in the listing memory; answered 503"
    );
    let mut busy = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "listings busy, retry later",
    );
    busy.headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    busy
}

/// A listing slot, or the 503 to answer after [`crate::LISTING_WAIT`].
async fn wait_for_slot() -> Result<SemaphorePermit<'static>, Response> {
    match tokio::time::timeout(crate::fs::LISTING_WAIT, crate::fs::listing_slot()).await {
        Ok(Ok(slot)) => Ok(slot),
        Ok(Err(_)) => Err(plain(StatusCode::SERVICE_UNAVAILABLE, "listing")),
        Err(_) => {
            let mut busy = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "listings busy, retry later",
            );
            busy.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            Err(busy)
        }
    }
}

/// `HEAD` of a directory: the headers a `GET` has, without reading the
/// directory (a `HEAD` must stay cheap: reading a huge directory to count
/// it would let cheap requests hold the listing slots). A directory too
/// large to list answers `HEAD` 200 and `GET` 403.
fn head_of_listing() -> Response {
    // Of unknown length, like the GET's: an empty body of known length
    // would get a `Content-Length: 0` it does not have.
    let body = Body::from_stream(futures_util::stream::empty::<io::Result<Bytes>>());
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "listing"))
}

/// The listing's response: its JSON fed a piece at a time, holding
/// `charge` until sent.
fn respond(
    gw: &Gateway,
    listing: Listing,
    charge: Permit,
    conn: Option<ConnectionHandle>,
) -> Response {
    let (tx, rx) = mpsc::channel(1);
    let output = (gw.output_budget.clone(), gw.config.send_timeout);
    tokio::spawn(feed(JsonPieces::new(listing), charge, tx, output, conn));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body_of(rx))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "listing"))
}

/// What a listing shows an entry as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Directory,
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Other => "other",
        }
    }
}

/// One entry of a [`Listing`]; its name is `names[name_at..][..name_len]`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Last modification, Unix seconds (as `stat` answers tell it).
    mtime: f64,
    /// Size in bytes (shown for files only).
    size: u64,
    name_at: u32,
    name_len: u16,
    kind: Kind,
}

/// A directory's entries in compact form: the names back to back in one
/// buffer, a small fixed-size record per entry.
#[derive(Debug, Default)]
struct Listing {
    names: String,
    entries: Vec<Entry>,
}

impl Listing {
    /// Adds an entry; false if the names outgrow the buffer's offsets.
    fn push(&mut self, name: &str, meta: &cap_std::fs::Metadata) -> bool {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Directory
        } else {
            Kind::Other
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.push_entry(name, kind, meta.len(), mtime)
    }

    /// Adds an entry of `kind`, `size` bytes, modified at `mtime` (Unix
    /// seconds); false if the names outgrow the buffer's offsets.
    fn push_entry(&mut self, name: &str, kind: Kind, size: u64, mtime: f64) -> bool {
        let (Ok(name_at), Ok(name_len)) =
            (u32::try_from(self.names.len()), u16::try_from(name.len()))
        else {
            return false;
        };
        if u32::try_from(self.names.len() + name.len()).is_err() {
            return false;
        }
        self.names.push_str(name);
        self.entries.push(Entry {
            mtime,
            size,
            name_at,
            name_len,
            kind,
        });
        true
    }

    /// Grows `charge` (from `budget`) to the buffers' footprint; the
    /// refusal if it cannot: too large if it would not fit even alone,
    /// else busy.
    fn charge(&self, charge: &mut Permit, budget: &SharedBudget) -> Option<Scan> {
        let footprint = self.footprint();
        if footprint > charge.amount() && !charge.try_grow(footprint - charge.amount()) {
            return Some(if footprint > budget.limit() {
                Scan::TooLarge
            } else {
                Scan::Busy
            });
        }
        None
    }

    /// Sorted, shrunk, and `charge` cut to what it then holds.
    fn done(mut self, mut charge: Permit) -> Scan {
        self.sort();
        charge.give_back(charge.amount().saturating_sub(self.footprint()));
        Scan::Listed(self, charge)
    }

    /// Bytes its buffers hold (their capacity).
    fn footprint(&self) -> usize {
        self.names.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    fn name(&self, entry: &Entry) -> &str {
        name_in(&self.names, entry)
    }

    /// Sorts bytewise by name; equal names (two names that were not UTF-8
    /// may read the same) keep the directory's order.
    fn sort(&mut self) {
        let names = &self.names;
        self.entries.sort_unstable_by(|a, b| {
            name_in(names, a)
                .as_bytes()
                .cmp(name_in(names, b).as_bytes())
                .then(a.name_at.cmp(&b.name_at))
        });
        self.names.shrink_to_fit();
        self.entries.shrink_to_fit();
    }
}

fn name_in<'a>(names: &'a str, entry: &Entry) -> &'a str {
    let start = entry.name_at as usize;
    names
        .get(start..start + usize::from(entry.name_len))
        .unwrap_or_default()
}

/// One entry in JSON. Fields in the order serde_json writes a `Value`
/// object's keys (sorted), so the output is what the listing always was.
#[derive(serde::Serialize)]
struct Item<'a> {
    mtime: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A listing's JSON array, encoded a piece at a time.
#[derive(Debug)]
struct JsonPieces {
    listing: Listing,
    /// The next entry to encode.
    next: usize,
    started: bool,
    done: bool,
    /// Reused for each entry's date.
    date: String,
}

impl JsonPieces {
    fn new(listing: Listing) -> JsonPieces {
        JsonPieces {
            listing,
            next: 0,
            started: false,
            done: false,
            date: String::new(),
        }
    }

    /// The next piece of about [`LISTING_PIECE`] bytes (the last one may
    /// be shorter), or `None` after the last.
    fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>, serde_json::Error> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(max + 1024);
        if !self.started {
            out.push(b'[');
            self.started = true;
        }
        while out.len() < max {
            let Some(entry) = self.listing.entries.get(self.next) else {
                out.push(b']');
                self.done = true;
                break;
            };
            if self.next > 0 {
                out.push(b',');
            }
            self.date.clear();
            let modified = Duration::try_from_secs_f64(entry.mtime.max(0.0))
                .unwrap_or_default()
                .min(LATEST_HTTP_DATE);
            let _ = write!(
                self.date,
                "{}",
                httpdate::HttpDate::from(UNIX_EPOCH + modified)
            );
            let item = Item {
                mtime: &self.date,
                name: self.listing.name(entry),
                size: (entry.kind == Kind::File).then_some(entry.size),
                kind: entry.kind.as_str(),
            };
            serde_json::to_writer(&mut out, &item)?;
            self.next += 1;
        }
        Ok(Some(Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        for name in names {
            std::fs::write(tmp.path().join(name), name.as_bytes()).unwrap();
        }
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        (tmp, dir)
    }

    fn json(listing: Listing) -> Vec<u8> {
        let mut pieces = JsonPieces::new(listing);
        let mut out = Vec::new();
        while let Some(piece) = pieces.next_piece(LISTING_PIECE).unwrap() {
            out.extend_from_slice(&piece);
        }
        out
    }

    fn roomy() -> SharedBudget {
        SharedBudget::new(1 << 20)
    }

    #[test]
    fn a_listing_is_charged_its_buffers_until_dropped() {
        let names: Vec<String> = (0..100).map(|i| format!("name-{i:04}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_tmp, dir) = dir_with(&names);
        let budget = SharedBudget::new(64 * 1024);
        let Scan::Listed(listing, charge) =
            scan(&dir, Path::new("."), 1000, true, &budget).unwrap()
        else {
            panic!("listed")
        };
        assert_eq!(charge.amount(), listing.footprint());
        assert!(listing.footprint() >= 100 * (9 + std::mem::size_of::<Entry>()));
        assert_eq!(budget.in_use(), charge.amount());
        // Another one does not fit beside it, but would alone: busy.
        let held = budget.try_take(budget.available()).unwrap();
        assert!(matches!(
            scan(&dir, Path::new("."), 1000, true, &budget).unwrap(),
            Scan::Busy
        ));
        drop((held, listing, charge));
        assert_eq!(budget.in_use(), 0);
        // One that could never fit is too large, whatever else holds.
        let tiny = SharedBudget::new(256);
        assert!(matches!(
            scan(&dir, Path::new("."), 1000, true, &tiny).unwrap(),
            Scan::TooLarge
        ));
        assert_eq!(tiny.in_use(), 0);
    }

    #[test]
    fn more_than_max_is_too_large_and_hidden_names_do_not_count() {
        let (_tmp, dir) = dir_with(&["a", "b", "c", ".framegate-upload-x"]);
        std::fs::create_dir(_tmp.path().join(".framegate")).unwrap();
        assert!(matches!(
            scan(&dir, Path::new("."), 2, true, &roomy()).unwrap(),
            Scan::TooLarge
        ));
        assert!(matches!(
            scan(&dir, Path::new("."), 2, false, &roomy()).unwrap(),
            Scan::TooLarge
        ));
        let Scan::Listed(listing, _) = scan(&dir, Path::new("."), 3, true, &roomy()).unwrap()
        else {
            panic!("three entries fit")
        };
        let names: Vec<&str> = listing.entries.iter().map(|e| listing.name(e)).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn counting_keeps_nothing() {
        let (_tmp, dir) = dir_with(&["a", "b"]);
        let Scan::Listed(listing, _) = scan(&dir, Path::new("."), 10, false, &roomy()).unwrap()
        else {
            panic!("listed")
        };
        assert!(listing.entries.is_empty() && listing.names.is_empty());
    }

    #[test]
    fn empty_directory_is_an_empty_array() {
        let (_tmp, dir) = dir_with(&[]);
        let Scan::Listed(listing, _) = scan(&dir, Path::new("."), 10, true, &roomy()).unwrap()
        else {
            panic!("listed")
        };
        assert_eq!(json(listing), b"[]");
    }

    #[test]
    fn pieces_are_bounded_and_join_to_one_array() {
        let names: Vec<String> = (0..3000).map(|i| format!("{i:0>40}\"\\é")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_tmp, dir) = dir_with(&refs);
        let Scan::Listed(listing, _) = scan(
            &dir,
            Path::new("."),
            10_000,
            true,
            &SharedBudget::new(64 << 20),
        )
        .unwrap() else {
            panic!("listed")
        };
        let mut pieces = JsonPieces::new(listing);
        let mut out = Vec::new();
        let mut count = 0;
        while let Some(piece) = pieces.next_piece(LISTING_PIECE).unwrap() {
            assert!(piece.len() < LISTING_PIECE + 1024, "{}", piece.len());
            out.extend_from_slice(&piece);
            count += 1;
        }
        assert!(count > 2, "{count} pieces");
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        let got: Vec<&str> = parsed.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(got, sorted);
    }

    #[test]
    fn far_future_mtime_is_clamped_not_a_panic() {
        let listing = Listing {
            names: "x".into(),
            entries: vec![Entry {
                mtime: 1e15,
                size: 1,
                name_at: 0,
                name_len: 1,
                kind: Kind::File,
            }],
        };
        let out = String::from_utf8(json(listing)).unwrap();
        assert!(out.contains("Fri, 31 Dec 9999 23:59:59 GMT"), "{out}");
    }
}
