//! # framegate-client
//!
//! Reach a framegate server over HTTP(S) — batching many commands into one
//! POST — or, when the URL points at an ordinary web server, read the same
//! files with plain HTTP (GET, Range, HEAD).
//!
//! * [`Transport`] is the API: [`Transport::open`] probes, then `get`,
//!   `readv`, `put`, … and [`Transport::batch`] for many commands in one
//!   round trip.
//! * [`http::HttpMedium`] is the medium: one message per POST, with a
//!   writing → reading typestate.
//! * [`Error`] covers §10's codes, HTTP statuses, probe results and I/O.

pub mod error;
mod gathered;
mod hooks;
pub mod http;
pub mod plain;
mod ranges;
mod runstate;
pub mod session;
pub mod smart;
pub mod transport;

pub use error::{Error, Layer, Misbehavior, Refusal, Result, TransportError};
pub use framegate_wire::{DigestAnswer, ErrorCode, FileKind, StatAnswer, TreeEntry};
pub use session::{Connector, RunState, Session, SshTarget};
pub use smart::Hooks;
pub use transport::{
    Batch, BatchResults, DownloadOptions, Options, Slot, Transport, local_path_below, partial_path,
    partial_record_path, replace_file,
};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
