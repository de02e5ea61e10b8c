//! Plain file access (§7.6 from the server's side): `GET`/`HEAD` of files
//! ([`file`]: served from the file the request opened, with the validators
//! of that same open file — `ETag`, `Last-Modified`, conditional requests,
//! single ranges and `multipart/byteranges`), and JSON directory listings
//! in nginx's `autoindex_format json` shape ([`listing`]). Every path is
//! checked through the cap-std sandbox first, so a symlink leading outside
//! the tree is a 404.

mod file;
mod listing;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use cap_std::fs::Dir;
use http::{StatusCode, header};
use percent_encoding::percent_decode_str;

use super::{plain, tree_path};
use crate::gateway::Gateway;
use crate::storage::EntryKind;

/// The latest time an HTTP date can show (9999-12-31T23:59:59Z); later
/// modification times are shown as this (`httpdate` would panic).
const LATEST_HTTP_DATE: Duration = Duration::from_secs(253_402_300_799);

/// `time` as an HTTP date shows it: whole seconds, between the epoch and
/// [`LATEST_HTTP_DATE`] (`httpdate` panics outside).
fn http_time(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(since.as_secs()).min(LATEST_HTTP_DATE)
}

/// What a plain request's path named, opened.
enum Opened {
    /// A regular file, with the metadata of the open descriptor.
    File(std::fs::File, cap_std::fs::Metadata),
    Dir,
}

/// Opens `rel` once: a file is then served from this descriptor alone.
fn open(root: &Dir, rel: &Path) -> io::Result<Opened> {
    let (file, meta) = crate::storage::open_to_read(root, rel)?;
    if meta.is_dir() {
        Ok(Opened::Dir)
    } else if meta.is_file() {
        Ok(Opened::File(file, meta))
    } else {
        // FIFOs, sockets, devices: not served.
        Err(io::ErrorKind::NotFound.into())
    }
}

/// Whether the URL path has a `..` segment, percent-encoded or not.
fn has_dot_dot(url_path: &str) -> bool {
    percent_decode_str(url_path)
        .decode_utf8()
        .map_or(true, |path| path.split('/').any(|part| part == ".."))
}

/// 403 for a plain request the command policy refuses.
fn command_refused(command: &str) -> Response {
    let mut response = plain(
        StatusCode::FORBIDDEN,
        &format!("this server does not offer {command} (its operator's policy)"),
    );
    response.headers_mut().insert(
        framegate_wire::http_binding::REFUSAL_HEADER,
        http::HeaderValue::from_static("command-refused"),
    );
    response
}

pub(super) async fn plain_file(gw: Arc<Gateway>, url_path: &str, request: Request) -> Response {
    // A `..` segment is refused, not resolved (as nginx and tower-http's
    // `ServeDir`, which served files here before, do).
    let rel = tree_path(url_path).filter(|_| !has_dot_dot(url_path));
    let Some(rel) = rel else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    // The operator's command policy holds here too: a plain GET of a file
    // is `get` (HEAD: `stat` or `get`), a listing (a path ending in `/`)
    // `list_dir`. Judged before anything is opened, so a refusal says
    // nothing about what exists.
    let head = request.method() == http::Method::HEAD;
    let refused = if url_path.ends_with('/') {
        gw.registry.is_refused("list_dir").then_some("list_dir")
    } else {
        (gw.registry.is_refused("get") && (!head || gw.registry.is_refused("stat")))
            .then_some("get")
    };
    if let Some(command) = refused {
        return command_refused(command);
    }
    let Some(root) = gw.root.clone() else {
        return stored(gw, &rel, url_path, request, head).await;
    };
    let opened = {
        let rel = rel.clone();
        crate::pool::blocking(move || Ok(open(&root, &rel))).await
    };
    match opened {
        // A file asked for as `name/` is still a file: `get`'s policy.
        Ok(Ok(Opened::File(..)))
            if gw.registry.is_refused("get") && (!head || gw.registry.is_refused("stat")) =>
        {
            command_refused("get")
        }
        // Asked for as `name/`, it came without an answer slot (`route`).
        Ok(Ok(Opened::File(file, meta))) if url_path.ends_with('/') => {
            let Ok(slot) = gw.answer_slots.clone().acquire_owned().await else {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping");
            };
            let version = file::Version::of(&meta);
            let response = file::answer(
                file::Source::File(file),
                &version,
                &rel,
                &request,
                &gw.output_budget,
            );
            super::held(slot, response)
        }
        Ok(Ok(Opened::File(file, meta))) => file::answer(
            file::Source::File(file),
            &file::Version::of(&meta),
            &rel,
            &request,
            &gw.output_budget,
        ),
        // A directory: redirected to its slash form before anything is
        // listed (a cheap request must not cost a listing).
        Ok(Ok(Opened::Dir)) if !url_path.ends_with('/') => to_slash_form(url_path),
        // Bounded in memory and time, sharing the server's listing slots
        // and entry bound with `list_dir`.
        Ok(Ok(Opened::Dir)) => listing::answer(&gw, rel, request).await,
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A directory asked for without its slash: redirected to its slash form
/// before anything is listed (a cheap request must not cost a listing).
fn to_slash_form(url_path: &str) -> Response {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, format!("{url_path}/"))
        .body(Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "redirect"))
}

/// The same for a gateway over another storage (an object store): what
/// `rel` is comes from the storage's `stat`, the bytes from its `read` of
/// that version, a listing from its `list`.
async fn stored(
    gw: Arc<Gateway>,
    rel: &Path,
    url_path: &str,
    request: Request,
    head: bool,
) -> Response {
    match gw.storage.stat(rel).await {
        Ok(meta) if meta.kind == EntryKind::File => {
            if gw.registry.is_refused("get") && (!head || gw.registry.is_refused("stat")) {
                return command_refused("get");
            }
            let Some(etag) = meta.etag.clone() else {
                return plain(StatusCode::NOT_FOUND, "not found");
            };
            let version = file::Version {
                size: meta.size,
                etag: etag.clone(),
                modified: UNIX_EPOCH
                    + Duration::try_from_secs_f64(meta.mtime.max(0.0)).unwrap_or_default(),
            };
            let source = file::Source::Stored {
                storage: gw.storage.clone(),
                rel: rel.to_path_buf(),
                etag,
            };
            let response = file::answer(source, &version, rel, &request, &gw.output_budget);
            if !url_path.ends_with('/') {
                return response;
            }
            // Asked for as `name/`, it came without an answer slot (`route`).
            let Ok(slot) = gw.answer_slots.clone().acquire_owned().await else {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping");
            };
            super::held(slot, response)
        }
        Ok(meta) if meta.kind == EntryKind::Dir && !url_path.ends_with('/') => {
            let _ = meta;
            to_slash_form(url_path)
        }
        Ok(meta) if meta.kind == EntryKind::Dir => {
            listing::answer_stored(&gw, rel.to_path_buf(), request).await
        }
        Ok(_) => plain(StatusCode::NOT_FOUND, "not found"),
        Err(err) if err.code == framegate_wire::ErrorCode::BUSY => {
            let mut busy = plain(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later");
            busy.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            busy
        }
        Err(err) if err.code == framegate_wire::ErrorCode::NO_SUCH_FILE => {
            plain(StatusCode::NOT_FOUND, "not found")
        }
        Err(_) => plain(StatusCode::BAD_GATEWAY, "the storage failed"),
    }
}
