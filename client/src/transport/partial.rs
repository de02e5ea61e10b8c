//! The partial file beside a download's destination, and its record:
//! what a download writes into, how it is continued, committed or given
//! up; what a destination is (a file to replace, a device to write into).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::smart::Validator;

/// Suffix of the partial file beside a destination (after `.NAME`).
pub const PARTIAL_SUFFIX: &str = ".framegate-partial";

/// The partial file a download to `dest` writes: `.NAME.framegate-partial`
/// in the same directory.
pub fn partial_path(dest: &Path) -> PathBuf {
    beside(dest, PARTIAL_SUFFIX)
}

pub(super) fn meta_path(dest: &Path) -> PathBuf {
    beside(dest, &format!("{PARTIAL_SUFFIX}.json"))
}

/// The record beside a partial file (`.NAME.framegate-partial.json`: the
/// source, version and size it continues).
pub fn partial_record_path(dest: &Path) -> PathBuf {
    meta_path(dest)
}

/// Largest partial record read (a record is a few hundred bytes).
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// Longest file name most file systems take (bytes).
const NAME_MAX: usize = 255;

/// `.NAME<suffix>` beside `dest` (the name's bytes kept as they are); a
/// name too long for that gets `.<its hash><suffix>` instead.
fn beside(dest: &Path, suffix: &str) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let name = dest.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
    // Room for the longest suffix (`.framegate-partial.json`).
    let mut out = b".".to_vec();
    if name.len() + 1 + PARTIAL_SUFFIX.len() + 5 <= NAME_MAX {
        out.extend_from_slice(name);
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        out.extend_from_slice(format!("{:016x}", h.finish()).as_bytes());
    }
    out.extend_from_slice(suffix.as_bytes());
    dest.with_file_name(std::ffi::OsString::from_vec(out))
}

/// What a download writes to.
pub(super) enum Destination {
    /// A regular file (or none yet): replaced through a partial file. A
    /// symbolic link is followed, as curl and wget do: the file it names
    /// is replaced, the link stays.
    File(PathBuf),
    /// A device, FIFO or socket, or a descriptor's name (`/dev/stdout`,
    /// `/dev/fd/N`, `/proc/self/fd/N`: what the shell opened, `>>` and
    /// pipes included): written into, appending, never replaced.
    Special(PathBuf),
    /// This process's standard output (`/dev/stdout` and its aliases):
    /// written to the descriptor itself.
    Stdout,
}

/// Names of this process's standard output.
const STDOUT_NAMES: [&str; 3] = ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"];

impl Destination {
    pub(super) fn of(dest: &Path) -> Result<Destination> {
        let mut path = dest.to_path_buf();
        // Follow links (a chain of them, within reason) to what they name,
        // existing or not; not the "magic" links of descriptors, which name
        // open files (a pipe, a file opened with `>>`), not paths.
        for _ in 0..40 {
            if STDOUT_NAMES.iter().any(|n| path == Path::new(n)) {
                return Ok(Destination::Stdout);
            }
            if path.starts_with("/proc")
                || path.starts_with("/dev/fd")
                || path.starts_with("/dev/std")
            {
                return Ok(Destination::Special(path));
            }
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&path).map_err(local(&path))?;
                    path = match path.parent() {
                        Some(dir) => dir.join(target),
                        None => target,
                    };
                }
                Ok(m) if m.is_file() => return Ok(Destination::File(path)),
                Ok(m) if m.is_dir() => {
                    return Err(local(&path)(std::io::Error::new(
                        std::io::ErrorKind::IsADirectory,
                        "is a directory",
                    )));
                }
                Ok(_) => return Ok(Destination::Special(path)),
                Err(_) => return Ok(Destination::File(path)),
            }
        }
        Err(local(dest)(std::io::Error::other(
            "too many levels of symbolic links",
        )))
    }
}

/// Where the remote file `remote` (a path relative to a transport's base,
/// as listings and `iter_files_recursive` give them) goes below the local
/// directory `dir`; `None` if it is not a plain relative path (absolute,
/// `..`, `.`, empty components): a server's names never reach outside
/// `dir`.
pub fn local_path_below(dir: &Path, remote: &str) -> Option<PathBuf> {
    let mut out = dir.to_path_buf();
    for part in remote.split('/') {
        if !crate::plain::is_entry_name(part) {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// Writes `data` as the new content of `dest` the way downloads do:
/// into the partial file beside it, synced, then renamed over it (a
/// symbolic link is followed: the file it names is replaced); a device,
/// FIFO or descriptor is written into. A failure leaves `dest` as it was.
pub async fn replace_file(dest: &Path, data: &[u8]) -> Result<()> {
    let dest = &match Destination::of(dest)? {
        Destination::File(path) => path,
        Destination::Stdout => {
            let mut out = tokio::io::stdout();
            out.write_all(data).await?;
            return Ok(out.flush().await?);
        }
        Destination::Special(path) => {
            let mut out = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .map_err(local(&path))?;
            return out.write_all(data).await.map_err(local(&path));
        }
    };
    let tmp = partial_path(dest);
    let write = async {
        // Not through a link, and not blocking on a FIFO planted under the
        // partial's name (O_NONBLOCK: such an open fails instead of waiting
        // for a reader; a regular file is not affected).
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&tmp)
            .await?;
        if !file.metadata().await?.is_file() {
            return Err(std::io::Error::other(
                "not a regular file; remove it to download here",
            ));
        }
        file.write_all(data).await?;
        keep_mode(&file, dest).await?;
        file.sync_all().await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(local(&tmp)(e));
    }
    tokio::fs::rename(&tmp, dest).await.map_err(local(dest))
}

/// Gives the new content of `dest` (`file`) the permission bits of the
/// file it replaces, if one is there: a private file stays private.
async fn keep_mode(file: &tokio::fs::File, dest: &Path) -> std::io::Result<()> {
    match tokio::fs::symlink_metadata(dest).await {
        Ok(old) if old.is_file() => file.set_permissions(old.permissions()).await,
        _ => Ok(()),
    }
}

/// What continuing a partial file needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PartialMeta {
    /// The file's URL.
    source: String,
    /// The version's validator (an etag, or an HTTP date for plain servers
    /// without one).
    validator: String,
    /// The version's size.
    size: u64,
    /// A check of the three fields above (FNV-1a, hex): a record edited or
    /// damaged by hand is not trusted (the download starts over) — a size
    /// that is not the version's would otherwise end in a short or failed
    /// file.
    #[serde(default)]
    check: String,
}

impl PartialMeta {
    fn check_of(source: &str, validator: &str, size: u64) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in source
            .bytes()
            .chain([0])
            .chain(validator.bytes())
            .chain([0])
            .chain(size.to_le_bytes())
        {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Writes a partial file's record, never through a symbolic link planted
/// under its name (in a shared directory such as /tmp).
pub(super) fn write_record(path: &Path, json: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?
        .write_all(json)
}

/// The record of a partial file's version.
pub(super) fn record_json(source: &str, v: &Validator) -> Vec<u8> {
    let meta = PartialMeta {
        source: source.to_string(),
        validator: v.etag.clone(),
        size: v.total,
        check: PartialMeta::check_of(source, &v.etag, v.total),
    };
    serde_json::to_vec(&meta).unwrap_or_default()
}

pub(super) fn local(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// The partial file of one download, locked against a second download
/// to the same destination.
pub(super) struct Partial {
    pub(super) data: PathBuf,
    pub(super) meta: PathBuf,
    pub(super) file: tokio::fs::File,
    /// Bytes in the file that belong to `validator`'s version.
    pub(super) written: u64,
    pub(super) validator: Option<Validator>,
}

impl Partial {
    /// Opens (creates) the partial file of `dest`; continues it when
    /// `resume` and its record names `source`.
    pub(super) async fn open(dest: &Path, source: &str, resume: bool) -> Result<Partial> {
        let data = partial_path(dest);
        let meta = meta_path(dest);
        // Never through a symbolic link planted under the partial's name:
        // it would make the download write (and truncate) its target.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&data)
            .map_err(local(&data))?;
        if !file.metadata().map_err(local(&data))?.is_file() {
            return Err(local(&data)(std::io::Error::other(
                "not a regular file; remove it to download here",
            )));
        }
        if let Err(e) = file.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => Error::Local {
                    path: dest.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "another download to it is in progress",
                    ),
                },
                std::fs::TryLockError::Error(e) => local(&data)(e),
            });
        }
        let mut partial = Partial {
            file: tokio::fs::File::from_std(file),
            data,
            meta,
            written: 0,
            validator: None,
        };
        let record = if resume {
            partial.read_record(source).await
        } else {
            None
        };
        let len = partial
            .file
            .metadata()
            .await
            .map_err(local(&partial.data))?
            .len();
        match record {
            Some(v) if len <= v.total => {
                partial.written = len;
                partial.validator = Some(v);
                partial
                    .file
                    .seek(std::io::SeekFrom::Start(len))
                    .await
                    .map_err(local(&partial.data))?;
            }
            _ => partial.restart().await?,
        }
        Ok(partial)
    }

    async fn read_record(&self, source: &str) -> Option<Validator> {
        // A regular file only, of a record's size: not through a link, not
        // blocking on a FIFO planted under its name (O_NONBLOCK).
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.meta)
            .await
            .ok()?;
        if !file.metadata().await.ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES)
            .read_to_end(&mut bytes)
            .await
            .ok()?;
        let meta: PartialMeta = serde_json::from_slice(&bytes).ok()?;
        let intact = meta.check == PartialMeta::check_of(&meta.source, &meta.validator, meta.size);
        (intact && meta.source == source).then_some(Validator {
            etag: meta.validator,
            total: meta.size,
        })
    }

    /// A partial file that holds its whole version is still checked
    /// against the server (the file may have changed or gone since): its
    /// last byte is fetched again, under the version's validator. One that
    /// holds more than its version is not trusted at all.
    pub(super) async fn recheck_if_complete(&mut self) -> Result<()> {
        let Some(total) = self.validator.as_ref().map(|v| v.total) else {
            return Ok(());
        };
        if self.written > total || total == 0 {
            return self.restart().await;
        }
        if self.written == total {
            self.written = total - 1;
            self.file.flush().await.map_err(local(&self.data))?;
            self.file
                .set_len(self.written)
                .await
                .map_err(local(&self.data))?;
            self.file
                .seek(std::io::SeekFrom::Start(self.written))
                .await
                .map_err(local(&self.data))?;
        }
        Ok(())
    }

    /// Forgets what was written: back to byte 0, no version.
    pub(super) async fn restart(&mut self) -> Result<()> {
        self.file.flush().await.map_err(local(&self.data))?;
        self.file.set_len(0).await.map_err(local(&self.data))?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(local(&self.data))?;
        self.written = 0;
        self.validator = None;
        match tokio::fs::remove_file(&self.meta).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(local(&self.meta)(e)),
            _ => Ok(()),
        }
    }

    /// Records the version the bytes belong to, for a later run.
    pub(super) async fn record(&mut self, source: &str, v: Validator) -> Result<()> {
        write_record(&self.meta, &record_json(source, &v)).map_err(local(&self.meta))?;
        self.validator = Some(v);
        Ok(())
    }

    /// After an attempt that ended with `written` bytes in the file: the
    /// file's own length is the truth (written bytes are flushed first).
    pub(super) async fn settle(&mut self) -> Result<()> {
        self.file.flush().await.map_err(local(&self.data))?;
        let len = self.file.metadata().await.map_err(local(&self.data))?.len();
        self.written = len;
        Ok(())
    }

    /// Syncs the complete file and renames it over `dest`.
    pub(super) async fn commit(mut self, dest: &Path) -> Result<u64> {
        self.file.flush().await.map_err(local(&self.data))?;
        keep_mode(&self.file, dest)
            .await
            .map_err(local(&self.data))?;
        self.file.sync_all().await.map_err(local(&self.data))?;
        let len = self.written;
        tokio::fs::rename(&self.data, dest)
            .await
            .map_err(local(dest))?;
        if let Some(dir) = dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // The rename is durable once the directory is.
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        let _ = tokio::fs::remove_file(&self.meta).await;
        Ok(len)
    }

    /// A download that failed: keeps the partial file if it can be
    /// continued, else removes it. Returns whether it was kept.
    pub(super) async fn abandon(mut self) -> bool {
        if self.written > 0 && self.validator.is_some() {
            let _ = self.file.flush().await;
            let _ = self.file.sync_all().await;
            return true;
        }
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.data).await;
        let _ = tokio::fs::remove_file(&self.meta).await;
        false
    }
}
