//! `framegate mirror`: a whole tree into a local directory, in batches —
//! files with their modes and mtimes, empty directories, links that stay
//! inside the tree; `--exclude`, `--delete`, `--checksum`, `--dry-run`.
//! A file that fails is named and skipped; the rest is mirrored (exit 8).

mod local;
mod plan;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use framegate_client::{
    DownloadOptions, Error, FileKind, Layer, Misbehavior, Transport, TreeEntry, local_path_below,
    partial_path, partial_record_path, replace_file,
};
use indicatif::ProgressBar;
use serde_json::json;

pub(crate) use local::local_error;
pub(crate) use plan::Filter;

use crate::files::{local_sha256, printable};
use crate::{Ctx, describe};

/// Files per `stat`, `digest` or `get` batch in `mirror`.
const MIRROR_BATCH_FILES: usize = 1000;
/// Answer bytes per `get` batch in `mirror` (bounds memory).
const MIRROR_BATCH_BYTES: u64 = 64 << 20;

/// How a mirror ended: every file, or some failed (each was named on
/// stderr as it failed; the rest was mirrored).
pub(crate) enum Mirrored {
    All,
    Partly,
}

/// What `mirror` was asked to do beyond copying.
pub(crate) struct MirrorArgs {
    pub(crate) dry_run: bool,
    pub(crate) delete: bool,
    pub(crate) checksum: bool,
    pub(crate) filter: Filter,
}

/// What a mirror did (the summary line, and `--json`'s object).
#[derive(Default)]
struct Tally {
    files: u64,
    downloaded: u64,
    bytes: u64,
    up_to_date: u64,
    failed: u64,
    dirs: u64,
    links: u64,
    links_skipped: u64,
    other_skipped: u64,
    deleted: u64,
    messages: u64,
}

pub(crate) async fn mirror(
    ctx: &Ctx,
    url: &str,
    dir: &Path,
    args: &MirrorArgs,
) -> Result<Mirrored, Error> {
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(local_error(
            dir,
            std::io::Error::other("not a directory: mirror needs one to write into"),
        ));
    }
    // Progress frames of the listing (`tree` counts entries) move a spinner.
    let spinner = crate::spinner(ctx, "listing");
    let mut options = ctx.options.clone();
    let shown = spinner.clone();
    options.hooks.on_progress = Some(Arc::new(move |p: &framegate_wire::ProgressPayload| {
        if p.pos >= 0 && (p.topic == "tree" || p.topic == "iter_files_recursive") {
            shown.set_message(format!("listing: {} entries", p.pos));
        }
    }));
    // Opened with a probe: what the server offers (`tree`, `digest`) is
    // known before the listing is asked for.
    let t = Transport::open(url, options).await?;
    if args.checksum && !t.supports("digest") {
        return Err(Error::Remote {
            code: framegate_client::ErrorCode::NOT_SUPPORTED,
            message: format!(
                "--checksum needs a framegate server's digest; {} does not offer it",
                t.base_url()
            ),
        });
    }
    let remote = plan::list(&t, dir, &args.filter).await?;
    spinner.finish_and_clear();
    let mut n = Tally {
        messages: remote.messages,
        ..Tally::default()
    };
    for (f, e) in &remote.failed {
        fail(&mut n, f, e);
    }
    for name in &remote.unsafe_names {
        warn(
            ctx,
            &format!(
                "skipping {name:?}: not a relative path below {}",
                dir.display()
            ),
        );
    }
    if !remote.whole_tree {
        warn(
            ctx,
            &format!(
                "note: {} lists files only: empty directories and links are not mirrored",
                t.base_url()
            ),
        );
    }
    let (mut files, mut dirs, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for e in &remote.entries {
        match e.kind {
            FileKind::File => files.push(e),
            FileKind::Dir => dirs.push(e),
            FileKind::Symlink => links.push(e),
            _ => {
                n.other_skipped += 1;
                warn(
                    ctx,
                    &format!(
                        "skipping {}: not a file, directory or link (kind {:?})",
                        printable(&e.path),
                        e.kind.as_str()
                    ),
                );
            }
        }
    }
    n.files = files.len() as u64;
    // Which files differ from the local copy?
    let mut wanted: Vec<&TreeEntry> = Vec::new();
    let mut to_check: Vec<&TreeEntry> = Vec::new();
    let mut touch: Vec<&TreeEntry> = Vec::new();
    for e in files {
        let path = dest_of(dir, &e.path);
        let compared = local::compare(&path, e);
        if args.checksum
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == e.size)
        {
            to_check.push(e);
        } else {
            match compared {
                local::Local::Same => n.up_to_date += 1,
                local::Local::ModeDiffers => {
                    n.up_to_date += 1;
                    touch.push(e);
                }
                local::Local::Differs => wanted.push(e),
            }
        }
    }
    for chunk in to_check.chunks(MIRROR_BATCH_FILES) {
        let mut batch = t.batch();
        let slots: Vec<_> = chunk.iter().map(|e| batch.digest(&e.path)).collect();
        let mut results = batch.send().await?;
        n.messages += 1;
        for (e, slot) in chunk.iter().zip(slots) {
            let check = async {
                let theirs = results.take(slot)?;
                let ours = local_sha256(&dest_of(dir, &e.path)).await?;
                Ok::<_, Error>(theirs.digest == ours.0 && theirs.size == ours.1)
            };
            match check.await {
                Ok(true) => {
                    n.up_to_date += 1;
                    touch.push(e);
                }
                Ok(false) => wanted.push(e),
                Err(err) => fail(&mut n, &e.path, &err),
            }
        }
    }
    // Sizes are the server's: saturating, never overflowing.
    let total: u64 = wanted.iter().fold(0u64, |t, e| t.saturating_add(e.size));
    // What `--delete` keeps: the server's entries, those whose `stat`
    // failed (still on the server), and (without `tree`) the directories
    // the files are in.
    let mut keep: HashSet<String> = remote.entries.iter().map(|e| e.path.clone()).collect();
    keep.extend(remote.failed.iter().map(|(f, _)| f.clone()));
    if !remote.whole_tree {
        for e in &remote.entries {
            let mut at = e.path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                keep.insert(parent.to_string());
                at = parent;
            }
        }
    }
    let extra = if args.delete {
        let filter = &args.filter;
        // A partial download of a wanted file (and its record) is
        // continued, not deleted.
        let partial_of_wanted: HashSet<PathBuf> = wanted
            .iter()
            .flat_map(|e| {
                let dest = dest_of(dir, &e.path);
                [partial_path(&dest), partial_record_path(&dest)]
            })
            .collect();
        local::extraneous(dir, &keep, &|p, d| filter.excludes(p, d), remote.whole_tree)
            .into_iter()
            .filter(|(_, path, _)| !partial_of_wanted.contains(path))
            .collect()
    } else {
        Vec::new()
    };
    // A link may not pass through another (one of the tree's, or one that
    // is already here), and may end at another only if that one is
    // recreated too, inside (judged the same way, a few links deep).
    let links_of_tree: std::collections::HashMap<&str, Option<&str>> = links
        .iter()
        .map(|e| (e.path.as_str(), e.target.as_deref()))
        .collect();
    let local_link =
        |p: &str| std::fs::symlink_metadata(dir.join(p)).is_ok_and(|m| m.file_type().is_symlink());
    let inside = |at: &str, target: &str| link_inside(at, target, &links_of_tree, &local_link, 0);
    // With --delete, what stands in the way is replaced, excluded entries
    // kept.
    let excluded = |p: &str, d: bool| args.filter.excludes(p, d);
    let replace: Option<&local::Excluded<'_>> = args.delete.then_some(&excluded);
    if args.dry_run {
        for e in &wanted {
            if ctx.json {
                println!("{}", json!({ "path": e.path, "size": e.size }));
            } else {
                println!("{} ({} bytes)", printable(&e.path), e.size);
            }
        }
        for (rel, _, _) in &extra {
            if ctx.json {
                println!("{}", json!({ "path": rel, "delete": true }));
            } else {
                println!("deleting {}", printable(rel));
            }
        }
        if !ctx.quiet && !ctx.json {
            eprintln!(
                "{} files: {} to download ({total} bytes), {} up to date, {} failed, {} to delete (dry run: nothing written)",
                n.files,
                wanted.len(),
                n.up_to_date,
                n.failed,
                extra.len()
            );
        }
        return Ok(ended(&n));
    }
    // The destination itself (one local error, exit 6, if it cannot be).
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| local_error(dir, e))?;
    // Extra local entries go first: a local file may stand where the
    // server now has a directory.
    // Deepest first: a directory's entries go before it; one that still
    // holds excluded entries stays.
    for (rel, path, is_dir) in &extra {
        let removed = if *is_dir {
            tokio::fs::remove_dir(path).await
        } else {
            tokio::fs::remove_file(path).await
        };
        match removed {
            Ok(()) => n.deleted += 1,
            Err(e) if *is_dir && e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
            Err(e) => fail(&mut n, rel, &local_error(path, e)),
        }
    }
    for e in &dirs {
        let made = async {
            local::no_link_above(dir, &e.path)?;
            local::ensure_dir(&dest_of(dir, &e.path), args.delete).await
        };
        match made.await {
            Ok(()) => n.dirs += 1,
            Err(err) => fail(&mut n, &e.path, &err),
        }
    }
    let pb = crate::bar(ctx, Some(total), &format!("0/{} files", wanted.len()));
    let count = wanted.len();
    let mut done_bytes = 0u64;
    let mut i = 0;
    while i < wanted.len() {
        // One message per group: up to 1,000 files or 64 MiB of answers.
        let mut group: Vec<&TreeEntry> = Vec::new();
        let mut group_bytes = 0u64;
        while let Some(e) = wanted.get(i) {
            if !group.is_empty()
                && (group.len() >= MIRROR_BATCH_FILES
                    || group_bytes.saturating_add(e.size) > MIRROR_BATCH_BYTES)
            {
                break;
            }
            group.push(e);
            group_bytes = group_bytes.saturating_add(e.size);
            i += 1;
        }
        pb.set_message(format!("{}/{count} files", n.downloaded));
        if let [e] = group[..]
            && group_bytes > MIRROR_BATCH_BYTES
        {
            // A large file streams straight to disk; the bar follows its
            // partial file.
            let dest = dest_of(dir, &e.path);
            let watcher = follow(pb.clone(), done_bytes, partial_path(&dest));
            let one = async {
                local::parents_for(dir, &e.path, replace)?;
                local::make_parent(&dest).await?;
                local::clear_for_file(&dest, &e.path, replace).await?;
                // An earlier run's partial copy is continued while the
                // server has the same version.
                let resume = DownloadOptions::default().resume(true);
                t.download_with(&e.path, &dest, &resume).await?;
                local::finish(&dest, e)
            };
            let result = one.await;
            watcher.abort();
            n.messages += 2;
            match result {
                Ok(()) => {
                    n.downloaded += 1;
                    n.bytes = n.bytes.saturating_add(e.size);
                }
                Err(err) if err.layer() == Layer::Transport => return Err(err),
                Err(err) => fail(&mut n, &e.path, &err),
            }
            done_bytes = done_bytes.saturating_add(e.size);
            pb.set_position(done_bytes);
            continue;
        }
        let mut batch = t.batch();
        let slots: Vec<_> = group.iter().map(|e| batch.get(&e.path)).collect();
        let mut results = batch.send().await?;
        n.messages += 1;
        for (e, slot) in group.iter().zip(slots) {
            let one = async {
                let data: Bytes = results.take(slot)?;
                let dest = dest_of(dir, &e.path);
                local::parents_for(dir, &e.path, replace)?;
                local::make_parent(&dest).await?;
                local::clear_for_file(&dest, &e.path, replace).await?;
                replace_file(&dest, &data).await?;
                local::finish(&dest, e)?;
                Ok::<_, Error>(data.len() as u64)
            };
            match one.await {
                Ok(len) => {
                    n.downloaded += 1;
                    n.bytes = n.bytes.saturating_add(len);
                }
                Err(err) => fail(&mut n, &e.path, &err),
            }
            done_bytes = done_bytes.saturating_add(e.size);
            pb.set_position(done_bytes);
            pb.set_message(format!("{}/{count} files", n.downloaded));
        }
    }
    pb.finish_and_clear();
    // Files found equal by content take the server's mode and mtime.
    for e in touch {
        let touched = local::no_link_above(dir, &e.path)
            .and_then(|()| local::finish(&dest_of(dir, &e.path), e));
        if let Err(err) = touched {
            fail(&mut n, &e.path, &err);
        }
    }
    // Links last (a link to a directory is not written through), then the
    // directories' own modes and mtimes, deepest first (writing into a
    // directory changes its mtime).
    for e in &links {
        let dest = dest_of(dir, &e.path);
        match e.target.as_deref() {
            Some(target) if inside(&e.path, target) => {
                let made = async {
                    local::no_link_above(dir, &e.path)?;
                    local::make_parent(&dest).await?;
                    local::make_link(&dest, &e.path, target, replace).await
                };
                match made.await {
                    Ok(_) => n.links += 1,
                    Err(err) => fail(&mut n, &e.path, &err),
                }
            }
            _ => {
                n.links_skipped += 1;
                warn(
                    ctx,
                    &format!(
                        "skipping link {}: it points outside the tree",
                        printable(&e.path)
                    ),
                );
            }
        }
    }
    for e in dirs.iter().rev() {
        let finished = local::no_link_above(dir, &e.path)
            .and_then(|()| local::finish(&dest_of(dir, &e.path), e));
        if let Err(err) = finished {
            fail(&mut n, &e.path, &err);
        }
    }
    summary(ctx, &n);
    if let Some(name) = remote.unsafe_names.first() {
        return Err(Error::Misbehaved(Misbehavior::Malformed {
            what: "the file list".into(),
            reason: format!(
                "{} names are not relative paths (first: {name:?}); they were skipped",
                remote.unsafe_names.len()
            ),
        }));
    }
    Ok(ended(&n))
}

/// Links followed at most this deep when a target ends at another link.
const MAX_LINK_CHAIN: usize = 8;

/// Whether a link at `at` to `target` stays inside the mirror: it passes
/// through no link, and if it ends at one, that one is a link of the tree
/// whose own target stays inside (a link already here that the tree does
/// not have could point anywhere).
fn link_inside(
    at: &str,
    target: &str,
    tree: &std::collections::HashMap<&str, Option<&str>>,
    local_link: &dyn Fn(&str) -> bool,
    depth: usize,
) -> bool {
    let through = |p: &str| tree.contains_key(p) || local_link(p);
    if depth > MAX_LINK_CHAIN || !local::target_inside(at, target, &through) {
        return false;
    }
    let end = local::resolve(at, target);
    match tree.get(end.as_str()) {
        Some(Some(next)) => link_inside(&end, next, tree, local_link, depth + 1),
        Some(None) => false,
        None => !local_link(&end),
    }
}

/// A warning on stderr (not under `-q`).
fn warn(ctx: &Ctx, text: &str) {
    if !ctx.quiet {
        eprintln!("framegate: {text}");
    }
}

/// A file that failed: named, counted, skipped.
fn fail(n: &mut Tally, f: &str, e: &Error) {
    n.failed += 1;
    eprintln!("framegate: {}: {}", printable(f), describe(e));
}

fn ended(n: &Tally) -> Mirrored {
    if n.failed == 0 {
        Mirrored::All
    } else {
        Mirrored::Partly
    }
}

fn summary(ctx: &Ctx, n: &Tally) {
    if ctx.json {
        println!(
            "{}",
            json!({
                "files": n.files, "downloaded": n.downloaded, "skipped": n.up_to_date,
                "failed": n.failed, "bytes": n.bytes, "messages": n.messages,
                "dirs": n.dirs, "links": n.links, "links_skipped": n.links_skipped,
                "other_skipped": n.other_skipped, "deleted": n.deleted,
            })
        );
    } else if !ctx.quiet {
        let mut line = format!(
            "{} files: {} downloaded ({} bytes), {} up to date, {} failed; {} directories, {} links",
            n.files, n.downloaded, n.bytes, n.up_to_date, n.failed, n.dirs, n.links
        );
        if n.links_skipped > 0 {
            line.push_str(&format!(" ({} skipped: outside the tree)", n.links_skipped));
        }
        if n.other_skipped > 0 {
            line.push_str(&format!(", {} special files skipped", n.other_skipped));
        }
        if n.deleted > 0 {
            line.push_str(&format!(", {} deleted", n.deleted));
        }
        line.push_str(&format!("; {} messages", n.messages));
        eprintln!("{line}");
    }
}

/// The local path of a listed entry (checked below `dir` when listed).
fn dest_of(dir: &Path, rel: &str) -> PathBuf {
    local_path_below(dir, rel).unwrap_or_else(|| dir.join("."))
}

/// Moves the bar with a large file's partial copy, on top of `base`.
fn follow(pb: ProgressBar, base: u64, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(meta) = tokio::fs::metadata(&path).await {
                pb.set_position(base + meta.len());
            }
            tokio::time::sleep(crate::PROGRESS_POLL).await;
        }
    })
}
