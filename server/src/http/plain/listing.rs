//! Plain-HTTP directory listings in nginx's `autoindex_format json` shape,
//! with bounded memory and time.
//!
//! * The directory is read on the file pool, never on the executor's
//!   threads, into a compact [`Listing`]: one buffer of names and 24 bytes
//!   per entry (kind, size, mtime) — not one JSON value per entry. More
//!   than [`MAX_LIST_ENTRIES`] entries is refused (403) as soon as the next
//!   name is read.
//! * The JSON is encoded in pieces of about [`entries::LISTING_PIECE`] bytes only as
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

mod entries;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use framegate_wire::budget::Permit;

use crate::outflow::{Charge, Outflow, OutputBudget};
use http::{Method, StatusCode, header};
use tokio::sync::{SemaphorePermit, mpsc};

use self::entries::{JsonPieces, Kind, LISTING_PIECE, Listing, Scan, scan};
use super::plain;
use crate::fs::MAX_LIST_ENTRIES;
use crate::gateway::Gateway;
use crate::http::connection::ConnectionHandle;

/// Answers `GET`/`HEAD` of the directory `rel` (already known to be one,
/// its URL ending in `/`).
pub(super) async fn answer(gw: &Arc<Gateway>, rel: PathBuf, request: Request) -> Response {
    let (conn, slot) = match begin(request).await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let Some(root) = gw.root.clone() else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let budget = gw.listing_budget.clone();
    // The slot goes with the scan, not with this future: a client that
    // leaves mid-scan does not free it while the file pool still reads.
    let scanned = crate::pool::blocking_heavy(move || {
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

/// Answers `GET`/`HEAD` of the directory `rel` of a gateway over another
/// storage (an object store): its entries from the storage's `list`, then
/// as [`answer`] does, with the same slot, memory charge and timeouts.
pub(super) async fn answer_stored(gw: &Arc<Gateway>, rel: PathBuf, request: Request) -> Response {
    let (conn, slot) = match begin(request).await {
        Ok(begun) => begun,
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

/// What every listing does first: a `HEAD` is answered at once (see
/// [`head_of_listing`]); a `GET` waits for a listing slot (see
/// [`wait_for_slot`]) and keeps its connection's handle.
async fn begin(
    request: Request,
) -> Result<(Option<ConnectionHandle>, SemaphorePermit<'static>), Response> {
    if request.method() == Method::HEAD {
        return Err(head_of_listing());
    }
    let conn = request.extensions().get::<ConnectionHandle>().cloned();
    drop(request);
    Ok((conn, wait_for_slot().await?))
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
