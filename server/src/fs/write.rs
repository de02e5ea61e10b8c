//! The write commands (§9.3). Each takes effect at its turn; the storage
//! makes it durable and serializes it with other writers of the same path.

use crate::command::{Answer, Call, CommandError};
use crate::storage::StagedUpload;
use crate::tree::split_parent;

use super::{Fut, mode_arg, path_arg};

/// A path argument naming something to write: never the base itself
/// (`invalid-path`).
fn target_arg(call: &Call, name: &str) -> Result<std::path::PathBuf, CommandError> {
    let path = path_arg(call, name)?;
    split_parent(&path)?;
    Ok(path)
}

/// Streams the request's data into the storage's staging area and makes it
/// durable, before the turn.
async fn stage(call: &mut Call) -> Result<Box<dyn StagedUpload>, CommandError> {
    let mut staged = call.ctx.storage.stage().await?;
    if let Some(data) = call.data.as_mut() {
        while let Some(chunk) = data.next().await? {
            staged.write(chunk).await?;
        }
    }
    let bytes = staged.finish().await?;
    tracing::debug!(bytes, "staged");
    Ok(staged)
}

pub(super) fn put(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = target_arg(&call, "path")?;
        let mode = mode_arg(&call)?;
        let staged = stage(&mut call).await?;
        call.turn.wait().await?;
        call.ctx.storage.put(&path, staged, mode).await?;
        Ok(Answer::cbor(&()))
    })
}

pub(super) fn append(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = target_arg(&call, "path")?;
        let mode = mode_arg(&call)?;
        let staged = stage(&mut call).await?;
        call.turn.wait().await?;
        let before = call.ctx.storage.append(&path, staged, mode).await?;
        Ok(Answer::cbor(&before))
    })
}

pub(super) fn mkdir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = target_arg(&call, "path")?;
        let mode = mode_arg(&call)?;
        call.turn.wait().await?;
        call.ctx.storage.mkdir(&path, mode).await?;
        Ok(Answer::cbor(&()))
    })
}

pub(super) fn rename(mut call: Call) -> Fut {
    Box::pin(async move {
        let from = target_arg(&call, "from")?;
        let to = target_arg(&call, "to")?;
        call.turn.wait().await?;
        call.ctx.storage.rename(&from, &to).await?;
        Ok(Answer::cbor(&()))
    })
}

pub(super) fn delete(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = target_arg(&call, "path")?;
        call.turn.wait().await?;
        call.ctx.storage.delete(&path).await?;
        Ok(Answer::cbor(&()))
    })
}

pub(super) fn rmdir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = target_arg(&call, "path")?;
        call.turn.wait().await?;
        call.ctx.storage.rmdir(&path).await?;
        Ok(Answer::cbor(&()))
    })
}
