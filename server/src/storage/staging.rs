//! Staged uploads of the local tree: files in the private area
//! `.framegate/staging/` of the served root, under a random name, locked
//! (`flock`) by their writer so that a start-up sweep of another instance
//! on the same tree leaves them alone, and removed by a drop guard unless
//! committed. Start-up removes the ones whose writer is gone.

use std::any::Any;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};

use super::{StagedUpload, StorageFuture};
use crate::answer::CommandError;
use crate::pool::{blocking, blocking_heavy};
use crate::tree::RESERVED_COMPONENT;

/// Bytes gathered before a staged upload is written to its file.
pub const UPLOAD_BUFFER: usize = 1 << 20;

/// The mode staged files are created with (a put's default).
pub(crate) const STAGING_MODE: u32 = 0o644;

/// Prefix of staging file names.
const STAGING_PREFIX: &str = "upload-";

/// An upload staged in the private area.
pub(crate) struct LocalStaged {
    pub(crate) dir: Arc<Dir>,
    pub(crate) name: String,
    pub(crate) file: Option<std::fs::File>,
    buf: BytesMut,
    pub(crate) len: u64,
    pub(crate) committed: bool,
    /// Its place among the staging files open at once.
    pub(crate) slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl LocalStaged {
    /// Creates a new staging file (blocking).
    pub(crate) fn create(dir: Arc<Dir>) -> Result<LocalStaged, CommandError> {
        for _ in 0..8 {
            let name = format!("{STAGING_PREFIX}{:016x}", fastrand::u64(..));
            match dir.open_with(
                &name,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(STAGING_MODE),
            ) {
                Ok(file) => {
                    let file = file.into_std();
                    let mut staged = LocalStaged {
                        dir,
                        name,
                        file: None,
                        buf: BytesMut::new(),
                        len: 0,
                        committed: false,
                        slot: None,
                    };
                    // Locked while its writer lives: a start-up sweep of
                    // another instance leaves it alone (the guard removes it
                    // if locking fails).
                    file.lock().map_err(CommandError::internal)?;
                    staged.file = Some(file);
                    return Ok(staged);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(staging_error(e)),
            }
        }
        Err(CommandError::internal("no free staging name"))
    }

    async fn flush(&mut self) -> Result<(), CommandError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| CommandError::internal("staging file gone"))?;
        let buf = self.buf.split().freeze();
        let file = blocking(move || {
            file.write_all(&buf).map_err(staging_error)?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }
}

/// A full disk or quota is the client's business to hear about; the rest
/// is internal (and logged).
fn staging_error(e: io::Error) -> CommandError {
    match e.raw_os_error() {
        Some(28) | Some(122) => CommandError::new(
            framegate_wire::ErrorCode::INTERNAL,
            "no space left on the server for this upload",
        ),
        _ => CommandError::internal(e),
    }
}

impl StagedUpload for LocalStaged {
    fn write(&mut self, data: Bytes) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            self.len += data.len() as u64;
            self.buf.extend_from_slice(&data);
            if self.buf.len() >= UPLOAD_BUFFER {
                self.flush().await?;
            }
            Ok(())
        })
    }

    fn finish(&mut self) -> StorageFuture<'_, u64> {
        Box::pin(async move {
            self.flush().await?;
            let file = self
                .file
                .take()
                .ok_or_else(|| CommandError::internal("staging file gone"))?;
            let file = blocking_heavy(move || {
                file.sync_all().map_err(staging_error)?;
                Ok(file)
            })
            .await?;
            self.file = Some(file);
            Ok(self.len)
        })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// Removes staging files whose writer is gone (start-up). Returns how many
/// and their bytes; files locked by a live process are left.
pub(crate) fn sweep(dir: &Dir) -> io::Result<(usize, u64)> {
    let (mut count, mut bytes) = (0, 0);
    for entry in dir.entries()? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Ok(file) = super::journal::open_regular(dir, &name, false) else {
            // Not a regular file (a FIFO, a symlink): not ours.
            let _ = dir.remove_file(&name);
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        let len = file.metadata().map_or(0, |m| m.len());
        if dir.remove_file(&name).is_ok() {
            count += 1;
            bytes += len;
        }
    }
    Ok((count, bytes))
}

/// Marks a tree whose old-style staging files were swept (once per tree).
const LEGACY_SWEPT: &str = "legacy-staging-swept";

/// An old-style staging file younger than this may belong to an old
/// instance still running (a rolling upgrade): left, and looked at again
/// on the next start.
const LEGACY_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether `name` is an old release's staging name:
/// `.framegate-upload-<pid>-<n>`, decimal.
fn legacy_name(name: &str) -> bool {
    name.strip_prefix(crate::tree::TEMP_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, n)| {
            !pid.is_empty()
                && !n.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Releases before the private area staged uploads beside their targets as
/// `.framegate-upload-<pid>-<n>`; a crash left them there, hidden from
/// listings but making `rmdir` fail. A writable start removes those older
/// than [`LEGACY_MIN_AGE`] (one walk of the tree, not following symlinks)
/// and, once nothing is left to look at, leaves a marker so later starts
/// skip the walk.
pub(crate) fn sweep_legacy(root: &Dir) -> io::Result<(usize, u64)> {
    let marker = Path::new(RESERVED_COMPONENT).join(LEGACY_SWEPT);
    if root.symlink_metadata(&marker).is_ok() {
        return Ok((0, 0));
    }
    let (mut count, mut bytes) = (0, 0);
    let mut complete = true;
    let mut stack = vec![PathBuf::from(".")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = root.read_dir(&dir) else {
            complete = false;
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = dir.join(&name);
            if kind.is_dir() && name != RESERVED_COMPONENT {
                stack.push(path);
            } else if kind.is_file() && legacy_name(&name) {
                let meta = entry.metadata().ok();
                let age = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.into_std().elapsed().ok());
                if age.is_none_or(|a| a < LEGACY_MIN_AGE) {
                    complete = false;
                    continue;
                }
                if root.remove_file(&path).is_ok() {
                    count += 1;
                    bytes += meta.map_or(0, |m| m.len());
                }
            }
        }
    }
    if complete {
        root.write(&marker, b"")?;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_old_staging_names_are_legacy() {
        assert!(super::legacy_name(".framegate-upload-6315-0"));
        assert!(!super::legacy_name(".framegate-upload-notes.txt"));
        assert!(!super::legacy_name(".framegate-upload--1"));
        assert!(!super::legacy_name(".framegate-upload-12-"));
        assert!(!super::legacy_name("framegate-upload-1-2"));
    }
}
