//! One framegate message: the driver around a [`ServerReactor`].
//!
//! Input phase: the body is read as a stream (never collected), decoded
//! frame by frame and fed to the reactor; each command starts as soon as its
//! name and arguments are in and takes effect in completion order (a write
//! waits for every earlier command, a read for the last earlier write).
//! Output phase: only once the whole body was read, answers are streamed in
//! whatever order they are ready; large answers stay open files read piece by
//! piece under a watermark, so memory stays bounded whatever the message
//! holds. If the client goes away, every command of the message is aborted
//! (staging files are removed by their guards).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cap_std::fs::Dir;
use framegate_wire::codec::CodecError;
use framegate_wire::{
    Encoding, ErrorCode, FrameDecoder, OutputMode, RequestId, ServerEvent, ServerReactor,
};
use futures_util::future::{BoxFuture, FutureExt, Shared, join_all};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::codec::FramedRead;
use tokio_util::io::StreamReader;
use tracing::Instrument;

use crate::command::{
    Access, Answer, Call, Chunk, CommandError, Context, Hello, Note, Turn, Upload,
};
use crate::gateway::Gateway;

/// Request data chunks buffered per command before the body reader waits.
pub const DATA_CHANNEL_CHUNKS: usize = 16;

/// Output bytes queued in the reactor before lazy answers pause.
pub const OUTPUT_WATERMARK: usize = 256 * 1024;

/// Size of the pieces a lazy answer is read in.
pub const ANSWER_PIECE: usize = 256 * 1024;

/// Response-body chunks buffered between the message task and hyper.
pub const BODY_CHANNEL_CHUNKS: usize = 4;

type Done = Shared<BoxFuture<'static, ()>>;
type TaskResult = (RequestId, Result<Answer, CommandError>);

/// Where a message comes from and what it may do.
pub(crate) struct MessageSpec {
    pub(crate) base: Arc<Dir>,
    /// Whether writes are accepted; a byte-stream `hello` with the right
    /// `token` may turn it on (§9.1).
    pub(crate) writable: Arc<AtomicBool>,
    /// Whether `hello`'s `token` argument can unlock writes.
    pub(crate) token_unlocks: bool,
    pub(crate) encoding: Encoding,
    pub(crate) endpoint: &'static str,
    pub(crate) base_display: String,
}

/// How a message ended when it cannot be answered with frames.
#[derive(Debug)]
pub(crate) enum Abandoned {
    /// No byte came for the body-read timeout.
    TimedOut,
    /// The body broke (client gone, proxy error).
    BodyError(io::Error),
}

struct Inflight {
    name: String,
    data_tx: Option<mpsc::Sender<Chunk>>,
    go_tx: Option<oneshot::Sender<tokio::sync::OwnedSemaphorePermit>>,
    done: Done,
    access: Access,
    abort: AbortHandle,
}

/// Bytes sampled from a lazy answer to decide whether it compresses.
pub const COMPRESSION_SAMPLE: usize = 64 * 1024;

/// A sample that zstd (level 1) shrinks by less than this is sent unencoded.
pub const MIN_COMPRESSION_GAIN: f64 = 0.9;

/// Whether `data` is worth compressing, judged on a sample.
fn compresses(data: &[u8]) -> bool {
    let sample = data
        .get(..data.len().min(COMPRESSION_SAMPLE))
        .unwrap_or_default();
    match zstd::bulk::compress(sample, 1) {
        Ok(c) => (c.len() as f64) < sample.len() as f64 * MIN_COMPRESSION_GAIN,
        Err(_) => true,
    }
}

enum Source {
    File {
        file: Arc<std::fs::File>,
        ranges: VecDeque<(u64, u64)>,
    },
    Stream(BoxStream<'static, Result<Bytes, CommandError>>),
}

impl Source {
    async fn next_piece(&mut self) -> Option<Result<Bytes, CommandError>> {
        match self {
            Source::File { file, ranges } => {
                let (offset, len) = ranges.front_mut()?;
                if *len == 0 {
                    ranges.pop_front();
                    return Some(Ok(Bytes::new()));
                }
                let piece = (*len).min(ANSWER_PIECE as u64);
                let at = *offset;
                *offset += piece;
                *len -= piece;
                let file = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    crate::files::read_piece(&file, at, piece as usize)
                })
                .await;
                Some(match read {
                    Ok(Ok(bytes)) => Ok(bytes),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(
                        CommandError::new(ErrorCode::SHORT_READ, "file shrank while being sent"),
                    ),
                    Ok(Err(e)) => Err(CommandError::internal(e)),
                    Err(e) => Err(CommandError::internal(e)),
                })
            }
            Source::Stream(stream) => stream.next().await,
        }
    }
}

/// Orders commands by completion: writes are barriers (§6).
struct Scheduler {
    last_write: Option<Done>,
    since_write: Vec<Done>,
    permits: Arc<Semaphore>,
}

impl Scheduler {
    fn schedule(&mut self, entry: &mut Inflight) {
        let waits: Vec<Done> = match entry.access {
            Access::Write => {
                let mut all: Vec<Done> = self.since_write.drain(..).collect();
                all.extend(self.last_write.take());
                self.last_write = Some(entry.done.clone());
                all
            }
            Access::Read => {
                self.since_write.push(entry.done.clone());
                self.last_write.iter().cloned().collect()
            }
        };
        let Some(go) = entry.go_tx.take() else { return };
        let permits = self.permits.clone();
        tokio::spawn(async move {
            join_all(waits).await;
            if let Ok(permit) = permits.acquire_owned().await {
                let _ = go.send(permit);
            }
        });
    }
}

pub(crate) struct Message {
    gw: Arc<Gateway>,
    spec: MessageSpec,
    reactor: ServerReactor,
    tasks: JoinSet<TaskResult>,
    inflight: HashMap<RequestId, Inflight>,
    scheduler: Scheduler,
    notes_tx: mpsc::UnboundedSender<Note>,
    notes_rx: mpsc::UnboundedReceiver<Note>,
    lazy: VecDeque<(RequestId, Source)>,
    started: Instant,
    commands: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Message {
    pub(crate) fn new(gw: Arc<Gateway>, spec: MessageSpec, mode: OutputMode) -> Self {
        let reactor = ServerReactor::new(gw.config.limits.clone(), mode, spec.encoding);
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(gw.config.limits.max_running_commands.max(1)));
        Message {
            gw,
            spec,
            reactor,
            tasks: JoinSet::new(),
            inflight: HashMap::new(),
            scheduler: Scheduler {
                last_write: None,
                since_write: Vec::new(),
                permits,
            },
            notes_tx,
            notes_rx,
            lazy: VecDeque::new(),
            started: Instant::now(),
            commands: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Reads the whole body, running commands as requests complete.
    pub(crate) async fn read_body(&mut self, body: axum::body::Body) -> Result<(), Abandoned> {
        let timeout = self.gw.config.body_read_timeout;
        let stream =
            futures_util::stream::unfold(body.into_data_stream(), move |mut s| async move {
                match tokio::time::timeout(timeout, s.next()).await {
                    Ok(Some(Ok(bytes))) => Some((Ok(bytes), s)),
                    Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), s)),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "body read timed out",
                        )),
                        s,
                    )),
                }
            })
            .boxed();
        let decoder = FrameDecoder::new(self.gw.config.limits.max_frame_size);
        let mut frames = FramedRead::new(StreamReader::new(stream), decoder);
        loop {
            let next = tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.task_done(joined);
                    continue;
                }
                next = frames.next() => next,
            };
            match next {
                None => break,
                Some(Ok(frame)) => {
                    self.bytes_in += frame.wire_len() as u64;
                    let accepted = self.reactor.handle_frame(frame).is_ok();
                    self.process_events().await;
                    if !accepted {
                        break;
                    }
                }
                Some(Err(CodecError::Frame(err))) => {
                    let _ = self.reactor.handle_decode_error(err);
                    self.process_events().await;
                    break;
                }
                Some(Err(CodecError::Io(err))) => return Err(abandoned(err)),
                Some(Err(err)) => {
                    return Err(Abandoned::BodyError(io::Error::other(err.to_string())));
                }
            }
        }
        if !self.reactor.wants_input() || !frames.decoder().is_between_frames() {
            // Deferred output: never answer while the client still sends.
            // Drain what is left (without decoding), up to a bound.
            let mut rest = frames.into_inner();
            let limit = self.gw.config.max_drain_after_error;
            let mut sink = tokio::io::sink();
            let mut take = tokio::io::AsyncReadExt::take(&mut rest, limit);
            if let Err(err) = tokio::io::copy(&mut take, &mut sink).await {
                return Err(abandoned(err));
            }
        }
        self.reactor.handle_input_ended();
        self.process_events().await;
        Ok(())
    }

    async fn process_events(&mut self) {
        while let Some(event) = self.reactor.poll_event() {
            match event {
                ServerEvent::Command(cmd) => self.start(cmd),
                ServerEvent::Data { request_id, data } => {
                    let tx = self
                        .inflight
                        .get(&request_id)
                        .and_then(|e| e.data_tx.clone());
                    if let Some(tx) = tx {
                        // Backpressure: the body waits while the command is behind.
                        let _ = tx.send(Chunk::Data(data)).await;
                    }
                }
                ServerEvent::Complete { request_id, .. } => {
                    if let Some(entry) = self.inflight.get_mut(&request_id) {
                        if let Some(tx) = entry.data_tx.take() {
                            let _ = tx.send(Chunk::End).await;
                        }
                        self.scheduler.schedule(entry);
                    }
                }
                ServerEvent::Aborted { request_id, .. } => {
                    if let Some(entry) = self.inflight.remove(&request_id) {
                        entry.abort.abort();
                    }
                }
                ServerEvent::ProtocolError(err) => {
                    tracing::info!(code = %err.code, message = %err.message, "protocol error");
                    self.gw
                        .metrics
                        .protocol_errors
                        .with_label_values(&[err.code.as_str()])
                        .inc();
                }
                _ => {}
            }
        }
    }

    fn start(&mut self, cmd: framegate_wire::IncomingCommand) {
        self.commands += 1;
        let id = cmd.request_id;
        let command = if cmd.name == "hello" {
            Some(
                self.gw
                    .registry
                    .get("hello")
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Hello)),
            )
        } else {
            self.gw.registry.get(&cmd.name).cloned()
        };
        let Some(command) = command else {
            self.fail_now(
                id,
                &cmd.name,
                CommandError::new(
                    ErrorCode::UNKNOWN_COMMAND,
                    format!("unknown command {:?}", cmd.name),
                ),
            );
            return;
        };
        if cmd.name == "hello" && self.spec.token_unlocks {
            if let (Some(given), Some(token)) =
                (cmd.arguments.get("token"), &self.gw.config.write_token)
            {
                if bool::from(subtle::ConstantTimeEq::ct_eq(
                    given.as_ref(),
                    token.as_bytes(),
                )) {
                    self.spec.writable.store(true, Ordering::SeqCst);
                }
            }
        }
        let writable = self.spec.writable.load(Ordering::SeqCst);
        let access = command.access();
        if access == Access::Write && !writable {
            self.fail_now(
                id,
                &cmd.name,
                CommandError::new(
                    ErrorCode::READ_ONLY,
                    format!("{} needs the rw endpoint with writes allowed", cmd.name),
                ),
            );
            return;
        }
        let (go_tx, go_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let done: Done = done_rx.map(|_| ()).boxed().shared();
        let (data_tx, upload) = if cmd.has_data {
            let (tx, rx) = mpsc::channel(DATA_CHANNEL_CHUNKS);
            (Some(tx), Some(Upload::new(rx)))
        } else {
            (None, None)
        };
        let ctx = Context {
            request_id: id,
            base: self.spec.base.clone(),
            writable,
            notes: self.notes_tx.clone(),
            hello: self.gw.hello.clone(),
        };
        let has_data = cmd.has_data;
        let args = cmd.arguments;
        let span = tracing::debug_span!("command", name = %cmd.name, request = id.0);
        let abort = self.tasks.spawn(
            async move {
                let mut turn = Turn::pending(go_rx);
                if !has_data {
                    if let Err(err) = turn.wait().await {
                        return (id, Err(err));
                    }
                }
                let result = command
                    .run(Call {
                        ctx,
                        args,
                        data: upload,
                        turn,
                    })
                    .await;
                drop(done_tx);
                (id, result)
            }
            .instrument(span),
        );
        self.inflight.insert(
            id,
            Inflight {
                name: cmd.name,
                data_tx,
                go_tx: Some(go_tx),
                done,
                access,
                abort,
            },
        );
    }

    fn fail_now(&mut self, id: RequestId, name: &str, err: CommandError) {
        self.count(name, Some(&err.code));
        let _ = self.reactor.fail_command(id, err.into());
    }

    fn count(&self, name: &str, error: Option<&ErrorCode>) {
        let outcome = error.map_or("ok", |c| c.as_str());
        // Unknown names are one label, so clients cannot grow the series.
        let name = if self.gw.registry.get(name).is_some() || name == "hello" {
            name
        } else {
            "unknown"
        };
        self.gw
            .metrics
            .commands
            .with_label_values(&[name, outcome])
            .inc();
    }

    fn task_done(&mut self, joined: Result<TaskResult, tokio::task::JoinError>) {
        let Ok((id, result)) = joined else { return };
        let Some(entry) = self.inflight.remove(&id) else {
            return;
        };
        self.count(&entry.name, result.as_ref().err().map(|e| &e.code));
        match result {
            Err(err) => {
                let _ = self.reactor.fail_command(id, err.into());
            }
            Ok(Answer::Bytes(bytes)) => {
                if self.reactor.send_answer_data(id, bytes).is_ok() {
                    let _ = self.reactor.finish_answer(id);
                }
            }
            Ok(Answer::File { file, ranges }) => {
                self.lazy.push_back((
                    id,
                    Source::File {
                        file: Arc::new(file),
                        ranges: ranges.into(),
                    },
                ));
            }
            Ok(Answer::Stream(stream)) => self.lazy.push_back((id, Source::Stream(stream))),
        }
    }

    fn apply_note(&mut self, note: Note) {
        let _ = match note {
            Note::Text(id, atoms) => self.reactor.send_text(id, &atoms),
            Note::Progress(id, progress) => self.reactor.send_progress(id, &progress),
        };
    }

    /// Applies pending notes and feeds the next piece of the current lazy
    /// answer (picking the next one when it is done), unless the reactor
    /// already holds a watermark of output. The first piece of each lazy
    /// answer decides whether it is worth compressing.
    async fn feed_output(&mut self, current: &mut Option<(RequestId, Source, bool)>) {
        while let Ok(note) = self.notes_rx.try_recv() {
            self.apply_note(note);
        }
        if current.is_none() {
            *current = self
                .lazy
                .pop_front()
                .map(|(id, source)| (id, source, false));
        }
        let Some((id, source, sampled)) = current.as_mut() else {
            return;
        };
        if self.reactor.pending_output_bytes() >= OUTPUT_WATERMARK {
            return;
        }
        match source.next_piece().await {
            Some(Ok(piece)) => {
                if !*sampled {
                    *sampled = true;
                    if self.reactor.encoding() != Encoding::Identity && !compresses(&piece) {
                        let _ = self.reactor.set_answer_encoding(*id, false);
                    }
                }
                let _ = self.reactor.send_answer_data(*id, piece);
            }
            Some(Err(err)) => {
                let _ = self.reactor.fail_command(*id, err.into());
                *current = None;
            }
            None => {
                let _ = self.reactor.finish_answer(*id);
                *current = None;
            }
        }
    }

    /// Streams every answer into `tx`; returns when all went out or the
    /// client is gone.
    pub(crate) async fn write_answers(mut self, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
        let keepalive = self.gw.config.keepalive_interval;
        let mut out = BytesMut::new();
        let mut last_output = Instant::now();
        let mut current: Option<(RequestId, Source, bool)> = None;
        loop {
            self.feed_output(&mut current).await;
            let mut chunks = Vec::new();
            transmit_chunks(&mut self.reactor, &mut out, &mut chunks);
            if !chunks.is_empty() {
                for chunk in chunks {
                    self.bytes_out += chunk.len() as u64;
                    self.gw.metrics.bytes_out.inc_by(chunk.len() as u64);
                    if tx.send(Ok(chunk)).await.is_err() {
                        tracing::info!("client went away; cancelling the message's commands");
                        return;
                    }
                }
                last_output = Instant::now();
            }
            if self.reactor.is_done() {
                break;
            }
            if current.is_some() || !self.lazy.is_empty() {
                continue;
            }
            if self.tasks.is_empty() && self.notes_rx.is_empty() {
                tracing::error!("message stalled: requests active but nothing running");
                break;
            }
            tokio::select! {
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => self.task_done(joined),
                Some(note) = self.notes_rx.recv() => self.apply_note(note),
                _ = tokio::time::sleep_until((last_output + keepalive).into()) => {
                    self.reactor.queue_keepalive();
                    last_output = Instant::now();
                }
            }
        }
        self.finish_metrics();
    }

    fn finish_metrics(&self) {
        self.gw.metrics.bytes_in.inc_by(self.bytes_in);
        self.gw
            .metrics
            .latency
            .with_label_values(&[self.spec.endpoint])
            .observe(self.started.elapsed().as_secs_f64());
        tracing::info!(
            base = %self.spec.base_display,
            endpoint = self.spec.endpoint,
            commands = self.commands,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            ms = self.started.elapsed().as_millis() as u64,
            "message done"
        );
    }
}

impl Message {
    /// Runs a full-duplex session (§8) after the preamble: frames are read,
    /// commands run and answers written all at once. Ends when the peer
    /// closed its side and every answer went out, on a protocol error once
    /// complete requests are answered, after `idle` without input while
    /// nothing runs, or (finishing what is in flight) when `stop` fires.
    pub(crate) async fn run_stream<R, W>(
        mut self,
        reader: R,
        mut writer: W,
        idle: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let mut frames = FramedRead::new(
            reader,
            FrameDecoder::new(self.gw.config.limits.max_frame_size),
        );
        let mut out = BytesMut::new();
        let mut reading = true;
        let mut last_input = Instant::now();
        let mut current: Option<(RequestId, Source, bool)> = None;
        loop {
            self.feed_output(&mut current).await;
            self.reactor.write_transmit(&mut out);
            if !out.is_empty() {
                self.bytes_out += out.len() as u64;
                self.gw.metrics.bytes_out.inc_by(out.len() as u64);
                writer.write_all(&out).await?;
                writer.flush().await?;
                out.clear();
            }
            if !reading && self.reactor.is_done() {
                break;
            }
            let busy = current.is_some() || !self.lazy.is_empty();
            let idle_armed = reading && self.reactor.active_requests() == 0;
            tokio::select! {
                next = frames.next(), if reading => match next {
                    None => {
                        self.reactor.handle_input_ended();
                        self.process_events().await;
                        reading = false;
                    }
                    Some(Ok(frame)) => {
                        last_input = Instant::now();
                        self.bytes_in += frame.wire_len() as u64;
                        if self.reactor.handle_frame(frame).is_err() {
                            reading = false;
                        }
                        self.process_events().await;
                    }
                    Some(Err(CodecError::Frame(err))) => {
                        let _ = self.reactor.handle_decode_error(err);
                        self.process_events().await;
                        reading = false;
                    }
                    Some(Err(err)) => {
                        tracing::info!(error = %err, "connection broke; cancelling its commands");
                        return Ok(());
                    }
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => self.task_done(joined),
                Some(note) = self.notes_rx.recv() => self.apply_note(note),
                _ = tokio::time::sleep_until((last_input + idle).into()), if idle_armed => {
                    tracing::info!(idle_secs = idle.as_secs_f64(), "closing idle connection");
                    break;
                }
                _ = stop.cancelled(), if reading => {
                    tracing::info!("stopping: finishing requests in flight on this connection");
                    self.reactor.handle_input_ended();
                    self.process_events().await;
                    reading = false;
                }
                _ = std::future::ready(()), if busy => {}
            }
        }
        self.finish_metrics();
        writer.shutdown().await
    }
}

/// Size of the response-body chunks frames are gathered into.
pub const BODY_CHUNK: usize = 256 * 1024;

/// Drains the reactor's frames as body chunks: small frames are gathered in
/// `out`; large payloads are passed on as they are (no copy).
fn transmit_chunks(reactor: &mut ServerReactor, out: &mut BytesMut, chunks: &mut Vec<Bytes>) {
    // Frames are gathered into body chunks of at least this size: fewer,
    // larger writes (and chunk headers) beat avoiding the copy, measured.
    while let Some(frame) = reactor.poll_transmit() {
        out.reserve(frame.wire_len());
        // Our frames never exceed the 24-bit length field.
        let _ = frame.encode(out);
        if out.len() >= BODY_CHUNK {
            chunks.push(out.split().freeze());
        }
    }
    if !out.is_empty() {
        chunks.push(out.split().freeze());
    }
}

/// The first line of a byte-stream session (§8): the client's encodings, or
/// the error line to answer with.
pub(crate) fn parse_preamble(line: &str) -> Result<Encoding, &'static str> {
    let line = line.trim_end_matches(['\n', '\r']);
    let Some(rest) = line.strip_prefix("framegate/") else {
        return Err("unsupported-protocol");
    };
    let mut parts = rest.split(' ');
    if parts.next() != Some("1") {
        return Err("unsupported-version");
    }
    let mut encoding = Encoding::Identity;
    for pair in parts.filter(|p| !p.is_empty()) {
        if let Some(list) = pair.strip_prefix("accept-encoding=") {
            encoding = Encoding::negotiate(list);
        }
    }
    Ok(encoding)
}

fn abandoned(err: io::Error) -> Abandoned {
    if err.kind() == io::ErrorKind::TimedOut {
        Abandoned::TimedOut
    } else {
        Abandoned::BodyError(err)
    }
}

/// The body stream of a response fed by [`Message::write_answers`].
pub(crate) fn body_from(rx: mpsc::Receiver<Result<Bytes, io::Error>>) -> axum::body::Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    axum::body::Body::from_stream(stream.map_err(|e: io::Error| e))
}
