//! `stream-settings` (type 0x8, both): declares a stream's content encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ErrorCode, ProtocolError};

/// A `stream-settings` frame: u8 profile-name length, the name, then
/// profile-specific bytes (§5).
#[derive(Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The raw payload.
    pub payload: Bytes,
}

impl StreamSettings {
    /// Settings naming `profile`, with no profile bytes.
    pub fn new(profile: &str) -> Self {
        let mut buf = BytesMut::with_capacity(1 + profile.len());
        buf.put_u8(profile.len() as u8);
        buf.put_slice(profile.as_bytes());
        StreamSettings {
            payload: buf.freeze(),
        }
    }

    /// The profile name.
    pub fn profile(&self) -> Result<&[u8], ProtocolError> {
        let len = usize::from(*self.payload.first().ok_or_else(|| {
            ProtocolError::new(ErrorCode::BAD_STREAM, "empty stream-settings payload")
        })?);
        self.payload.get(1..1 + len).ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::BAD_STREAM,
                "stream-settings profile name is cut off",
            )
        })
    }
}

impl std::fmt::Debug for StreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let profile = self.profile().map(String::from_utf8_lossy);
        f.debug_struct("StreamSettings")
            .field("profile", &profile.ok())
            .finish()
    }
}
