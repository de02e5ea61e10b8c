//! Lazy answers: sources read piece by piece when their answer is sent, so
//! a large answer held for deferred output costs no memory.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use framegate_wire::{ErrorCode, RequestId, ServerReactor};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::answer::CommandError;
use crate::pool::blocking;

/// Size of the pieces a lazy answer is read in.
pub const ANSWER_PIECE: usize = 256 * 1024;

/// Bytes sampled from a lazy answer to decide whether it compresses.
pub const COMPRESSION_SAMPLE: usize = 64 * 1024;

/// A sample that zstd (level 1) shrinks by less than this is sent unencoded.
pub const MIN_COMPRESSION_GAIN: f64 = 0.9;

/// Size of the chunks frames are gathered into before they are written.
pub const BODY_CHUNK: usize = 256 * 1024;

thread_local! {
    /// This thread's sampling compressor: a zstd context is made once per
    /// thread, not once per answer (making one cost about as much as
    /// sampling a small file).
    static SAMPLER: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether `data` is worth compressing, judged on a sample (its first
/// [`COMPRESSION_SAMPLE`] bytes); `None` if no sample could be taken.
pub(crate) fn compresses(data: &[u8]) -> Option<bool> {
    let sample = data
        .get(..data.len().min(COMPRESSION_SAMPLE))
        .unwrap_or_default();
    let compressed = SAMPLER.with(|cell| {
        let mut sampler = cell.try_borrow_mut().ok()?;
        if sampler.is_none() {
            *sampler = zstd::bulk::Compressor::new(1).ok();
        }
        sampler.as_mut()?.compress(sample).ok()
    });
    compressed.map(|c| (c.len() as f64) < sample.len() as f64 * MIN_COMPRESSION_GAIN)
}

/// What a file was when its answer began: a file rewritten in place
/// while it is sent (see [`Fingerprint::rewritten_since`]) fails its
/// answer instead of ending it as a mix of two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Fingerprint {
    /// Whether the file, now `self`, may no longer hold the bytes it held
    /// as `before`: it shrank, or it was written without growing (a
    /// rewrite in place). A file that only grew was appended to — the
    /// server's own `append` does that, and the bytes already there stay
    /// (a rewrite that also grows the file is taken for an append).
    pub(crate) fn rewritten_since(&self, before: &Fingerprint) -> bool {
        self.ino != before.ino
            || self.len < before.len
            || (self.len == before.len
                && (self.mtime, self.mtime_nsec) != (before.mtime, before.mtime_nsec))
    }

    pub(crate) fn of(file: &std::fs::File) -> Option<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok()?;
        Some(Fingerprint {
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

/// Where the rest of a lazy answer comes from.
pub(crate) enum Source {
    File {
        file: Arc<std::fs::File>,
        ranges: VecDeque<(u64, u64)>,
        /// The file when the answer began; checked again after the last
        /// piece.
        opened: Option<Fingerprint>,
        /// The file as its last piece was read (taken in the same job).
        after: Option<Option<Fingerprint>>,
    },
    Stream(BoxStream<'static, Result<Bytes, CommandError>>),
}

impl Source {
    /// The next piece (of a file: at most `max` bytes, at least 1);
    /// `None` when the answer is complete.
    pub(crate) async fn next_piece(&mut self, max: usize) -> Option<Result<Bytes, CommandError>> {
        match self {
            Source::File {
                file,
                ranges,
                opened,
                after,
            } => {
                let Some((offset, len)) = ranges.front_mut() else {
                    // Sent whole: was it one version all along?
                    let before = opened.take()?;
                    let now = match after.take() {
                        Some(now) => Ok(now),
                        None => {
                            let file = file.clone();
                            blocking(move || Ok(Fingerprint::of(&file))).await
                        }
                    };
                    return match now {
                        Ok(Some(now)) if !now.rewritten_since(&before) => None,
                        _ => Some(Err(CommandError::new(
                            ErrorCode::FILE_CHANGED,
                            "the file was rewritten while it was sent",
                        ))),
                    };
                };
                if *len == 0 {
                    ranges.pop_front();
                    return Some(Ok(Bytes::new()));
                }
                let piece = (*len).min(max.clamp(1, ANSWER_PIECE) as u64);
                let at = *offset;
                *offset += piece;
                *len -= piece;
                // The last piece: the file's fingerprint is taken in the
                // same job (one hand-off to the pool less per file).
                let last = *len == 0 && ranges.len() == 1 && opened.is_some();
                let file = file.clone();
                let read = blocking(move || {
                    let piece = read_piece(&file, at, piece as usize).map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            CommandError::new(ErrorCode::SHORT_READ, "file shrank while being sent")
                        } else {
                            CommandError::internal(e)
                        }
                    })?;
                    Ok((piece, last.then(|| Fingerprint::of(&file))))
                })
                .await;
                Some(read.map(|(piece, now)| {
                    if let Some(now) = now {
                        *after = Some(now);
                    }
                    piece
                }))
            }
            Source::Stream(stream) => stream.next().await,
        }
    }
}

/// Reads `len` bytes at `offset` of `file` into a fresh buffer that is not
/// zeroed first.
pub(crate) fn read_piece(file: &std::fs::File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}

/// A lazy answer waiting to be sent, with the server-wide budget slot
/// its open source holds until then.
struct Queued {
    id: RequestId,
    source: Source,
    _slot: Option<OwnedSemaphorePermit>,
    /// Whether its first piece was sampled for compression.
    sampled: bool,
}

/// The lazy answers of a message: the one being sent and those queued.
#[derive(Default)]
pub(crate) struct Lazy {
    queue: VecDeque<Queued>,
    /// The answer being sent.
    current: Option<Queued>,
}

impl Lazy {
    pub(crate) fn push(
        &mut self,
        id: RequestId,
        source: Source,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        self.queue.push_back(Queued {
            id,
            source,
            _slot: slot,
            sampled: false,
        });
    }

    /// Whether any lazy answer still has bytes to send.
    pub(crate) fn is_pending(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// Lazy answers not yet completely sent (each holds its source open).
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + usize::from(self.current.is_some())
    }

    /// Feeds the next piece of the current lazy answer to the reactor (of
    /// a file: at most `max` bytes), picking the next answer when one is
    /// done. The first piece of each decides whether it is worth
    /// compressing.
    pub(crate) async fn feed(&mut self, reactor: &mut ServerReactor, max: usize) {
        if self.current.is_none() {
            self.current = self.queue.pop_front();
        }
        let Some(Queued {
            id,
            source,
            sampled,
            ..
        }) = self.current.as_mut()
        else {
            return;
        };
        match source.next_piece(max).await {
            Some(Ok(piece)) => {
                if !*sampled {
                    *sampled = true;
                    // Only a first piece of a whole sample is judged; a
                    // shorter one (a small file, a short first read, a
                    // store's chunk) is left to the stream's own count of
                    // what compressing gains ([`framegate_wire::gain`]): a
                    // sample per small file cost a zstd context each, and
                    // a few bytes cannot show a gain. One that passed its
                    // sample is compressed whatever the stream's other
                    // payloads gained (small random answers before it do
                    // not make it go raw); one that failed it, not at all.
                    let judged = piece.len() >= COMPRESSION_SAMPLE
                        && reactor.encoding() != framegate_wire::Encoding::Identity;
                    let verdict = if judged { compresses(&piece) } else { None };
                    let _ = match verdict {
                        Some(true) => reactor.mark_answer_compressible(*id),
                        Some(false) => reactor.set_answer_encoding(*id, false),
                        None => Ok(()),
                    };
                }
                let _ = reactor.send_answer_data(*id, piece);
            }
            Some(Err(err)) => {
                let _ = reactor.fail_command(*id, err.into());
                self.current = None;
            }
            None => {
                let _ = reactor.finish_answer(*id);
                self.current = None;
            }
        }
    }
}

/// Drains the reactor's frames into at most one chunk: small frames are
/// gathered into a chunk of at least `limit` bytes (fewer, larger writes
/// beat avoiding the copy, measured; only a single frame larger than the
/// rest of the room makes a chunk larger). The chunk's buffer is allocated
/// once at its exact size: grown frame by frame it would double, and a
/// chunk held by a client that does not read would pin twice its bytes.
/// Frames past that chunk stay in the reactor, counted in its pending
/// output (and in the message's held bytes), until the chunk was taken: a
/// client that does not read costs at most one chunk here.
pub(crate) fn transmit_chunk(reactor: &mut ServerReactor, limit: usize) -> Option<Bytes> {
    let mut frames = Vec::new();
    let mut len = 0;
    while len < limit {
        let Some(frame) = reactor.poll_transmit() else {
            break;
        };
        len += frame.wire_len();
        frames.push(frame);
    }
    if frames.is_empty() {
        return None;
    }
    let mut out = BytesMut::with_capacity(len);
    for frame in frames {
        // Our frames never exceed the 24-bit length field.
        let _ = frame.encode(&mut out);
    }
    Some(out.freeze())
}
