//! Answer bytes on their way from a message to hyper, and the server-wide
//! budget for them (`--output-buffer`).
//!
//! A chunk is charged from when it is made until hyper asks for the next
//! one (by then it has written the chunk out, or — HTTP/2 — handed it to
//! the connection's flow control). Each message may always have one chunk
//! on its way without the budget, so every message makes progress however
//! full the budget is; further chunks take budget, and wait for it (or for
//! the message's own chunk to drain). A client that stops reading thus
//! holds at most one free chunk and one charged chunk per message until
//! the send timeout cuts it, and all of them together at most the budget
//! beyond their free chunks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Units of the output budget: KiB.
const UNIT: usize = 1024;

/// The server-wide output budget.
#[derive(Debug, Clone)]
pub(crate) struct OutputBudget {
    slots: Arc<Semaphore>,
    units: u32,
}

impl OutputBudget {
    /// A budget of `bytes` of output buffer.
    pub(crate) fn new(bytes: usize) -> OutputBudget {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        OutputBudget {
            slots: Arc::new(Semaphore::new(units as usize)),
            units,
        }
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
    _permit: Option<OwnedSemaphorePermit>,
    flow: Arc<Outflow>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.flow.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.flow.drained.notify_one();
    }
}

impl Outflow {
    /// A charge for a chunk of `len` bytes: free if none of the message's
    /// chunks is on its way, else `len` of `budget` — waiting for it, or
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
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return self.charged(None);
            }
            tokio::select! {
                permit = budget.slots.clone().acquire_many_owned(units) => {
                    if let Ok(permit) = permit {
                        return self.charged(Some(permit));
                    }
                    // Never closed; wait for the drain instead.
                    drained.await;
                }
                () = &mut drained => {}
            }
        }
    }

    fn charged(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>) -> Charge {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Charge {
            _permit: permit,
            flow: self.clone(),
        }
    }
}
