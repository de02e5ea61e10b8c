//! A gateway's shared state: configuration, storage, commands, metrics.
//! Binding-agnostic: the HTTP binding (`http/`) and the byte-stream binding
//! (`stream.rs`) both run messages against one [`Gateway`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;
use framegate_wire::{ServerConfig, SharedBudget};
use tokio::sync::Semaphore;

use crate::command::{HelloInfo, Registry};
use crate::metrics::Metrics;
use crate::storage::{LocalStorage, Storage, SweepReport};

/// Settings of a gateway. Defaults are the protocol's limits and safe
/// choices: read-only, 15 s keepalive, 60 s body-read timeout.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The served directory.
    pub root: PathBuf,
    /// Whether `rw` accepts messages at all (default false: 403).
    pub allow_writes: bool,
    /// Bearer token required on `rw` (none: `rw` needs no token when writes
    /// are allowed, e.g. a proxy authenticates).
    pub write_token: Option<String>,
    /// The reactor's limits (§6).
    pub limits: ServerConfig,
    /// Keepalive frame after this long without output (§7.5; default 15 s).
    pub keepalive_interval: Duration,
    /// Longest an HTTP answer waits for others of its message to go out
    /// in the same chunk while the message's commands still run (default
    /// [`COALESCE_WAIT`](crate::COALESCE_WAIT), 1 ms; zero sends each as
    /// soon as it is ready).
    pub coalesce_wait: Duration,
    /// Longest wait for the next body bytes (default 60 s).
    pub body_read_timeout: Duration,
    /// HTTP/1: longest time from a connection's opening, or from the end of
    /// its last answer (keep-alive), to the end of the next request's
    /// headers (default 30 s). Slow or silent connections are closed.
    pub header_read_timeout: Duration,
    /// Longest wait for a client to take the next piece of an answer
    /// (default 60 s, nginx's `send_timeout`): a client that stops reading
    /// has its message closed and stops holding answers.
    pub send_timeout: Duration,
    /// How long in-flight messages may finish after a stop signal (default 30 s).
    pub shutdown_grace: Duration,
    /// Bytes of body still drained after a protocol error before answering
    /// anyway (default 64 MiB).
    pub max_drain_after_error: u64,
    /// Byte-stream connections silent this long, with nothing running, are
    /// closed (default 300 s).
    pub idle_timeout: Duration,
    /// An HTTP request body must arrive at this average rate, counted from
    /// the end of its headers with `body_read_timeout` of grace (default
    /// 1 KiB/s; 0: only the per-read timeout). A body trickled slower is
    /// cut with 408.
    pub min_body_rate: u64,
    /// HTTP connections (either version) with no byte read or written for
    /// this long are closed (default 120 s; longer than the keepalive
    /// interval, so a long-running message is never idle).
    pub connection_idle_timeout: Duration,
    /// Per message: commands running plus answers held open for sending
    /// (a file answer keeps its file open) before further commands wait
    /// (default 16).
    pub message_open_answers: usize,
    /// Per message: answer bytes queued for sending before further commands
    /// wait (default 2 MiB).
    pub message_held_bytes: usize,
    /// Per server: commands running plus answers held open, over all
    /// messages, and plain GETs — the answer descriptor budget (default: a
    /// quarter of the descriptor limit, see [`crate::budgets_for`]).
    pub open_answers: usize,
    /// Per server: uploads staging at once (a staging file each); one more
    /// waits, and fails after `header_read_timeout` (default: a sixteenth
    /// of the descriptor limit, see [`crate::budgets_for`]).
    pub max_staging_files: usize,
    /// Per server: connections (HTTP and byte-stream) served at once; more
    /// wait in the listen backlog (default: a third of the descriptor
    /// limit, see [`crate::budgets_for`], and at most
    /// [`crate::connections_for`] the memory budget).
    pub max_connections: usize,
    /// Per server: messages in flight (HTTP messages and byte-stream
    /// sessions); more wait before their body is read (default: a third
    /// of the descriptor limit, at most 1,024, and at most
    /// [`crate::messages_for`] the memory budget).
    pub max_messages: usize,
    /// Per HTTP/2 connection: messages (streams) at once (default 8; an
    /// HTTP/1 connection carries one at a time).
    pub http2_max_streams: usize,
    /// Per server: messages whose answers are compressed at once, each
    /// with a compressor of about 2.5 MiB; the others are answered
    /// unencoded, which every client decodes (default 32).
    pub max_compressing_messages: usize,
    /// Per server: answer bytes on their way to clients beyond one chunk
    /// per message (default 64 MiB); past it, messages send one chunk at a
    /// time.
    pub output_buffer: usize,
    /// Per server: request data queued for commands staging it (uploads)
    /// and not yet taken by them (default 64 MiB); past it, the input of
    /// the messages that send more waits.
    pub max_queued_upload_bytes: usize,
    /// Per server: zstd-encoded client streams being decoded at once, over
    /// all messages and connections, each with a decoder window of up to
    /// 8 MiB (default 16: at most 128 MiB of windows). One more is the
    /// protocol error `too-many-requests` for its message. Shared by the
    /// reactors as [`ServerConfig::decoder_budget`].
    pub max_decoding_streams: usize,
    /// Per server: bytes of arguments held by requests not yet answered,
    /// over all messages and connections (default 64 MiB); per message,
    /// [`ServerConfig::max_unanswered_argument_bytes`] applies too. More is
    /// the protocol error `too-large` for the request that asked. Shared by
    /// the reactors as [`ServerConfig::held_argument_budget`].
    pub max_held_argument_bytes: usize,
    /// Per server: requests held (from their first frame until their
    /// answer went out) beyond the first
    /// [`FREE_REQUESTS`](framegate_wire::FREE_REQUESTS) of each message or
    /// session, over all of them (default 196,608: 48 messages of 4,096,
    /// about 130 MiB at ~660 bytes a request; 262,144 peaked at 245 MiB
    /// with 512 HTTP/2 messages of 4,096 never read). More is the protocol error
    /// `too-many-requests`. Shared by the reactors as
    /// [`ServerConfig::held_request_budget`].
    pub max_held_requests: usize,
    /// Per server: bytes of plain-HTTP directory listings read and not yet
    /// sent, over all of them (default 64 MiB; a 1,000,000-entry listing
    /// takes about 40 MiB). A listing is charged as it is read and holds
    /// its charge until its body was sent; one that does not fit is
    /// answered 503 with `Retry-After`. The listing slots
    /// ([`crate::LISTING_SLOTS`]) bound only how many are read at once, so a
    /// slow reader holds memory, never a slot.
    pub listing_memory: usize,
    /// Per server: bytes that connections, messages, decoders, held
    /// requests and arguments, the output buffer, listings, queued upload
    /// data and compressors may hold together, each at its worst-case cost
    /// (default [`MEMORY_BUDGET`](crate::MEMORY_BUDGET), 192 MiB).
    /// Connections and messages reserve theirs at start
    /// ([`crate::reserve_for`]; the defaults of `max_connections` and
    /// `max_messages` are capped by [`crate::connections_for`] and
    /// [`crate::messages_for`] of the default budget — set through
    /// [`GatewayConfig::with_memory_budget`] to recompute them); the kinds
    /// draw on the rest, each keeping its own cap too, and when it is
    /// spent a kind acts as at its cap.
    pub memory_budget: usize,
}

impl GatewayConfig {
    /// Defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let fds = crate::limits::budgets_for(crate::limits::fd_limit());
        GatewayConfig {
            root: root.into(),
            allow_writes: false,
            write_token: None,
            limits: ServerConfig::default(),
            keepalive_interval: Duration::from_secs(15),
            coalesce_wait: crate::COALESCE_WAIT,
            body_read_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            max_drain_after_error: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            min_body_rate: 1024,
            connection_idle_timeout: Duration::from_secs(120),
            message_open_answers: 16,
            message_held_bytes: 2 << 20,
            open_answers: fds.open_answers,
            max_staging_files: fds.staging_files,
            max_connections: fds
                .connections
                .min(crate::connections_for(crate::MEMORY_BUDGET)),
            max_messages: fds.messages.min(crate::messages_for(crate::MEMORY_BUDGET)),
            http2_max_streams: 8,
            max_compressing_messages: 32,
            output_buffer: 64 << 20,
            max_queued_upload_bytes: 64 << 20,
            max_decoding_streams: 16,
            max_held_argument_bytes: 64 << 20,
            max_held_requests: 3 << 16,
            listing_memory: 64 << 20,
            memory_budget: crate::MEMORY_BUDGET,
        }
    }
}

impl GatewayConfig {
    /// Sets the memory budget and the default connection and message
    /// bounds that go with it (the smaller of the descriptor limit's and
    /// the budget's: [`crate::connections_for`], [`crate::messages_for`]).
    #[must_use]
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        let fds = crate::limits::budgets_for(crate::limits::fd_limit());
        self.memory_budget = bytes;
        self.max_connections = fds.connections.min(crate::connections_for(bytes));
        self.max_messages = fds.messages.min(crate::messages_for(bytes));
        self
    }
}

/// A running gateway's shared state.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    /// The served tree (the root view of the storage).
    pub(crate) storage: Arc<dyn Storage>,
    /// The served root as a directory, for plain HTTP file access to a
    /// local tree (`None`: another storage, read through `storage`).
    pub(crate) root: Option<Arc<Dir>>,
    pub(crate) registry: Registry,
    pub(crate) hello: Arc<HelloInfo>,
    /// What start-up cleaned from a crash.
    pub(crate) swept: SweepReport,
    /// Server-wide slots for running commands and open answers.
    pub(crate) answer_slots: Arc<Semaphore>,
    /// The part of `answer_slots` messages still receiving may hold.
    pub(crate) receiving_answer_slots: Arc<Semaphore>,
    /// Server-wide slots for connections.
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Server-wide slots for compressing messages.
    pub(crate) compressor_slots: Arc<Semaphore>,
    /// Request data queued for uploads (`max_queued_upload_bytes`), in KiB.
    pub(crate) upload_budget: Arc<Semaphore>,
    /// Its size in KiB.
    pub(crate) upload_budget_units: u32,
    /// The output buffer budget (`output_buffer`).
    pub(crate) output_budget: crate::outflow::OutputBudget,
    /// Server-wide slots for messages in flight.
    pub(crate) message_slots: Arc<Semaphore>,
    /// Server-wide budget of zstd decoders (every reactor's config holds it).
    pub(crate) decoder_budget: SharedBudget,
    /// Server-wide budget of argument bytes held by unanswered requests.
    pub(crate) argument_budget: SharedBudget,
    /// Server-wide budget of requests held (`max_held_requests`).
    pub(crate) request_budget: SharedBudget,
    /// Server-wide budget of plain listings' bytes (`listing_memory`).
    pub(crate) listing_budget: SharedBudget,
    /// The memory budget in bytes (`memory_budget`) every budget above
    /// draws on.
    pub(crate) memory: SharedBudget,
    /// Metrics (rendered on the metrics listener).
    pub metrics: Metrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .finish()
    }
}

impl Gateway {
    /// Opens the served directory (with writes allowed: its private area,
    /// cleaning what a crash left there). `registry` holds the commands
    /// (e.g. [`Registry::files`]).
    pub fn new(config: GatewayConfig, registry: Registry) -> std::io::Result<Arc<Gateway>> {
        let (local, swept) = LocalStorage::open(&config.root, config.allow_writes)?;
        let local =
            local.with_staging_limit(config.max_staging_files.max(1), config.header_read_timeout);
        let root = local.root_dir().clone();
        Ok(Gateway::build(
            config,
            registry,
            Arc::new(local),
            Some(root),
            swept,
        ))
    }

    /// A gateway serving another storage, e.g. an [`crate::ObjectStorage`]
    /// (`config.root` is then unused; plain HTTP reads through the
    /// storage).
    pub fn with_storage(
        config: GatewayConfig,
        registry: Registry,
        storage: Arc<dyn Storage>,
    ) -> Arc<Gateway> {
        Gateway::build(config, registry, storage, None, SweepReport::default())
    }

    fn build(
        config: GatewayConfig,
        registry: Registry,
        storage: Arc<dyn Storage>,
        root: Option<Arc<Dir>>,
        swept: SweepReport,
    ) -> Arc<Gateway> {
        let hello = HelloInfo {
            commands: registry.names(),
            max_frame_size: config.limits.max_frame_size as u64,
        };
        let answer_slots = Arc::new(Semaphore::new(config.open_answers.max(1)));
        let connection_slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let compressor_slots = Arc::new(Semaphore::new(config.max_compressing_messages));
        let reserve = crate::reserve_for(config.max_connections, config.max_messages);
        if reserve > config.memory_budget / 2 {
            tracing::warn!(
                reserve,
                memory_budget = config.memory_budget,
                "max-connections and max-messages reserve more than half the memory budget"
            );
        }
        let memory = SharedBudget::new(crate::memory::pool_for(config.memory_budget, reserve));
        let output_budget = crate::outflow::OutputBudget::new(config.output_buffer, &memory);
        let upload_budget_units = u32::try_from(config.max_queued_upload_bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(64, 1 << 30);
        let upload_budget = Arc::new(Semaphore::new(upload_budget_units as usize));
        let message_slots = Arc::new(Semaphore::new(config.max_messages.max(1)));
        let decoder_budget = SharedBudget::drawing_on(
            config.max_decoding_streams,
            &memory,
            crate::memory::DECODER_COST,
        );
        let argument_budget = SharedBudget::drawing_on(config.max_held_argument_bytes, &memory, 1);
        let request_budget = SharedBudget::drawing_on(
            config.max_held_requests,
            &memory,
            crate::memory::HELD_REQUEST_COST,
        );
        let listing_budget = SharedBudget::drawing_on(config.listing_memory, &memory, 1);
        Arc::new(Gateway {
            listing_budget,
            memory,
            message_slots,
            decoder_budget,
            argument_budget,
            request_budget,
            compressor_slots,
            output_budget,
            upload_budget,
            upload_budget_units,
            answer_slots,
            receiving_answer_slots: Arc::new(Semaphore::new(crate::limits::receiving_slots(
                config.open_answers.max(1),
            ))),
            connection_slots,
            config,
            root,
            storage,
            registry,
            hello: Arc::new(hello),
            swept,
            metrics: Metrics::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// What start-up found left over from a crash, and cleaned.
    pub fn swept(&self) -> SweepReport {
        self.swept
    }

    /// Server-wide answer slots free now (of [`GatewayConfig::open_answers`]).
    pub fn answer_slots_free(&self) -> usize {
        self.answer_slots.available_permits()
    }

    /// Output buffer bytes free now (of [`GatewayConfig::output_buffer`]).
    pub fn output_buffer_free(&self) -> usize {
        self.output_budget.free()
    }

    /// Connection slots free now (of [`GatewayConfig::max_connections`]).
    pub fn connection_slots_free(&self) -> usize {
        self.connection_slots.available_permits()
    }

    /// zstd decoders open now, over all messages (of
    /// [`GatewayConfig::max_decoding_streams`]).
    pub fn decoding_streams(&self) -> usize {
        self.decoder_budget.in_use()
    }

    /// Argument bytes held now by unanswered requests, over all messages
    /// (of [`GatewayConfig::max_held_argument_bytes`]).
    pub fn held_argument_bytes(&self) -> usize {
        self.argument_budget.in_use()
    }

    /// Requests held now beyond each message's free share, over all
    /// messages (of [`GatewayConfig::max_held_requests`]).
    pub fn held_requests(&self) -> usize {
        self.request_budget.in_use()
    }

    /// Bytes of the memory budget in use now (of
    /// [`GatewayConfig::memory_budget`]).
    pub fn memory_in_use(&self) -> usize {
        self.memory.in_use()
    }
}
