//! Streams (PROTOCOL.md §3) and their content encoding (§5).
//!
//! [`InboundStreams`] applies the stream rules to frames from the peer and
//! decodes `encoded` payloads, one decompressor per stream, with the decoded
//! size bounded by the receiver's maximum frame size. [`OutboundStream`]
//! stamps stream ids and flags on outgoing frames and encodes payloads with
//! ONE compressor for the whole stream, flushed after every frame.
//!
//! A receiver that serves strangers also bounds what decoding costs it: the
//! decoders open at once (per message, and server-wide through a
//! [`SharedBudget`]) and how far encoded input may inflate
//! ([`MAX_DECODE_RATIO`] past [`DECODE_ALLOWANCE`]).

use rustc_hash::FxHashMap as HashMap;
use std::fmt;

use bytes::Bytes;
use zstd::stream::raw::{CParameter, DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::budget::{Permit, SharedBudget};
use crate::error::{ErrorCode, ProtocolError};
use crate::frame::{Frame, FrameBody, RequestId, Side, StreamFlags, StreamId, StreamSettings};
use crate::gain::Gain;

/// A content-encoding profile (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// No encoding.
    #[default]
    Identity,
    /// Zstandard, window at most 8 MiB.
    Zstd8Mb,
}

impl Encoding {
    /// Every profile this crate supports, most preferred first.
    pub const SUPPORTED: &'static [Encoding] = &[Encoding::Zstd8Mb, Encoding::Identity];

    /// The profile's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Zstd8Mb => "zstd-8mb",
        }
    }

    /// The profile for a name.
    pub fn from_name(name: &[u8]) -> Option<Encoding> {
        Encoding::SUPPORTED
            .iter()
            .copied()
            .find(|e| e.name().as_bytes() == name)
    }

    /// Picks the first supported profile of a client's list (`"zstd-8mb,
    /// identity"`, as in `Framegate-Accept-Encoding` or the preamble), else
    /// identity.
    pub fn negotiate(accepted: &str) -> Encoding {
        accepted
            .split(',')
            .map(str::trim)
            .find_map(|name| Encoding::from_name(name.as_bytes()))
            .unwrap_or(Encoding::Identity)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest window a `zstd-8mb` decoder accepts: 2^23 = 8 MiB.
pub const ZSTD_8MB_WINDOW_LOG_MAX: u32 = 23;

/// Window our compressor uses (2 MiB): within the profile, and modest in
/// memory per stream.
pub const ZSTD_WINDOW_LOG: u32 = 21;

/// Compression level of outgoing `zstd-8mb` streams.
pub const ZSTD_LEVEL: i32 = 3;

/// Decoded bytes a bounded receiver (a server) produces from encoded
/// frames of one message or connection before [`MAX_DECODE_RATIO`]
/// applies: 16 MiB.
pub const DECODE_ALLOWANCE: u64 = 16 << 20;

/// With the bound on ([`InboundStreams::with_decode_ratio_bound`]), the
/// decoded bytes of a message's or connection's encoded frames may be at
/// most `max(DECODE_ALLOWANCE, MAX_DECODE_RATIO × encoded payload bytes)`;
/// more is the protocol error `bad-encoding`.
///
/// Decoding costs the receiver time per *decoded* byte, the sender pays per
/// *encoded* byte: a zstd RLE block of 4 bytes decodes to a whole frame, so
/// without a bound a client makes the server copy thousands of bytes for
/// each one it sends (one client made a server decode 107 GiB). Through the
/// framegate encoder (32 KiB frames, each flushed) real content inflates far
/// less: Rust source 4 times, a binary 3, a server log 31. Content that
/// compresses better still (a zero-filled or highly repetitive file: 1,000
/// to 16,000 times) passes up to the allowance; past it, such data must go
/// unencoded, which §5 allows on any stream. Apache's `mod_deflate` bounds
/// request bodies the same way (`DeflateInflateRatioLimit`, 200).
pub const MAX_DECODE_RATIO: u64 = 64;

struct InboundStream {
    /// `false`: no `stream-settings`, or identity.
    zstd: bool,
    /// Made at the stream's first encoded frame, not at its settings: a
    /// stream that declares zstd but sends only raw frames (a small
    /// message's, see [`crate::gain`]) never pays for one (making it was a
    /// tenth of a client's CPU time per `hello`).
    decoder: Option<Decoder<'static>>,
    /// The decoder's unit of the server-wide decoder budget, if any.
    _slot: Option<Permit>,
}

/// The receiving side of the peer's streams.
pub struct InboundStreams {
    peer: Side,
    max_frame_size: usize,
    max_encoded: usize,
    decoder_budget: Option<SharedBudget>,
    bound_ratio: bool,
    /// Payload bytes of `encoded` frames received, and what they decoded to.
    encoded_bytes: u64,
    decoded_bytes: u64,
    streams: HashMap<StreamId, InboundStream>,
    scratch: Vec<u8>,
}

impl fmt::Debug for InboundStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundStreams")
            .field("peer", &self.peer)
            .field("open", &self.streams.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn bad_stream(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BAD_STREAM, message)
}

fn bad_encoding(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BAD_ENCODING, message)
}

impl InboundStreams {
    /// Streams sent by `peer`; decoded payloads may be at most
    /// `max_frame_size` bytes.
    pub fn new(peer: Side, max_frame_size: usize) -> Self {
        InboundStreams {
            peer,
            max_frame_size,
            max_encoded: usize::MAX,
            decoder_budget: None,
            bound_ratio: false,
            encoded_bytes: 0,
            decoded_bytes: 0,
            streams: HashMap::default(),
            scratch: Vec::new(),
        }
    }

    /// At most `max` encoded streams open at once (each holds a decoder
    /// whose window may reach 8 MiB); one more is a protocol error
    /// (`bad-stream`).
    #[must_use]
    pub fn with_max_encoded(mut self, max: usize) -> Self {
        self.max_encoded = max;
        self
    }

    /// Each decoder also takes one unit of `budget`, shared with other
    /// receivers (server-wide), and gives it back when its stream ends or
    /// these streams are dropped or [closed](Self::close_all). With none
    /// left, opening an encoded stream is the protocol error
    /// `too-many-requests`: the peer did nothing wrong, the server is busy,
    /// and the same message may succeed later or on an identity stream.
    #[must_use]
    pub fn with_decoder_budget(mut self, budget: Option<SharedBudget>) -> Self {
        self.decoder_budget = budget;
        self
    }

    /// Bounds how far encoded frames may inflate, over everything these
    /// streams receive: see [`MAX_DECODE_RATIO`].
    #[must_use]
    pub fn with_decode_ratio_bound(mut self) -> Self {
        self.bound_ratio = true;
        self
    }

    /// Number of open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Payload bytes of `encoded` frames received so far (as on the wire).
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded_bytes
    }

    /// Bytes the `encoded` frames received so far decoded to.
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded_bytes
    }

    /// Closes every stream and drops its decoder (giving back its budget
    /// unit): for a receiver that will take no more input.
    pub fn close_all(&mut self) {
        self.streams.clear();
        self.scratch = Vec::new();
    }

    /// Applies the stream rules to a frame from the peer. Returns the frame
    /// with its payload decoded and `encoded` cleared, or `None` for a
    /// `stream-settings` frame (consumed here).
    pub fn receive(&mut self, mut frame: Frame) -> Result<Option<Frame>, ProtocolError> {
        let id = frame.stream_id;
        if !id.is_sent_by(self.peer) {
            return Err(bad_stream(format!(
                "stream {} has the wrong parity for the {:?} side",
                id.0, self.peer
            )));
        }
        let flags = frame.stream_flags;
        let settings = match &frame.body {
            FrameBody::StreamSettings(s) => Some(s),
            _ => None,
        };
        if flags.contains(StreamFlags::BEGIN) {
            if self.streams.contains_key(&id) {
                return Err(bad_stream(format!(
                    "begin on stream {} which is open",
                    id.0
                )));
            }
            let mut slot = None;
            let zstd = match settings {
                None => false,
                Some(settings) => {
                    if frame.request_id != RequestId::CONNECTION {
                        return Err(bad_stream("stream-settings must have request id 0"));
                    }
                    if flags.contains(StreamFlags::ENCODED) {
                        return Err(bad_stream("stream-settings cannot be encoded"));
                    }
                    let profile = settings.profile()?;
                    match Encoding::from_name(profile) {
                        Some(Encoding::Identity) => false,
                        Some(Encoding::Zstd8Mb) => {
                            let open = self.streams.values().filter(|s| s.zstd).count();
                            if open >= self.max_encoded {
                                return Err(bad_stream(format!(
                                    "more than {} encoded streams open at once",
                                    self.max_encoded
                                )));
                            }
                            slot = self.take_decoder_slot()?;
                            true
                        }
                        None => {
                            return Err(ProtocolError::new(
                                ErrorCode::UNSUPPORTED_ENCODING,
                                format!(
                                    "unsupported content encoding {:?}",
                                    String::from_utf8_lossy(profile)
                                ),
                            ));
                        }
                    }
                }
            };
            self.streams.insert(
                id,
                InboundStream {
                    zstd,
                    decoder: None,
                    _slot: slot,
                },
            );
        } else if !self.streams.contains_key(&id) {
            return Err(bad_stream(format!(
                "frame on closed stream {} without begin",
                id.0
            )));
        } else if settings.is_some() {
            return Err(bad_stream(
                "stream-settings must be the first frame of its stream",
            ));
        }

        let result = if settings.is_some() {
            None
        } else {
            if flags.contains(StreamFlags::ENCODED) {
                let max = self.max_frame_size;
                let stream = self.streams.get_mut(&id).filter(|s| s.zstd);
                let Some(stream) = stream else {
                    return Err(bad_stream(format!(
                        "encoded frame on stream {} whose encoding is identity",
                        id.0
                    )));
                };
                let decoder = match &mut stream.decoder {
                    Some(decoder) => decoder,
                    none => none.insert(new_decoder()?),
                };
                let input = frame.body.payload();
                let decoded = decompress(decoder, &mut self.scratch, input, max)?;
                self.encoded_bytes += input.len() as u64;
                self.decoded_bytes += decoded.len() as u64;
                self.check_ratio()?;
                *frame.body.payload_mut() = decoded;
                frame.stream_flags = flags.difference(StreamFlags::ENCODED);
            }
            Some(frame)
        };
        if flags.contains(StreamFlags::END) {
            self.streams.remove(&id);
        }
        Ok(result)
    }
}

impl InboundStreams {
    fn take_decoder_slot(&self) -> Result<Option<Permit>, ProtocolError> {
        let Some(budget) = &self.decoder_budget else {
            return Ok(None);
        };
        match budget.try_take(1) {
            Some(permit) => Ok(Some(permit)),
            None => Err(ProtocolError::new(
                ErrorCode::TOO_MANY_REQUESTS,
                format!(
                    "the server is decoding too many compressed streams (at most {} over \
                     all its clients, fewer while its memory budget is in use): retry later, or send identity (no stream-settings, or \
                     `identity`)",
                    budget.limit()
                ),
            )),
        }
    }

    fn check_ratio(&self) -> Result<(), ProtocolError> {
        if !self.bound_ratio {
            return Ok(());
        }
        let allowed = DECODE_ALLOWANCE.max(self.encoded_bytes.saturating_mul(MAX_DECODE_RATIO));
        if self.decoded_bytes <= allowed {
            return Ok(());
        }
        Err(bad_encoding(format!(
            "encoded frames decoded to {} bytes from {} bytes: past {} MiB, at most {} \
             times their encoded size is decoded (send data that compresses this well \
             unencoded)",
            self.decoded_bytes,
            self.encoded_bytes,
            DECODE_ALLOWANCE >> 20,
            MAX_DECODE_RATIO
        )))
    }
}

fn new_decoder() -> Result<Decoder<'static>, ProtocolError> {
    let mut decoder = Decoder::new().map_err(|e| bad_encoding(format!("zstd: {e}")))?;
    decoder
        .set_parameter(DParameter::WindowLogMax(ZSTD_8MB_WINDOW_LOG_MAX))
        .map_err(|e| bad_encoding(format!("zstd: {e}")))?;
    Ok(decoder)
}

/// Decodes one frame's payload, refusing to produce more than `max` bytes.
fn decompress(
    decoder: &mut Decoder<'static>,
    scratch: &mut Vec<u8>,
    input: &[u8],
    max: usize,
) -> Result<Bytes, ProtocolError> {
    // One byte more than allowed: reaching it proves the payload too large,
    // and a buffer that is not full means the decoder flushed all it could.
    let cap = max.saturating_add(1);
    if scratch.len() < cap {
        scratch.resize(cap, 0);
    }
    let too_large = || {
        bad_encoding(format!(
            "decoded payload exceeds the maximum frame size of {max} bytes"
        ))
    };
    let mut inbuf = InBuffer::around(input);
    let mut written = 0usize;
    loop {
        let consumed_before = inbuf.pos();
        let window = scratch.get_mut(written..cap).ok_or_else(too_large)?;
        let mut outbuf = OutBuffer::around(window);
        decoder
            .run(&mut inbuf, &mut outbuf)
            .map_err(|e| bad_encoding(format!("zstd: {e}")))?;
        let produced = outbuf.pos();
        written += produced;
        if written > max {
            return Err(too_large());
        }
        if inbuf.pos() == input.len() {
            break;
        }
        if produced == 0 && inbuf.pos() == consumed_before {
            return Err(bad_encoding("zstd decoder made no progress"));
        }
    }
    Ok(Bytes::copy_from_slice(
        scratch.get(..written).unwrap_or_default(),
    ))
}

/// Whether an outbound stream's compressor exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompressorState {
    /// No encoding declared (identity), or not begun.
    Identity,
    /// zstd declared; no payload encoded yet.
    NotYet,
    /// Made and in use.
    Made,
    /// Failed once: the rest of the stream goes out unencoded.
    Failed,
}

/// Whether a payload is compressed on a stream with an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// Sent as it is.
    No,
    /// Compressed while compressing pays on this stream ([`crate::gain`]).
    Auto,
    /// Compressed: the sender judged the data on a sample of its own (a
    /// large file answer). Neither counted nor skipped by the stream's
    /// gain: other payloads that did not compress do not make it go raw.
    Always,
}

/// The sending side of one stream.
pub struct OutboundStream {
    id: StreamId,
    encoding: Encoding,
    begun: bool,
    compressor_state: CompressorState,
    compressor: Option<Encoder<'static>>,
    scratch: Vec<u8>,
    /// Whether encoding still pays ([`crate::gain`]).
    gain: Gain,
}

impl fmt::Debug for OutboundStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundStream")
            .field("id", &self.id)
            .field("encoding", &self.encoding)
            .field("begun", &self.begun)
            .finish()
    }
}

impl OutboundStream {
    /// A stream `id` that will use `encoding`. Nothing is sent until the
    /// first frame.
    pub fn new(id: StreamId, encoding: Encoding) -> Self {
        OutboundStream {
            id,
            encoding,
            begun: false,
            compressor_state: CompressorState::Identity,
            compressor: None,
            scratch: Vec::new(),
            gain: Gain::default(),
        }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The stream's encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Turns a body into wire frames, appended to `out`: a `stream-settings`
    /// frame first if the stream is zstd and new, then the frame itself,
    /// encoded if `encode` and the stream has an encoding. Empty payloads
    /// are never encoded (a keepalive stays a keepalive).
    pub fn prepare(
        &mut self,
        request_id: RequestId,
        body: FrameBody,
        encode: bool,
        out: &mut impl Extend<Frame>,
    ) {
        let mode = if encode { Encode::Auto } else { Encode::No };
        self.prepare_as(request_id, body, mode, out);
    }

    /// [`OutboundStream::prepare`], with the payload's [`Encode`] mode.
    pub fn prepare_as(
        &mut self,
        request_id: RequestId,
        mut body: FrameBody,
        mode: Encode,
        out: &mut impl Extend<Frame>,
    ) {
        let len = body.payload().len();
        let encode = len > 0
            && self.encoding != Encoding::Identity
            && match mode {
                Encode::No => false,
                // Still paying on this stream ([`crate::gain`]).
                Encode::Auto => self.gain.should_try(len),
                Encode::Always => true,
            };
        let mut stream_flags = StreamFlags::empty();
        if !self.begun {
            self.begun = true;
            match self.encoding {
                Encoding::Identity => stream_flags = StreamFlags::BEGIN,
                Encoding::Zstd8Mb => {
                    out.extend([Frame {
                        request_id: RequestId::CONNECTION,
                        stream_id: self.id,
                        stream_flags: StreamFlags::BEGIN,
                        body: FrameBody::StreamSettings(StreamSettings::new(self.encoding.name())),
                    }]);
                    // The compressor (a few MiB) is made when a payload is
                    // first encoded: streams that only carry raw frames
                    // never pay for it.
                    self.compressor_state = CompressorState::NotYet;
                }
            }
        }
        if encode && !body.payload().is_empty() && self.compressor_state == CompressorState::NotYet
        {
            self.compressor = new_compressor();
            self.compressor_state = if self.compressor.is_some() {
                CompressorState::Made
            } else {
                CompressorState::Failed
            };
        }
        if encode
            && !body.payload().is_empty()
            && let Some(compressor) = self.compressor.as_mut()
        {
            match compress(compressor, &mut self.scratch, body.payload()) {
                Some(encoded) => {
                    if mode == Encode::Auto {
                        self.gain.record(len, encoded.len());
                    }
                    *body.payload_mut() = encoded;
                    stream_flags = stream_flags.union(StreamFlags::ENCODED);
                }
                // A compressor that failed is in an unknown state: the
                // rest of the stream goes out unencoded, which is legal.
                None => {
                    self.compressor = None;
                    self.compressor_state = CompressorState::Failed;
                }
            }
        }
        out.extend([Frame {
            request_id,
            stream_id: self.id,
            stream_flags,
            body,
        }]);
    }
}

fn new_compressor() -> Option<Encoder<'static>> {
    let mut encoder = Encoder::new(ZSTD_LEVEL).ok()?;
    encoder
        .set_parameter(CParameter::WindowLog(ZSTD_WINDOW_LOG))
        .ok()?;
    Some(encoder)
}

/// Compresses one payload and flushes, so the output decodes on its own given
/// the stream's earlier frames.
fn compress(encoder: &mut Encoder<'static>, scratch: &mut Vec<u8>, input: &[u8]) -> Option<Bytes> {
    scratch.clear();
    let bound = zstd::zstd_safe::compress_bound(input.len()) + 64;
    scratch.resize(bound, 0);
    let mut inbuf = InBuffer::around(input);
    let mut written = 0usize;
    while inbuf.pos() < input.len() {
        let mut outbuf = OutBuffer::around(scratch.get_mut(written..)?);
        encoder.run(&mut inbuf, &mut outbuf).ok()?;
        written += outbuf.pos();
        if written == scratch.len() {
            scratch.resize(scratch.len() * 2, 0);
        }
    }
    loop {
        let mut outbuf = OutBuffer::around(scratch.get_mut(written..)?);
        let remaining = encoder.flush(&mut outbuf).ok()?;
        written += outbuf.pos();
        if remaining == 0 {
            break;
        }
        scratch.resize(scratch.len() * 2, 0);
    }
    Some(Bytes::copy_from_slice(scratch.get(..written)?))
}
