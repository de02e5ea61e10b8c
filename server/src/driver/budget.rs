//! The budgets a message's commands run within.
//!
//! Commands without data are started only while the message has room:
//! fewer than `message_open_answers` of its commands running or holding an
//! answer open (a lazy answer keeps its file open until sent), fewer than
//! `message_held_bytes` of answer bytes queued for sending, and a free
//! slot in the server-wide `open_answers` budget (one per running command
//! or open answer, across all messages). Commands the ordering released
//! beyond that wait here, in release order, and start as sending makes room:
//! backpressure instead of failure, §6 ordering unchanged (only commands
//! that may run together are ever released together), and each answer
//! still reflects the state when its command ran.
//!
//! Commands with data are not counted here: they start as their frames
//! arrive (to stage the data) and the input must never wait for a budget
//! that only sending — after the input ended — can free. They are bounded
//! by the reactor's `max_receiving_requests`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use framegate_wire::RequestId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) struct Budget {
    /// Released commands not started yet, in release order.
    waiting: VecDeque<RequestId>,
    /// Running counted commands, each with its server-wide slot.
    running: HashMap<tokio::task::Id, OwnedSemaphorePermit>,
    max_open: usize,
    max_held: usize,
    slots: Arc<Semaphore>,
}

impl Budget {
    pub(super) fn new(max_open: usize, max_held: usize, slots: Arc<Semaphore>) -> Budget {
        Budget {
            waiting: VecDeque::new(),
            running: HashMap::new(),
            max_open: max_open.max(1),
            max_held: max_held.max(1),
            slots,
        }
    }

    /// A released command waits for room.
    pub(super) fn wait(&mut self, id: RequestId) {
        self.waiting.push_back(id);
    }

    /// A request is gone (aborted): it must not start, even if its id is
    /// reused. At most `max_running_commands` wait, so the scan is short.
    pub(super) fn forget(&mut self, id: RequestId) {
        self.waiting.retain(|w| *w != id);
    }

    /// Whether the message has room for one more command, with `open`
    /// lazy answers and `held` answer bytes queued.
    fn has_room(&self, open: usize, held: usize) -> bool {
        self.running.len() + open < self.max_open && held < self.max_held
    }

    /// Whether a command waits only for a server-wide slot.
    pub(super) fn wants_slot(&self, open: usize, held: usize) -> bool {
        !self.waiting.is_empty() && self.has_room(open, held)
    }

    /// The next waiting command that may start now, with its slot (`slot`
    /// if given, else a free one).
    pub(super) fn next(
        &mut self,
        open: usize,
        held: usize,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<(RequestId, OwnedSemaphorePermit)> {
        if self.waiting.is_empty() || !self.has_room(open, held) {
            return None;
        }
        let permit = match slot.take() {
            Some(permit) => permit,
            None => self.slots.clone().try_acquire_owned().ok()?,
        };
        let id = self.waiting.pop_front()?;
        Some((id, permit))
    }

    /// A command started as `task` holding `slot`.
    pub(super) fn started(&mut self, task: tokio::task::Id, slot: OwnedSemaphorePermit) {
        self.running.insert(task, slot);
    }

    /// `task` ended: its slot, if it was counted (kept by a lazy answer, or
    /// dropped to free it).
    pub(super) fn ended(&mut self, task: tokio::task::Id) -> Option<OwnedSemaphorePermit> {
        self.running.remove(&task)
    }

    /// Waits for a server-wide slot (the semaphore is never closed).
    pub(super) async fn slot(&self) -> OwnedSemaphorePermit {
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_counts_running_open_and_held() {
        let slots = Arc::new(Semaphore::new(10));
        let mut b = Budget::new(2, 100, slots.clone());
        b.wait(RequestId(1));
        b.wait(RequestId(3));
        b.wait(RequestId(5));
        let mut none = None;
        // Held bytes at the budget: nothing starts.
        assert!(b.next(0, 100, &mut none).is_none());
        // One open lazy answer: one more may run.
        let (id, permit) = b.next(1, 0, &mut none).unwrap();
        assert_eq!(id, RequestId(1));
        assert_eq!(slots.available_permits(), 9);
        drop(permit);
        assert_eq!(slots.available_permits(), 10);
    }

    #[test]
    fn no_server_slot_no_start_until_one_is_given() {
        let slots = Arc::new(Semaphore::new(0));
        let mut b = Budget::new(8, 100, slots.clone());
        b.wait(RequestId(1));
        let mut none = None;
        assert!(b.next(0, 0, &mut none).is_none());
        assert!(b.wants_slot(0, 0));
        slots.add_permits(1);
        let mut given = slots.clone().try_acquire_owned().ok();
        assert_eq!(b.next(0, 0, &mut given).unwrap().0, RequestId(1));
        assert!(!b.wants_slot(0, 0));
    }
}
