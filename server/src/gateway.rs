//! The HTTP surface: framegate endpoints, plain file access, health.
//!
//! * `POST {base}/.framegate/ro` and `.../rw` at any depth (§7.1–7.3). Every
//!   HTTP-level refusal (405, 415, 406, 403, 401, 413, 404) is decided from
//!   the headers alone, before a byte of the body is read.
//! * `GET`/`HEAD` of files (tower-http's `ServeDir`: ranges, conditional
//!   requests, `Last-Modified`) plus an `ETag`, `multipart/byteranges` for
//!   multi-range requests, and JSON directory listings in nginx's
//!   `autoindex_format json` shape. Every path is checked through the
//!   cap-std sandbox first, so a symlink leading outside the tree is a 404.
//! * `GET /.framegate/healthz`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cap_std::fs::Dir;
use framegate_wire::{Encoding, MEDIA_TYPE, ServerConfig};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::command::{HelloInfo, Registry};
use crate::message::{Abandoned, BODY_CHANNEL_CHUNKS, Message, MessageSpec, body_from};
use crate::metrics::Metrics;
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX};

/// Settings of a gateway. Defaults are the protocol's limits and safe
/// choices: read-only, 15 s keepalive, 60 s body-read timeout.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The served directory.
    pub root: PathBuf,
    /// Whether `rw` accepts messages at all (default false: 403).
    pub allow_writes: bool,
    /// Bearer token required on `rw` (none: `rw` needs no token when writes
    /// are allowed, e.g. a proxy authenticates).
    pub write_token: Option<String>,
    /// The reactor's limits (§6).
    pub limits: ServerConfig,
    /// Keepalive frame after this long without output (§7.5; default 15 s).
    pub keepalive_interval: Duration,
    /// Longest wait for the next body bytes (default 60 s).
    pub body_read_timeout: Duration,
    /// How long in-flight messages may finish after a stop signal (default 30 s).
    pub shutdown_grace: Duration,
    /// Bytes of body still drained after a protocol error before answering
    /// anyway (default 64 MiB).
    pub max_drain_after_error: u64,
    /// Byte-stream connections silent this long, with nothing running, are
    /// closed (default 300 s).
    pub idle_timeout: Duration,
}

impl GatewayConfig {
    /// Defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        GatewayConfig {
            root: root.into(),
            allow_writes: false,
            write_token: None,
            limits: ServerConfig::default(),
            keepalive_interval: Duration::from_secs(15),
            body_read_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            max_drain_after_error: 64 << 20,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A running gateway's shared state.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) root: Arc<Dir>,
    pub(crate) registry: Registry,
    pub(crate) hello: Arc<HelloInfo>,
    /// Metrics (rendered on the metrics listener).
    pub metrics: Metrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .finish()
    }
}

impl Gateway {
    /// Opens the served directory. `registry` holds the commands (e.g.
    /// [`Registry::files`]).
    pub fn new(config: GatewayConfig, registry: Registry) -> std::io::Result<Arc<Gateway>> {
        let root = Dir::open_ambient_dir(&config.root, cap_std::ambient_authority())?;
        let hello = HelloInfo {
            commands: registry.names(),
            max_frame_size: config.limits.max_frame_size as u64,
        };
        Ok(Arc::new(Gateway {
            config,
            root: Arc::new(root),
            registry,
            hello: Arc::new(hello),
            metrics: Metrics::new(),
        }))
    }

    /// The axum router of this gateway.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

enum Endpoint {
    Ro,
    Rw,
}

/// Splits `/a/b/.framegate/ro` into (`/a/b`, ro).
fn endpoint_of(path: &str) -> Option<(&str, Endpoint)> {
    if let Some(base) = path.strip_suffix("/.framegate/ro") {
        return Some((base, Endpoint::Ro));
    }
    path.strip_suffix("/.framegate/rw")
        .map(|base| (base, Endpoint::Rw))
}

/// Decodes a URL path and cleans it into a relative path inside the tree.
/// `None` if it is not valid UTF-8 or leaves the tree.
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
            p => parts.push(p),
        }
    }
    Some(if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.iter().collect()
    })
}

async fn dispatch(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    if path == "/.framegate/healthz" {
        return plain(StatusCode::OK, "ok");
    }
    if let Some((base, endpoint)) = endpoint_of(&path) {
        return framegate_endpoint(gw, base.to_string(), endpoint, request).await;
    }
    if path
        .split('/')
        .any(|p| p == RESERVED_COMPONENT || p.starts_with(TEMP_PREFIX))
    {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    match *request.method() {
        Method::GET | Method::HEAD => plain_file(gw, &path, request).await,
        _ => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts_media_type(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    accept.split(',').any(|item| {
        let media = item
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == MEDIA_TYPE || media == "*/*" || media == "application/*"
    })
}

async fn framegate_endpoint(
    gw: Arc<Gateway>,
    base: String,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    let headers = request.headers();
    if request.method() != Method::POST {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "framegate endpoints take POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let content_type = header_str(headers, header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some(MEDIA_TYPE) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Content-Type must be {MEDIA_TYPE}"),
        );
    }
    if !accepts_media_type(header_str(headers, header::ACCEPT)) {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            &format!("Accept must include {MEDIA_TYPE}"),
        );
    }
    let writable = matches!(endpoint, Endpoint::Rw);
    if writable {
        if !gw.config.allow_writes {
            return plain(StatusCode::FORBIDDEN, "this server does not accept writes");
        }
        if let Some(token) = &gw.config.write_token {
            let given =
                header_str(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
            let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
            if !ok {
                let mut response = plain(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is needed for writes",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"framegate\""),
                );
                return response;
            }
        }
    }
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > gw.config.limits.max_message_bytes) {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message larger than this server accepts",
        );
    }
    let Some(base_path) = tree_path(&base) else {
        return plain(StatusCode::NOT_FOUND, "base not found");
    };
    let root = gw.root.clone();
    let opened = {
        let base_path = base_path.clone();
        tokio::task::spawn_blocking(move || {
            if base_path == Path::new(".") {
                root.try_clone()
            } else {
                root.open_dir(&base_path)
            }
        })
        .await
    };
    let Ok(Ok(base_dir)) = opened else {
        return plain(StatusCode::NOT_FOUND, "base not found");
    };
    let encoding = header_str(
        headers,
        header::HeaderName::from_static("framegate-accept-encoding"),
    )
    .map(Encoding::negotiate)
    .unwrap_or(Encoding::Identity);
    let endpoint_name = if writable { "rw" } else { "ro" };
    gw.metrics
        .messages
        .with_label_values(&[endpoint_name])
        .inc();
    // Counted until the answers are written (or the message is abandoned).
    let in_flight = InFlightGuard::new(gw.clone());
    let spec = MessageSpec {
        base: Arc::new(base_dir),
        writable: Arc::new(std::sync::atomic::AtomicBool::new(writable)),
        token_unlocks: false,
        encoding,
        endpoint: endpoint_name,
        base_display: format!("/{}", base_path.display()),
    };
    let mut message = Message::new(gw.clone(), spec, framegate_wire::OutputMode::Deferred);
    match message.read_body(request.into_body()).await {
        Ok(()) => {}
        Err(Abandoned::TimedOut) => {
            return plain(StatusCode::REQUEST_TIMEOUT, "request body stalled");
        }
        Err(Abandoned::BodyError(err)) => {
            tracing::info!(error = %err, "request body broke; message abandoned");
            return plain(StatusCode::BAD_REQUEST, "request body broke off");
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(BODY_CHANNEL_CHUNKS);
    tokio::spawn(async move {
        message.write_answers(tx).await;
        drop(in_flight);
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, MEDIA_TYPE)
        .header(header::CACHE_CONTROL, "no-store, no-transform")
        .header("x-accel-buffering", "no")
        .body(body_from(rx))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// Holds one count in the in-flight gauge for as long as it lives.
struct InFlightGuard(Arc<Gateway>);

impl InFlightGuard {
    fn new(gw: Arc<Gateway>) -> Self {
        gw.metrics.in_flight.inc();
        InFlightGuard(gw)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

// ---- plain file access -----------------------------------------------------------

async fn plain_file(gw: Arc<Gateway>, url_path: &str, request: Request) -> Response {
    let Some(rel) = tree_path(url_path) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let root = gw.root.clone();
    let probe = {
        let rel = rel.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Probe> {
            let meta = root.metadata(&rel)?;
            if meta.is_dir() {
                let entries = crate::files::dir_names(&root, &rel)
                    .map_err(|e| std::io::Error::other(e.message))?;
                return Ok(Probe::Dir(listing_json(entries)));
            }
            let file = root.open(&rel)?.into_std();
            Ok(Probe::File { file, meta })
        })
        .await
    };
    let Ok(Ok(probe)) = probe else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    match probe {
        Probe::Dir(json) => {
            if !url_path.ends_with('/') {
                let location = format!("{url_path}/");
                return Response::builder()
                    .status(StatusCode::MOVED_PERMANENTLY)
                    .header(header::LOCATION, location)
                    .body(Body::empty())
                    .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "redirect"));
            }
            let body = if request.method() == Method::HEAD {
                Body::empty()
            } else {
                Body::from(json.clone())
            };
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, json.len())
                .body(body)
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "listing"))
        }
        Probe::File { file, meta } => {
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
            if let Some(range) = range.filter(|r| r.contains(',')) {
                if let Some(response) = multi_range(
                    file,
                    meta.len(),
                    &range,
                    &etag,
                    request.method() == Method::HEAD,
                ) {
                    return response;
                }
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
    }
}

enum Probe {
    Dir(Bytes),
    File {
        file: std::fs::File,
        meta: cap_std::fs::Metadata,
    },
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

fn http_date(meta: &cap_std::fs::Metadata) -> String {
    let modified = meta
        .modified()
        .map(|t| t.into_std())
        .unwrap_or(std::time::UNIX_EPOCH);
    httpdate::fmt_http_date(modified)
}

fn listing_json(entries: Vec<(String, cap_std::fs::Metadata)>) -> Bytes {
    let items: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(name, meta)| {
            let kind = if meta.is_dir() {
                "directory"
            } else if meta.is_file() {
                "file"
            } else {
                "other"
            };
            let mut item =
                serde_json::json!({ "name": name, "type": kind, "mtime": http_date(&meta) });
            if meta.is_file() {
                item["size"] = serde_json::json!(meta.len());
            }
            item
        })
        .collect();
    Bytes::from(serde_json::to_vec(&items).unwrap_or_default())
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
        let pieces =
            futures_util::stream::iter(parts.into_iter().map(Some).chain(std::iter::once(None)));
        let stream = futures_util::StreamExt::then(pieces, move |part| {
            let file = file.clone();
            let tail = tail.clone();
            async move {
                match part {
                    None => Ok::<_, std::io::Error>(vec![tail]),
                    Some((head, offset, len)) => {
                        let data = tokio::task::spawn_blocking(move || {
                            crate::files::read_piece(&file, offset, len as usize)
                        })
                        .await
                        .map_err(std::io::Error::other)??;
                        Ok(vec![head, data])
                    }
                }
            }
        });
        let flat = futures_util::TryStreamExt::map_ok(stream, |v| {
            futures_util::stream::iter(v.into_iter().map(Ok::<_, std::io::Error>))
        });
        Body::from_stream(futures_util::TryStreamExt::try_flatten(flat))
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
