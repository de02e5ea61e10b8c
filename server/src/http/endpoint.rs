//! `POST {base}/.framegate/ro|rw`: the checks made on the headers alone
//! (§7.3: 405, 415, 406, 403, 401, 413, 404, before a byte of the body is
//! read), then the message itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use framegate_wire::http_binding::{
    ACCEPT_ENCODING_HEADER, Endpoint, REFUSAL_HEADER, REFUSAL_NO_SUCH_DIRECTORY,
};
use framegate_wire::{Encoding, ErrorCode, MEDIA_TYPE, OutputMode};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use subtle::ConstantTimeEq;

use super::body::{self, Abandoned};
use super::connection::ConnectionHandle;
use super::{header_str, plain, tree_path};
use crate::driver::{Driver, MessageSpec};
use crate::gateway::Gateway;
use crate::storage::Storage;

/// Splits `/a/b/.framegate/ro` into (`/a/b`, ro).
pub(super) fn endpoint_of(path: &str) -> Option<(&str, Endpoint)> {
    Endpoint::split(path)
}

/// A POST refused on its headers: a short `text/plain` answer.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    text: String,
    header: Option<(header::HeaderName, HeaderValue)>,
    /// What [`REFUSAL_HEADER`] says, if more than the status does (see
    /// there for the values).
    reason: Option<&'static str>,
}

/// The refusal token a status stands for when no reason was given.
fn reason_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not-an-endpoint",
        StatusCode::METHOD_NOT_ALLOWED => "method",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "content-type",
        StatusCode::NOT_ACCEPTABLE => "accept",
        StatusCode::FORBIDDEN => "read-only",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        _ => "unavailable",
    }
}

impl Refusal {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Refusal {
            status,
            text: text.into(),
            header: None,
            reason: None,
        }
    }

    /// A base directory that does not exist (or is no directory).
    fn no_such_directory() -> Self {
        Refusal {
            reason: Some(REFUSAL_NO_SUCH_DIRECTORY),
            ..Refusal::new(StatusCode::NOT_FOUND, "base not found")
        }
    }

    fn with(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.header = Some((name, HeaderValue::from_static(value)));
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = plain(self.status, &self.text);
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        let reason = self.reason.unwrap_or_else(|| reason_of(self.status));
        response.headers_mut().insert(
            header::HeaderName::from_static(REFUSAL_HEADER),
            HeaderValue::from_static(reason),
        );
        response
    }
}

/// A framegate POST whose headers passed every check of §7.3: extracted
/// from the request head, refused with a [`Refusal`].
struct Accepted {
    endpoint: Endpoint,
    base_path: PathBuf,
    encoding: Encoding,
}

impl FromRequestParts<Arc<Gateway>> for Accepted {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        let (base, endpoint) = endpoint_of(parts.uri.path())
            .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "not a framegate endpoint"))?;
        check(gw, base, endpoint, &parts.method, &parts.headers)
    }
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

/// The header checks of §7.3, in the contract's order.
fn check(
    gw: &Gateway,
    base: &str,
    endpoint: Endpoint,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Accepted, Refusal> {
    if method != Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "framegate endpoints take POST",
        )
        .with(header::ALLOW, "POST"));
    }
    let content_type = header_str(headers, header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some(MEDIA_TYPE) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {MEDIA_TYPE}"),
        ));
    }
    if !accepts_media_type(header_str(headers, header::ACCEPT)) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("Accept must include {MEDIA_TYPE}"),
        ));
    }
    if endpoint.allows_writes() {
        if !gw.config.allow_writes {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "this server does not accept writes",
            ));
        }
        if let Some(token) = &gw.config.write_token {
            let given =
                header_str(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes()))) {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is needed for writes",
                )
                .with(header::WWW_AUTHENTICATE, "Bearer realm=\"framegate\""));
            }
        }
    }
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > gw.config.limits.max_message_bytes) {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message larger than this server accepts",
        ));
    }
    let base_path = tree_path(base).ok_or_else(Refusal::no_such_directory)?;
    let encoding = header_str(
        headers,
        header::HeaderName::from_static(ACCEPT_ENCODING_HEADER),
    )
    .map(Encoding::negotiate)
    .unwrap_or(Encoding::Identity);
    Ok(Accepted {
        endpoint,
        base_path,
        encoding,
    })
}

/// Handles one framegate POST.
pub(super) async fn message(gw: Arc<Gateway>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let accepted = match Accepted::from_request_parts(&mut parts, &gw).await {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(),
    };
    // Nothing of the request's head is needed past this point but its
    // connection: a message waiting for its slot must not hold its
    // headers (HTTP/2 lets 8 waiting streams per connection send ~16 KiB
    // of header list each, ~88 KiB in memory: 2,048 of them held 176 MiB,
    // eighth attack).
    let conn = parts.extensions.remove::<ConnectionHandle>();
    drop(parts);
    // At most `max_messages` in flight: past it, this one waits before its
    // body is read.
    let Ok(message_slot) = gw.message_slots.clone().acquire_owned().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping");
    };
    let storage: Arc<dyn Storage> = match gw.storage.base(&accepted.base_path).await {
        Ok(storage) => storage,
        Err(err) if base_missing(&err.code) => {
            return Refusal::no_such_directory().into_response();
        }
        Err(_) => {
            return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "base could not be opened")
                .with(header::RETRY_AFTER, "1")
                .into_response();
        }
    };
    let name = accepted.endpoint.name();
    gw.metrics.messages.with_label_values(&[name]).inc();
    // Counted until the answers are written (or the message is abandoned).
    let in_flight = InFlightGuard::new(gw.clone());
    let spec = MessageSpec {
        storage,
        writable: Arc::new(AtomicBool::new(accepted.endpoint.allows_writes())),
        token_unlocks: false,
        encoding: accepted.encoding,
        endpoint: name,
        base_display: format!("/{}", accepted.base_path.display()),
    };
    let mut driver = Driver::new(gw.clone(), spec, OutputMode::Deferred);
    // Its commands' file jobs are handed to the pool a poll at a time.
    match crate::pool::grouped(body::read_body(&mut driver, &gw, body)).await {
        Ok(()) => {}
        Err(Abandoned::TimedOut) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "request body stalled or arrived too slowly",
            );
        }
        Err(Abandoned::BodyError(err)) => {
            tracing::info!(error = %err, "request body broke; message abandoned");
            return plain(StatusCode::BAD_REQUEST, "request body broke off");
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(body::BODY_CHANNEL_CHUNKS);
    let keepalive = gw.config.keepalive_interval;
    let budget = gw.output_budget.clone();
    let send_timeout = gw.config.send_timeout;
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = finished.clone();
    tokio::spawn(crate::pool::grouped(async move {
        body::write_answers(driver, tx, budget, keepalive, send_timeout, done, conn).await;
        drop(in_flight);
        drop(message_slot);
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, MEDIA_TYPE)
        .header(header::CACHE_CONTROL, "no-store, no-transform")
        .header("x-accel-buffering", "no")
        .body(body::body_from(rx, finished))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// Whether opening a base failed because it is not there (404) rather
/// than for want of resources (503).
fn base_missing(code: &ErrorCode) -> bool {
    [
        ErrorCode::NO_SUCH_FILE,
        ErrorCode::NOT_A_DIRECTORY,
        ErrorCode::INVALID_PATH,
        ErrorCode::PATH_OUTSIDE_BASE,
        ErrorCode::PERMISSION_DENIED,
    ]
    .contains(code)
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
