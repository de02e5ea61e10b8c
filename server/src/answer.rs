//! What a command produces: its answer, or its error. Everything below the
//! embedding API (storage, paths, the file pool) speaks these two types.

use std::fmt;

use bytes::Bytes;
use framegate_wire::{ErrorCode, ErrorPayload, ProgressPayload};
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

/// Longest error message sent, in bytes: longer ones (a quoted argument
/// can be a megabyte) are cut at a character boundary and end with `…`.
pub const MAX_ERROR_MESSAGE: usize = 512;

impl CommandError {
    /// A new error (its message cut to [`MAX_ERROR_MESSAGE`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut end = MAX_ERROR_MESSAGE - '…'.len_utf8();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        CommandError { code, message }
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
    /// An answer preceded by one `progress` frame (§4.2: progress comes
    /// before the bytes), e.g. the version of the file its bytes come from
    /// ([`Answer::announced`]). The driver queues the frame when the
    /// command finishes, before it hands over any byte of `answer`, in
    /// both bindings — unlike [`crate::Context::progress`], whose notes
    /// travel beside the answer and may be taken in after it.
    Announced {
        /// The frame's payload.
        progress: ProgressPayload,
        /// The answer it precedes.
        answer: Box<Answer>,
    },
}

impl Answer {
    /// A CBOR-encoded value.
    pub fn cbor<T: serde::Serialize>(value: &T) -> Answer {
        Answer::Bytes(framegate_wire::payload::encode_cbor(value))
    }

    /// This answer, preceded by a `progress` frame (see [`Answer::Announced`]).
    pub fn announced(self, progress: ProgressPayload) -> Answer {
        Answer::Announced {
            progress,
            answer: Box::new(self),
        }
    }

    /// Total length, when known.
    pub fn len_hint(&self) -> Option<u64> {
        match self {
            Answer::Bytes(b) => Some(b.len() as u64),
            Answer::File { ranges, .. } => Some(ranges.iter().map(|r| r.1).sum()),
            Answer::Stream(_) => None,
            Answer::Announced { answer, .. } => answer.len_hint(),
        }
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Bytes(b) => write!(f, "Answer::Bytes({} bytes)", b.len()),
            Answer::File { ranges, .. } => write!(f, "Answer::File({} ranges)", ranges.len()),
            Answer::Stream(_) => f.write_str("Answer::Stream"),
            Answer::Announced { progress, answer } => f
                .debug_struct("Answer::Announced")
                .field("progress", progress)
                .field("answer", answer)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let quoted = format!("invalid path: {}", "é".repeat(100_000));
        let err = CommandError::new(ErrorCode::INVALID_PATH, quoted);
        assert!(err.message.len() <= MAX_ERROR_MESSAGE);
        assert!(err.message.starts_with("invalid path: éé"));
        assert!(err.message.ends_with('…'));
        let short = CommandError::new(ErrorCode::INVALID_PATH, "short");
        assert_eq!(short.message, "short");
    }
}
