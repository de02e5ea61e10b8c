//! The read commands (§9.2).

use crate::command::{Answer, Call, CommandError};
use crate::storage::{EntryKind, ReadRanges};

use super::{Fut, MAX_ITER_FILES, MAX_READV_RANGES, optional_path, path_arg};

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

pub(super) fn list_dir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let names: Vec<String> = call
            .ctx
            .storage
            .list(&path)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(Answer::cbor(&names))
    })
}

pub(super) fn iter_files_recursive(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let files = call.ctx.storage.walk(&path, MAX_ITER_FILES).await?;
        Ok(Answer::cbor(&files))
    })
}
