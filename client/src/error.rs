//! One error type for everything a client call can meet, each with a
//! message a person can act on.

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
    /// The server refused our request as malformed or over a limit (a §10
    /// protocol code such as `too-many-requests`).
    #[error("the server refused the request ({code}): {message}")]
    Refused {
        /// The code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server broke the framegate protocol. Never a reason to fall back.
    #[error("the server at {url} broke the framegate protocol: {source}")]
    Misbehaved {
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
    /// The response ended before this request was answered.
    #[error("the server at {url} did not answer the request (response cut off?)")]
    Unanswered {
        /// The endpoint.
        url: String,
    },
    /// An HTTP status where a framegate answer was expected.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// The status.
        status: u16,
        /// The URL.
        url: String,
        /// The start of the body, for the reason.
        body: String,
    },
    /// 401 or 407: credentials are needed (token, URL userinfo, proxy auth).
    #[error(
        "HTTP {status} from {url}: credentials needed (set FRAMEGATE_TOKEN, use --token, or put user:password in the URL)"
    )]
    NeedsCredentials {
        /// 401 or 407.
        status: u16,
        /// The URL.
        url: String,
    },
    /// A `framegate+http(s)://` URL, but no framegate server answered.
    #[error("no framegate server at {url}: {reason}")]
    NotSmart {
        /// The base URL.
        url: String,
        /// What the probe saw.
        reason: String,
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
    /// Could not connect (DNS, refused, TLS handshake).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The connection dropped or timed out mid-way.
    #[error("connection to {url} failed: {source}")]
    Connection {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A session call made in the wrong runstate.
    #[error("cannot {operation}: the session is {state}")]
    State {
        /// What was attempted.
        operation: &'static str,
        /// The state it was in.
        state: crate::runstate::RunState,
    },
    /// Connecting a session failed; `source` is the root cause.
    #[error("cannot connect to {target}: {source}")]
    ConnectFailed {
        /// Where.
        target: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The session's connection dropped; pending calls fail with this.
    #[error("connection to {target} lost: {reason}")]
    ConnectionLost {
        /// Where.
        target: String,
        /// Why.
        reason: String,
    },
    /// A local I/O error (reading a source, writing a destination).
    #[error(transparent)]
    Io(#[from] std::io::Error),
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
    /// A URL the client cannot use.
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    /// A call the client cannot make as asked.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The §10 code, for remote and refused errors.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Remote { code, .. } | Error::Refused { code, .. } => Some(code),
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
            Error::Connection { .. } | Error::Unanswered { .. } | Error::ConnectionLost { .. }
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
            framegate_wire::ErrorKind::Protocol => Error::Refused {
                code: error.code,
                message: error.message,
            },
        }
    }

    pub(crate) fn remote(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Remote {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn from_reqwest(url: &str, err: reqwest::Error) -> Self {
        if err.is_connect() {
            Error::Connect {
                url: url.to_string(),
                source: err,
            }
        } else {
            Error::Connection {
                url: url.to_string(),
                source: err,
            }
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
