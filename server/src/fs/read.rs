//! The read commands (§9.2).

use crate::command::{Answer, Call, CommandError};
use crate::storage::{EntryKind, ReadRanges};

use super::{Fut, MAX_ITER_FILES, MAX_LIST_ENTRIES, MAX_READV_RANGES, optional_path, path_arg};
use crate::pool::blocking;

pub(super) fn get(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        call.turn.wait().await?;
        call.ctx.storage.read(&path, ReadRanges::Whole).await
    })
}

pub(super) fn readv(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let ranges = framegate_wire::ranges::parse_ranges(call.arg("ranges")?, MAX_READV_RANGES)
            .map_err(|e| CommandError::bad("ranges", e))?;
        call.turn.wait().await?;
        call.ctx
            .storage
            .read(&path, ReadRanges::Ranges(ranges))
            .await
    })
}

pub(super) fn has(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        call.turn.wait().await?;
        let exists = call.ctx.storage.exists(&path).await?;
        Ok(Answer::cbor(&exists))
    })
}

pub(super) fn stat(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        call.turn.wait().await?;
        let meta = call.ctx.storage.stat(&path).await?;
        let kind = match meta.kind {
            EntryKind::File => framegate_wire::FileKind::File,
            EntryKind::Dir => framegate_wire::FileKind::Dir,
            EntryKind::Symlink => framegate_wire::FileKind::Symlink,
            EntryKind::Other => framegate_wire::FileKind::Other,
        };
        Ok(Answer::Bytes(
            framegate_wire::StatAnswer {
                kind,
                mode: meta.mode,
                size: meta.size,
                mtime: meta.mtime,
            }
            .encode(),
        ))
    })
}

/// Listings hold every name in memory (they are sorted) and are the
/// largest answers: this many run at once in the whole server, the rest
/// wait. Bounds their memory at about this many times the largest listing.
/// A plain-HTTP listing holds its slot until its body was sent (or its
/// client gone, or cut after the send timeout), not only while it is built.
pub const LISTING_SLOTS: usize = 2;

static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LISTING_SLOTS);

/// Waits for one of the server's [`LISTING_SLOTS`] (also taken by plain
/// HTTP directory listings, `http/plain/listing.rs`).
pub(crate) async fn listing_slot() -> Result<tokio::sync::SemaphorePermit<'static>, CommandError> {
    LISTINGS.acquire().await.map_err(CommandError::internal)
}

/// Encodes a listing as CBOR on the file pool (100k names take
/// milliseconds: not on the executor's threads).
async fn encode_listing(names: Vec<String>) -> Result<Answer, CommandError> {
    blocking(move || Ok(Answer::cbor(&names))).await
}

pub(super) fn list_dir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let _slot = listing_slot().await?;
        let names = call.ctx.storage.list_names(&path, MAX_LIST_ENTRIES).await?;
        encode_listing(names).await
    })
}

pub(super) fn iter_files_recursive(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let _slot = listing_slot().await?;
        let files = call.ctx.storage.walk(&path, MAX_ITER_FILES).await?;
        encode_listing(files).await
    })
}
