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
//! While its body is still arriving, a message's counted commands also
//! take a slot of the server's *receiving tier* (half the `open_answers`
//! slots, [`crate::limits::receiving_slots`]), given back when its input ends: messages
//! whose body never ends (trickled just above the minimum rate) can hold
//! at most half of the server's slots, and messages that finished sending
//! always find the other half.
//!
//! Commands with data are not counted here: they start as their frames
//! arrive (to stage the data) and the input must never wait for a budget
//! that only sending — after the input ended — can free. They are bounded
//! by the reactor's `max_receiving_requests`.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use framegate_wire::RequestId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::runs::RunId;

/// A server-wide slot, with its receiving-tier slot while the message's
/// body is still arriving.
pub(super) type Slot = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

pub(super) struct Budget {
    /// Released commands not started yet, in release order.
    waiting: VecDeque<RequestId>,
    /// Running counted commands, each with its server-wide slot.
    running: HashMap<RunId, OwnedSemaphorePermit>,
    max_open: usize,
    max_held: usize,
    slots: Arc<Semaphore>,
    /// The receiving tier, while the input has not ended.
    receiving: Option<Arc<Semaphore>>,
    /// Receiving-tier slots held: one per counted command or open answer.
    tier: Vec<OwnedSemaphorePermit>,
    /// No command starts (see [`Budget::hold`]).
    held: bool,
}

impl Budget {
    pub(super) fn new(
        max_open: usize,
        max_held: usize,
        slots: Arc<Semaphore>,
        receiving: Arc<Semaphore>,
    ) -> Budget {
        Budget {
            waiting: VecDeque::new(),
            running: HashMap::default(),
            max_open: max_open.max(1),
            max_held: max_held.max(1),
            slots,
            receiving: Some(receiving),
            tier: Vec::new(),
            held: false,
        }
    }

    /// Holds (`true`) or lets go (`false`) the start of waiting commands:
    /// held while the client takes no output, so a message nobody reads
    /// makes no more answers than it has, while its finished commands
    /// still give their slots back.
    pub(super) fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// The input ended: the receiving-tier slots are given back.
    pub(super) fn input_ended(&mut self) {
        self.receiving = None;
        self.tier.clear();
    }

    /// Gives back receiving-tier slots beyond one per counted command or
    /// open answer (`open`).
    pub(super) fn sync(&mut self, open: usize) {
        let counted = self.running.len() + open;
        if self.tier.len() > counted {
            self.tier.truncate(counted);
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
        !self.held && self.running.len() + open < self.max_open && held < self.max_held
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
        slot: &mut Option<Slot>,
    ) -> Option<(RequestId, Slot)> {
        if self.waiting.is_empty() || !self.has_room(open, held) {
            return None;
        }
        let (main, tier) = match slot.take() {
            Some(slot) => slot,
            None => {
                let tier = match &self.receiving {
                    Some(tier) => Some(tier.clone().try_acquire_owned().ok()?),
                    None => None,
                };
                (self.slots.clone().try_acquire_owned().ok()?, tier)
            }
        };
        // A tier slot taken before the input ended and given after is
        // not needed any more (dropped here).
        let tier = tier.filter(|_| self.receiving.is_some());
        let id = self.waiting.pop_front()?;
        Some((id, (main, tier)))
    }

    /// A command started as `run` holding `slot`.
    pub(super) fn started(&mut self, run: RunId, slot: Slot) {
        let (main, tier) = slot;
        self.running.insert(run, main);
        self.tier.extend(tier);
    }

    /// `run` ended: its slot, if it was counted (kept by a lazy answer, or
    /// dropped to free it).
    pub(super) fn ended(&mut self, run: RunId) -> Option<OwnedSemaphorePermit> {
        self.running.remove(&run)
    }

    /// Waits for a server-wide slot, and before it a receiving-tier slot
    /// while the input has not ended (the semaphores are never closed).
    pub(super) async fn slot(&self) -> Slot {
        let tier = match &self.receiving {
            Some(tier) => match tier.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => std::future::pending().await,
            },
            None => None,
        };
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => (permit, tier),
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
        let mut b = Budget::new(2, 100, slots.clone(), Arc::new(Semaphore::new(5)));
        b.wait(RequestId(1));
        b.wait(RequestId(3));
        b.wait(RequestId(5));
        let mut none = None;
        // Held bytes at the budget: nothing starts.
        assert!(b.next(0, 100, &mut none).is_none());
        // One open lazy answer: one more may run.
        let (id, slot) = b.next(1, 0, &mut none).unwrap();
        assert_eq!(id, RequestId(1));
        assert_eq!(slots.available_permits(), 9);
        drop(slot);
        assert_eq!(slots.available_permits(), 10);
    }

    #[test]
    fn held_starts_wait_for_nothing_until_let_go() {
        let slots = Arc::new(Semaphore::new(10));
        let mut b = Budget::new(8, 100, slots.clone(), Arc::new(Semaphore::new(5)));
        b.wait(RequestId(1));
        b.hold(true);
        let mut none = None;
        assert!(!b.wants_slot(0, 0));
        assert!(b.next(0, 0, &mut none).is_none());
        assert_eq!(slots.available_permits(), 10);
        b.hold(false);
        assert!(b.wants_slot(0, 0));
        assert_eq!(b.next(0, 0, &mut none).unwrap().0, RequestId(1));
    }

    #[test]
    fn no_server_slot_no_start_until_one_is_given() {
        let slots = Arc::new(Semaphore::new(0));
        let mut b = Budget::new(8, 100, slots.clone(), Arc::new(Semaphore::new(5)));
        b.wait(RequestId(1));
        let mut none = None;
        assert!(b.next(0, 0, &mut none).is_none());
        assert!(b.wants_slot(0, 0));
        slots.add_permits(1);
        let mut given = slots.clone().try_acquire_owned().ok().map(|p| (p, None));
        assert_eq!(b.next(0, 0, &mut given).unwrap().0, RequestId(1));
        assert!(!b.wants_slot(0, 0));
    }

    #[tokio::test]
    async fn receiving_messages_hold_at_most_the_tier() {
        let slots = Arc::new(Semaphore::new(4));
        let tier = Arc::new(Semaphore::new(crate::limits::receiving_slots(4)));
        let mut hog = Budget::new(16, 100, slots.clone(), tier.clone());
        for i in 0..4 {
            hog.wait(RequestId(2 * i + 1));
        }
        let mut none = None;
        let mut started = Vec::new();
        while let Some((_, slot)) = hog.next(0, 0, &mut none) {
            started.push(slot);
        }
        // Still receiving: only the tier's 2 of the 4 slots.
        assert_eq!(started.len(), 2);
        assert_eq!(slots.available_permits(), 2);
        // A message whose input ended finds the rest.
        let mut done = Budget::new(16, 100, slots.clone(), tier.clone());
        done.input_ended();
        done.wait(RequestId(1));
        done.wait(RequestId(3));
        let first = done.next(0, 0, &mut none);
        let second = done.next(0, 0, &mut none);
        assert!(first.is_some() && second.is_some());
        // The hog's commands run; when its input ends, its tier slots
        // come back (the server-wide ones stay with the commands).
        for (i, slot) in started.into_iter().enumerate() {
            hog.started(RunId(i as u64), slot);
        }
        assert_eq!(tier.available_permits(), 0);
        hog.input_ended();
        assert_eq!(tier.available_permits(), 2);
        assert_eq!(slots.available_permits(), 0);
    }
}
