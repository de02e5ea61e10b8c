use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::cbor::{decode_cbor, encode_cbor};
use crate::error::PayloadError;

/// What a directory entry is, as `stat` reports it (§9.2).
///
/// An open set: a kind this crate does not know (sent by a newer server) is
/// kept as [`FileKind::Unknown`], never a decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// `"file"`: a regular file.
    File,
    /// `"dir"`: a directory.
    Dir,
    /// `"symlink"`: a symbolic link (not followed).
    Symlink,
    /// `"other"`: anything else the server knows (device, socket, FIFO, …).
    Other,
    /// A kind not defined by PROTOCOL.md, kept as sent.
    Unknown(String),
}

impl FileKind {
    /// The kind for its wire name; an unknown name becomes [`FileKind::Unknown`].
    pub fn from_name(name: &str) -> FileKind {
        match name {
            "file" => FileKind::File,
            "dir" => FileKind::Dir,
            "symlink" => FileKind::Symlink,
            "other" => FileKind::Other,
            unknown => FileKind::Unknown(unknown.to_owned()),
        }
    }

    /// The kind's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
            FileKind::Unknown(name) => name,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FileKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FileKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| FileKind::from_name(&name))
    }
}

/// The answer of `stat` (§9.2): a CBOR map `{"kind", "mode", "size",
/// "mtime"}`, plus `"etag"` for regular files (our extension, see the
/// project's `docs/protocol.md`).
///
/// Fields are declared in the order they are encoded (canonical: keys by
/// length, then bytewise: `etag`, `kind`, `mode`, `size`, then the longer
/// `mtime`); unknown keys are ignored when decoding, so a newer server may
/// add some, and an answer without `etag` (an older server) decodes with
/// `etag: None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatAnswer {
    /// The file's version as a validator (a regular file's only): the same
    /// text `get`/`readv` accept as `if-match`, and the plain HTTP `ETag`
    /// without its quotes. Changes whenever the file is replaced or
    /// rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// What the entry is.
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: f64,
}

impl StatAnswer {
    /// CBOR bytes.
    pub fn encode(&self) -> Bytes {
        encode_cbor(self)
    }

    /// From CBOR bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        decode_cbor("stat", bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the server encoded before this type existed; its bytes must
    /// not change.
    #[derive(Serialize)]
    struct LegacyServerStat {
        kind: &'static str,
        mode: u32,
        size: u64,
        mtime: f64,
    }

    #[test]
    fn encoding_is_pinned() {
        let stat = StatAnswer {
            etag: None,
            kind: FileKind::File,
            mode: 0o644,
            size: 5,
            mtime: 1.5,
        };
        let wire: &[u8] = &[
            0xa4, // map(4)
            0x64, b'k', b'i', b'n', b'd', 0x64, b'f', b'i', b'l', b'e', // "kind": "file"
            0x64, b'm', b'o', b'd', b'e', 0x19, 0x01, 0xa4, // "mode": 420
            0x64, b's', b'i', b'z', b'e', 0x05, // "size": 5
            0x65, b'm', b't', b'i', b'm', b'e', 0xf9, 0x3e, 0x00, // "mtime": 1.5 (half)
        ];
        assert_eq!(&stat.encode()[..], wire);
        assert_eq!(StatAnswer::decode(wire), Ok(stat));
    }

    #[test]
    fn matches_the_legacy_server_encoding() {
        let cases = [
            ("file", FileKind::File, 0o644, 5, 1.5),
            ("dir", FileKind::Dir, 0o755, 4096, 0.0),
            (
                "symlink",
                FileKind::Symlink,
                0o777,
                11,
                1_700_000_000.123_456,
            ),
            ("other", FileKind::Other, 0o7777, u64::MAX, 1e300),
        ];
        for (name, kind, mode, size, mtime) in cases {
            let legacy = encode_cbor(&LegacyServerStat {
                kind: name,
                mode,
                size,
                mtime,
            });
            let ours = StatAnswer {
                etag: None,
                kind,
                mode,
                size,
                mtime,
            };
            assert_eq!(ours.encode(), legacy, "{name}");
            assert_eq!(StatAnswer::decode(&legacy), Ok(ours));
        }
    }

    #[test]
    fn etag_is_the_first_key() {
        let stat = StatAnswer {
            etag: Some("1a-5-c8".into()),
            kind: FileKind::File,
            mode: 0o644,
            size: 5,
            mtime: 1.5,
        };
        let wire: &[u8] = &[
            0xa5, // map(5)
            0x64, b'e', b't', b'a', b'g', 0x67, b'1', b'a', b'-', b'5', b'-', b'c',
            b'8', // "etag": "1a-5-c8"
            0x64, b'k', b'i', b'n', b'd', 0x64, b'f', b'i', b'l', b'e', // "kind": "file"
            0x64, b'm', b'o', b'd', b'e', 0x19, 0x01, 0xa4, // "mode": 420
            0x64, b's', b'i', b'z', b'e', 0x05, // "size": 5
            0x65, b'm', b't', b'i', b'm', b'e', 0xf9, 0x3e, 0x00, // "mtime": 1.5 (half)
        ];
        assert_eq!(&stat.encode()[..], wire);
        assert_eq!(StatAnswer::decode(wire), Ok(stat));
        // Without the key (an older server, a directory): no etag.
        let mut old = wire.to_vec();
        old.drain(1..14);
        old[0] = 0xa4;
        let decoded = StatAnswer::decode(&old).unwrap();
        assert_eq!(decoded.etag, None);
        assert_eq!(decoded.size, 5);
    }

    #[test]
    fn full_precision_mtime() {
        // 1700000000.25 needs a double: 0xfb, then its 8 bytes.
        let stat = StatAnswer {
            etag: None,
            kind: FileKind::Dir,
            mode: 0o755,
            size: 0,
            mtime: 1_700_000_000.25,
        };
        let bytes = stat.encode();
        let tail: &[u8] = &[
            0x65, b'm', b't', b'i', b'm', b'e', 0xfb, 0x41, 0xd9, 0x54, 0xfc, 0x40, 0x10, 0x00,
            0x00,
        ];
        assert!(bytes.ends_with(tail), "{bytes:02x?}");
        assert_eq!(StatAnswer::decode(&bytes), Ok(stat));
    }

    #[test]
    fn unknown_kinds_and_keys_decode() {
        // {"kind": "door", "mode": 0, "size": 0, "mtime": 0.0, "owner": "x"},
        // keys in another order.
        let wire: &[u8] = &[
            0xa5, 0x65, b'm', b't', b'i', b'm', b'e', 0xf9, 0x00, 0x00, 0x64, b's', b'i', b'z',
            b'e', 0x00, 0x64, b'm', b'o', b'd', b'e', 0x00, 0x64, b'k', b'i', b'n', b'd', 0x64,
            b'd', b'o', b'o', b'r', 0x65, b'o', b'w', b'n', b'e', b'r', 0x61, b'x',
        ];
        let stat = StatAnswer::decode(wire).unwrap();
        assert_eq!(stat.kind, FileKind::Unknown("door".into()));
        assert_eq!(stat.kind.as_str(), "door");
        assert_eq!((stat.mode, stat.size, stat.mtime), (0, 0, 0.0));
        // It survives a round trip as sent.
        assert_eq!(StatAnswer::decode(&stat.encode()), Ok(stat));
    }

    #[test]
    fn kind_names() {
        for kind in [
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Other,
        ] {
            assert_eq!(FileKind::from_name(kind.as_str()), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(StatAnswer::decode(b"").is_err());
        // {"kind": "file"} without the other fields.
        assert!(
            StatAnswer::decode(&[
                0xa1, 0x64, b'k', b'i', b'n', b'd', 0x64, b'f', b'i', b'l', b'e'
            ])
            .is_err()
        );
        // kind is not text.
        assert!(
            StatAnswer::decode(&[
                0xa4, 0x64, b'k', b'i', b'n', b'd', 0x01, 0x64, b'm', b'o', b'd', b'e', 0x00, 0x64,
                b's', b'i', b'z', b'e', 0x00, 0x65, b'm', b't', b'i', b'm', b'e', 0xf9, 0x00, 0x00
            ])
            .is_err()
        );
    }
}
