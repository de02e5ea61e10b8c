use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{ErrorCode, PayloadError};

/// Encodes a value as CBOR.
pub fn encode_cbor<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, and our payload types always serialize.
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    Bytes::from(out)
}

/// Decodes a CBOR value. Input is bounded by the caller (a frame, or an
/// answer with a size limit); ciborium limits nesting depth itself.
pub fn decode_cbor<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, PayloadError> {
    ciborium::from_reader(bytes).map_err(|e| PayloadError::new(what, e.to_string()))
}

/// The payload of an `error-response` frame (§4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// A §10 code (or an unknown one, kept as is).
    pub code: ErrorCode,
    /// Optional structured detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ciborium::Value>,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorPayload {
    /// An error without detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorPayload {
            code,
            detail: None,
            message: message.into(),
        }
    }

    /// CBOR bytes.
    pub fn encode(&self) -> Bytes {
        encode_cbor(self)
    }

    /// From CBOR bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        decode_cbor("error-response", bytes)
    }
}

impl From<crate::error::ProtocolError> for ErrorPayload {
    fn from(err: crate::error::ProtocolError) -> Self {
        ErrorPayload::new(err.code, err.message)
    }
}

/// The payload of a `progress` frame (§4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressPayload {
    /// Position; `-1` ends the topic.
    pub pos: i64,
    /// What is being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The unit (e.g. `bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What the progress is about.
    pub topic: String,
    /// The end position.
    pub total: u64,
}

impl ProgressPayload {
    /// CBOR bytes.
    pub fn encode(&self) -> Bytes {
        encode_cbor(self)
    }

    /// From CBOR bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        decode_cbor("progress", bytes)
    }
}

/// The answer of `hello` (§9.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloPayload {
    /// `"<name>/<version>"`.
    pub server: String,
    /// Commands the server runs.
    pub commands: Vec<String>,
    /// Protocol version: 1.
    pub protocol: u64,
    /// Whether writes are accepted on this endpoint or connection.
    pub writable: bool,
    /// Content-encoding profiles the server accepts.
    pub encodings: Vec<String>,
    /// The server's maximum frame size.
    #[serde(rename = "max-frame-size")]
    pub max_frame_size: u64,
}

impl HelloPayload {
    /// CBOR bytes.
    pub fn encode(&self) -> Bytes {
        encode_cbor(self)
    }

    /// From CBOR bytes. Unknown keys are ignored (a newer server may add some).
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        decode_cbor("hello", bytes)
    }

    /// Whether the server lists `command`.
    pub fn has_command(&self, command: &str) -> bool {
        self.commands.iter().any(|c| c == command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_survive() {
        let e = ErrorPayload::new(ErrorCode::new("from-the-future"), "x");
        let back = ErrorPayload::decode(&e.encode()).unwrap();
        assert_eq!(back.code.as_str(), "from-the-future");
        assert!(!back.code.is_known());
        assert_eq!(ErrorCode::new("no-such-file"), ErrorCode::NO_SUCH_FILE);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ErrorPayload::decode(&[0xff, 0x00]).is_err());
        assert!(HelloPayload::decode(b"").is_err());
        // An array header claiming 2^32 elements in a few bytes must not allocate.
        assert!(
            HelloPayload::decode(&[
                0xa1, 0x68, b'c', b'o', b'm', b'm', b'a', b'n', b'd', b's', 0x9a, 0xff, 0xff, 0xff,
                0xff
            ])
            .is_err()
        );
    }
}
