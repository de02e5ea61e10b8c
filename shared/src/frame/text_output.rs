//! `text-output` (type 0x6, server): messages for people; empty = keepalive.

use bytes::Bytes;

/// A `text-output` frame. The payload holds atoms (see
/// [`crate::payload::TextAtom`]); an empty payload is a keepalive (§7.5).
#[derive(Clone, PartialEq, Eq)]
pub struct TextOutput {
    /// Encoded atoms.
    pub payload: Bytes,
}

impl TextOutput {
    /// Whether this is a keepalive.
    pub fn is_keepalive(&self) -> bool {
        self.payload.is_empty()
    }
}

impl std::fmt::Debug for TextOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextOutput")
            .field("len", &self.payload.len())
            .finish()
    }
}
