//! # framegate-server
//!
//! The framegate gateway: an axum service that takes framegate messages
//! (`POST {base}/.framegate/ro|rw`), runs their commands against a served
//! directory, and streams the answers back after the whole request body was
//! read (deferred output, PROTOCOL.md §7). It also serves the same tree as
//! plain files, so clients can fall back to plain HTTP against it too, and
//! the same frames full duplex over TCP and stdio (§8).
//!
//! Embedding: build a [`Registry`] with your own commands (see
//! `examples/custom_command.rs`), a [`GatewayConfig`], then
//! [`Gateway::new`] and [`serve()`] (or [`router`] into your own axum app,
//! [`serve_tcp`] for byte streams).
//!
//! Inside: one binding-agnostic driver (`driver/`: the reactor, the running
//! commands, §6 ordering as data), the HTTP binding (`http/`), the
//! byte-stream binding (`stream.rs`), the file commands (`fs/`) and the
//! storage they reach files through (`storage/`).

mod answer;
pub mod command;
mod driver;
mod fs;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gateway;
mod http;
mod limits;
mod memory;
pub mod metrics;
mod outflow;
mod pace;
mod pool;
mod serve;
mod stop;
mod storage;
mod stream;
mod tree;

pub use command::{
    Access, Answer, Call, Command, CommandError, CommandPolicy, Context, MAX_ERROR_MESSAGE,
    PolicyError, Registry, Turn, Upload, read_command, write_command,
};
pub use driver::{
    ANSWER_PIECE, BODY_CHUNK, COALESCE_BYTES, COALESCE_WAIT, COMPRESSION_SAMPLE,
    DATA_CHANNEL_CHUNKS, MIN_COMPRESSION_GAIN, OUTPUT_WATERMARK,
};
pub use fs::{
    DIGEST_PIECE, HELD_LISTING_MIN, LISTING_SLOTS, LISTING_WAIT, MAX_ITER_FILES, MAX_LIST_ENTRIES,
    MAX_READV_RANGES, MAX_TREE_ENTRIES, PROGRESS_INTERVAL, VALIDATED_ANSWER_MIN,
};
pub use gateway::{Gateway, GatewayConfig};
pub use http::BODY_CHANNEL_CHUNKS;
pub use http::router;
pub use limits::{
    FD_RESERVE, FdBudgets, MAX_CONNECTIONS_CAP, MAX_MESSAGES_CAP, MAX_OPEN_ANSWERS_CAP,
    MAX_STAGING_FILES_CAP, MIN_STAGING_FILES, UNSENT_LOWAT, budgets_for, fd_limit, raise_fd_limit,
};
pub use memory::{
    COMPRESSOR_COST, CONNECTION_COST, CONNECTION_SHARE, DECODER_COST, H2_CONNECTION_WINDOW,
    H2_STREAM_WINDOW, HELD_REQUEST_COST, MEMORY_BUDGET, MESSAGE_COST, MESSAGE_SHARE,
    MIN_MEMORY_BUDGET, connections_for, messages_for, reserve_for,
};
pub use pool::{FILE_IO_THREADS, HELPER_AFTER, MAX_SHARE_THREADS};
pub use serve::{HTTP1_MAX_BUF, LISTEN_BACKLOG, ServeHandle, listen, serve};
pub use stop::GraceExpired;
pub use storage::{
    DEFAULT_STORE_REQUESTS, EntryKind, EntryMeta, Etag, FileRead, LocalStorage, MAX_INLINE_ANSWER,
    ObjectConfig, ObjectStorage, ReadRanges, SINGLE_PUT_MAX, StagedUpload, Storage, StorageFuture,
    SweepReport, Tally, UPLOAD_BUFFER,
};
pub use stream::{DEFAULT_TCP_PORT, WritePolicy, serve_connection, serve_stdio, serve_tcp};
pub use tree::{RESERVED_COMPONENT, TEMP_PREFIX, clean_path};
