//! The storage seam: how commands reach files.
//!
//! Commands never touch a filesystem API directly; they call a [`Storage`]
//! — a view of the served tree rooted at the message's base — with paths
//! already cleaned by [`crate::tree::clean_path`]. [`LocalStorage`] (a
//! directory served through cap-std, with a private staging area, append
//! journals and write locks) is the first implementation.
//!
//! The trait is shaped so that an object store can follow (checked against
//! the `object_store` crate's API): `read` maps to `get`/`get_range(s)`,
//! `stat` to `head`, `list` to `list_with_delimiter`, `walk` to `list`,
//! `stage` to a multipart upload (or a local spool), `put` to completing it
//! (atomic), `delete` to `delete`, `rename` to `rename` (copy + delete:
//! not atomic there), `mkdir`/`rmdir` to no-ops on prefixes; `append` has no
//! object-store counterpart and would answer `not-supported`.
//!
//! What the trait is not for: ordering (the driver decides when a command
//! may take effect) and path rules (the caller cleans paths first).

mod etag;
mod journal;
mod local;
mod local_read;
mod lock;
mod object;
mod staging;

use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::answer::{Answer, CommandError};

pub use etag::Etag;
pub use local::{LocalStorage, SweepReport};
pub use local_read::MAX_INLINE_ANSWER;
pub(crate) use local_read::open_to_read;
pub use object::{DEFAULT_STORE_REQUESTS, ObjectConfig, ObjectStorage, SINGLE_PUT_MAX};
pub use staging::UPLOAD_BUFFER;

/// Told a running count while a long operation works (a walk's entries);
/// called often: the callee throttles what it sends on.
pub type Tally = Arc<dyn Fn(u64) + Send + Sync>;

/// A future returned by a storage operation.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CommandError>> + Send + 'a>>;

/// What kind of entry a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (as `stat` reports it, not followed).
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

impl EntryKind {
    /// The kind as the wire names it (`stat`, `tree`).
    pub fn wire(self) -> framegate_wire::FileKind {
        match self {
            EntryKind::File => framegate_wire::FileKind::File,
            EntryKind::Dir => framegate_wire::FileKind::Dir,
            EntryKind::Symlink => framegate_wire::FileKind::Symlink,
            EntryKind::Other => framegate_wire::FileKind::Other,
        }
    }
}

/// What `stat` and listings tell about an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryMeta {
    /// Its kind.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, Unix seconds.
    pub mtime: f64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// The version of a regular file ([`Etag`]); `None` for anything else.
    pub etag: Option<Etag>,
}

/// The bytes of a file a read answers, and the version of the file they
/// come from: taken from the file opened for this answer, never looked up
/// again by path.
#[derive(Debug)]
pub struct FileRead {
    /// The bytes.
    pub answer: Answer,
    /// The version they come from.
    pub etag: Etag,
}

/// Which bytes of a file a read answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRanges {
    /// The whole file.
    Whole,
    /// `(offset, length)` pairs, concatenated in this order; a range past
    /// the end of the file is `short-read`.
    Ranges(Vec<(u64, u64)>),
}

/// An upload written to a private staging area before its command's turn.
/// Dropped without being committed, it leaves nothing behind.
pub trait StagedUpload: Send + 'static {
    /// Adds the next piece.
    fn write(&mut self, data: Bytes) -> StorageFuture<'_, ()>;
    /// Ends the upload and makes the staged bytes durable; returns the size.
    fn finish(&mut self) -> StorageFuture<'_, u64>;
    /// For the storage that made it, to take it back in `put` / `append`.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// Most entries a directory listing holds (`list_dir`, plain listings,
/// a storage's `list`).
pub const MAX_LIST_ENTRIES: usize = 1_000_000;

/// `not-supported`: a listing longer than its bound.
pub(crate) fn too_many_entries(max: usize) -> CommandError {
    CommandError::new(
        framegate_wire::ErrorCode::NOT_SUPPORTED,
        format!("more than {max} entries in this directory"),
    )
}

/// A view of the served tree rooted at a base directory.
///
/// Every write is durable when its future resolves `Ok` (file and
/// directory synced) and serialized with other writes to the same path,
/// across messages and across processes serving the same tree.
pub trait Storage: Send + Sync + 'static {
    /// The view rooted at the directory `path` below this one.
    fn base(&self, path: &Path) -> StorageFuture<'_, Arc<dyn Storage>>;
    /// Whether the tree is there and readable.
    fn health(&self) -> StorageFuture<'_, ()>;
    /// Bytes of a file: small answers in memory, large ones as a source read
    /// when sent (a snapshot of the file as it was opened), with the version
    /// of the file opened. With `if_match`, a file whose version is another
    /// is `file-changed` (checked before the ranges: a changed file that
    /// shrank is not `short-read`).
    fn read(
        &self,
        path: &Path,
        ranges: ReadRanges,
        if_match: Option<&str>,
    ) -> StorageFuture<'_, FileRead>;
    /// What `path` is (a symbolic link is reported, not followed).
    fn stat(&self, path: &Path) -> StorageFuture<'_, EntryMeta>;
    /// Whether `path` exists (following symbolic links inside the tree).
    fn exists(&self, path: &Path) -> StorageFuture<'_, bool>;
    /// A directory's entries, sorted bytewise by name; reserved names hidden.
    fn list(&self, path: &Path) -> StorageFuture<'_, Vec<(String, EntryMeta)>>;
    /// A directory's entry names only, sorted bytewise; reserved names
    /// hidden; at most `max` (more is `not-supported`). The default lists
    /// with metadata and drops it.
    fn list_names(&self, path: &Path, max: usize) -> StorageFuture<'_, Vec<String>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let entries = self.list(&path).await?;
            if entries.len() > max {
                return Err(too_many_entries(max));
            }
            Ok(entries.into_iter().map(|(name, _)| name).collect())
        })
    }
    /// Relative paths of all files below `path`, sorted; at most `max`
    /// (more is `not-supported`); `tally` is told the count as it grows.
    fn walk(&self, path: &Path, max: usize, tally: Tally) -> StorageFuture<'_, Vec<String>>;
    /// Every entry below `path` (files, directories, symbolic links not
    /// followed), sorted bytewise by path; at most `max` (more is
    /// `not-supported`); `tally` is told the count as it grows. A link's
    /// target is given only when relative and inside the tree. The default
    /// is `not-supported` (a store without directories or links).
    fn tree(
        &self,
        path: &Path,
        max: usize,
        tally: Tally,
    ) -> StorageFuture<'_, Vec<framegate_wire::TreeEntry>> {
        let _ = (path, max, tally);
        Box::pin(async {
            Err(CommandError::new(
                framegate_wire::ErrorCode::NOT_SUPPORTED,
                "this storage has no tree of directories and links",
            ))
        })
    }
    /// Starts staging an upload.
    fn stage(&self) -> StorageFuture<'_, Box<dyn StagedUpload>>;
    /// Replaces (or creates) `path` with the staged bytes, atomically.
    fn put(
        &self,
        path: &Path,
        staged: Box<dyn StagedUpload>,
        mode: Option<u32>,
    ) -> StorageFuture<'_, ()>;
    /// Appends the staged bytes to `path` (created if missing), all or
    /// nothing even across a crash; returns the size before.
    fn append(
        &self,
        path: &Path,
        staged: Box<dyn StagedUpload>,
        mode: Option<u32>,
    ) -> StorageFuture<'_, u64>;
    /// Creates a directory (its parent must exist).
    fn mkdir(&self, path: &Path, mode: Option<u32>) -> StorageFuture<'_, ()>;
    /// Moves `from` to `to`, replacing a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> StorageFuture<'_, ()>;
    /// Removes a file.
    fn delete(&self, path: &Path) -> StorageFuture<'_, ()>;
    /// Removes an empty directory.
    fn rmdir(&self, path: &Path) -> StorageFuture<'_, ()>;
}
