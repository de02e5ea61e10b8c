//! The HTTP binding.
//!
//! * `POST {base}/.framegate/ro` and `.../rw` at any depth (§7.1–7.3):
//!   [`endpoint`] — refusals decided from the headers alone, then the body
//!   fed to a [`Driver`](crate::driver) in deferred mode and the answers
//!   streamed back once the whole body was read.
//! * `GET`/`HEAD` of files and listings: [`plain`].
//! * `GET /.framegate/healthz`: 200 while the served tree is there and
//!   readable, else 503.

mod body;
pub(crate) mod connection;
mod endpoint;
mod plain;

pub use body::BODY_CHANNEL_CHUNKS;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;

use crate::gateway::Gateway;
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX};

/// The axum router of a gateway: framegate endpoints, plain file access
/// and health, all under one fallback handler.
pub fn router(gateway: &Arc<Gateway>) -> Router {
    Router::new().fallback(dispatch).with_state(gateway.clone())
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decodes a URL path and cleans it into a relative path inside the tree.
/// `None` if it is not valid UTF-8, leaves the tree, or names a reserved
/// entry (the private area, staging files).
fn tree_path(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(url_path).decode_utf8().ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p if p.contains('\0') || p.contains('\\') => return None,
            p if p == RESERVED_COMPONENT || p.starts_with(TEMP_PREFIX) => return None,
            p => parts.push(p),
        }
    }
    Some(if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.iter().collect()
    })
}

/// One access-log event per HTTP request (target `framegate::access`, at
/// info): method, path, status, response bytes and duration, logged when
/// the response body is done with (sent, or cut). A framegate message also
/// logs `message done` with its commands.
async fn dispatch(state: State<Arc<Gateway>>, request: Request) -> Response {
    use http_body_util::BodyExt;
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = route(state, request).await;
    let mut entry = AccessLog {
        method,
        path,
        status: response.status().as_u16(),
        started,
        bytes: 0,
    };
    let (parts, body) = response.into_parts();
    let body = body.map_frame(move |frame| {
        // A method call: the closure owns the whole entry (and logs it
        // when the body is dropped), not a copy of one field.
        if let Some(data) = frame.data_ref() {
            entry.sent(data.len());
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// An access-log entry, written when dropped (with the response body).
struct AccessLog {
    method: Method,
    path: String,
    status: u16,
    started: std::time::Instant,
    bytes: u64,
}

impl AccessLog {
    fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "framegate::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// `response`, holding `slot` until its body was sent (or dropped).
fn held(slot: tokio::sync::OwnedSemaphorePermit, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::map_frame(body, move |frame| {
        let _held = &slot;
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

async fn route(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    if path == "/.framegate/healthz" {
        return match gw.storage.health().await {
            Ok(()) => plain(StatusCode::OK, "ok"),
            Err(err) => {
                tracing::warn!(reason = %err.message, "health check failed");
                plain(StatusCode::SERVICE_UNAVAILABLE, &err.message)
            }
        };
    }
    if endpoint::endpoint_of(&path).is_some() {
        return endpoint::message(gw, request).await;
    }
    if path
        .split('/')
        .any(|p| p == RESERVED_COMPONENT || p.starts_with(TEMP_PREFIX))
    {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    match *request.method() {
        // A listing (a path ending in `/`) holds no file while it is sent
        // and is bounded by the listing slots and memory: it takes no
        // answer slot, so listings waiting for a listing slot never hold
        // the slots file GETs and messages need (a file asked for as
        // `name/` takes one in `plain_file`).
        Method::GET | Method::HEAD if path.ends_with('/') => {
            plain::plain_file(gw, &path, request).await
        }
        Method::GET | Method::HEAD => {
            // A plain GET holds its file open while the body is sent: one of
            // the server's answer slots, like a message's open answer.
            let Ok(slot) = gw.answer_slots.clone().acquire_owned().await else {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping");
            };
            held(slot, plain::plain_file(gw, &path, request).await)
        }
        _ => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}
