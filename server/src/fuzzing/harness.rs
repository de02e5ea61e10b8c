//! The gateway the message targets share: one per process, with its tokio
//! runtime and a temporary directory holding the served tree and, beside
//! it, a canary file the tree's symbolic links point at.
//!
//! ```text
//!   $TMPDIR/framegate-fuzz-<pid>-XXXXXX/
//!       outside.txt          the canary: never written
//!       tree/                served (writes allowed)
//!           a.txt b.bin sub/c.txt sub/deeper/d.txt    (SEED_FILES)
//!           link    -> ../outside.txt
//!           linkdir -> ..
//! ```
//!
//! Not for anything but fuzzing: the directory outlives the process
//! (statics are never dropped); the next process sweeps those of processes
//! gone for a while.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use framegate_wire::fuzzing::SEED_FILES;

use crate::command::Registry;
use crate::gateway::{Gateway, GatewayConfig};

/// The canary beside the tree.
const OUTSIDE: &str = "outside.txt";
const OUTSIDE_CONTENT: &[u8] = b"outside the served tree\n";
/// The absolute path the path vocabulary names.
const ABSOLUTE: &str = "/framegate-fuzz-absolute.txt";
/// Runs between reseeds (a fresh tree and gateway), so deleted seed files
/// come back and private-area leftovers go.
const RESEED_EVERY: u64 = 1024;
/// Tree size (appends grow it) that makes the next run reseed.
const MAX_TREE_BYTES: u64 = 4 << 20;
/// Prefix of the temporary directories.
const PREFIX: &str = "framegate-fuzz-";

/// Panics seen anywhere in the process (server tasks included: tokio
/// catches those, the hook still sees them).
static PANICS: AtomicUsize = AtomicUsize::new(0);

struct Harness {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    /// Runs hold it shared; a reseed replaces the gateway holding it alone.
    gateway: RwLock<Arc<Gateway>>,
    runs: AtomicU64,
}

/// Runs one message against the shared gateway, then checks that no panic
/// happened meanwhile and that nothing outside the tree changed; reseeds
/// the tree now and then.
pub(super) fn run<F, Fut>(exchange: F)
where
    F: FnOnce(Arc<Gateway>) -> Fut,
    Fut: Future<Output = ()>,
{
    let h = harness();
    {
        let gateway = h.gateway.read().unwrap_or_else(PoisonError::into_inner);
        let panics = PANICS.load(Ordering::SeqCst);
        h.runtime.block_on(exchange(gateway.clone()));
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            panics,
            "a panic elsewhere during this run (a server task?): see above"
        );
        h.check_surroundings();
    }
    let runs = h.runs.fetch_add(1, Ordering::Relaxed) + 1;
    let grown = runs.is_multiple_of(16) && tree_bytes(&h.tree()) > MAX_TREE_BYTES;
    if grown || runs.is_multiple_of(RESEED_EVERY) {
        let mut gateway = h.gateway.write().unwrap_or_else(PoisonError::into_inner);
        *gateway = reseed(h.dir.path());
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        sweep_stale();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("a temporary directory");
        std::fs::create_dir(dir.path().join("tree")).expect("the tree");
        let gateway = reseed(dir.path());
        Harness {
            runtime,
            dir,
            gateway: RwLock::new(gateway),
            runs: AtomicU64::new(0),
        }
    })
}

/// The gateway's settings: writes allowed, small limits and budgets (so
/// the fuzzer reaches them), short timeouts (so no input can stall a run
/// for long).
fn config(root: &Path) -> GatewayConfig {
    let mut config = GatewayConfig::new(root);
    config.allow_writes = true;
    config.limits.max_receiving_requests = 8;
    config.limits.max_requests_per_message = 48;
    config.keepalive_interval = Duration::from_millis(500);
    config.body_read_timeout = Duration::from_secs(1);
    config.header_read_timeout = Duration::from_secs(1);
    config.send_timeout = Duration::from_secs(2);
    // A byte-stream input always ends (the pipe is closed after it), so
    // idleness cannot stall a run; a second would cut loaded runs short.
    config.idle_timeout = Duration::from_secs(5);
    config.shutdown_grace = Duration::from_secs(1);
    config.max_drain_after_error = 1 << 20;
    config.message_open_answers = 4;
    config.message_held_bytes = 256 << 10;
    config.open_answers = 32;
    config.max_compressing_messages = 2;
    config
}

impl Harness {
    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    /// Nothing but the tree and the canary beside it; the canary intact;
    /// nothing at the absolute path of the vocabulary.
    fn check_surroundings(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("the fuzzing directory")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [OUTSIDE, "tree"], "a write escaped the served tree");
        let canary = std::fs::read(self.dir.path().join(OUTSIDE));
        assert_eq!(
            canary.ok().as_deref(),
            Some(OUTSIDE_CONTENT),
            "the file outside the tree changed"
        );
        assert!(
            std::fs::symlink_metadata(ABSOLUTE).is_err(),
            "{ABSOLUTE} exists: a write escaped the served tree"
        );
    }
}

/// Empties the tree under `dir` (private area included), seeds it, and
/// opens a new gateway on it.
fn reseed(dir: &Path) -> Arc<Gateway> {
    let tree = dir.join("tree");
    make_writable(&tree);
    for entry in std::fs::read_dir(&tree).expect("the tree").flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        // A message's file jobs outlive it (blocking work is not
        // cancelled): one may still create a staging file, which its
        // guard then removes, while the tree is emptied here. Tries again
        // for a while before it calls that a failure.
        let mut tries = 0;
        loop {
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("removing {}: {e}", path.display()),
            }
        }
    }
    for (name, content) in SEED_FILES {
        let path = tree.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("a seed directory");
        }
        std::fs::write(&path, content).expect("a seed file");
    }
    std::os::unix::fs::symlink(Path::new("..").join(OUTSIDE), tree.join("link"))
        .expect("a symbolic link");
    std::os::unix::fs::symlink("..", tree.join("linkdir")).expect("a symbolic link");
    std::fs::write(dir.join(OUTSIDE), OUTSIDE_CONTENT).expect("the canary");
    Gateway::new(config(&tree), Registry::files()).expect("a gateway over the tree")
}

/// Bytes of regular files under `dir` (symbolic links not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Gives the owner full access to every directory under `path` (a fuzzed
/// `mkdir` may set mode 000), so it can be removed.
fn make_writable(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

/// Removes the directories of processes that ended over ten minutes ago
/// (Linux: a process is alive while `/proc/<pid>` is there).
fn sweep_stale() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .map(|(pid, _)| pid.to_string())
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(&pid).exists() {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|age| age > Duration::from_secs(600)) {
            make_writable(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
