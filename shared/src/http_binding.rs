//! Names of the HTTP binding (PROTOCOL.md §7) that servers and clients both
//! spell: the endpoints below a base URL and framegate's own request header.
//! The media type is [`crate::MEDIA_TYPE`]. No HTTP types here: drivers turn
//! these strings into their library's header names and URLs.

use crate::stream::Encoding;

/// The request header listing the encodings a client accepts (§5, §7.2),
/// lowercase as HTTP/2 sends it (HTTP/1 header names are case-insensitive).
pub const ACCEPT_ENCODING_HEADER: &str = "framegate-accept-encoding";

/// Response header naming why a framegate endpoint refused a POST (§7.3's
/// short `text/plain` answers; our addition): its presence says the
/// refusal comes from a framegate server — a plain server's 404 or 405 has
/// none — and [`REFUSAL_NO_SUCH_DIRECTORY`] tells a missing base apart
/// from any other 404. Values: `no-such-directory`, `not-an-endpoint`,
/// `method`, `content-type`, `accept`, `read-only`, `unauthorized`,
/// `too-large`, `unavailable`.
pub const REFUSAL_HEADER: &str = "framegate-refusal";

/// [`REFUSAL_HEADER`]'s value when the server takes no writes (a 403 on
/// `rw`): a client reports it as the `read-only` error code, as over a
/// byte stream.
pub const REFUSAL_READ_ONLY: &str = "read-only";

/// [`REFUSAL_HEADER`]'s value when the base directory does not exist.
pub const REFUSAL_NO_SUCH_DIRECTORY: &str = "no-such-directory";

/// The value of [`ACCEPT_ENCODING_HEADER`] for the encodings a client
/// accepts, most preferred first.
///
/// ```
/// use framegate_wire::{Encoding, http_binding::accept_encoding_value};
/// assert_eq!(accept_encoding_value(&[Encoding::Zstd8Mb, Encoding::Identity]), "zstd-8mb, identity");
/// ```
pub fn accept_encoding_value(accepted: &[Encoding]) -> String {
    accepted
        .iter()
        .map(|e| e.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One of the two framegate endpoints below a base URL `B` (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST B/.framegate/ro`: read-only commands.
    ReadOnly,
    /// `POST B/.framegate/rw`: all commands, when writes are allowed and
    /// the request is authorized.
    ReadWrite,
}

impl Endpoint {
    /// The endpoint for a message that does (`true`) or does not write.
    pub const fn for_writes(writable: bool) -> Endpoint {
        if writable {
            Endpoint::ReadWrite
        } else {
            Endpoint::ReadOnly
        }
    }

    /// Whether write commands are accepted here.
    pub const fn allows_writes(self) -> bool {
        matches!(self, Endpoint::ReadWrite)
    }

    /// `"ro"` or `"rw"`, the last path segment.
    pub const fn name(self) -> &'static str {
        match self {
            Endpoint::ReadOnly => "ro",
            Endpoint::ReadWrite => "rw",
        }
    }

    /// The path relative to the base directory URL (which ends in `/`):
    /// `.framegate/ro` or `.framegate/rw`.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::ReadOnly => ".framegate/ro",
            Endpoint::ReadWrite => ".framegate/rw",
        }
    }

    /// Splits a URL path ending in `/.framegate/ro` or `/.framegate/rw`
    /// into the base (without its trailing `/`, so `""` for the root) and
    /// the endpoint. The path is not percent-decoded here.
    ///
    /// ```
    /// use framegate_wire::http_binding::Endpoint;
    /// assert_eq!(Endpoint::split("/a/b/.framegate/rw"), Some(("/a/b", Endpoint::ReadWrite)));
    /// assert_eq!(Endpoint::split("/a/b/"), None);
    /// ```
    pub fn split(url_path: &str) -> Option<(&str, Endpoint)> {
        [Endpoint::ReadOnly, Endpoint::ReadWrite]
            .into_iter()
            .find_map(|endpoint| {
                let base = url_path.strip_suffix(endpoint.path())?.strip_suffix('/')?;
                Some((base, endpoint))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert_eq!(
            accept_encoding_value(&[Encoding::Zstd8Mb, Encoding::Identity]),
            "zstd-8mb, identity"
        );
        assert_eq!(accept_encoding_value(&[Encoding::Identity]), "identity");
        assert_eq!(accept_encoding_value(&[]), "");
        // What a server makes of it.
        assert_eq!(
            Encoding::negotiate(&accept_encoding_value(Encoding::SUPPORTED)),
            Encoding::Zstd8Mb
        );
        assert!(
            ACCEPT_ENCODING_HEADER
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-')
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::for_writes(false), Endpoint::ReadOnly);
        assert_eq!(Endpoint::for_writes(true), Endpoint::ReadWrite);
        assert!(Endpoint::ReadWrite.allows_writes());
        assert!(!Endpoint::ReadOnly.allows_writes());
        for (e, name, path) in [
            (Endpoint::ReadOnly, "ro", ".framegate/ro"),
            (Endpoint::ReadWrite, "rw", ".framegate/rw"),
        ] {
            assert_eq!(e.name(), name);
            assert_eq!(e.path(), path);
            assert!(e.path().ends_with(e.name()));
        }
    }

    #[test]
    fn splits_url_paths() {
        let cases = [
            ("/.framegate/ro", Some(("", Endpoint::ReadOnly))),
            ("/a/b/.framegate/ro", Some(("/a/b", Endpoint::ReadOnly))),
            ("/a/.framegate/rw", Some(("/a", Endpoint::ReadWrite))),
            ("//.framegate/rw", Some(("/", Endpoint::ReadWrite))),
            (".framegate/ro", None),
            ("/a.framegate/ro", None),
            ("/.framegate/ro/", None),
            ("/.framegate/healthz", None),
            ("/a/b", None),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::split(path), want, "{path:?}");
        }
    }
}
