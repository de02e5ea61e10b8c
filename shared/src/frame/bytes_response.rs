//! `bytes-response` (type 0x4, server): a piece of an answer.

use bytes::Bytes;

use super::flags::flags;

flags! {
    /// Flags of a `bytes-response` frame.
    BytesResponseFlags {
        /// More answer frames follow.
        const CONTINUATION = 0x1, "continuation";
        /// The last frame of the answer.
        const EOS = 0x2, "eos";
    }
}

/// A `bytes-response` frame.
#[derive(Clone, PartialEq, Eq)]
pub struct BytesResponse {
    /// Flags.
    pub flags: BytesResponseFlags,
    /// The answer bytes.
    pub payload: Bytes,
}

impl BytesResponse {
    /// Whether this ends the answer; `None` unless exactly one of
    /// `continuation` and `eos` is set.
    pub fn is_last(&self) -> Option<bool> {
        match (
            self.flags.contains(BytesResponseFlags::CONTINUATION),
            self.flags.contains(BytesResponseFlags::EOS),
        ) {
            (true, false) => Some(false),
            (false, true) => Some(true),
            _ => None,
        }
    }
}

impl std::fmt::Debug for BytesResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BytesResponse")
            .field("flags", &self.flags)
            .field("len", &self.payload.len())
            .finish()
    }
}
