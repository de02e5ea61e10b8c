//! Byte ranges picked out of a whole file as it streams past: how a
//! `readv` is answered from a `get` (a framegate server without `readv`)
//! or from a plain server that ignores `Range`, holding only the ranges
//! asked for, never the file.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

/// Collects `(offset, length)` ranges of a byte stream written to it.
#[derive(Debug)]
pub(crate) struct RangeCollector {
    ranges: Vec<(u64, u64)>,
    parts: Vec<BytesMut>,
    /// Offset of the next byte written.
    pos: u64,
}

impl RangeCollector {
    /// A collector of `ranges` (any order; overlaps allowed).
    pub(crate) fn new(ranges: &[(u64, u64)]) -> Self {
        RangeCollector {
            ranges: ranges.to_vec(),
            parts: ranges.iter().map(|_| BytesMut::new()).collect(),
            pos: 0,
        }
    }

    /// The next bytes of the stream.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        let (start, end) = (self.pos, self.pos + data.len() as u64);
        for (&(offset, len), part) in self.ranges.iter().zip(self.parts.iter_mut()) {
            let (from, to) = (offset.max(start), (offset + len).min(end));
            if from < to {
                let slice = (from - start) as usize..(to - start) as usize;
                if let Some(bytes) = data.get(slice) {
                    part.extend_from_slice(bytes);
                }
            }
        }
        self.pos = end;
    }

    /// Each range's bytes, in the order given; `Err((offset, length))` of
    /// the first range the stream ended before completing.
    pub(crate) fn finish(self) -> Result<Vec<Bytes>, (u64, u64)> {
        self.ranges
            .iter()
            .zip(self.parts)
            .map(|(&(offset, len), part)| {
                if part.len() as u64 == len {
                    Ok(part.freeze())
                } else {
                    Err((offset, len))
                }
            })
            .collect()
    }
}

impl AsyncWrite for RangeCollector {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().feed(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_across_writes_overlapping_and_short() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut c = RangeCollector::new(&[(90, 10), (5, 20), (10, 3), (0, 0)]);
        for piece in data.chunks(7) {
            c.feed(piece);
        }
        let parts = c.finish().unwrap();
        assert_eq!(&parts[0][..], &data[90..100]);
        assert_eq!(&parts[1][..], &data[5..25]);
        assert_eq!(&parts[2][..], &data[10..13]);
        assert!(parts[3].is_empty());
        let mut short = RangeCollector::new(&[(0, 5), (95, 10)]);
        short.feed(&data);
        assert_eq!(short.finish().unwrap_err(), (95, 10));
    }
}
