//! Downloads that never damage the user's files.
//!
//! The bytes go to a partial file beside the destination
//! (`.NAME.framegate-partial`); beside it, once the server named the
//! version of the file, what continuing it needs
//! (`.NAME.framegate-partial.json`: the source, the version's validator
//! and size). Only a complete download is synced and renamed over the
//! destination, so a failed one leaves the destination as it was and a
//! crash leaves at worst a partial file.
//!
//! A dropped connection is retried with exponential backoff and jitter
//! until [`Options::retry_deadline`](super::Options::retry_deadline),
//! continuing from the bytes already written only when the server still
//! has the same version: `readv` with `if-match` on a framegate server
//! (`file-changed` otherwise), `Range` with `If-Range` on a plain one (the
//! whole new file otherwise). A changed file starts over from byte 0; two
//! versions are never spliced. A failed download keeps its partial file
//! (when it can be continued) for [`DownloadOptions::resume`]
//! (`framegate get --continue`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use framegate_wire::ErrorCode;
use framegate_wire::ranges::encode_ranges;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::backend::{Backend, Streamed};
use super::{Transport, path_args};
use crate::error::{Error, Refusal, Result, TransportError};
use crate::plain;
use crate::smart::Validator;

/// Suffix of the partial file beside a destination (after `.NAME`).
pub const PARTIAL_SUFFIX: &str = ".framegate-partial";

/// First wait before a retry; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// How a download goes about it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DownloadOptions {
    /// Continue from the partial file an earlier run left, if it is of the
    /// same source and the server still has the same version (else start
    /// over). Without it, a download always starts at byte 0.
    pub resume: bool,
}

impl DownloadOptions {
    /// Continue from an earlier run's partial file (`--continue`).
    #[must_use]
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
}

/// The partial file a download to `dest` writes: `.NAME.framegate-partial`
/// in the same directory.
pub fn partial_path(dest: &Path) -> PathBuf {
    beside(dest, PARTIAL_SUFFIX)
}

fn meta_path(dest: &Path) -> PathBuf {
    beside(dest, &format!("{PARTIAL_SUFFIX}.json"))
}

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
enum Destination {
    /// A regular file (or none yet): replaced through a partial file. A
    /// symbolic link is followed, as curl and wget do: the file it names
    /// is replaced, the link stays.
    File(PathBuf),
    /// A device, FIFO or socket: written into.
    Special(PathBuf),
}

impl Destination {
    fn of(dest: &Path) -> Result<Destination> {
        let mut path = dest.to_path_buf();
        // Follow links (a chain of them, within reason) to what they name,
        // existing or not.
        for _ in 0..40 {
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
/// into the partial file beside it, synced, then renamed over it. A
/// failure leaves `dest` as it was.
pub async fn replace_file(dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = partial_path(dest);
    let write = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .await?;
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

/// The record of a partial file's version.
fn record_json(source: &str, v: &Validator) -> Vec<u8> {
    let meta = PartialMeta {
        source: source.to_string(),
        validator: v.etag.clone(),
        size: v.total,
        check: PartialMeta::check_of(source, &v.etag, v.total),
    };
    serde_json::to_vec(&meta).unwrap_or_default()
}

fn local(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// The partial file of one download, locked against a second download
/// to the same destination.
struct Partial {
    data: PathBuf,
    meta: PathBuf,
    file: tokio::fs::File,
    /// Bytes in the file that belong to `validator`'s version.
    written: u64,
    validator: Option<Validator>,
}

impl Partial {
    /// Opens (creates) the partial file of `dest`; continues it when
    /// `resume` and its record names `source`.
    async fn open(dest: &Path, source: &str, resume: bool) -> Result<Partial> {
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
        let bytes = tokio::fs::read(&self.meta).await.ok()?;
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
    async fn recheck_if_complete(&mut self) -> Result<()> {
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
    async fn restart(&mut self) -> Result<()> {
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
    async fn record(&mut self, source: &str, v: Validator) -> Result<()> {
        tokio::fs::write(&self.meta, record_json(source, &v))
            .await
            .map_err(local(&self.meta))?;
        self.validator = Some(v);
        Ok(())
    }

    /// After an attempt that ended with `written` bytes in the file: the
    /// file's own length is the truth (written bytes are flushed first).
    async fn settle(&mut self) -> Result<()> {
        self.file.flush().await.map_err(local(&self.data))?;
        let len = self.file.metadata().await.map_err(local(&self.data))?.len();
        self.written = len;
        Ok(())
    }

    /// Syncs the complete file and renames it over `dest`.
    async fn commit(mut self, dest: &Path) -> Result<u64> {
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
    async fn abandon(mut self) -> bool {
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

/// The code of a `readv` whose `if-match` no longer holds.
fn file_changed() -> ErrorCode {
    ErrorCode::new("file-changed")
}

/// How an attempt ended.
enum Attempt {
    Done,
    /// The server no longer has the version the partial file holds.
    Changed,
}

/// Whether another attempt may succeed where this one failed.
fn retryable(err: &Error) -> bool {
    match err {
        Error::Refused(Refusal::Status { status, .. }) => {
            matches!(status, 408 | 429 | 502 | 503 | 504)
        }
        Error::Transport(TransportError::Connect { .. }) => true,
        e => e.is_dropped_connection(),
    }
}

/// Backoff before retry `n` (from 0): doubling from [`FIRST_BACKOFF`] up
/// to [`MAX_BACKOFF`], with full jitter (a random wait up to that).
fn backoff(n: u32) -> Duration {
    let cap = FIRST_BACKOFF
        .saturating_mul(1u32 << n.min(16))
        .min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Half fixed, half random: never a busy loop, never in lockstep.
    cap / 2 + cap.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl Transport {
    /// Downloads a file to `dest` (see [`Transport::download_with`]).
    pub async fn download(&self, path: &str, dest: &Path) -> Result<u64> {
        self.download_with(path, dest, &DownloadOptions::default())
            .await
    }

    /// Downloads a file to `dest` through a partial file beside it, renamed
    /// over `dest` only when complete: on any failure `dest` is untouched.
    /// Dropped connections are retried (with backoff, until the options'
    /// retry deadline), continuing from the bytes already written while
    /// the server has the same version of the file, else from byte 0.
    /// Returns the file's size.
    pub async fn download_with(
        &self,
        path: &str,
        dest: &Path,
        options: &DownloadOptions,
    ) -> Result<u64> {
        let dest = &match Destination::of(dest)? {
            Destination::File(dest) => dest,
            Destination::Special(dest) => {
                // A device or FIFO (`/dev/null`, a pipe): written into as
                // it is, never replaced by a file.
                let mut out = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&dest)
                    .await
                    .map_err(local(&dest))?;
                return self.get_into(path, &mut out).await.map_err(|e| match e {
                    Error::Io(source) => local(&dest)(source),
                    e => e,
                });
            }
        };
        let source = self.source_of(path);
        let mut partial = Partial::open(dest, &source, options.resume).await?;
        let deadline = Instant::now() + self.retry_deadline;
        let mut retries = 0u32;
        loop {
            // Writing the partial file failed (disk full, ...): name it.
            let result = self
                .attempt(path, &source, &mut partial)
                .await
                .map_err(|e| match e {
                    Error::Io(source) => local(&partial.data)(source),
                    e => e,
                });
            let settled = partial.settle().await;
            match result.and_then(|a| settled.map(|()| a)) {
                Ok(Attempt::Done) => return partial.commit(dest).await,
                Ok(Attempt::Changed) => {
                    tracing::warn!(path, "the file changed on the server; starting over");
                    partial.restart().await?;
                    if Instant::now() >= deadline || retries >= 64 {
                        partial.abandon().await;
                        return Err(Error::remote(
                            file_changed(),
                            format!("{path} kept changing while it was downloaded"),
                        ));
                    }
                    // A file being rewritten is not fetched again at once:
                    // the same backoff as a dropped connection.
                    let wait = backoff(retries).min(deadline - Instant::now());
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    let wait = backoff(retries).min(deadline - Instant::now());
                    tracing::info!(path, written = partial.written, ?wait, "{e}; retrying");
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    if !retryable(&e) {
                        // An answer that ended in an error is discarded
                        // (§4.2): its bytes are not the file's.
                        let _ = partial.restart().await;
                    }
                    if partial.abandon().await {
                        tracing::info!("partial download kept in {}", partial_path(dest).display());
                    }
                    return Err(e);
                }
            }
        }
    }

    /// What identifies the file in a partial file's record.
    fn source_of(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// One try: from the partial file's end if it holds a version, else
    /// the whole file.
    async fn attempt(&self, path: &str, source: &str, partial: &mut Partial) -> Result<Attempt> {
        partial.recheck_if_complete().await?;
        if partial.written > 0 && partial.validator.is_some() {
            // Continuing: what the server offers decides how (a probe over
            // HTTP if not known yet; a byte stream connects).
            self.resolve().await?;
        }
        if let Some(Backend::Plain(_)) = self.backend.get() {
            return self.attempt_plain(path, source, partial).await;
        }
        match partial.validator.clone() {
            Some(v) if partial.written > 0 && self.supports("readv") => {
                let mut args = path_args(path);
                let _ = args.insert(
                    "ranges",
                    encode_ranges(&[(partial.written, v.total - partial.written)]),
                );
                let _ = args.insert("if-match", v.etag.clone());
                let result = self
                    .stream_request("readv", args, &mut Streamed::new(&mut partial.file))
                    .await;
                match result {
                    // The version is gone, or is not the size the record
                    // says: start over.
                    Err(e) if e.is(&file_changed()) || e.is(&ErrorCode::SHORT_READ) => {
                        Ok(Attempt::Changed)
                    }
                    Err(e) => Err(e),
                    Ok(_) => Ok(Attempt::Done),
                }
            }
            _ => {
                partial.restart().await?;
                // The version is recorded before its first byte is
                // written: a run killed mid-way leaves a partial file that
                // a later run can continue.
                let meta = partial.meta.clone();
                let record = move |v: &Validator| {
                    let _ = std::fs::write(&meta, record_json(source, v));
                };
                let mut into = Streamed::new(&mut partial.file);
                into.on_validator = Some(&record);
                let result = self.stream_request("get", path_args(path), &mut into).await;
                partial.validator = into.validator;
                match result {
                    // Rewritten while it was sent: the bytes are not one
                    // version; start over.
                    Err(e) if e.is(&file_changed()) => Ok(Attempt::Changed),
                    Err(e) => Err(e),
                    Ok(true) => Ok(Attempt::Done),
                    // No framegate server answered (a first message): the
                    // file comes over plain HTTP.
                    Ok(false) => self.attempt_plain(path, source, partial).await,
                }
            }
        }
    }

    async fn attempt_plain(
        &self,
        path: &str,
        source: &str,
        partial: &mut Partial,
    ) -> Result<Attempt> {
        let from = match &partial.validator {
            Some(_) => partial.written,
            None => 0,
        };
        if from == 0 {
            // Bytes without a version to continue them are not kept.
            partial.restart().await?;
        }
        let if_range = partial.validator.as_ref().map(|v| v.etag.clone());
        let medium = &self.plain()?.medium;
        let answer = plain::open_from(medium, path, from, if_range.as_deref()).await?;
        if answer.from != from {
            // The server sent the whole file: the version changed (or it
            // ignores ranges).
            partial.restart().await?;
        } else if from > 0
            && (answer.validator.as_ref() != partial.validator.as_ref().map(|v| &v.etag)
                || answer.total != partial.validator.as_ref().map(|v| v.total))
        {
            return Ok(Attempt::Changed);
        }
        // The whole file comes: record its version before its bytes.
        if answer.from == 0
            && let (Some(etag), Some(total)) = (answer.validator.clone(), answer.total)
        {
            partial.record(source, Validator { etag, total }).await?;
        }
        let url = answer.resp.url().to_string();
        let mut end = answer.from;
        let mut body = answer.resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::Transport(TransportError::Lost {
                    url: url.clone(),
                    source: e.into(),
                })
            })?;
            partial
                .file
                .write_all(&chunk)
                .await
                .map_err(local(&partial.data))?;
            end += chunk.len() as u64;
        }
        match answer.total {
            // A body that ended short without an error (a close where
            // the length was not framed) is a dropped connection too.
            Some(total) if end != total => {
                Err(Error::Transport(TransportError::Unanswered { url }))
            }
            _ => Ok(Attempt::Done),
        }
    }
}
