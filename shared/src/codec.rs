//! The resumable frame decoder and, behind the `codec` feature, the
//! tokio-util adapter drivers use.

use bytes::{Buf, BytesMut};

use crate::error::FrameError;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, Frame, HEADER_LEN, Head};

/// Decodes frames from a growing buffer, resuming where it stopped.
///
/// The declared payload length is checked against the maximum as soon as the
/// header is in, *before* any byte of the payload is read or room for it is
/// reserved; payloads are split off the input without copying.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: usize,
    state: DecodeState,
}

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    Head,
    Payload(Head),
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that rejects payloads longer than `max_frame_size`.
    pub fn new(max_frame_size: usize) -> Self {
        FrameDecoder {
            max_frame_size,
            state: DecodeState::Head,
        }
    }

    /// The largest payload accepted.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// The next frame, `Ok(None)` if more input is needed, or an error. After
    /// an error the input is unusable: stop decoding.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let head = match self.state {
            DecodeState::Payload(head) => head,
            DecodeState::Head => {
                let Some(bytes) = src.get(..HEADER_LEN) else {
                    src.reserve(HEADER_LEN - src.len());
                    return Ok(None);
                };
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(bytes);
                let head = Head::parse(&raw)?;
                if head.length > self.max_frame_size {
                    return Err(FrameError::TooLarge {
                        length: head.length,
                        max: self.max_frame_size,
                    });
                }
                src.advance(HEADER_LEN);
                self.state = DecodeState::Payload(head);
                head
            }
        };
        if src.len() < head.length {
            // Bounded: head.length <= max_frame_size was checked above.
            src.reserve(head.length - src.len());
            return Ok(None);
        }
        let payload = src.split_to(head.length).freeze();
        self.state = DecodeState::Head;
        Frame::load(&head, payload).map(Some)
    }

    /// Like [`decode`](Self::decode) at end of input: leftover bytes that do
    /// not make a frame are `truncated-frame`.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => match self.state {
                DecodeState::Head if src.is_empty() => Ok(None),
                DecodeState::Head => Err(FrameError::Truncated {
                    buffered: src.len(),
                }),
                DecodeState::Payload(_) => Err(FrameError::Truncated {
                    buffered: HEADER_LEN + src.len(),
                }),
            },
        }
    }

    /// Whether the decoder is between frames.
    pub fn is_between_frames(&self) -> bool {
        matches!(self.state, DecodeState::Head)
    }
}

/// Decodes every frame of a complete input (tests, tools). Errors include
/// `truncated-frame` for leftovers.
pub fn decode_all(input: &[u8], max_frame_size: usize) -> Result<Vec<Frame>, FrameError> {
    let mut decoder = FrameDecoder::new(max_frame_size);
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Encodes frames into one buffer.
pub fn encode_all<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Result<BytesMut, FrameError> {
    let mut buf = BytesMut::new();
    for frame in frames {
        frame.encode(&mut buf)?;
    }
    Ok(buf)
}

#[cfg(feature = "codec")]
mod tokio_codec {
    use super::*;

    /// Error of the tokio-util adapter: I/O or a bad frame.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum CodecError {
        /// The underlying reader or writer failed.
        #[error(transparent)]
        Io(#[from] std::io::Error),
        /// The input broke the frame format.
        #[error(transparent)]
        Frame(#[from] FrameError),
    }

    impl tokio_util::codec::Decoder for FrameDecoder {
        type Item = Frame;
        type Error = CodecError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
            Ok(FrameDecoder::decode(self, src)?)
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
            Ok(FrameDecoder::decode_eof(self, src)?)
        }
    }

    /// Writes frames for a `FramedWrite`.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct FrameEncoder;

    impl tokio_util::codec::Encoder<Frame> for FrameEncoder {
        type Error = CodecError;

        fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
            dst.reserve(frame.wire_len());
            Ok(frame.encode(dst)?)
        }
    }
}

#[cfg(feature = "codec")]
pub use tokio_codec::{CodecError, FrameEncoder};
