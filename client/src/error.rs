//! One error type for everything a client call can meet, layered like
//! rustls's: what failed decides the variant, and each layer says what to
//! do about it.
//!
//! | layer | variant | what to do |
//! |---|---|---|
//! | the command failed on the server | [`Error::Remote`] (with its §10 code) | nothing to retry: the answer |
//! | the server (or a proxy) refused the request | [`Error::Refused`] ([`Refusal`]: HTTP status, credentials, protocol code, no framegate server, catch-all) | change the request or the credentials |
//! | the peer broke the protocol | [`Error::Misbehaved`] ([`Misbehavior`]) | report it; never a reason to fall back |
//! | the connection | [`Error::Transport`] ([`TransportError`]: connect, TLS, lost, unanswered) | retry (downloads do, with backoff) |
//! | a session used in the wrong state | [`Error::Session`] | a caller's bug |
//! | a local file | [`Error::Local`], [`Error::Io`] | the local path and its cause |
//! | a call the client cannot make | [`Error::Usage`], [`Error::InvalidUrl`] | a caller's bug or a typo |
//!
//! [`Error::layer`] names the layer (the CLI's exit code follows it).

use framegate_wire::{ErrorCode, PeerMisbehaved};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command failed on the server (or the plain-HTTP fallback cannot
    /// do it): a §10 application code, e.g. `no-such-file`.
    #[error("{code}: {message}")]
    Remote {
        /// The code (unknown codes are kept as sent).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server, or something in front of it, refused the request.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The server broke the framegate protocol. Never a reason to fall back.
    #[error(transparent)]
    Misbehaved(#[from] Misbehavior),
    /// The connection: connecting (DNS, refused, TLS), or it dropped.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A session call made in the wrong runstate.
    #[error("cannot {operation}: the session is {state}")]
    Session {
        /// What was attempted.
        operation: &'static str,
        /// The state it was in.
        state: crate::runstate::RunState,
    },
    /// A local file or directory could not be used (the cause is the
    /// error's source).
    #[error("{}", path.display())]
    Local {
        /// The local path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A local I/O error without a path of ours (the caller's reader or
    /// writer).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A URL the client cannot use.
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    /// A call the client cannot make as asked.
    #[error("{0}")]
    Usage(String),
}

/// Why the server (or a proxy in front of it) refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A §10 protocol code: the request was malformed or over a limit
    /// (e.g. `too-many-requests`, `frame-too-large`).
    #[error("the server refused the request ({code}): {message}")]
    Protocol {
        /// The code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// An HTTP status where a framegate answer or a file was expected.
    #[error("HTTP {status} from {url}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The URL.
        url: String,
        /// The start of the body, for the reason.
        body: String,
    },
    /// 401 or 407: credentials are needed, or the ones sent were refused
    /// (`detail` says which, and what to do).
    #[error("HTTP {status} from {url}: {detail}")]
    Credentials {
        /// 401 or 407.
        status: u16,
        /// The URL.
        url: String,
        /// What was missing or refused, and what to do.
        detail: String,
    },
    /// A `framegate+http(s)://` URL (or a write), but no framegate server
    /// answered.
    #[error("no framegate server at {url}: {reason}")]
    NotSmart {
        /// The base URL.
        url: String,
        /// What the probe saw.
        reason: String,
    },
    /// Redirects that never end (more than `MAX_REDIRECTS`).
    #[error("{url} redirects too many times (a redirect loop?)")]
    TooManyRedirects {
        /// The URL asked for.
        url: String,
    },
    /// The server answers any path with a page (a captive portal, a
    /// catch-all site): nothing it says can be read as a file.
    #[error(
        "the server at {url} answers every path with a page (a captive portal or a catch-all site?): not reading it as files"
    )]
    CatchAll {
        /// The base URL.
        url: String,
    },
}

/// How the server broke the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Misbehavior {
    /// Frames, streams or encodings the protocol does not allow.
    #[error("the server at {url} broke the framegate protocol: {source}")]
    Protocol {
        /// The endpoint.
        url: String,
        /// What it did.
        #[source]
        source: PeerMisbehaved,
    },
    /// An answer that does not decode as its command's answer.
    #[error("the server sent a malformed answer ({what}): {reason}")]
    Malformed {
        /// Which answer.
        what: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// What happened to the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect (DNS, refused, TLS handshake, SSH); `source` is
    /// the root cause.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Where (a URL, or `host:port`, or the SSH destination).
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection dropped or timed out mid-way; pending calls fail
    /// with this.
    #[error("connection to {url} lost: {source}")]
    Lost {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The response ended before this request was answered (cut off).
    #[error("the server at {url} did not answer the request (response cut off?)")]
    Unanswered {
        /// The endpoint.
        url: String,
    },
}

/// The layers of [`Error`], outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layer {
    /// [`Error::Remote`].
    Remote,
    /// [`Error::Refused`].
    Refused,
    /// [`Error::Misbehaved`].
    Misbehaved,
    /// [`Error::Transport`].
    Transport,
    /// [`Error::Session`].
    Session,
    /// [`Error::Local`], [`Error::Io`].
    Local,
    /// [`Error::Usage`], [`Error::InvalidUrl`].
    Usage,
}

impl Error {
    /// Which layer the error comes from.
    pub fn layer(&self) -> Layer {
        match self {
            Error::Remote { .. } => Layer::Remote,
            Error::Refused(_) => Layer::Refused,
            Error::Misbehaved(_) => Layer::Misbehaved,
            Error::Transport(_) => Layer::Transport,
            Error::Session { .. } => Layer::Session,
            Error::Local { .. } | Error::Io(_) => Layer::Local,
            Error::InvalidUrl(_) | Error::Usage(_) => Layer::Usage,
        }
    }

    /// The §10 code, for remote errors and protocol refusals.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Remote { code, .. } | Error::Refused(Refusal::Protocol { code, .. }) => {
                Some(code)
            }
            _ => None,
        }
    }

    /// Whether the error is `code`.
    pub fn is(&self, code: &ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// Whether retrying on a new connection may help (the connection dropped).
    pub fn is_dropped_connection(&self) -> bool {
        matches!(
            self,
            Error::Transport(TransportError::Lost { .. } | TransportError::Unanswered { .. })
        )
    }

    /// A request's error-response (§4.2): remote for `application`,
    /// refused for `protocol`.
    pub(crate) fn from_failure(
        kind: framegate_wire::ErrorKind,
        error: framegate_wire::ErrorPayload,
    ) -> Self {
        match kind {
            framegate_wire::ErrorKind::Application => Error::Remote {
                code: error.code,
                message: error.message,
            },
            framegate_wire::ErrorKind::Protocol => Error::Refused(Refusal::Protocol {
                code: error.code,
                message: error.message,
            }),
        }
    }

    /// The connection to `url` was lost (or a body could not be read).
    pub(crate) fn lost(
        url: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Transport(TransportError::Lost {
            url: url.into(),
            source: source.into(),
        })
    }

    pub(crate) fn remote(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Remote {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn from_reqwest(url: &str, err: reqwest::Error) -> Self {
        let url = url.to_string();
        if err.is_redirect() {
            return Error::Refused(Refusal::TooManyRedirects { url });
        }
        let source = Box::new(err);
        Error::Transport(if source.is_connect() {
            TransportError::Connect { url, source }
        } else {
            TransportError::Lost { url, source }
        })
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
