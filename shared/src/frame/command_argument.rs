//! `command-argument` (type 0x2, client): one argument, or a piece of one.
//!
//! Payload of the first frame of an argument: u16 LE name length `N`, u16 LE
//! value length `V`, the name, then the value (or its first part, with
//! `continuation`). Following frames of a continued value carry only value
//! bytes (§4.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::flags::flags;
use crate::error::{ErrorCode, ProtocolError};

flags! {
    /// Flags of a `command-argument` frame.
    CommandArgumentFlags {
        /// The value continues in the next argument frame.
        const CONTINUATION = 0x1, "continuation";
        /// This frame completes the last argument.
        const EOA = 0x2, "eoa";
    }
}

/// Length of the argument header (`N` and `V`).
pub const ARGUMENT_HEADER_LEN: usize = 4;

/// A `command-argument` frame.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandArgument {
    /// Flags.
    pub flags: CommandArgumentFlags,
    /// Header + name + value part, or (continued values) value bytes only.
    pub payload: Bytes,
}

/// The parsed start of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentStart {
    /// The argument's name.
    pub name: String,
    /// The declared full value length `V`.
    pub value_len: usize,
    /// The value bytes this frame carries.
    pub value_part: Bytes,
}

impl CommandArgument {
    /// Builds the payload of an argument's first frame.
    pub fn start_payload(name: &str, value_len: u16, value_part: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(ARGUMENT_HEADER_LEN + name.len() + value_part.len());
        buf.put_u16_le(name.len() as u16);
        buf.put_u16_le(value_len);
        buf.put_slice(name.as_bytes());
        buf.put_slice(value_part);
        buf.freeze()
    }

    /// Parses this frame as the first frame of an argument.
    pub fn parse_start(&self) -> Result<ArgumentStart, ProtocolError> {
        let bad = |why: &str| ProtocolError::new(ErrorCode::BAD_ARGUMENT_FRAME, why.to_string());
        let p = &self.payload;
        let (Some(&[n0, n1]), Some(&[v0, v1])) = (p.get(0..2), p.get(2..4)) else {
            return Err(bad("argument frame shorter than its 4-byte header"));
        };
        let name_len = usize::from(u16::from_le_bytes([n0, n1]));
        let value_len = usize::from(u16::from_le_bytes([v0, v1]));
        let name_end = ARGUMENT_HEADER_LEN + name_len;
        let name = p
            .get(ARGUMENT_HEADER_LEN..name_end)
            .ok_or_else(|| bad("the first frame of an argument must hold the whole name"))?;
        let name = super::check_name(name)
            .map_err(|why| bad(&format!("bad argument name: {why}")))?
            .to_string();
        let value_part = p.slice(name_end..);
        if value_part.len() > value_len {
            return Err(bad("argument value longer than its declared length"));
        }
        Ok(ArgumentStart {
            name,
            value_len,
            value_part,
        })
    }
}

impl std::fmt::Debug for CommandArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandArgument")
            .field("flags", &self.flags)
            .field("len", &self.payload.len())
            .finish()
    }
}
