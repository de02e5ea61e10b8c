//! A message's running commands.
//!
//! A command without request data runs *inline*: its future is polled by
//! the message's own task ([`Runs::next`], from [`super::Driver::progress`]),
//! not spawned as a task of its own. A message of 1,000 small `get`s made
//! 1,000 tasks, each a spawn, a schedule and a wake-up on top of its file
//! job; inline, a command costs a future in a [`FuturesUnordered`] and the
//! wake-up its file job sends back lands on a task that is usually awake
//! already.
//!
//! A command with data is *spawned*: it stages its data as the frames
//! arrive, while the message's task may be waiting to hand it the next
//! chunk (backpressure) — polled only by that task, it would never take
//! the chunk.
//!
//! An inline command must not stall while its message's task waits for
//! something else: it may hold what others wait for (a listing slot, a
//! memory charge). Every wait of the message's task that may last polls
//! the inline commands too — in [`super::Driver::progress`], or through
//! [`Runs::drive`], which keeps the runs that end meanwhile for
//! [`Runs::next`].
//!
//! Either way a panicking command is caught where it runs and ends as an
//! `internal` error, and dropping [`Runs`] drops (aborts) every command.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rustc_hash::FxHashMap as HashMap;
use tokio::task::JoinSet;

use crate::command::{Answer, CommandError};

/// One command run of a message (inline or spawned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RunId(pub(super) u64);

/// How a run ended.
pub(super) enum Ended {
    /// It finished (a panic is an `internal` error).
    Done(Result<Answer, CommandError>),
    /// Its task was cancelled (the runtime is shutting down).
    Cancelled,
}

type Outcome = (RunId, Result<Answer, CommandError>);
type Run = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The running commands of one message (see the module docs).
#[derive(Default)]
pub(super) struct Runs {
    next_id: u64,
    inline: FuturesUnordered<Run>,
    spawned: JoinSet<Outcome>,
    /// Spawned runs by task, to name one whose task was cancelled.
    tasks: HashMap<tokio::task::Id, RunId>,
    /// Inline runs that ended during [`Runs::drive`], not yet taken.
    ended: VecDeque<(RunId, Ended)>,
}

impl Runs {
    /// Whether no command runs.
    pub(super) fn is_empty(&self) -> bool {
        self.inline.is_empty() && self.spawned.is_empty() && self.ended.is_empty()
    }

    /// Awaits `fut`, polling the inline runs meanwhile (those that end are
    /// kept for [`Runs::next`]).
    pub(super) async fn drive<T>(&mut self, fut: impl Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            while !self.inline.is_empty() {
                let Poll::Ready(Some((id, result))) = self.inline.poll_next_unpin(cx) else {
                    break;
                };
                self.ended.push_back((id, Ended::Done(result)));
            }
            Poll::Pending
        })
        .await
    }

    fn wrap(
        &mut self,
        fut: impl Future<Output = Result<Answer, CommandError>> + Send + 'static,
    ) -> (RunId, impl Future<Output = Outcome> + Send + 'static) {
        self.next_id += 1;
        let id = RunId(self.next_id);
        let run = async move {
            let result = AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(CommandError::internal("a command panicked")));
            (id, result)
        };
        (id, run)
    }

    /// Runs `fut` in the message's task.
    pub(super) fn run_inline(
        &mut self,
        fut: impl Future<Output = Result<Answer, CommandError>> + Send + 'static,
    ) -> RunId {
        let (id, run) = self.wrap(fut);
        self.inline.push(Box::pin(run));
        id
    }

    /// Runs `fut` as a task of its own.
    pub(super) fn spawn(
        &mut self,
        fut: impl Future<Output = Result<Answer, CommandError>> + Send + 'static,
    ) -> RunId {
        let (id, run) = self.wrap(fut);
        let handle = self.spawned.spawn(run);
        self.tasks.insert(handle.id(), id);
        id
    }

    /// The next run to end; pending for ever when none runs (callers wait
    /// only while [`Runs::is_empty`] is false). Cancel-safe.
    pub(super) async fn next(&mut self) -> (RunId, Ended) {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(RunId, Ended)> {
        if let Some(ended) = self.ended.pop_front() {
            return Poll::Ready(ended);
        }
        if !self.inline.is_empty()
            && let Poll::Ready(Some((id, result))) = self.inline.poll_next_unpin(cx)
        {
            return Poll::Ready((id, Ended::Done(result)));
        }
        while !self.spawned.is_empty() {
            let Poll::Ready(Some(joined)) = self.spawned.poll_join_next_with_id(cx) else {
                break;
            };
            match joined {
                Ok((task, (id, result))) => {
                    self.tasks.remove(&task);
                    return Poll::Ready((id, Ended::Done(result)));
                }
                Err(err) => {
                    // Panics are caught inside the run: this one was
                    // cancelled.
                    if let Some(id) = self.tasks.remove(&err.id()) {
                        return Poll::Ready((id, Ended::Cancelled));
                    }
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_and_spawned_runs_end_and_panics_are_errors() {
        let mut runs = Runs::default();
        assert!(runs.is_empty());
        let a = runs.run_inline(async { Ok(Answer::Bytes(bytes::Bytes::from_static(b"a"))) });
        let b = runs.spawn(async { panic!("boom") });
        let c = runs.run_inline(async {
            tokio::task::yield_now().await;
            panic!("boom")
        });
        let mut ended = std::collections::HashMap::new();
        while !runs.is_empty() {
            let (id, how) = runs.next().await;
            let Ended::Done(result) = how else {
                panic!("nothing was cancelled");
            };
            ended.insert(id, result.map_err(|e| e.code));
        }
        assert!(ended[&a].is_ok());
        assert!(runs.is_empty());
        for id in [b, c] {
            assert_eq!(
                ended[&id].as_ref().unwrap_err(),
                &framegate_wire::ErrorCode::INTERNAL
            );
        }
    }

    #[tokio::test]
    async fn inline_runs_go_on_while_the_task_waits_elsewhere() {
        let mut runs = Runs::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A command that frees what the task waits for (a slot, say).
        let a = runs.run_inline(async move {
            let _ = tx.send(());
            Ok(Answer::Bytes(bytes::Bytes::new()))
        });
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), runs.drive(rx));
        assert!(waited.await.is_ok(), "the inline run was not polled");
        // Its end was kept.
        assert!(!runs.is_empty());
        let (id, how) = runs.next().await;
        assert_eq!(id, a);
        assert!(matches!(how, Ended::Done(Ok(_))));
        assert!(runs.is_empty());
    }
}
