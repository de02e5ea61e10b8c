//! The local side of a mirror: directories, links, file metadata, and
//! what `--delete` removes.

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use framegate_client::{Error, TreeEntry};

/// A local file error that names the path.
pub(crate) fn local_error(path: &Path, source: std::io::Error) -> Error {
    Error::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the directories a mirrored entry goes into.
pub(super) async fn make_parent(dest: &Path) -> Result<(), Error> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| local_error(parent, e))?;
    }
    Ok(())
}

/// Makes `dest` a directory: an existing one is kept; a file or link in the
/// way is removed with `replace` (`--delete`), else it is an error.
pub(super) async fn ensure_dir(dest: &Path, replace: bool) -> Result<(), Error> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) if replace => tokio::fs::remove_file(dest)
            .await
            .map_err(|e| local_error(dest, e))?,
        Ok(_) => {
            return Err(local_error(
                dest,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "not a directory here, a directory on the server (--delete replaces it)",
                ),
            ));
        }
        Err(_) => {}
    }
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(|e| local_error(dest, e))
}

/// Before a file is written at `dest`: a link there is removed (the file
/// replaces the link, as rsync does, instead of writing where it points).
pub(super) async fn unlink_if_link(dest: &Path) -> Result<(), Error> {
    if tokio::fs::symlink_metadata(dest)
        .await
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        tokio::fs::remove_file(dest)
            .await
            .map_err(|e| local_error(dest, e))?;
    }
    Ok(())
}

/// Whether a link's target, read from the link's directory `at` (relative
/// to the mirror's top), stays inside the mirror.
pub(super) fn target_inside(at: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth = at.split('/').count().saturating_sub(1);
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

/// What a link entry did.
pub(super) enum Linked {
    Made,
    Same,
}

/// Makes `dest` a link to `target`: one already pointing there is kept;
/// a file or link in the way is replaced; a directory in the way is
/// replaced only with `replace` (`--delete`).
pub(super) async fn make_link(dest: &Path, target: &str, replace: bool) -> Result<Linked, Error> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(m) if m.file_type().is_symlink() => {
            if tokio::fs::read_link(dest)
                .await
                .is_ok_and(|t| t == Path::new(target))
            {
                return Ok(Linked::Same);
            }
            tokio::fs::remove_file(dest)
                .await
                .map_err(|e| local_error(dest, e))?;
        }
        Ok(m) if m.is_dir() => {
            if !replace {
                return Err(local_error(
                    dest,
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a directory here, a link on the server (--delete replaces it)",
                    ),
                ));
            }
            tokio::fs::remove_dir_all(dest)
                .await
                .map_err(|e| local_error(dest, e))?;
        }
        Ok(_) => tokio::fs::remove_file(dest)
            .await
            .map_err(|e| local_error(dest, e))?,
        Err(_) => {}
    }
    tokio::fs::symlink(target, dest)
        .await
        .map_err(|e| local_error(dest, e))?;
    Ok(Linked::Made)
}

/// A mirrored file or directory gets the server's mtime and permission
/// bits (not a link's target, not a FIFO written into).
pub(super) fn finish(dest: &Path, e: &TreeEntry) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !(meta.is_file() || meta.is_dir()) {
        return Ok(());
    }
    if e.mode != 0 {
        // A directory stays writable and searchable by us while we work.
        let mode = if meta.is_dir() {
            e.mode & 0o777 | 0o700
        } else {
            e.mode & 0o777
        };
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
            .map_err(|err| local_error(dest, err))?;
    }
    let when = std::time::UNIX_EPOCH + Duration::from_secs_f64(e.mtime.max(0.0));
    let file = if meta.is_dir() {
        std::fs::File::open(dest)
    } else {
        std::fs::File::options()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dest)
    };
    file.and_then(|f| f.set_modified(when))
        .map_err(|err| local_error(dest, err))
}

/// Whether the local file has the entry's size and mtime.
pub(super) fn same_as_local(path: &Path, e: &TreeEntry) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let local = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    meta.is_file()
        && meta.len() == e.size
        && local.is_some_and(|l| (l.as_secs_f64() - e.mtime).abs() < 1e-3)
}

/// Local paths below `dir` that the server does not have (`--delete`),
/// deepest first; `keep` says which relative paths stay (the server's, and
/// excluded ones). A directory kept is searched; one not kept is listed
/// once (everything below goes with it).
pub(super) fn extraneous(
    dir: &Path,
    keep: &HashSet<String>,
    excluded: &dyn Fn(&str) -> bool,
) -> Vec<(String, PathBuf, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let here = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let Ok(read) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in read.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if excluded(&child) {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if keep.contains(&child) {
                if is_dir {
                    stack.push(child);
                }
            } else {
                out.push((child, entry.path(), is_dir));
            }
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_stay_inside_the_mirror() {
        assert!(target_inside("a", "b"));
        assert!(target_inside("d/a", "../b"));
        assert!(!target_inside("a", "../b"));
        assert!(!target_inside("d/a", "../../b"));
        assert!(target_inside("d/e/a", "./../../x/./y"));
        assert!(!target_inside("a", "/etc/passwd"));
        assert!(!target_inside("a", ""));
    }
}
