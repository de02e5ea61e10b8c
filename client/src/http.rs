//! The HTTP medium: one framegate message per POST.
//!
//! A message is a typestate: [`MessageWriter`] (request frames go out as a
//! streamed body) becomes, by [`MessageWriter::finish`], a
//! [`MessageReader`] (response frames decoded as they arrive). Reading
//! before finishing writing, or writing after, does not compile:
//!
//! ```no_run
//! # async fn f(m: framegate_client::http::HttpMedium) {
//! let mut writer = m.start_message(false);
//! writer.write(bytes::Bytes::new()).await.unwrap();
//! let mut reader = writer.finish().await.unwrap();
//! while let Some(frame) = reader.next_frame().await.unwrap() { let _ = frame; }
//! # }
//! ```
//!
//! ```compile_fail
//! # async fn f(m: framegate_client::http::HttpMedium) {
//! let mut writer = m.start_message(false);
//! writer.write(bytes::Bytes::new()).await.unwrap();
//! let mut reader = writer.finish().await.unwrap();
//! writer.write(bytes::Bytes::new()).await.unwrap(); // `writer` was consumed by finish
//! # }
//! ```

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use framegate_wire::http_binding::{ACCEPT_ENCODING_HEADER, Endpoint, accept_encoding_value};
use framegate_wire::{Encoding, Frame, FrameDecoder, MEDIA_TYPE};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Misbehavior, Refusal, Result};

/// What every medium answers (Bazaar's `SmartClientMedium`).
pub trait ClientMedium: Send + Sync {
    /// Whether the medium may reach something that is not a framegate
    /// server, so the client must probe before its first command.
    fn should_probe(&self) -> bool;
    /// The remote base path (`/dir/`) of this medium's URL.
    fn remote_path(&self) -> String;
    /// Drops connections held for reuse.
    fn disconnect(&self);
}

/// Request bodies are streamed through this many chunks of buffer.
pub const BODY_CHANNEL_CHUNKS: usize = 8;

/// Redirects followed for one request (within its origin, and again
/// across origins by plain GETs).
pub const MAX_REDIRECTS: usize = 10;

/// Longest error body kept for messages.
const ERROR_BODY_LIMIT: usize = 512;

/// Framegate over HTTP(S) with reqwest.
#[derive(Debug, Clone)]
pub struct HttpMedium {
    client: reqwest::Client,
    base: Url,
    token: Option<Arc<str>>,
    basic: Option<(String, Option<String>)>,
    accept_encoding: String,
    max_frame_size: usize,
    /// The server's `max-frame-size` (from `hello`): request frames stay
    /// within it.
    peer_max_frame: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HttpMedium {
    /// What credentials this medium sends (for a 401's message).
    fn creds(&self) -> Creds {
        Creds {
            token: self.token.is_some(),
            basic: self.basic.is_some(),
        }
    }

    /// The error for a 401 or 407 to `url`.
    pub(crate) fn credentials_error(&self, resp: &reqwest::Response, url: String) -> Error {
        credentials_error(self.creds(), resp, url)
    }

    /// A medium for base URL `base` (a directory URL ending in `/`).
    pub fn new(
        client: reqwest::Client,
        mut base: Url,
        token: Option<String>,
        compress: bool,
    ) -> Self {
        let basic = (!base.username().is_empty()).then(|| {
            let user = percent_encoding::percent_decode_str(base.username())
                .decode_utf8_lossy()
                .into_owned();
            let pass = base.password().map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            });
            (user, pass)
        });
        let _ = base.set_username("");
        let _ = base.set_password(None);
        HttpMedium {
            client,
            base,
            token: token.map(Into::into),
            basic,
            accept_encoding: if compress {
                accept_encoding_value(&[Encoding::Zstd8Mb, Encoding::Identity])
            } else {
                accept_encoding_value(&[Encoding::Identity])
            },
            max_frame_size: framegate_wire::frame::DEFAULT_MAX_FRAME_SIZE,
            peer_max_frame: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
                framegate_wire::frame::DEFAULT_MAX_FRAME_SIZE,
            )),
        }
    }

    /// The base URL (without credentials).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Keeps request frames within the server's `max-frame-size` (from
    /// its `hello`).
    pub fn set_peer_max_frame(&self, max: usize) {
        self.peer_max_frame
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// The server's `max-frame-size`, as far as known (else the
    /// protocol's default).
    pub fn peer_max_frame(&self) -> usize {
        self.peer_max_frame
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The endpoint URL of `ro` or `rw`.
    pub fn endpoint(&self, writable: bool) -> String {
        format!("{}{}", self.base, Endpoint::for_writes(writable).path())
    }

    pub(crate) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.basic {
            Some((user, pass)) => req.basic_auth(user, pass.as_ref()),
            None => req,
        };
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a message whose frames are all in memory as one body (with a
    /// `Content-Length`, no streaming machinery) and returns its reader.
    pub async fn send_message(&self, writable: bool, body: Bytes) -> Result<MessageReader> {
        let url = self.endpoint(writable);
        let resp = self.post_message(&url, body).await?;
        MessageReader::new(url, resp, self.max_frame_size, self.creds()).await
    }

    /// POSTs a whole message body to `url` with the framegate headers.
    async fn post_message(&self, url: &str, body: Bytes) -> Result<reqwest::Response> {
        tracing::debug!(url, bytes = body.len(), "POST message");
        self.message_request(url)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::from_reqwest(url, e))
    }

    /// A POST to `url` with the framegate headers (§7.2), no body yet.
    fn message_request(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorize(self.client.post(url))
            .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE)
            .header(reqwest::header::ACCEPT, MEDIA_TYPE)
            .header(ACCEPT_ENCODING_HEADER, &self.accept_encoding)
    }

    /// Sends a read-only message that starts with `hello` to a server not
    /// probed yet (§7.4 folded into the first message): the reader if a
    /// framegate server answered, else `Err((status, reason))` of the
    /// answer that is not framegate (the caller falls back to plain HTTP).
    /// Credentials asked for and framegate refusals are errors.
    pub(crate) async fn send_probing(
        &self,
        body: Bytes,
    ) -> Result<std::result::Result<MessageReader, (u16, String)>> {
        let url = self.endpoint(false);
        let resp = self.post_message(&url, body).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
        {
            return Err(self.credentials_error(&resp, url));
        }
        match judge_head(&resp) {
            HeadVerdict::Framegate => Ok(Ok(MessageReader::new(
                url,
                resp,
                self.max_frame_size,
                self.creds(),
            )
            .await?)),
            HeadVerdict::Refused(reason) => Err(refusal_error(resp, &url, &reason).await),
            HeadVerdict::NotFramegate(reason) => Ok(Err((status.as_u16(), reason))),
            HeadVerdict::Failed => Err(status_error(resp, url).await),
        }
    }

    /// Starts a message: the POST is under way, its body fed by the writer.
    pub fn start_message(&self, writable: bool) -> MessageWriter {
        let url = self.endpoint(writable);
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(BODY_CHANNEL_CHUNKS);
        let body_stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let req = self
            .message_request(&url)
            .body(reqwest::Body::wrap_stream(body_stream));
        let response = tokio::spawn(req.send());
        MessageWriter {
            url,
            tx,
            response,
            max_frame_size: self.max_frame_size,
            creds: self.creds(),
        }
    }
}

impl ClientMedium for HttpMedium {
    fn should_probe(&self) -> bool {
        true
    }

    fn remote_path(&self) -> String {
        self.base.path().to_string()
    }

    fn disconnect(&self) {
        // reqwest's pool closes idle connections when the client is dropped;
        // nothing is held open per medium.
    }
}

/// The writing half of a message.
#[derive(Debug)]
pub struct MessageWriter {
    url: String,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    response: JoinHandle<reqwest::Result<reqwest::Response>>,
    max_frame_size: usize,
    creds: Creds,
}

impl MessageWriter {
    /// Sends request bytes (encoded frames). Fails if the server stopped
    /// reading; [`finish`](Self::finish) then tells why.
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.tx.send(Ok(bytes)).await.map_err(|_| {
            Error::Usage(format!(
                "{} stopped reading the request; finish the message to see why",
                self.url
            ))
        })
    }

    /// Ends the request body and waits for the response head.
    pub async fn finish(self) -> Result<MessageReader> {
        let MessageWriter {
            url,
            tx,
            response,
            max_frame_size,
            creds,
        } = self;
        drop(tx);
        let response = response
            .await
            .map_err(|e| Error::Usage(format!("request task failed: {e}")))?
            .map_err(|e| Error::from_reqwest(&url, e))?;
        MessageReader::new(url, response, max_frame_size, creds).await
    }
}

/// The reading half of a message.
pub struct MessageReader {
    url: String,
    stream: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: FrameDecoder,
    buf: BytesMut,
    ended: bool,
}

impl std::fmt::Debug for MessageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("url", &self.url)
            .finish()
    }
}

/// Which credentials a request carried.
#[derive(Debug, Clone, Copy)]
struct Creds {
    token: bool,
    basic: bool,
}

/// The error for a 401 or 407 to `url`: what was missing or refused, and
/// what to do about it.
fn credentials_error(creds: Creds, resp: &reqwest::Response, url: String) -> Error {
    let status = resp.status().as_u16();
    let basic_asked = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("basic"));
    let detail = if status == 407 {
        "the proxy needs credentials (e.g. HTTPS_PROXY=http://user:password@proxy:port/)"
    } else if basic_asked && creds.basic {
        "the user name or password in the URL was refused"
    } else if basic_asked {
        "the server asks for a user name and password: put user:password@ in the URL"
    } else if creds.token {
        "the token was refused: check --token-file, FRAMEGATE_TOKEN, --token or the host's ~/.netrc entry"
    } else {
        "a token is needed: use --token-file, FRAMEGATE_TOKEN or a `machine` entry in ~/.netrc"
    };
    Error::Refused(Refusal::Credentials {
        status,
        url,
        detail: detail.into(),
    })
}

/// The error for an HTTP status where a framegate answer was expected: a
/// redirect says where to (not followed: it leaves the base's origin, and
/// credentials never go there).
pub(crate) async fn status_error(resp: reqwest::Response, url: String) -> Error {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match location {
        Some(to) if resp.status().is_redirection() => format!(
            "redirected to {to}, another origin: not followed (use that URL if you trust it)"
        ),
        _ => error_body(resp).await,
    };
    Error::Refused(Refusal::Status { status, url, body })
}

/// Reads a short error body: its first [`ERROR_BODY_LIMIT`] bytes (the
/// rest is never read; a server may send an endless one).
pub(crate) async fn error_body(resp: reqwest::Response) -> String {
    let bytes = match read_at_most(resp, ERROR_BODY_LIMIT).await {
        Ok(Ok(b) | Err(b)) => b,
        Err(_) => Bytes::new(),
    };
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Reads a body of at most `limit` bytes: `Ok(Ok(body))`, or
/// `Ok(Err(first limit bytes))` if it is longer (the rest is not read).
pub(crate) async fn read_at_most(
    resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<std::result::Result<Bytes, Bytes>, reqwest::Error> {
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(chunk.get(..room).unwrap_or_default());
            return Ok(Err(body.freeze()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body.freeze()))
}

/// What a framegate response head says.
pub(crate) enum HeadVerdict {
    Framegate,
    /// A framegate server refused the POST (its refusal header names why).
    Refused(String),
    /// Evidence of a server that does not run framegate here: a 200 of
    /// another type, 400/403/404/405/410/501 to the POST, or a redirect to
    /// another origin.
    NotFramegate(String),
    /// A status that says nothing about what the server is: 408, 413,
    /// 429, a 5xx from a proxy whose upstream is down. An error, never a
    /// verdict of "plain".
    Failed,
}

/// The error for a framegate server's refusal of a POST to `url`: a
/// missing base is a remote `no-such-file` ("no such directory"), any
/// other an HTTP error with the server's reason.
pub(crate) async fn refusal_error(resp: reqwest::Response, url: &str, reason: &str) -> Error {
    let dir = url
        .strip_suffix(framegate_wire::http_binding::Endpoint::ReadOnly.path())
        .or_else(|| url.strip_suffix(framegate_wire::http_binding::Endpoint::ReadWrite.path()))
        .unwrap_or(url);
    if reason == framegate_wire::http_binding::REFUSAL_NO_SUCH_DIRECTORY {
        return Error::remote(
            framegate_wire::ErrorCode::NO_SUCH_FILE,
            format!("no such directory: {dir}"),
        );
    }
    if reason == framegate_wire::http_binding::REFUSAL_READ_ONLY {
        // The same error as a byte stream's `read-only` answer.
        let body = error_body(resp).await;
        let why = if body.is_empty() {
            "the server does not accept writes".to_string()
        } else {
            body
        };
        return Error::remote(
            framegate_wire::ErrorCode::READ_ONLY,
            format!("{dir}: {why} (the server runs without --allow-writes)"),
        );
    }
    Error::Refused(Refusal::Status {
        status: resp.status().as_u16(),
        url: url.to_string(),
        body: format!("{reason}: {}", error_body(resp).await),
    })
}

pub(crate) fn judge_head(resp: &reqwest::Response) -> HeadVerdict {
    let ctype = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let refusal = resp
        .headers()
        .get(framegate_wire::http_binding::REFUSAL_HEADER)
        .and_then(|v| v.to_str().ok());
    let status = resp.status().as_u16();
    if status == 200 && ctype == MEDIA_TYPE {
        HeadVerdict::Framegate
    } else if let Some(reason) = refusal {
        HeadVerdict::Refused(reason.to_string())
    } else if matches!(status, 200 | 400 | 403 | 404 | 405 | 410 | 501)
        || resp.status().is_redirection()
    {
        // A redirect (to another origin: within one the client follows)
        // is taken for a plain site: reads then follow it, without
        // credentials.
        HeadVerdict::NotFramegate(format!("HTTP {status} with content type {ctype:?}"))
    } else {
        HeadVerdict::Failed
    }
}

impl MessageReader {
    async fn new(
        url: String,
        resp: reqwest::Response,
        max_frame_size: usize,
        creds: Creds,
    ) -> Result<MessageReader> {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
        {
            return Err(credentials_error(creds, &resp, url));
        }
        if let HeadVerdict::Refused(reason) = judge_head(&resp) {
            return Err(refusal_error(resp, &url, &reason).await);
        }
        if let HeadVerdict::NotFramegate(_) | HeadVerdict::Failed = judge_head(&resp) {
            return Err(status_error(resp, url).await);
        }
        Ok(MessageReader {
            url,
            stream: resp.bytes_stream().boxed(),
            decoder: FrameDecoder::new(max_frame_size),
            buf: BytesMut::new(),
            ended: false,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next response frame; `Ok(None)` at the end of the response.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if self.ended {
                return match self.decoder.decode_eof(&mut self.buf) {
                    Ok(frame) => Ok(frame),
                    Err(e) => Err(Error::Misbehaved(Misbehavior::Protocol {
                        url: self.url.clone(),
                        source: e.into(),
                    })),
                };
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Misbehaved(Misbehavior::Protocol {
                        url: self.url.clone(),
                        source: e.into(),
                    }));
                }
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(Error::lost(self.url.clone(), e));
                }
                None => self.ended = true,
            }
        }
    }
}
