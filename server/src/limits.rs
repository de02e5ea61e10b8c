//! Sizing the server-wide budgets from the process's file-descriptor
//! limit: every connection, every message below the root (its base
//! directory) and every open answer is a descriptor, and a server that runs
//! out of them fails requests at random (`EMFILE`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept out of the budgets: listeners, logs, the journal,
/// staging files and the private area's handles.
pub const FD_RESERVE: u64 = 64;

/// Connections allowed at most, whatever the limit.
pub const MAX_CONNECTIONS_CAP: usize = 4_096;

/// Messages in flight allowed at most, whatever the limit.
pub const MAX_MESSAGES_CAP: usize = 1_024;

/// Open answers allowed at most, whatever the limit.
pub const MAX_OPEN_ANSWERS_CAP: usize = 4_096;

/// The soft limit on open descriptors (`ulimit -n`).
pub fn fd_limit() -> u64 {
    getrlimit(Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(1 << 20)
}

/// Raises the soft descriptor limit to the hard one (as Go's runtime and
/// many servers do at start); returns the limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the descriptor limit");
        }
    }
    fd_limit()
}

/// Unsent bytes a connection's socket may queue before a write waits
/// (`TCP_NOTSENT_LOWAT`): with the kernel's autotuned send buffer (up to
/// 4 MiB) a client that stopped reading would otherwise park megabytes in
/// the kernel, and writes would make progress only in megabyte steps — a
/// slow but steady reader would look stalled to the send timeout. The
/// kernel wakes a waiting writer when half of it was sent: a client must
/// take 64 KiB per `--send-timeout` (about 1.1 KiB/s at the default 60 s).
pub const UNSENT_LOWAT: u32 = 128 * 1024;

/// Sets up an accepted connection: `TCP_NODELAY` (answers go out without
/// Nagle delays) and [`UNSENT_LOWAT`].
pub(crate) fn tune_socket(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    if let Err(e) = sock.set_tcp_notsent_lowat(UNSENT_LOWAT) {
        tracing::debug!(error = %e, "could not set TCP_NOTSENT_LOWAT");
    }
}

/// The receiving tier of `open_answers` server-wide answer slots: what
/// messages whose body is still arriving may hold together (half).
pub(crate) fn receiving_slots(open_answers: usize) -> usize {
    (open_answers / 2).max(1)
}

/// Default server-wide budgets for `fd_limit` descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FdBudgets {
    /// Connections (a socket each): a third of what is left after
    /// [`FD_RESERVE`], at most [`MAX_CONNECTIONS_CAP`].
    pub connections: usize,
    /// Messages in flight (a base directory each, when not the root): a
    /// third, at most [`MAX_MESSAGES_CAP`].
    pub messages: usize,
    /// Open answers (running commands, answers held open, plain GETs): a
    /// quarter, at most [`MAX_OPEN_ANSWERS_CAP`]. The rest is slack.
    pub open_answers: usize,
    /// Uploads staging at once (a staging file each): a sixteenth, at
    /// least [`MIN_STAGING_FILES`] (one message may stage that many at
    /// once by default), at most [`MAX_STAGING_FILES_CAP`].
    pub staging_files: usize,
}

/// Floor of the default [`FdBudgets::staging_files`]: the default
/// `--max-receiving-requests`, so one message alone never waits for a
/// staging file.
pub const MIN_STAGING_FILES: usize = 64;

/// Cap of the default [`FdBudgets::staging_files`].
pub const MAX_STAGING_FILES_CAP: usize = 1024;

/// The default budgets for `fd_limit` descriptors (see [`FdBudgets`]).
pub fn budgets_for(fd_limit: u64) -> FdBudgets {
    let usable = fd_limit.saturating_sub(FD_RESERVE).max(96);
    let usable = usize::try_from(usable).unwrap_or(usize::MAX);
    FdBudgets {
        connections: (usable / 3).min(MAX_CONNECTIONS_CAP),
        messages: (usable / 3).min(MAX_MESSAGES_CAP),
        open_answers: (usable / 4).clamp(16, MAX_OPEN_ANSWERS_CAP),
        staging_files: (usable / 16).clamp(MIN_STAGING_FILES, MAX_STAGING_FILES_CAP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_fit_the_common_soft_limit() {
        let b = budgets_for(1024);
        assert_eq!(
            (b.connections, b.messages, b.open_answers, b.staging_files),
            (320, 320, 240, 64)
        );
        let all = b.connections + b.messages + b.open_answers + b.staging_files;
        assert!(all as u64 + FD_RESERVE <= 1024);
        let big = budgets_for(1 << 20);
        assert_eq!(
            (big.connections, big.messages, big.open_answers),
            (MAX_CONNECTIONS_CAP, MAX_MESSAGES_CAP, MAX_OPEN_ANSWERS_CAP)
        );
        // Tiny limits still leave something to serve with.
        assert!(budgets_for(10).connections >= 32);
    }
}
