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
//!
//! Hand-offs are what small jobs cost: waking a sleeping thread is a
//! futex call and two context switches, several times the few
//! microseconds a page-cached `get` takes. So:
//! * a message's task runs inside [`grouped`]: the jobs its commands ask
//!   for during one poll of the task are queued together when the poll
//!   ends, with one wake-up (a message of 1,000 `get`s hands over its jobs
//!   in groups as large as its commands finish, not one by one);
//! * a submission wakes one sleeping thread, and only if there is one;
//! * a thread that takes a job wakes a helper only when the jobs still
//!   queued would take longer than [`HELPER_AFTER`] at the recent job
//!   length (files on a slow disk still get all the threads a share may
//!   have; page-cached ones are read by one or two), or when the job is
//!   one known to take long ([`blocking_heavy`]: directory reads, digests,
//!   `readv`, writes with their `fsync`s) — the jobs queued behind it do
//!   not wait for it;
//! * a thread takes its next job from the share with the fewest jobs
//!   running (round-robin among equals): a bystander's job, woken for,
//!   is not taken after another share's queued slow jobs.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::answer::CommandError;

/// Threads of the file-I/O pool.
pub const FILE_IO_THREADS: usize = 8;

/// Most jobs one share runs at once: the rest of the threads stay free for
/// other messages.
pub const MAX_SHARE_THREADS: usize = FILE_IO_THREADS * 3 / 4;

/// A thread that takes a job wakes another (if one sleeps) when the jobs
/// still queued would take longer than this for the threads running, at
/// the recent job length.
pub const HELPER_AFTER: Duration = Duration::from_micros(250);

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

/// A job and whether it is known to take long.
struct Queued {
    job: Job,
    heavy: bool,
}

#[derive(Default)]
struct Queues {
    /// Queued jobs per share (a share is here only while it has some).
    queued: HashMap<Share, VecDeque<Queued>>,
    /// Shares with queued jobs that may run one now, in turn order.
    ready: VecDeque<Share>,
    /// Jobs running per share (a share is here only while it runs some).
    running: HashMap<Share, usize>,
    /// Jobs queued, all shares.
    queued_jobs: usize,
    /// Jobs running, all shares.
    running_jobs: usize,
    /// Threads waiting for work.
    sleeping: usize,
}

impl Queues {
    fn push(&mut self, share: Share, job: Job, heavy: bool) {
        self.queued_jobs += 1;
        let queue = self.queued.entry(share).or_default();
        queue.push_back(Queued { job, heavy });
        let runs = self.running.get(&share).copied().unwrap_or(0);
        if queue.len() == 1 && runs < MAX_SHARE_THREADS {
            self.ready.push_back(share);
        }
    }

    /// The next job to run: of the ready share with the fewest jobs
    /// running, the first of them in turn order.
    fn pop(&mut self) -> Option<(Share, Queued)> {
        let runs = |share: &Share| self.running.get(share).copied().unwrap_or(0);
        let mut at = 0;
        for (i, share) in self.ready.iter().enumerate() {
            if runs(share) < runs(&self.ready[at]) {
                at = i;
            }
        }
        let share = self.ready.remove(at)?;
        let queue = self.queued.get_mut(&share)?;
        let job = queue.pop_front()?;
        self.queued_jobs -= 1;
        self.running_jobs += 1;
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
        self.running_jobs = self.running_jobs.saturating_sub(1);
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

    /// Whether a thread that just took a job (`heavy`: one known to take
    /// long) should wake a helper: one sleeps, a job may run now, and the
    /// job is heavy or the jobs queued would take longer than
    /// [`HELPER_AFTER`] for the threads running, at `job_ns` each.
    fn wants_helper(&self, heavy: bool, job_ns: u64) -> bool {
        if self.sleeping == 0 || self.ready.is_empty() {
            return false;
        }
        if heavy {
            return true;
        }
        let queued = self.queued_jobs as u64;
        let running = self.running_jobs.max(1) as u64;
        queued.saturating_mul(job_ns) / running > HELPER_AFTER.as_nanos() as u64
    }
}

struct Pool {
    queues: Mutex<Queues>,
    work: Condvar,
    /// The recent job length, nanoseconds (a moving average).
    job_ns: AtomicU64,
}

impl Pool {
    fn start() -> std::io::Result<&'static Pool> {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
            // Until measured, jobs are taken as slow: all threads help.
            job_ns: AtomicU64::new(HELPER_AFTER.as_nanos() as u64),
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
            let Some((share, Queued { job, heavy })) = queues.pop() else {
                queues.sleeping += 1;
                queues = self.work.wait(queues).unwrap_or_else(|e| e.into_inner());
                queues.sleeping -= 1;
                continue;
            };
            let helper = queues.wants_helper(heavy, self.job_ns.load(Ordering::Relaxed));
            drop(queues);
            if helper {
                self.work.notify_one();
            }
            let started = Instant::now();
            // A panicking job drops its answer channel: its caller sees
            // "file task dropped", the thread lives on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let avg = self.job_ns.load(Ordering::Relaxed);
            // An eighth of the new length: a few slow jobs make it slow.
            let avg = avg - avg / 8 + took.min(1_000_000_000) / 8;
            self.job_ns.store(avg, Ordering::Relaxed);
            queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            if queues.done(share) && queues.sleeping > 0 {
                self.work.notify_one();
            }
        }
    }

    /// Queues `jobs`, waking a thread if one sleeps (it wakes helpers as
    /// the queue needs them).
    fn submit(&self, jobs: impl IntoIterator<Item = (Share, Job, bool)>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for (share, job, heavy) in jobs {
            queues.push(share, job, heavy);
        }
        let wake = queues.sleeping > 0 && !queues.ready.is_empty();
        drop(queues);
        if wake {
            self.work.notify_one();
        }
    }
}

thread_local! {
    /// Jobs asked for during the current poll of a [`grouped`] task.
    static GROUPING: RefCell<Option<Vec<(Share, Job, bool)>>> = const { RefCell::new(None) };
}

/// Queues what [`GROUPING`] held before (`outer`: the enclosing group, if
/// this poll is nested in one) when dropped — also if the poll panicked.
struct Group {
    outer: Option<Option<Vec<(Share, Job, bool)>>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        let outer = self.outer.take().unwrap_or(None);
        let jobs = GROUPING.with(|g| std::mem::replace(&mut *g.borrow_mut(), outer));
        if let Some(jobs) = jobs.filter(|jobs| !jobs.is_empty())
            && let Some(pool) = file_pool()
        {
            pool.submit(jobs);
        }
    }
}

/// Runs `fut` with the pool jobs asked for during each of its polls queued
/// together when the poll ends (see the module docs). Every job asked for
/// is queued before the poll returns: nothing waits for a later poll.
pub(crate) fn grouped<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        let outer = GROUPING.with(|g| g.borrow_mut().replace(Vec::new()));
        let _group = Group { outer: Some(outer) };
        fut.as_mut().poll(cx)
    })
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
    run_blocking(false, f).await
}

/// [`blocking`] for work known to take long (a directory read, a digest, a
/// `readv`, a write and its `fsync`s): the thread that takes it wakes a
/// helper for the jobs queued behind it.
pub(crate) async fn blocking_heavy<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    run_blocking(true, f).await
}

async fn run_blocking<T: Send + 'static>(
    heavy: bool,
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    let Some(pool) = file_pool() else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(CommandError::internal)?;
    };
    let share = CURRENT.try_with(|s| *s).unwrap_or_else(|_| Share::new());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    // In a group: queued when the task's poll ends.
    let job = GROUPING.with(|g| match g.borrow_mut().as_mut() {
        Some(group) => {
            group.push((share, job, heavy));
            None
        }
        None => Some(job),
    });
    if let Some(job) = job {
        pool.submit([(share, job, heavy)]);
    }
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
            q.push(a, job(), false);
        }
        q.push(b, job(), false);
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
            q.push(a, job(), false);
        }
        let mut started = 0;
        while q.pop().is_some() {
            started += 1;
        }
        assert_eq!(started, MAX_SHARE_THREADS);
        // One ends: one more may start; a newcomer is served meanwhile.
        let b = Share(2);
        q.push(b, job(), false);
        assert!(q.done(a));
        let next: Vec<Share> = std::iter::from_fn(|| q.pop().map(|(s, _)| s)).collect();
        assert_eq!(next, vec![b, a]);
    }

    #[test]
    fn helpers_are_woken_for_long_queues_or_slow_jobs() {
        let mut q = Queues::default();
        let a = Share(1);
        for _ in 0..40 {
            q.push(a, job(), false);
        }
        let _running = q.pop();
        let us = 1_000;
        // Nobody sleeps: nobody to wake.
        assert!(!q.wants_helper(false, 5 * us));
        q.sleeping = 3;
        // 39 page-cached reads (5 µs) are 195 µs for one thread: it
        // reads them alone.
        assert!(!q.wants_helper(false, 5 * us));
        // Unless the job taken is known to take long.
        assert!(q.wants_helper(true, 5 * us));
        // 39 reads of a slow disk (1 ms) are not.
        assert!(q.wants_helper(false, 1_000 * us));
        // Nor 100 page-cached ones.
        for _ in 0..61 {
            q.push(a, job(), false);
        }
        assert!(q.wants_helper(false, 5 * us));
        // A share at its cap has nothing that may run now.
        while q.pop().is_some() {}
        assert!(!q.wants_helper(true, 1_000 * us));
    }

    #[test]
    fn the_share_with_fewest_jobs_running_goes_first() {
        let mut q = Queues::default();
        let (a, b) = (Share(1), Share(2));
        for _ in 0..4 {
            q.push(a, job(), true);
        }
        // Two of a's slow jobs run.
        assert_eq!(q.pop().map(|(s, _)| s), Some(a));
        assert_eq!(q.pop().map(|(s, _)| s), Some(a));
        // A bystander's job, then: taken before a's queued ones.
        q.push(b, job(), false);
        assert_eq!(q.pop().map(|(s, _)| s), Some(b));
        assert_eq!(q.pop().map(|(s, _)| s), Some(a));
    }

    #[tokio::test]
    async fn grouped_jobs_are_queued_when_the_poll_ends() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        use std::task::Poll;
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        let mut asked = false;
        let mut read = Box::pin(blocking(move || {
            seen.store(true, Ordering::SeqCst);
            Ok(7)
        }));
        let got = grouped(std::future::poll_fn(move |cx| {
            if !asked {
                asked = true;
                assert!(read.as_mut().poll(cx).is_pending());
                // Asked for, not queued yet: the pool has not run it.
                std::thread::sleep(Duration::from_millis(50));
                assert!(!ran.load(Ordering::SeqCst));
                return Poll::Pending;
            }
            read.as_mut().poll(cx)
        }))
        .await;
        assert_eq!(got.unwrap(), 7);
        // Outside a group, a job is queued at once.
        assert_eq!(blocking(|| Ok(8)).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_dead_pool() {
        let err = blocking::<()>(|| panic!("boom")).await.unwrap_err();
        assert_eq!(err.code, framegate_wire::ErrorCode::INTERNAL);
        assert_eq!(blocking(|| Ok(7)).await.unwrap(), 7);
    }
}
