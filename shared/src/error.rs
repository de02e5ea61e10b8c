//! Error codes and the errors of the protocol core.
//!
//! Layering follows the wire: [`FrameError`] is what the decoder finds in a
//! header, [`ProtocolError`] is what a reactor answers with (a code of
//! PROTOCOL.md §10 plus a message), and [`ErrorCode`] is the open set of
//! codes both sides exchange. Mapping a lower error to a code happens in one
//! place: the `From` impls and [`FrameError::code`].

use std::borrow::Cow;
use std::fmt;

/// An error code as carried in an `error-response` payload (§10).
///
/// This is an *open* type: a code this crate does not know (sent by a newer
/// peer) is kept as it came, never turned into a failure.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(Cow<'static, str>);

macro_rules! codes {
    ($( $(#[$doc:meta])* $konst:ident = $text:literal, $protocol:literal; )*) => {
        impl ErrorCode {
            $( $(#[$doc])* pub const $konst: ErrorCode = ErrorCode(Cow::Borrowed($text)); )*

            /// Every code defined by PROTOCOL.md §10, and `file-changed` and
            /// `command-refused` (our extensions).
            pub const KNOWN: &'static [ErrorCode] = &[$(Self::$konst),*];

            /// Whether this code belongs to the `protocol` class (§10).
            /// Unknown codes are not.
            pub fn is_protocol(&self) -> bool {
                match self.as_str() {
                    $( $text => $protocol, )*
                    _ => false,
                }
            }

            /// Whether this is one of the codes of [`ErrorCode::KNOWN`].
            pub fn is_known(&self) -> bool {
                matches!(self.as_str(), $( $text )|*)
            }
        }
    };
}

codes! {
    /// A header declared a payload longer than the receiver's maximum.
    FRAME_TOO_LARGE = "frame-too-large", true;
    /// Input ended inside a frame.
    TRUNCATED_FRAME = "truncated-frame", true;
    /// A stream rule of §3 was broken.
    BAD_STREAM = "bad-stream", true;
    /// Unknown frame type, or a type sent by the wrong side or out of place.
    BAD_FRAME_TYPE = "bad-frame-type", true;
    /// A flag bit that is not defined, or a forbidden combination.
    BAD_FLAGS = "bad-flags", true;
    /// A `command-name` reused an active request id.
    REQUEST_ID_IN_USE = "request-id-in-use", true;
    /// Input ended before the request was complete.
    INCOMPLETE_REQUEST = "incomplete-request", true;
    /// A malformed `command-argument` frame.
    BAD_ARGUMENT_FRAME = "bad-argument-frame", true;
    /// The same argument name twice in one request.
    DUPLICATE_ARGUMENT = "duplicate-argument", true;
    /// Too many requests receiving at once, or in one message.
    TOO_MANY_REQUESTS = "too-many-requests", true;
    /// Too many arguments in one request.
    TOO_MANY_ARGUMENTS = "too-many-arguments", true;
    /// A size limit (argument bytes, message bytes) was exceeded.
    TOO_LARGE = "too-large", true;
    /// A `stream-settings` frame named a profile the receiver lacks.
    UNSUPPORTED_ENCODING = "unsupported-encoding", true;
    /// An encoded payload did not decode, or decoded too large.
    BAD_ENCODING = "bad-encoding", true;
    /// The server stopped taking input after an earlier protocol error.
    SERVER_ERRORED = "server-errored", true;
    /// The server has no such command.
    UNKNOWN_COMMAND = "unknown-command", false;
    /// A required argument is missing.
    MISSING_ARGUMENT = "missing-argument", false;
    /// An argument value is malformed.
    BAD_ARGUMENT = "bad-argument", false;
    /// No such file or directory.
    NO_SUCH_FILE = "no-such-file", false;
    /// The target already exists.
    FILE_EXISTS = "file-exists", false;
    /// A path component is not a directory.
    NOT_A_DIRECTORY = "not-a-directory", false;
    /// The path is a directory where a file was expected.
    IS_A_DIRECTORY = "is-a-directory", false;
    /// `rmdir` of a directory that has entries.
    DIRECTORY_NOT_EMPTY = "directory-not-empty", false;
    /// The operating system refused access.
    PERMISSION_DENIED = "permission-denied", false;
    /// A write command on a read-only endpoint.
    READ_ONLY = "read-only", false;
    /// The path leaves the base or the served tree.
    PATH_OUTSIDE_BASE = "path-outside-base", false;
    /// The path is malformed (absolute, NUL byte, not UTF-8).
    INVALID_PATH = "invalid-path", false;
    /// A range reaches past the end of the file.
    SHORT_READ = "short-read", false;
    /// The file is no longer the version the request named (`get` or
    /// `readv` with `if-match`): its bytes would not continue what the client
    /// already has. An extension of §10 (the project's `docs/protocol.md`):
    /// an older client keeps it as an unknown code.
    FILE_CHANGED = "file-changed", false;
    /// The server has the command, but its operator's policy refuses it
    /// (`serve --deny-commands`). An extension of §10 (the project's
    /// `docs/protocol.md`).
    COMMAND_REFUSED = "command-refused", false;
    /// The server or its storage lacks a resource just now (all its
    /// upload spools in use, an object store throttling): the same request
    /// may succeed later. An extension of §10 (the project's
    /// `docs/protocol.md`).
    BUSY = "busy", false;
    /// The server (or a plain HTTP fallback) cannot do this.
    NOT_SUPPORTED = "not-supported", false;
    /// The server failed in a way that is not the client's fault.
    INTERNAL = "internal", false;
}

impl ErrorCode {
    /// A code from its text; known codes share the static constant's text.
    pub fn new(code: impl Into<String>) -> Self {
        let code = code.into();
        match Self::KNOWN.iter().find(|known| known.as_str() == code) {
            Some(known) => known.clone(),
            None => ErrorCode(Cow::Owned(code)),
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.as_str())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ErrorCode::new)
    }
}

/// What the frame decoder found wrong with a header or with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared payload length exceeds the receiver's maximum.
    #[error("frame of {length} bytes exceeds the maximum frame size of {max}")]
    TooLarge {
        /// Declared payload length.
        length: usize,
        /// The receiver's maximum.
        max: usize,
    },
    /// Input ended inside a header or payload.
    #[error("input ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// The type nibble names no frame type.
    #[error("unknown frame type {0:#x}")]
    UnknownType(u8),
    /// A type flag bit that the frame type does not define.
    #[error("flags {flags:#x} are not defined for {frame_type} frames")]
    UndefinedFlags {
        /// Name of the frame type.
        frame_type: &'static str,
        /// The raw 4-bit flags.
        flags: u8,
    },
    /// A stream flag bit other than begin/end/encoded.
    #[error("undefined stream flags {0:#04x}")]
    UndefinedStreamFlags(u8),
}

impl FrameError {
    /// The §10 code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            FrameError::Truncated { .. } => ErrorCode::TRUNCATED_FRAME,
            FrameError::UnknownType(_) => ErrorCode::BAD_FRAME_TYPE,
            FrameError::UndefinedFlags { .. } | FrameError::UndefinedStreamFlags(_) => {
                ErrorCode::BAD_FLAGS
            }
        }
    }
}

/// A protocol error: a §10 code of the `protocol` class and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// The code sent on the wire.
    pub code: ErrorCode,
    /// What went wrong, without secrets or server paths.
    pub message: String,
}

impl ProtocolError {
    /// A new protocol error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

impl From<FrameError> for ProtocolError {
    fn from(err: FrameError) -> Self {
        ProtocolError::new(err.code(), err.to_string())
    }
}

/// A malformed structured payload (CBOR map, text-output atoms, stream settings).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} payload: {reason}")]
pub struct PayloadError {
    /// Which payload.
    pub what: &'static str,
    /// Why it was rejected.
    pub reason: String,
}

impl PayloadError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        PayloadError {
            what,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_changed_is_a_known_application_code() {
        let code = ErrorCode::new("file-changed");
        assert_eq!(code, ErrorCode::FILE_CHANGED);
        assert!(code.is_known());
        assert!(!code.is_protocol());
        // An older peer's view of it: any code it does not know survives.
        assert_eq!(ErrorCode::new("file-moved").as_str(), "file-moved");
    }
}
