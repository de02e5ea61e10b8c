//! The 8-byte frame header (PROTOCOL.md §2) and its typed fields.

use std::fmt;

use bytes::BufMut;

use super::flags::flags;
use crate::error::FrameError;

/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// Largest payload length the 24-bit length field can express.
pub const MAX_LENGTH_FIELD: usize = 0x00FF_FFFF;

/// Default maximum frame size (payload bytes) of a receiver (§2).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 65_535;

/// Payload size senders aim for: the SHOULD of §2.
pub const PREFERRED_PAYLOAD_SIZE: usize = 32_768;

/// A request id (16 bits on the wire). Id 0 belongs to the connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId(pub u16);

impl RequestId {
    /// The id of frames that belong to no request (stream settings,
    /// connection-level errors).
    pub const CONNECTION: RequestId = RequestId(0);
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A stream id (8 bits). Odd ids are opened by the client, even by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId(pub u8);

impl StreamId {
    /// Whether a client opens this stream (odd id).
    pub const fn is_client(self) -> bool {
        self.0 % 2 == 1
    }

    /// Whether a server opens this stream (even id).
    pub const fn is_server(self) -> bool {
        !self.is_client()
    }

    /// Whether `side` may send on this stream.
    pub const fn is_sent_by(self, side: Side) -> bool {
        match side {
            Side::Client => self.is_client(),
            Side::Server => self.is_server(),
        }
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

/// The two ends of a framegate conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Sends requests.
    Client,
    /// Answers them.
    Server,
}

flags! {
    /// Stream flags, byte 6 of the header (§3).
    StreamFlags {
        /// First frame of the stream.
        const BEGIN = 0x01, "begin";
        /// Last frame of the stream.
        const END = 0x02, "end";
        /// The payload is encoded with the stream's content encoding.
        const ENCODED = 0x04, "encoded";
    }
}

/// The frame type, high nibble of byte 7 (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// 0x1, client.
    CommandName = 0x1,
    /// 0x2, client.
    CommandArgument = 0x2,
    /// 0x3, client.
    CommandData = 0x3,
    /// 0x4, server.
    BytesResponse = 0x4,
    /// 0x5, server.
    ErrorResponse = 0x5,
    /// 0x6, server.
    TextOutput = 0x6,
    /// 0x7, server.
    Progress = 0x7,
    /// 0x8, both.
    StreamSettings = 0x8,
}

impl FrameType {
    /// The type for a type nibble.
    pub const fn from_nibble(nibble: u8) -> Option<FrameType> {
        Some(match nibble {
            0x1 => FrameType::CommandName,
            0x2 => FrameType::CommandArgument,
            0x3 => FrameType::CommandData,
            0x4 => FrameType::BytesResponse,
            0x5 => FrameType::ErrorResponse,
            0x6 => FrameType::TextOutput,
            0x7 => FrameType::Progress,
            0x8 => FrameType::StreamSettings,
            _ => return None,
        })
    }

    /// The type nibble.
    pub const fn nibble(self) -> u8 {
        self as u8
    }

    /// The name PROTOCOL.md uses.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::CommandName => "command-name",
            FrameType::CommandArgument => "command-argument",
            FrameType::CommandData => "command-data",
            FrameType::BytesResponse => "bytes-response",
            FrameType::ErrorResponse => "error-response",
            FrameType::TextOutput => "text-output",
            FrameType::Progress => "progress",
            FrameType::StreamSettings => "stream-settings",
        }
    }

    /// Whether `side` may send frames of this type.
    pub const fn is_sent_by(self, side: Side) -> bool {
        match self {
            FrameType::CommandName | FrameType::CommandArgument | FrameType::CommandData => {
                matches!(side, Side::Client)
            }
            FrameType::BytesResponse
            | FrameType::ErrorResponse
            | FrameType::TextOutput
            | FrameType::Progress => matches!(side, Side::Server),
            FrameType::StreamSettings => true,
        }
    }

    /// The flag bits defined for this type.
    pub const fn defined_flags(self) -> u8 {
        use super::*;
        match self {
            FrameType::CommandName => CommandNameFlags::DEFINED,
            FrameType::CommandArgument => CommandArgumentFlags::DEFINED,
            FrameType::CommandData => CommandDataFlags::DEFINED,
            FrameType::BytesResponse => BytesResponseFlags::DEFINED,
            FrameType::ErrorResponse => ErrorResponseFlags::DEFINED,
            FrameType::TextOutput | FrameType::Progress | FrameType::StreamSettings => 0,
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length in bytes (as on the wire, after content encoding).
    pub length: usize,
    /// Request id.
    pub request_id: RequestId,
    /// Stream id.
    pub stream_id: StreamId,
    /// Stream flags.
    pub stream_flags: StreamFlags,
    /// Frame type.
    pub frame_type: FrameType,
    /// Type flags (validated against the type: only defined bits).
    pub flags: u8,
}

impl Head {
    /// Parses a header. Checks the type, the type's flags and the stream
    /// flags; the length is checked by the caller against its maximum.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Head, FrameError> {
        let [l0, l1, l2, r0, r1, stream_id, stream_flags, type_flags] = *bytes;
        let length = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
        let stream_flags = StreamFlags::from_bits(stream_flags)
            .ok_or(FrameError::UndefinedStreamFlags(stream_flags))?;
        let frame_type = FrameType::from_nibble(type_flags >> 4)
            .ok_or(FrameError::UnknownType(type_flags >> 4))?;
        let flags = type_flags & 0x0f;
        if flags & !frame_type.defined_flags() != 0 {
            return Err(FrameError::UndefinedFlags {
                frame_type: frame_type.name(),
                flags,
            });
        }
        Ok(Head {
            length,
            request_id: RequestId(u16::from_le_bytes([r0, r1])),
            stream_id: StreamId(stream_id),
            stream_flags,
            frame_type,
            flags,
        })
    }

    /// Writes the header. `length` must fit in 24 bits (checked by the
    /// frame encoder before calling).
    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        debug_assert!(self.length <= MAX_LENGTH_FIELD);
        let len = self.length as u32;
        dst.put_slice(&len.to_le_bytes()[..3]);
        dst.put_u16_le(self.request_id.0);
        dst.put_u8(self.stream_id.0);
        dst.put_u8(self.stream_flags.bits());
        dst.put_u8(self.frame_type.nibble() << 4 | (self.flags & 0x0f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_uses_full_third_byte() {
        // Mercurial 2018 multiplied byte 2 by 16384; the right factor is 65536.
        let head = Head::parse(&[0x01, 0x02, 0x03, 1, 0, 1, 0, 0x40]).unwrap();
        assert_eq!(head.length, 0x01 + 0x02 * 256 + 0x03 * 65536);
    }

    #[test]
    fn rejects_unknown_type_and_flags() {
        assert_eq!(
            Head::parse(&[0, 0, 0, 1, 0, 1, 0, 0x90]),
            Err(FrameError::UnknownType(9))
        );
        assert_eq!(
            Head::parse(&[0, 0, 0, 1, 0, 1, 0, 0x00]),
            Err(FrameError::UnknownType(0))
        );
        assert!(matches!(
            Head::parse(&[0, 0, 0, 1, 0, 1, 0, 0x18]),
            Err(FrameError::UndefinedFlags { .. })
        ));
        assert!(matches!(
            Head::parse(&[0, 0, 0, 1, 0, 1, 0, 0x61]),
            Err(FrameError::UndefinedFlags { .. })
        ));
        assert_eq!(
            Head::parse(&[0, 0, 0, 1, 0, 1, 0x08, 0x11]),
            Err(FrameError::UndefinedStreamFlags(0x08))
        );
    }

    #[test]
    fn flags_debug_names() {
        let flags = StreamFlags::BEGIN | StreamFlags::ENCODED;
        assert_eq!(format!("{flags:?}"), "begin | encoded");
        assert_eq!(format!("{:?}", StreamFlags::empty()), "(empty)");
    }
}
