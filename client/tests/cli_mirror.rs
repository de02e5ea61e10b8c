//! `framegate mirror` as rsync users expect it: empty directories, links
//! inside the tree (others skipped, counted), modes and mtimes, `--delete`,
//! `--exclude`, `--checksum`, a server without `tree`, and progress.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::proxy::{Conn, no_hook, proxy};
use common::*;
use framegate_server::{CommandError, CommandPolicy, Registry, read_command};

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// A tree with what rsync users meet: an executable, an empty directory,
/// links to a file and to a directory inside the tree, links leaving it
/// (relative and absolute), and a FIFO.
fn rich_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("sub/empty")).unwrap();
    std::fs::create_dir_all(r.join("also-empty")).unwrap();
    std::fs::write(r.join("a.txt"), "alpha").unwrap();
    std::fs::write(r.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(r.join("sub/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    set_mtime(&r.join("a.txt"), 1_600_000_000);
    symlink("a.txt", r.join("link")).unwrap();
    symlink("../a.txt", r.join("sub/uplink")).unwrap();
    symlink("sub", r.join("dirlink")).unwrap();
    symlink("../../outside", r.join("sub/escape")).unwrap();
    symlink("/etc/passwd", r.join("absolute")).unwrap();
    nix_mkfifo(&r.join("fifo"));
    t
}

/// Makes `command` answer `permission-denied` for `path` (as for a file the
/// server's user may not open), and run as before for every other path.
fn deny_access(registry: &mut Registry, command: &str, path: &'static str) {
    let inner = registry.get(command).cloned().unwrap();
    registry.register(
        command,
        read_command(move |call: framegate_server::Call| {
            let inner = inner.clone();
            async move {
                if call
                    .args
                    .get("path")
                    .is_some_and(|p| p.as_ref() == path.as_bytes())
                {
                    return Err(CommandError::new(
                        framegate_wire::ErrorCode::PERMISSION_DENIED,
                        "permission denied",
                    ));
                }
                inner.run(call).await
            }
        }),
    );
}

/// Refuses `tree` (a server that lists files only, as an older one).
fn without_tree(registry: &mut Registry) {
    registry
        .apply(&CommandPolicy {
            allow: None,
            deny: vec!["tree".into()],
        })
        .unwrap();
}

fn nix_mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_recreates_empty_directories_and_links_inside_the_tree() {
    let tree = rich_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let m = out.path().join("m");
    let ms = m.to_str().unwrap();
    let (code, stdout, err) = cli(a(&["--json", "mirror", &s.url, ms])).await;
    assert_eq!(code, 0, "{err}");
    let summary = json(&stdout);
    assert_eq!(summary["files"], 2, "{summary}");
    assert_eq!(summary["downloaded"], 2, "{summary}");
    assert_eq!(summary["links"], 3, "{summary}");
    assert_eq!(summary["links_skipped"], 2, "{summary}");
    assert_eq!(summary["other_skipped"], 1, "{summary}");
    assert!(m.join("sub/empty").is_dir() && m.join("also-empty").is_dir());
    assert_eq!(
        std::fs::read_link(m.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        std::fs::read_link(m.join("sub/uplink")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(
        std::fs::read_link(m.join("dirlink")).unwrap(),
        Path::new("sub")
    );
    assert!(std::fs::symlink_metadata(m.join("sub/escape")).is_err());
    assert!(std::fs::symlink_metadata(m.join("absolute")).is_err());
    assert!(std::fs::symlink_metadata(m.join("fifo")).is_err());
    assert!(
        err.contains("skipping link absolute") && err.contains("sub/escape"),
        "{err}"
    );
    let meta = std::fs::metadata(m.join("sub/run.sh")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::metadata(m.join("a.txt")).unwrap().mtime(),
        1_600_000_000
    );
    // Again: nothing to download, links kept as they are; the text summary
    // counts the links skipped.
    let (code, _, err) = cli(a(&["mirror", &s.url, ms])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 downloaded") && err.contains("2 up to date"),
        "{err}"
    );
    assert!(err.contains("(2 skipped: outside the tree)"), "{err}");
    // A local link where the server has a file is replaced by the file,
    // not written through (its target stays as it was).
    let victim = out.path().join("victim");
    std::fs::write(&victim, "mine").unwrap();
    std::fs::remove_file(m.join("a.txt")).unwrap();
    symlink(&victim, m.join("a.txt")).unwrap();
    let (code, _, err) = cli(a(&["-q", "mirror", &s.url, ms])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"mine");
    assert!(
        !std::fs::symlink_metadata(m.join("a.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(m.join("a.txt")).unwrap(), b"alpha");
    assert!(err.is_empty(), "-q prints no warnings: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_delete_and_exclude_like_rsync() {
    let tree = tempfile::tempdir().unwrap();
    let r = tree.path();
    std::fs::create_dir_all(r.join("keep/deep")).unwrap();
    std::fs::create_dir_all(r.join("build")).unwrap();
    std::fs::write(r.join("keep/deep/x.txt"), "x").unwrap();
    std::fs::write(r.join("keep/y.tmp"), "tmp").unwrap();
    std::fs::write(r.join("build/out.bin"), "bin").unwrap();
    std::fs::write(r.join("top.txt"), "top").unwrap();
    let s = smart_server(r, |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let m = out.path();
    let ms = m.to_str().unwrap();
    // Local things the server does not have, and an excluded local file.
    std::fs::create_dir_all(m.join("gone/dir")).unwrap();
    std::fs::write(m.join("gone/dir/f"), "f").unwrap();
    std::fs::write(m.join("stale.txt"), "stale").unwrap();
    std::fs::write(m.join("local.tmp"), "mine").unwrap();
    std::fs::create_dir_all(m.join("old")).unwrap();
    std::fs::write(m.join("old/keep.tmp"), "excluded").unwrap();
    std::fs::write(m.join("old/drop.txt"), "extra").unwrap();
    let ex = ["--exclude", "*.tmp", "--exclude", "/build"];
    // The dry run names what would go, and changes nothing.
    let mut args = a(&["mirror", "-n", "--delete", &s.url, ms]);
    args.extend(a(&ex));
    let (code, stdout, err) = cli(args).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("deleting gone") && stdout.contains("deleting stale.txt"),
        "{stdout}"
    );
    assert!(!stdout.contains("local.tmp"), "excluded: kept: {stdout}");
    assert!(m.join("stale.txt").exists() && m.join("gone/dir/f").exists());
    assert!(!m.join("top.txt").exists());
    let mut args = a(&["--json", "mirror", "--delete", &s.url, ms]);
    args.extend(a(&ex));
    let (code, stdout, err) = cli(args).await;
    assert_eq!(code, 0, "{err}");
    let summary = json(&stdout);
    // gone/dir/f, gone/dir, gone, stale.txt, old/drop.txt (one by one).
    assert_eq!(summary["deleted"], 5, "{summary}");
    assert_eq!(
        std::fs::read(m.join("old/keep.tmp")).unwrap(),
        b"excluded",
        "excluded, so kept, with its directory"
    );
    assert!(!m.join("old/drop.txt").exists());
    assert!(!m.join("stale.txt").exists() && !m.join("gone").exists());
    assert_eq!(std::fs::read(m.join("local.tmp")).unwrap(), b"mine");
    assert!(
        !m.join("keep/y.tmp").exists(),
        "excluded by name at any depth"
    );
    assert!(!m.join("build").exists(), "excluded from the top");
    assert_eq!(std::fs::read(m.join("keep/deep/x.txt")).unwrap(), b"x");
    // Without --delete nothing local is removed.
    std::fs::write(m.join("extra.txt"), "e").unwrap();
    let (code, _, _) = cli(a(&["-q", "mirror", &s.url, ms])).await;
    assert_eq!(code, 0);
    assert!(m.join("extra.txt").exists());
    // A bad pattern is a usage error.
    let (code, _, err) = cli(a(&["mirror", "--exclude", "[", &s.url, ms])).await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_checksum_finds_a_change_that_kept_size_and_mtime() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("f.txt"), "server!").unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let ms = out.path().to_str().unwrap();
    let (code, _, err) = cli(a(&["-q", "mirror", &s.url, ms])).await;
    assert_eq!(code, 0, "{err}");
    // Same size, same mtime, other bytes: only --checksum sees it.
    let f = out.path().join("f.txt");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, "damaged").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (code, _, _) = cli(a(&["-q", "mirror", &s.url, ms])).await;
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"damaged",
        "size and mtime agree"
    );
    let (code, stdout, err) = cli(a(&["--json", "mirror", "-c", &s.url, ms])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&stdout)["downloaded"], 1, "{stdout}");
    assert_eq!(std::fs::read(&f).unwrap(), b"server!");
    let (code, stdout, _) = cli(a(&["--json", "mirror", "--checksum", &s.url, ms])).await;
    assert_eq!((code, json(&stdout)["skipped"].clone()), (0, 1.into()));
    // Plain HTTP has no digest: said, nothing downloaded.
    let ngx = nginx(tree.path());
    let plain = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(a(&[
        "mirror",
        "--checksum",
        &ngx.url("json"),
        plain.path().to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--checksum needs a framegate server"), "{err}");
    assert!(!plain.path().join("f.txt").exists());
}

/// A server that does not offer `tree` (an older one, or one whose policy
/// refuses it) is mirrored from its file list, and the user is told that
/// empty directories and links are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_without_tree_falls_back_to_files_and_says_so() {
    let tree = rich_tree();
    let mut registry = Registry::files();
    without_tree(&mut registry);
    let handle = server_with(tree.path(), registry).await;
    let url = handle.url.clone();
    let out = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(a(&["mirror", &url, out.path().to_str().unwrap()])).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("lists files only"), "{err}");
    // A `tree` over the server's bound (`not-supported`) falls back the same way.
    let mut registry = Registry::files();
    registry.register(
        "tree",
        read_command(|_call: framegate_server::Call| async {
            Err::<framegate_server::Answer, _>(CommandError::new(
                framegate_wire::ErrorCode::NOT_SUPPORTED,
                "more than 400000 entries below this path",
            ))
        }),
    );
    let big = server_with(tree.path(), registry).await;
    let other = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(a(&["mirror", &big.url, other.path().to_str().unwrap()])).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("lists files only"), "{err}");
    assert_eq!(std::fs::read(other.path().join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(out.path().join("a.txt")).unwrap(), b"alpha");
    assert!(!out.path().join("also-empty").exists());
    // --delete still reaches into subdirectories, and keeps a file whose
    // `stat` failed (the server still has it).
    std::fs::write(out.path().join("sub/zzz"), "extra").unwrap();
    let mut registry = Registry::files();
    deny_access(&mut registry, "stat", "a.txt");
    without_tree(&mut registry);
    let handle = server_with(tree.path(), registry).await;
    let url = handle.url.clone();
    let (code, _, err) = cli(a(&[
        "-q",
        "mirror",
        "--delete",
        &url,
        out.path().to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 8, "{err}");
    assert!(!out.path().join("sub/zzz").exists(), "{err}");
    assert_eq!(std::fs::read(out.path().join("a.txt")).unwrap(), b"alpha");
}

/// `--progress` shows progress where stderr is no terminal (plain lines,
/// with the file count); without it, or with `--no-progress`, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_file_counts_when_asked_and_stays_quiet_otherwise() {
    let tree = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(tree.path().join(format!("f{i}")), vec![b'x'; 1000]).unwrap();
    }
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let m = out.path().join("a");
    let (code, _, err) = cli(a(&["mirror", "--progress", &s.url, m.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("/5 files ["),
        "a bar with the file count: {err}"
    );
    let m = out.path().join("b");
    let (code, _, err) = cli(a(&["mirror", &s.url, m.to_str().unwrap()])).await;
    assert_eq!(code, 0);
    assert!(!err.contains("files ["), "not a terminal: no bar: {err}");
    let m = out.path().join("c");
    let (code, _, err) = cli(a(&[
        "mirror",
        "--progress",
        "--no-progress",
        &s.url,
        m.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0);
    assert!(!err.contains("files ["), "the last flag wins: {err}");
}

/// The bar moves inside a file too large for a batch (streamed to disk):
/// with the answer slowed to about 30 MiB/s, a progress line shows part of
/// the file written (it used to stand still until the file was done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bar_moves_inside_a_large_file() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("a-small"), vec![b's'; 1000]).unwrap();
    std::fs::write(tree.path().join("big"), common::proxy::content(65 << 20, 7)).unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let p = proxy(
        s.handle.local_addr,
        std::sync::Arc::new(|_| Conn::Slow(30 << 20)),
        no_hook(),
    )
    .await;
    let url = format!("http://{}/", p.addr);
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = cli(a(&[
        "--no-compress",
        "mirror",
        "--progress",
        &url,
        out.path().to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let took = started.elapsed();
    let moved = err.lines().filter(|l| l.contains("files [")).any(|l| {
        let Some((done, _)) = l.split_once("/65.00 MiB") else {
            return false;
        };
        let mut words = done.rsplit(' ');
        let (unit, value) = (words.next(), words.next());
        let value: f64 = value.and_then(|v| v.parse().ok()).unwrap_or(0.0);
        unit == Some("MiB") && value > 0.5 && value < 64.9
    });
    assert!(moved, "a line with part of the large file: {err}");
    let lines = err.lines().filter(|l| l.contains(" [")).count() as u64;
    assert!(
        lines <= took.as_secs() + 3,
        "about a line a second: {lines} in {took:?}: {err}"
    );
    assert_eq!(
        std::fs::metadata(out.path().join("big")).unwrap().len(),
        65 << 20
    );
}

/// A file the server cannot read (here: `get` answers `permission-denied`
/// for it, as for a file the server's user may not open) is named and
/// skipped; the rest is mirrored; exit 8 (it used to end the run, exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_server_cannot_read_is_skipped_and_the_rest_mirrored() {
    let tree = tempfile::tempdir().unwrap();
    for name in ["a.txt", "secret.txt", "z.txt"] {
        std::fs::write(tree.path().join(name), name).unwrap();
    }
    let mut registry = Registry::files();
    deny_access(&mut registry, "get", "secret.txt");
    let handle = server_with(tree.path(), registry).await;
    let url = handle.url.clone();
    let out = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(a(&["mirror", &url, out.path().to_str().unwrap()])).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("secret.txt: permission-denied"), "{err}");
    assert!(err.contains("1 failed"), "{err}");
    assert_eq!(std::fs::read(out.path().join("a.txt")).unwrap(), b"a.txt");
    assert_eq!(std::fs::read(out.path().join("z.txt")).unwrap(), b"z.txt");
    assert!(!out.path().join("secret.txt").exists());
}

/// Links never lead a mirror outside its directory: a server link passing
/// through another link (`x/c -> ..`, `esc -> x/c/..`) is not recreated
/// (the server does not even reveal its target), and a local link where
/// the server has a directory is replaced by a directory, never written
/// through — also without `tree`, where the file below it fails instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_never_lead_outside_the_mirror() {
    let tree = tempfile::tempdir().unwrap();
    let r = tree.path();
    std::fs::create_dir_all(r.join("x")).unwrap();
    symlink("..", r.join("x/c")).unwrap();
    symlink("x/c/..", r.join("esc")).unwrap();
    std::fs::create_dir_all(r.join("sub")).unwrap();
    std::fs::write(r.join("sub/file"), "in the tree").unwrap();
    let s = smart_server(r, |_| {}).await;
    // The server reveals the first link's target, not the chained one's.
    let t = framegate_client::Transport::open(&s.url, Default::default())
        .await
        .unwrap();
    let entries = t.tree("").await.unwrap();
    let target_of = |p: &str| entries.iter().find(|e| e.path == p).unwrap().target.clone();
    assert_eq!(target_of("x/c").as_deref(), Some(".."));
    assert_eq!(target_of("esc"), None);
    let top = tempfile::tempdir().unwrap();
    let outside = top.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let m = top.path().join("m");
    std::fs::create_dir(&m).unwrap();
    // A local link where the server has the directory `sub`.
    symlink(&outside, m.join("sub")).unwrap();
    let (code, stdout, err) = cli(a(&["--json", "mirror", &s.url, m.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(m.join("esc")).is_err(), "{err}");
    assert_eq!(json(&stdout)["links_skipped"], 1, "{stdout}");
    assert!(err.contains("skipping link esc"), "{err}");
    assert_eq!(std::fs::read_link(m.join("x/c")).unwrap(), Path::new(".."));
    assert!(std::fs::symlink_metadata(m.join("sub")).unwrap().is_dir());
    assert_eq!(std::fs::read(m.join("sub/file")).unwrap(), b"in the tree");
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing outside"
    );

    // Without `tree` (files only): the link stays, the file below it fails.
    let mut registry = Registry::files();
    without_tree(&mut registry);
    let handle = server_with(r, registry).await;
    let url = handle.url.clone();
    let m2 = top.path().join("m2");
    std::fs::create_dir(&m2).unwrap();
    symlink(&outside, m2.join("sub")).unwrap();
    let (code, _, err) = cli(a(&["mirror", "--delete", &url, m2.to_str().unwrap()])).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("not written through"), "{err}");
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing outside"
    );
}

/// What stands in the way locally: a FIFO where the server has a file is
/// replaced (it used to block the mirror for ever), a directory where the
/// server has a file is replaced with `--delete`; a server mode change
/// reaches an up-to-date copy; a destination that is a file is one local
/// error (exit 6); server names with control characters are escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_stands_in_the_way_is_replaced_and_modes_follow() {
    let tree = tempfile::tempdir().unwrap();
    let r = tree.path();
    std::fs::write(r.join("a.txt"), "alpha").unwrap();
    std::fs::write(r.join("b.txt"), "beta").unwrap();
    std::fs::write(r.join("bell\x07"), "ding").unwrap();
    let s = smart_server(r, |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let m = out.path();
    nix_mkfifo(&m.join("a.txt"));
    std::fs::create_dir_all(m.join("b.txt/inside")).unwrap();
    let (code, stdout, _) = cli(a(&["mirror", "-n", &s.url, m.to_str().unwrap()])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("bell\\u{7}") && !stdout.contains('\x07'),
        "{stdout:?}"
    );
    let run = cli(a(&[
        "-q",
        "mirror",
        "--delete",
        &s.url,
        m.to_str().unwrap(),
    ]));
    let (code, _, err) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("no hang on a FIFO");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(m.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(m.join("b.txt")).unwrap(), b"beta");
    // A mode change on the server, same size and mtime: only the mode.
    std::fs::set_permissions(r.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stdout, _) = cli(a(&["--json", "mirror", &s.url, m.to_str().unwrap()])).await;
    assert_eq!((code, json(&stdout)["downloaded"].clone()), (0, 0.into()));
    let mode = std::fs::metadata(m.join("a.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // DIR is a file: one local error.
    let file = out.path().join("a.txt");
    let (code, _, err) = cli(a(&["mirror", &s.url, file.to_str().unwrap()])).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("not a directory"), "{err}");
}

/// Read-only files mirror (and converge) for a user who is not root: the
/// mtime is set before the mode takes write permission away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_files_mirror_for_an_unprivileged_user() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("r.txt"), "read only").unwrap();
    std::fs::set_permissions(
        tree.path().join("r.txt"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let m = out.path().join("m");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let bin = assert_cmd::cargo::cargo_bin("framegate");
    for _ in 0..2 {
        let mut cmd = if root {
            // As root the permission bits do not bind: run as nobody.
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&bin);
            c
        } else {
            std::process::Command::new(&bin)
        };
        cmd.args(["--json", "mirror", &s.url, m.to_str().unwrap()])
            .env("NETRC", "/nonexistent");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}{err}");
        assert_eq!(json(&stdout)["failed"], 0, "{stdout}");
    }
    let meta = std::fs::metadata(m.join("r.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
}

/// Second-round cases: `--delete` does not remove a directory in the way
/// that holds excluded entries; a FIFO at the partial file's name does not
/// hang the mirror; a link passing through a local link is not made; a
/// file where the server has a directory is replaced with `--delete` also
/// without `tree`; a destination below a file is one local error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_round_cases() {
    let tree = tempfile::tempdir().unwrap();
    let r = tree.path();
    std::fs::write(r.join("file"), "server file").unwrap();
    std::fs::write(r.join("f"), "f").unwrap();
    symlink("q/..", r.join("p")).unwrap();
    // A link ending at a link of the tree that leaves it (skipped), where
    // the user has a local link of that name pointing outside.
    std::fs::create_dir(r.join("rr")).unwrap();
    symlink("../../../etc", r.join("rr/up")).unwrap();
    symlink("rr/up", r.join("p3")).unwrap();
    let s = smart_server(r, |_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let m = out.path().join("m");
    std::fs::create_dir_all(m.join("file")).unwrap();
    std::fs::write(m.join("file/notes.tmp"), "mine").unwrap();
    nix_mkfifo(&m.join(".f.framegate-partial"));
    symlink(".", m.join("q")).unwrap();
    std::fs::create_dir(m.join("rr")).unwrap();
    symlink(out.path(), m.join("rr/up")).unwrap();
    let ms = m.to_str().unwrap();
    // `q`, the user's own link, is excluded (kept by --delete).
    let run = cli(a(&[
        "mirror",
        "--delete",
        "--exclude",
        "*.tmp",
        "--exclude",
        "/q",
        &s.url,
        ms,
    ]));
    let (code, _, err) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("no hang on a FIFO at the partial's name");
    assert_eq!(code, 8, "{err}");
    assert_eq!(std::fs::read(m.join("file/notes.tmp")).unwrap(), b"mine");
    assert!(err.contains("holding excluded entries"), "{err}");
    assert!(std::fs::symlink_metadata(m.join("p")).is_err(), "{err}");
    assert!(err.contains("skipping link p"), "{err}");
    assert!(std::fs::symlink_metadata(m.join("p3")).is_err(), "{err}");
    // Again: the FIFO is gone (it was the partial's name), f arrives.
    let (_, _, err) = cli(a(&[
        "mirror",
        "--delete",
        "--exclude",
        "*.tmp",
        "--exclude",
        "/q",
        &s.url,
        ms,
    ]))
    .await;
    assert_eq!(std::fs::read(m.join("f")).unwrap(), b"f", "{err}");

    // `get -c` with a FIFO at the partial record's name: no hang.
    let g = out.path().join("g");
    std::fs::create_dir(&g).unwrap();
    nix_mkfifo(&g.join(".f.framegate-partial.json"));
    let run = cli(a(&[
        "get",
        "-c",
        &format!("{}f", s.url),
        "-o",
        g.join("f").to_str().unwrap(),
    ]));
    let (code, _, err) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("no hang on a FIFO at the record's name");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(g.join("f")).unwrap(), b"f");

    // Without `tree`: a local file where the server has a directory.
    let t2 = tempfile::tempdir().unwrap();
    std::fs::create_dir(t2.path().join("a")).unwrap();
    std::fs::write(t2.path().join("a/f"), "deep").unwrap();
    let mut registry = Registry::files();
    without_tree(&mut registry);
    let handle = server_with(t2.path(), registry).await;
    let url = handle.url.clone();
    let m2 = out.path().join("m2");
    std::fs::create_dir(&m2).unwrap();
    std::fs::write(m2.join("a"), "in the way").unwrap();
    let (code, _, err) = cli(a(&["-q", "mirror", &url, m2.to_str().unwrap()])).await;
    assert_eq!(code, 8, "without --delete: kept, the file fails: {err}");
    let (code, _, err) = cli(a(&["-q", "mirror", "--delete", &url, m2.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(m2.join("a/f")).unwrap(), b"deep");
    // A destination below a regular file.
    let below = out.path().join("m2/a/f/sub");
    let (code, _, err) = cli(a(&["mirror", &url, below.to_str().unwrap()])).await;
    assert_eq!(code, 6, "{err}");
}
