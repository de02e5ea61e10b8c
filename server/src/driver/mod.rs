//! The message driver: one framegate message (an HTTP POST, or a whole
//! byte-stream session) around a [`ServerReactor`], independent of how its
//! bytes arrive and leave.
//!
//! The driver owns the reactor, the running commands and their ordering.
//! Bindings call, in any order their I/O allows:
//! * [`Driver::handle_frame`], [`Driver::handle_decode_error`],
//!   [`Driver::handle_input_ended`] — input;
//! * [`Driver::progress`] — wait for a command to finish or speak (only
//!   useful while [`Driver::is_busy`]);
//! * [`Driver::feed_output`] and [`Driver::transmit`] — output, as far as the
//!   reactor lets them (deferred mode: nothing before input ended).
//!
//! A command starts when its name and arguments are in if it has data (so
//! the data can be staged as it arrives), else when released; it takes
//! effect only when [`order::Order`] releases it, by the reactor's
//! completion `seq`. Dropping the driver aborts every command of the
//! message (staged uploads are removed by their guards).

mod answering;
mod budget;
mod charges;
mod order;
mod output;
mod runs;
mod sending;
mod starting;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use framegate_wire::{
    Encoding, ErrorCode, Frame, FrameError, OutputMode, RequestId, ServerEvent, ServerReactor,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::command::{Access, Answer, Call, Chunk, Command, CommandError, Note};
use crate::gateway::Gateway;
use crate::pool::{Share, in_share};
use crate::storage::Storage;
use runs::{Ended, RunId, Runs};

pub use output::{ANSWER_PIECE, BODY_CHUNK, COMPRESSION_SAMPLE, MIN_COMPRESSION_GAIN};

/// Answer bytes below which a message's output waits for more while its
/// commands still run (see `--coalesce-wait`).
pub const COALESCE_BYTES: usize = 32 * 1024;

/// The longest an answer waits for others to go out with it.
pub const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);
pub(crate) use output::{Fingerprint, read_piece};

/// Request data chunks buffered per command before the input waits.
pub const DATA_CHANNEL_CHUNKS: usize = 16;

/// Output bytes queued in the reactor before lazy answers pause.
pub const OUTPUT_WATERMARK: usize = 256 * 1024;

/// Input bytes handled — frames as received plus what encoded ones
/// decoded to — between two yields to the runtime. Decoding runs inline in
/// the message's task and, with the input already buffered, nothing else
/// would make it wait: a client whose frames inflate (zstd RLE blocks)
/// held a worker for seconds while other clients' requests stalled. At
/// 256 KiB the task yields every few tens of microseconds of decoding.
pub(crate) const INPUT_YIELD_BYTES: u64 = 256 * 1024;

/// Where a message comes from and what it may do.
pub(crate) struct MessageSpec {
    /// The base the message's paths are relative to.
    pub(crate) storage: Arc<dyn Storage>,
    /// Whether writes are accepted; a byte-stream `hello` with the right
    /// `token` may turn it on (§9.1).
    pub(crate) writable: Arc<AtomicBool>,
    /// Whether `hello`'s `token` argument can unlock writes.
    pub(crate) token_unlocks: bool,
    pub(crate) encoding: Encoding,
    pub(crate) endpoint: &'static str,
    pub(crate) base_display: String,
}

/// How a command gets going once released.
enum Start {
    /// Not started (no data): run inline when released ([`runs`]).
    Later(Box<(Arc<dyn Command>, Call)>),
    /// Running as a task of its own (staging its data); told its turn
    /// came through this.
    Waiting(oneshot::Sender<()>),
    /// Released (or finished).
    Started,
}

struct Inflight {
    name: String,
    access: Access,
    data_tx: Option<mpsc::Sender<Chunk>>,
    start: Start,
    /// The request is complete (it is in the order).
    complete: bool,
    /// Its run, once started.
    run: Option<RunId>,
}

/// One message being driven (see the module docs).
pub(crate) struct Driver {
    gw: Arc<Gateway>,
    spec: MessageSpec,
    reactor: ServerReactor,
    runs: Runs,
    run_ids: HashMap<RunId, RequestId>,
    inflight: HashMap<RequestId, Inflight>,
    order: order::Order,
    notes_tx: mpsc::UnboundedSender<Note>,
    notes_rx: mpsc::UnboundedReceiver<Note>,
    lazy: output::Lazy,
    budget: budget::Budget,
    /// The message's share of the file pool.
    share: Share,
    /// Its slot in the server's compressor budget, if it compresses.
    _compressor: Option<charges::CompressorCharge>,
    /// Stopping: new requests are answered with an error, not run.
    refusing_new: bool,
    started: Instant,
    commands: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Input work since the last yield ([`INPUT_YIELD_BYTES`]).
    unyielded: u64,
    /// The reactor's decoded-bytes count when last looked at.
    decoded_seen: u64,
}

impl Driver {
    pub(crate) fn new(gw: Arc<Gateway>, spec: MessageSpec, mode: OutputMode) -> Self {
        // Every message's reactor counts against the server-wide budgets.
        let mut limits = gw.config.limits.clone();
        limits.decoder_budget = Some(gw.decoder_budget.clone());
        limits.held_argument_budget = Some(gw.argument_budget.clone());
        limits.held_request_budget = Some(gw.request_budget.clone());
        let mut reactor = ServerReactor::new(limits, mode, spec.encoding);
        // A compressor costs a few MiB: past the server's budget of them,
        // this message is answered unencoded.
        let compressor = if spec.encoding == Encoding::Identity {
            None
        } else {
            let slot = charges::compressor(&gw);
            if slot.is_none() {
                reactor.forgo_compression();
            }
            slot
        };
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let order = order::Order::new(gw.config.limits.max_running_commands);
        let budget = budget::Budget::new(
            gw.config.message_open_answers,
            gw.config.message_held_bytes,
            gw.answer_slots.clone(),
            gw.receiving_answer_slots.clone(),
        );
        Driver {
            gw,
            spec,
            reactor,
            runs: Runs::default(),
            run_ids: HashMap::default(),
            inflight: HashMap::default(),
            order,
            notes_tx,
            notes_rx,
            lazy: output::Lazy::default(),
            budget,
            share: Share::new(),
            _compressor: compressor,
            refusing_new: false,
            started: Instant::now(),
            commands: 0,
            bytes_in: 0,
            bytes_out: 0,
            unyielded: 0,
            decoded_seen: 0,
        }
    }

    // ---- getters ---------------------------------------------------------

    /// Whether the reactor takes more input.
    pub(crate) fn wants_input(&self) -> bool {
        self.reactor.wants_input()
    }

    /// Whether every request was answered and every frame transmitted.
    pub(crate) fn is_done(&self) -> bool {
        self.reactor.is_done()
    }

    /// Requests not yet fully answered.
    pub(crate) fn active_requests(&self) -> usize {
        self.reactor.active_requests()
    }

    /// Whether a byte stream should read more: fewer complete requests are
    /// active (running, waiting their turn, or answered and not yet sent)
    /// than [`ServerConfig::max_requests_per_message`](framegate_wire::ServerConfig)
    /// (the limit an HTTP message has). Past it a byte stream stops reading
    /// until answers went out — backpressure, never a deadlock: complete
    /// requests need no more input, and the ones still receiving (bounded
    /// by `max_receiving_requests`) are not counted, so they never hold up
    /// the input they need.
    pub(crate) fn has_room_for_requests(&self) -> bool {
        let complete = self
            .reactor
            .active_requests()
            .saturating_sub(self.reactor.receiving_requests());
        complete < self.gw.config.limits.max_requests_per_message
    }

    /// Requests whose frames are still arriving.
    pub(crate) fn receiving_requests(&self) -> usize {
        self.reactor.receiving_requests()
    }

    /// Whether a command is running, a note waits, or a command waits for
    /// a server-wide slot ([`Driver::progress`] has something to wait for).
    pub(crate) fn is_busy(&self) -> bool {
        !self.runs.is_empty() || !self.notes_rx.is_empty() || self.wants_slot()
    }

    fn wants_slot(&self) -> bool {
        self.budget
            .wants_slot(self.lazy.len(), self.reactor.pending_output_bytes())
    }

    // ---- inputs ----------------------------------------------------------

    /// A frame arrived. Returns false if the reactor refused it (it is now
    /// errored and takes no more input). Yields to the runtime after every
    /// [`INPUT_YIELD_BYTES`] of input work, so a message that keeps the
    /// input busy shares its worker with other messages.
    pub(crate) async fn handle_frame(&mut self, frame: Frame) -> bool {
        let wire = frame.wire_len() as u64;
        self.bytes_in += wire;
        let accepted = self.reactor.handle_frame(frame).is_ok();
        let decoded = self.reactor.decoded_bytes();
        self.unyielded += wire + decoded.saturating_sub(self.decoded_seen);
        self.decoded_seen = decoded;
        self.process_events().await;
        if self.unyielded >= INPUT_YIELD_BYTES {
            self.unyielded = 0;
            tokio::task::yield_now().await;
        }
        accepted
    }

    /// The input could not be decoded.
    pub(crate) async fn handle_decode_error(&mut self, err: FrameError) {
        let _ = self.reactor.handle_decode_error(err);
        self.process_events().await;
    }

    /// The input ended (or will not be read any further).
    pub(crate) async fn handle_input_ended(&mut self) {
        self.reactor.handle_input_ended();
        self.budget.input_ended();
        self.process_events().await;
        self.start_waiting(None);
    }

    /// From now on, new requests are answered with an error and not run
    /// (a graceful stop of a byte stream).
    pub(crate) fn refuse_new_requests(&mut self) {
        self.refusing_new = true;
    }

    /// Sends a keepalive frame (§7.5) if a request is running.
    pub(crate) fn queue_keepalive(&mut self) {
        self.reactor.queue_keepalive();
    }

    /// Waits until a command finishes or sends a note, or a server-wide
    /// slot frees for a waiting command, and takes it in.
    pub(crate) async fn progress(&mut self) {
        let wants_slot = self.wants_slot();
        tokio::select! {
            (run, ended) = self.runs.next(), if !self.runs.is_empty() => {
                self.run_ended(run, ended);
            }
            Some(note) = self.notes_rx.recv() => self.apply_note(note),
            slot = self.budget.slot(), if wants_slot => self.start_waiting(Some(slot)),
        }
    }

    /// Awaits `fut` while the commands running inline go on (those that
    /// end are taken in by the next [`Driver::progress`]): a wait of the
    /// message's task must not stall them, they may hold what others wait
    /// for (see [`runs`]).
    pub(crate) async fn meanwhile<T>(&mut self, fut: impl Future<Output = T>) -> T {
        self.runs.drive(fut).await
    }

    /// Awaits `output_waits` — room to send, or a write in progress — while
    /// taking in the commands that finish meanwhile, so their server-wide
    /// answer slots go back at once; no new command starts until it is
    /// done, so a message whose client does not read makes no more answers
    /// than it already has. Before, a message waiting for its client took
    /// nothing in: 8 HTTP/2 connections × 8 unread messages of 256 `stat`s
    /// held every answer slot (16 a message, 240 at 1,024 descriptors), and
    /// bystanders waited for the send timeout.
    pub(crate) async fn while_output_waits<T>(
        &mut self,
        output_waits: impl Future<Output = T>,
    ) -> T {
        self.budget.hold(true);
        tokio::pin!(output_waits);
        let out = loop {
            tokio::select! {
                out = &mut output_waits => break out,
                () = self.progress(), if self.is_busy() => {}
            }
        };
        self.budget.hold(false);
        out
    }

    // ---- internals -------------------------------------------------------

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
                        // Backpressure: input waits while the command stages
                        // its data — but not for ever on one that does not
                        // read it.
                        // Queued data is charged on the server's budgets for
                        // it, waited for like the channel.
                        let limit = self.gw.config.body_read_timeout;
                        let queued = charges::queue_upload(&self.gw, tx, data);
                        let queued = self.runs.drive(tokio::time::timeout(limit, queued));
                        if queued.await.is_err() {
                            self.stop_feeding(request_id, limit);
                        }
                    }
                }
                ServerEvent::Complete { request_id, seq } => {
                    self.complete(request_id, seq).await;
                }
                ServerEvent::Aborted { request_id, .. } => {
                    // Dropping the entry drops its data sender and its turn:
                    // the command sees its data cut off and ends unanswered.
                    self.forget(request_id);
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

    /// A command did not take its data for `waited`: it fails, and the rest
    /// of its data is discarded (by the reactor, once it is answered).
    fn stop_feeding(&mut self, id: RequestId, waited: std::time::Duration) {
        let Some(entry) = self.forget(id) else {
            return;
        };
        tracing::warn!(command = %entry.name, request = id.0, "command did not read its data");
        let err = CommandError::new(
            ErrorCode::INTERNAL,
            format!(
                "the command did not read its data for {}",
                humantime::format_duration(waited)
            ),
        );
        self.fail_now(id, &entry.name, err);
    }

    /// Drops a request's entry and its task's mapping: whatever its task
    /// still answers is ignored.
    fn forget(&mut self, id: RequestId) -> Option<Inflight> {
        let entry = self.inflight.remove(&id)?;
        self.budget.forget(id);
        if let Some(run) = entry.run {
            self.run_ids.remove(&run);
        }
        Some(entry)
    }

    async fn complete(&mut self, id: RequestId, seq: u64) {
        let Some(entry) = self.inflight.get_mut(&id) else {
            return; // failed at once (unknown command, read-only)
        };
        if let Some(tx) = entry.data_tx.take() {
            let _ = self.runs.drive(tx.send(Chunk::End)).await;
        }
        let Some(entry) = self.inflight.get_mut(&id) else {
            return;
        };
        entry.complete = true;
        let released = self.order.complete(seq, id, entry.access);
        self.release(released);
    }

    /// Commands the ordering released: those staging data get their turn,
    /// the others start within the budgets (or wait for room).
    fn release(&mut self, ids: Vec<RequestId>) {
        for id in ids {
            let Some(entry) = self.inflight.get_mut(&id) else {
                continue;
            };
            match &entry.start {
                Start::Later(_) => self.budget.wait(id),
                Start::Waiting(_) => {
                    if let Start::Waiting(go) = std::mem::replace(&mut entry.start, Start::Started)
                    {
                        let _ = go.send(());
                    }
                }
                Start::Started => {}
            }
        }
        self.start_waiting(None);
    }

    /// Starts waiting commands while the budgets have room (`slot`: a
    /// server-wide slot already acquired for the first).
    fn start_waiting(&mut self, mut slot: Option<budget::Slot>) {
        while let Some((id, permit)) = self.budget.next(
            self.lazy.len(),
            self.reactor.pending_output_bytes(),
            &mut slot,
        ) {
            let Some(entry) = self.inflight.get_mut(&id) else {
                continue; // aborted while waiting
            };
            let Start::Later(boxed) = std::mem::replace(&mut entry.start, Start::Started) else {
                continue;
            };
            let (command, call) = *boxed;
            let span = tracing::debug_span!("command", name = %entry.name, request = id.0);
            let run = in_share(self.share, traced(command, call));
            let run = self.runs.run_inline(run.instrument(span));
            self.run_ids.insert(run, id);
            entry.run = Some(run);
            self.budget.started(run, permit);
        }
    }

    fn run_ended(&mut self, run: RunId, ended: Ended) {
        // Notes a command sent before it finished go first: its text and
        // progress precede its answer (§4.2), and none is dropped as sent
        // after the answer ended.
        while let Ok(note) = self.notes_rx.try_recv() {
            self.apply_note(note);
        }
        let result = match ended {
            Ended::Done(result) => result,
            Ended::Cancelled => {
                self.run_ids.remove(&run);
                self.budget.ended(run);
                self.budget.sync(self.lazy.len());
                return; // cancelled: the runtime is stopping
            }
        };
        // Its slot: kept by a lazy answer, else freed here.
        let slot = self.budget.ended(run);
        let Some(id) = self.run_ids.remove(&run) else {
            return;
        };
        let Some(entry) = self.inflight.get_mut(&id) else {
            return;
        };
        if entry.complete {
            let name = entry.name.clone();
            self.inflight.remove(&id);
            let released = self.order.finish(id);
            self.release(released);
            self.count(&name, result.as_ref().err().map(|e| &e.code));
        } else {
            // Failed (or answered) while its data was still coming: it never
            // takes part in the ordering, and the reactor discards the rest
            // of its data.
            let name = entry.name.clone();
            self.inflight.remove(&id);
            self.count(&name, result.as_ref().err().map(|e| &e.code));
        }
        self.answer(id, result, slot);
        self.budget.sync(self.lazy.len());
    }
}

/// A command's run, with debug events in its span: when it starts, and how
/// it ended (the answer's size when known, or the error).
async fn traced(command: Arc<dyn Command>, call: Call) -> Result<Answer, CommandError> {
    let started = std::time::Instant::now();
    tracing::debug!(data = call.data.is_some(), "started");
    let result = command.run(call).await;
    let us = started.elapsed().as_micros() as u64;
    match &result {
        Ok(answer) => tracing::debug!(bytes = answer.len_hint(), us, "answered"),
        Err(err) => tracing::debug!(code = %err.code, message = %err.message, us, "failed"),
    }
    result
}
