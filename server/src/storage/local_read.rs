//! Reading the local tree: files as answers (in memory when small, an open
//! file read when sent otherwise), metadata, listings, walks.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use cap_std::fs::{Dir, MetadataExt as _, OpenOptionsExt as _};
use framegate_wire::{ErrorCode, TreeEntry};

use super::{EntryKind, EntryMeta, Etag, FileRead, ReadRanges};
use crate::answer::{Answer, CommandError};
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX, io_error};

/// Answers up to this size are read at once; larger ones stay an open file
/// read when sent.
pub const MAX_INLINE_ANSWER: u64 = 16 * 1024;

pub(super) fn meta_of(meta: &cap_std::fs::Metadata) -> EntryMeta {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    EntryMeta {
        etag: (kind == EntryKind::File).then(|| Etag::of(meta)),
        kind,
        size: meta.len(),
        mtime,
        mode: meta.mode() & 0o7777,
    }
}

/// Names the private area and staging files use: hidden everywhere.
pub(crate) fn hidden(name: &str) -> bool {
    name == RESERVED_COMPONENT || name.starts_with(TEMP_PREFIX)
}

pub(super) fn is_a_directory(path: &Path) -> CommandError {
    CommandError::new(
        ErrorCode::IS_A_DIRECTORY,
        format!("is a directory: {}", path.display()),
    )
}

/// `not-supported` for a FIFO, socket or device: only regular files are
/// served.
pub(super) fn not_regular(path: &Path) -> CommandError {
    CommandError::new(
        ErrorCode::NOT_SUPPORTED,
        format!("not a regular file: {}", path.display()),
    )
}

/// Opens `path` to read and takes its metadata from the open descriptor
/// (`fstat`): what is described is what will be read, even if the path is
/// replaced meanwhile. `O_NONBLOCK`: opening a FIFO must not hold a pool
/// thread until a writer comes (callers refuse anything but regular files
/// and directories); regular files read as usual. Also used by plain HTTP.
pub(crate) fn open_to_read(
    base: &Dir,
    path: &Path,
) -> io::Result<(std::fs::File, cap_std::fs::Metadata)> {
    let file = base.open_with(
        path,
        cap_std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK),
    )?;
    let meta = file.metadata()?;
    Ok((file.into_std(), meta))
}

/// Opens a regular file to read; returns it with its size and version,
/// both from the open file.
fn open_file(base: &Dir, path: &Path) -> Result<(std::fs::File, u64, Etag), CommandError> {
    let (file, meta) = open_to_read(base, path).map_err(|e| io_error(&e, path))?;
    if meta.is_dir() {
        return Err(is_a_directory(path));
    }
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    Ok((file, meta.len(), Etag::of(&meta)))
}

/// Reads `ranges` of the file at `path` (see [`super::Storage::read`]).
pub(super) fn read_file(
    base: &Dir,
    path: &Path,
    ranges: ReadRanges,
    if_match: Option<&str>,
) -> Result<FileRead, CommandError> {
    let (file, size, etag) = open_file(base, path)?;
    if if_match.is_some_and(|wanted| wanted != etag.as_str()) {
        // No path, no tag in the message: a fresh `stat` gives the new tag.
        return Err(CommandError::new(
            ErrorCode::FILE_CHANGED,
            "the file changed: it is no longer the version named by if-match",
        ));
    }
    let ranges = match ranges {
        ReadRanges::Whole => vec![(0, size)],
        ReadRanges::Ranges(ranges) => {
            if let Some(&(offset, length)) =
                ranges.iter().find(|(o, l)| o.saturating_add(*l) > size)
            {
                return Err(CommandError::new(
                    ErrorCode::SHORT_READ,
                    format!("range {offset},{length} ends past the end of the file ({size} bytes)"),
                ));
            }
            ranges
        }
    };
    Ok(FileRead {
        answer: answer_ranges(file, ranges)?,
        etag,
    })
}

/// Reads ranges of `file` into memory if small, else keeps the file open.
fn answer_ranges(file: std::fs::File, ranges: Vec<(u64, u64)>) -> Result<Answer, CommandError> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if total > MAX_INLINE_ANSWER {
        return Ok(Answer::File { file, ranges });
    }
    let mut buf = BytesMut::zeroed(total as usize);
    let mut at = 0usize;
    for (offset, len) in ranges {
        let end = at + len as usize;
        let slot = buf
            .get_mut(at..end)
            .ok_or_else(|| CommandError::internal("range slot"))?;
        file.read_exact_at(slot, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                CommandError::new(ErrorCode::SHORT_READ, "file shrank while being read")
            } else {
                CommandError::internal(e)
            }
        })?;
        at = end;
    }
    Ok(Answer::Bytes(buf.freeze()))
}

/// Entry names of a directory with their metadata, sorted bytewise,
/// without reserved names.
pub(super) fn dir_entries(
    base: &Dir,
    path: &Path,
) -> Result<Vec<(String, EntryMeta)>, CommandError> {
    let mut names = Vec::new();
    for entry in base.read_dir(path).map_err(|e| io_error(&e, path))? {
        let entry = entry.map_err(|e| io_error(&e, path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if hidden(&name) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| io_error(&e, path))?;
        names.push((name, meta_of(&meta)));
    }
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

/// Entry names of a directory, sorted bytewise, without reserved names and
/// without a `stat` per entry; at most `max`.
pub(super) fn dir_names(base: &Dir, path: &Path, max: usize) -> Result<Vec<String>, CommandError> {
    let mut names = Vec::new();
    for entry in base.read_dir(path).map_err(|e| io_error(&e, path))? {
        let entry = entry.map_err(|e| io_error(&e, path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if hidden(&name) {
            continue;
        }
        if names.len() == max {
            return Err(super::too_many_entries(max));
        }
        names.push(name);
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

pub(super) fn walk(
    base: &Dir,
    root: &Path,
    max: usize,
    tally: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<String>, CommandError> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        for entry in base.read_dir(&dir).map_err(|e| io_error(&e, &dir))? {
            let entry = entry.map_err(|e| io_error(&e, &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if hidden(&name) {
                continue;
            }
            let ft = entry.file_type().map_err(|e| io_error(&e, &dir))?;
            let child = rel.join(&name);
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_file()
                || (ft.is_symlink() && base.metadata(root.join(&child)).is_ok_and(|m| m.is_file()))
            {
                // Symlinked files inside the base count; symlinked
                // directories are not followed (no loops).
                if files.len() == max {
                    return Err(CommandError::new(
                        ErrorCode::NOT_SUPPORTED,
                        format!("more than {max} files below this path"),
                    ));
                }
                files.push(child.to_string_lossy().into_owned());
                tally(files.len() as u64);
            }
        }
    }
    files.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(files)
}

/// Every entry below `root` (symbolic links reported, not followed),
/// sorted bytewise by path; at most `max`.
pub(super) fn tree(
    base: &Dir,
    root: &Path,
    max: usize,
    tally: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<TreeEntry>, CommandError> {
    let mut entries = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in base.read_dir(&dir).map_err(|e| io_error(&e, &dir))? {
            let entry = entry.map_err(|e| io_error(&e, &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if hidden(&name) {
                continue;
            }
            // Not followed: a link is reported as a link.
            let meta = entry.metadata().map_err(|e| io_error(&e, &dir))?;
            let meta = meta_of(&meta);
            let child = rel.join(&name);
            let target = match meta.kind {
                EntryKind::Symlink => inside_target(base, &root.join(&child)),
                EntryKind::Dir => {
                    stack.push(child.clone());
                    None
                }
                _ => None,
            };
            if entries.len() == max {
                return Err(CommandError::new(
                    ErrorCode::NOT_SUPPORTED,
                    format!("more than {max} entries below this path"),
                ));
            }
            entries.push(TreeEntry {
                kind: meta.kind.wire(),
                mode: meta.mode,
                path: child.to_string_lossy().into_owned(),
                size: meta.size,
                mtime: meta.mtime,
                target,
            });
            tally(entries.len() as u64);
        }
    }
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(entries)
}

/// A link's target if it is relative, UTF-8, and (read lexically from the
/// link's directory) stays below the view's base without passing through
/// another link (`x/c -> ..` then `esc -> x/c/..` would leave it); else
/// nothing, so that no path outside the tree is revealed.
fn inside_target(base: &Dir, link: &Path) -> Option<String> {
    target_within(base, link, 0)
}

/// Links followed at most this deep when a target ends at another link.
const MAX_LINK_CHAIN: usize = 8;

/// [`inside_target`]; a target that ends at another link is judged by
/// that link's own target, up to [`MAX_LINK_CHAIN`] links.
fn target_within(base: &Dir, link: &Path, depth: usize) -> Option<String> {
    use std::path::Component;
    if depth > MAX_LINK_CHAIN {
        return None;
    }
    let target = base.read_link(link).ok()?;
    let text = target.to_str()?.to_owned();
    if target.is_absolute() || text.is_empty() {
        return None;
    }
    let mut at: Vec<&std::ffi::OsStr> = link
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let parts: Vec<Component<'_>> = target.components().collect();
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::Normal(n) => {
                at.push(n);
                let passed_through = i + 1 < parts.len();
                if passed_through
                    && base
                        .symlink_metadata(at.iter().collect::<PathBuf>())
                        .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return None;
                }
            }
            Component::ParentDir => {
                at.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    // Where the target ends: another link is fine only if it stays inside.
    let end: PathBuf = at.iter().collect();
    if base
        .symlink_metadata(&end)
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        target_within(base, &end, depth + 1)?;
    }
    Some(text)
}
