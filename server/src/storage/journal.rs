//! Append journals: what makes `append` all-or-nothing across a crash.
//!
//! Before an append writes a byte, it records the target's length in a
//! journal file in the private area (`.framegate/journal/<dev>-<ino>`),
//! syncs it, and holds an `flock` on it while it works. Once the appended
//! bytes are synced the journal is removed (and that removal synced) before
//! the append is acknowledged. A journal that outlives its writer (a crash,
//! `kill -9`) means "truncate the file back to this length": the next
//! writer of that file does so before anything else (it holds the file's
//! lock, so the journal's owner must be gone), and start-up does so for all
//! (skipping journals another live process still holds). This is SQLite's
//! rollback journal, reduced to one number per file.
//!
//! A journal names its file by device and inode, with the file's birth time
//! to tell a reused inode apart; the path is kept for the start-up sweep.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::fs::{Dir, OpenOptions};

use super::lock::{LockedFile, sync_dir};
use crate::answer::CommandError;

/// First line of every journal file.
const MAGIC: &str = "framegate-append v1";

/// Largest journal file read back (a path plus a few numbers).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024;

/// What a journal records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    len: u64,
    created: bool,
    btime: u128,
    path: PathBuf,
}

impl Record {
    fn encode(&self) -> String {
        format!(
            "{MAGIC}\nlen {}\ncreated {}\nbtime {}\npath {}\n",
            self.len,
            u8::from(self.created),
            self.btime,
            self.path.display()
        )
    }

    fn decode(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ');
        let len = field("len")?.parse().ok()?;
        let created = field("created")? == "1";
        let btime = field("btime")?.parse().ok()?;
        let path = PathBuf::from(field("path")?);
        Some(Record {
            len,
            created,
            btime,
            path,
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

/// An append in progress: its journal exists and is locked.
#[derive(Debug)]
pub(crate) struct Pending {
    name: String,
    _file: std::fs::File,
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
    let record = Record {
        len,
        created,
        btime: birth(&target.meta),
        path: path.to_path_buf(),
    };
    let file = journal
        .open_with(&name, OpenOptions::new().write(true).create_new(true))
        .map_err(CommandError::internal)?
        .into_std();
    let written = (|| -> io::Result<()> {
        file.lock()?;
        (&file).write_all(record.encode().as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = journal.remove_file(&name);
        return Err(CommandError::internal(e));
    }
    sync_dir(journal, Path::new("."))?;
    Ok(Pending { name, _file: file })
}

/// Ends an append: the journal is removed, durably (from here on a crash
/// keeps the appended bytes).
pub(crate) fn commit(journal: &Dir, pending: Pending) -> Result<(), CommandError> {
    journal
        .remove_file(&pending.name)
        .map_err(CommandError::internal)?;
    sync_dir(journal, Path::new("."))
}

fn read_record(journal: &Dir, name: &str) -> io::Result<Option<Record>> {
    let file = match journal.open(name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut raw = Vec::new();
    file.into_std()
        .take(MAX_JOURNAL_BYTES)
        .read_to_end(&mut raw)?;
    // Torn or foreign bytes decode to `None`: a journal is written and
    // synced before the append writes anything, so a journal that cannot
    // be read guards no data.
    Ok(std::str::from_utf8(&raw).ok().and_then(Record::decode))
}

/// Rolls `target` back to its journaled length, if a journal of a dead
/// writer is there (the caller holds the target's lock). Returns whether it
/// rolled back. A journal of another file that reused the inode is dropped.
pub(crate) fn recover(journal: &Dir, target: &LockedFile) -> Result<bool, CommandError> {
    let name = name_of(target.identity());
    let record = match read_record(journal, &name) {
        Ok(Some(r)) => r,
        Ok(None) => {
            // None also for an unreadable record: drop it if it is there.
            if journal.metadata(&name).is_ok() {
                tracing::warn!(journal = %name, "dropping an unreadable append journal");
                discard(journal, target.identity())?;
            }
            return Ok(false);
        }
        Err(e) => return Err(CommandError::internal(e)),
    };
    let mut rolled = false;
    if record.btime == birth(&target.meta) && target.meta.len() > record.len {
        target
            .file
            .set_len(record.len)
            .and_then(|()| target.file.sync_all())
            .map_err(CommandError::internal)?;
        rolled = true;
        tracing::warn!(
            path = %record.path.display(),
            kept = record.len,
            dropped = target.meta.len() - record.len,
            "rolled back an append cut off by a crash"
        );
    }
    discard(journal, target.identity())?;
    Ok(rolled)
}

/// Whether a journal for the file `identity` is there.
pub(crate) fn exists(journal: &Dir, identity: (u64, u64)) -> bool {
    journal.symlink_metadata(name_of(identity)).is_ok()
}

/// Drops the journal of a file that is being replaced or removed.
pub(crate) fn discard(journal: &Dir, identity: (u64, u64)) -> Result<(), CommandError> {
    match journal.remove_file(name_of(identity)) {
        Ok(()) => sync_dir(journal, Path::new(".")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CommandError::internal(e)),
    }
}

/// Rolls back every append whose writer is gone (start-up). Journals still
/// locked by a live process (another instance on the same tree) are left.
/// Returns how many files were rolled back.
pub(crate) fn sweep(root: &Dir, journal: &Dir) -> io::Result<usize> {
    let mut rolled = 0;
    for entry in journal.entries()? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Ok(file) = journal.open(&name) else {
            continue;
        };
        let file = file.into_std();
        if file.try_lock().is_err() {
            continue; // a live append of another process
        }
        let record = read_record(journal, &name).ok().flatten();
        drop(file);
        let Some(record) = record else {
            tracing::warn!(journal = %name, "dropping an unreadable append journal");
            let _ = journal.remove_file(&name);
            continue;
        };
        let target = super::lock::lock_file(
            root,
            &record.path,
            super::lock::Open::ExistingForWrite,
            &record.path,
        );
        match target {
            Ok(Some((target, _))) if name_of(target.identity()) == name => {
                if recover(journal, &target).map_err(|e| io::Error::other(e.message))? {
                    rolled += 1;
                }
                if record.created && record.len == 0 {
                    // It did not exist before the append: remove it again.
                    let _ = root.remove_file(&record.path);
                }
            }
            // Gone, replaced or unreachable: nothing to roll back.
            _ => {
                let _ = journal.remove_file(&name);
            }
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
            path: PathBuf::from("a/b c/d"),
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
        assert_eq!(Record::decode("garbage"), None);
        assert_eq!(Record::decode(&format!("{MAGIC}\nlen x\n")), None);
    }
}
