//! Sizing the server-wide budgets from the process's file-descriptor
//! limit: every connection and every open answer is a descriptor, and a
//! server that runs out of them fails requests at random (`EMFILE`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept out of the budgets: listeners, logs, the journal,
/// staging files and the private area's handles.
pub const FD_RESERVE: u64 = 64;

/// Connections allowed at most, whatever the limit.
pub const MAX_CONNECTIONS_CAP: usize = 16_384;

/// Open answers allowed at most, whatever the limit.
pub const MAX_OPEN_ANSWERS_CAP: usize = 4_096;

/// The soft limit on open descriptors (`ulimit -n`); 1,024 if it cannot be
/// read.
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

/// Default budgets for `fd_limit` descriptors: half of what is left after
/// [`FD_RESERVE`] for connections, a quarter for open answers (running
/// commands and answers held open for sending), the last quarter spare
/// (accepts racing closes, plain GETs, uploads being staged).
pub fn budgets_for(fd_limit: u64) -> (usize, usize) {
    let usable = fd_limit.saturating_sub(FD_RESERVE).max(64);
    let usable = usize::try_from(usable).unwrap_or(usize::MAX);
    (
        (usable / 2).min(MAX_CONNECTIONS_CAP),
        (usable / 4).clamp(16, MAX_OPEN_ANSWERS_CAP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_fit_the_common_soft_limit() {
        let (connections, answers) = budgets_for(1024);
        assert_eq!((connections, answers), (480, 240));
        assert!(connections as u64 + answers as u64 + FD_RESERVE <= 1024);
        assert_eq!(
            budgets_for(1 << 20),
            (MAX_CONNECTIONS_CAP, MAX_OPEN_ANSWERS_CAP)
        );
        // Tiny limits still leave something to serve with.
        assert!(budgets_for(10).0 >= 32);
    }
}
