//! The pool that runs blocking file work off the async executor.
//!
//! A dedicated pool costs about a microsecond per job where tokio's
//! `spawn_blocking` cost about ten (measured on a 1,000-`get` batch).

use crate::answer::CommandError;

/// Threads of the file-I/O pool.
pub const FILE_IO_THREADS: usize = 8;

/// The pool, or `None` if its threads could not be started (then tokio's
/// blocking pool is used).
fn file_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(FILE_IO_THREADS)
            .thread_name(|i| format!("framegate-fs-{i}"))
            .build()
            .map_err(
                |e| tracing::warn!(error = %e, "no file-I/O pool; using tokio's blocking pool"),
            )
            .ok()
    })
    .as_ref()
}

/// Runs blocking file work on the file-I/O pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    let Some(pool) = file_pool() else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(CommandError::internal)?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| CommandError::internal("file task dropped"))?
}
