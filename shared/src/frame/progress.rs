//! `progress` (type 0x7, server): how far a command has come.

use bytes::Bytes;

/// A `progress` frame. The payload is CBOR (see
/// [`crate::payload::ProgressPayload`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Progress {
    /// CBOR map.
    pub payload: Bytes,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("len", &self.payload.len())
            .finish()
    }
}
