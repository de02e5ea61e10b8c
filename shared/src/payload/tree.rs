//! The `tree` command's answer (an extension of ours; see
//! docs/protocol.md): every entry below a directory — files, directories,
//! symbolic links — with what a mirror needs to recreate it.

use serde::{Deserialize, Serialize};

use super::FileKind;

/// One entry of a `tree {path}` answer (a CBOR array of these, sorted
/// bytewise by `path`).
///
/// Fields in canonical order (keys by length, then bytewise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// `file`, `dir`, `symlink` (not followed) or `other`.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Relative to the listed directory, `/`-separated.
    pub path: String,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Last modification, Unix seconds.
    pub mtime: f64,
    /// A symlink's target, only when it is relative and stays inside the
    /// served tree (an absolute or escaping target is never revealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_unknown_kinds() {
        let e = TreeEntry {
            kind: FileKind::Unknown("door".into()),
            mode: 0o755,
            path: "a/b".into(),
            size: 3,
            mtime: 1.5,
            target: Some("../c".into()),
        };
        let bytes = crate::payload::encode_cbor(&e);
        let back: TreeEntry = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back, e);
        let plain = TreeEntry { target: None, ..e };
        let bytes = crate::payload::encode_cbor(&plain);
        let back: TreeEntry = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back.target, None);
    }
}
