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

/// Default of `GatewayConfig::memory_budget`: 160 MiB, which with the
/// server's own baseline and per-connection costs (not counted here)
/// keeps it under 256 MiB of RSS.
pub const MEMORY_BUDGET: usize = 160 << 20;

/// What a zstd decoder of a client stream costs, at its largest window
/// (8 MiB, `zstd-8mb`) with its buffers and context.
pub const DECODER_COST: usize = (8 << 20) + (384 << 10);

/// What a request held by a reactor costs at most, whatever its arguments
/// (which are charged by the byte): its record, its place in the driver's
/// maps, its deferred call and, for a long command name with an error
/// answer, the error's text — measured at up to ~1.1 KB.
pub const HELD_REQUEST_COST: usize = 1_152;

/// What a message's answer compressor costs (zstd level 3, 8 MiB window
/// limit: about 2.5 MiB).
pub const COMPRESSOR_COST: usize = (2 << 20) + (640 << 10);

use std::time::Duration;

use bytes::Bytes;
use framegate_wire::budget::Permit;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::command::Chunk;
use crate::gateway::Gateway;

/// How often upload data waiting for the memory budget looks again (the
/// budget has no waiters to wake: reactors give it back without async).
const MEMORY_RETRY: Duration = Duration::from_millis(5);

/// A message's answer compressor's charges: a compressor slot and its
/// cost in memory, or none (the message is answered unencoded).
#[derive(Debug)]
pub(crate) struct CompressorCharge {
    _slot: OwnedSemaphorePermit,
    _memory: Permit,
}

/// A compressor for a message, if the compressor slots and the memory
/// budget have room for one.
pub(crate) fn compressor(gw: &Gateway) -> Option<CompressorCharge> {
    let slot = gw.compressor_slots.clone().try_acquire_owned().ok()?;
    let memory = gw.memory.try_take(COMPRESSOR_COST)?;
    Some(CompressorCharge {
        _slot: slot,
        _memory: memory,
    })
}

/// What a queued piece of upload data holds until its command takes it.
#[derive(Debug)]
pub(crate) struct UploadCharge {
    _queued: Option<OwnedSemaphorePermit>,
    _memory: Option<Permit>,
}

/// Queues `data` for the command staging it, charged on the queued-upload
/// budget (KiB, `max_queued_upload_bytes`) and the memory budget; waits
/// for both (backpressure on the message's input). With the memory budget
/// spent elsewhere, the piece goes uncharged once the command took all it
/// had queued, so a message makes progress with one piece per command.
pub(crate) async fn queue_upload(
    gw: &Gateway,
    tx: mpsc::Sender<Chunk>,
    data: Bytes,
) -> Result<(), mpsc::error::SendError<Chunk>> {
    let units = u32::try_from(data.len().div_ceil(1024).max(1))
        .unwrap_or(u32::MAX)
        .min(gw.upload_budget_units);
    let queued = gw
        .upload_budget
        .clone()
        .acquire_many_owned(units)
        .await
        .ok();
    let memory = loop {
        if let Some(permit) = gw.memory.try_take(units as usize * 1024) {
            break Some(permit);
        }
        if tx.capacity() == tx.max_capacity() {
            break None;
        }
        tokio::time::sleep(MEMORY_RETRY).await;
    };
    let charge = UploadCharge {
        _queued: queued,
        _memory: memory,
    };
    tx.send(Chunk::Data(data, charge)).await
}
