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

use std::path::Path;
use std::time::{Duration, Instant};

use framegate_wire::ErrorCode;
use framegate_wire::ranges::encode_ranges;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::backend::{Backend, Streamed};
use super::partial::{Destination, Partial, local, partial_path, record_json, write_record};
use super::{Transport, path_args};
use crate::error::{Error, Refusal, Result, TransportError};
use crate::plain;
use crate::smart::Validator;

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
        // The server or its store lacked a resource just now (reading 35).
        e if e.is(&ErrorCode::BUSY) => true,
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
            Destination::Stdout => {
                let mut out = tokio::io::stdout();
                let n = self.get_into(path, &mut out).await?;
                out.flush().await?;
                return Ok(n);
            }
            Destination::Special(dest) => {
                // A device, FIFO or descriptor (`/dev/null`, a pipe,
                // `/dev/fd/3`): written into, appending, never replaced by
                // a file.
                let mut out = tokio::fs::OpenOptions::new()
                    .append(true)
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
                    let _ = write_record(&meta, &record_json(source, v));
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
            let chunk = chunk.map_err(|e| Error::lost(url.clone(), e))?;
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
