//! Reading the store: `get`/`readv` (ranged GETs, streamed), `stat`/`has`
//! (HEAD, or a one-key listing for a directory), listings (paginated
//! delimiter listings, bounded) and walks (a streamed listing).

use std::borrow::Cow;
use std::path::Path;

use bytes::Bytes;
use framegate_wire::ErrorCode;
use futures_util::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};

use super::{ObjectStorage, store_error};
use crate::answer::{Answer, CommandError};
use crate::storage::{
    EntryKind, EntryMeta, Etag, FileRead, MAX_INLINE_ANSWER, ReadRanges, Tally, too_many_entries,
};
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX};

/// Mode bits shown for objects and prefixes (a store has none).
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The listing prefix of the "directory" `key`: `key/`, or nothing for
/// the bucket's root.
fn dir_prefix(key: &Key) -> Option<String> {
    (!key.as_ref().is_empty()).then(|| format!("{}/", key.as_ref()))
}

/// A key's part as the name it encodes.
fn name_of(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map_or_else(|_| part.to_owned(), Cow::into_owned)
}

/// Whether a listed name is one of ours (the directory marker, a spool).
fn hidden(name: &str) -> bool {
    name == RESERVED_COMPONENT || name.starts_with(TEMP_PREFIX)
}

/// The first key below the directory `key` (a marker counts), in one
/// listing request.
pub(super) async fn first_key(
    s: &ObjectStorage,
    key: &Key,
) -> Result<Option<ObjectMeta>, object_store::Error> {
    let opts = PaginatedListOptions {
        max_keys: Some(1),
        ..PaginatedListOptions::default()
    };
    let page = s
        .shared
        .store
        .list_paginated(dir_prefix(key).as_deref(), opts)
        .await?;
    Ok(page.result.objects.into_iter().next())
}

/// Whether the directory `key` exists: the root, or a prefix with a key.
pub(super) async fn is_dir(s: &ObjectStorage, key: &Key) -> Result<bool, CommandError> {
    if key.as_ref().is_empty() || *key == s.root {
        return Ok(true);
    }
    let _permit = s.permit().await?;
    first_key(s, key)
        .await
        .map(|k| k.is_some())
        .map_err(|e| store_error(e, Path::new(key.as_ref())))
}

/// An object's version as our tag: the store's ETag without its quotes,
/// or (a store without ETags) size and modification time.
pub(super) fn etag_of(meta: &ObjectMeta) -> Etag {
    meta.e_tag
        .as_deref()
        .map(|t| t.trim_start_matches("W/").trim_matches('"'))
        .and_then(|t| Etag::new(t.to_owned()))
        .unwrap_or_else(|| {
            Etag::new(format!(
                "{:x}-{:x}",
                meta.size,
                meta.last_modified.timestamp_micros()
            ))
            .unwrap_or_else(|| Etag::new("0").expect("a valid tag"))
        })
}

fn file_meta(meta: &ObjectMeta) -> EntryMeta {
    EntryMeta {
        kind: EntryKind::File,
        size: meta.size,
        mtime: meta.last_modified.timestamp_micros() as f64 / 1e6,
        mode: FILE_MODE,
        etag: Some(etag_of(meta)),
    }
}

fn dir_meta() -> EntryMeta {
    EntryMeta {
        kind: EntryKind::Dir,
        size: 0,
        mtime: 0.0,
        mode: DIR_MODE,
        etag: None,
    }
}

/// HEAD of an object; `Ok(None)` if there is none.
pub(super) async fn head(
    s: &ObjectStorage,
    key: &Key,
    path: &Path,
) -> Result<Option<ObjectMeta>, CommandError> {
    let _permit = s.permit().await?;
    match s.shared.store.head(key).await {
        Ok(meta) => Ok(Some(meta)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(e, path)),
    }
}

/// The error for a path with no object: a directory's or a missing one's.
async fn no_object(s: &ObjectStorage, key: &Key, path: &Path) -> CommandError {
    match is_dir(s, key).await {
        Ok(true) => CommandError::new(ErrorCode::IS_A_DIRECTORY, "is a directory"),
        Ok(false) => CommandError::new(ErrorCode::NO_SUCH_FILE, "no such file"),
        Err(e) => {
            let _ = path;
            e
        }
    }
}

pub(super) async fn stat(s: &ObjectStorage, path: &Path) -> Result<EntryMeta, CommandError> {
    let key = s.key(path)?;
    if key == s.root {
        return Ok(dir_meta());
    }
    if let Some(meta) = head(s, &key, path).await? {
        return Ok(file_meta(&meta));
    }
    if is_dir(s, &key).await? {
        Ok(dir_meta())
    } else {
        Err(CommandError::new(ErrorCode::NO_SUCH_FILE, "no such file"))
    }
}

fn quoted(tag: &str) -> String {
    format!("\"{tag}\"")
}

/// A GET's body as an answer stream. It holds no store request permit:
/// `--s3-max-requests` bounds requests until their answer starts, and a
/// body being relayed is bounded by the answer slots of the message and
/// the server (`--open-answers`) — a client that never reads holds its
/// slot, not the store's permits (it once held them until the send timeout,
/// and as many such clients as permits stalled every other store request).
pub(super) fn streamed(
    body: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    path: std::path::PathBuf,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, CommandError>> {
    body.map(move |piece| piece.map_err(|e| store_error(e, &path)))
        .boxed()
}

pub(super) async fn read(
    s: &ObjectStorage,
    path: &Path,
    ranges: ReadRanges,
    if_match: Option<String>,
) -> Result<FileRead, CommandError> {
    let key = s.key(path)?;
    match ranges {
        ReadRanges::Whole => {
            let permit = s.permit().await?;
            let opts = GetOptions {
                if_match: if_match.as_deref().map(quoted),
                ..GetOptions::default()
            };
            let got = match s.shared.store.get_opts(&key, opts).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    drop(permit);
                    return Err(no_object(s, &key, path).await);
                }
                Err(e) => return Err(store_error(e, path)),
            };
            let etag = etag_of(&got.meta);
            let answer = if got.meta.size <= MAX_INLINE_ANSWER {
                let bytes = got.bytes().await.map_err(|e| store_error(e, path))?;
                Answer::Bytes(bytes)
            } else {
                drop(permit);
                Answer::Stream(streamed(got.into_stream(), path.to_path_buf()))
            };
            Ok(FileRead { answer, etag })
        }
        ReadRanges::Ranges(ranges) => {
            let Some(meta) = head(s, &key, path).await? else {
                return Err(no_object(s, &key, path).await);
            };
            let etag = etag_of(&meta);
            if if_match.as_deref().is_some_and(|t| t != etag.as_str()) {
                return Err(CommandError::new(
                    ErrorCode::FILE_CHANGED,
                    "the object is no longer the version asked for",
                ));
            }
            for &(offset, len) in &ranges {
                if offset.checked_add(len).is_none_or(|end| end > meta.size) {
                    return Err(CommandError::new(
                        ErrorCode::SHORT_READ,
                        "a range reaches past the end of the file",
                    ));
                }
            }
            let total: u64 = ranges.iter().map(|r| r.1).sum();
            let wanted: Vec<(u64, u64)> = ranges.into_iter().filter(|r| r.1 > 0).collect();
            let stream = super::ranges::fetch(s.clone(), key, &wanted, etag.clone(), path);
            let answer = if total <= MAX_INLINE_ANSWER {
                let pieces: Vec<Bytes> = stream.try_collect().await?;
                Answer::Bytes(pieces.concat().into())
            } else {
                Answer::Stream(stream)
            };
            Ok(FileRead { answer, etag })
        }
    }
}

/// One range of the version `etag`: a later version is `file-changed`.
pub(super) async fn get_range(
    s: &ObjectStorage,
    key: &Key,
    offset: u64,
    len: u64,
    etag: &Etag,
) -> object_store::Result<object_store::GetResult> {
    let opts = GetOptions {
        if_match: Some(quoted(etag.as_str())),
        range: Some(GetRange::Bounded(offset..offset + len)),
        ..GetOptions::default()
    };
    s.shared.store.get_opts(key, opts).await
}

/// A directory's entries, sorted bytewise by name; at most `max`.
pub(super) async fn list(
    s: &ObjectStorage,
    path: &Path,
    max: usize,
) -> Result<Vec<(String, EntryMeta)>, CommandError> {
    let key = s.key(path)?;
    let prefix = dir_prefix(&key);
    let mut entries = Vec::new();
    let mut seen_any = false;
    let mut token = None;
    let _permit = s.permit().await?;
    loop {
        let opts = PaginatedListOptions {
            delimiter: Some(Cow::Borrowed("/")),
            max_keys: Some(1000),
            page_token: token.take(),
            ..PaginatedListOptions::default()
        };
        let page = s
            .shared
            .store
            .list_paginated(prefix.as_deref(), opts)
            .await
            .map_err(|e| store_error(e, path))?;
        let result = page.result;
        seen_any |= !result.objects.is_empty() || !result.common_prefixes.is_empty();
        for dir in &result.common_prefixes {
            if let Some(name) = dir.filename().map(name_of).filter(|n| !hidden(n)) {
                entries.push((name, dir_meta()));
            }
        }
        for object in &result.objects {
            if let Some(name) = object.location.filename().map(name_of)
                && !hidden(&name)
            {
                entries.push((name, file_meta(object)));
            }
        }
        if entries.len() > max {
            return Err(too_many_entries(max));
        }
        match page.page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if !seen_any && key != s.root {
        drop(_permit);
        return Err(if head(s, &key, path).await?.is_some() {
            CommandError::new(ErrorCode::NOT_A_DIRECTORY, "not a directory")
        } else {
            CommandError::new(ErrorCode::NO_SUCH_FILE, "no such directory")
        });
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries)
}

/// Relative paths of every object below `path`, sorted; at most `max`.
pub(super) async fn walk(
    s: &ObjectStorage,
    path: &Path,
    max: usize,
    tally: Tally,
) -> Result<Vec<String>, CommandError> {
    let key = s.key(path)?;
    let depth = key.parts_count();
    let mut files = Vec::new();
    let mut seen_any = false;
    {
        let _permit = s.permit().await?;
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let mut listed = s.shared.store.list(prefix);
        while let Some(object) = listed.next().await {
            let object = object.map_err(|e| store_error(e, path))?;
            seen_any = true;
            let names: Vec<String> = object
                .location
                .parts()
                .skip(depth)
                .map(|p| name_of(p.as_ref()))
                .collect();
            if names.is_empty() || names.iter().any(|n| hidden(n)) {
                continue;
            }
            files.push(names.join("/"));
            if files.len() > max {
                return Err(too_many_entries(max));
            }
            if files.len() % 1024 == 0 {
                tally(files.len() as u64);
            }
        }
    }
    if !seen_any && key != s.root {
        return Err(if head(s, &key, path).await?.is_some() {
            CommandError::new(ErrorCode::NOT_A_DIRECTORY, "not a directory")
        } else {
            CommandError::new(ErrorCode::NO_SUCH_FILE, "no such directory")
        });
    }
    tally(files.len() as u64);
    files.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(files)
}
