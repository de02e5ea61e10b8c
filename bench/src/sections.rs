//! Sections of BENCHMARKS.md written by the separate bench binaries (e.g.
//! `--bin object_store`), between `<!-- section:NAME -->` and
//! `<!-- /section:NAME -->`: each binary replaces its own, and the main
//! bench keeps them when it rewrites the file.

// Each binary uses one half.
#![allow(dead_code)]

use std::path::Path;

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- section:{name} -->"),
        format!("<!-- /section:{name} -->"),
    )
}

/// Every section in `text`, in order, markers included.
pub(crate) fn sections(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!-- section:") {
        let name_end = rest[start..].find(" -->").map_or(rest.len(), |i| start + i);
        let name = &rest[start + "<!-- section:".len()..name_end];
        let (_, close) = markers(name);
        let Some(end) = rest[start..].find(&close).map(|i| start + i + close.len()) else {
            break;
        };
        out.push('\n');
        out.push_str(&rest[start..end]);
        out.push('\n');
        rest = &rest[end..];
    }
    out
}

/// Writes `body` as the section `name` of `file`, replacing the one there
/// or adding it at the end.
pub(crate) fn replace_section(file: &Path, name: &str, body: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (open, close) = markers(name);
    let block = format!("{open}\n{body}\n{close}");
    let new = match (text.find(&open), text.find(&close)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &text[..a], &text[b + close.len()..]),
        _ => format!("{}\n{block}\n", text.trim_end()),
    };
    std::fs::write(file, new).unwrap();
}
