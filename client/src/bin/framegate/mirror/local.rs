//! The local side of a mirror: directories, links, file metadata, and
//! what `--delete` removes. Nothing is ever written, replaced or deleted
//! through a link: a path whose parent components include a link is
//! refused, and a link in the way of a file or directory is replaced.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use framegate_client::{Error, TreeEntry};

/// A local file error that names the path.
pub(crate) fn local_error(path: &Path, source: std::io::Error) -> Error {
    Error::Local {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(path: &Path, why: &str) -> Error {
    local_error(path, std::io::Error::other(why.to_string()))
}

/// Refuses `rel` below `dir` if one of its parent components is a link
/// (a link made by an earlier entry, or one that was there): writing there
/// would write wherever the link points. Missing components are fine
/// (they are created as directories).
pub(super) fn no_link_above(dir: &Path, rel: &str) -> Result<(), Error> {
    parents_for(dir, rel, None)
}

/// [`no_link_above`], and with `replace` (`--delete`, its exclusions) a
/// file standing where a parent directory goes is removed (the server has
/// a directory there).
pub(super) fn parents_for(
    dir: &Path,
    rel: &str,
    replace: Option<&Excluded<'_>>,
) -> Result<(), Error> {
    let mut at = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().take(parts.len().saturating_sub(1)).enumerate() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    &at,
                    "a link where the server has a directory: not written through",
                ));
            }
            Ok(m) if !m.is_dir() => match replace {
                Some(excluded) if !excluded(&parts[..=i].join("/"), false) => {
                    std::fs::remove_file(&at).map_err(|e| local_error(&at, e))?;
                    break;
                }
                _ => {
                    return Err(refused(
                        &at,
                        "not a directory here, a directory on the server (--delete replaces it)",
                    ));
                }
            },
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Whether a path (relative; a directory or not) is excluded.
pub(super) type Excluded<'a> = dyn Fn(&str, bool) -> bool + Sync + 'a;

/// Whether anything below the local directory `path` (at `rel`) is
/// excluded: such a directory is not replaced (its excluded entries stay).
fn holds_excluded(path: &Path, rel: &str, excluded: &Excluded<'_>) -> bool {
    let Ok(read) = std::fs::read_dir(path) else {
        return false;
    };
    read.flatten().any(|entry| {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return false;
        };
        let child = format!("{rel}/{name}");
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        excluded(&child, is_dir) || (is_dir && holds_excluded(&entry.path(), &child, excluded))
    })
}

/// Removes the directory `dest` (at `rel`) standing where the server has
/// something else, unless it holds excluded entries.
async fn replace_dir(dest: &Path, rel: &str, excluded: &Excluded<'_>) -> Result<(), Error> {
    if holds_excluded(dest, rel, excluded) {
        return Err(refused(
            dest,
            "a directory here holding excluded entries: not replaced",
        ));
    }
    tokio::fs::remove_dir_all(dest)
        .await
        .map_err(|e| local_error(dest, e))
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

/// Whether a local entry holds no data of its own: a link, FIFO, socket
/// or device node (replacing it loses nothing).
fn holds_no_data(m: &std::fs::Metadata) -> bool {
    let t = m.file_type();
    t.is_symlink() || t.is_fifo() || t.is_socket() || t.is_char_device() || t.is_block_device()
}

/// Makes `dest` a directory: an existing one is kept; a link or special
/// file in the way is replaced; a file only with `replace` (`--delete`).
pub(super) async fn ensure_dir(dest: &Path, replace: bool) -> Result<(), Error> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if holds_no_data(&m) || replace => tokio::fs::remove_file(dest)
            .await
            .map_err(|e| local_error(dest, e))?,
        Ok(_) => {
            return Err(refused(
                dest,
                "a file here, a directory on the server (--delete replaces it)",
            ));
        }
        Err(_) => {}
    }
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(|e| local_error(dest, e))
}

/// Before a file is written at `dest`: a link, FIFO, socket or device
/// there is removed (the file replaces it, as rsync does, instead of
/// writing where it points or blocking on a FIFO); a directory only with
/// `replace` (`--delete`).
pub(super) async fn clear_for_file(
    dest: &Path,
    rel: &str,
    replace: Option<&Excluded<'_>>,
) -> Result<(), Error> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(m) if holds_no_data(&m) => tokio::fs::remove_file(dest)
            .await
            .map_err(|e| local_error(dest, e)),
        Ok(m) if m.is_dir() => match replace {
            Some(excluded) => replace_dir(dest, rel, excluded).await,
            None => Err(refused(
                dest,
                "a directory here, a file on the server (--delete replaces it)",
            )),
        },
        _ => Ok(()),
    }
}

/// Whether a link at `at` (relative to the mirror's top) with `target`
/// stays inside the mirror: read lexically from the link's directory, it
/// never climbs above the top, and passes through no other link of the
/// tree (`links`: whose targets could lead anywhere, e.g. `x/c -> ..`
/// then `esc -> x/c/..`).
pub(super) fn target_inside(at: &str, target: &str, is_link: &dyn Fn(&str) -> bool) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut path: Vec<&str> = at.split('/').collect();
    path.pop();
    let parts: Vec<Component<'_>> = Path::new(target).components().collect();
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::Normal(n) => {
                let Some(n) = n.to_str() else {
                    return false;
                };
                path.push(n);
                // A link may be the last component, not one passed through.
                if i + 1 < parts.len() && is_link(&path.join("/")) {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if path.pop().is_none() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Where a link at `at` to `target` (already judged by [`target_inside`])
/// ends, relative to the mirror's top.
pub(super) fn resolve(at: &str, target: &str) -> String {
    let mut path: Vec<&str> = at.split('/').collect();
    path.pop();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(n) => path.push(n.to_str().unwrap_or_default()),
            Component::ParentDir => {
                path.pop();
            }
            _ => {}
        }
    }
    path.join("/")
}

/// What a link entry did.
pub(super) enum Linked {
    Made,
    Same,
}

/// Makes `dest` a link to `target`: one already pointing there is kept;
/// a file, link or special file in the way is replaced; a directory only
/// with `replace` (`--delete`).
pub(super) async fn make_link(
    dest: &Path,
    rel: &str,
    target: &str,
    replace: Option<&Excluded<'_>>,
) -> Result<Linked, Error> {
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
        Ok(m) if m.is_dir() => match replace {
            Some(excluded) => replace_dir(dest, rel, excluded).await?,
            None => {
                return Err(refused(
                    dest,
                    "a directory here, a link on the server (--delete replaces it)",
                ));
            }
        },
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

/// A mirrored file or directory gets the server's mtime, then its
/// permission bits (in that order: a read-only file's mtime is set while it
/// may still be opened; the mtime is set through a read-only descriptor,
/// which its owner may do). Links and special files are left alone.
pub(super) fn finish(dest: &Path, e: &TreeEntry) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !(meta.is_file() || meta.is_dir()) {
        return Ok(());
    }
    let when = crate::files::time_of(e.mtime);
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(dest)
        .and_then(|f| f.set_modified(when))
        .map_err(|err| local_error(dest, err))?;
    // A directory stays writable and searchable by us: later runs write
    // into it. A file's mode is the server's, 000 included.
    let mode = if meta.is_dir() {
        e.mode & 0o777 | 0o700
    } else {
        e.mode & 0o777
    };
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .map_err(|err| local_error(dest, err))?;
    Ok(())
}

/// How a local file compares with its entry.
pub(super) enum Local {
    /// Same size and mtime (and mode).
    Same,
    /// Same size and mtime, another mode: only the mode is set.
    ModeDiffers,
    /// Missing, another kind, size or mtime.
    Differs,
}

pub(super) fn compare(path: &Path, e: &TreeEntry) -> Local {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Local::Differs;
    };
    let local = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let same = meta.is_file()
        && meta.len() == e.size
        && local.is_some_and(|l| (l.as_secs_f64() - e.mtime).abs() < 1e-3);
    if !same {
        Local::Differs
    } else if meta.permissions().mode() & 0o777 != e.mode & 0o777 {
        Local::ModeDiffers
    } else {
        Local::Same
    }
}

/// What `--delete` removes, deepest first: local entries below `dir` that
/// are not in `keep` (the server's, the ones that failed) and not excluded.
/// A directory is searched whether kept or not (excluded entries inside an
/// extra directory stay, and so does the directory); with `dirs_known`
/// false (no `tree`: the server's directories are not known) directories
/// are searched but never listed. Links are never followed.
pub(super) fn extraneous(
    dir: &Path,
    keep: &HashSet<String>,
    excluded: &Excluded<'_>,
    dirs_known: bool,
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
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if excluded(&child, is_dir) {
                continue;
            }
            if is_dir {
                stack.push(child.clone());
            }
            if !keep.contains(&child) && (dirs_known || !is_dir) {
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
        let none = |_: &str| false;
        assert!(target_inside("a", "b", &none));
        assert!(target_inside("d/a", "../b", &none));
        assert!(!target_inside("a", "../b", &none));
        assert!(!target_inside("d/a", "../../b", &none));
        assert!(target_inside("d/e/a", "./../../x/./y", &none));
        assert!(!target_inside("a", "/etc/passwd", &none));
        assert!(!target_inside("a", "", &none));
        // Through another link: refused; to one: fine.
        let links = |p: &str| p == "x/c";
        assert!(!target_inside("esc", "x/c/..", &links));
        assert!(!target_inside("esc", "x/c/f", &links));
        assert!(target_inside("esc", "x/c", &links));
    }
}
