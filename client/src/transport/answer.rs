//! A batch's answers: a framegate server's bytes (raw, or CBOR to decode)
//! or a plain server's values as they are, and the typed decoders
//! [`Slot`](super::Slot)s use.

use bytes::Bytes;
use framegate_wire::{DigestAnswer, ErrorCode, StatAnswer, TreeEntry};

use super::ops::Op;
use crate::error::{Error, Misbehavior, Result};

/// One command's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// As a framegate server sent it (file bytes, or a CBOR payload); a
    /// plain `get` is bytes too.
    Wire(Bytes),
    /// A plain server's answer, already a value.
    Plain(PlainAnswer),
}

/// What plain HTTP answers beyond bytes.
#[derive(Debug)]
pub(crate) enum PlainAnswer {
    Bool(bool),
    Stat(StatAnswer),
    Names(Vec<String>),
    /// A `readv`'s ranges, one piece each.
    Parts(Vec<Bytes>),
}

fn cbor<T: serde::de::DeserializeOwned>(op: &Op, bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| {
        Error::Misbehaved(Misbehavior::Malformed {
            what: format!("the {} answer", op.name()),
            reason: e.to_string(),
        })
    })
}

fn mismatch(op: &Op) -> Error {
    Error::Usage(format!("the slot does not fit the {} answer", op.name()))
}

pub(crate) fn decode_bytes(op: &Op, a: Answer) -> Result<Bytes> {
    match a {
        Answer::Wire(b) => Ok(b),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_unit(op: &Op, a: Answer) -> Result<()> {
    match a {
        Answer::Wire(b) => cbor::<Option<()>>(op, &b).map(drop),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_bool(op: &Op, a: Answer) -> Result<bool> {
    match a {
        Answer::Wire(b) => cbor(op, &b),
        Answer::Plain(PlainAnswer::Bool(v)) => Ok(v),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_u64(op: &Op, a: Answer) -> Result<u64> {
    match a {
        Answer::Wire(b) => cbor(op, &b),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_stat(op: &Op, a: Answer) -> Result<StatAnswer> {
    match a {
        Answer::Wire(b) => cbor(op, &b),
        Answer::Plain(PlainAnswer::Stat(v)) => Ok(v),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_digest(op: &Op, a: Answer) -> Result<DigestAnswer> {
    match a {
        Answer::Wire(b) => cbor(op, &b),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_tree(op: &Op, a: Answer) -> Result<Vec<TreeEntry>> {
    match a {
        Answer::Wire(b) => cbor(op, &b),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

pub(crate) fn decode_names(op: &Op, a: Answer) -> Result<Vec<String>> {
    match a {
        Answer::Wire(b) => cbor(op, &b),
        Answer::Plain(PlainAnswer::Names(v)) => Ok(v),
        Answer::Plain(_) => Err(mismatch(op)),
    }
}

/// A `readv` answer cut into its ranges (a framegate server sends them
/// back to back).
pub(crate) fn decode_ranges(op: &Op, a: Answer) -> Result<Vec<Bytes>> {
    let Op::Readv(_, ranges) = op else {
        return Err(mismatch(op));
    };
    let b = match a {
        Answer::Plain(PlainAnswer::Parts(parts)) => return Ok(parts),
        Answer::Plain(_) => return Err(mismatch(op)),
        Answer::Wire(b) => b,
    };
    let mut at = 0usize;
    let mut out = Vec::with_capacity(ranges.len());
    for (_, len) in ranges {
        let end = usize::try_from(*len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&end| end <= b.len())
            .ok_or_else(|| {
                Error::remote(
                    ErrorCode::SHORT_READ,
                    "the readv answer is shorter than the ranges asked for",
                )
            })?;
        out.push(b.slice(at..end));
        at = end;
    }
    Ok(out)
}
