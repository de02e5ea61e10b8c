//! Whether compressing a stream's payloads still pays: a sender's policy,
//! not wire format (§5 lets any frame of a `zstd-8mb` stream go out
//! unencoded).
//!
//! Compressing and flushing costs the sender for every byte even when
//! nothing is saved: 1,000 `get`s of 1 KiB random files took 21 ms of
//! server CPU per message with zstd against 12 ms without (and 16 against
//! 9.5 ms on the client's clock), for answers no smaller. So the stream
//! keeps count of what its encoded payloads gained: after every
//! [`GAIN_PROBE_BYTES`] tried, if they shrank by less than
//! [`MIN_STREAM_GAIN`] (encoded bytes ≥ 90% of the raw ones), the next
//! [`GAIN_SKIP_BYTES`] of payloads that asked for encoding go out as they
//! are, and then it tries again. A stream whose payloads compress is never
//! skipped; one whose payloads do not costs the compressor about 6% of its
//! bytes; in a mix, a window of incompressible payloads makes up to the
//! next 1 MiB go raw, compressible or not. Payloads the sender judged on a
//! sample of its own (`Encode::Always`) are neither counted nor skipped.
//!
//! Nor is a compressor made for a few small payloads: making one (a zstd
//! context with a 2 MiB window, its tables zeroed) cost a `hello` message
//! about a third of the server's CPU time. The first
//! [`GAIN_START_BYTES`] of payloads that ask for encoding go out as they
//! are; the stream compresses from the payload that reaches that count.

/// Payload bytes asking for encoding that a stream sends unencoded before
/// it first compresses (the payload that reaches the count is compressed):
/// 4 KiB.
pub const GAIN_START_BYTES: u64 = 4 * 1024;

/// Raw payload bytes compressed before the gain is judged: 64 KiB.
pub const GAIN_PROBE_BYTES: u64 = 64 * 1024;

/// Raw payload bytes sent unencoded after a window that did not pay:
/// 1 MiB.
pub const GAIN_SKIP_BYTES: u64 = 1024 * 1024;

/// A window pays if its encoded bytes are less than this share of its raw
/// bytes (as `numerator / denominator`: 9/10).
pub const MIN_STREAM_GAIN: (u64, u64) = (9, 10);

/// The count kept per outgoing stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct Gain {
    /// Bytes asked for encoding so far, up to [`GAIN_START_BYTES`].
    asked: u64,
    /// Raw bytes compressed in this window.
    tried: u64,
    /// What they encoded to.
    encoded: u64,
    /// Raw bytes still to send unencoded before trying again.
    skip_left: u64,
}

impl Gain {
    /// Whether a payload of `len` bytes that asked for encoding should be
    /// compressed; if not, it counts toward the start or against the skip.
    pub(crate) fn should_try(&mut self, len: usize) -> bool {
        if self.asked < GAIN_START_BYTES {
            self.asked = self.asked.saturating_add(len as u64);
            if self.asked < GAIN_START_BYTES {
                return false;
            }
        }
        if self.skip_left == 0 {
            return true;
        }
        self.skip_left = self.skip_left.saturating_sub(len as u64);
        false
    }

    /// Records a compressed payload: `raw` bytes became `encoded`.
    pub(crate) fn record(&mut self, raw: usize, encoded: usize) {
        self.tried += raw as u64;
        self.encoded += encoded as u64;
        if self.tried >= GAIN_PROBE_BYTES {
            let (num, den) = MIN_STREAM_GAIN;
            if self.encoded.saturating_mul(den) >= self.tried.saturating_mul(num) {
                self.skip_left = GAIN_SKIP_BYTES;
            }
            self.tried = 0;
            self.encoded = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `frames` payloads of `len` bytes that encode to `ratio` of
    /// their size; returns how many were compressed.
    fn feed(g: &mut Gain, frames: usize, len: usize, ratio: f64) -> usize {
        let mut tried = 0;
        for _ in 0..frames {
            if g.should_try(len) {
                tried += 1;
                g.record(len, (len as f64 * ratio) as usize);
            }
        }
        tried
    }

    /// A gain past its start: every payload from now on is judged.
    fn started() -> Gain {
        let mut g = Gain::default();
        assert!(g.should_try(GAIN_START_BYTES as usize));
        g.tried = 0;
        g.encoded = 0;
        g
    }

    #[test]
    fn the_first_small_payloads_go_out_as_they_are() {
        let mut g = Gain::default();
        assert_eq!(feed(&mut g, 3, 1024, 0.1), 0);
        // The fourth KiB reaches the start: compressed, and all after it.
        assert_eq!(feed(&mut g, 100, 1024, 0.1), 100);
        // One payload of the start's size is compressed at once.
        let mut g = Gain::default();
        assert_eq!(feed(&mut g, 1, GAIN_START_BYTES as usize, 0.1), 1);
    }

    #[test]
    fn payloads_that_compress_are_always_compressed() {
        let mut g = started();
        assert_eq!(feed(&mut g, 10_000, 1024, 0.3), 10_000);
        assert_eq!(feed(&mut g, 10_000, 1024, 0.89), 10_000);
    }

    #[test]
    fn payloads_that_do_not_compress_are_mostly_sent_as_they_are() {
        let mut g = started();
        // 64 KiB tried, 1 MiB skipped, 64 KiB tried, ...
        let tried = feed(&mut g, 1088 * 4, 1024, 1.01);
        assert_eq!(tried, 64 * 4);
        // Exactly at 90%: not worth it either.
        let mut g = started();
        assert!(g.should_try(GAIN_PROBE_BYTES as usize));
        g.record(
            GAIN_PROBE_BYTES as usize,
            (GAIN_PROBE_BYTES as usize * 9).div_ceil(10),
        );
        assert!(!g.should_try(1));
    }

    #[test]
    fn content_that_starts_to_compress_is_compressed_again_after_the_skip() {
        let mut g = started();
        feed(&mut g, 64, 1024, 1.0);
        // The skip: 1 MiB of payloads go out unencoded whatever they are.
        assert_eq!(feed(&mut g, 1024, 1024, 0.2), 0);
        // Then every compressible payload is compressed again.
        assert_eq!(feed(&mut g, 5000, 1024, 0.2), 5000);
    }

    #[test]
    fn a_large_payload_ends_its_window_at_once() {
        let mut g = started();
        assert!(g.should_try(256 * 1024));
        g.record(256 * 1024, 256 * 1024 + 20);
        // One 256 KiB payload skipped counts 256 KiB of the skip.
        let tried = feed(&mut g, 4, 256 * 1024, 1.0);
        assert_eq!(tried, 0);
        assert!(g.should_try(1));
    }
}
