//! What a mirror copies: the remote tree as a list of entries (from `tree`
//! where the server offers it, else a file listing and a `stat` per file),
//! less what `--exclude` names and what could not land below the local
//! directory.

use std::path::Path;

use framegate_client::{Error, FileKind, Transport, TreeEntry, local_path_below};

use super::MIRROR_BATCH_FILES;

/// The remote tree, and what listing it found.
pub(super) struct Remote {
    /// Entries to mirror, sorted by path (parents before children).
    pub(super) entries: Vec<TreeEntry>,
    /// Files whose `stat` failed (named, counted as failed).
    pub(super) failed: Vec<(String, Error)>,
    /// Names that are not relative paths below the directory (a server's
    /// listing never writes outside it).
    pub(super) unsafe_names: Vec<String>,
    /// Whether directories and links were listed (`tree`): without it only
    /// files are mirrored and `--delete` keeps local directories.
    pub(super) whole_tree: bool,
    /// Messages sent.
    pub(super) messages: u64,
}

/// Lists the tree below `t`'s URL.
pub(super) async fn list(t: &Transport, dir: &Path, filter: &Filter) -> Result<Remote, Error> {
    let mut remote = Remote {
        entries: Vec::new(),
        failed: Vec::new(),
        unsafe_names: Vec::new(),
        whole_tree: t.supports("tree"),
        messages: 1,
    };
    // A tree too large for the server's `tree` bound (`not-supported`) is
    // listed as files, as from a server without `tree`.
    let tree = if remote.whole_tree {
        match t.tree("").await {
            Ok(entries) => Some(entries),
            Err(e) if e.is(&framegate_client::ErrorCode::NOT_SUPPORTED) => {
                remote.whole_tree = false;
                remote.messages += 1;
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let listed = if let Some(entries) = tree {
        entries
    } else {
        let files = t.iter_files_recursive("").await?;
        let mut entries = Vec::with_capacity(files.len());
        // A `stat` per file, in batches (skipping excluded and unsafe names
        // first: they are never asked about).
        let (files, unsafe_names): (Vec<String>, Vec<String>) = files
            .into_iter()
            .filter(|f| !filter.excludes(f, false))
            .partition(|f| local_path_below(dir, f).is_some());
        remote.unsafe_names = unsafe_names;
        for chunk in files.chunks(MIRROR_BATCH_FILES) {
            let mut batch = t.batch();
            let slots: Vec<_> = chunk.iter().map(|f| batch.stat(f)).collect();
            let mut results = batch.send().await?;
            remote.messages += 1;
            for (f, slot) in chunk.iter().zip(slots) {
                match results.take(slot) {
                    Ok(s) => entries.push(TreeEntry {
                        kind: FileKind::File,
                        mode: s.mode,
                        path: f.clone(),
                        size: s.size,
                        mtime: s.mtime,
                        target: None,
                    }),
                    Err(e) => remote.failed.push((f.clone(), e)),
                }
            }
        }
        entries
    };
    for e in listed {
        if filter.excludes(&e.path, e.kind == FileKind::Dir) {
            continue;
        }
        if local_path_below(dir, &e.path).is_none() {
            remote.unsafe_names.push(e.path);
            continue;
        }
        remote.entries.push(e);
    }
    remote
        .entries
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(remote)
}

/// `--exclude` patterns, rsync's way: a pattern without `/` matches a name
/// at any depth, one with `/` the path from the top (a leading `/` anchors
/// it there); a trailing `/` matches directories only; `*` stays within a
/// name, `**` crosses `/`. An excluded directory excludes everything below
/// it, and `--delete` leaves excluded local files alone.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    /// (pattern, directories only)
    names: Vec<(glob::Pattern, bool)>,
    paths: Vec<(glob::Pattern, bool)>,
}

impl Filter {
    pub(crate) fn new(patterns: &[String]) -> Result<Filter, Error> {
        let mut filter = Filter::default();
        for p in patterns {
            let dir_only = p.ends_with('/');
            let text = p.trim_end_matches('/');
            let pattern = glob::Pattern::new(text.trim_start_matches('/'))
                .map_err(|e| Error::Usage(format!("--exclude {p:?}: {e}")))?;
            if text.contains('/') {
                filter.paths.push((pattern, dir_only));
            } else {
                filter.names.push((pattern, dir_only));
            }
        }
        Ok(filter)
    }

    /// Whether `path` (relative, `/`-separated; a directory if `is_dir`) or
    /// a directory above it is excluded.
    pub(crate) fn excludes(&self, path: &str, is_dir: bool) -> bool {
        if self.names.is_empty() && self.paths.is_empty() {
            return false;
        }
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let mut end = 0;
        for (i, part) in parts.iter().enumerate() {
            end += part.len();
            let prefix = &path[..end];
            // Components above the last are directories.
            let a_dir = is_dir || i + 1 < parts.len();
            let hit = |(p, dir_only): &(glob::Pattern, bool), text: &str| {
                (a_dir || !dir_only) && p.matches_with(text, options)
            };
            if self.names.iter().any(|p| hit(p, part)) || self.paths.iter().any(|p| hit(p, prefix))
            {
                return true;
            }
            end += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_match_like_rsync() {
        let f = Filter::new(&[
            "*.tmp".into(),
            "/build".into(),
            "a/*/c".into(),
            "out/".into(),
        ])
        .unwrap();
        assert!(f.excludes("out", true) && f.excludes("x/out/f", false));
        assert!(
            !f.excludes("out", false),
            "a file named out is not a directory"
        );
        assert!(f.excludes("x.tmp", false));
        assert!(f.excludes("deep/er/x.tmp", false));
        assert!(f.excludes("build", false));
        assert!(f.excludes("build/out/x", false));
        assert!(!f.excludes("src/build", false), "anchored at the top");
        assert!(f.excludes("a/b/c", false));
        assert!(f.excludes("a/b/c/d", false));
        assert!(!f.excludes("a/b/x/c", false), "* stays within a name");
        assert!(!f.excludes("x.tmpl", false));
        let none = Filter::new(&[]).unwrap();
        assert!(!none.excludes("anything", false));
        assert!(Filter::new(&["[".into()]).is_err());
    }
}
