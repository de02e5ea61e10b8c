//! Minimum input rate: how long a peer may take to send what it started.

use std::time::Duration;

/// The deadline for a body's next bytes: `per_read` after the last ones,
/// and no later than the average rate `min_rate` (bytes/s, 0: none) allows,
/// counted from the start with `per_read` of grace — a body trickled a byte
/// at a time is cut, however often its bytes come.
pub(crate) struct Pace {
    per_read: Duration,
    min_rate: u64,
    started: tokio::time::Instant,
    last: tokio::time::Instant,
    received: u64,
}

impl Pace {
    pub(crate) fn new(per_read: Duration, min_rate: u64) -> Pace {
        let now = tokio::time::Instant::now();
        Pace {
            per_read,
            min_rate,
            started: now,
            last: now,
            received: 0,
        }
    }

    pub(crate) fn received(&mut self, n: usize) {
        self.received += n as u64;
        self.last = tokio::time::Instant::now();
    }

    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        let next_read = self.last + self.per_read;
        if self.min_rate == 0 {
            return next_read;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        next_read.min(self.started + self.per_read + earned)
    }
}
