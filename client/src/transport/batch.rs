//! Batches: many commands, one round trip, typed slots for the answers.

use std::marker::PhantomData;

use bytes::Bytes;
use framegate_wire::{Arguments, DigestAnswer, ErrorCode, StatAnswer, TreeEntry};

use super::answer::{
    Answer, PlainAnswer, decode_bool, decode_bytes, decode_digest, decode_names, decode_ranges,
    decode_stat, decode_tree, decode_u64, decode_unit,
};
use super::backend::{Backend, Streamed};
use super::ops::Op;
use super::{MAX_REQUESTS_PER_MESSAGE, Transport, path_args};
use crate::error::{Error, Result};
use crate::ranges::RangeCollector;
use crate::smart::{self, Request};

/// A typed handle on one result of a batch.
#[derive(Debug)]
pub struct Slot<T> {
    index: usize,
    decode: fn(&Op, Answer) -> Result<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Slot<T> {}

/// Commands collected for one message (or a few, past 4,096).
#[derive(Debug)]
pub struct Batch<'t> {
    transport: &'t Transport,
    ops: Vec<Op>,
}

impl<'t> Batch<'t> {
    /// An empty batch on `transport`.
    pub(super) fn new(transport: &'t Transport) -> Self {
        Batch {
            transport,
            ops: Vec::new(),
        }
    }
}

macro_rules! batch_op {
    ($(#[$doc:meta])* $fn:ident($($arg:ident: $ty:ty),*) -> $t:ty = $decode:ident, $op:expr) => {
        $(#[$doc])*
        pub fn $fn(&mut self, $($arg: $ty),*) -> Slot<$t> {
            self.push($op, $decode)
        }
    };
}

impl<'t> Batch<'t> {
    fn push<T>(&mut self, op: Op, decode: fn(&Op, Answer) -> Result<T>) -> Slot<T> {
        self.ops.push(op);
        Slot {
            index: self.ops.len() - 1,
            decode,
            _t: PhantomData,
        }
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    batch_op!(/// `get`.
        get(path: &str) -> Bytes = decode_bytes, Op::Get(path.into()));
    batch_op!(/// `readv`.
        readv(path: &str, ranges: &[(u64, u64)]) -> Vec<Bytes> = decode_ranges, Op::Readv(path.into(), ranges.to_vec()));
    batch_op!(/// `has`.
        has(path: &str) -> bool = decode_bool, Op::Has(path.into()));
    batch_op!(/// `stat`.
        stat(path: &str) -> StatAnswer = decode_stat, Op::Stat(path.into()));
    batch_op!(/// `digest`: the file's SHA-256, with the version and size it covers
        /// (framegate servers only; plain HTTP has none).
        digest(path: &str) -> DigestAnswer = decode_digest, Op::Digest(path.into()));
    batch_op!(/// `list_dir`.
        list_dir(path: &str) -> Vec<String> = decode_names, Op::ListDir(path.into()));
    batch_op!(/// `iter_files_recursive`.
        iter_files_recursive(path: &str) -> Vec<String> = decode_names, Op::Iter(path.into()));
    batch_op!(/// `tree`: every entry below a directory, links not followed
        /// (framegate servers that offer it; see [`Transport::supports`]).
        tree(path: &str) -> Vec<TreeEntry> = decode_tree, Op::Tree(path.into()));
    batch_op!(/// `put`.
        put(path: &str, data: Bytes, mode: Option<u32>) -> () = decode_unit, Op::Put(path.into(), data, mode));
    batch_op!(/// `append`: the size before.
        append(path: &str, data: Bytes) -> u64 = decode_u64, Op::Append(path.into(), data));
    batch_op!(/// `mkdir`.
        mkdir(path: &str, mode: Option<u32>) -> () = decode_unit, Op::Mkdir(path.into(), mode));
    batch_op!(/// `rename`.
        rename(from: &str, to: &str) -> () = decode_unit, Op::Rename(from.into(), to.into()));
    batch_op!(/// `delete`.
        delete(path: &str) -> () = decode_unit, Op::Delete(path.into()));
    batch_op!(/// `rmdir`.
        rmdir(path: &str) -> () = decode_unit, Op::Rmdir(path.into()));
    batch_op!(/// An application command; `write` picks the `rw` endpoint.
        call(name: &str, args: Arguments, data: Option<Bytes>, write: bool) -> Bytes = decode_bytes,
        Op::Call { name: name.into(), args, data, write });

    /// Sends everything: one message per 4,096 commands against a framegate
    /// server (reads retried once if the connection drops), or plain HTTP
    /// requests otherwise.
    pub async fn send(self) -> Result<BatchResults> {
        let t = self.transport;
        let mut results: Vec<Option<Result<Answer>>> = self.ops.iter().map(|_| None).collect();
        // A server not known yet: reads go with `hello` in the first
        // message (one round trip); writes wait for a probe.
        let mut first = 0;
        if t.backend.get().is_none() && !self.ops.is_empty() && !self.ops.iter().any(Op::is_write) {
            let n = self.ops.len().min(MAX_REQUESTS_PER_MESSAGE - 1);
            let mut requests: Vec<Request<'static>> =
                self.ops.iter().take(n).map(|op| op.request("")).collect();
            if let Some((hello, answers)) =
                smart::run_cold(t.medium()?, &mut requests, &t.hooks).await?
            {
                t.settle(Some(hello))?;
                // Answered where the server runs the command; the rest
                // (unknown-command) go the usual way below.
                for (i, answer) in answers.into_iter().enumerate() {
                    let unknown = answer
                        .as_ref()
                        .err()
                        .is_some_and(|e| e.is(&ErrorCode::UNKNOWN_COMMAND));
                    if !unknown && let Some(slot) = results.get_mut(i) {
                        *slot = Some(answer.map(Answer::Wire));
                    }
                }
                first = n;
            } else {
                t.settle(None)?;
            }
        }
        let backend = t.resolve().await?;
        if let Backend::Plain(plain) = backend {
            for (op, slot) in self.ops.iter().zip(results.iter_mut()) {
                *slot = Some(plain.op(op).await);
            }
            return Ok(BatchResults {
                ops: self.ops,
                results,
            });
        }
        // Commands the server does not run: emulate readv with get, refuse the rest.
        let mut emulate = Vec::new();
        let mut send_idx = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if i < first && results.get(i).is_some_and(Option::is_some) {
                continue;
            }
            // An application command goes to the server even if `hello`
            // does not list it: the server says why (`unknown-command`, or
            // `command-refused` by its policy).
            if t.supports(op.name()) || matches!(op, Op::Call { .. }) {
                send_idx.push(i);
            } else if matches!(op, Op::Readv(..)) && t.supports("get") {
                emulate.push(i);
            } else if let Some(slot) = results.get_mut(i) {
                *slot = Some(Err(Error::remote(
                    ErrorCode::UNKNOWN_COMMAND,
                    format!(
                        "the server does not offer {} (not in its hello: an older server, \
                         or one whose operator refuses it)",
                        op.name()
                    ),
                )));
            }
        }
        for chunk in send_idx.chunks(MAX_REQUESTS_PER_MESSAGE) {
            let answers = match backend {
                Backend::Smart(s) => s.send(&self.ops, chunk, &t.hooks).await?,
                Backend::Stream(s) => s.send(&self.ops, chunk).await?,
                Backend::Plain(_) => Vec::new(),
            };
            for (&i, answer) in chunk.iter().zip(answers) {
                if answer
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.is(&ErrorCode::UNKNOWN_COMMAND))
                    && let (Some(op), Ok(mut u)) = (self.ops.get(i), t.unsupported.lock())
                {
                    u.insert(op.name().to_string());
                    if matches!(op, Op::Readv(..)) {
                        emulate.push(i);
                        continue;
                    }
                }
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(answer.map(Answer::Wire));
                }
            }
        }
        // Each emulated readv streams its file through a collector of
        // its ranges: only the ranges are held, never the file.
        for &i in &emulate {
            let Some(Op::Readv(path, ranges)) = self.ops.get(i) else {
                continue;
            };
            let mut collector = RangeCollector::new(ranges);
            let got = t
                .stream_request("get", path_args(path), &mut Streamed::new(&mut collector))
                .await;
            let answer = got.and_then(|_| {
                collector
                    .finish()
                    .map(|parts| Answer::Plain(PlainAnswer::Parts(parts)))
                    .map_err(|(o, l)| {
                        Error::remote(
                            ErrorCode::SHORT_READ,
                            format!("range {o},{l} ends past the end of {path}"),
                        )
                    })
            });
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(answer);
            }
        }
        Ok(BatchResults {
            ops: self.ops,
            results,
        })
    }
}

/// The results of a sent batch.
#[derive(Debug)]
pub struct BatchResults {
    ops: Vec<Op>,
    results: Vec<Option<Result<Answer>>>,
}

impl BatchResults {
    /// Takes one result (once; a second take is a usage error).
    pub fn take<T>(&mut self, slot: Slot<T>) -> Result<T> {
        let answer = self
            .results
            .get_mut(slot.index)
            .and_then(Option::take)
            .ok_or_else(|| Error::Usage("result already taken or not in this batch".into()))?;
        let op = self
            .ops
            .get(slot.index)
            .ok_or_else(|| Error::Usage("slot from another batch".into()))?;
        (slot.decode)(op, answer?)
    }
}
