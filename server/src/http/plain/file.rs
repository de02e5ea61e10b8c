//! Plain `GET`/`HEAD` of a file, answered from the file the request opened:
//! the `ETag` ([`Etag`], the one `stat` answers), `Last-Modified`,
//! `Content-Length` and every byte come from that open descriptor, never
//! from the path opened again, so a file replaced meanwhile cannot get its
//! old validators with its new bytes (a client resuming with `Range` and
//! `If-Range` gets the rest of the version it has, or the whole new one).
//!
//! Preconditions are evaluated in the order of RFC 9110 §13.2.2:
//! `If-Match` (strong; `*` matches) or else `If-Unmodified-Since` → 412;
//! `If-None-Match` (weak) or else `If-Modified-Since` → 304; then `Range`,
//! unless an `If-Range` (an entity tag compared strongly, or a date equal
//! to `Last-Modified`) does not hold: then the whole file, 200. One range
//! is a 206, several a `multipart/byteranges` 206, none satisfiable a 416.
//! `HEAD` answers the same headers without a body.
//!
//! Bodies are read in pieces of at most [`ANSWER_PIECE`] as hyper takes
//! them, on the file pool: memory stays flat whatever the file's size. The
//! answer slot and the send timeout of plain GETs wrap this body in
//! `http/mod.rs` and `http/connection.rs`.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::response::Builder;
use http::{HeaderMap, HeaderName, Method, StatusCode, header};

use super::{http_time, plain};
use crate::answer::Answer;
use crate::driver::{ANSWER_PIECE, read_piece};
use crate::http::header_str;
use crate::outflow::{Charge, Outflow, OutputBudget};
use crate::storage::{Etag, ReadRanges, Storage};

/// Most ranges one plain `GET` may ask for; a `Range` header with more is
/// ignored and the whole file sent.
pub(crate) const MAX_PLAIN_RANGES: usize = 256;

/// The boundary of `multipart/byteranges` answers.
const MULTIPART_BOUNDARY: &str = "framegate-byteranges-3d6b9f2a";

/// A piece of a response body.
enum Part {
    /// Bytes in memory (multipart headers and the closing boundary).
    Text(Bytes),
    /// `(offset, length)` of the file, read in pieces when sent.
    File(u64, u64),
}

/// Where a plain answer's bytes come from.
pub(super) enum Source {
    /// A local file opened for this request.
    File(std::fs::File),
    /// An object of the gateway's storage, of the version `etag` (a later
    /// version ends the body with an error).
    Stored {
        storage: Arc<dyn Storage>,
        rel: PathBuf,
        etag: Etag,
    },
}

/// What a plain answer's validators are made of.
pub(super) struct Version {
    pub(super) size: u64,
    pub(super) etag: Etag,
    pub(super) modified: SystemTime,
}

impl Version {
    /// A local file's, from its `fstat`.
    pub(super) fn of(meta: &cap_std::fs::Metadata) -> Version {
        Version {
            size: meta.len(),
            etag: Etag::of(meta),
            modified: meta
                .modified()
                .map_or(SystemTime::UNIX_EPOCH, cap_std::time::SystemTime::into_std),
        }
    }
}

/// The answer to a `GET`/`HEAD` of the regular file `source` (at `rel`,
/// which only gives the content type) of the version `version`.
pub(super) fn answer(
    source: Source,
    version: &Version,
    rel: &Path,
    request: &Request,
    budget: &OutputBudget,
) -> Response {
    let size = version.size;
    let etag = version.etag.quoted();
    let modified = http_time(version.modified);
    let headers = request.headers();
    let validated = || {
        Response::builder()
            .header(header::ETAG, &etag)
            .header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified))
    };
    match precondition(headers, &etag, modified) {
        Some(StatusCode::NOT_MODIFIED) => {
            return empty(validated().status(StatusCode::NOT_MODIFIED));
        }
        Some(status) => return empty(Response::builder().status(status)),
        None => {}
    }
    let content_type = mime_guess::from_path(rel)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let builder = validated().header(header::ACCEPT_RANGES, "bytes");
    let head = request.method() == Method::HEAD;
    // More ranges than [`MAX_PLAIN_RANGES`] are not honoured (the whole
    // file is sent, as Apache does past `MaxRanges`): checking them costs
    // time quadratic in their number.
    let range = header_str(headers, header::RANGE)
        .filter(|r| r.bytes().filter(|b| *b == b',').count() < MAX_PLAIN_RANGES)
        .filter(|_| if_range_holds(headers, &etag, modified));
    let Some(range) = range else {
        let builder = builder
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, size);
        return respond(builder, head, source, vec![Part::File(0, size)], budget);
    };
    let ranges = match http_range_header::parse_range_header(range).and_then(|r| r.validate(size)) {
        Ok(ranges)
            if !ranges.is_empty()
                && ranges
                    .iter()
                    .all(|r| r.start() <= r.end() && *r.end() < size) =>
        {
            ranges
        }
        // Malformed or unsatisfiable (any range of an empty file is).
        _ => {
            return empty(
                builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}")),
            );
        }
    };
    let builder = builder.status(StatusCode::PARTIAL_CONTENT);
    if let [range] = ranges.as_slice() {
        let (start, end) = (*range.start(), *range.end());
        let builder = builder
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
            .header(header::CONTENT_LENGTH, end - start + 1);
        return respond(
            builder,
            head,
            source,
            vec![Part::File(start, end - start + 1)],
            budget,
        );
    }
    // Several ranges: each part's bytes are read in pieces as the body is
    // sent, so a request for huge ranges holds one piece, not a part.
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut total = 0u64;
    for r in &ranges {
        let (start, end) = (*r.start(), *r.end());
        let part_head = format!(
            "\r\n--{MULTIPART_BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
        );
        total += part_head.len() as u64 + (end - start + 1);
        parts.push(Part::Text(Bytes::from(part_head)));
        parts.push(Part::File(start, end - start + 1));
    }
    let tail = format!("\r\n--{MULTIPART_BOUNDARY}--\r\n");
    total += tail.len() as u64;
    parts.push(Part::Text(Bytes::from(tail)));
    let builder = builder
        .header(
            header::CONTENT_TYPE,
            format!("multipart/byteranges; boundary={MULTIPART_BOUNDARY}"),
        )
        .header(header::CONTENT_LENGTH, total);
    respond(builder, head, source, parts, budget)
}

/// The status the preconditions of RFC 9110 §13.2.2 answer with instead
/// of the file (412 or 304), or `None` to go on.
fn precondition(headers: &HeaderMap, etag: &str, modified: SystemTime) -> Option<StatusCode> {
    // The file exists, so `*` matches.
    if let Some(tags) = tags(headers, header::IF_MATCH) {
        if !tags.iter().any(|t| *t == "*" || *t == etag) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if date(headers, header::IF_UNMODIFIED_SINCE).is_some_and(|since| modified > since) {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if let Some(tags) = tags(headers, header::IF_NONE_MATCH) {
        let weak_match = |t: &str| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag;
        if tags.iter().any(|t| weak_match(t)) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    } else if date(headers, header::IF_MODIFIED_SINCE).is_some_and(|since| modified <= since) {
        return Some(StatusCode::NOT_MODIFIED);
    }
    None
}

/// Whether a `Range` may be honoured: there is no `If-Range`, or it names
/// this version (an entity tag, compared strongly; or exactly the
/// `Last-Modified` date).
fn if_range_holds(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str().map(str::trim) else {
        return false;
    };
    if value.starts_with('"') || value.starts_with("W/") {
        value == etag
    } else {
        httpdate::parse_http_date(value).is_ok_and(|date| date == modified)
    }
}

/// The entity tags of a list header (`None` if it is absent; a value that
/// is not text lists none, so it matches nothing).
fn tags(headers: &HeaderMap, name: HeaderName) -> Option<Vec<&str>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(
        values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// A date header; an invalid date is ignored, as RFC 9110 says.
fn date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    header_str(headers, name).and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

fn empty(builder: Builder) -> Response {
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// The response with `parts` of `source` as its body (none for `HEAD`).
fn respond(
    builder: Builder,
    head: bool,
    source: Source,
    parts: Vec<Part>,
    budget: &OutputBudget,
) -> Response {
    let body = match source {
        _ if head => Body::empty(),
        Source::File(file) => body_of(file, parts, budget.clone()),
        Source::Stored { storage, rel, etag } => stored_body(storage, rel, etag, parts),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// A body that reads `parts` of `file` one piece at a time, only when
/// hyper asks for the next, each piece charged to the server's output
/// budget until hyper asks for the one after it (past the budget, a small
/// free piece at a time: `crate::outflow`). A file that shrank meanwhile
/// ends the body with an error, never as if complete.
fn body_of(file: std::fs::File, parts: Vec<Part>, budget: OutputBudget) -> Body {
    // A file rewritten in place while it is sent (see
    // `Fingerprint::rewritten_since`) ends the body with an error too: the client sees a cut body,
    // and its `If-Range` then gets the whole new file, never a splice.
    let opened = crate::driver::Fingerprint::of(&file);
    let flow = Arc::new(Outflow::default());
    let state = (Arc::new(file), VecDeque::from(parts), None::<Charge>);
    let stream = futures_util::stream::try_unfold(state, move |(file, mut parts, held)| {
        let (budget, flow) = (budget.clone(), flow.clone());
        async move {
            // Hyper asked for the next piece: the last one is out of our hands.
            drop(held);
            let Some(part) = parts.pop_front() else {
                return Ok(None);
            };
            let mut charge = None;
            let bytes = match part {
                Part::Text(text) => text,
                Part::File(_, 0) => Bytes::new(),
                Part::File(offset, len) => {
                    let wanted =
                        usize::try_from(len.min(ANSWER_PIECE as u64)).unwrap_or(ANSWER_PIECE);
                    let granted = flow.charge(&budget, wanted).await;
                    let piece = (granted.limit().min(wanted)) as u64;
                    charge = Some(granted);
                    if piece < len {
                        parts.push_front(Part::File(offset + piece, len - piece));
                    }
                    let from = file.clone();
                    let len = usize::try_from(piece).unwrap_or(ANSWER_PIECE);
                    crate::pool::blocking(move || Ok(read_piece(&from, offset, len)))
                        .await
                        .map_err(io::Error::other)??
                }
            };
            // Checked before the last bytes go: once they went, the body is
            // complete for the client whatever follows.
            if parts.is_empty() {
                let from = file.clone();
                let now = crate::pool::blocking(move || Ok(crate::driver::Fingerprint::of(&from)))
                    .await
                    .map_err(io::Error::other)?;
                if let (Some(now), Some(before)) = (now, opened)
                    && now.rewritten_since(&before)
                {
                    return Err(io::Error::other("the file was rewritten while it was sent"));
                }
            }
            Ok::<_, io::Error>(Some((bytes, (file, parts, charge))))
        }
    });
    Body::from_stream(stream)
}

/// A body that reads `parts` of a stored object, each range when hyper
/// gets to it, all of the version `etag`: a version replaced meanwhile
/// ends the body with an error (the store answers `file-changed`), never a
/// splice of two.
fn stored_body(storage: Arc<dyn Storage>, rel: PathBuf, etag: Etag, parts: Vec<Part>) -> Body {
    use futures_util::{StreamExt, TryStreamExt};
    let pieces = futures_util::stream::iter(parts)
        .then(move |part| {
            let (storage, rel, etag) = (storage.clone(), rel.clone(), etag.clone());
            async move {
                let answer = match part {
                    Part::Text(text) => {
                        return Ok(futures_util::stream::once(async { Ok(text) }).boxed());
                    }
                    Part::File(_, 0) => return Ok(futures_util::stream::empty().boxed()),
                    Part::File(offset, len) => {
                        storage
                            .read(
                                &rel,
                                ReadRanges::Ranges(vec![(offset, len)]),
                                Some(etag.as_str()),
                            )
                            .await
                            .map_err(|e| io::Error::other(e.message))?
                            .answer
                    }
                };
                Ok::<_, io::Error>(match answer {
                    Answer::Bytes(bytes) => futures_util::stream::once(async { Ok(bytes) }).boxed(),
                    Answer::Stream(stream) => {
                        stream.map_err(|e| io::Error::other(e.message)).boxed()
                    }
                    _ => futures_util::stream::once(async {
                        Err(io::Error::other("a stored answer of an unexpected kind"))
                    })
                    .boxed(),
                })
            }
        })
        .try_flatten();
    Body::from_stream(pieces)
}
