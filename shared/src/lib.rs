//! # framegate-wire
//!
//! The framegate protocol core: frames, streams, content encoding, and the
//! server and client reactors of PROTOCOL.md — with no I/O. No sockets, no
//! clocks, no async runtime: drivers (the axum gateway, TCP and stdio
//! servers, the reqwest and byte-stream clients) feed bytes and events in
//! and carry frames out.
//!
//! * [`frame`]: the 8-byte header and one typed value per frame type.
//! * [`budget`]: server-wide budgets shared by reactors.
//! * [`codec`]: the resumable [`FrameDecoder`] (and, with the `codec`
//!   feature, a tokio-util adapter).
//! * [`stream`]: stream rules and the `zstd-8mb` encoding.
//! * [`request`]: how a client cuts a request into frames.
//! * [`server`] and [`client`]: the reactors.
//! * [`payload`]: CBOR payloads (including command answers such as `stat`)
//!   and text-output atoms.
//! * [`preamble`]: the byte-stream preamble lines of §8.
//! * [`ranges`]: the `ranges` argument of `readv`.
//! * [`http_binding`]: header names and endpoint paths of the HTTP binding.
//! * [`error`]: error codes and error types.
//!
//! ```
//! use framegate_wire::{ClientReactor, ServerReactor, ServerConfig, OutputMode, Encoding,
//!     ServerEvent, ClientEvent, Arguments};
//!
//! let mut client = ClientReactor::default();
//! let id = client.request("get", &Arguments::new().with("path", "a.txt")?, None)?;
//!
//! let mut server = ServerReactor::new(ServerConfig::default(), OutputMode::Deferred, Encoding::Identity);
//! while let Some(frame) = client.poll_transmit() {
//!     server.handle_frame(frame)?;
//! }
//! server.handle_input_ended();
//! while let Some(event) = server.poll_event() {
//!     if let ServerEvent::Command(cmd) = event {
//!         server.send_answer_data(cmd.request_id, "contents".into())?;
//!         server.finish_answer(cmd.request_id)?;
//!     }
//! }
//! while let Some(frame) = server.poll_transmit() {
//!     client.handle_frame(frame)?;
//! }
//! assert_eq!(client.poll_event(), Some(ClientEvent::Data { request_id: id, data: "contents".into() }));
//! assert_eq!(client.poll_event(), Some(ClientEvent::End { request_id: id }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod budget;
pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gain;
pub mod http_binding;
pub mod payload;
pub mod preamble;
pub mod ranges;
pub mod request;
pub mod server;
pub mod stream;

pub use budget::SharedBudget;
pub use client::{ClientConfig, ClientEvent, ClientReactor, ClientUsageError, PeerMisbehaved};
pub use codec::FrameDecoder;
pub use error::{ErrorCode, FrameError, PayloadError, ProtocolError};
pub use frame::{ErrorKind, Frame, FrameBody, RequestId, StreamId};
pub use payload::{
    DigestAnswer, ErrorPayload, FileKind, HelloPayload, ProgressPayload, StatAnswer, TextAtom,
    TreeEntry,
};
pub use preamble::PreambleError;
pub use ranges::RangesError;
pub use request::{Arguments, RequestEncoder, RequestError};
pub use server::{
    ARGUMENT_OVERHEAD, ApiMisuse, FREE_REQUESTS, IncomingCommand, OutputMode, ServerConfig,
    ServerEvent, ServerReactor,
};
pub use stream::Encoding;

/// The HTTP media type of framegate messages (§7.2).
pub const MEDIA_TYPE: &str = "application/vnd.framegate.frames-v1";

/// Protocol version.
pub const PROTOCOL_VERSION: u64 = 1;
