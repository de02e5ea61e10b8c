//! Frames as typed values: the header in [`head`], one module per frame type.
//!
//! A [`Frame`] is what travels on the wire: a request id, a stream id, stream
//! flags and a [`FrameBody`]. Bodies hold their payload as a zero-copy
//! [`Bytes`] slice of the input. This module knows the layout; what the
//! frames *mean* (streams, requests) is up to [`stream`](super::stream) and the
//! reactors.

mod bytes_response;
mod command_argument;
mod command_data;
mod command_name;
mod error_response;
mod flags;
pub mod head;
mod progress;
mod stream_settings;
mod text_output;

use bytes::{BufMut, Bytes};

pub use bytes_response::{BytesResponse, BytesResponseFlags};
pub use command_argument::{
    ARGUMENT_HEADER_LEN, ArgumentStart, CommandArgument, CommandArgumentFlags,
};
pub use command_data::{CommandData, CommandDataFlags};
pub use command_name::{CommandName, CommandNameFlags, MAX_NAME_LEN, check_name};
pub use error_response::{ErrorKind, ErrorResponse, ErrorResponseFlags};
pub use head::{
    DEFAULT_MAX_FRAME_SIZE, FrameType, HEADER_LEN, Head, MAX_LENGTH_FIELD, PREFERRED_PAYLOAD_SIZE,
    RequestId, Side, StreamFlags, StreamId,
};
pub use progress::Progress;
pub use stream_settings::StreamSettings;
pub use text_output::TextOutput;

use crate::error::FrameError;

/// One frame: header fields plus a typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request id (0 for connection-level frames).
    pub request_id: RequestId,
    /// Stream id.
    pub stream_id: StreamId,
    /// Stream flags.
    pub stream_flags: StreamFlags,
    /// Type, type flags and payload.
    pub body: FrameBody,
}

/// The type-specific part of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FrameBody {
    CommandName(CommandName),
    CommandArgument(CommandArgument),
    CommandData(CommandData),
    BytesResponse(BytesResponse),
    ErrorResponse(ErrorResponse),
    TextOutput(TextOutput),
    Progress(Progress),
    StreamSettings(StreamSettings),
}

impl FrameBody {
    /// Builds a body from a validated header's type and flags and a payload.
    pub fn load(frame_type: FrameType, flags: u8, payload: Bytes) -> Result<FrameBody, FrameError> {
        let undefined = || FrameError::UndefinedFlags {
            frame_type: frame_type.name(),
            flags,
        };
        Ok(match frame_type {
            FrameType::CommandName => FrameBody::CommandName(CommandName {
                flags: CommandNameFlags::from_bits(flags).ok_or_else(undefined)?,
                payload,
            }),
            FrameType::CommandArgument => FrameBody::CommandArgument(CommandArgument {
                flags: CommandArgumentFlags::from_bits(flags).ok_or_else(undefined)?,
                payload,
            }),
            FrameType::CommandData => FrameBody::CommandData(CommandData {
                flags: CommandDataFlags::from_bits(flags).ok_or_else(undefined)?,
                payload,
            }),
            FrameType::BytesResponse => FrameBody::BytesResponse(BytesResponse {
                flags: BytesResponseFlags::from_bits(flags).ok_or_else(undefined)?,
                payload,
            }),
            FrameType::ErrorResponse => FrameBody::ErrorResponse(ErrorResponse {
                flags: ErrorResponseFlags::from_bits(flags).ok_or_else(undefined)?,
                payload,
            }),
            FrameType::TextOutput if flags == 0 => FrameBody::TextOutput(TextOutput { payload }),
            FrameType::Progress if flags == 0 => FrameBody::Progress(Progress { payload }),
            FrameType::StreamSettings if flags == 0 => {
                FrameBody::StreamSettings(StreamSettings { payload })
            }
            FrameType::TextOutput | FrameType::Progress | FrameType::StreamSettings => {
                return Err(undefined());
            }
        })
    }

    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            FrameBody::CommandName(_) => FrameType::CommandName,
            FrameBody::CommandArgument(_) => FrameType::CommandArgument,
            FrameBody::CommandData(_) => FrameType::CommandData,
            FrameBody::BytesResponse(_) => FrameType::BytesResponse,
            FrameBody::ErrorResponse(_) => FrameType::ErrorResponse,
            FrameBody::TextOutput(_) => FrameType::TextOutput,
            FrameBody::Progress(_) => FrameType::Progress,
            FrameBody::StreamSettings(_) => FrameType::StreamSettings,
        }
    }

    /// The raw 4-bit type flags.
    pub fn flag_bits(&self) -> u8 {
        match self {
            FrameBody::CommandName(b) => b.flags.bits(),
            FrameBody::CommandArgument(b) => b.flags.bits(),
            FrameBody::CommandData(b) => b.flags.bits(),
            FrameBody::BytesResponse(b) => b.flags.bits(),
            FrameBody::ErrorResponse(b) => b.flags.bits(),
            FrameBody::TextOutput(_) | FrameBody::Progress(_) | FrameBody::StreamSettings(_) => 0,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        match self {
            FrameBody::CommandName(b) => &b.payload,
            FrameBody::CommandArgument(b) => &b.payload,
            FrameBody::CommandData(b) => &b.payload,
            FrameBody::BytesResponse(b) => &b.payload,
            FrameBody::ErrorResponse(b) => &b.payload,
            FrameBody::TextOutput(b) => &b.payload,
            FrameBody::Progress(b) => &b.payload,
            FrameBody::StreamSettings(b) => &b.payload,
        }
    }

    /// The payload, to replace (content encoding does this).
    pub fn payload_mut(&mut self) -> &mut Bytes {
        match self {
            FrameBody::CommandName(b) => &mut b.payload,
            FrameBody::CommandArgument(b) => &mut b.payload,
            FrameBody::CommandData(b) => &mut b.payload,
            FrameBody::BytesResponse(b) => &mut b.payload,
            FrameBody::ErrorResponse(b) => &mut b.payload,
            FrameBody::TextOutput(b) => &mut b.payload,
            FrameBody::Progress(b) => &mut b.payload,
            FrameBody::StreamSettings(b) => &mut b.payload,
        }
    }
}

impl Frame {
    /// Builds a frame from a parsed header and its payload.
    pub fn load(head: &Head, payload: Bytes) -> Result<Frame, FrameError> {
        Ok(Frame {
            request_id: head.request_id,
            stream_id: head.stream_id,
            stream_flags: head.stream_flags,
            body: FrameBody::load(head.frame_type, head.flags, payload)?,
        })
    }

    /// The header this frame is written with.
    pub fn head(&self) -> Head {
        Head {
            length: self.body.payload().len(),
            request_id: self.request_id,
            stream_id: self.stream_id,
            stream_flags: self.stream_flags,
            frame_type: self.body.frame_type(),
            flags: self.body.flag_bits(),
        }
    }

    /// Bytes this frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.payload().len()
    }

    /// Appends the frame to `dst`. Fails only if the payload does not fit
    /// the 24-bit length field.
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<(), FrameError> {
        let payload = self.body.payload();
        if payload.len() > MAX_LENGTH_FIELD {
            return Err(FrameError::TooLarge {
                length: payload.len(),
                max: MAX_LENGTH_FIELD,
            });
        }
        self.head().encode(dst);
        dst.put_slice(payload);
        Ok(())
    }
}
