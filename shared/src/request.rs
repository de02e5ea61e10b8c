//! Requests as a client sends them (§4.1): a `command-name` frame, argument
//! frames sorted by name (long values continued over several frames), then
//! data frames cut from a byte source.
//!
//! The encoder makes frame *bodies*; an [`OutboundStream`](crate::stream::OutboundStream)
//! gives them stream ids, flags and encoding.

use bytes::{Buf, Bytes};

use crate::frame::{
    ARGUMENT_HEADER_LEN, CommandArgument, CommandArgumentFlags, CommandData, CommandDataFlags,
    CommandName, CommandNameFlags, FrameBody, PREFERRED_PAYLOAD_SIZE, RequestId, check_name,
};

/// Largest argument value: its length is a u16 on the wire.
pub const MAX_ARGUMENT_VALUE_LEN: usize = u16::MAX as usize;

/// A request's arguments, kept sorted by name (bytewise).
///
/// A vector sized to its arguments, not a map: a server holds one per
/// request waiting its turn (thousands per message), and a `BTreeMap`'s
/// first node alone costs over 600 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arguments(Vec<(String, Bytes)>);

impl Arguments {
    /// No arguments.
    pub fn new() -> Self {
        Arguments::default()
    }

    /// Adds an argument; fails on a bad name, a duplicate or a value too long
    /// for the wire.
    pub fn insert(&mut self, name: &str, value: impl Into<Bytes>) -> Result<(), RequestError> {
        check_name(name.as_bytes()).map_err(|why| RequestError::BadArgumentName {
            name: name.to_string(),
            why,
        })?;
        let value = value.into();
        if value.len() > MAX_ARGUMENT_VALUE_LEN {
            return Err(RequestError::ValueTooLong {
                name: name.to_string(),
                len: value.len(),
            });
        }
        match self.position(name) {
            Ok(_) => Err(RequestError::DuplicateArgument(name.to_string())),
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (name.to_string(), value));
                Ok(())
            }
        }
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, name: &str, value: impl Into<Bytes>) -> Result<Self, RequestError> {
        self.insert(name, value)?;
        Ok(self)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        let at = self.position(name).ok()?;
        self.0.get(at).map(|(_, v)| v)
    }

    /// Removes `name`; its value if it was present.
    pub fn remove(&mut self, name: &str) -> Option<Bytes> {
        let at = self.position(name).ok()?;
        Some(self.0.remove(at).1)
    }

    /// The value of `name` as UTF-8.
    pub fn get_str(&self, name: &str) -> Option<Result<&str, std::str::Utf8Error>> {
        self.get(name).map(|v| std::str::from_utf8(v))
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Arguments in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds a received argument; the reactor has checked name and uniqueness.
    pub(crate) fn insert_received(&mut self, name: String, value: Bytes) {
        match self.position(&name) {
            Ok(at) => {
                if let Some(slot) = self.0.get_mut(at) {
                    slot.1 = value;
                }
            }
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (name, value));
            }
        }
    }

    /// Where `name` is (`Ok`), or where it would go (`Err`).
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }
}

/// A request the caller asked for cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The command name breaks the grammar of §4.1.
    #[error("bad command name {name:?}: {why}")]
    BadCommandName {
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// An argument name breaks the grammar of §4.1.
    #[error("bad argument name {name:?}: {why}")]
    BadArgumentName {
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// The same argument twice.
    #[error("argument {0:?} given twice")]
    DuplicateArgument(String),
    /// A value longer than 65,535 bytes.
    #[error("argument {name:?} is {len} bytes; at most 65535 fit")]
    ValueTooLong {
        /// The argument.
        name: String,
        /// Its length.
        len: usize,
    },
}

/// Cuts requests into frame bodies.
#[derive(Debug, Clone, Copy)]
pub struct RequestEncoder {
    max_payload: usize,
}

impl Default for RequestEncoder {
    fn default() -> Self {
        RequestEncoder::new(PREFERRED_PAYLOAD_SIZE)
    }
}

impl RequestEncoder {
    /// Payloads will be at most `max_payload` bytes (at least 260, so an
    /// argument header and a full name fit in one frame).
    pub fn new(max_payload: usize) -> Self {
        RequestEncoder {
            max_payload: max_payload.max(ARGUMENT_HEADER_LEN + 256),
        }
    }

    /// The payload size limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The `command-name` and argument frames of a request; if `has_data`,
    /// data frames must follow (see [`data_frames`](Self::data_frames)).
    pub fn command_frames(
        &self,
        name: &str,
        args: &Arguments,
        has_data: bool,
        out: &mut Vec<FrameBody>,
    ) -> Result<(), RequestError> {
        check_name(name.as_bytes()).map_err(|why| RequestError::BadCommandName {
            name: name.to_string(),
            why,
        })?;
        let flags = if args.is_empty() && !has_data {
            CommandNameFlags::EOS
        } else {
            CommandNameFlags::empty()
                .with(CommandNameFlags::HAVE_ARGS, !args.is_empty())
                .with(CommandNameFlags::HAVE_DATA, has_data)
        };
        out.push(FrameBody::CommandName(CommandName::new(name, flags)));
        let count = args.len();
        for (index, (arg, value)) in args.iter().enumerate() {
            let last_arg = index + 1 == count;
            // Checked on insert: the value fits in u16.
            let value_len = value.len() as u16;
            let room = self.max_payload - ARGUMENT_HEADER_LEN - arg.len();
            let mut rest = value.clone();
            let first = rest.split_to(rest.len().min(room));
            let flags = |rest_empty: bool| {
                CommandArgumentFlags::empty()
                    .with(CommandArgumentFlags::CONTINUATION, !rest_empty)
                    .with(CommandArgumentFlags::EOA, rest_empty && last_arg)
            };
            out.push(FrameBody::CommandArgument(CommandArgument {
                flags: flags(rest.is_empty()),
                payload: CommandArgument::start_payload(arg, value_len, &first),
            }));
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(self.max_payload));
                out.push(FrameBody::CommandArgument(CommandArgument {
                    flags: flags(rest.is_empty()),
                    payload: piece,
                }));
            }
        }
        Ok(())
    }

    /// Data frames for the bytes of `data`; the last one has `eos` if
    /// `last` (an empty source with `last` gives one empty `eos` frame).
    pub fn data_frames(&self, mut data: impl Buf, last: bool, out: &mut Vec<FrameBody>) {
        if !data.has_remaining() {
            if last {
                out.push(data_body(Bytes::new(), true));
            }
            return;
        }
        while data.has_remaining() {
            let piece = data.copy_to_bytes(data.remaining().min(self.max_payload));
            let eos = last && !data.has_remaining();
            out.push(data_body(piece, eos));
        }
    }

    /// A whole request: command, arguments and, if `data` is given, all of it.
    pub fn request(
        &self,
        name: &str,
        args: &Arguments,
        data: Option<impl Buf>,
    ) -> Result<Vec<FrameBody>, RequestError> {
        let mut out = Vec::new();
        self.command_frames(name, args, data.is_some(), &mut out)?;
        if let Some(data) = data {
            self.data_frames(data, true, &mut out);
        }
        Ok(out)
    }
}

fn data_body(payload: Bytes, eos: bool) -> FrameBody {
    let flags = if eos {
        CommandDataFlags::EOS
    } else {
        CommandDataFlags::CONTINUATION
    };
    FrameBody::CommandData(CommandData { flags, payload })
}

/// Client request ids: 1, 3, 5, ... wrapping, skipping 0 and ids in use.
#[derive(Debug, Clone)]
pub struct RequestIds {
    next: u16,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds { next: 1 }
    }
}

impl RequestIds {
    /// The next odd id for which `in_use` is false, or `None` if all 32,768
    /// odd ids are in use.
    pub fn next(&mut self, mut in_use: impl FnMut(RequestId) -> bool) -> Option<RequestId> {
        for _ in 0..=u16::MAX / 2 {
            let id = RequestId(self.next);
            self.next = self.next.wrapping_add(2);
            if !in_use(id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_stay_sorted_unique_and_sized_to_fit() {
        let mut args = Arguments::new();
        for name in ["path", "b", "zeta", "a", "mode"] {
            args.insert(name, name.as_bytes().to_vec()).unwrap();
        }
        let names: Vec<&str> = args.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "b", "mode", "path", "zeta"]);
        assert_eq!(args.0.capacity(), 5, "no spare room held per request");
        assert_eq!(
            args.insert("mode", "x"),
            Err(RequestError::DuplicateArgument("mode".into()))
        );
        assert_eq!(args.get("path").map(|v| &v[..]), Some(&b"path"[..]));
        assert_eq!(args.get_str("zeta"), Some(Ok("zeta")));
        assert!(args.get("pat").is_none() && !args.contains("c"));
        assert_eq!(args.remove("b").as_deref(), Some(&b"b"[..]));
        assert!(!args.contains("b") && args.len() == 4);
        args.insert_received("c".into(), Bytes::from_static(b"1"));
        args.insert_received("c".into(), Bytes::from_static(b"2"));
        let names: Vec<&str> = args.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "c", "mode", "path", "zeta"]);
        assert_eq!(args.get("c").map(|v| &v[..]), Some(&b"2"[..]));
    }
}
