//! `error-response` (type 0x5, server): ends a response with an error.

use bytes::Bytes;

use super::flags::flags;
use crate::payload::ErrorPayload;

flags! {
    /// Flags of an `error-response` frame.
    ErrorResponseFlags {
        /// The request or the frame stream was malformed.
        const PROTOCOL = 0x1, "protocol";
        /// The command failed.
        const APPLICATION = 0x2, "application";
    }
}

/// Which class an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `protocol`: malformed request or frame stream.
    Protocol,
    /// `application`: the command failed.
    Application,
}

/// An `error-response` frame.
#[derive(Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Flags.
    pub flags: ErrorResponseFlags,
    /// CBOR `{"code", "message", "detail"?}`.
    pub payload: Bytes,
}

impl ErrorResponse {
    /// A frame for `error` of class `kind`.
    pub fn new(kind: ErrorKind, error: &ErrorPayload) -> Self {
        let flags = match kind {
            ErrorKind::Protocol => ErrorResponseFlags::PROTOCOL,
            ErrorKind::Application => ErrorResponseFlags::APPLICATION,
        };
        ErrorResponse {
            flags,
            payload: error.encode(),
        }
    }

    /// The class; `None` unless exactly one class flag is set.
    pub fn kind(&self) -> Option<ErrorKind> {
        match (
            self.flags.contains(ErrorResponseFlags::PROTOCOL),
            self.flags.contains(ErrorResponseFlags::APPLICATION),
        ) {
            (true, false) => Some(ErrorKind::Protocol),
            (false, true) => Some(ErrorKind::Application),
            _ => None,
        }
    }
}

impl std::fmt::Debug for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ErrorResponse");
        d.field("flags", &self.flags);
        match ErrorPayload::decode(&self.payload) {
            Ok(e) => d
                .field("code", &e.code.as_str())
                .field("message", &e.message),
            Err(_) => d.field("len", &self.payload.len()),
        };
        d.finish()
    }
}
