//! Directory listings of plain web servers (nginx's autoindex as JSON or
//! HTML), and the walks built on them.

use framegate_wire::ErrorCode;
use reqwest::header;

use super::{dir_url, send};
use crate::error::{Error, Result};
use crate::http::HttpMedium;

/// Longest listing page read (nginx's JSON for 100,000 entries is ~10 MB).
pub const MAX_LISTING_BYTES: usize = 64 << 20;

/// `(name, is_dir)` of a listing page.
async fn listing(medium: &HttpMedium, path: &str) -> Result<Vec<(String, bool)>> {
    let url = dir_url(medium.base(), path)?;
    let req = medium
        .client()
        .get(url.clone())
        .header(header::ACCEPT, "application/json, text/html;q=0.9");
    let resp = send(medium, req, &url).await?;
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = crate::http::read_at_most(resp, MAX_LISTING_BYTES)
        .await
        .map_err(|e| Error::lost(url.to_string(), e))?
        .map_err(|_| {
            Error::remote(
                ErrorCode::NOT_SUPPORTED,
                format!("the listing at {url} is longer than {MAX_LISTING_BYTES} bytes"),
            )
        })?;
    let mut entries = if ctype.contains("json") {
        parse_json_listing(&body)
    } else if ctype.contains("html") {
        parse_html_listing(&String::from_utf8_lossy(&body))
    } else {
        None
    }
    .ok_or_else(|| {
        Error::remote(
            ErrorCode::NOT_SUPPORTED,
            format!("{url} offers no directory listing this client can read"),
        )
    })?;
    // A listing names entries of this directory: a name that is a path
    // (`/etc/passwd`, `..`, `a/b`, once decoded) is not one.
    entries.retain(|(name, _)| is_entry_name(name));
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries.dedup();
    Ok(entries)
}

/// Whether `name` can be one entry of a directory: not empty, not `.` or
/// `..`, no `/` and no NUL.
pub(crate) fn is_entry_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn parse_json_listing(body: &[u8]) -> Option<Vec<(String, bool)>> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).ok()?;
    items
        .iter()
        .map(|item| {
            let name = item.get("name")?.as_str()?.to_string();
            let is_dir = item.get("type").and_then(|t| t.as_str()) == Some("directory");
            Some((name, is_dir))
        })
        .collect()
}

/// Links of an autoindex HTML page: relative, one path segment.
fn parse_html_listing(html: &str) -> Option<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut rest = html;
    let mut saw_any = false;
    while let Some(pos) = rest.find("href=\"") {
        saw_any = true;
        rest = rest.get(pos + 6..)?;
        let end = rest.find('"')?;
        let href = rest.get(..end)?;
        rest = rest.get(end..)?;
        if href.starts_with('?')
            || href.starts_with('/')
            || href.starts_with("..")
            || href.contains("://")
        {
            continue;
        }
        let is_dir = href.ends_with('/');
        let trimmed = href.trim_end_matches('/');
        if trimmed.is_empty() || trimmed.contains('/') {
            continue;
        }
        let name = percent_encoding::percent_decode_str(trimmed)
            .decode_utf8()
            .ok()?
            .replace("&amp;", "&");
        out.push((name, is_dir));
    }
    saw_any.then_some(out)
}

pub(crate) async fn list_dir(medium: &HttpMedium, path: &str) -> Result<Vec<String>> {
    Ok(listing(medium, path)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

/// Most directories walked for one `iter_files_recursive` over plain HTTP.
pub const MAX_PLAIN_WALK_DIRS: usize = 100_000;

/// Deepest directory a plain walk goes into (a symlink loop served as
/// directories, `d/loop -> .`, would otherwise nest until URLs break).
pub const MAX_PLAIN_WALK_DEPTH: usize = 64;

/// Bytes of path names a plain walk collects (its memory: paths grow with
/// depth, so entries alone do not bound it).
pub const MAX_PLAIN_WALK_BYTES: usize = 256 << 20;

pub(crate) async fn iter_files_recursive(medium: &HttpMedium, path: &str) -> Result<Vec<String>> {
    let too_large = |what: &str| {
        Error::remote(
            ErrorCode::NOT_SUPPORTED,
            format!("tree too large to walk over plain HTTP ({what})"),
        )
    };
    let mut files = Vec::new();
    let mut stack = vec![(String::new(), 0usize)];
    let (mut walked, mut bytes) = (0usize, 0usize);
    while let Some((rel, depth)) = stack.pop() {
        walked += 1;
        if walked > MAX_PLAIN_WALK_DIRS {
            return Err(too_large(&format!(
                "over {MAX_PLAIN_WALK_DIRS} directories"
            )));
        }
        let dir = if rel.is_empty() {
            path.to_string()
        } else {
            format!("{path}/{rel}")
        };
        for (name, is_dir) in listing(medium, &dir).await? {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // Every path kept (files, and directories waiting) counts.
            bytes += child.len();
            if bytes > MAX_PLAIN_WALK_BYTES {
                return Err(too_large(&format!(
                    "over {MAX_PLAIN_WALK_BYTES} bytes of names"
                )));
            }
            if is_dir {
                if depth + 1 > MAX_PLAIN_WALK_DEPTH {
                    return Err(too_large(&format!(
                        "deeper than {MAX_PLAIN_WALK_DEPTH} directories at {child} (a link loop?)"
                    )));
                }
                stack.push((child, depth + 1));
            } else {
                files.push(child);
            }
        }
    }
    files.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_autoindex_links() {
        let html = r#"<html><body><h1>Index</h1><a href="../">../</a>
<a href="a%20b.txt">a b.txt</a> 01-Jan
<a href="sub/">sub/</a>
<a href="?C=N;O=D">Name</a></body></html>"#;
        assert_eq!(
            parse_html_listing(html).unwrap(),
            vec![("a b.txt".into(), false), ("sub".into(), true)]
        );
    }
}
