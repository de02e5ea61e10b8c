//! The limits of a [`ServerReactor`](super::ServerReactor) (§6): per
//! message or connection, and the server-wide budgets it shares with
//! other reactors.

use crate::budget::SharedBudget;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, PREFERRED_PAYLOAD_SIZE};

/// Limits and sizes of a server reactor (§6). Defaults are the protocol's;
/// the server-wide budgets default to none (only the per-message limits
/// apply).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame payload accepted, also after decoding (default 65,535).
    pub max_frame_size: usize,
    /// Requests that may be receiving (incomplete) at once (default 64).
    pub max_receiving_requests: usize,
    /// Requests per HTTP message (default 4,096; deferred mode only).
    pub max_requests_per_message: usize,
    /// Arguments per request (default 64).
    pub max_arguments: usize,
    /// Bytes of argument names and values per request (default 1 MiB).
    pub max_argument_bytes: usize,
    /// Bytes of argument names and values (counted as they arrive), plus
    /// [`ARGUMENT_OVERHEAD`](super::ARGUMENT_OVERHEAD) per argument, held by
    /// the requests of a message or connection that are not answered yet
    /// (default 8 MiB): waiting requests keep their arguments, so this
    /// bounds them. More is the protocol error `too-large`.
    pub max_unanswered_argument_bytes: usize,
    /// Commands running at once per message (default 16). Applied by the
    /// driver, which runs the commands; carried here so all limits live in
    /// one place.
    pub max_running_commands: usize,
    /// Bytes of frames per HTTP message (default 16 GiB; deferred mode only).
    pub max_message_bytes: u64,
    /// Payload size of answer frames (default 32,768).
    pub answer_chunk_size: usize,
    /// Encoded (`zstd-8mb`) client streams open at once (default 2): each
    /// holds a decoder with a window of up to 8 MiB, so this bounds decoder
    /// memory per message or connection to 16 MiB. The contract advises one
    /// stream per sender; one more lets a client close and reopen.
    pub max_encoded_streams: usize,
    /// Server-wide budget of zstd decoders, shared by every reactor given
    /// the same handle: each encoded client stream takes one unit while it
    /// is open (default none: only `max_encoded_streams` bounds them). With
    /// none left, opening one more is the protocol error
    /// `too-many-requests`, and the message ends.
    pub decoder_budget: Option<SharedBudget>,
    /// Server-wide budget of the bytes counted by
    /// `max_unanswered_argument_bytes`, shared by every reactor given the
    /// same handle (default none). A request whose arguments do not fit is
    /// answered `too-large`, as when the per-message limit is reached.
    pub held_argument_budget: Option<SharedBudget>,
    /// Server-wide budget of requests held (from their `command-name`
    /// frame until their answer went out), shared by every reactor given
    /// the same handle (default none). A message or session holds its
    /// first [`FREE_REQUESTS`](super::FREE_REQUESTS) without it; past it, a
    /// request that does not fit is the protocol error `too-many-requests`.
    pub held_request_budget: Option<SharedBudget>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_receiving_requests: 64,
            max_requests_per_message: 4096,
            max_arguments: 64,
            max_argument_bytes: 1 << 20,
            max_unanswered_argument_bytes: 8 << 20,
            max_running_commands: 16,
            max_message_bytes: 16 << 30,
            answer_chunk_size: PREFERRED_PAYLOAD_SIZE,
            max_encoded_streams: 2,
            decoder_budget: None,
            held_argument_budget: None,
            held_request_budget: None,
        }
    }
}
