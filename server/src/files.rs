//! The file-tree commands of PROTOCOL.md §9.2–9.3.
//!
//! Every path goes through [`clean_path`] and then through the message's
//! base `Dir` (cap-std), so nothing outside the base can be reached. Blocking
//! file I/O runs on tokio's blocking pool. Uploads are staged in a temporary
//! file next to their target and made visible only when the command's turn
//! comes: `put` by an atomic rename after fsync, `append` by copying the
//! staged bytes onto the end and truncating back if that fails.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use cap_std::fs::{Dir, MetadataExt, OpenOptions, Permissions, PermissionsExt};
use framegate_wire::ErrorCode;
use serde::Serialize;

use crate::command::{Access, Answer, Call, Command, CommandError, Registry};
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX, clean_path, io_error, split_parent};

/// Answers up to this size are read at once; larger ones stay an open file
/// read when sent.
pub const MAX_INLINE_ANSWER: u64 = 16 * 1024;

/// Buffer for writing uploads to their staging file and copying appends.
pub const UPLOAD_BUFFER: usize = 1 << 20;

/// Most ranges one `readv` may ask for.
pub const MAX_READV_RANGES: usize = 16_384;

/// Most files `iter_files_recursive` lists.
pub const MAX_ITER_FILES: usize = 1_000_000;

pub(crate) fn register(registry: &mut Registry) {
    registry
        .register("get", Arc::new(Reader(get)))
        .register("readv", Arc::new(Reader(readv)))
        .register("has", Arc::new(Reader(has)))
        .register("stat", Arc::new(Reader(stat)))
        .register("list_dir", Arc::new(Reader(list_dir)))
        .register(
            "iter_files_recursive",
            Arc::new(Reader(iter_files_recursive)),
        )
        .register("put", Arc::new(Writer(put)))
        .register("append", Arc::new(Writer(append)))
        .register("mkdir", Arc::new(Writer(mkdir)))
        .register("rename", Arc::new(Writer(rename)))
        .register("delete", Arc::new(Writer(delete)))
        .register("rmdir", Arc::new(Writer(rmdir)));
}

type Fut = crate::command::BoxFuture<Result<Answer, CommandError>>;

struct Reader(fn(Call) -> Fut);
struct Writer(fn(Call) -> Fut);

impl Command for Reader {
    fn run(&self, call: Call) -> Fut {
        (self.0)(call)
    }
}

impl Command for Writer {
    fn access(&self) -> Access {
        Access::Write
    }
    fn run(&self, call: Call) -> Fut {
        (self.0)(call)
    }
}

/// Threads of the file-I/O pool.
pub const FILE_IO_THREADS: usize = 8;

/// The pool that runs blocking file operations, off the async executor.
/// A dedicated pool costs about a microsecond per job where tokio's
/// `spawn_blocking` cost about ten (measured on a 1,000-`get` batch).
/// `None` if its threads could not be started (then tokio's pool is used).
fn file_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(FILE_IO_THREADS)
            .thread_name(|i| format!("framegate-fs-{i}"))
            .build()
            .map_err(
                |e| tracing::warn!(error = %e, "no file-I/O pool; using tokio's blocking pool"),
            )
            .ok()
    })
    .as_ref()
}

/// Runs blocking file work on the file-I/O pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    let Some(pool) = file_pool() else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(CommandError::internal)?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| CommandError::internal("file task dropped"))?
}

/// Waits for the command's turn (§6 ordering), then runs `f` on the base
/// directory in the file-I/O pool.
async fn on_base(
    call: &mut Call,
    f: impl FnOnce(&Dir) -> Result<Answer, CommandError> + Send + 'static,
) -> Result<Answer, CommandError> {
    call.turn.wait().await?;
    let base = call.ctx.base.clone();
    blocking(move || f(&base)).await
}

fn path_arg(call: &Call, name: &str) -> Result<PathBuf, CommandError> {
    clean_path(call.arg(name)?)
}

fn mode_arg(call: &Call) -> Result<Option<u32>, CommandError> {
    let Some(raw) = call.args.get("mode") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).map_err(|_| CommandError::bad("mode", "not ASCII"))?;
    let mode = u32::from_str_radix(text, 8).map_err(|_| CommandError::bad("mode", "not octal"))?;
    if mode > 0o7777 {
        return Err(CommandError::bad("mode", "above 7777"));
    }
    // No set-id or sticky bits from the network.
    Ok(Some(mode & 0o777))
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
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                CommandError::new(ErrorCode::SHORT_READ, "file shrank while being read")
            } else {
                CommandError::internal(e)
            }
        })?;
        at = end;
    }
    Ok(Answer::Bytes(buf.freeze()))
}

fn open_file(base: &Dir, path: &Path) -> Result<(std::fs::File, u64), CommandError> {
    let file = base.open(path).map_err(|e| io_error(&e, path))?;
    let meta = file.metadata().map_err(|e| io_error(&e, path))?;
    if meta.is_dir() {
        return Err(CommandError::new(
            ErrorCode::IS_A_DIRECTORY,
            format!("is a directory: {}", path.display()),
        ));
    }
    Ok((file.into_std(), meta.len()))
}

fn get(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        on_base(&mut call, move |base| {
            let (file, size) = open_file(base, &path)?;
            answer_ranges(file, vec![(0, size)])
        })
        .await
    })
}

/// Parses `offset,length` lines.
pub fn parse_ranges(raw: &[u8]) -> Result<Vec<(u64, u64)>, CommandError> {
    let text = std::str::from_utf8(raw).map_err(|_| CommandError::bad("ranges", "not ASCII"))?;
    let mut ranges = Vec::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        if ranges.len() == MAX_READV_RANGES {
            return Err(CommandError::bad(
                "ranges",
                format!("more than {MAX_READV_RANGES} ranges"),
            ));
        }
        let (offset, length) = line
            .split_once(',')
            .ok_or_else(|| CommandError::bad("ranges", "expected offset,length"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| CommandError::bad("ranges", "not a decimal number"))
        };
        let (offset, length) = (parse(offset)?, parse(length)?);
        offset
            .checked_add(length)
            .ok_or_else(|| CommandError::bad("ranges", "range overflows"))?;
        ranges.push((offset, length));
    }
    Ok(ranges)
}

fn readv(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let ranges = parse_ranges(call.arg("ranges")?)?;
        on_base(&mut call, move |base| {
            let (file, size) = open_file(base, &path)?;
            if let Some(&(offset, length)) = ranges.iter().find(|(o, l)| o + l > size) {
                return Err(CommandError::new(
                    ErrorCode::SHORT_READ,
                    format!("range {offset},{length} ends past the end of the file ({size} bytes)"),
                ));
            }
            answer_ranges(file, ranges)
        })
        .await
    })
}

fn has(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        call.turn.wait().await?;
        let base = call.ctx.base.clone();
        blocking(move || match base.metadata(&path) {
            Ok(_) => Ok(Answer::cbor(&true)),
            Err(e) => {
                let err = io_error(&e, &path);
                if err.code == ErrorCode::NO_SUCH_FILE || err.code == ErrorCode::NOT_A_DIRECTORY {
                    Ok(Answer::cbor(&false))
                } else {
                    Err(err)
                }
            }
        })
        .await
    })
}

#[derive(Serialize)]
struct Stat {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: f64,
}

fn stat(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        on_base(&mut call, move |base| {
            let meta = base
                .symlink_metadata(&path)
                .map_err(|e| io_error(&e, &path))?;
            let ft = meta.file_type();
            let kind = if ft.is_file() {
                "file"
            } else if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "other"
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            Ok(Answer::cbor(&Stat {
                kind,
                mode: meta.mode() & 0o7777,
                size: meta.len(),
                mtime,
            }))
        })
        .await
    })
}

fn hidden(name: &str) -> bool {
    name == RESERVED_COMPONENT || name.starts_with(TEMP_PREFIX)
}

/// Entry names of a directory, sorted bytewise, without reserved names.
pub(crate) fn dir_names(
    base: &Dir,
    path: &Path,
) -> Result<Vec<(String, cap_std::fs::Metadata)>, CommandError> {
    let mut names = Vec::new();
    for entry in base.read_dir(path).map_err(|e| io_error(&e, path))? {
        let entry = entry.map_err(|e| io_error(&e, path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if hidden(&name) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| io_error(&e, path))?;
        names.push((name, meta));
    }
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

fn list_dir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = match call.args.get("path") {
            Some(raw) => clean_path(raw)?,
            None => PathBuf::from("."),
        };
        on_base(&mut call, move |base| {
            let names: Vec<String> = dir_names(base, &path)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            Ok(Answer::cbor(&names))
        })
        .await
    })
}

fn iter_files_recursive(mut call: Call) -> Fut {
    Box::pin(async move {
        let root = match call.args.get("path") {
            Some(raw) => clean_path(raw)?,
            None => PathBuf::from("."),
        };
        on_base(&mut call, move |base| {
            let mut files = Vec::new();
            let mut stack = vec![PathBuf::new()];
            while let Some(rel) = stack.pop() {
                let dir = if rel.as_os_str().is_empty() {
                    root.clone()
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
                        || (ft.is_symlink()
                            && base.metadata(root.join(&child)).is_ok_and(|m| m.is_file()))
                    {
                        // Symlinked files inside the base count; symlinked
                        // directories are not followed (no loops).
                        if files.len() == MAX_ITER_FILES {
                            return Err(CommandError::new(
                                ErrorCode::NOT_SUPPORTED,
                                format!("more than {MAX_ITER_FILES} files below this path"),
                            ));
                        }
                        files.push(child.to_string_lossy().into_owned());
                    }
                }
            }
            files.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            Ok(Answer::cbor(&files))
        })
        .await
    })
}

/// A staging file for an upload, next to its target; removed unless committed.
struct Staging {
    dir: Arc<Dir>,
    name: String,
    file: Option<std::fs::File>,
    committed: bool,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    async fn create(base: Arc<Dir>, parent: PathBuf) -> Result<Staging, CommandError> {
        blocking(move || {
            let dir = if parent == Path::new(".") {
                base.try_clone().map_err(CommandError::internal)?
            } else {
                base.open_dir(&parent).map_err(|e| io_error(&e, &parent))?
            };
            let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{TEMP_PREFIX}{}-{n}", std::process::id());
            let file = dir
                .open_with(
                    &name,
                    OpenOptions::new().read(true).write(true).create_new(true),
                )
                .map_err(|e| io_error(&e, &parent))?;
            Ok(Staging {
                dir: Arc::new(dir),
                name,
                file: Some(file.into_std()),
                committed: false,
            })
        })
        .await
    }

    /// Streams the upload into the staging file and fsyncs it.
    async fn fill(&mut self, call: &mut Call) -> Result<(), CommandError> {
        let Some(file) = self.file.take() else {
            return Err(CommandError::internal("no staging file"));
        };
        let mut data = call.data.take();
        let mut file =
            tokio::io::BufWriter::with_capacity(UPLOAD_BUFFER, tokio::fs::File::from_std(file));
        use tokio::io::AsyncWriteExt;
        if let Some(data) = data.as_mut() {
            while let Some(chunk) = data.next().await? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_error(&e, Path::new(&self.name)))?;
            }
        }
        file.flush().await.map_err(CommandError::internal)?;
        let file = file.into_inner();
        file.sync_all().await.map_err(CommandError::internal)?;
        self.file = Some(file.into_std().await);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

fn put(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let mode = mode_arg(&call)?;
        let (parent, name) = split_parent(&path)?;
        let mut staging = Staging::create(call.ctx.base.clone(), parent).await?;
        staging.fill(&mut call).await?;
        call.turn.wait().await?;
        blocking(move || {
            let file = staging
                .file
                .take()
                .ok_or_else(|| CommandError::internal("no staging file"))?;
            let mode = mode.unwrap_or(0o644);
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(CommandError::internal)?;
            drop(file);
            staging
                .dir
                .rename(&staging.name, &staging.dir, &name)
                .map_err(|e| io_error(&e, &path))?;
            staging.committed = true;
            staging
                .dir
                .open(".")
                .and_then(|d| d.sync_all())
                .map_err(CommandError::internal)?;
            Ok(Answer::cbor(&()))
        })
        .await
    })
}

fn append(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let mode = mode_arg(&call)?;
        let (parent, name) = split_parent(&path)?;
        let mut staging = Staging::create(call.ctx.base.clone(), parent).await?;
        staging.fill(&mut call).await?;
        call.turn.wait().await?;
        blocking(move || {
            let mut staged = staging
                .file
                .take()
                .ok_or_else(|| CommandError::internal("no staging file"))?;
            let target = staging
                .dir
                .open_with(
                    &name,
                    OpenOptions::new().read(true).write(true).create(true),
                )
                .map_err(|e| io_error(&e, &path))?;
            let meta = target.metadata().map_err(|e| io_error(&e, &path))?;
            if meta.is_dir() {
                return Err(CommandError::new(
                    ErrorCode::IS_A_DIRECTORY,
                    format!("is a directory: {}", path.display()),
                ));
            }
            if let Some(mode) = mode {
                target
                    .set_permissions(Permissions::from_mode(mode))
                    .map_err(CommandError::internal)?;
            }
            let mut target = target.into_std();
            let before = meta.len();
            let result = (|| -> std::io::Result<()> {
                staged.seek(SeekFrom::Start(0))?;
                target.seek(SeekFrom::Start(before))?;
                let mut buf = vec![0u8; UPLOAD_BUFFER];
                loop {
                    let n = staged.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    target.write_all(buf.get(..n).unwrap_or_default())?;
                }
                target.sync_data()
            })();
            if let Err(e) = result {
                // Never leave a partial append visible.
                let _ = target.set_len(before);
                return Err(io_error(&e, &path));
            }
            Ok(Answer::cbor(&before))
        })
        .await
    })
}

fn mkdir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        let mode = mode_arg(&call)?;
        on_base(&mut call, move |base| {
            base.create_dir(&path).map_err(|e| io_error(&e, &path))?;
            if let Some(mode) = mode {
                base.set_permissions(&path, Permissions::from_mode(mode))
                    .map_err(|e| io_error(&e, &path))?;
            }
            Ok(Answer::cbor(&()))
        })
        .await
    })
}

fn rename(mut call: Call) -> Fut {
    Box::pin(async move {
        let from = path_arg(&call, "from")?;
        let to = path_arg(&call, "to")?;
        split_parent(&from)?;
        split_parent(&to)?;
        on_base(&mut call, move |base| {
            base.rename(&from, base, &to)
                .map_err(|e| io_error(&e, &from))?;
            Ok(Answer::cbor(&()))
        })
        .await
    })
}

fn delete(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        split_parent(&path)?;
        on_base(&mut call, move |base| {
            if base.symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                return Err(CommandError::new(
                    ErrorCode::IS_A_DIRECTORY,
                    format!("is a directory: {}", path.display()),
                ));
            }
            base.remove_file(&path).map_err(|e| io_error(&e, &path))?;
            Ok(Answer::cbor(&()))
        })
        .await
    })
}

fn rmdir(mut call: Call) -> Fut {
    Box::pin(async move {
        let path = path_arg(&call, "path")?;
        split_parent(&path)?;
        on_base(&mut call, move |base| {
            base.remove_dir(&path).map_err(|e| io_error(&e, &path))?;
            Ok(Answer::cbor(&()))
        })
        .await
    })
}

/// Reads `len` bytes at `offset` of `file` (the sending side of a lazy
/// answer), into a fresh buffer that is not zeroed first.
pub(crate) fn read_piece(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}
