//! The commands a batch holds, and the framegate requests they make.

use bytes::Bytes;
use framegate_wire::Arguments;
use framegate_wire::ranges::encode_ranges;

use crate::smart::Request;

/// `path` below `prefix` (a byte-stream transport's URL path: the server
/// serves its root).
pub(super) fn prefixed(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.trim_matches('/').is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{}", path.trim_start_matches('/')),
    }
}

pub(super) fn path_args(path: &str) -> Arguments {
    let mut args = Arguments::new();
    let _ = args.insert("path", path.to_string());
    args
}

/// A command waiting in a batch.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Get(String),
    Readv(String, Vec<(u64, u64)>),
    Has(String),
    Stat(String),
    Digest(String),
    ListDir(String),
    Iter(String),
    Tree(String),
    Put(String, Bytes, Option<u32>),
    Append(String, Bytes),
    Mkdir(String, Option<u32>),
    Rename(String, String),
    Delete(String),
    Rmdir(String),
    Call {
        name: String,
        args: Arguments,
        data: Option<Bytes>,
        write: bool,
    },
}

impl Op {
    pub(super) fn is_write(&self) -> bool {
        match self {
            Op::Put(..)
            | Op::Append(..)
            | Op::Mkdir(..)
            | Op::Rename(..)
            | Op::Delete(..)
            | Op::Rmdir(..) => true,
            Op::Call { write, .. } => *write,
            _ => false,
        }
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Op::Get(_) => "get",
            Op::Readv(..) => "readv",
            Op::Has(_) => "has",
            Op::Stat(_) => "stat",
            Op::Digest(_) => "digest",
            Op::ListDir(_) => "list_dir",
            Op::Iter(_) => "iter_files_recursive",
            Op::Tree(_) => "tree",
            Op::Put(..) => "put",
            Op::Append(..) => "append",
            Op::Mkdir(..) => "mkdir",
            Op::Rename(..) => "rename",
            Op::Delete(_) => "delete",
            Op::Rmdir(_) => "rmdir",
            Op::Call { name, .. } => name,
        }
    }

    pub(super) fn request(&self, prefix: &str) -> Request<'static> {
        let full = |path: &str| prefixed(prefix, path);
        let path_args = |path: &str| path_args(&full(path));
        let with_mode = |path: &str, mode: &Option<u32>| {
            let mut a = path_args(path);
            if let Some(m) = mode {
                let _ = a.insert("mode", format!("{m:o}"));
            }
            a
        };
        match self {
            Op::Get(p)
            | Op::Has(p)
            | Op::Stat(p)
            | Op::Digest(p)
            | Op::ListDir(p)
            | Op::Iter(p)
            | Op::Tree(p)
            | Op::Delete(p)
            | Op::Rmdir(p) => Request::new(self.name(), path_args(p), None),
            Op::Readv(p, ranges) => {
                let mut a = path_args(p);
                let _ = a.insert("ranges", encode_ranges(ranges));
                Request::new("readv", a, None)
            }
            Op::Put(p, data, mode) => Request::new("put", with_mode(p, mode), Some(data.clone())),
            Op::Append(p, data) => Request::new("append", path_args(p), Some(data.clone())),
            Op::Mkdir(p, mode) => Request::new("mkdir", with_mode(p, mode), None),
            Op::Rename(from, to) => {
                let mut a = Arguments::new();
                let _ = a.insert("from", full(from));
                let _ = a.insert("to", full(to));
                Request::new("rename", a, None)
            }
            Op::Call {
                name, args, data, ..
            } => Request::new(name, args.clone(), data.clone()),
        }
    }
}
