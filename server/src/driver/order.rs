//! §6 ordering as data: which complete commands may take effect now.
//!
//! Commands enter in the order their requests became complete (the
//! reactor's `seq`). A read is released once every earlier write has
//! finished; a write once every earlier command has finished; and no more
//! than `max_running` released commands are unfinished at once. Nothing
//! here waits or spawns: the driver calls [`Order::complete`] and
//! [`Order::finish`] and starts whatever they return.
//!
//! ```text
//!   complete(seq) ──► Waiting ──(earlier work done, a slot free)──► Released
//!                                                                     │
//!                                                 finish(id) ─────────┴──► Finished
//! ```
//! Finished entries leave from the front; the queue holds only commands
//! that are waiting, running, or finished behind an unfinished one.

use std::collections::VecDeque;

use framegate_wire::RequestId;

use crate::command::Access;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Released,
    Finished,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    id: RequestId,
    access: Access,
    state: State,
}

/// The ordering of one message's complete commands.
#[derive(Debug)]
pub(crate) struct Order {
    queue: VecDeque<Entry>,
    running: usize,
    max_running: usize,
}

impl Order {
    pub(crate) fn new(max_running: usize) -> Self {
        Order {
            queue: VecDeque::new(),
            running: 0,
            max_running: max_running.max(1),
        }
    }

    /// A request became complete (`seq` from the reactor, increasing).
    /// Returns the commands to release now.
    #[must_use]
    pub(crate) fn complete(&mut self, seq: u64, id: RequestId, access: Access) -> Vec<RequestId> {
        debug_assert!(self.queue.back().is_none_or(|e| e.seq < seq));
        self.queue.push_back(Entry {
            seq,
            id,
            access,
            state: State::Waiting,
        });
        self.release()
    }

    /// A command finished (its answer or error is known; it took effect).
    /// Unknown ids (never complete) are ignored. Returns the commands to
    /// release now.
    #[must_use]
    pub(crate) fn finish(&mut self, id: RequestId) -> Vec<RequestId> {
        let Some(entry) = self.queue.iter_mut().find(|e| e.id == id) else {
            return Vec::new();
        };
        match entry.state {
            State::Released => self.running -= 1,
            State::Waiting | State::Finished => {}
        }
        entry.state = State::Finished;
        while self
            .queue
            .front()
            .is_some_and(|e| e.state == State::Finished)
        {
            self.queue.pop_front();
        }
        self.release()
    }

    /// Commands released and not finished.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    fn release(&mut self) -> Vec<RequestId> {
        let mut released = Vec::new();
        let mut earlier_unfinished = false;
        for entry in &mut self.queue {
            if self.running >= self.max_running {
                break;
            }
            let unfinished = entry.state != State::Finished;
            if entry.state == State::Waiting {
                let free = match entry.access {
                    Access::Read => true,
                    Access::Write => !earlier_unfinished,
                };
                if free {
                    entry.state = State::Released;
                    self.running += 1;
                    released.push(entry.id);
                }
            }
            // Nothing after an unfinished write may start.
            if unfinished && entry.access == Access::Write {
                break;
            }
            earlier_unfinished |= unfinished;
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Access = Access::Read;
    const W: Access = Access::Write;

    fn id(n: u16) -> RequestId {
        RequestId(n)
    }

    #[test]
    fn reads_run_together_writes_are_barriers() {
        let mut order = Order::new(16);
        assert_eq!(order.complete(0, id(1), R), vec![id(1)]);
        assert_eq!(order.complete(1, id(3), R), vec![id(3)]);
        // The write waits for both reads; the read after it for the write.
        assert_eq!(order.complete(2, id(5), W), vec![]);
        assert_eq!(order.complete(3, id(7), R), vec![]);
        assert_eq!(order.finish(id(3)), vec![]);
        assert_eq!(order.finish(id(1)), vec![id(5)]);
        assert_eq!(order.finish(id(5)), vec![id(7)]);
        assert_eq!(order.finish(id(7)), vec![]);
        assert_eq!(order.running(), 0);
        assert!(order.queue.is_empty());
    }

    #[test]
    fn consecutive_writes_run_one_at_a_time() {
        let mut order = Order::new(16);
        assert_eq!(order.complete(0, id(1), W), vec![id(1)]);
        assert_eq!(order.complete(1, id(3), W), vec![]);
        assert_eq!(order.complete(2, id(5), W), vec![]);
        assert_eq!(order.finish(id(1)), vec![id(3)]);
        assert_eq!(order.finish(id(3)), vec![id(5)]);
    }

    #[test]
    fn a_write_waits_for_a_read_that_finished_out_of_order() {
        let mut order = Order::new(16);
        assert_eq!(order.complete(0, id(1), R), vec![id(1)]);
        assert_eq!(order.complete(1, id(3), R), vec![id(3)]);
        assert_eq!(order.complete(2, id(5), W), vec![]);
        // The second read finishing leaves the first one in front.
        assert_eq!(order.finish(id(3)), vec![]);
        assert_eq!(order.queue.len(), 3);
        assert_eq!(order.finish(id(1)), vec![id(5)]);
    }

    #[test]
    fn the_running_limit_holds_and_releases_in_order() {
        let mut order = Order::new(2);
        assert_eq!(order.complete(0, id(1), R), vec![id(1)]);
        assert_eq!(order.complete(1, id(3), R), vec![id(3)]);
        assert_eq!(order.complete(2, id(5), R), vec![]);
        assert_eq!(order.complete(3, id(7), R), vec![]);
        assert_eq!(order.finish(id(3)), vec![id(5)]);
        assert_eq!(order.finish(id(1)), vec![id(7)]);
        assert_eq!(order.running(), 2);
    }

    #[test]
    fn a_command_that_finished_before_its_turn_releases_nothing_twice() {
        // A command with data can fail while still receiving (before it is
        // complete); `finish` of an id not yet complete is ignored and the
        // driver marks it finished when it completes.
        let mut order = Order::new(16);
        assert_eq!(order.finish(id(9)), vec![]);
        assert_eq!(order.complete(0, id(1), W), vec![id(1)]);
        assert_eq!(order.finish(id(1)), vec![]);
        assert_eq!(order.running(), 0);
    }

    #[test]
    fn thousands_of_reads_behind_a_write() {
        let mut order = Order::new(16);
        assert_eq!(order.complete(0, id(1), W), vec![id(1)]);
        for n in 1..4000u16 {
            assert!(order.complete(u64::from(n), id(2 * n + 1), R).is_empty());
        }
        let released = order.finish(id(1));
        assert_eq!(released.len(), 16);
        assert_eq!(released.first(), Some(&id(3)));
    }
}
