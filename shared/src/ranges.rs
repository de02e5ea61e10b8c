//! The `ranges` argument of `readv` (PROTOCOL.md §9.2): ASCII lines
//! `offset,length`, joined by `\n`. A range is `(offset, length)` in bytes.
//!
//! This module only spells and reads the argument; whether a range lies
//! inside the file is the command's business (`short-read`).

use std::fmt::Write as _;

/// Most ranges a server accepts in one `readv` by default.
pub const MAX_READV_RANGES: usize = 16_384;

/// What is wrong with a `ranges` argument. A server answers any of these with
/// `bad-argument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangesError {
    /// A byte outside ASCII.
    #[error("not ASCII")]
    NotAscii,
    /// More ranges than the receiver's limit.
    #[error("more than {max} ranges")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A line without a comma.
    #[error("expected offset,length")]
    MissingComma,
    /// An offset or length that is not an unsigned decimal `u64`.
    #[error("not a decimal number")]
    NotANumber,
    /// `offset + length` exceeds `u64::MAX`.
    #[error("range overflows")]
    Overflow,
}

/// The `ranges` argument for `ranges`, in the order given.
///
/// ```
/// assert_eq!(framegate_wire::ranges::encode_ranges(&[(0, 10), (100, 5)]), "0,10\n100,5");
/// ```
pub fn encode_ranges(ranges: &[(u64, u64)]) -> String {
    let mut out = String::with_capacity(ranges.len() * 12);
    for (i, (offset, length)) in ranges.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{offset},{length}");
    }
    out
}

/// Parses a `ranges` argument, accepting at most `max_ranges` ranges (see
/// [`MAX_READV_RANGES`]). Empty lines (e.g. a trailing `\n`) are skipped and
/// spaces around numbers are allowed; the ranges come back in the order given.
pub fn parse_ranges(raw: &[u8], max_ranges: usize) -> Result<Vec<(u64, u64)>, RangesError> {
    if !raw.is_ascii() {
        return Err(RangesError::NotAscii);
    }
    let text = std::str::from_utf8(raw).map_err(|_| RangesError::NotAscii)?;
    let mut ranges = Vec::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        if ranges.len() == max_ranges {
            return Err(RangesError::TooMany { max: max_ranges });
        }
        let (offset, length) = line.split_once(',').ok_or(RangesError::MissingComma)?;
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| RangesError::NotANumber);
        let (offset, length) = (number(offset)?, number(length)?);
        offset.checked_add(length).ok_or(RangesError::Overflow)?;
        ranges.push((offset, length));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(encode_ranges(&[]), "");
        assert_eq!(encode_ranges(&[(0, 0)]), "0,0");
        assert_eq!(
            encode_ranges(&[(5, 3), (0, 1), (u64::MAX, 0)]),
            "5,3\n0,1\n18446744073709551615,0"
        );
    }

    #[test]
    fn parses() {
        assert_eq!(parse_ranges(b"", 4), Ok(vec![]));
        assert_eq!(parse_ranges(b"5,3\n0,1", 4), Ok(vec![(5, 3), (0, 1)]));
        assert_eq!(parse_ranges(b"5,3\n\n0,1\n", 4), Ok(vec![(5, 3), (0, 1)]));
        assert_eq!(parse_ranges(b" 5 , 3\r\n", 4), Ok(vec![(5, 3)]));
        assert_eq!(
            parse_ranges(b"18446744073709551615,0", 4),
            Ok(vec![(u64::MAX, 0)])
        );
    }

    #[test]
    fn rejects() {
        let cases: [(&[u8], RangesError); 8] = [
            (b"5,3\xff", RangesError::NotAscii),
            ("5,3\u{e9}".as_bytes(), RangesError::NotAscii),
            (b"5", RangesError::MissingComma),
            (b"5,3\n7", RangesError::MissingComma),
            (b"-1,3", RangesError::NotANumber),
            (b"5,", RangesError::NotANumber),
            (b"18446744073709551616,0", RangesError::NotANumber),
            (b"18446744073709551615,1", RangesError::Overflow),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_ranges(raw, 4), Err(want), "{raw:?}");
        }
        assert_eq!(
            parse_ranges(b"0,1\n1,1\n2,1", 2),
            Err(RangesError::TooMany { max: 2 })
        );
        assert_eq!(parse_ranges(b"0,1\n1,1\n", 2).map(|r| r.len()), Ok(2));
        assert_eq!(
            RangesError::TooMany { max: 16_384 }.to_string(),
            "more than 16384 ranges"
        );
    }

    #[test]
    fn round_trips() {
        let ranges = [(0, 10), (1 << 40, 7), (3, 0)];
        assert_eq!(
            parse_ranges(encode_ranges(&ranges).as_bytes(), MAX_READV_RANGES),
            Ok(ranges.to_vec())
        );
    }

    proptest::proptest! {
        #[test]
        fn any_valid_ranges_round_trip(
            ranges in proptest::collection::vec((0u64..=u64::MAX / 2, 0u64..=u64::MAX / 2), 0..40)
        ) {
            let text = encode_ranges(&ranges);
            proptest::prop_assert_eq!(parse_ranges(text.as_bytes(), ranges.len()), Ok(ranges));
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(raw in proptest::collection::vec(0u8..=255, 0..200)) {
            if let Ok(ranges) = parse_ranges(&raw, 8) {
                proptest::prop_assert!(ranges.len() <= 8);
                proptest::prop_assert!(ranges.iter().all(|(o, l)| o.checked_add(*l).is_some()));
            }
        }
    }
}
