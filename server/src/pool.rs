//! The pool that runs blocking file work off the async executor, shared
//! fairly between messages.
//!
//! Every job belongs to a [`Share`] (one per message; work outside a
//! message gets a share of its own). Idle threads take jobs round-robin
//! across the shares that have work, and no share runs more than
//! [`MAX_SHARE_THREADS`] jobs at once: a message that lists huge
//! directories cannot make a bystander's small `get` wait behind its queue,
//! only — at worst — behind the shortest of the jobs already running.
//!
//! Idle threads sleep on a condition variable (no spinning). A dedicated
//! pool costs about a microsecond per job where tokio's `spawn_blocking`
//! cost about ten (measured on a 1,000-`get` batch).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use crate::answer::CommandError;

/// Threads of the file-I/O pool.
pub const FILE_IO_THREADS: usize = 8;

/// Most jobs one share runs at once: the rest of the threads stay free for
/// other messages.
pub const MAX_SHARE_THREADS: usize = FILE_IO_THREADS * 3 / 4;

/// Whose work a pool job is: jobs of one share queue behind each other,
/// shares take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Share(u64);

impl Share {
    /// A share of its own.
    pub(crate) fn new() -> Share {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Share(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

tokio::task_local! {
    static CURRENT: Share;
}

/// Runs `fut` with its pool jobs counted against `share`.
pub(crate) async fn in_share<F: Future>(share: Share, fut: F) -> F::Output {
    CURRENT.scope(share, fut).await
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queues {
    /// Queued jobs per share (a share is here only while it has some).
    queued: HashMap<Share, VecDeque<Job>>,
    /// Shares with queued jobs that may run one now, in turn order.
    ready: VecDeque<Share>,
    /// Jobs running per share (a share is here only while it runs some).
    running: HashMap<Share, usize>,
}

impl Queues {
    fn push(&mut self, share: Share, job: Job) {
        let queue = self.queued.entry(share).or_default();
        queue.push_back(job);
        let runs = self.running.get(&share).copied().unwrap_or(0);
        if queue.len() == 1 && runs < MAX_SHARE_THREADS {
            self.ready.push_back(share);
        }
    }

    /// The next job to run, taking turns between shares.
    fn pop(&mut self) -> Option<(Share, Job)> {
        let share = self.ready.pop_front()?;
        let queue = self.queued.get_mut(&share)?;
        let job = queue.pop_front()?;
        let runs = self.running.entry(share).or_insert(0);
        *runs += 1;
        if queue.is_empty() {
            self.queued.remove(&share);
        } else if *runs < MAX_SHARE_THREADS {
            self.ready.push_back(share);
        }
        Some((share, job))
    }

    /// A job of `share` ended; returns whether a job became runnable.
    fn done(&mut self, share: Share) -> bool {
        let runs = self.running.get(&share).copied().unwrap_or(1);
        if runs <= 1 {
            self.running.remove(&share);
        } else {
            self.running.insert(share, runs - 1);
        }
        // It was held back at the cap: it may run again.
        if runs == MAX_SHARE_THREADS && self.queued.contains_key(&share) {
            self.ready.push_back(share);
            return true;
        }
        false
    }
}

struct Pool {
    queues: Mutex<Queues>,
    work: Condvar,
}

impl Pool {
    fn start() -> std::io::Result<&'static Pool> {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
        }));
        for i in 0..FILE_IO_THREADS {
            std::thread::Builder::new()
                .name(format!("framegate-fs-{i}"))
                .spawn(move || pool.work_loop())?;
        }
        Ok(pool)
    }

    fn work_loop(&self) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some((share, job)) = queues.pop() else {
                queues = self.work.wait(queues).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            drop(queues);
            // A panicking job drops its answer channel: its caller sees
            // "file task dropped", the thread lives on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            if queues.done(share) {
                self.work.notify_one();
            }
        }
    }

    fn submit(&self, share: Share, job: Job) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.push(share, job);
        drop(queues);
        self.work.notify_one();
    }
}

/// The pool, or `None` if its threads could not be started (then tokio's
/// blocking pool is used).
fn file_pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        Pool::start()
            .map_err(
                |e| tracing::warn!(error = %e, "no file-I/O pool; using tokio's blocking pool"),
            )
            .ok()
    })
}

/// Runs blocking file work on the file-I/O pool, counted against the
/// current task's [`Share`] (see [`in_share`]; a share of its own outside).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    let Some(pool) = file_pool() else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(CommandError::internal)?;
    };
    let share = CURRENT.try_with(|s| *s).unwrap_or_else(|_| Share::new());
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.submit(
        share,
        Box::new(move || {
            let _ = tx.send(f());
        }),
    );
    rx.await
        .map_err(|_| CommandError::internal("file task dropped"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Box::new(|| {})
    }

    #[test]
    fn shares_take_turns() {
        let mut q = Queues::default();
        let (a, b) = (Share(1), Share(2));
        for _ in 0..4 {
            q.push(a, job());
        }
        q.push(b, job());
        let order: Vec<Share> = std::iter::from_fn(|| q.pop().map(|(s, _)| s))
            .take(3)
            .collect();
        assert_eq!(order, vec![a, b, a]);
    }

    #[test]
    fn a_share_runs_at_most_its_cap() {
        let mut q = Queues::default();
        let a = Share(1);
        for _ in 0..FILE_IO_THREADS * 2 {
            q.push(a, job());
        }
        let mut started = 0;
        while q.pop().is_some() {
            started += 1;
        }
        assert_eq!(started, MAX_SHARE_THREADS);
        // One ends: one more may start; a newcomer is served meanwhile.
        let b = Share(2);
        q.push(b, job());
        assert!(q.done(a));
        let next: Vec<Share> = std::iter::from_fn(|| q.pop().map(|(s, _)| s)).collect();
        assert_eq!(next, vec![b, a]);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_dead_pool() {
        let err = blocking::<()>(|| panic!("boom")).await.unwrap_err();
        assert_eq!(err.code, framegate_wire::ErrorCode::INTERNAL);
        assert_eq!(blocking(|| Ok(7)).await.unwrap(), 7);
    }
}
