//! Structured payloads: CBOR maps (error, progress, the answers of `hello`
//! and `stat`) and text-output atoms. CBOR is written and read with
//! `ciborium`; map fields are declared in canonical order (RFC 8949 §4.2.1:
//! shorter keys first) so encodings match the conformance vectors byte for
//! byte.

mod cbor;
mod digest;
mod stat;
mod text;
mod tree;

pub use cbor::{ErrorPayload, HelloPayload, ProgressPayload, decode_cbor, encode_cbor};
pub use digest::DigestAnswer;
pub use stat::{FileKind, StatAnswer};
pub use text::{TextAtom, decode_atoms, encode_atoms};
pub use tree::TreeEntry;
