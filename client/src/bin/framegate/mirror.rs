//! `framegate mirror`: a whole tree into a local directory, in batches.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use framegate_client::{Error, Layer, Misbehavior, StatAnswer, local_path_below, replace_file};
use serde_json::json;

use crate::{Ctx, bar, open};

/// Files per `stat` or `get` batch in `mirror`.
const MIRROR_BATCH_FILES: usize = 1000;
/// Answer bytes per `get` batch in `mirror` (bounds memory).
const MIRROR_BATCH_BYTES: u64 = 64 << 20;

/// How a mirror ended: every file, or some failed (each was named on
/// stderr as it failed; the rest was mirrored).
pub(crate) enum Mirrored {
    All,
    Partly,
}

pub(crate) async fn mirror(
    ctx: &Ctx,
    url: &str,
    dir: &Path,
    dry_run: bool,
) -> Result<Mirrored, Error> {
    let t = open(ctx, url).await?;
    // Names that are not plain relative paths (absolute, `..`) never
    // reach the disk: a server's listing cannot write outside `dir`.
    let (files, unsafe_names): (Vec<String>, Vec<String>) = t
        .iter_files_recursive("")
        .await?
        .into_iter()
        .partition(|f| local_path_below(dir, f).is_some());
    for name in &unsafe_names {
        eprintln!(
            "framegate: skipping {name:?}: not a relative path below {}",
            dir.display()
        );
    }
    // A file that fails (unreadable on the server, unwritable here) is
    // named and skipped; the others go on (rsync's habit).
    let mut failed = 0u64;
    let mut fail = |f: &str, e: &Error| {
        failed += 1;
        eprintln!("framegate: {f}: {e}");
    };
    let mut messages = 1u64;
    // Which files differ from the local copy?
    let mut wanted: Vec<(String, StatAnswer)> = Vec::new();
    let mut skipped = 0u64;
    for chunk in files.chunks(MIRROR_BATCH_FILES) {
        let mut batch = t.batch();
        let slots: Vec<_> = chunk.iter().map(|f| batch.stat(f)).collect();
        let mut results = batch.send().await?;
        messages += 1;
        for (f, slot) in chunk.iter().zip(slots) {
            match results.take(slot) {
                Ok(stat) if same_as_local(&local(dir, f)?, &stat) => skipped += 1,
                Ok(stat) => wanted.push((f.clone(), stat)),
                Err(e) => fail(f, &e),
            }
        }
    }
    let total: u64 = wanted.iter().map(|(_, s)| s.size).sum();
    if dry_run {
        for (f, s) in &wanted {
            if ctx.json {
                println!("{}", json!({ "path": f, "size": s.size }));
            } else {
                println!("{f} ({} bytes)", s.size);
            }
        }
        if !ctx.quiet && !ctx.json {
            eprintln!(
                "{} files: {} to download ({total} bytes), {skipped} up to date, {failed} failed (dry run: nothing written)",
                files.len(),
                wanted.len()
            );
        }
        return Ok(if failed == 0 {
            Mirrored::All
        } else {
            Mirrored::Partly
        });
    }
    let pb = bar(ctx, Some(total), "mirror");
    let mut downloaded = 0u64;
    let mut bytes_done = 0u64;
    let mut i = 0;
    while i < wanted.len() {
        // One message per group: up to 1,000 files or 64 MiB of answers.
        let mut group = Vec::new();
        let mut group_bytes = 0u64;
        while let Some((f, s)) = wanted.get(i) {
            if !group.is_empty()
                && (group.len() >= MIRROR_BATCH_FILES || group_bytes + s.size > MIRROR_BATCH_BYTES)
            {
                break;
            }
            group.push((f.clone(), s.clone()));
            group_bytes += s.size;
            i += 1;
        }
        if group.len() == 1 && group_bytes > MIRROR_BATCH_BYTES {
            // A large file streams straight to disk.
            let (f, s) = &group[0];
            let one = async {
                let dest = local(dir, f)?;
                make_parent(&dest).await?;
                t.download(f, &dest).await?;
                finish_file(&dest, s)
            };
            match one.await {
                Ok(()) => {
                    downloaded += 1;
                    bytes_done += s.size;
                }
                Err(e) if e.layer() == Layer::Transport => return Err(e),
                Err(e) => fail(f, &e),
            }
            messages += 2;
            pb.set_position(bytes_done);
            continue;
        }
        let mut batch = t.batch();
        let slots: Vec<_> = group.iter().map(|(f, _)| batch.get(f)).collect();
        let mut results = batch.send().await?;
        messages += 1;
        for ((f, s), slot) in group.iter().zip(slots) {
            let one = async {
                let data: Bytes = results.take(slot)?;
                let dest = local(dir, f)?;
                make_parent(&dest).await?;
                replace_file(&dest, &data).await?;
                finish_file(&dest, s)?;
                Ok::<_, Error>(data.len() as u64)
            };
            match one.await {
                Ok(n) => {
                    downloaded += 1;
                    bytes_done += n;
                }
                Err(e) => fail(f, &e),
            }
            pb.set_position(bytes_done);
        }
    }
    pb.finish_and_clear();
    if ctx.json {
        println!(
            "{}",
            json!({ "files": files.len(), "downloaded": downloaded, "skipped": skipped, "failed": failed, "bytes": bytes_done, "messages": messages })
        );
    } else if !ctx.quiet {
        eprintln!(
            "{} files: {downloaded} downloaded ({bytes_done} bytes), {skipped} up to date, {failed} failed, {messages} messages",
            files.len()
        );
    }
    if let Some(name) = unsafe_names.first() {
        return Err(Error::Misbehaved(Misbehavior::Malformed {
            what: "the file list".into(),
            reason: format!(
                "{} names are not relative paths (first: {name:?}); they were skipped",
                unsafe_names.len()
            ),
        }));
    }
    Ok(if failed == 0 {
        Mirrored::All
    } else {
        Mirrored::Partly
    })
}

/// Creates the directories a mirrored file goes into.
async fn make_parent(dest: &Path) -> Result<(), Error> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| local_error(parent, e))?;
    }
    Ok(())
}

/// A mirrored file gets the server's mtime and permission bits (of a
/// regular file only: a link's target, not a FIFO written into).
fn finish_file(dest: &Path, s: &StatAnswer) -> Result<(), Error> {
    set_mtime(dest, s.mtime).map_err(|e| local_error(dest, e))?;
    if std::fs::metadata(dest).is_ok_and(|m| m.is_file()) && s.mode != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(s.mode & 0o777))
            .map_err(|e| local_error(dest, e))?;
    }
    Ok(())
}

fn same_as_local(path: &Path, stat: &StatAnswer) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let local = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    meta.len() == stat.size && local.is_some_and(|l| (l.as_secs_f64() - stat.mtime).abs() < 1e-3)
}

/// `f` below `dir` (checked again where it is used).
fn local(dir: &Path, f: &str) -> Result<PathBuf, Error> {
    local_path_below(dir, f).ok_or_else(|| {
        Error::Misbehaved(Misbehavior::Malformed {
            what: "a file name".into(),
            reason: format!("{f:?} is not a relative path"),
        })
    })
}

/// A local file error that names the path.
pub(crate) fn local_error(path: &Path, source: std::io::Error) -> Error {
    Error::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// Sets a mirrored file's mtime — of a regular file only (through a
/// link: its target); opening a FIFO to set it would wait for a reader.
fn set_mtime(path: &Path, mtime: f64) -> std::io::Result<()> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let when = std::time::UNIX_EPOCH + Duration::from_secs_f64(mtime.max(0.0));
    std::fs::File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?
        .set_modified(when)
}
