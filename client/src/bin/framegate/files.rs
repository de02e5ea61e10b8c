//! Helpers of the file commands: names as printed, counted uploads,
//! `mkdir -p`.

use framegate_client::{Error, ErrorCode, FileKind, Transport};

use crate::{Ctx, open, split_url};

/// A name as printed: control characters (a newline in a file name)
/// escaped, so one line is one name.
pub(crate) fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().any(char::is_control) {
        name.escape_default().to_string().into()
    } else {
        name.into()
    }
}

/// A message for the terminal: control characters (a server's text may
/// carry escape sequences, e.g. in a file name it quotes) shown escaped;
/// newlines too when `one_line` (an error is one line: a server's newline
/// could forge another), else kept.
pub(crate) fn printable_text(text: &str, one_line: bool) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && (one_line || c != '\n') {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A reader that counts what it read.
pub(crate) struct Counted<R> {
    pub(crate) inner: R,
    pub(crate) n: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.n += read as u64;
        polled
    }
}

/// `mkdir -p URL`: each missing level, from the deepest existing one.
pub(crate) async fn mkdir_parents(ctx: &Ctx, url: &str) -> Result<(), Error> {
    // The levels, deepest first: URL, its parent, ... while they split.
    let mut levels = Vec::new();
    let mut at = url.trim_end_matches('/').to_string();
    while let Ok((dir, name)) = split_url(&at) {
        levels.push((dir.clone(), name));
        at = dir;
    }
    let mut missing = Vec::new();
    for (dir, name) in levels {
        let t = open(ctx, &dir).await;
        let exists = match &t {
            Ok(t) => match t.stat(&name).await {
                Ok(s) if s.kind == framegate_client::FileKind::Dir => true,
                Ok(_) => {
                    return Err(Error::Remote {
                        code: framegate_client::ErrorCode::FILE_EXISTS,
                        message: format!("{dir}{name} exists and is not a directory"),
                    });
                }
                Err(e) if e.is(&framegate_client::ErrorCode::NO_SUCH_FILE) => false,
                Err(e) => return Err(e),
            },
            // The parent directory itself is missing (a refused base).
            Err(e) if e.is(&framegate_client::ErrorCode::NO_SUCH_FILE) => false,
            Err(_) => false,
        };
        if exists {
            break;
        }
        missing.push((dir, name));
    }
    for (dir, name) in missing.into_iter().rev() {
        match open(ctx, &dir).await?.mkdir(&name, None).await {
            Ok(()) => {}
            // Made meanwhile by someone else: fine.
            Err(e) if e.is(&framegate_client::ErrorCode::FILE_EXISTS) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `mv URL TO`: the directory both are under, and the two paths relative
/// to it (a move between directories of one tree; a TO relative to URL's
/// directory may climb with `../`).
pub(crate) fn move_paths(url: &str, to: &str) -> Result<(String, String, String), Error> {
    let from = reqwest::Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
    let target = if to.contains("://") {
        reqwest::Url::parse(to).map_err(|e| Error::InvalidUrl(format!("{to}: {e}")))?
    } else {
        from.join(to)
            .map_err(|e| Error::InvalidUrl(format!("{to}: {e}")))?
    };
    if from.origin() != target.origin() {
        return Err(Error::Usage(format!(
            "{to} is on another server: mv moves within one tree"
        )));
    }
    // The longest common directory of the two paths.
    let a: Vec<&str> = from.path().split('/').collect();
    let b: Vec<&str> = target.path().split('/').collect();
    let common = a
        .iter()
        .zip(&b)
        .take(a.len().min(b.len()).saturating_sub(1))
        .take_while(|(x, y)| x == y)
        .count();
    let rel = |parts: &[&str]| {
        percent_encoding::percent_decode_str(&parts[common..].join("/"))
            .decode_utf8_lossy()
            .trim_end_matches('/')
            .to_string()
    };
    let (from_rel, to_rel) = (rel(&a), rel(&b));
    if from_rel.is_empty() || to_rel.is_empty() {
        return Err(Error::Usage(format!("cannot move {url} to {to}")));
    }
    let mut base = from.clone();
    base.set_path(&format!("{}/", a[..common].join("/")));
    Ok((base.to_string(), from_rel, to_rel))
}

/// `rm -r`: every file below `dir` (one batch per 1,000), then its
/// directories, deepest first, then `dir` itself.
pub(crate) async fn remove_tree(t: &Transport, dir: &str) -> Result<(), Error> {
    let stat = t.stat(dir).await?;
    if stat.kind != FileKind::Dir {
        return t.delete(dir).await;
    }
    let files = t.iter_files_recursive(dir).await?;
    for chunk in files.chunks(1000) {
        let mut batch = t.batch();
        let slots: Vec<_> = chunk
            .iter()
            .map(|f| batch.delete(&format!("{dir}/{f}")))
            .collect();
        let mut results = batch.send().await?;
        for slot in slots {
            match results.take(slot) {
                Ok(()) => {}
                Err(e) if e.is(&ErrorCode::NO_SUCH_FILE) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // Directories: every one below `dir` (empty ones too), deepest first.
    let mut dirs = Vec::new();
    let mut stack = vec![dir.to_string()];
    while let Some(d) = stack.pop() {
        let names = t.list_dir(&d).await?;
        let mut batch = t.batch();
        let slots: Vec<_> = names
            .iter()
            .map(|n| (format!("{d}/{n}"), batch.stat(&format!("{d}/{n}"))))
            .collect();
        let mut results = batch.send().await?;
        for (path, slot) in slots {
            if results.take(slot).is_ok_and(|s| s.kind == FileKind::Dir) {
                stack.push(path);
            }
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        t.rmdir(d).await?;
    }
    Ok(())
}

/// `get --verify`: the copy's SHA-256 against the server's digest of the
/// file. A server that changed the file since is named as such; a
/// different digest of the same version means the copy is not the file.
pub(crate) async fn verify_copy(
    t: &Transport,
    name: &str,
    dest: &std::path::Path,
) -> Result<(), Error> {
    let remote = t.digest(name).await?;
    let (local, size) = local_sha256(dest).await?;
    if local == remote.digest && size == remote.size {
        return Ok(());
    }
    Err(Error::Misbehaved(
        framegate_client::Misbehavior::Malformed {
            what: format!("the copy of {name} in {}", dest.display()),
            reason: format!(
                "its SHA-256 {local} ({size} bytes) is not the server's {} ({} bytes, version {}): \
             the file may have changed on the server since, or the copy is damaged",
                remote.digest, remote.size, remote.etag
            ),
        },
    ))
}

/// SHA-256 (lower-case hex) and size of a local file, read in 1 MiB pieces.
pub(crate) async fn local_sha256(path: &std::path::Path) -> Result<(String, u64), Error> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| crate::mirror::local_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| crate::mirror::local_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}

/// A server's mtime as a time; a value that is no time (NaN, infinite,
/// past the year 292 billion) is the epoch, not a panic.
pub(crate) fn time_of(mtime: f64) -> std::time::SystemTime {
    std::time::Duration::try_from_secs_f64(mtime.max(0.0))
        .ok()
        .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// [`time_of`] for display: at most 9999-12-31T23:59:59Z (HTTP dates and
/// RFC 3339 stop there; a later file date — tmpfs stores them — would make
/// the formatters fail).
pub(crate) fn shown_time(mtime: f64) -> std::time::SystemTime {
    const LATEST: std::time::Duration = std::time::Duration::from_secs(253_402_300_799);
    let since = time_of(mtime)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::time::UNIX_EPOCH + since.min(LATEST)
}
