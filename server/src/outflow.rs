//! Answer bytes on their way from a message to hyper, and the server-wide
//! budget for them (`--output-buffer`).
//!
//! A chunk is charged from when it is made until hyper asks for the next
//! one (by then it has written the chunk out, or — HTTP/2 — handed it to
//! the connection's flow control). A chunk takes budget when there is
//! some; when there is none, a message with no chunk on its way may still
//! send a small one ([`FREE_CHUNK`]) without it, so every message makes
//! progress however full the budget is; otherwise it waits for budget or
//! for its own chunk to drain. A client that stops reading thus holds at
//! most one charged and one free chunk per message until the send timeout
//! cuts it, and all of them together at most the budget plus a free chunk
//! per message. (HTTP/2 is why the free chunk is small: hyper hands a whole
//! chunk to the stream, which holds it while the client grants no window;
//! 512 such streams once held 256 KiB each.) A charged chunk also draws
//! on the server's memory budget (`--memory-budget`); when that is spent
//! elsewhere, a message goes on as if this budget were.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use framegate_wire::SharedBudget;
use framegate_wire::budget::Permit;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Units of the output budget: KiB.
const UNIT: usize = 1024;

/// The most a chunk sent without budget holds (a single larger frame
/// makes one larger): one frame of the preferred size.
pub(crate) const FREE_CHUNK: usize = 32 * 1024;

/// The server-wide output budget.
#[derive(Debug, Clone)]
pub(crate) struct OutputBudget {
    slots: Arc<Semaphore>,
    units: u32,
    memory: SharedBudget,
}

impl OutputBudget {
    /// A budget of `bytes` of output buffer.
    pub(crate) fn new(bytes: usize, memory: &SharedBudget) -> OutputBudget {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        OutputBudget {
            slots: Arc::new(Semaphore::new(units as usize)),
            units,
            memory: memory.clone(),
        }
    }

    /// `units` of this budget with their bytes of the memory budget, if
    /// both have room (`permit`: the units, already taken).
    fn with_memory(
        &self,
        permit: OwnedSemaphorePermit,
        units: u32,
    ) -> Option<(OwnedSemaphorePermit, Permit)> {
        let bytes = self.memory.try_take(units as usize * UNIT)?;
        Some((permit, bytes))
    }

    /// Bytes free now.
    pub(crate) fn free(&self) -> usize {
        self.slots.available_permits() * UNIT
    }
}

/// One message's chunks on their way.
#[derive(Debug, Default)]
pub(crate) struct Outflow {
    in_flight: AtomicUsize,
    drained: Notify,
}

/// What one chunk holds until hyper asks for the next.
#[derive(Debug)]
pub(crate) struct Charge {
    _permit: Option<(OwnedSemaphorePermit, Permit)>,
    flow: Arc<Outflow>,
    limit: usize,
}

impl Charge {
    /// How large the chunk may be made: what was charged, or
    /// [`FREE_CHUNK`] if it goes free.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.flow.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.flow.drained.notify_one();
    }
}

impl Outflow {
    /// A charge for a chunk of `len` bytes: `len` of `budget` if it has
    /// that free; else free (of at most [`FREE_CHUNK`]) if none of the
    /// message's chunks is on its way; else waiting for the budget or
    /// until the message's chunks drained. Called by the message's one
    /// writer only.
    pub(crate) async fn charge(self: &Arc<Self>, budget: &OutputBudget, len: usize) -> Charge {
        let units = u32::try_from(len.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, budget.units);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let free_units = budget.slots.clone().try_acquire_many_owned(units).ok();
            let memory_spent = free_units.is_some();
            if let Some(charged) = free_units.and_then(|p| budget.with_memory(p, units)) {
                return self.charged(Some(charged), len);
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return self.charged(None, len.min(FREE_CHUNK));
            }
            if memory_spent {
                // The output budget has room, the memory budget none: wait
                // for this message's own chunk (budget freed elsewhere is
                // seen on the next turn).
                drained.await;
                continue;
            }
            tokio::select! {
                permit = budget.slots.clone().acquire_many_owned(units) => {
                    if let Some(charged) = permit.ok().and_then(|p| budget.with_memory(p, units)) {
                        return self.charged(Some(charged), len);
                    }
                    // Never closed, so the memory budget is spent: wait
                    // for the drain instead.
                    drained.await;
                }
                () = &mut drained => {}
            }
        }
    }

    fn charged(
        self: &Arc<Self>,
        permit: Option<(OwnedSemaphorePermit, Permit)>,
        limit: usize,
    ) -> Charge {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Charge {
            _permit: permit,
            flow: self.clone(),
            limit,
        }
    }
}
