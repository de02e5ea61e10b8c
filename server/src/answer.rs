//! What a command produces: its answer, or its error. Everything below the
//! embedding API (storage, paths, the file pool) speaks these two types.

use std::fmt;

use bytes::Bytes;
use framegate_wire::{ErrorCode, ErrorPayload};
use futures_util::stream::BoxStream;

/// A command failed: an `application` error of §10.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CommandError {
    /// The code.
    pub code: ErrorCode,
    /// A message for people; never a server path.
    pub message: String,
}

impl CommandError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }

    /// `missing-argument` for `name`.
    pub fn missing(name: &str) -> Self {
        CommandError::new(
            ErrorCode::MISSING_ARGUMENT,
            format!("missing argument {name:?}"),
        )
    }

    /// `bad-argument` for `name`.
    pub fn bad(name: &str, why: impl fmt::Display) -> Self {
        CommandError::new(
            ErrorCode::BAD_ARGUMENT,
            format!("bad argument {name:?}: {why}"),
        )
    }

    /// `internal`, logging the detail instead of sending it.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::warn!(%detail, "internal error");
        CommandError::new(ErrorCode::INTERNAL, "internal server error")
    }
}

impl From<CommandError> for ErrorPayload {
    fn from(err: CommandError) -> Self {
        ErrorPayload::new(err.code, err.message)
    }
}

/// What a command answers.
#[non_exhaustive]
pub enum Answer {
    /// Bytes already in memory (small answers, CBOR).
    Bytes(Bytes),
    /// Byte ranges of an open file, concatenated; read when sent. The file
    /// was opened when the command ran, so the answer reflects that moment
    /// even if a later command replaces the file.
    File {
        /// The open file.
        file: std::fs::File,
        /// `(offset, length)` pairs, in answer order.
        ranges: Vec<(u64, u64)>,
    },
    /// A stream of pieces, polled when the answer is sent.
    Stream(BoxStream<'static, Result<Bytes, CommandError>>),
}

impl Answer {
    /// A CBOR-encoded value.
    pub fn cbor<T: serde::Serialize>(value: &T) -> Answer {
        Answer::Bytes(framegate_wire::payload::encode_cbor(value))
    }

    /// Total length, when known.
    pub fn len_hint(&self) -> Option<u64> {
        match self {
            Answer::Bytes(b) => Some(b.len() as u64),
            Answer::File { ranges, .. } => Some(ranges.iter().map(|r| r.1).sum()),
            Answer::Stream(_) => None,
        }
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Bytes(b) => write!(f, "Answer::Bytes({} bytes)", b.len()),
            Answer::File { ranges, .. } => write!(f, "Answer::File({} ranges)", ranges.len()),
            Answer::Stream(_) => f.write_str("Answer::Stream"),
        }
    }
}
