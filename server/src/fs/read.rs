//! The read commands (§9.2), with our validators: `get` and `readv` take
//! an optional `if-match` (a version from `stat`) and announce the version
//! their bytes come from (docs/protocol.md, "File versions").

use framegate_wire::{ProgressPayload, SharedBudget};

use crate::command::{Answer, Call, CommandError, Context};
use crate::storage::{FileRead, ReadRanges, Tally};

use super::{
    Fut, MAX_ITER_FILES, MAX_LIST_ENTRIES, MAX_READV_RANGES, MAX_TREE_ENTRIES, optional_path,
    path_arg,
};
use crate::pool::blocking_heavy;

/// A `get` or `readv` answer at least this long is preceded by one
/// `progress` frame that names the version of the file its bytes come from
/// (`item`: the etag; `total`: the answer's length). Smaller answers go
/// without: a frame per command would weigh on batches of small reads, and
/// a small answer is cheap to fetch again whole.
pub const VALIDATED_ANSWER_MIN: u64 = 64 * 1024;

pub(super) fn get(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let if_match = if_match_arg(&call)?;
        call.turn.wait().await?;
        let read = call
            .ctx
            .storage
            .read(&path, ReadRanges::Whole, if_match.as_deref())
            .await?;
        Ok(announce("get", read))
    })
}

pub(super) fn readv(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let ranges = framegate_wire::ranges::parse_ranges(call.arg("ranges")?, MAX_READV_RANGES)
            .map_err(|e| CommandError::bad("ranges", e))?;
        let if_match = if_match_arg(&call)?;
        call.turn.wait().await?;
        let read = call
            .ctx
            .storage
            .read(&path, ReadRanges::Ranges(ranges), if_match.as_deref())
            .await?;
        Ok(announce("readv", read))
    })
}

/// The optional `if-match` argument: a version as `stat` gave it.
fn if_match_arg(call: &Call) -> Result<Option<String>, CommandError> {
    call.args
        .get("if-match")
        .map(|raw| {
            std::str::from_utf8(raw)
                .map(str::to_owned)
                .map_err(|_| CommandError::bad("if-match", "not UTF-8"))
        })
        .transpose()
}

/// The answer of a read, preceded by the version of its file when it is at
/// least [`VALIDATED_ANSWER_MIN`] long.
fn announce(topic: &str, read: FileRead) -> Answer {
    let FileRead { answer, etag } = read;
    match answer.len_hint() {
        Some(total) if total >= VALIDATED_ANSWER_MIN => answer.announced(ProgressPayload {
            topic: topic.to_owned(),
            pos: 0,
            total,
            label: Some("bytes".to_owned()),
            item: Some(etag.as_str().to_owned()),
        }),
        _ => answer,
    }
}

pub(super) fn has(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        call.turn.wait().await?;
        let exists = call.ctx.storage.exists(&path).await?;
        Ok(Answer::cbor(&exists))
    })
}

pub(super) fn stat(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        call.turn.wait().await?;
        let meta = call.ctx.storage.stat(&path).await?;
        let kind = meta.kind.wire();
        Ok(Answer::Bytes(
            framegate_wire::StatAnswer {
                etag: meta.etag.map(|etag| etag.as_str().to_owned()),
                kind,
                mode: meta.mode,
                size: meta.size,
                mtime: meta.mtime,
            }
            .encode(),
        ))
    })
}

/// Listings hold every name in memory (they are sorted) and are the
/// largest answers: this many are read at once in the whole server, the
/// rest wait. Bounds their memory while they are built at about this many
/// times the largest listing. A plain-HTTP listing gives its slot back
/// when its directory was read; while its body is sent, its bytes are held
/// in the gateway's `listing_memory` instead, so a slow reader holds no
/// slot.
pub const LISTING_SLOTS: usize = 2;

/// How long a plain-HTTP listing waits for a listing slot before it is
/// told to retry (503 + `Retry-After`): a flood of listings of huge
/// directories makes others retry, not queue behind them for minutes.
pub const LISTING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LISTING_SLOTS);

/// Waits for one of the server's [`LISTING_SLOTS`] (also taken by plain
/// HTTP directory listings, `http/plain/listing.rs`).
pub(crate) async fn listing_slot() -> Result<tokio::sync::SemaphorePermit<'static>, CommandError> {
    LISTINGS.acquire().await.map_err(CommandError::internal)
}

/// Encodes a listing as CBOR on the file pool (100k names take
/// milliseconds: not on the executor's threads). `built` is what the
/// listing holds in memory before it is encoded; it is charged to the
/// listing memory (and so to the memory budget) while it is encoded, and
/// the encoded answer after (each alone: the names are dropped once
/// encoded): a listing that does not fit is `busy`, and
/// the listings built at once ([`LISTING_SLOTS`]) cannot hold memory
/// beside the budget (32 clients × 8 never-read messages × 4 `list_dir`
/// of 100,000 names once peaked at 479 MiB, eighth attack).
async fn encode_listing<T: serde::Serialize + Send + 'static>(
    value: T,
    built: usize,
    ctx: &Context,
) -> Result<Answer, CommandError> {
    let Some(charge) = ctx.listing_budget.try_take(built) else {
        return Err(busy_listings());
    };
    let bytes = blocking_heavy(move || Ok(framegate_wire::payload::encode_cbor(&value))).await?;
    // The names went with the closure that encoded them.
    drop(charge);
    held_listing(bytes, &ctx.listing_budget)
}

/// What a listing of `names` holds in memory: each name's bytes and its
/// `String` (24 bytes).
fn names_cost<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(|n| n.len() + 24).sum()
}

fn busy_listings() -> CommandError {
    CommandError::new(
        framegate_wire::ErrorCode::BUSY,
        "the server holds too many unsent listings; retry later",
    )
}

/// Listing answers up to this size are held like any small answer; larger
/// ones are charged to the listing memory until sent.
pub const HELD_LISTING_MIN: usize = 64 * 1024;

/// A listing's encoded answer, charged to `budget` (the gateway's listing
/// memory, shared with plain listings) until its last piece was taken for
/// sending: a client that never reads holds its listing's bytes, and
/// enough of them together make further large listings `busy` (retry)
/// instead of memory without bound.
fn held_listing(bytes: bytes::Bytes, budget: &SharedBudget) -> Result<Answer, CommandError> {
    if bytes.len() <= HELD_LISTING_MIN {
        return Ok(Answer::Bytes(bytes));
    }
    let Some(charge) = budget.try_take(bytes.len()) else {
        return Err(busy_listings());
    };
    // Copied out a piece at a time, so the whole buffer (and its charge)
    // goes with the last piece, not with the last piece hyper still holds.
    let pieces = futures_util::stream::unfold(
        (bytes, 0usize, Some(charge)),
        |(bytes, at, mut charge)| async move {
            if at >= bytes.len() {
                drop(charge.take());
                return None;
            }
            let end = (at + LISTING_ANSWER_PIECE).min(bytes.len());
            let piece = bytes::Bytes::copy_from_slice(&bytes[at..end]);
            Some((Ok(piece), (bytes, end, charge)))
        },
    );
    Ok(Answer::Stream(Box::pin(pieces)))
}

/// Pieces a held listing answer is handed out in.
const LISTING_ANSWER_PIECE: usize = 256 * 1024;

pub(super) fn list_dir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let _slot = listing_slot().await?;
        let names = call.ctx.storage.list_names(&path, MAX_LIST_ENTRIES).await?;
        let built = names_cost(names.iter().map(String::as_str));
        encode_listing(names, built, &call.ctx).await
    })
}

pub(super) fn iter_files_recursive(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let _slot = listing_slot().await?;
        let ticker = Ticker::new(&call.ctx, "iter_files_recursive", "files", 0);
        let files = call
            .ctx
            .storage
            .walk(&path, MAX_ITER_FILES, ticker.tally())
            .await?;
        ticker.end();
        let built = names_cost(files.iter().map(String::as_str));
        encode_listing(files, built, &call.ctx).await
    })
}

/// `tree {path}` (our extension, docs/protocol.md): every entry below a
/// directory — files, directories, symbolic links not followed, with kind,
/// size, mtime, mode and an in-tree link's target — sorted; what `mirror`
/// needs to recreate a tree (empty directories and links included) in one
/// command instead of a listing and a `stat` per file.
pub(super) fn tree(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = optional_path(&call)?;
        call.turn.wait().await?;
        let _slot = listing_slot().await?;
        let ticker = Ticker::new(&call.ctx, "tree", "entries", 0);
        let entries = call
            .ctx
            .storage
            .tree(&path, MAX_TREE_ENTRIES, ticker.tally())
            .await?;
        ticker.end();
        let built = names_cost(entries.iter().map(|e| e.path.as_str()))
            + entries.len() * std::mem::size_of::<framegate_wire::payload::TreeEntry>();
        encode_listing(entries, built, &call.ctx).await
    })
}

/// Bytes hashed per read of a `digest`.
pub const DIGEST_PIECE: usize = 1 << 20;

/// `digest {path, [if-match]}`: the SHA-256 of a file, read from the open
/// file on the file pool in [`DIGEST_PIECE`]s (never whole in memory), with
/// the version and size it covers — what `get --verify` and
/// `mirror --checksum` compare a local copy against. A file rewritten
/// while it is hashed is `file-changed`.
pub(super) fn digest(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let if_match = if_match_arg(&call)?;
        call.turn.wait().await?;
        let FileRead { answer, etag } = call
            .ctx
            .storage
            .read(&path, ReadRanges::Whole, if_match.as_deref())
            .await?;
        let total = answer.len_hint().unwrap_or(0);
        let ticker = Ticker::new(&call.ctx, "digest", "bytes", total);
        let (digest, size) = hash_answer(answer, ticker.tally()).await?;
        ticker.end();
        Ok(Answer::cbor(&framegate_wire::DigestAnswer {
            algorithm: "sha256".into(),
            digest,
            size,
            etag: etag.as_str().to_owned(),
        }))
    })
}

/// SHA-256 (hex) and length of an answer's bytes.
async fn hash_answer(answer: Answer, tally: Tally) -> Result<(String, u64), CommandError> {
    use sha2::{Digest, Sha256};
    match answer {
        Answer::Bytes(b) => Ok((hex_of(&Sha256::digest(&b)), b.len() as u64)),
        Answer::File { file, ranges } => {
            blocking_heavy(move || {
                use std::os::unix::fs::FileExt;
                let before = crate::driver::Fingerprint::of(&file);
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; DIGEST_PIECE];
                let mut total = 0u64;
                for (mut offset, mut len) in ranges {
                    while len > 0 {
                        let want = usize::try_from(len)
                            .unwrap_or(DIGEST_PIECE)
                            .min(DIGEST_PIECE);
                        let piece = buf.get_mut(..want).unwrap_or_default();
                        file.read_exact_at(piece, offset)
                            .map_err(CommandError::internal)?;
                        hasher.update(&*piece);
                        offset += want as u64;
                        len -= want as u64;
                        total += want as u64;
                        tally(total);
                    }
                }
                let now = crate::driver::Fingerprint::of(&file);
                if !matches!((before, now), (Some(b), Some(n)) if !n.rewritten_since(&b)) {
                    return Err(CommandError::new(
                        framegate_wire::ErrorCode::FILE_CHANGED,
                        "the file was rewritten while it was hashed",
                    ));
                }
                Ok((hex_of(&hasher.finalize()), total))
            })
            .await
        }
        Answer::Stream(mut stream) => {
            use futures_util::StreamExt;
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            while let Some(piece) = stream.next().await {
                let piece = piece?;
                total += piece.len() as u64;
                hasher.update(&piece);
            }
            Ok((hex_of(&hasher.finalize()), total))
        }
        Answer::Announced { answer, .. } => Box::pin(hash_answer(*answer, tally)).await,
    }
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Least time between two `progress` frames of one command: a long walk or
/// digest reports a few times a second, and one that ends sooner reports
/// nothing (its frames would only weigh on a batch of small commands).
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Sends a long command's progress (topic, unit, total; `total` 0 when
/// not known), at most once per [`PROGRESS_INTERVAL`], and the end of the
/// topic (`pos` -1) if it sent any.
struct Ticker {
    inner: std::sync::Arc<TickerInner>,
}

struct TickerInner {
    ctx: Context,
    topic: &'static str,
    label: &'static str,
    total: u64,
    schedule: std::sync::Mutex<Schedule>,
}

/// When a ticker reports next, and how many it sent.
#[derive(Default)]
struct Schedule {
    /// `None` until the first tick (the interval runs from there).
    next: Option<std::time::Instant>,
    sent: u32,
}

impl Ticker {
    fn new(ctx: &Context, topic: &'static str, label: &'static str, total: u64) -> Ticker {
        Ticker {
            inner: std::sync::Arc::new(TickerInner {
                ctx: ctx.clone(),
                topic,
                label,
                total,
                schedule: std::sync::Mutex::default(),
            }),
        }
    }

    /// The callback storage and hashing call with the running count.
    fn tally(&self) -> Tally {
        let inner = self.inner.clone();
        std::sync::Arc::new(move |pos| inner.tick(pos))
    }

    fn end(self) {
        let sent = self.inner.schedule.lock().map_or(0, |s| s.sent);
        if sent > 0 {
            self.inner.send(-1);
        }
    }
}

impl TickerInner {
    fn tick(&self, pos: u64) {
        let now = std::time::Instant::now();
        let Ok(mut schedule) = self.schedule.lock() else {
            return;
        };
        match schedule.next {
            None => schedule.next = Some(now + PROGRESS_INTERVAL),
            Some(due) if now >= due => {
                // Reports come less often as a command goes on (the interval
                // doubles every 16 reports): while output is deferred they
                // queue, and this keeps a long command's queue short.
                let doublings = (schedule.sent / 16).min(10);
                schedule.sent += 1;
                schedule.next = Some(now + PROGRESS_INTERVAL * 2u32.pow(doublings));
                drop(schedule);
                self.send(i64::try_from(pos).unwrap_or(i64::MAX));
            }
            Some(_) => {}
        }
    }

    fn send(&self, pos: i64) {
        self.ctx.progress(ProgressPayload {
            topic: self.topic.to_owned(),
            pos,
            total: self.total,
            label: Some(self.label.to_owned()),
            item: None,
        });
    }
}
