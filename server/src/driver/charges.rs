//! What a message's driver charges on the server's memory budget
//! (`crate::memory`) beyond what the reactor does: its answer compressor,
//! and request data queued for commands staging it.

use std::time::Duration;

use bytes::Bytes;
use framegate_wire::budget::Permit;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::command::{Chunk, UploadCharge};
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
    let memory = gw.memory.try_take(crate::COMPRESSOR_COST)?;
    Some(CompressorCharge {
        _slot: slot,
        _memory: memory,
    })
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
    let charge = UploadCharge::new(queued, memory);
    tx.send(Chunk::Data(data, charge)).await
}
