//! `command-data` (type 0x3, client): a piece of a request's input stream.

use bytes::Bytes;

use super::flags::flags;
use crate::error::{ErrorCode, ProtocolError};

flags! {
    /// Flags of a `command-data` frame.
    CommandDataFlags {
        /// More data frames follow.
        const CONTINUATION = 0x1, "continuation";
        /// The last data frame of the request.
        const EOS = 0x2, "eos";
    }
}

/// A `command-data` frame.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandData {
    /// Flags.
    pub flags: CommandDataFlags,
    /// The data bytes.
    pub payload: Bytes,
}

impl CommandData {
    /// Whether this is the last data frame; errors unless exactly one of
    /// `continuation` and `eos` is set.
    pub fn is_last(&self) -> Result<bool, ProtocolError> {
        match (
            self.flags.contains(CommandDataFlags::CONTINUATION),
            self.flags.contains(CommandDataFlags::EOS),
        ) {
            (true, false) => Ok(false),
            (false, true) => Ok(true),
            _ => Err(ProtocolError::new(
                ErrorCode::BAD_FLAGS,
                format!(
                    "command-data flags {:?}: need exactly one of continuation, eos",
                    self.flags
                ),
            )),
        }
    }
}

impl std::fmt::Debug for CommandData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandData")
            .field("flags", &self.flags)
            .field("len", &self.payload.len())
            .finish()
    }
}
