//! The `digest` command's answer (an extension of ours; see
//! docs/protocol.md): a file's cryptographic digest, with the version and
//! size it covers.

use serde::{Deserialize, Serialize};

/// What `digest {path, [if-match]}` answers, CBOR-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestAnswer {
    /// `sha256`.
    pub algorithm: String,
    /// The digest, lower-case hex.
    pub digest: String,
    /// Bytes hashed (the file's size).
    pub size: u64,
    /// The version hashed (as `stat` names it).
    pub etag: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_cbor() {
        let d = DigestAnswer {
            algorithm: "sha256".into(),
            digest: "ab".repeat(32),
            size: 3,
            etag: "1-2-3".into(),
        };
        let bytes = crate::payload::encode_cbor(&d);
        let back: DigestAnswer = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back, d);
    }
}
