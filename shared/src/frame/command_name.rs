//! `command-name` (type 0x1, client): starts a request.

use bytes::Bytes;

use super::flags::flags;
use crate::error::{ErrorCode, ProtocolError};

flags! {
    /// Flags of a `command-name` frame.
    CommandNameFlags {
        /// The request has neither arguments nor data: it is complete.
        const EOS = 0x1, "eos";
        /// `command-argument` frames follow.
        const HAVE_ARGS = 0x2, "have-args";
        /// `command-data` frames follow.
        const HAVE_DATA = 0x4, "have-data";
    }
}

/// Longest command or argument name (§4.1).
pub const MAX_NAME_LEN: usize = 255;

/// A `command-name` frame.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandName {
    /// Flags.
    pub flags: CommandNameFlags,
    /// The name as received (validated by [`CommandName::name`]).
    pub payload: Bytes,
}

impl CommandName {
    /// A frame naming `name` with `flags`.
    pub fn new(name: &str, flags: CommandNameFlags) -> Self {
        CommandName {
            flags,
            payload: Bytes::copy_from_slice(name.as_bytes()),
        }
    }

    /// Checks the flag combination of §4.1: `eos` alone, or one or both of
    /// `have-args` and `have-data`.
    pub fn check_flags(&self) -> Result<(), ProtocolError> {
        let f = self.flags;
        let ok = if f.contains(CommandNameFlags::EOS) {
            f == CommandNameFlags::EOS
        } else {
            !f.is_empty()
        };
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::BAD_FLAGS,
                format!("command-name flags {f:?}: need eos alone, or have-args and/or have-data"),
            ))
        }
    }

    /// The validated command name.
    pub fn name(&self) -> Result<&str, ProtocolError> {
        check_name(&self.payload).map_err(|reason| {
            ProtocolError::new(
                ErrorCode::BAD_FRAME_TYPE,
                format!("bad command name: {reason}"),
            )
        })
    }
}

impl std::fmt::Debug for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandName")
            .field("flags", &self.flags)
            .field("name", &String::from_utf8_lossy(&self.payload))
            .finish()
    }
}

/// Checks a command or argument name: 1..=255 bytes of `[a-z0-9._-]`.
pub fn check_name(name: &[u8]) -> Result<&str, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 255 bytes");
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("name has a byte outside [a-z0-9._-]");
    }
    std::str::from_utf8(name).map_err(|_| "name is not ASCII")
}
