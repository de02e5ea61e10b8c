//! The byte-stream preamble (PROTOCOL.md §8): the one line each side sends
//! before frames flow on a TCP connection or an SSH child's stdio.
//!
//! ```text
//!   client → server   framegate/1 accept-encoding=zstd-8mb,identity\n
//!   server → client   framegate/1 ok\n
//!                     framegate/1 error <code>\n   (and the server closes)
//! ```
//!
//! This module builds and parses those lines; reading them from a socket
//! (bounded by [`MAX_PREAMBLE_LEN`], under a deadline) is the driver's job.

use std::fmt::Write as _;

use crate::stream::Encoding;

/// Default TCP port of `framegate://` URLs (§8).
pub const DEFAULT_TCP_PORT: u16 = 4159;

/// Longest preamble line a server reads, newline included. A driver reads at
/// most this many bytes (e.g. `take(MAX_PREAMBLE_LEN)`) before parsing.
pub const MAX_PREAMBLE_LEN: u64 = 1024;

/// The server's answer accepting a session, newline included.
pub const OK_LINE: &str = "framegate/1 ok\n";

/// What every preamble line starts with.
const MAGIC: &str = "framegate/";

/// The protocol version as it is spelled in preamble lines.
const VERSION: &str = "1";

/// The key of the client's encoding list.
const ACCEPT_ENCODING_KEY: &str = "accept-encoding=";

/// Why a server refuses a client's preamble line. The wire code, sent back
/// in `framegate/1 error <code>\n`, is [`PreambleError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleError {
    /// The line does not start with `framegate/`.
    #[error("the first line is not a framegate preamble")]
    UnsupportedProtocol,
    /// A framegate line of a protocol version other than 1.
    #[error("unsupported framegate protocol version")]
    UnsupportedVersion,
}

impl PreambleError {
    /// The code sent on the wire.
    pub const fn code(self) -> &'static str {
        match self {
            PreambleError::UnsupportedProtocol => "unsupported-protocol",
            PreambleError::UnsupportedVersion => "unsupported-version",
        }
    }

    /// The server's answer line for this refusal, newline included.
    pub fn answer_line(self) -> String {
        error_line(self.code())
    }
}

/// Why a client does not get a session from the server's answer line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleRefused {
    /// `framegate/<version> error <code>`: the server refused. The code is
    /// kept as sent, known or not.
    #[error("the server refused the session: {code}")]
    Refused {
        /// The code after `error`.
        code: String,
    },
    /// Anything that is neither an `ok` nor an `error` answer.
    #[error("not a framegate preamble answer: {line:?}")]
    Unexpected {
        /// The line, without its line break.
        line: String,
    },
}

/// The client's preamble line for the encodings it accepts, most preferred
/// first, newline included. An empty list leaves `accept-encoding` out (the
/// server then picks identity).
///
/// ```
/// use framegate_wire::{Encoding, preamble};
/// assert_eq!(
///     preamble::client_line(&[Encoding::Zstd8Mb, Encoding::Identity]),
///     "framegate/1 accept-encoding=zstd-8mb,identity\n",
/// );
/// ```
pub fn client_line(accepted: &[Encoding]) -> String {
    let mut line = format!("{MAGIC}{VERSION}");
    for (i, encoding) in accepted.iter().enumerate() {
        let sep = if i == 0 { " accept-encoding=" } else { "," };
        // Writing to a String cannot fail.
        let _ = write!(line, "{sep}{encoding}");
    }
    line.push('\n');
    line
}

/// Parses the client's preamble line (with or without its line break) into
/// the negotiated encoding: the first one of `accept-encoding` this crate
/// supports, else identity. Unknown `key=value` pairs are ignored.
pub fn parse_client_line(line: &str) -> Result<Encoding, PreambleError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let rest = line
        .strip_prefix(MAGIC)
        .ok_or(PreambleError::UnsupportedProtocol)?;
    let mut parts = rest.split(' ');
    if parts.next() != Some(VERSION) {
        return Err(PreambleError::UnsupportedVersion);
    }
    let mut encoding = Encoding::Identity;
    for pair in parts.filter(|p| !p.is_empty()) {
        if let Some(list) = pair.strip_prefix(ACCEPT_ENCODING_KEY) {
            encoding = Encoding::negotiate(list);
        }
    }
    Ok(encoding)
}

/// The server's answer refusing a session with `code`, newline included.
pub fn error_line(code: &str) -> String {
    format!("{MAGIC}{VERSION} error {code}\n")
}

/// Parses the server's answer line (with or without its line break): `Ok`
/// for `framegate/1 ok`. An error line of any version is a refusal.
pub fn parse_server_line(line: &str) -> Result<(), PreambleRefused> {
    let line = line.trim_end();
    if Some(line) == OK_LINE.strip_suffix('\n') {
        return Ok(());
    }
    let refused = line
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.split_once(' '))
        .and_then(|(_version, rest)| rest.strip_prefix("error "))
        .map(str::trim)
        .filter(|code| !code.is_empty());
    match refused {
        Some(code) => Err(PreambleRefused::Refused { code: code.into() }),
        None => Err(PreambleRefused::Unexpected { line: line.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    #[test]
    fn version_matches_the_crate() {
        assert_eq!(VERSION, PROTOCOL_VERSION.to_string());
    }

    #[test]
    fn client_lines() {
        assert_eq!(
            client_line(&[Encoding::Zstd8Mb, Encoding::Identity]),
            "framegate/1 accept-encoding=zstd-8mb,identity\n"
        );
        assert_eq!(
            client_line(&[Encoding::Identity, Encoding::Identity]),
            "framegate/1 accept-encoding=identity,identity\n"
        );
        assert_eq!(client_line(&[]), "framegate/1\n");
    }

    #[test]
    fn parses_client_lines() {
        let cases = [
            (
                "framegate/1 accept-encoding=zstd-8mb,identity\n",
                Encoding::Zstd8Mb,
            ),
            (
                "framegate/1 accept-encoding=zstd-8mb,identity\r\n",
                Encoding::Zstd8Mb,
            ),
            (
                "framegate/1 accept-encoding=identity,zstd-8mb",
                Encoding::Identity,
            ),
            (
                "framegate/1 accept-encoding=brotli,zstd-8mb\n",
                Encoding::Zstd8Mb,
            ),
            ("framegate/1 accept-encoding=brotli\n", Encoding::Identity),
            ("framegate/1\n", Encoding::Identity),
            (
                "framegate/1  token=x  accept-encoding=zstd-8mb \n",
                Encoding::Zstd8Mb,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_client_line(line), Ok(want), "{line:?}");
        }
    }

    #[test]
    fn refuses_other_protocols_and_versions() {
        let cases = [
            ("GET / HTTP/1.1\r\n", PreambleError::UnsupportedProtocol),
            ("\n", PreambleError::UnsupportedProtocol),
            ("FRAMEGATE/1\n", PreambleError::UnsupportedProtocol),
            (
                "framegate/2 accept-encoding=identity\n",
                PreambleError::UnsupportedVersion,
            ),
            ("framegate/\n", PreambleError::UnsupportedVersion),
            ("framegate/10\n", PreambleError::UnsupportedVersion),
        ];
        for (line, want) in cases {
            assert_eq!(parse_client_line(line), Err(want), "{line:?}");
        }
        assert_eq!(
            PreambleError::UnsupportedProtocol.answer_line(),
            "framegate/1 error unsupported-protocol\n"
        );
        assert_eq!(
            PreambleError::UnsupportedVersion.answer_line(),
            "framegate/1 error unsupported-version\n"
        );
    }

    #[test]
    fn parses_server_lines() {
        assert_eq!(parse_server_line(OK_LINE), Ok(()));
        assert_eq!(parse_server_line("framegate/1 ok\r\n"), Ok(()));
        assert_eq!(parse_server_line("framegate/1 ok"), Ok(()));
        assert_eq!(
            parse_server_line("framegate/1 error unsupported-version\n"),
            Err(PreambleRefused::Refused {
                code: "unsupported-version".into()
            })
        );
        assert_eq!(
            parse_server_line(&error_line("busy")),
            Err(PreambleRefused::Refused {
                code: "busy".into()
            })
        );
        for line in [
            "HTTP/1.1 400 Bad Request\r\n",
            "framegate/1 error \n",
            "",
            "framegate/1",
        ] {
            assert_eq!(
                parse_server_line(line),
                Err(PreambleRefused::Unexpected {
                    line: line.trim_end().into()
                }),
                "{line:?}"
            );
        }
    }

    #[test]
    fn lines_fit_the_limit() {
        let line = client_line(Encoding::SUPPORTED);
        assert!(line.len() as u64 <= MAX_PREAMBLE_LEN);
        assert_eq!(parse_client_line(&line), Ok(Encoding::SUPPORTED[0]));
    }
}
