//! Write locks: one writer per path at a time, within this process (an
//! async mutex per path, so waiting writers hold no thread) and across
//! processes serving the same tree (`flock` on the file itself, taken after
//! the in-process lock, so it only ever waits for another process).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use tokio::sync::OwnedMutexGuard;

use crate::answer::CommandError;
use crate::tree::io_error;

/// Entries kept in the lock table before dead ones are swept out.
const LOCK_TABLE_SWEEP_AT: usize = 1024;

/// Most times a lock is retaken because the path was replaced meanwhile.
const MAX_LOCK_RETRIES: usize = 64;

/// In-process write locks keyed by tree path (relative to the served root).
#[derive(Debug, Default)]
pub(crate) struct PathLocks {
    table: Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held in-process locks; released when dropped.
#[derive(Debug)]
pub(crate) struct PathGuards(#[allow(dead_code)] Vec<OwnedMutexGuard<()>>);

impl PathLocks {
    /// Locks every key, in a fixed order (so two writers never deadlock).
    pub(crate) async fn lock(&self, mut keys: Vec<PathBuf>) -> PathGuards {
        keys.sort();
        keys.dedup();
        let mutexes: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if table.len() >= LOCK_TABLE_SWEEP_AT {
                table.retain(|_, weak| weak.strong_count() > 0);
            }
            keys.into_iter()
                .map(|key| {
                    if let Some(live) = table.get(&key).and_then(Weak::upgrade) {
                        return live;
                    }
                    let fresh = Arc::new(tokio::sync::Mutex::new(()));
                    table.insert(key, Arc::downgrade(&fresh));
                    fresh
                })
                .collect()
        };
        let mut guards = Vec::with_capacity(mutexes.len());
        for mutex in mutexes {
            guards.push(mutex.lock_owned().await);
        }
        PathGuards(guards)
    }
}

/// A file held under an exclusive `flock`, checked to still be the file at
/// its path.
#[derive(Debug)]
pub(crate) struct LockedFile {
    pub(crate) file: std::fs::File,
    pub(crate) meta: std::fs::Metadata,
}

impl LockedFile {
    /// The `(device, inode)` of the file.
    pub(crate) fn identity(&self) -> (u64, u64) {
        (self.meta.dev(), self.meta.ino())
    }
}

/// How to open the file to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// Only if it exists (`None` otherwise), read-only: enough to lock it.
    Existing,
    /// Only if it exists, for writing (rolling back an append).
    ExistingForWrite,
    /// Create it if missing (for `append`).
    Create,
}

/// Opens `name` in `dir` and takes an exclusive `flock` on it (blocking).
/// If the path was replaced while waiting, the lock is retaken on the new
/// file. Returns `None` for a missing file with [`Open::Existing`], and
/// `created` = whether this call created it.
pub(crate) fn lock_file(
    dir: &Dir,
    name: &Path,
    open: Open,
    shown: &Path,
) -> Result<Option<(LockedFile, bool)>, CommandError> {
    for _ in 0..MAX_LOCK_RETRIES {
        let mut created = false;
        let file = match open {
            Open::Existing | Open::ExistingForWrite => match dir.open_with(
                name,
                OpenOptions::new()
                    .read(true)
                    .write(open == Open::ExistingForWrite)
                    .custom_flags(libc::O_NONBLOCK),
            ) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error(&e, shown)),
            },
            Open::Create => {
                match dir.open_with(
                    name,
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NONBLOCK),
                ) {
                    Ok(f) => {
                        created = true;
                        f
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => dir
                        .open_with(
                            name,
                            OpenOptions::new()
                                .read(true)
                                .write(true)
                                .custom_flags(libc::O_NONBLOCK),
                        )
                        .map_err(|e| io_error(&e, shown))?,
                    Err(e) => return Err(io_error(&e, shown)),
                }
            }
        };
        let file = file.into_std();
        file.lock().map_err(|e| io_error(&e, shown))?;
        let meta = file.metadata().map_err(|e| io_error(&e, shown))?;
        // Still the file at that path? (A rename or put may have replaced it
        // while this waited; then its lock protects nothing.)
        match dir.metadata(name) {
            Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {
                return Ok(Some((LockedFile { file, meta }, created)));
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&e, shown)),
        }
    }
    Err(CommandError::internal(
        "the file kept being replaced while waiting for its lock",
    ))
}

/// Syncs the directory `parent` of `dir` (`.` for `dir` itself), so that
/// entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Dir, parent: &Path) -> Result<(), CommandError> {
    dir.open(parent)
        .and_then(|d| d.sync_all())
        .map_err(CommandError::internal)
}
