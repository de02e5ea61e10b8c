//! The file commands of PROTOCOL.md §9.2–9.3.
//!
//! Each command cleans its paths ([`crate::tree::clean_path`]), waits for
//! its turn (§6: the driver decides when), and calls the message's
//! [`Storage`](crate::storage::Storage). Commands with data (`put`,
//! `append`) first stream it into the storage's private staging area —
//! nothing of theirs is visible, not even a staging file next to the target
//! — and only at their turn move it into place.

mod read;
mod write;

use std::path::PathBuf;
use std::sync::Arc;

use crate::command::{Access, Answer, Call, Command, CommandError, Registry};
use crate::tree::clean_path;

pub use framegate_wire::ranges::MAX_READV_RANGES;

/// Most files `iter_files_recursive` lists.
pub const MAX_ITER_FILES: usize = 1_000_000;

/// Most entries `tree` lists: an entry holds more than a file name (kind,
/// size, mtime, mode, link target), about 2.5 times the memory of one of
/// `iter_files_recursive`'s names (measured: 100,000 entries peak at
/// +36 MB against +14 MB), so this bound keeps a tree's memory near that of
/// the largest file list. Past it, `not-supported`; `mirror` then falls
/// back to the file list.
pub const MAX_TREE_ENTRIES: usize = 400_000;

pub use crate::storage::MAX_LIST_ENTRIES;

pub(crate) use read::listing_slot;
pub use read::{
    DIGEST_PIECE, HELD_LISTING_MIN, LISTING_SLOTS, LISTING_WAIT, PROGRESS_INTERVAL,
    VALIDATED_ANSWER_MIN,
};

impl Registry {
    /// The file commands of §9 (`get`, `readv`, `has`, `stat`, `list_dir`,
    /// `iter_files_recursive`, `put`, `append`, `mkdir`, `rename`, `delete`,
    /// `rmdir`) and our `digest` and `tree`.
    pub fn files() -> Self {
        let mut registry = Registry::empty();
        register(&mut registry);
        registry
    }
}

fn register(registry: &mut Registry) {
    registry
        .register("get", Arc::new(Reader(read::get)))
        .register("readv", Arc::new(Reader(read::readv)))
        .register("has", Arc::new(Reader(read::has)))
        .register("stat", Arc::new(Reader(read::stat)))
        .register("digest", Arc::new(Reader(read::digest)))
        .register("list_dir", Arc::new(Reader(read::list_dir)))
        .register(
            "iter_files_recursive",
            Arc::new(Reader(read::iter_files_recursive)),
        )
        .register("tree", Arc::new(Reader(read::tree)))
        .register("put", Arc::new(Writer(write::put, DATA)))
        .register("append", Arc::new(Writer(write::append, DATA)))
        .register("mkdir", Arc::new(Writer(write::mkdir, NO_DATA)))
        .register("rename", Arc::new(Writer(write::rename, NO_DATA)))
        .register("delete", Arc::new(Writer(write::delete, NO_DATA)))
        .register("rmdir", Arc::new(Writer(write::rmdir, NO_DATA)));
}

type Fut = crate::command::BoxFuture<Result<Answer, CommandError>>;

/// A read command: none reads request data.
struct Reader(fn(Call) -> Fut);
/// A write command, and whether it reads request data.
struct Writer(fn(Call) -> Fut, bool);

const DATA: bool = true;
const NO_DATA: bool = false;

impl Command for Reader {
    fn takes_data(&self) -> bool {
        false
    }
    fn run(&self, call: Call) -> Fut {
        (self.0)(call)
    }
}

impl Command for Writer {
    fn access(&self) -> Access {
        Access::Write
    }
    fn takes_data(&self) -> bool {
        self.1
    }
    fn run(&self, call: Call) -> Fut {
        (self.0)(call)
    }
}

fn path_arg(call: &Call, name: &str) -> Result<PathBuf, CommandError> {
    clean_path(call.arg(name)?)
}

/// An optional path argument (absent: the base itself).
fn optional_path(call: &Call) -> Result<PathBuf, CommandError> {
    match call.args.get("path") {
        Some(raw) => clean_path(raw),
        None => Ok(PathBuf::from(".")),
    }
}

fn mode_arg(call: &Call) -> Result<Option<u32>, CommandError> {
    let Some(raw) = call.args.get("mode") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).map_err(|_| CommandError::bad("mode", "not ASCII"))?;
    let mode = u32::from_str_radix(text, 8).map_err(|_| CommandError::bad("mode", "not octal"))?;
    if mode > 0o7777 {
        return Err(CommandError::bad("mode", "above 7777"));
    }
    // No set-id or sticky bits from the network.
    Ok(Some(mode & 0o777))
}
