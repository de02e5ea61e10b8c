//! The client's protocol logic as a sans-IO state machine.
//!
//! # Driver contract
//!
//! * Start requests with [`start_request`](ClientReactor::start_request) (or
//!   [`request`](ClientReactor::request) for a whole one), stream data with
//!   [`send_data`](ClientReactor::send_data), and write out what
//!   [`poll_transmit`](ClientReactor::poll_transmit) gives.
//! * Feed every response frame to [`handle_frame`](ClientReactor::handle_frame),
//!   decoder errors to [`handle_decode_error`](ClientReactor::handle_decode_error),
//!   the end of the response (HTTP) or connection to
//!   [`handle_input_ended`](ClientReactor::handle_input_ended), and drain
//!   [`poll_event`](ClientReactor::poll_event).
//!
//! A server that breaks the protocol (frames for requests never sent,
//! anything after a request's last frame, client-only frame types, broken
//! streams or payloads) makes `handle_frame` return [`PeerMisbehaved`]; the
//! reactor is then errored and every open request should be failed by the
//! driver.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{ErrorCode, FrameError, PayloadError, ProtocolError};
use crate::frame::{
    DEFAULT_MAX_FRAME_SIZE, ErrorKind, Frame, FrameBody, FrameType, PREFERRED_PAYLOAD_SIZE,
    RequestId, Side, StreamId,
};
use crate::payload::{ErrorPayload, ProgressPayload, TextAtom, decode_atoms};
use crate::request::{Arguments, RequestEncoder, RequestError, RequestIds};
use crate::stream::{Encoding, InboundStreams, OutboundStream};

/// The stream id a client sends on.
pub const CLIENT_STREAM: StreamId = StreamId(1);

/// Settings of a client reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Largest response payload accepted, also after decoding (default 65,535).
    pub max_frame_size: usize,
    /// Payload size of request frames (default 32,768; at most the server's
    /// advertised maximum).
    pub max_payload: usize,
    /// Encoding of the request stream (default identity; the server must
    /// list it in `hello`).
    pub encoding: Encoding,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_payload: PREFERRED_PAYLOAD_SIZE,
            encoding: Encoding::Identity,
        }
    }
}

/// What happened to a request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub enum ClientEvent {
    /// Messages for people (keepalives are not reported).
    TextOutput {
        /// The request.
        request_id: RequestId,
        /// The atoms.
        atoms: Vec<TextAtom>,
    },
    /// A progress report.
    Progress {
        /// The request.
        request_id: RequestId,
        /// The report.
        progress: ProgressPayload,
    },
    /// A piece of the answer.
    Data {
        /// The request.
        request_id: RequestId,
        /// The bytes.
        data: Bytes,
    },
    /// The answer is complete.
    End {
        /// The request.
        request_id: RequestId,
    },
    /// The request failed; discard any answer bytes received for it.
    Failed {
        /// The request.
        request_id: RequestId,
        /// Application or protocol.
        kind: ErrorKind,
        /// Code and message.
        error: ErrorPayload,
    },
    /// An error not tied to a request (request id 0): the server stopped
    /// reading; requests it does not answer will be `Unanswered`.
    ConnectionError {
        /// Application or protocol.
        kind: ErrorKind,
        /// Code and message.
        error: ErrorPayload,
    },
    /// Input ended before the request's answer did.
    Unanswered {
        /// The request.
        request_id: RequestId,
    },
}

/// The server broke the protocol. Never a reason to fall back to plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A frame type only clients send.
    #[error("server sent a {0} frame, which only clients send")]
    ClientFrameType(FrameType),
    /// A frame for a request id the client never used (or id 0 with a type
    /// other than error-response).
    #[error("server sent a frame for request {0}, which is not active")]
    UnknownRequest(RequestId),
    /// A frame after the request's answer had ended.
    #[error("server sent a frame for request {0} after its answer ended")]
    AfterEnd(RequestId),
    /// Flags of a bytes-response or error-response not exactly one of two.
    #[error("server sent {frame_type} with invalid flags {flags:#x}")]
    BadFlags {
        /// Which frame.
        frame_type: FrameType,
        /// The flags.
        flags: u8,
    },
    /// A malformed CBOR or text-output payload.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A broken frame, stream or encoding.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A previous error already stopped this reactor.
    #[error("the response was already broken by an earlier error")]
    Errored,
}

impl From<FrameError> for PeerMisbehaved {
    fn from(err: FrameError) -> Self {
        PeerMisbehaved::Protocol(err.into())
    }
}

/// A client called the reactor in a way it cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientUsageError {
    /// The request cannot be encoded.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// All 32,768 client request ids are in use.
    #[error("all request ids are in use")]
    NoFreeRequestId,
    /// No such request is sending data.
    #[error("request {0} is not sending data")]
    NotSending(RequestId),
    /// The reactor is errored.
    #[error("the connection broke; start a new one")]
    Errored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Waiting,
    Receiving,
    Done,
}

#[derive(Debug)]
struct Request {
    sending: bool,
    answer: Answer,
}

/// The client's protocol state machine. See the module docs.
#[derive(Debug)]
pub struct ClientReactor {
    encoder: RequestEncoder,
    ids: RequestIds,
    inbound: InboundStreams,
    outbound: OutboundStream,
    /// Active requests, and ended ones (kept to tell "after end" from
    /// "unknown") until their id is reused.
    requests: HashMap<RequestId, Request>,
    active: usize,
    outbox: VecDeque<Frame>,
    events: VecDeque<ClientEvent>,
    scratch: Vec<FrameBody>,
    errored: bool,
}

impl Default for ClientReactor {
    fn default() -> Self {
        ClientReactor::new(ClientConfig::default())
    }
}

impl ClientReactor {
    /// A reactor with `config`.
    pub fn new(config: ClientConfig) -> Self {
        ClientReactor {
            encoder: RequestEncoder::new(config.max_payload),
            ids: RequestIds::default(),
            inbound: InboundStreams::new(Side::Server, config.max_frame_size),
            outbound: OutboundStream::new(CLIENT_STREAM, config.encoding),
            requests: HashMap::default(),
            active: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            errored: false,
        }
    }

    /// From now on, sends request frames of at most `max` payload bytes
    /// (the server's `max-frame-size` from `hello`) if that is below the
    /// configured [`ClientConfig::max_payload`]. Never below 260 bytes
    /// (an argument header and a full name), the least a server may set
    /// being 1,024.
    pub fn limit_payload(&mut self, max: usize) {
        if max < self.encoder.max_payload() {
            self.encoder = RequestEncoder::new(max);
        }
    }

    // ---- getters ------------------------------------------------------------

    /// Requests still sending or awaiting their answer.
    pub fn active_requests(&self) -> usize {
        self.active
    }

    /// Whether a protocol violation stopped the reactor.
    pub fn is_errored(&self) -> bool {
        self.errored
    }

    // ---- requests -----------------------------------------------------------

    /// Starts a request; if `has_data`, follow with [`send_data`](Self::send_data)
    /// until `last`.
    pub fn start_request(
        &mut self,
        name: &str,
        args: &Arguments,
        has_data: bool,
    ) -> Result<RequestId, ClientUsageError> {
        if self.errored {
            return Err(ClientUsageError::Errored);
        }
        self.scratch.clear();
        self.encoder
            .command_frames(name, args, has_data, &mut self.scratch)?;
        let requests = &self.requests;
        let id = self
            .ids
            .next(|id| {
                requests
                    .get(&id)
                    .is_some_and(|r| r.sending || r.answer != Answer::Done)
            })
            .ok_or(ClientUsageError::NoFreeRequestId)?;
        self.requests.insert(
            id,
            Request {
                sending: has_data,
                answer: Answer::Waiting,
            },
        );
        self.active += 1;
        self.flush_scratch(id);
        Ok(id)
    }

    /// Sends request data; `last` ends it.
    pub fn send_data(
        &mut self,
        id: RequestId,
        data: impl Buf,
        last: bool,
    ) -> Result<(), ClientUsageError> {
        if self.errored {
            return Err(ClientUsageError::Errored);
        }
        let request = self
            .requests
            .get_mut(&id)
            .filter(|r| r.sending)
            .ok_or(ClientUsageError::NotSending(id))?;
        if last {
            request.sending = false;
            if request.answer == Answer::Done {
                self.active -= 1;
            }
        }
        self.scratch.clear();
        self.encoder.data_frames(data, last, &mut self.scratch);
        self.flush_scratch(id);
        Ok(())
    }

    /// A whole request: name, arguments and optional data.
    pub fn request(
        &mut self,
        name: &str,
        args: &Arguments,
        data: Option<Bytes>,
    ) -> Result<RequestId, ClientUsageError> {
        let id = self.start_request(name, args, data.is_some())?;
        if let Some(data) = data {
            self.send_data(id, data, true)?;
        }
        Ok(id)
    }

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.outbox.pop_front()
    }

    /// Writes every queued frame into `dst`; returns how many.
    pub fn write_transmit(&mut self, dst: &mut BytesMut) -> usize {
        let mut count = 0;
        while let Some(frame) = self.outbox.pop_front() {
            dst.reserve(frame.wire_len());
            // Request frames are at most `max_payload` bytes: always encodable.
            let _ = frame.encode(dst);
            count += 1;
        }
        count
    }

    fn flush_scratch(&mut self, id: RequestId) {
        for body in self.scratch.drain(..) {
            self.outbound.prepare(id, body, true, &mut self.outbox);
        }
    }

    // ---- responses ----------------------------------------------------------

    /// A response frame arrived.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), PeerMisbehaved> {
        if self.errored {
            return Err(PeerMisbehaved::Errored);
        }
        let result = self.on_frame(frame);
        if result.is_err() {
            self.errored = true;
        }
        result
    }

    /// The frame decoder failed on the response.
    pub fn handle_decode_error(&mut self, err: FrameError) -> PeerMisbehaved {
        self.errored = true;
        err.into()
    }

    /// The response (HTTP) or connection ended. Requests without a complete
    /// answer are reported `Unanswered`.
    pub fn handle_input_ended(&mut self) {
        let mut open: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.answer != Answer::Done)
            .map(|(id, _)| *id)
            .collect();
        open.sort_unstable();
        for id in open {
            self.events
                .push_back(ClientEvent::Unanswered { request_id: id });
            self.end(id);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), PeerMisbehaved> {
        let frame_type = frame.body.frame_type();
        if !frame_type.is_sent_by(Side::Server) {
            return Err(PeerMisbehaved::ClientFrameType(frame_type));
        }
        let Some(frame) = self.inbound.receive(frame)? else {
            return Ok(());
        };
        let id = frame.request_id;
        if id == RequestId::CONNECTION {
            let FrameBody::ErrorResponse(body) = frame.body else {
                return Err(PeerMisbehaved::UnknownRequest(id));
            };
            let kind = body.kind().ok_or(PeerMisbehaved::BadFlags {
                frame_type,
                flags: body.flags.bits(),
            })?;
            let error = ErrorPayload::decode(&body.payload)?;
            self.events
                .push_back(ClientEvent::ConnectionError { kind, error });
            return Ok(());
        }
        match self.requests.get(&id).map(|r| r.answer) {
            None => return Err(PeerMisbehaved::UnknownRequest(id)),
            Some(Answer::Done) => return Err(PeerMisbehaved::AfterEnd(id)),
            Some(Answer::Waiting | Answer::Receiving) => {}
        }
        match frame.body {
            FrameBody::BytesResponse(body) => {
                let last = body.is_last().ok_or(PeerMisbehaved::BadFlags {
                    frame_type,
                    flags: body.flags.bits(),
                })?;
                self.set_answer(id, Answer::Receiving);
                if !body.payload.is_empty() {
                    self.events.push_back(ClientEvent::Data {
                        request_id: id,
                        data: body.payload,
                    });
                }
                if last {
                    self.events.push_back(ClientEvent::End { request_id: id });
                    self.end(id);
                }
            }
            FrameBody::ErrorResponse(body) => {
                let kind = body.kind().ok_or(PeerMisbehaved::BadFlags {
                    frame_type,
                    flags: body.flags.bits(),
                })?;
                let error = ErrorPayload::decode(&body.payload)?;
                self.events.push_back(ClientEvent::Failed {
                    request_id: id,
                    kind,
                    error,
                });
                self.end(id);
            }
            FrameBody::TextOutput(body) => {
                if !body.is_keepalive() {
                    let atoms = decode_atoms(&body.payload)?;
                    self.events.push_back(ClientEvent::TextOutput {
                        request_id: id,
                        atoms,
                    });
                }
            }
            FrameBody::Progress(body) => {
                let progress = ProgressPayload::decode(&body.payload)?;
                self.events.push_back(ClientEvent::Progress {
                    request_id: id,
                    progress,
                });
            }
            // Client-only types were refused above; stream-settings consumed.
            _ => {
                return Err(PeerMisbehaved::Protocol(ProtocolError::new(
                    ErrorCode::BAD_FRAME_TYPE,
                    format!("unexpected {frame_type} frame"),
                )));
            }
        }
        Ok(())
    }

    fn set_answer(&mut self, id: RequestId, answer: Answer) {
        if let Some(request) = self.requests.get_mut(&id) {
            request.answer = answer;
        }
    }

    fn end(&mut self, id: RequestId) {
        if let Some(request) = self.requests.get_mut(&id)
            && request.answer != Answer::Done
        {
            request.answer = Answer::Done;
            if !request.sending {
                self.active -= 1;
            }
        }
    }
}
