//! The local tree: a directory served through cap-std.
//!
//! Every path goes through a `cap_std::fs::Dir` opened on the view's base,
//! so `..`, absolute symlinks and symlinks leading outside are refused by
//! the sandbox. Writes (when the server allows them) use the private area
//! `.framegate/` of the served root: `staging/` for uploads waiting for
//! their turn, `journal/` for appends in progress (see `journal.rs`).
//! Writes to one path are serialized by [`PathLocks`] in-process and by
//! `flock` across processes serving the same tree.

use std::io;
use std::os::unix::fs::{FileExt, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, MetadataExt as _, Permissions, PermissionsExt};
use framegate_wire::ErrorCode;

use super::journal;
use super::local_read::{
    dir_entries, dir_names, is_a_directory, meta_of, not_regular, read_file, tree, walk,
};
use super::lock::{LockedFile, Open, PathLocks, lock_file, sync_dir};
use super::staging::STAGING_MODE;
use super::staging::{LocalStaged, UPLOAD_BUFFER};
use super::{EntryMeta, FileRead, ReadRanges, StagedUpload, Storage, StorageFuture, Tally};
use crate::answer::CommandError;
use crate::pool::{blocking, blocking_heavy};
use crate::tree::{RESERVED_COMPONENT, io_error, split_parent};

/// What start-up found left over from a crash, and cleaned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Staging files removed.
    pub staging_files: usize,
    /// Their bytes.
    pub staging_bytes: u64,
    /// Appends rolled back.
    pub appends_rolled_back: usize,
}

/// Staging files open at once unless [`LocalStorage::with_staging_limit`]
/// says otherwise.
pub(crate) const DEFAULT_STAGING_FILES: usize = 64;

/// How long an upload waits for a staging file by default.
pub(crate) const DEFAULT_STAGING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The private area shared by every view of one served root.
#[derive(Debug)]
struct Private {
    staging: Arc<Dir>,
    journal: Dir,
    locks: PathLocks,
    /// Staging files open at once (a descriptor each), and how long an
    /// upload waits for one.
    staging_slots: Arc<tokio::sync::Semaphore>,
    staging_wait: std::time::Duration,
    /// `(dev, ino)` of `.framegate` and its two directories: no write may
    /// land in them, even through a symlink in the tree.
    ids: [(u64, u64); 3],
}

#[derive(Debug)]
struct View {
    root_path: PathBuf,
    root: Arc<Dir>,
    base: Dir,
    /// The base relative to the root (lock keys, journal records).
    base_rel: PathBuf,
    /// `None` on a read-only server.
    private: Option<Arc<Private>>,
}

/// A directory tree on the local filesystem (see the module docs).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    view: Arc<View>,
}

impl LocalStorage {
    /// Opens the served directory `root`. With `writable`, creates the
    /// private area and cleans what a crash left there (staging files of
    /// dead writers, appends cut off), logging what it found.
    pub fn open(root: &Path, writable: bool) -> io::Result<(LocalStorage, SweepReport)> {
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
        let mut report = SweepReport::default();
        let private = if writable {
            let staging_rel = Path::new(RESERVED_COMPONENT).join("staging");
            let journal_rel = Path::new(RESERVED_COMPONENT).join("journal");
            dir.create_dir_all(&staging_rel)?;
            dir.create_dir_all(&journal_rel)?;
            let staging = dir.open_dir(&staging_rel)?;
            let journal = dir.open_dir(&journal_rel)?;
            report.appends_rolled_back = journal::sweep(&dir, &journal)?;
            (report.staging_files, report.staging_bytes) = super::staging::sweep(&staging)?;
            let (legacy_files, legacy_bytes) = super::staging::sweep_legacy(&dir)?;
            report.staging_files += legacy_files;
            report.staging_bytes += legacy_bytes;
            if report != SweepReport::default() {
                tracing::warn!(
                    staging_files = report.staging_files,
                    staging_bytes = report.staging_bytes,
                    appends_rolled_back = report.appends_rolled_back,
                    "cleaned up after a crash"
                );
            } else {
                tracing::info!("no crash leftovers in the private area");
            }
            let id = |d: &Dir| d.dir_metadata().map(|m| (m.dev(), m.ino()));
            let ids = [
                id(&dir.open_dir(RESERVED_COMPONENT)?)?,
                id(&staging)?,
                id(&journal)?,
            ];
            Some(Arc::new(Private {
                staging: Arc::new(staging),
                journal,
                locks: PathLocks::default(),
                staging_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_STAGING_FILES)),
                staging_wait: DEFAULT_STAGING_WAIT,
                ids,
            }))
        } else {
            None
        };
        let root_dir = Arc::new(dir.try_clone()?);
        let view = View {
            root_path: root.to_path_buf(),
            root: root_dir,
            base: dir,
            base_rel: PathBuf::new(),
            private,
        };
        Ok((
            LocalStorage {
                view: Arc::new(view),
            },
            report,
        ))
    }

    /// At most `max` uploads staging at once (a staging file each, shared by
    /// every view); one more waits up to `wait`, then fails `busy`
    /// (retryable). Call right after [`LocalStorage::open`].
    #[must_use]
    pub fn with_staging_limit(mut self, max: usize, wait: std::time::Duration) -> Self {
        if let Some(view) = Arc::get_mut(&mut self.view)
            && let Some(private) = view.private.as_mut().and_then(Arc::get_mut)
        {
            private.staging_slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
            private.staging_wait = wait;
        }
        self
    }

    /// The served root as a cap-std directory (plain HTTP access).
    pub fn root_dir(&self) -> &Arc<Dir> {
        &self.view.root
    }
}

impl View {
    fn private(&self) -> Result<&Arc<Private>, CommandError> {
        self.private
            .as_ref()
            .ok_or_else(|| CommandError::new(ErrorCode::READ_ONLY, "this server is read-only"))
    }

    fn key(&self, path: &Path) -> PathBuf {
        self.base_rel.join(path)
    }

    /// The parent directory of `path` (opened now: a write checks its
    /// parent at its turn) and the final name.
    fn parent_of(&self, path: &Path) -> Result<(Dir, PathBuf, String), CommandError> {
        let (parent, name) = split_parent(path)?;
        let dir = if parent == Path::new(".") {
            self.base.try_clone().map_err(CommandError::internal)?
        } else {
            self.base
                .open_dir(&parent)
                .map_err(|e| io_error(&e, &parent))?
        };
        if let Some(private) = &self.private {
            let meta = dir.dir_metadata().map_err(CommandError::internal)?;
            if private.ids.contains(&(meta.dev(), meta.ino())) {
                return Err(CommandError::new(
                    ErrorCode::INVALID_PATH,
                    format!("reserved directory: {}", parent.display()),
                ));
            }
        }
        Ok((dir, parent, name))
    }
}

/// Takes a staged upload back from the trait object.
fn local_staged(staged: Box<dyn StagedUpload>) -> Result<Box<LocalStaged>, CommandError> {
    staged
        .into_any()
        .downcast::<LocalStaged>()
        .map_err(|_| CommandError::internal("upload staged by another storage"))
}

/// Locks `name` in `dir` if it is an existing file (not a directory).
fn lock_existing_file(
    dir: &Dir,
    name: &Path,
    shown: &Path,
) -> Result<Option<LockedFile>, CommandError> {
    // Only regular files are locked (a FIFO or device entry is replaced or
    // removed without being opened).
    match dir.metadata(name) {
        Ok(m) if !m.is_file() => return Ok(None),
        _ => {}
    }
    Ok(lock_file(dir, name, Open::Existing, shown)?.map(|(f, _)| f))
}

impl View {
    fn put(
        &self,
        path: &Path,
        mut staged: LocalStaged,
        mode: Option<u32>,
    ) -> Result<(), CommandError> {
        let private = self.private()?;
        let (parent_dir, _, name) = self.parent_of(path)?;
        if parent_dir.symlink_metadata(&name).is_ok_and(|m| m.is_dir()) {
            return Err(is_a_directory(path));
        }
        // Hold the old file's lock across the swap so a concurrent append
        // (here or in another process) cannot write to the replaced inode.
        let old = lock_existing_file(&parent_dir, Path::new(&name), path)?;
        let file = staged
            .file
            .take()
            .ok_or_else(|| CommandError::internal("staging file gone"))?;
        if let Some(mode) = mode.filter(|m| *m != STAGING_MODE) {
            // Staged files are made with the default mode; another one is
            // set and synced before the file becomes visible.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                .and_then(|()| file.sync_all())
                .map_err(CommandError::internal)?;
        }
        drop(file);
        staged
            .dir
            .rename(&staged.name, &parent_dir, &name)
            .map_err(|e| io_error(&e, path))?;
        staged.committed = true;
        sync_dir(&parent_dir, Path::new("."))?;
        // Only once the swap is durable may a dead append's record of the
        // replaced file go (else a power cut could bring back its bytes).
        if let Some(old) = &old {
            journal::discard(&private.journal, old.identity())?;
        }
        Ok(())
    }

    fn append(
        &self,
        path: &Path,
        mut staged: LocalStaged,
        mode: Option<u32>,
    ) -> Result<u64, CommandError> {
        let private = self.private()?;
        let (parent_dir, _, name) = self.parent_of(path)?;
        if parent_dir.symlink_metadata(&name).is_ok_and(|m| m.is_dir()) {
            return Err(is_a_directory(path));
        }
        let (target, created) = lock_file(&parent_dir, Path::new(&name), Open::Create, path)?
            .ok_or_else(|| CommandError::internal("append target vanished"))?;
        if target.meta.is_dir() {
            return Err(is_a_directory(path));
        }
        if !target.meta.is_file() {
            return Err(not_regular(path));
        }
        // A file this append created goes again if the append fails.
        let undo_create = |err: CommandError| {
            if created {
                let _ = parent_dir.remove_file(&name);
                let _ = sync_dir(&parent_dir, Path::new("."));
            }
            err
        };
        if created {
            sync_dir(&parent_dir, Path::new(".")).map_err(undo_create)?;
        }
        journal::recover(&private.journal, &target).map_err(undo_create)?;
        let before = target
            .file
            .metadata()
            .map_err(CommandError::internal)
            .map_err(undo_create)?
            .len();
        let pending = journal::begin(&private.journal, &target, before, created, &self.key(path))
            .map_err(undo_create)?;
        let staged_file = staged
            .file
            .take()
            .ok_or_else(|| CommandError::internal("staging file gone"))?;
        let copied = (|| -> io::Result<()> {
            let mut buf = vec![0u8; UPLOAD_BUFFER.min(staged.len.max(1) as usize)];
            let mut at = 0u64;
            while at < staged.len {
                let n = staged_file.read_at(&mut buf, at)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let piece = buf.get(..n).unwrap_or_default();
                target.file.write_all_at(piece, before + at)?;
                at += n as u64;
            }
            if let Some(mode) = mode {
                // Set after the bytes are in (a rollback must still be able
                // to open the file for writing) and covered by this sync.
                target
                    .file
                    .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
                target.file.sync_all()
            } else {
                target.file.sync_data()
            }
        })();
        if let Err(e) = copied {
            // Never leave a partial append visible.
            let undone = target
                .file
                .set_len(before)
                .and_then(|()| target.file.sync_all());
            if undone.is_ok() {
                journal::commit(&private.journal, pending)?;
                return Err(undo_create(io_error(&e, path)));
            }
            return Err(io_error(&e, path));
        }
        journal::commit(&private.journal, pending)?;
        Ok(before)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), CommandError> {
        let private = self.private()?;
        let (from_dir, from_parent, from_name) = self.parent_of(from)?;
        let (to_dir, to_parent, to_name) = self.parent_of(to)?;
        // Two file locks: taken in path order, so two processes renaming
        // a pair in opposite directions cannot deadlock on `flock`.
        let lock_from = || lock_existing_file(&from_dir, Path::new(&from_name), from);
        let lock_to = || lock_existing_file(&to_dir, Path::new(&to_name), to);
        let (moving, replaced) = if from == to {
            (lock_from()?, None)
        } else if self.key(from) < self.key(to) {
            let moving = lock_from()?;
            (moving, lock_to()?)
        } else {
            let replaced = lock_to()?;
            (lock_from()?, replaced)
        };
        from_dir
            .rename(&from_name, &to_dir, &to_name)
            .map_err(|e| io_error(&e, from))?;
        drop(moving);
        sync_dir(&to_dir, Path::new("."))?;
        if from_parent != to_parent {
            sync_dir(&from_dir, Path::new("."))?;
        }
        if let Some(old) = &replaced {
            journal::discard(&private.journal, old.identity())?;
        }
        Ok(())
    }

    fn delete(&self, path: &Path) -> Result<(), CommandError> {
        let private = self.private()?;
        let (dir, _, name) = self.parent_of(path)?;
        if dir.symlink_metadata(&name).is_ok_and(|m| m.is_dir()) {
            return Err(is_a_directory(path));
        }
        let locked = lock_existing_file(&dir, Path::new(&name), path)?;
        dir.remove_file(&name).map_err(|e| io_error(&e, path))?;
        sync_dir(&dir, Path::new("."))?;
        if let Some(old) = &locked {
            journal::discard(&private.journal, old.identity())?;
        }
        Ok(())
    }
}

/// Runs `f` on the view in the file-I/O pool.
fn on_view<T: Send + 'static>(
    view: &Arc<View>,
    f: impl FnOnce(&View) -> Result<T, CommandError> + Send + 'static,
) -> StorageFuture<'static, T> {
    let view = view.clone();
    Box::pin(blocking(move || f(&view)))
}

/// [`on_view`] for work known to take long: directory reads, reads of
/// many ranges, writes (with their `fsync`s).
fn on_view_heavy<T: Send + 'static>(
    view: &Arc<View>,
    f: impl FnOnce(&View) -> Result<T, CommandError> + Send + 'static,
) -> StorageFuture<'static, T> {
    let view = view.clone();
    Box::pin(blocking_heavy(move || f(&view)))
}

impl Storage for LocalStorage {
    fn base(&self, path: &Path) -> StorageFuture<'_, Arc<dyn Storage>> {
        if path == Path::new(".") || path.as_os_str().is_empty() {
            // This view itself: no directory opened (a descriptor per
            // message otherwise).
            let same: Arc<dyn Storage> = Arc::new(LocalStorage {
                view: self.view.clone(),
            });
            return Box::pin(async move { Ok(same) });
        }
        let path = path.to_path_buf();
        let parent = self.view.clone();
        Box::pin(async move {
            let view = blocking(move || {
                let base = if path == Path::new(".") {
                    parent.base.try_clone().map_err(CommandError::internal)?
                } else {
                    parent
                        .base
                        .open_dir(&path)
                        .map_err(|e| io_error(&e, &path))?
                };
                Ok(View {
                    root_path: parent.root_path.clone(),
                    root: parent.root.clone(),
                    base,
                    base_rel: parent.base_rel.join(&path),
                    private: parent.private.clone(),
                })
            })
            .await?;
            Ok(Arc::new(LocalStorage {
                view: Arc::new(view),
            }) as Arc<dyn Storage>)
        })
    }

    fn health(&self) -> StorageFuture<'_, ()> {
        on_view(&self.view, |view| {
            // The open directory outlives its path: check the path still
            // leads to it, and that it can be read.
            let unhealthy = |what: &str| CommandError::new(ErrorCode::INTERNAL, what.to_string());
            let by_path = std::fs::metadata(&view.root_path)
                .map_err(|_| unhealthy("the served tree is gone"))?;
            let open = view
                .root
                .dir_metadata()
                .map_err(|_| unhealthy("the served tree cannot be read"))?;
            if by_path.dev() != open.dev() || by_path.ino() != open.ino() {
                return Err(unhealthy("the served tree was replaced"));
            }
            view.root
                .entries()
                .map_err(|_| unhealthy("the served tree cannot be read"))?;
            Ok(())
        })
    }

    fn read(
        &self,
        path: &Path,
        ranges: ReadRanges,
        if_match: Option<&str>,
    ) -> StorageFuture<'_, FileRead> {
        let path = path.to_path_buf();
        let if_match = if_match.map(str::to_owned);
        // A `readv` may read many pieces of a file.
        let whole = matches!(ranges, ReadRanges::Whole);
        let read = move |view: &View| read_file(&view.base, &path, ranges, if_match.as_deref());
        if whole {
            on_view(&self.view, read)
        } else {
            on_view_heavy(&self.view, read)
        }
    }

    fn stat(&self, path: &Path) -> StorageFuture<'_, EntryMeta> {
        let path = path.to_path_buf();
        on_view(&self.view, move |view| {
            let meta = view
                .base
                .symlink_metadata(&path)
                .map_err(|e| io_error(&e, &path))?;
            Ok(meta_of(&meta))
        })
    }

    fn exists(&self, path: &Path) -> StorageFuture<'_, bool> {
        let path = path.to_path_buf();
        on_view(&self.view, move |view| match view.base.metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) => {
                let err = io_error(&e, &path);
                if err.code == ErrorCode::NO_SUCH_FILE || err.code == ErrorCode::NOT_A_DIRECTORY {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        })
    }

    fn list(&self, path: &Path) -> StorageFuture<'_, Vec<(String, EntryMeta)>> {
        let path = path.to_path_buf();
        on_view_heavy(&self.view, move |view| dir_entries(&view.base, &path))
    }

    fn list_names(&self, path: &Path, max: usize) -> StorageFuture<'_, Vec<String>> {
        let path = path.to_path_buf();
        on_view_heavy(&self.view, move |view| dir_names(&view.base, &path, max))
    }

    fn walk(&self, path: &Path, max: usize, tally: Tally) -> StorageFuture<'_, Vec<String>> {
        let path = path.to_path_buf();
        on_view_heavy(&self.view, move |view| {
            walk(&view.base, &path, max, &*tally)
        })
    }

    fn tree(
        &self,
        path: &Path,
        max: usize,
        tally: Tally,
    ) -> StorageFuture<'_, Vec<framegate_wire::TreeEntry>> {
        let path = path.to_path_buf();
        on_view_heavy(&self.view, move |view| {
            tree(&view.base, &path, max, &*tally)
        })
    }

    fn stage(&self) -> StorageFuture<'_, Box<dyn StagedUpload>> {
        let view = self.view.clone();
        Box::pin(async move {
            let private = view.private()?;
            let slot = tokio::time::timeout(
                private.staging_wait,
                private.staging_slots.clone().acquire_owned(),
            )
            .await;
            let Ok(Ok(slot)) = slot else {
                return Err(CommandError::new(
                    framegate_wire::ErrorCode::BUSY,
                    format!(
                        "the server is busy: too many uploads in progress (waited {}); retry later",
                        humantime::format_duration(private.staging_wait)
                    ),
                ));
            };
            let dir = private.staging.clone();
            let mut staged = blocking(move || LocalStaged::create(dir)).await?;
            staged.slot = Some(slot);
            Ok(Box::new(staged) as Box<dyn StagedUpload>)
        })
    }

    fn put(
        &self,
        path: &Path,
        staged: Box<dyn StagedUpload>,
        mode: Option<u32>,
    ) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let staged = local_staged(staged)?;
            let _held = self.lock(&[&path]).await?;
            on_view_heavy(&self.view, move |view| view.put(&path, *staged, mode)).await
        })
    }

    fn append(
        &self,
        path: &Path,
        staged: Box<dyn StagedUpload>,
        mode: Option<u32>,
    ) -> StorageFuture<'_, u64> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let staged = local_staged(staged)?;
            let _held = self.lock(&[&path]).await?;
            on_view_heavy(&self.view, move |view| view.append(&path, *staged, mode)).await
        })
    }

    fn mkdir(&self, path: &Path, mode: Option<u32>) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        on_view_heavy(&self.view, move |view| {
            view.private()?;
            let (parent, _, _) = view.parent_of(&path)?;
            view.base
                .create_dir(&path)
                .map_err(|e| io_error(&e, &path))?;
            if let Some(mode) = mode {
                view.base
                    .set_permissions(&path, Permissions::from_mode(mode))
                    .map_err(|e| io_error(&e, &path))?;
            }
            sync_dir(&parent, Path::new("."))
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> StorageFuture<'_, ()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        Box::pin(async move {
            let _held = self.lock(&[&from, &to]).await?;
            on_view_heavy(&self.view, move |view| view.rename(&from, &to)).await
        })
    }

    fn delete(&self, path: &Path) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let _held = self.lock(&[&path]).await?;
            on_view_heavy(&self.view, move |view| view.delete(&path)).await
        })
    }

    fn rmdir(&self, path: &Path) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        on_view_heavy(&self.view, move |view| {
            view.private()?;
            let (parent, _, name) = view.parent_of(&path)?;
            parent.remove_dir(&name).map_err(|e| io_error(&e, &path))?;
            sync_dir(&parent, Path::new("."))
        })
    }
}

impl LocalStorage {
    /// Takes the in-process write locks of `paths`.
    async fn lock(&self, paths: &[&Path]) -> Result<super::lock::PathGuards, CommandError> {
        let private = self.view.private()?;
        let keys = paths.iter().map(|p| self.view.key(p)).collect();
        Ok(private.locks.lock(keys).await)
    }
}
