//! Whole messages from a small vocabulary of real commands, paths and
//! argument values, encoded by a [`ClientReactor`] — so that fuzzing a
//! server gets past frame decoding to running commands — and the check of
//! what a server answers them.
//!
//! A script may also carry raw frames and bytes; the message is then no
//! longer *well-formed* and the answer is only checked to be frames.

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::client::{ClientConfig, ClientEvent, ClientReactor};
use crate::codec::decode_all;
use crate::error::ErrorCode;
use crate::frame::{
    DEFAULT_MAX_FRAME_SIZE, ErrorKind, Frame, FrameBody, FrameType, RequestId, StreamFlags,
    StreamId,
};
use crate::request::Arguments;
use crate::server::ServerConfig;
use crate::stream::Encoding;

/// Command names a script draws from: every file command of the reference
/// server, `hello`, and one no server knows.
pub const COMMANDS: &[&str] = &[
    "get",
    "put",
    "readv",
    "has",
    "stat",
    "list_dir",
    "iter_files_recursive",
    "mkdir",
    "rename",
    "delete",
    "rmdir",
    "append",
    "hello",
    "no_such_command",
];

/// Paths a script draws from: the files a fuzz target's tree is seeded
/// with (see [`SEED_FILES`]; `link` and `linkdir` are symbolic links a
/// target may add, to `../outside.txt` and `..`), new names, and hostile
/// ones. None names a real file outside a target's tree, should a server
/// let it through.
pub const PATHS: &[&str] = &[
    "a.txt",
    "b.bin",
    "sub",
    "sub/c.txt",
    "sub/deeper",
    "sub/deeper/d.txt",
    "new.txt",
    "sub/new",
    "",
    ".",
    "..",
    "sub/../a.txt",
    "../outside.txt",
    "/framegate-fuzz-absolute.txt",
    ".framegate/staging",
    ".framegate-upload-x",
    "missing/x",
    "a.txt/x",
    "sub//c.txt",
    "link",
    "linkdir/outside.txt",
    "linkdir/x",
    "\u{fc}.txt",
    "a\0b",
];

/// Files (path, contents) a fuzz target seeds its served tree with;
/// directories are made as their paths need.
pub const SEED_FILES: &[(&str, &[u8])] = &[
    ("a.txt", b"hello, framegate\n"),
    ("b.bin", &[0, 1, 2, 3, 255, 254, 253, 0, 0, 7]),
    ("sub/c.txt", b"c"),
    ("sub/deeper/d.txt", b""),
];

const RANGES: &[&str] = &[
    "0,3",
    "0,1\n2,10\n",
    "5,0",
    "1,1\n1,1\n1,1",
    "18446744073709551615,0",
    "0,18446744073709551615",
    "3",
    "",
];

const MODES: &[&str] = &["644", "600", "7777", "9", "abc", ""];

const ARGUMENT_NAMES: &[&str] = &["path", "from", "to", "ranges", "mode", "token", "x"];

fn pick(list: &[&'static str], i: u8) -> &'static str {
    list.get(usize::from(i) % list.len().max(1))
        .copied()
        .unwrap_or_default()
}

/// A value for argument `name`: from the vocabulary, or (`choice` ≥ 200)
/// a long value that spans several frames.
fn value(name: &str, choice: u8) -> Bytes {
    if let Some(k) = choice.checked_sub(200) {
        return Bytes::from(vec![b'x'; usize::from(k) * 1100]);
    }
    let text = match name {
        "ranges" => pick(RANGES, choice),
        "mode" => pick(MODES, choice),
        "token" => pick(&["secret", ""], choice),
        _ => pick(PATHS, choice),
    };
    Bytes::copy_from_slice(text.as_bytes())
}

/// Data bytes: `len` bytes counting up from `fill`. Drawn mostly short
/// (under 512 bytes), an eighth of the time up to 64 KiB.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct Payload {
    pub len: u16,
    pub fill: u8,
}

impl<'a> Arbitrary<'a> for Payload {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let long = u8::arbitrary(u)? >= 224;
        let len = u16::arbitrary(u)?;
        Ok(Payload {
            len: if long { len } else { len % 512 },
            fill: u8::arbitrary(u)?,
        })
    }
}

impl Payload {
    fn bytes(self) -> Bytes {
        (0..self.len)
            .map(|i| self.fill.wrapping_add(i as u8))
            .collect()
    }
}

/// One step of a [`MessageScript`]. Drawn mostly as requests: raw frames
/// and bytes (which make a message not well-formed) are 1 in 43.
#[derive(Debug, Clone)]
pub enum MessageOp {
    /// A whole request: the command's own arguments on path `target`,
    /// `extra` (name, value) choices on top, and data if given.
    Request {
        /// Index into [`COMMANDS`].
        command: u8,
        /// Index into [`PATHS`] (and the other argument vocabularies).
        target: u8,
        /// Further arguments (index into the names, value choice).
        extra: Vec<(u8, u8)>,
        /// The request's data.
        data: Option<Payload>,
    },
    /// A request whose data comes later, in [`MessageOp::Data`] steps, so
    /// requests interleave.
    Start {
        /// Index into [`COMMANDS`].
        command: u8,
        /// Index into [`PATHS`].
        target: u8,
        /// Further arguments.
        extra: Vec<(u8, u8)>,
    },
    /// Data for one of the started requests still sending.
    Data {
        /// Which of them (modulo their number).
        slot: u8,
        /// The bytes.
        data: Payload,
        /// Whether this ends the request.
        last: bool,
    },
    /// A frame with raw fields (only defined flags are kept so it encodes).
    Frame {
        #[allow(missing_docs)]
        request: u16,
        #[allow(missing_docs)]
        stream: u8,
        #[allow(missing_docs)]
        stream_flags: u8,
        /// Frame type nibble.
        kind: u8,
        #[allow(missing_docs)]
        flags: u8,
        #[allow(missing_docs)]
        payload: Vec<u8>,
    },
    /// Raw bytes.
    Bytes(Vec<u8>),
}

fn extra(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<(u8, u8)>> {
    let count = u8::arbitrary(u)? % 4;
    (0..count).map(|_| <(u8, u8)>::arbitrary(u)).collect()
}

impl<'a> Arbitrary<'a> for MessageOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? {
            0..=139 => MessageOp::Request {
                command: u.arbitrary()?,
                target: u.arbitrary()?,
                extra: extra(u)?,
                data: u.arbitrary()?,
            },
            140..=179 => MessageOp::Start {
                command: u.arbitrary()?,
                target: u.arbitrary()?,
                extra: extra(u)?,
            },
            180..=249 => MessageOp::Data {
                slot: u.arbitrary()?,
                data: u.arbitrary()?,
                last: u.arbitrary()?,
            },
            250..=252 => MessageOp::Frame {
                request: u.arbitrary()?,
                stream: u.arbitrary()?,
                stream_flags: u.arbitrary()?,
                kind: u.arbitrary()?,
                flags: u.arbitrary()?,
                payload: u.arbitrary()?,
            },
            _ => MessageOp::Bytes(u.arbitrary()?),
        })
    }
}

/// A message to send to a server.
#[derive(Debug, Clone)]
pub struct MessageScript {
    /// Requests sent on a `zstd-8mb` stream (else identity).
    pub zstd: bool,
    /// Requests started and not finished by the steps stay unfinished
    /// (else each gets a last, empty, data frame at the end).
    pub cut: bool,
    /// Request frames cut to the smallest payload (260 bytes), so
    /// arguments and data span frames.
    pub small_frames: bool,
    /// Free bits for the target's driver (e.g. the endpoint to post to).
    pub knobs: u8,
    /// The steps.
    pub ops: Vec<MessageOp>,
}

/// A [`MessageScript`] as bytes, with the client that made them.
#[derive(Debug)]
pub struct EncodedMessage {
    /// The message.
    pub body: Bytes,
    /// The client reactor that encoded it; it reads the answer.
    client: ClientReactor,
    /// Requests in the order they were started.
    requests: Vec<RequestId>,
    /// Their command names.
    commands: Vec<&'static str>,
    /// Only the client reactor's frames, every request complete.
    well_formed: bool,
    /// Most requests receiving at once.
    most_receiving: usize,
    /// Most argument bytes (names and values) of one request.
    most_argument_bytes: usize,
}

fn arguments(command: &str, target: u8, extra: &[(u8, u8)]) -> (Arguments, usize) {
    let mut args = Arguments::new();
    let mut natural: Vec<(&str, Bytes)> = Vec::new();
    match command {
        "hello" | "no_such_command" => {}
        "rename" => {
            natural.push(("from", value("from", target)));
            natural.push(("to", value("to", target.wrapping_add(5))));
        }
        "readv" => {
            natural.push(("path", value("path", target % 8)));
            natural.push(("ranges", value("ranges", target / 8)));
        }
        _ => natural.push(("path", value("path", target))),
    }
    for &(name, choice) in extra {
        let name = pick(ARGUMENT_NAMES, name);
        natural.push((name, value(name, choice)));
    }
    for (name, value) in natural {
        // Later choices replace earlier ones; values fit (at most 60,500 bytes).
        let _ = args.insert(name, value);
    }
    let bytes = args.iter().map(|(k, v)| k.len() + v.len()).sum();
    (args, bytes)
}

impl MessageScript {
    /// Most steps [`from_bytes`](Self::from_bytes) draws.
    pub const MAX_OPS: usize = 64;

    /// A script from raw fuzz input: the flags, then steps drawn one by one
    /// until the input runs out (a `Vec` drawn whole from short input is
    /// mostly empty), at most [`MAX_OPS`](Self::MAX_OPS).
    pub fn from_bytes(data: &[u8]) -> MessageScript {
        let mut u = Unstructured::new(data);
        let mut script = MessageScript {
            zstd: bool::arbitrary(&mut u).unwrap_or_default(),
            cut: u8::arbitrary(&mut u).unwrap_or_default() < 32,
            small_frames: bool::arbitrary(&mut u).unwrap_or_default(),
            knobs: u8::arbitrary(&mut u).unwrap_or_default(),
            ops: Vec::new(),
        };
        while !u.is_empty() && script.ops.len() < Self::MAX_OPS {
            match MessageOp::arbitrary(&mut u) {
                Ok(op) => script.ops.push(op),
                Err(_) => break,
            }
        }
        script
    }

    /// Encodes the script. Requests the client cannot start (e.g. out of
    /// ids) are left out.
    pub fn encode(&self) -> EncodedMessage {
        let config = ClientConfig {
            encoding: if self.zstd {
                Encoding::Zstd8Mb
            } else {
                Encoding::Identity
            },
            max_payload: if self.small_frames { 0 } else { 32_768 },
            ..ClientConfig::default()
        };
        let mut client = ClientReactor::new(config);
        let mut body = BytesMut::new();
        let mut sending: Vec<RequestId> = Vec::new();
        let mut message = EncodedMessage {
            body: Bytes::new(),
            client: ClientReactor::default(),
            requests: Vec::new(),
            commands: Vec::new(),
            well_formed: true,
            most_receiving: 0,
            most_argument_bytes: 0,
        };
        for op in &self.ops {
            match op {
                MessageOp::Request {
                    command,
                    target,
                    extra,
                    data,
                } => {
                    let name = pick(COMMANDS, *command);
                    let (args, bytes) = arguments(name, *target, extra);
                    if let Ok(id) = client.request(name, &args, data.map(Payload::bytes)) {
                        message.requests.push(id);
                        message.commands.push(name);
                        message.most_argument_bytes = message.most_argument_bytes.max(bytes);
                        message.most_receiving = message.most_receiving.max(sending.len() + 1);
                    }
                }
                MessageOp::Start {
                    command,
                    target,
                    extra,
                } => {
                    let name = pick(COMMANDS, *command);
                    let (args, bytes) = arguments(name, *target, extra);
                    if let Ok(id) = client.start_request(name, &args, true) {
                        message.requests.push(id);
                        message.commands.push(name);
                        sending.push(id);
                        message.most_argument_bytes = message.most_argument_bytes.max(bytes);
                        message.most_receiving = message.most_receiving.max(sending.len());
                    }
                }
                MessageOp::Data { slot, data, last } => {
                    let at = usize::from(*slot) % sending.len().max(1);
                    if let Some(&id) = sending.get(at) {
                        if *last {
                            sending.remove(at);
                        }
                        let _ = client.send_data(id, data.bytes(), *last);
                    }
                }
                MessageOp::Frame {
                    request,
                    stream,
                    stream_flags,
                    kind,
                    flags,
                    payload,
                } => {
                    client.write_transmit(&mut body);
                    message.well_formed = false;
                    let Some(kind) = FrameType::from_nibble(kind % 9) else {
                        continue;
                    };
                    let payload = Bytes::copy_from_slice(payload);
                    if let Ok(frame_body) =
                        FrameBody::load(kind, flags & kind.defined_flags(), payload)
                    {
                        let frame = Frame {
                            request_id: RequestId(*request),
                            stream_id: StreamId(*stream),
                            stream_flags: StreamFlags::from_bits(stream_flags & 0x07)
                                .unwrap_or_default(),
                            body: frame_body,
                        };
                        let _ = frame.encode(&mut body);
                    }
                }
                MessageOp::Bytes(bytes) => {
                    client.write_transmit(&mut body);
                    message.well_formed = false;
                    body.extend_from_slice(bytes);
                }
            }
        }
        if !self.cut {
            for id in sending.drain(..) {
                let _ = client.send_data(id, Bytes::new(), true);
            }
        }
        client.write_transmit(&mut body);
        message.well_formed &= sending.is_empty();
        message.body = body.freeze();
        message.client = client;
        message
    }
}

/// What one request got, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The answer's bytes.
    Answered(Bytes),
    /// An error answer.
    Failed(ErrorKind, ErrorCode),
    /// No (complete) answer.
    Unanswered,
}

impl EncodedMessage {
    /// Whether only the client reactor's frames were written and every
    /// request is complete.
    pub fn is_well_formed(&self) -> bool {
        self.well_formed
    }

    /// The command name of each request, in request order.
    pub fn commands(&self) -> &[&'static str] {
        &self.commands
    }

    /// How many requests the message starts.
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether a server with `limits` must answer every request: a
    /// well-formed message within the limits.
    pub fn must_be_answered(&self, limits: &ServerConfig) -> bool {
        self.well_formed
            && self.requests.len() <= limits.max_requests_per_message
            && self.most_receiving <= limits.max_receiving_requests
            && self.most_argument_bytes <= limits.max_argument_bytes
            && (self.body.len() as u64) <= limits.max_message_bytes
    }

    /// Reads a server's answer (the bytes after any preamble) like a
    /// client and checks it: it is whole frames; for a well-formed message
    /// the client reactor accepts every one; and if the message
    /// [must be answered](Self::must_be_answered), every request got an
    /// answer or an error of its own and no connection error came.
    /// Returns each request's outcome, in request order.
    pub fn check_answer(mut self, answer: &[u8], limits: &ServerConfig) -> Vec<Outcome> {
        let frames = match decode_all(answer, DEFAULT_MAX_FRAME_SIZE) {
            Ok(frames) => frames,
            Err(err) => panic!("the answer is not whole frames: {err}"),
        };
        for frame in frames {
            assert!(
                frame
                    .body
                    .frame_type()
                    .is_sent_by(crate::frame::Side::Server),
                "a server sent {frame:?}"
            );
            if let Err(err) = self.client.handle_frame(frame) {
                assert!(
                    !self.well_formed,
                    "the client refused the answer to a well-formed message: {err}"
                );
                break;
            }
        }
        self.client.handle_input_ended();
        let mut data: HashMap<RequestId, BytesMut> = HashMap::new();
        let mut outcomes: HashMap<RequestId, Outcome> = HashMap::new();
        let mut connection_error = None;
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Data {
                    request_id,
                    data: d,
                } => {
                    data.entry(request_id).or_default().extend_from_slice(&d);
                }
                ClientEvent::End { request_id } => {
                    let bytes = data.remove(&request_id).unwrap_or_default().freeze();
                    outcomes.insert(request_id, Outcome::Answered(bytes));
                }
                ClientEvent::Failed {
                    request_id,
                    kind,
                    error,
                } => {
                    outcomes.insert(request_id, Outcome::Failed(kind, error.code));
                }
                ClientEvent::Unanswered { request_id } => {
                    outcomes.insert(request_id, Outcome::Unanswered);
                }
                ClientEvent::ConnectionError { error, .. } => connection_error = Some(error),
                _ => {}
            }
        }
        let outcomes: Vec<Outcome> = self
            .requests
            .iter()
            .map(|id| outcomes.remove(id).unwrap_or(Outcome::Unanswered))
            .collect();
        if self.must_be_answered(limits) {
            assert_eq!(
                connection_error, None,
                "a connection error for a well-formed message within the limits"
            );
            for (i, outcome) in outcomes.iter().enumerate() {
                assert_ne!(
                    *outcome,
                    Outcome::Unanswered,
                    "request #{i} of a well-formed message went unanswered"
                );
            }
        }
        outcomes
    }
}
