//! The two text formats of the protocol: the `ranges` argument of `readv`
//! and the byte-stream preamble lines.

use crate::preamble::{
    MAX_PREAMBLE_LEN, OK_LINE, PreambleError, PreambleRefused, client_line, error_line,
    parse_client_line, parse_server_line,
};
use crate::ranges::{MAX_READV_RANGES, RangesError, encode_ranges, parse_ranges};
use crate::stream::Encoding;

/// Parses arbitrary bytes as a `ranges` argument under several limits.
/// Whatever parses holds at most the limit, one range per non-empty line,
/// none overflowing, and re-encodes to text that parses to the same ranges;
/// the limit is exact (one range fewer allowed is `TooMany`); errors are
/// the ones the input calls for.
pub fn ranges(data: &[u8]) {
    let lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let line_count = lines.count();
    for max in [0, 1, 3, MAX_READV_RANGES, usize::MAX] {
        match parse_ranges(data, max) {
            Ok(ranges) => {
                assert!(data.is_ascii(), "only ASCII parses");
                assert!(
                    ranges.len() <= max,
                    "{} ranges over the limit {max}",
                    ranges.len()
                );
                assert_eq!(ranges.len(), line_count, "one range per non-empty line");
                for &(offset, length) in &ranges {
                    assert!(offset.checked_add(length).is_some(), "({offset}, {length})");
                }
                let text = encode_ranges(&ranges);
                assert!(text.is_ascii());
                assert_eq!(
                    parse_ranges(text.as_bytes(), ranges.len()).as_ref(),
                    Ok(&ranges),
                    "re-encoded as {text:?}"
                );
                assert_eq!(encode_ranges(&ranges), text, "encoding is stable");
                if let Some(fewer) = ranges.len().checked_sub(1) {
                    assert_eq!(
                        parse_ranges(data, fewer),
                        Err(RangesError::TooMany { max: fewer }),
                        "the limit is exact"
                    );
                }
            }
            Err(RangesError::NotAscii) => assert!(!data.is_ascii()),
            Err(RangesError::TooMany { max: said }) => {
                assert_eq!(said, max);
                assert!(line_count > max, "{line_count} lines refused under {max}");
            }
            Err(_) => assert!(data.is_ascii(), "non-ASCII input is refused as such"),
        }
    }
}

/// Parses arbitrary (lossily decoded) lines as either side's preamble line,
/// checks what is accepted, and round-trips the lines this crate builds.
pub fn preamble(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let line = line.as_ref();

    // The client's line, as a server reads it.
    let client = parse_client_line(line);
    match client {
        Ok(encoding) => {
            assert!(line.starts_with("framegate/1"), "{line:?}");
            assert!(Encoding::SUPPORTED.contains(&encoding));
            let ours = client_line(&[encoding]);
            assert_eq!(parse_client_line(&ours), Ok(encoding));
        }
        Err(err) => {
            // The refusal the server sends reads as a refusal of that code.
            assert_eq!(
                parse_server_line(&err.answer_line()),
                Err(PreambleRefused::Refused {
                    code: err.code().into()
                })
            );
            if err == PreambleError::UnsupportedVersion {
                assert!(line.starts_with("framegate/"));
            }
        }
    }
    // Line breaks at the end do not matter.
    assert_eq!(parse_client_line(&format!("{line}\n")), client);
    assert_eq!(parse_client_line(&format!("{line}\r\n")), client);

    // The server's answer, as a client reads it.
    let server = parse_server_line(line);
    match &server {
        Ok(()) => assert_eq!(line.trim_end(), OK_LINE.trim_end()),
        Err(PreambleRefused::Refused { code }) => {
            assert!(line.starts_with("framegate/"));
            assert!(!code.is_empty());
            assert_eq!(code.trim(), code);
        }
        Err(PreambleRefused::Unexpected { line: shown }) => assert_eq!(shown, line.trim_end()),
    }
    assert_eq!(parse_server_line(&format!("{line}\n")), server);

    // Lines this crate builds: an encoding list drawn from the input...
    let accepted: Vec<Encoding> = data
        .iter()
        .take(16)
        .map(|b| {
            if b % 2 == 0 {
                Encoding::Identity
            } else {
                Encoding::Zstd8Mb
            }
        })
        .collect();
    let ours = client_line(&accepted);
    assert!(ours.len() as u64 <= MAX_PREAMBLE_LEN);
    assert!(ours.ends_with('\n'));
    assert_eq!(
        parse_client_line(&ours),
        Ok(accepted.first().copied().unwrap_or(Encoding::Identity))
    );
    // ...and an error line with the input as its code.
    let refused = parse_server_line(&error_line(line));
    let code = line.trim();
    if code.is_empty() {
        assert!(matches!(refused, Err(PreambleRefused::Unexpected { .. })));
    } else {
        assert_eq!(refused, Err(PreambleRefused::Refused { code: code.into() }));
    }
}
