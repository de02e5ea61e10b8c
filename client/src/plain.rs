//! Plain HTTP file access (§7.6): what the client does when no framegate
//! server answers. `get` is GET, `readv` is GET with `Range` (several ranges
//! per request, `multipart/byteranges` parsed; a server that ignores `Range`
//! and sends the whole file is sliced), `has`/`stat` are HEAD, `list_dir`
//! reads an nginx autoindex page (JSON or HTML) or the gateway's JSON
//! listing. Writes fail with `not-supported`.

use bytes::Bytes;
use framegate_wire::{ErrorCode, FileKind, StatAnswer};
use futures_util::StreamExt;
use reqwest::{StatusCode, Url, header};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Refusal, Result};
use crate::http::HttpMedium;
use crate::ranges::RangeCollector;

mod listing;

pub use listing::{
    MAX_LISTING_BYTES, MAX_PLAIN_WALK_BYTES, MAX_PLAIN_WALK_DEPTH, MAX_PLAIN_WALK_DIRS,
};
pub(crate) use listing::{is_entry_name, iter_files_recursive, list_dir};

/// Ranges asked for in one GET (keeps the `Range` header within proxies'
/// header limits).
pub const RANGES_PER_REQUEST: usize = 64;

pub(crate) fn url_for(base: &Url, path: &str) -> Result<Url> {
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|_| Error::InvalidUrl(base.to_string()))?;
        segments.pop_if_empty();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(Error::remote(
                    ErrorCode::PATH_OUTSIDE_BASE,
                    "path leaves the base",
                ));
            }
            segments.push(part);
        }
    }
    Ok(url)
}

pub(crate) fn dir_url(base: &Url, path: &str) -> Result<Url> {
    let mut url = url_for(base, path)?;
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

pub(crate) async fn send(
    medium: &HttpMedium,
    req: reqwest::RequestBuilder,
    url: &Url,
) -> Result<reqwest::Response> {
    // Kept without credentials, for a redirect to another origin.
    let bare = req.try_clone();
    let mut resp = medium
        .authorize(req)
        .send()
        .await
        .map_err(|e| Error::from_reqwest(url.as_str(), e))?;
    // A redirect to another origin (a CDN) was not followed by the client:
    // it is followed here, without the credentials.
    for _ in 0..crate::http::MAX_REDIRECTS {
        let to = match (resp.status().is_redirection(), &bare) {
            (true, Some(_)) => resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| resp.url().join(l).ok()),
            _ => None,
        };
        let (Some(to), Some(bare)) = (to, bare.as_ref().and_then(|b| b.try_clone())) else {
            break;
        };
        let mut request = bare
            .build()
            .map_err(|e| Error::from_reqwest(url.as_str(), e))?;
        *request.url_mut() = to;
        resp = medium
            .client()
            .execute(request)
            .await
            .map_err(|e| Error::from_reqwest(url.as_str(), e))?;
    }
    let status = resp.status();
    match status.as_u16() {
        401 | 407 => Err(medium.credentials_error(&resp, url.to_string())),
        404 | 410 => Err(Error::remote(
            ErrorCode::NO_SUCH_FILE,
            format!("no such file: {}", url.path()),
        )),
        403 => Err(Error::remote(
            ErrorCode::PERMISSION_DENIED,
            format!("forbidden: {}", url.path()),
        )),
        416 => Err(Error::remote(
            ErrorCode::SHORT_READ,
            format!("range past the end of {}", url.path()),
        )),
        _ if status.is_success() => Ok(resp),
        _ => Err(Error::Refused(Refusal::Status {
            status: status.as_u16(),
            url: url.to_string(),
            body: crate::http::error_body(resp).await,
        })),
    }
}

/// Whether the server behind `medium` answers a path that cannot exist
/// with 200 (a captive portal, a catch-all site): asked when the probe's
/// POST got a 200 that is not framegate. Its pages must not be read as
/// files.
pub(crate) async fn catch_all(medium: &HttpMedium) -> bool {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let Ok(url) = medium
        .base()
        .join(&format!(".framegate-probe-{nonce:x}-no-such-file"))
    else {
        return false;
    };
    let resp = medium.authorize(medium.client().get(url)).send().await;
    resp.is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// An HTML page answered for a file that is not one (`path` does not end
/// in `.html`/`.htm`) may be a catch-all site's stand-in (a single-page
/// app's `index.html`, a portal): if a path that cannot exist gets a 200
/// too, it is [`Error::CatchAll`], not the file.
async fn check_stand_in(medium: &HttpMedium, path: &str, resp: &reqwest::Response) -> Result<()> {
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let page = [".html", ".htm", ".xhtml"]
        .iter()
        .any(|ext| path.to_ascii_lowercase().ends_with(ext));
    if html && !page && catch_all(medium).await {
        return Err(Error::Refused(Refusal::CatchAll {
            url: medium.base().to_string(),
        }));
    }
    Ok(())
}

fn is_listing(resp: &reqwest::Response) -> bool {
    resp.url().path().ends_with('/')
}

pub(crate) async fn get(medium: &HttpMedium, path: &str) -> Result<Bytes> {
    let url = url_for(medium.base(), path)?;
    let resp = send(medium, medium.client().get(url.clone()), &url).await?;
    if is_listing(&resp) {
        return Err(Error::remote(
            ErrorCode::IS_A_DIRECTORY,
            format!("is a directory: {path}"),
        ));
    }
    check_stand_in(medium, path, &resp).await?;
    resp.bytes()
        .await
        .map_err(|e| Error::lost(url.to_string(), e))
}

pub(crate) async fn get_into(
    medium: &HttpMedium,
    path: &str,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<u64> {
    let url = url_for(medium.base(), path)?;
    let resp = send(medium, medium.client().get(url.clone()), &url).await?;
    if is_listing(&resp) {
        return Err(Error::remote(
            ErrorCode::IS_A_DIRECTORY,
            format!("is a directory: {path}"),
        ));
    }
    check_stand_in(medium, path, &resp).await?;
    let mut stream = resp.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::lost(url.to_string(), e))?;
        out.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    out.flush().await?;
    Ok(written)
}

/// A plain GET from some offset on, its head read.
pub(crate) struct FromOffset {
    /// Where the body starts in the file: the offset asked for (`206`), or
    /// 0 when the whole file came (`200`: the `If-Range` validator no
    /// longer held, or the server ignores ranges).
    pub(crate) from: u64,
    /// The file's size, when the server said.
    pub(crate) total: Option<u64>,
    /// The version's validator: a strong `ETag`, else `Last-Modified`.
    pub(crate) validator: Option<String>,
    /// The response, its body unread.
    pub(crate) resp: reqwest::Response,
}

/// GETs `path` from byte `from` on (`Range: bytes=from-`), with
/// `If-Range: if_range` when given: a server that no longer has that
/// version answers the whole file instead.
pub(crate) async fn open_from(
    medium: &HttpMedium,
    path: &str,
    from: u64,
    if_range: Option<&str>,
) -> Result<FromOffset> {
    let url = url_for(medium.base(), path)?;
    let mut req = medium.client().get(url.clone());
    if from > 0 {
        req = req.header(header::RANGE, format!("bytes={from}-"));
        if let Some(v) = if_range {
            req = req.header(header::IF_RANGE, v);
        }
    }
    let resp = send(medium, req, &url).await?;
    if is_listing(&resp) {
        return Err(Error::remote(
            ErrorCode::IS_A_DIRECTORY,
            format!("is a directory: {path}"),
        ));
    }
    check_stand_in(medium, path, &resp).await?;
    let head = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // A file modified within the second before the answer has no
    // trustworthy version (RFC 9110 §8.8.2.2: such a date is weak, and
    // many servers' entity tags are made of it): nothing to resume on.
    let date = |name| head(name).and_then(|v| httpdate::parse_http_date(&v).ok());
    let fresh = match (date(header::LAST_MODIFIED), date(header::DATE)) {
        (Some(modified), Some(now)) => now
            .duration_since(modified)
            .map_or(true, |age| age < std::time::Duration::from_secs(1)),
        (Some(_), None) => true,
        _ => false,
    };
    let validator = head(header::ETAG)
        .filter(|e| e.starts_with('"'))
        .or_else(|| head(header::LAST_MODIFIED))
        .filter(|_| !fresh);
    let (start, total) = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        let (start, total) = head(header::CONTENT_RANGE)
            .as_deref()
            .and_then(content_range_total)
            .ok_or_else(|| {
                Error::Refused(Refusal::Status {
                    status: 206,
                    url: url.to_string(),
                    body: "206 without a usable Content-Range".into(),
                })
            })?;
        (start, Some(total))
    } else {
        (0, resp.content_length())
    };
    if start != 0 && start != from {
        return Err(Error::Refused(Refusal::Status {
            status: 206,
            url: url.to_string(),
            body: format!("asked bytes from {from}, got from {start}"),
        }));
    }
    Ok(FromOffset {
        from: start,
        total,
        validator,
        resp,
    })
}

/// Parses `Content-Range: bytes a-b/total` into `(a, total)`.
fn content_range_total(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// A byte range as HTTP writes it.
fn range_spec(ranges: &[(u64, u64)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|(o, l)| format!("{}-{}", o, o + l - 1))
        .collect();
    format!("bytes={}", parts.join(","))
}

/// Parses `Content-Range: bytes a-b/total`.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, _total) = spec.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then_some((a, b - a + 1))
}

/// Pieces `(offset, bytes)` of a `multipart/byteranges` body.
pub(crate) fn parse_multipart(body: &[u8], boundary: &str) -> Option<Vec<(u64, Bytes)>> {
    let delimiter = format!("--{boundary}");
    let delim = delimiter.as_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut pieces = Vec::new();
    let mut at = find(body, delim, 0)?;
    loop {
        let after = at + delim.len();
        if body.get(after..after + 2) == Some(b"--") {
            break;
        }
        let headers_end = find(body, b"\r\n\r\n", after)?;
        let headers = std::str::from_utf8(body.get(after..headers_end)?).ok()?;
        let range = headers
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-range"))
            })
            .and_then(|(_, v)| content_range(v))?;
        let data_start = headers_end + 4;
        let data_end = data_start + range.1 as usize;
        let data = body.get(data_start..data_end)?;
        pieces.push((range.0, Bytes::copy_from_slice(data)));
        at = find(body, delim, data_end)?;
    }
    Some(pieces)
}

fn slice_from(pieces: &[(u64, Bytes)], offset: u64, len: u64) -> Option<Bytes> {
    pieces.iter().find_map(|(start, data)| {
        let end = start + data.len() as u64;
        (offset >= *start && offset + len <= end)
            .then(|| data.slice((offset - start) as usize..(offset - start + len) as usize))
    })
}

pub(crate) async fn readv(
    medium: &HttpMedium,
    path: &str,
    ranges: &[(u64, u64)],
) -> Result<Vec<Bytes>> {
    let url = url_for(medium.base(), path)?;
    let mut out = Vec::with_capacity(ranges.len());
    let wanted: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
    let mut pieces: Vec<(u64, Bytes)> = Vec::new();
    for group in wanted.chunks(RANGES_PER_REQUEST) {
        let req = medium
            .client()
            .get(url.clone())
            .header(header::RANGE, range_spec(group));
        let resp = send(medium, req, &url).await?;
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let single = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range);
        if status == StatusCode::OK {
            // The server ignored Range: the whole file comes, and only the
            // ranges asked for are kept as it streams past.
            let mut collector = RangeCollector::new(group);
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Error::lost(url.to_string(), e))?;
                collector.feed(&chunk);
            }
            if let Ok(parts) = collector.finish() {
                pieces.extend(group.iter().map(|r| r.0).zip(parts));
            }
            continue;
        }
        // The ranges asked for, plus room for multipart headers: a server
        // cannot make this hold more.
        let asked: u64 = group.iter().map(|r| r.1).sum();
        let limit = usize::try_from(asked)
            .unwrap_or(usize::MAX)
            .saturating_add(4096 + 512 * group.len());
        let body = crate::http::read_at_most(resp, limit)
            .await
            .map_err(|e| Error::lost(url.to_string(), e))?
            .map_err(|_| {
                Error::Refused(Refusal::Status {
                    status: status.as_u16(),
                    url: url.to_string(),
                    body: "a range answer longer than the ranges asked for".into(),
                })
            })?;
        if let Some(boundary) = ctype.strip_prefix("multipart/byteranges").and_then(|rest| {
            rest.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        }) {
            let boundary = boundary.trim_matches('"');
            let parsed = parse_multipart(&body, boundary).ok_or_else(|| {
                Error::Refused(Refusal::Status {
                    status: status.as_u16(),
                    url: url.to_string(),
                    body: "malformed multipart/byteranges answer".into(),
                })
            })?;
            pieces.extend(parsed);
        } else if let Some((start, _)) = single {
            pieces.push((start, body));
        } else {
            return Err(Error::Refused(Refusal::Status {
                status: status.as_u16(),
                url: url.to_string(),
                body: "206 without Content-Range".into(),
            }));
        }
    }
    for &(offset, len) in ranges {
        if len == 0 {
            out.push(Bytes::new());
            continue;
        }
        let piece = slice_from(&pieces, offset, len).ok_or_else(|| {
            Error::remote(
                ErrorCode::SHORT_READ,
                format!("range {offset},{len} ends past the end of {path}"),
            )
        })?;
        out.push(piece);
    }
    Ok(out)
}

pub(crate) async fn stat(medium: &HttpMedium, path: &str) -> Result<StatAnswer> {
    let url = url_for(medium.base(), path)?;
    let resp = send(medium, medium.client().head(url.clone()), &url).await?;
    let mtime = resp
        .headers()
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    if is_listing(&resp) {
        return Ok(StatAnswer {
            etag: None,
            kind: FileKind::Dir,
            mode: 0o755,
            size: 0,
            mtime,
        });
    }
    let size = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // A strong entity tag names the version, as a framegate stat's etag
    // does (without the quotes).
    let etag = resp
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
        .map(str::to_string);
    Ok(StatAnswer {
        etag,
        kind: FileKind::File,
        mode: 0o644,
        size,
        mtime,
    })
}

pub(crate) async fn has(medium: &HttpMedium, path: &str) -> Result<bool> {
    match stat(medium, path).await {
        Ok(_) => Ok(true),
        Err(e) if e.is(&ErrorCode::NO_SUCH_FILE) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn write_refused(medium: &HttpMedium, command: &str) -> Error {
    Error::remote(
        ErrorCode::NOT_SUPPORTED,
        format!(
            "{command} needs a framegate server; {} serves plain files only",
            medium.base()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_pieces() {
        let body = b"\r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\r\n--XYZ\r\ncontent-range: bytes 8-9/10\r\n\r\n89\r\n--XYZ--\r\n";
        let pieces = parse_multipart(body, "XYZ").unwrap();
        assert_eq!(pieces, vec![(0, Bytes::from("01")), (8, Bytes::from("89"))]);
        assert_eq!(slice_from(&pieces, 9, 1).unwrap(), "9");
        assert!(slice_from(&pieces, 1, 2).is_none());
    }
}
