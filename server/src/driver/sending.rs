//! The driver's output side: what waits to be sent, feeding lazy answers,
//! coalescing the answers of small commands, and the chunks written.

use bytes::Bytes;

use super::{COALESCE_BYTES, Driver, OUTPUT_WATERMARK, output};
use crate::pool::in_share;

impl Driver {
    /// Whether answers would go out in a small chunk while more are coming:
    /// the frames waiting are fewer than [`COALESCE_BYTES`], no lazy answer
    /// has bytes to feed, and commands of this message still run.
    pub(crate) fn output_is_trickling(&self) -> bool {
        !self.runs.is_empty()
            && !self.lazy.is_pending()
            && self.reactor.pending_output_bytes() < COALESCE_BYTES
    }

    /// Waits (at most `--coalesce-wait`, [`COALESCE_WAIT`] by default) while the output trickles (see
    /// [`Driver::output_is_trickling`]), taking the commands that finish
    /// meanwhile: answers of many small commands go out in fewer, larger
    /// chunks (one per answer cost both ends a write, a read and a wake
    /// each: 1,000 one-KiB `get`s went out as ~1,000 HTTP chunks). An
    /// answer waits at most that long; a message whose last command
    /// finished does not wait.
    pub(crate) async fn coalesce_output(&mut self) {
        let wait = self.gw.config.coalesce_wait;
        if wait.is_zero() || !self.output_is_trickling() {
            return;
        }
        let deadline = tokio::time::Instant::now() + wait;
        while self.output_is_trickling() {
            tokio::select! {
                () = self.progress() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
    }

    /// Whether a lazy answer has bytes to feed ([`Driver::feed_output`]) or
    /// frames wait to be transmitted ([`Driver::transmit`]).
    pub(crate) fn has_output_to_feed(&self) -> bool {
        self.lazy.is_pending() || self.reactor.has_transmit()
    }

    /// Applies pending notes and feeds the next piece of a lazy answer
    /// (of a file: no more than brings the reactor's output to `want`
    /// bytes), unless the reactor already holds that much output. `want`
    /// is at most [`OUTPUT_WATERMARK`]; a message sending small chunks (no
    /// output budget left) reads small pieces, so what waits in the reactor
    /// for a client that does not read stays small too.
    pub(crate) async fn feed_output(&mut self, want: usize) {
        while let Ok(note) = self.notes_rx.try_recv() {
            self.apply_note(note);
        }
        let want = want.min(OUTPUT_WATERMARK);
        let pending = self.reactor.pending_output_bytes();
        if pending < want {
            let feed = in_share(
                self.share,
                self.lazy.feed(&mut self.reactor, want - pending),
            );
            self.runs.drive(feed).await;
            self.budget.sync(self.lazy.len());
        }
        self.start_waiting(None);
    }

    /// Drains ready frames into one chunk of about `limit` bytes (see
    /// [`output::transmit_chunk`]), if any are ready.
    pub(crate) fn transmit(&mut self, limit: usize) -> Option<Bytes> {
        let chunk = output::transmit_chunk(&mut self.reactor, limit);
        let sent = chunk.as_ref().map_or(0, Bytes::len);
        self.bytes_out += sent as u64;
        self.gw.metrics.bytes_out.inc_by(sent as u64);
        self.start_waiting(None);
        chunk
    }

    /// Logs the message and records its metrics.
    pub(crate) fn finish_metrics(&self) {
        self.gw.metrics.bytes_in.inc_by(self.bytes_in);
        self.gw
            .metrics
            .latency
            .with_label_values(&[self.spec.endpoint])
            .observe(self.started.elapsed().as_secs_f64());
        let ms = self.started.elapsed().as_millis() as u64;
        if self.spec.endpoint == "stream" {
            // A byte-stream session has no HTTP request: this is its
            // access-log event.
            tracing::info!(
                target: "framegate::access",
                endpoint = self.spec.endpoint,
                commands = self.commands,
                bytes_in = self.bytes_in,
                bytes_out = self.bytes_out,
                ms,
                "session"
            );
        } else {
            tracing::info!(
                base = %self.spec.base_display,
                endpoint = self.spec.endpoint,
                commands = self.commands,
                bytes_in = self.bytes_in,
                bytes_out = self.bytes_out,
                ms,
                "message done"
            );
        }
    }
}
