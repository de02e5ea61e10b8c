//! Progress display: bars and spinners on stderr when it is a terminal (or
//! with `--progress`: one plain line a second, for logs); nothing under
//! `-q`, `--json` or `--no-progress`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::Ctx;

/// How often a download's progress bar looks at the file's size.
pub(crate) const PROGRESS_POLL: Duration = Duration::from_millis(100);

/// Whether progress is shown: `--progress` / `--no-progress` decide;
/// otherwise only on a terminal and not under `-q` or `--json`.
pub(crate) fn shown(ctx: &Ctx) -> bool {
    match ctx.progress {
        Some(asked) => asked,
        None => !ctx.quiet && !ctx.json && std::io::stderr().is_terminal(),
    }
}

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(Lines::default()), 1)
    }
}

/// A byte-counting bar (`len` known) or a spinner.
pub(crate) fn bar(ctx: &Ctx, len: Option<u64>, what: &str) -> ProgressBar {
    if !shown(ctx) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, target());
    // A length not known yet may come later (a `get`'s progress frame).
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// A spinner with a message (a listing: how many entries so far).
pub(crate) fn spinner(ctx: &Ctx, what: &str) -> ProgressBar {
    if !shown(ctx) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, target());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Moves a progress bar along with a file being written.
pub(crate) fn watch_file(pb: ProgressBar, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(meta) = tokio::fs::metadata(&path).await {
                pb.set_position(meta.len());
            }
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    })
}

/// Progress as plain lines on a stderr that is not a terminal (no cursor
/// movement, no clearing).
/// At most one line a second (indicatif redraws far more often; its rate
/// limit lets bursts through), the first at once.
#[derive(Debug, Default)]
struct Lines {
    pending: Mutex<String>,
    last: Mutex<Option<std::time::Instant>>,
}

/// Least time between two progress lines on a stderr that is not a
/// terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

impl Lines {
    fn emit(&self, line: &str) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LINE_INTERVAL) {
            return Ok(());
        }
        *last = Some(now);
        let mut err = std::io::stderr().lock();
        writeln!(err, "{}", line.trim_end())
    }
}

impl TermLike for Lines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let line = std::mem::take(&mut *pending) + s;
        drop(pending);
        if line.trim().is_empty() {
            return Ok(());
        }
        self.emit(&line)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let line = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if line.trim().is_empty() {
            return Ok(());
        }
        self.emit(&line)
    }
}
