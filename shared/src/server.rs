//! The server's protocol logic as a sans-IO state machine (PROTOCOL.md §4, §6).
//!
//! # Driver contract
//!
//! A driver (the HTTP gateway, the TCP or stdio server) owns the I/O and the
//! commands; [`ServerReactor`] owns the protocol. The driver loops:
//!
//! 1. **Input.** Each decoded frame goes to [`handle_frame`](ServerReactor::handle_frame);
//!    a decoder error to [`handle_decode_error`](ServerReactor::handle_decode_error);
//!    end of input to [`handle_input_ended`](ServerReactor::handle_input_ended).
//!    Stop reading when [`wants_input`](ServerReactor::wants_input) is false
//!    (in HTTP, keep *draining* the body without decoding it: deferred output
//!    means nothing is sent until input ended, even after an error).
//! 2. **Events.** After each input, drain [`poll_event`](ServerReactor::poll_event):
//!    [`ServerEvent::Command`] starts a command (its data follows as
//!    [`ServerEvent::Data`]), [`ServerEvent::Complete`] says the request is
//!    whole and gives its completion sequence number, [`ServerEvent::Aborted`]
//!    cancels a started command.
//! 3. **Answers.** As commands produce output, call
//!    [`send_answer_data`](ServerReactor::send_answer_data),
//!    [`finish_answer`](ServerReactor::finish_answer),
//!    [`fail_command`](ServerReactor::fail_command),
//!    [`send_text`](ServerReactor::send_text) and
//!    [`send_progress`](ServerReactor::send_progress).
//! 4. **Output.** Drain [`poll_transmit`](ServerReactor::poll_transmit) and
//!    write the frames. When [`is_done`](ServerReactor::is_done), end the
//!    response (HTTP) or close (after a protocol error on a byte stream).
//!
//! # Deferred output is a rule the reactor keeps
//!
//! In [`OutputMode::Deferred`] `poll_transmit` returns nothing until
//! `handle_input_ended` was called, whatever was queued. In
//! [`OutputMode::Immediate`] frames are available as soon as they are queued.
//!
//! # Ordering
//!
//! `Complete { seq }` numbers requests in the order they became complete.
//! §6 requires commands to take effect in that order: a driver runs
//! read-only commands concurrently but treats a write as a barrier (it waits
//! for commands with a lower `seq` and holds back those with a higher one).
//!
//! # Large deferred answers: hold a source, not bytes
//!
//! Answer bytes handed to the reactor are queued in memory until sent. A
//! driver must therefore not pour a large answer in while output is not
//! allowed. Instead it keeps the answer as a *source* — e.g. an open file and
//! a byte range, opened when the command ran, so it reflects the state at
//! that point — and feeds it in pieces when
//! [`can_send`](ServerReactor::can_send) is true and
//! [`pending_output_bytes`](ServerReactor::pending_output_bytes) is below the
//! driver's watermark. Small answers (CBOR maps) may be handed over at once.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use bytes::{Bytes, BytesMut};

use crate::error::{ErrorCode, FrameError, PayloadError, ProtocolError};
use crate::frame::{
    BytesResponse, BytesResponseFlags, CommandArgument, CommandArgumentFlags, CommandData,
    CommandName, CommandNameFlags, ErrorKind, ErrorResponse, Frame, FrameBody, Progress, RequestId,
    Side, StreamId, TextOutput,
};
use crate::payload::{ErrorPayload, ProgressPayload, TextAtom, encode_atoms};
use crate::request::Arguments;
use crate::stream::{Encode, Encoding, InboundStreams, OutboundStream};

mod answer;
mod config;
mod held;
mod receive;
mod state;

pub use config::ServerConfig;
pub use held::{ARGUMENT_OVERHEAD, FREE_REQUESTS};
use held::{HeldArguments, HeldRequests};
use state::{AnswerState, ArgumentState, PartialArgument, Pending, Phase, Request};

/// The stream id a server sends on.
pub const SERVER_STREAM: StreamId = StreamId(2);

/// When the reactor lets frames out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Half-duplex (HTTP): nothing is sent before input ended.
    Deferred,
    /// Full-duplex (byte streams): frames go out as soon as they are queued.
    Immediate,
}

/// A command whose name and arguments are complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCommand {
    /// The request.
    pub request_id: RequestId,
    /// Command name.
    pub name: String,
    /// Arguments.
    pub arguments: Arguments,
    /// Whether [`ServerEvent::Data`] will follow.
    pub has_data: bool,
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum ServerEvent {
    /// Start a command. Without data, `Complete` follows at once.
    Command(IncomingCommand),
    /// A piece of a command's input.
    Data {
        /// The request.
        request_id: RequestId,
        /// The bytes.
        data: Bytes,
    },
    /// The request is whole; `seq` orders it among this reactor's requests.
    Complete {
        /// The request.
        request_id: RequestId,
        /// Completion sequence number, from 0.
        seq: u64,
    },
    /// A started command's request was cut off; cancel it and do not answer.
    Aborted {
        /// The request.
        request_id: RequestId,
        /// Why (`incomplete-request`, `server-errored`, or the request's own error).
        error: ProtocolError,
    },
    /// A protocol error was answered; the reactor is errored (for logs/metrics).
    ProtocolError(ProtocolError),
}

/// A driver called the reactor in a way that breaks the driver contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// No such request is active.
    #[error("request {0} is not active")]
    UnknownRequest(RequestId),
    /// The request's command was not started yet (no `Command` event).
    #[error("request {0} has not started")]
    NotStarted(RequestId),
    /// The request's answer already ended.
    #[error("the answer of request {0} already ended")]
    AnswerEnded(RequestId),
    /// A text-output or progress payload that cannot be sent.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A text-output message larger than a frame.
    #[error("text-output of {0} bytes does not fit in one frame")]
    TooLarge(usize),
}

/// The server's protocol state machine. See the module docs for the driver
/// contract.
#[derive(Debug)]
pub struct ServerReactor {
    config: ServerConfig,
    mode: OutputMode,
    inbound: InboundStreams,
    outbound: OutboundStream,
    requests: HashMap<RequestId, Request>,
    events: VecDeque<ServerEvent>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    outbox: VecDeque<(Frame, Option<RequestId>)>,
    receiving: usize,
    arrivals: u64,
    next_seq: u64,
    message_bytes: u64,
    input_ended: bool,
    errored: bool,
    /// Whether frames may be compressed (the stream's encoding allows it
    /// and the driver did not forgo it).
    compress: bool,
    /// Argument bytes held by requests not yet answered.
    held_args: HeldArguments,
    /// Requests held, against the server-wide budget.
    held_requests: HeldRequests,
}

impl ServerReactor {
    /// A reactor with `config`, in `mode`, answering with `encoding`
    /// (negotiated by the driver, §5).
    pub fn new(config: ServerConfig, mode: OutputMode, encoding: Encoding) -> Self {
        ServerReactor {
            inbound: InboundStreams::new(Side::Client, config.max_frame_size)
                .with_max_encoded(config.max_encoded_streams)
                .with_decoder_budget(config.decoder_budget.clone())
                .with_decode_ratio_bound(),
            held_args: HeldArguments::new(
                config.max_unanswered_argument_bytes,
                config.held_argument_budget.as_ref(),
            ),
            held_requests: HeldRequests::new(config.held_request_budget.as_ref()),
            outbound: OutboundStream::new(SERVER_STREAM, encoding),
            config,
            mode,
            requests: HashMap::default(),
            events: VecDeque::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            outbox: VecDeque::new(),
            receiving: 0,
            arrivals: 0,
            next_seq: 0,
            message_bytes: 0,
            input_ended: false,
            errored: false,
            compress: true,
        }
    }

    // ---- getters ------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// The encoding of the answer stream.
    pub fn encoding(&self) -> Encoding {
        self.outbound.encoding()
    }

    /// Whether the driver should keep feeding frames.
    pub fn wants_input(&self) -> bool {
        !self.errored && !self.input_ended
    }

    /// Whether a protocol error happened.
    pub fn is_errored(&self) -> bool {
        self.errored
    }

    /// Whether frames may be transmitted now (deferred: only after input ended).
    pub fn can_send(&self) -> bool {
        match self.mode {
            OutputMode::Immediate => true,
            OutputMode::Deferred => self.input_ended,
        }
    }

    /// Payload bytes queued and not yet transmitted (for backpressure).
    pub fn pending_output_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Bytes the client's encoded frames decoded to so far (a driver can
    /// pace itself by the work decoding took, not by the bytes received).
    pub fn decoded_bytes(&self) -> u64 {
        self.inbound.decoded_bytes()
    }

    /// Requests whose frames are still arriving (begun, not complete).
    pub fn receiving_requests(&self) -> usize {
        self.receiving
    }

    /// Active requests: receiving, running, or with answer frames unsent.
    pub fn active_requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether `id` is active.
    pub fn is_active(&self, id: RequestId) -> bool {
        self.requests.contains_key(&id)
    }

    /// Whether everything is over: input ended (or errored), every request
    /// answered and every frame transmitted.
    pub fn is_done(&self) -> bool {
        (self.input_ended || self.errored)
            && self.requests.is_empty()
            && self.pending.is_empty()
            && self.outbox.is_empty()
    }

    // ---- inputs -------------------------------------------------------------

    /// A frame arrived. On a protocol error the error is also queued as an
    /// answer, the reactor becomes errored, and later frames get
    /// `server-errored`.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        if self.errored || self.input_ended {
            return Err(ProtocolError::new(
                ErrorCode::SERVER_ERRORED,
                "server already errored",
            ));
        }
        if self.mode == OutputMode::Deferred {
            self.message_bytes += frame.wire_len() as u64;
            if self.message_bytes > self.config.max_message_bytes {
                let err = ProtocolError::new(
                    ErrorCode::TOO_LARGE,
                    format!("message exceeds {} bytes", self.config.max_message_bytes),
                );
                return Err(self.enter_errored(None, err));
            }
        }
        if !frame.body.frame_type().is_sent_by(Side::Client) {
            let err = ProtocolError::new(
                ErrorCode::BAD_FRAME_TYPE,
                format!("{} frames are not sent by clients", frame.body.frame_type()),
            );
            return Err(self.enter_errored(None, err));
        }
        let frame = match self.inbound.receive(frame) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(err) => return Err(self.enter_errored(None, err)),
        };
        let id = frame.request_id;
        let result = match frame.body {
            FrameBody::CommandName(body) => self.on_command_name(id, body),
            FrameBody::CommandArgument(body) => self.on_argument(id, body),
            FrameBody::CommandData(body) => self.on_data(id, body),
            // Checked above: nothing else is sent by clients, and
            // stream-settings was consumed by the stream layer.
            _ => Ok(()),
        };
        result.map_err(|(tied, err)| self.enter_errored(tied, err))
    }

    /// The frame decoder failed (`frame-too-large`, `truncated-frame`, ...).
    pub fn handle_decode_error(&mut self, err: FrameError) -> ProtocolError {
        if self.errored {
            return err.into();
        }
        self.enter_errored(None, err.into())
    }

    /// Input ended. Requests still receiving are answered with
    /// `incomplete-request`; complete ones keep running. In deferred mode this
    /// allows output.
    pub fn handle_input_ended(&mut self) {
        if self.input_ended {
            return;
        }
        self.input_ended = true;
        // No more input: the decoders (and their budget units) go now, not
        // when the last answer went out.
        self.inbound.close_all();
        if !self.errored {
            self.abort_receiving(
                ErrorCode::INCOMPLETE_REQUEST,
                "input ended inside request",
                None,
            );
        }
    }

    /// Queues a keepalive (empty `text-output`) for a running request, if
    /// output is allowed and some request is still running. Call it when no
    /// frame went out for the keepalive interval (§7.5).
    pub fn queue_keepalive(&mut self) -> bool {
        if !self.can_send() {
            return false;
        }
        let running = self
            .requests
            .iter()
            .filter(|(_, r)| matches!(r.answer, AnswerState::Open { .. }) && r.is_started())
            .map(|(id, _)| *id)
            .min();
        let Some(id) = running else { return false };
        self.push(
            id,
            FrameBody::TextOutput(TextOutput {
                payload: Bytes::new(),
            }),
            Encode::No,
            false,
        );
        true
    }

    // ---- outputs ------------------------------------------------------------

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Whether [`ServerReactor::poll_transmit`] has a frame to give now.
    pub fn has_transmit(&self) -> bool {
        self.can_send() && !(self.outbox.is_empty() && self.pending.is_empty())
    }

    /// The next frame to write, if output is allowed.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        if !self.can_send() {
            return None;
        }
        if self.outbox.is_empty() {
            let pending = self.pending.pop_front()?;
            self.pending_bytes -= pending.body.payload().len();
            let mut frames = Vec::with_capacity(2);
            self.outbound.prepare_as(
                pending.request_id,
                pending.body,
                pending.encode,
                &mut frames,
            );
            let count = frames.len();
            for (index, frame) in frames.into_iter().enumerate() {
                let ends = (pending.last && index + 1 == count).then_some(pending.request_id);
                self.outbox.push_back((frame, ends));
            }
        }
        let (frame, ends) = self.outbox.pop_front()?;
        if let Some(id) = ends {
            self.answer_sent(id);
        }
        Some(frame)
    }

    /// Writes every frame available now into `dst`; returns how many.
    pub fn write_transmit(&mut self, dst: &mut BytesMut) -> usize {
        let mut count = 0;
        while let Some(frame) = self.poll_transmit() {
            dst.reserve(frame.wire_len());
            // Our frames are at most the chunk size: the 24-bit length fits.
            let _ = frame.encode(dst);
            count += 1;
        }
        count
    }

    // ---- internals ----------------------------------------------------------
    fn answerable(&mut self, id: RequestId) -> Result<&mut Request, ApiMisuse> {
        match self.requests.get_mut(&id) {
            None => Err(ApiMisuse::UnknownRequest(id)),
            Some(request) if !request.is_started() => Err(ApiMisuse::NotStarted(id)),
            Some(request) => Ok(request),
        }
    }

    fn open_answer(&mut self, id: RequestId) -> Result<(), ApiMisuse> {
        match self.answerable(id)?.answer {
            AnswerState::Open { .. } => Ok(()),
            _ => Err(ApiMisuse::AnswerEnded(id)),
        }
    }

    fn push(&mut self, request_id: RequestId, body: FrameBody, encode: Encode, last: bool) {
        if last && let Some(request) = self.requests.get_mut(&request_id) {
            // Answered: its arguments are no longer held for it.
            self.held_args
                .release(std::mem::take(&mut request.arg_bytes));
        }
        self.pending_bytes += body.payload().len();
        self.pending.push_back(Pending {
            request_id,
            body,
            encode: if self.compress { encode } else { Encode::No },
            last,
        });
    }

    fn answer_sent(&mut self, id: RequestId) {
        if let Some(request) = self.requests.get_mut(&id) {
            request.answer = AnswerState::Sent;
        }
        self.remove_if_finished(id);
    }

    fn remove_if_finished(&mut self, id: RequestId) {
        let finished = self.requests.get(&id).is_some_and(|r| {
            matches!(r.phase, Phase::Complete) && matches!(r.answer, AnswerState::Sent)
        });
        if finished {
            self.requests.remove(&id);
            self.held_requests.left(self.requests.len());
        }
    }
}

type Failure = (Option<RequestId>, ProtocolError);

fn proto(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, message)
}

fn protocol_body(err: &ProtocolError) -> FrameBody {
    FrameBody::ErrorResponse(ErrorResponse::new(
        ErrorKind::Protocol,
        &ErrorPayload::from(err.clone()),
    ))
}

fn bytes_body(payload: Bytes, eos: bool) -> FrameBody {
    let flags = if eos {
        BytesResponseFlags::EOS
    } else {
        BytesResponseFlags::CONTINUATION
    };
    FrameBody::BytesResponse(BytesResponse { flags, payload })
}
