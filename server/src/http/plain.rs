//! Plain file access (§7.6 from the server's side): `GET`/`HEAD` of files
//! through tower-http's `ServeDir` (ranges, conditional requests,
//! `Last-Modified`) plus an `ETag`, `multipart/byteranges` for multi-range
//! requests, and JSON directory listings in nginx's `autoindex_format json`
//! shape ([`listing`]). Every path is checked through the cap-std sandbox
//! first, so a symlink leading outside the tree is a 404.

mod listing;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::{header_str, plain, tree_path};
use crate::driver::ANSWER_PIECE;
use crate::gateway::Gateway;

pub(super) async fn plain_file(gw: Arc<Gateway>, url_path: &str, request: Request) -> Response {
    let Some(rel) = tree_path(url_path) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let root = gw.root.clone();
    let probe = {
        let rel = rel.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Option<Probe>> {
            let meta = root.metadata(&rel)?;
            if meta.is_dir() {
                return Ok(None);
            }
            let file = root.open(&rel)?.into_std();
            Ok(Some(Probe { file, meta }))
        })
        .await
    };
    let probe = match probe {
        Ok(Ok(Some(probe))) => probe,
        // A directory: redirected to its slash form before anything is
        // listed (a cheap request must not cost a listing).
        Ok(Ok(None)) if !url_path.ends_with('/') => {
            let location = format!("{url_path}/");
            return Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, location)
                .body(Body::empty())
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "redirect"));
        }
        // Bounded in memory and time, sharing the server's listing slots
        // and entry bound with `list_dir`.
        Ok(Ok(None)) => return listing::answer(&gw, rel, request).await,
        _ => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let Probe { file, meta } = probe;
    let etag = etag_of(&meta);
    if header_str(request.headers(), header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, &etag)
            .body(Body::empty())
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "304"));
    }
    let range = header_str(request.headers(), header::RANGE).map(str::to_string);
    if let Some(range) = range.filter(|r| r.contains(','))
        && let Some(response) = multi_range(
            file,
            meta.len(),
            &range,
            &etag,
            request.method() == Method::HEAD,
        )
    {
        return response;
    }
    let mut response = match ServeDir::new(&gw.config.root)
        .append_index_html_on_directories(false)
        .oneshot(request)
        .await
    {
        Ok(r) => r.into_response(),
        Err(never) => match never {},
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A file opened to be served, with its metadata.
struct Probe {
    file: std::fs::File,
    meta: cap_std::fs::Metadata,
}

fn etag_of(meta: &cap_std::fs::Metadata) -> String {
    use cap_std::fs::MetadataExt;
    format!(
        "\"{:x}-{:x}-{:x}\"",
        meta.ino(),
        meta.len(),
        meta.mtime() as u64 * 1_000_000_000 + meta.mtime_nsec() as u64
    )
}

/// A piece of a `multipart/byteranges` body.
enum Segment {
    /// Part headers and the closing boundary.
    Text(Bytes),
    /// `(offset, length)` of the file, at most [`ANSWER_PIECE`] long.
    File(u64, u64),
}

/// Longest a multipart boundary line adds per part, for Content-Length.
const MULTIPART_BOUNDARY: &str = "framegate-byteranges-3d6b9f2a";

/// A `multipart/byteranges` answer for a multi-range request, or `None`
/// to let `ServeDir` answer (it ignores or refuses what it cannot do).
fn multi_range(
    file: std::fs::File,
    size: u64,
    range: &str,
    etag: &str,
    head: bool,
) -> Option<Response> {
    let parsed = http_range_header::parse_range_header(range).ok()?;
    let ranges = match parsed.validate(size) {
        Ok(ranges) => ranges,
        Err(_) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .ok();
        }
    };
    if ranges.len() < 2 {
        return None;
    }
    let mut parts: Vec<(Bytes, u64, u64)> = Vec::with_capacity(ranges.len());
    let mut total = 0u64;
    for r in &ranges {
        let (start, end) = (*r.start(), *r.end());
        let head = format!(
            "\r\n--{MULTIPART_BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
        );
        total += head.len() as u64 + (end - start + 1);
        parts.push((Bytes::from(head), start, end - start + 1));
    }
    let tail = Bytes::from(format!("\r\n--{MULTIPART_BOUNDARY}--\r\n"));
    total += tail.len() as u64;
    let file = Arc::new(file);
    let body = if head {
        Body::empty()
    } else {
        // Each part's bytes are read in pieces as the body is sent, so a
        // request for huge ranges holds one piece, not a part.
        let mut segments = Vec::new();
        for (head, offset, len) in parts {
            segments.push(Segment::Text(head));
            let mut at = 0;
            while at < len {
                let piece = (len - at).min(ANSWER_PIECE as u64);
                segments.push(Segment::File(offset + at, piece));
                at += piece;
            }
        }
        segments.push(Segment::Text(tail));
        let stream =
            futures_util::StreamExt::then(futures_util::stream::iter(segments), move |seg| {
                let file = file.clone();
                async move {
                    match seg {
                        Segment::Text(text) => Ok::<_, std::io::Error>(text),
                        Segment::File(offset, len) => tokio::task::spawn_blocking(move || {
                            crate::driver::read_piece(&file, offset, len as usize)
                        })
                        .await
                        .map_err(std::io::Error::other)?,
                    }
                }
            });
        Body::from_stream(stream)
    };
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/byteranges; boundary={MULTIPART_BOUNDARY}"),
        )
        .header(header::CONTENT_LENGTH, total)
        .header(header::ETAG, etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .body(body)
        .ok()
}
