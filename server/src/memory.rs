//! The server's memory budget: one count in bytes that every kind of
//! memory a client can make the server hold draws on, each kind keeping
//! its own cap (`GatewayConfig::memory_budget`, docs/resources.md).
//!
//! The caps alone add up past what a small machine has (decoder windows,
//! held requests and arguments, the output buffer, listings, queued upload
//! data, compressors: about 680 MiB at their defaults), and a sixth attack
//! filled two kinds at once to 393 MiB. So each kind also charges this
//! budget at its worst-case cost per unit, and when the budget is spent a
//! kind behaves as at its own cap: a decoder, held request or held argument
//! is refused by the reactor (`too-many-requests`, `too-large`), a listing
//! is answered 503, a message is answered unencoded, output goes one chunk
//! at a time, and upload data waits.
//!
//! Connections and messages have fixed worst-case costs too (a
//! connection's buffers, a message's free share of requests and output)
//! that cannot wait or be refused without starving bystanders, so they
//! are reserved up front: `max_connections × CONNECTION_COST +
//! max_messages × MESSAGE_COST` comes off the budget at start, and the
//! defaults of both are capped so that the reserve is at most
//! [`CONNECTION_SHARE`] and [`MESSAGE_SHARE`] of it. The budget thus
//! bounds everything a client can make the server hold.

/// Default of `GatewayConfig::memory_budget`: 192 MiB, which with the
/// server's own baseline (~30 MiB: code, runtime, threads) keeps it under
/// 256 MiB of RSS.
pub const MEMORY_BUDGET: usize = 192 << 20;

/// The part of the memory budget that default `max_connections` may
/// reserve (a quarter).
pub const CONNECTION_SHARE: usize = 4;

/// The part of the memory budget that default `max_messages` may reserve
/// (an eighth).
pub const MESSAGE_SHARE: usize = 8;

/// What a zstd decoder of a client stream costs, at its largest window
/// (8 MiB, `zstd-8mb`) with its buffers and context.
pub const DECODER_COST: usize = (8 << 20) + (384 << 10);

/// What a request held by a reactor costs at most, whatever its arguments
/// (which are charged by the byte): its record, its place in the driver's
/// maps, its deferred call and, for a long command name with an error
/// answer, the error's text — measured at up to ~1.1 KB.
pub const HELD_REQUEST_COST: usize = 1_152;

/// Most an HTTP/2 connection buffers of request bodies not yet read (its
/// receive window); hyper's default, 1 MiB, let 305 connections whose
/// messages waited for a slot hold 309 MiB (seventh attack's F1).
pub const H2_CONNECTION_WINDOW: u32 = 128 << 10;

/// Most one HTTP/2 stream (a message) buffers of its body not yet read
/// (the protocol's default window).
pub const H2_STREAM_WINDOW: u32 = 64 << 10;

/// What a connection costs at most while it is open, whatever it sends:
/// the largest of hyper's HTTP/1 buffer ([`crate::HTTP1_MAX_BUF`], 128
/// KiB: a head or body read and answers queued), an HTTP/2 connection's
/// receive window with its tables and frame buffers, and a byte-stream
/// session (its read buffer and, being a message of its own, a
/// [`MESSAGE_COST`]). 4,000 HTTP/1 connections with unfinished 120 KB heads
/// once held 527 MiB (seventh attack's F2).
pub const CONNECTION_COST: usize = 192 << 10;

/// What a message (or byte-stream session) costs at most beyond what the
/// budget counts by kind: the requests it may hold without the held-request
/// budget ([`framegate_wire::FREE_REQUESTS`], 64) and its output chunk sent
/// without the output budget (32 KiB).
pub const MESSAGE_COST: usize = framegate_wire::FREE_REQUESTS * HELD_REQUEST_COST + (40 << 10);

/// Smallest `--memory-budget`.
pub const MIN_MEMORY_BUDGET: usize = 16 << 20;

/// The most connections a memory budget's default reserves for.
pub fn connections_for(memory_budget: usize) -> usize {
    (memory_budget / CONNECTION_SHARE / CONNECTION_COST).max(16)
}

/// The most messages a memory budget's default reserves for.
pub fn messages_for(memory_budget: usize) -> usize {
    (memory_budget / MESSAGE_SHARE / MESSAGE_COST).max(16)
}

/// What `max_connections` connections and `max_messages` messages reserve.
pub fn reserve_for(max_connections: usize, max_messages: usize) -> usize {
    max_connections
        .saturating_mul(CONNECTION_COST)
        .saturating_add(max_messages.saturating_mul(MESSAGE_COST))
}

/// The budget left to the kinds after the reserve; at least a quarter of
/// the budget, so settings that reserve more (raised `--max-connections`
/// or `--max-messages`) raise the bound rather than refuse everything.
pub(crate) fn pool_for(memory_budget: usize, reserve: usize) -> usize {
    memory_budget.saturating_sub(reserve).max(memory_budget / 4)
}

/// What a message's answer compressor costs (zstd level 3, 8 MiB window
/// limit: about 2.5 MiB).
pub const COMPRESSOR_COST: usize = (2 << 20) + (640 << 10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_reserves_a_bounded_share_and_leaves_the_rest() {
        let (conns, msgs) = (connections_for(MEMORY_BUDGET), messages_for(MEMORY_BUDGET));
        assert_eq!((conns, msgs), (256, 219));
        let reserve = reserve_for(conns, msgs);
        assert!(reserve <= MEMORY_BUDGET / CONNECTION_SHARE + MEMORY_BUDGET / MESSAGE_SHARE);
        let pool = pool_for(MEMORY_BUDGET, reserve);
        assert_eq!(pool + reserve, MEMORY_BUDGET);
        // Room for every kind's cap but not all at once: at least 120 MiB.
        assert!(pool >= 120 << 20, "{pool}");
        // A reserve past the budget (raised limits) leaves a quarter.
        assert_eq!(pool_for(MEMORY_BUDGET, usize::MAX), MEMORY_BUDGET / 4);
        // The smallest budget still serves 16 connections and messages.
        assert_eq!(connections_for(MIN_MEMORY_BUDGET), 21);
        assert_eq!(messages_for(MIN_MEMORY_BUDGET), 18);
        assert_eq!(connections_for(0), 16);
    }
}
