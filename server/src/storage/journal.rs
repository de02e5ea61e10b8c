//! Append journals: what makes `append` all-or-nothing across a crash.
//!
//! Before an append writes a byte, it makes two entries in the private
//! area's `journal/` directory, named by the file's device and inode:
//! `<dev>-<ino>`, the record (the file's length and birth time), written
//! under a temporary name, locked (`flock`) and synced, then renamed into
//! place — so no other process ever sees a record that is unlocked or
//! incomplete while its writer lives — and then `<dev>-<ino>.file`, a hard
//! link to the file itself, so the file can be found again whatever happens
//! to its path (a directory renamed above it, any bytes in its name). Both
//! are synced before the first byte is written. Once the appended bytes are synced
//! the record and link are removed (and that removal synced) before the
//! append is acknowledged.
//!
//! A record that outlives its writer (`kill -9`, a crash) means "truncate
//! the file back to this length": the next writer of that file does so
//! before anything else (it holds the file's lock, so the record's owner
//! must be gone), and start-up does so for every record no live process
//! holds (another instance on the same tree keeps its own). This is
//! SQLite's rollback journal, reduced to one number per file. The birth
//! time tells a reused inode number apart.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};

use super::lock::{LockedFile, sync_dir};
use crate::answer::CommandError;

/// First line of every journal record.
const MAGIC: &str = "framegate-append v2";

/// Largest journal record read back (a path plus a few numbers).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024;

/// Suffix of the hard link to the journaled file.
const LINK_SUFFIX: &str = ".file";

/// Infix of a record being written (before its rename into place).
const TEMP_INFIX: &str = ".tmp-";

/// What a journal record says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    len: u64,
    created: bool,
    btime: u128,
    /// Root-relative path when the append began (hex of its bytes): only
    /// used to remove a file the cut-off append created.
    path: PathBuf,
}

impl Record {
    fn encode(&self) -> String {
        use std::os::unix::ffi::OsStrExt;
        format!(
            "{MAGIC}\nlen {}\ncreated {}\nbtime {}\npath {}\n",
            self.len,
            u8::from(self.created),
            self.btime,
            hex::encode(self.path.as_os_str().as_bytes())
        )
    }

    fn decode(text: &str) -> Option<Record> {
        use std::os::unix::ffi::OsStringExt;
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ');
        let len = field("len")?.parse().ok()?;
        let created = field("created")? == "1";
        let btime = field("btime")?.parse().ok()?;
        let path = hex::decode(field("path")?).ok()?;
        Some(Record {
            len,
            created,
            btime,
            path: PathBuf::from(std::ffi::OsString::from_vec(path)),
        })
    }
}

/// Birth time of a file in nanoseconds, 0 where the filesystem has none.
fn birth(meta: &std::fs::Metadata) -> u128 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn name_of((dev, ino): (u64, u64)) -> String {
    format!("{dev:x}-{ino:x}")
}

fn link_of(name: &str) -> String {
    format!("{name}{LINK_SUFFIX}")
}

/// Opens for reading without blocking (a FIFO planted in the private area
/// must not hang the server) and only if it is a regular file.
pub(crate) fn open_regular(dir: &Dir, name: &str, write: bool) -> io::Result<std::fs::File> {
    let file = dir
        .open_with(
            name,
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW),
        )?
        .into_std();
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// An append in progress: its record exists and is locked.
#[derive(Debug)]
pub(crate) struct Pending {
    name: String,
    _record: std::fs::File,
}

/// Hard-links the open file `file` as `name` in `dir`, following no path:
/// through `/proc/self/fd` with `AT_SYMLINK_FOLLOW`, so a file reached
/// through a symlink is linked itself, and a path swapped meanwhile cannot
/// be linked instead. Fails with `EXDEV` across filesystems.
fn link_open_file(file: &std::fs::File, dir: &Dir, name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        dir,
        name,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Records that `target` (at root-relative `path`) is `len` bytes long
/// before an append; durable when this returns.
pub(crate) fn begin(
    journal: &Dir,
    target: &LockedFile,
    len: u64,
    created: bool,
    path: &Path,
) -> Result<Pending, CommandError> {
    let name = name_of(target.identity());
    let link = link_of(&name);
    let temp = format!("{name}{TEMP_INFIX}{:016x}", fastrand::u64(..));
    let record = Record {
        len,
        created,
        btime: birth(&target.meta),
        path: path.to_path_buf(),
    };
    let written = (|| -> io::Result<std::fs::File> {
        let file = journal
            .open_with(&temp, OpenOptions::new().write(true).create_new(true))?
            .into_std();
        file.lock()?;
        (&file).write_all(record.encode().as_bytes())?;
        file.sync_all()?;
        // Visible under its name only now: locked and complete.
        journal.rename(&temp, journal, &name)?;
        Ok(file)
    })();
    let file = match written {
        Ok(file) => file,
        Err(e) => {
            let _ = journal.remove_file(&temp);
            return Err(CommandError::internal(e));
        }
    };
    let _ = journal.remove_file(&link); // a stale link of a dropped record
    if let Err(e) = link_open_file(&target.file, journal, &link) {
        let _ = journal.remove_file(&name);
        return Err(match e.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::EPERM) | Some(libc::EOPNOTSUPP) => CommandError::new(
                framegate_wire::ErrorCode::NOT_SUPPORTED,
                "append needs hard links on the served root's filesystem \
                 (this file is on another one)",
            ),
            _ => CommandError::internal(e),
        });
    }
    sync_dir(journal, Path::new("."))?;
    Ok(Pending {
        name,
        _record: file,
    })
}

/// Ends an append: record and link are removed, durably (from here on a
/// crash keeps the appended bytes).
pub(crate) fn commit(journal: &Dir, pending: Pending) -> Result<(), CommandError> {
    journal
        .remove_file(&pending.name)
        .map_err(CommandError::internal)?;
    let _ = journal.remove_file(link_of(&pending.name));
    sync_dir(journal, Path::new("."))
}

fn read_record(journal: &Dir, name: &str) -> io::Result<Option<Record>> {
    let file = match open_regular(journal, name, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut raw = Vec::new();
    file.take(MAX_JOURNAL_BYTES).read_to_end(&mut raw)?;
    // Torn or foreign bytes decode to `None`: a record is written and
    // synced before the append writes anything, so a record that cannot
    // be read guards no data.
    Ok(std::str::from_utf8(&raw).ok().and_then(Record::decode))
}

/// What [`recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// No record for this file.
    Nothing,
    /// A record of a dead writer, honoured (the file is back to its length
    /// before that append) and removed.
    RolledBack {
        /// The cut-off append created the file.
        created: bool,
        /// The root-relative path it had.
        path: PathBuf,
    },
}

/// Rolls `target` (opened for writing) back to its recorded length, if a
/// record of a dead writer is there (the caller holds the target's lock).
/// A record of another file that reused the inode, or an unreadable one,
/// is dropped.
pub(crate) fn recover(journal: &Dir, target: &LockedFile) -> Result<Recovered, CommandError> {
    let name = name_of(target.identity());
    let record = match read_record(journal, &name) {
        Ok(Some(r)) => r,
        Ok(None) => {
            if journal.symlink_metadata(&name).is_ok() {
                tracing::warn!(journal = %name, "dropping an unreadable append journal");
            }
            discard(journal, target.identity())?;
            return Ok(Recovered::Nothing);
        }
        // Not read now is not "nothing to undo": keep it for the next try.
        Err(e) => return Err(CommandError::internal(e)),
    };
    if record.btime != birth(&target.meta) {
        discard(journal, target.identity())?;
        return Ok(Recovered::Nothing);
    }
    if target.meta.len() > record.len {
        target
            .file
            .set_len(record.len)
            .and_then(|()| target.file.sync_all())
            .map_err(CommandError::internal)?;
        tracing::warn!(
            kept = record.len,
            dropped = target.meta.len() - record.len,
            "rolled back an append cut off by a crash"
        );
    }
    discard(journal, target.identity())?;
    Ok(Recovered::RolledBack {
        created: record.created && record.len == 0,
        path: record.path,
    })
}

/// Drops the record (and link) of a file that is being replaced or removed.
pub(crate) fn discard(journal: &Dir, identity: (u64, u64)) -> Result<(), CommandError> {
    let name = name_of(identity);
    let link = journal.remove_file(link_of(&name)).is_ok();
    match journal.remove_file(&name) {
        Ok(()) => sync_dir(journal, Path::new(".")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if link {
                sync_dir(journal, Path::new("."))?;
            }
            Ok(())
        }
        Err(e) => Err(CommandError::internal(e)),
    }
}

/// Opens the journaled file through its link for writing; a file whose
/// mode forbids writing (an append that set `mode=444`) is made writable
/// for the moment (the caller restores the mode).
fn open_link(journal: &Dir, link: &str) -> io::Result<(std::fs::File, Option<u32>)> {
    match open_regular(journal, link, true) {
        Ok(file) => Ok((file, None)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            use cap_std::fs::PermissionsExt;
            let mode = journal.metadata(link)?.permissions().mode() & 0o7777;
            journal.set_permissions(link, cap_std::fs::Permissions::from_mode(mode | 0o200))?;
            Ok((open_regular(journal, link, true)?, Some(mode)))
        }
        Err(e) => Err(e),
    }
}

/// Rolls back every append whose writer is gone (start-up). Records still
/// locked by a live process (another instance) are left, and so are files
/// another process holds; entries that are not ours (planted files, FIFOs,
/// symlinks) are removed without being opened in a way that could block
/// or follow them.
pub(crate) fn sweep(root: &Dir, journal: &Dir) -> io::Result<usize> {
    let mut rolled = 0;
    let mut names = Vec::new();
    for entry in journal.entries()? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    for name in &names {
        if name.ends_with(LINK_SUFFIX) {
            continue;
        }
        let Ok(record_file) = open_regular(journal, name, false) else {
            // Not a regular file: not ours.
            let _ = journal.remove_file(name);
            continue;
        };
        if record_file.try_lock().is_err() {
            continue; // a live append of another process
        }
        if name.contains(TEMP_INFIX) {
            // A record its writer never put in place: nothing was written.
            let _ = journal.remove_file(name);
            continue;
        }
        let link = link_of(name);
        let (file, restore) = match open_link(journal, &link) {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The link comes after the record and before any data: a
                // record without one guards nothing.
                let _ = journal.remove_file(name);
                continue;
            }
            Err(e) => {
                tracing::warn!(journal = %name, error = %e, "cannot open a journaled file; left for later");
                continue;
            }
        };
        let meta = file.metadata()?;
        if name_of((meta.dev(), meta.ino())) != *name {
            let _ = journal.remove_file(name);
            let _ = journal.remove_file(&link);
            continue;
        }
        // Never wait for the file's lock while holding the record's (a
        // writer takes them the other way round): a file another process
        // holds is left to that process, which recovers the record itself.
        if file.try_lock().is_err() {
            continue;
        }
        drop(record_file);
        let target = LockedFile { file, meta };
        let result = recover(journal, &target);
        if let Some(mode) = restore {
            use std::os::unix::fs::PermissionsExt;
            let _ = target
                .file
                .set_permissions(std::fs::Permissions::from_mode(mode));
        }
        match result {
            Ok(Recovered::RolledBack { created, path }) => {
                rolled += 1;
                if created {
                    // It did not exist before the append: remove it again,
                    // if its path still names it.
                    let same = root
                        .symlink_metadata(&path)
                        .is_ok_and(|m| (m.dev(), m.ino()) == target.identity());
                    if same {
                        let _ = root.remove_file(&path);
                    }
                }
            }
            Ok(Recovered::Nothing) => {}
            Err(e) => return Err(io::Error::other(e.message)),
        }
    }
    // Links whose record is gone (removed after it, or a crash between) —
    // checked under the file's lock, so a writer making a new record and
    // link for the same file meanwhile is never undone.
    for name in &names {
        let Some(record) = name.strip_suffix(LINK_SUFFIX) else {
            continue;
        };
        let Ok(file) = open_regular(journal, name, false) else {
            let _ = journal.remove_file(name);
            continue;
        };
        if file.try_lock().is_ok() && journal.symlink_metadata(record).is_err() {
            let _ = journal.remove_file(name);
        }
    }
    sync_dir(journal, Path::new(".")).map_err(|e| io::Error::other(e.message))?;
    Ok(rolled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let record = Record {
            len: 1 << 40,
            created: true,
            btime: 1_700_000_000_123_456_789,
            path: PathBuf::from("a/b c/d\nwith newline\r"),
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
        assert_eq!(Record::decode("garbage"), None);
        assert_eq!(Record::decode(&format!("{MAGIC}\nlen x\n")), None);
    }
}
