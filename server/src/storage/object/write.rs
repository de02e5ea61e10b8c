//! Writing the store: uploads spooled to an unnamed temporary file (gone
//! with the process, whatever kills it), then sent in one PUT or, above
//! [`SINGLE_PUT_MAX`], as a multipart upload — visible all at once or not
//! at all; directories as marker keys; `rename` as copy then delete (not
//! atomic).

use std::any::Any;
use std::io::{Read, Seek, Write};
use std::path::Path;

use bytes::Bytes;
use framegate_wire::ErrorCode;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::sync::OwnedSemaphorePermit;

use super::read::{head, is_dir};
use super::{ObjectStorage, store_error};
use crate::answer::CommandError;
use crate::pool::blocking;
use crate::storage::{StagedUpload, StorageFuture, UPLOAD_BUFFER};

/// Uploads up to this size go in one PUT; larger ones as multipart
/// uploads of parts this size.
pub const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;

/// Parts of a multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Read from the spool file at a time while sending a multipart upload.
const SPOOL_READ: usize = 1024 * 1024;

/// An upload spooled to a temporary file until its command's turn.
struct ObjectStaged {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    len: u64,
    _slot: OwnedSemaphorePermit,
}

fn spool_error(err: std::io::Error) -> CommandError {
    tracing::warn!(error = %err, "upload spool failed");
    CommandError::new(ErrorCode::INTERNAL, "the server could not spool the upload")
}

impl ObjectStaged {
    async fn flush(&mut self) -> Result<(), CommandError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| CommandError::internal("spool file gone"))?;
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf) = blocking(move || {
            file.write_all(&buf).map_err(spool_error)?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }
}

impl StagedUpload for ObjectStaged {
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
            Ok(self.len)
        })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

pub(super) async fn stage(s: &ObjectStorage) -> Result<Box<dyn StagedUpload>, CommandError> {
    s.read_only()?;
    let slot = tokio::time::timeout(
        s.shared.staging_wait,
        s.shared.staging.clone().acquire_owned(),
    )
    .await;
    let Ok(Ok(slot)) = slot else {
        return Err(CommandError::new(
            ErrorCode::BUSY,
            "the server is busy: too many uploads in progress; retry later",
        ));
    };
    let file = blocking(|| tempfile::tempfile().map_err(spool_error)).await?;
    Ok(Box::new(ObjectStaged {
        file: Some(file),
        buf: Vec::with_capacity(UPLOAD_BUFFER),
        len: 0,
        _slot: slot,
    }))
}

/// Reads up to `max` bytes of the spool file (from where it is).
async fn read_spool(
    mut file: std::fs::File,
    max: usize,
) -> Result<(std::fs::File, Vec<u8>), CommandError> {
    blocking(move || {
        let mut buf = Vec::with_capacity(max);
        (&mut file)
            .take(max as u64)
            .read_to_end(&mut buf)
            .map_err(spool_error)?;
        Ok((file, buf))
    })
    .await
}

pub(super) async fn put(
    s: &ObjectStorage,
    path: &Path,
    staged: Box<dyn StagedUpload>,
) -> Result<(), CommandError> {
    s.read_only()?;
    let staged = staged
        .into_any()
        .downcast::<ObjectStaged>()
        .map_err(|_| CommandError::internal("an upload staged by another storage"))?;
    let key = s.key(path)?;
    if is_dir(s, &key).await? {
        return Err(CommandError::new(
            ErrorCode::IS_A_DIRECTORY,
            "is a directory",
        ));
    }
    no_file_above(s, &key, path).await?;
    let ObjectStaged { file, len, .. } = *staged;
    let mut file = file.ok_or_else(|| CommandError::internal("spool file gone"))?;
    file = blocking(move || {
        file.rewind().map_err(spool_error)?;
        Ok(file)
    })
    .await?;
    let _permit = s.permit().await?;
    if len <= SINGLE_PUT_MAX {
        let (_, bytes) = read_spool(file, len as usize).await?;
        s.shared
            .store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| store_error(e, path))?;
        return Ok(());
    }
    let upload = s
        .shared
        .store
        .put_multipart(&key)
        .await
        .map_err(|e| store_error(e, path))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT_MAX as usize);
    let mut sent = 0u64;
    while sent < len {
        let (back, piece) = match read_spool(file, SPOOL_READ).await {
            Ok(read) => read,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        file = back;
        if piece.is_empty() {
            let _ = writer.abort().await;
            return Err(CommandError::internal("the spool file ended early"));
        }
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(store_error(e, path));
        }
        sent += piece.len() as u64;
        writer.put(Bytes::from(piece));
    }
    writer.finish().await.map_err(|e| store_error(e, path))?;
    Ok(())
}

/// `not-a-directory` if an object is where a parent directory of `key`
/// would be (below the view's root): a key below an object would make one
/// path both a file and a directory. One HEAD per parent.
async fn no_file_above(s: &ObjectStorage, key: &Key, path: &Path) -> Result<(), CommandError> {
    let mut parent = key.parent();
    while let Some(dir) = parent {
        if dir == s.root || !dir.prefix_matches(&s.root) {
            break;
        }
        if head(s, &dir, path).await?.is_some() {
            return Err(CommandError::new(
                ErrorCode::NOT_A_DIRECTORY,
                "a parent is a file",
            ));
        }
        parent = dir.parent();
    }
    Ok(())
}

pub(super) async fn mkdir(s: &ObjectStorage, path: &Path) -> Result<(), CommandError> {
    s.read_only()?;
    let key = s.key(path)?;
    let exists = || CommandError::new(ErrorCode::FILE_EXISTS, "exists");
    if key == s.root || head(s, &key, path).await?.is_some() || is_dir(s, &key).await? {
        return Err(exists());
    }
    if let Some(parent) = key.parent()
        && parent != s.root
    {
        if head(s, &parent, path).await?.is_some() {
            return Err(CommandError::new(
                ErrorCode::NOT_A_DIRECTORY,
                "a parent is a file",
            ));
        }
        if !is_dir(s, &parent).await? {
            return Err(CommandError::new(
                ErrorCode::NO_SUCH_FILE,
                "no such directory",
            ));
        }
    }
    let _permit = s.permit().await?;
    s.shared
        .store
        .put(&ObjectStorage::marker(&key), PutPayload::default())
        .await
        .map_err(|e| store_error(e, path))?;
    Ok(())
}

pub(super) async fn rename(s: &ObjectStorage, from: &Path, to: &Path) -> Result<(), CommandError> {
    s.read_only()?;
    let (kf, kt) = (s.key(from)?, s.key(to)?);
    if head(s, &kf, from).await?.is_none() {
        return Err(if is_dir(s, &kf).await? {
            CommandError::new(
                ErrorCode::NOT_SUPPORTED,
                "directories cannot be renamed on an object store",
            )
        } else {
            CommandError::new(ErrorCode::NO_SUCH_FILE, "no such file")
        });
    }
    if kf == kt {
        return Ok(());
    }
    if is_dir(s, &kt).await? {
        return Err(CommandError::new(
            ErrorCode::IS_A_DIRECTORY,
            "is a directory",
        ));
    }
    no_file_above(s, &kt, to).await?;
    let _permit = s.permit().await?;
    s.shared
        .store
        .copy(&kf, &kt)
        .await
        .map_err(|e| store_error(e, from))?;
    s.shared
        .store
        .delete(&kf)
        .await
        .map_err(|e| store_error(e, from))
}

pub(super) async fn delete(s: &ObjectStorage, path: &Path) -> Result<(), CommandError> {
    s.read_only()?;
    let key = s.key(path)?;
    if head(s, &key, path).await?.is_none() {
        return Err(if is_dir(s, &key).await? {
            CommandError::new(ErrorCode::IS_A_DIRECTORY, "is a directory")
        } else {
            CommandError::new(ErrorCode::NO_SUCH_FILE, "no such file")
        });
    }
    let _permit = s.permit().await?;
    s.shared
        .store
        .delete(&key)
        .await
        .map_err(|e| store_error(e, path))
}

pub(super) async fn rmdir(s: &ObjectStorage, path: &Path) -> Result<(), CommandError> {
    s.read_only()?;
    let key = s.key(path)?;
    if key == s.root {
        return Err(CommandError::new(
            ErrorCode::PERMISSION_DENIED,
            "the base cannot be removed",
        ));
    }
    let marker = ObjectStorage::marker(&key);
    let keys: Vec<object_store::ObjectMeta> = {
        use futures_util::TryStreamExt;
        let _permit = s.permit().await?;
        let mut listed = s.shared.store.list(Some(&key));
        let mut keys = Vec::new();
        while keys.len() < 2 {
            match listed.try_next().await {
                Ok(Some(meta)) => keys.push(meta),
                Ok(None) => break,
                Err(e) => return Err(store_error(e, path)),
            }
        }
        keys
    };
    if keys.is_empty() {
        return Err(if head(s, &key, path).await?.is_some() {
            CommandError::new(ErrorCode::NOT_A_DIRECTORY, "not a directory")
        } else {
            CommandError::new(ErrorCode::NO_SUCH_FILE, "no such directory")
        });
    }
    if keys.iter().any(|k| k.location != marker) {
        return Err(CommandError::new(
            ErrorCode::DIRECTORY_NOT_EMPTY,
            "directory not empty",
        ));
    }
    let _permit = s.permit().await?;
    s.shared
        .store
        .delete(&marker)
        .await
        .map_err(|e| store_error(e, path))
}
