//! Helpers of the file commands: names as printed, counted uploads,
//! `mkdir -p`.

use framegate_client::Error;

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
