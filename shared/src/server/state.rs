//! A request's life in the server reactor: its phase (arguments, data,
//! discarded, complete), its answer's state, and the frames queued for it.

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameBody, RequestId};
use crate::request::Arguments;
use crate::stream::Encode;

/// Where a request is in its life.
///
/// ```text
///  command-name ──► Arguments ──eoa──► Data ──eos──► Complete ──► (removed once
///        │              │                │                        its answer's
///        │              └────eoa─────────┼──────────►             last frame is
///        └─────eos──────────────────────►│                        transmitted)
///                                        └─fail_command─► Discarding ──eos──► Complete
/// ```
#[derive(Debug)]
pub(super) enum Phase {
    /// Boxed: a request spends most of its life past this phase, and its
    /// record should then be small (thousands wait in a message).
    Arguments(Box<ArgumentState>),
    Data,
    Discarding,
    Complete,
}

#[derive(Debug)]
pub(super) struct ArgumentState {
    pub(super) name: String,
    pub(super) has_data: bool,
    pub(super) args: Arguments,
    pub(super) partial: Option<PartialArgument>,
    pub(super) bytes: usize,
}

#[derive(Debug)]
pub(super) struct PartialArgument {
    pub(super) name: String,
    pub(super) value: BytesMut,
    pub(super) want: usize,
}

#[derive(Debug)]
pub(super) enum AnswerState {
    /// Open; `tail` is the last chunk, held until we know whether it ends the answer.
    Open { tail: Option<Bytes> },
    /// The last frame is queued.
    Queued,
    /// The last frame was transmitted.
    Sent,
}

#[derive(Debug)]
pub(super) struct Request {
    pub(super) arrival: u64,
    pub(super) phase: Phase,
    pub(super) answer: AnswerState,
    /// Whether this answer's bytes go through the stream's encoding.
    pub(super) encode: Encode,
    /// Argument bytes it holds until answered.
    pub(super) arg_bytes: usize,
}

impl Request {
    pub(super) fn is_receiving(&self) -> bool {
        matches!(
            self.phase,
            Phase::Arguments(_) | Phase::Data | Phase::Discarding
        )
    }

    pub(super) fn is_started(&self) -> bool {
        !matches!(self.phase, Phase::Arguments(_))
    }
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) request_id: RequestId,
    pub(super) body: FrameBody,
    pub(super) encode: Encode,
    /// This frame ends the request's answer.
    pub(super) last: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands of records wait in a busy message: each must stay small
    /// (about 190 bytes with the argument phase inline).
    #[test]
    fn a_request_record_is_small() {
        assert!(
            std::mem::size_of::<Request>() <= 80,
            "{} bytes",
            std::mem::size_of::<Request>()
        );
    }
}
