//! Tokens from `~/.netrc` (or `$NETRC`), curl's and git's habit: the
//! `password` of the `machine` entry for the URL's host (or of `default`)
//! is the bearer token, used when no --token, --token-file or
//! FRAMEGATE_TOKEN is given.

use std::path::{Path, PathBuf};

/// The netrc file: `$NETRC`, else `~/.netrc`.
pub(crate) fn netrc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETRC") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".netrc"))
}

/// The token for `host` in the netrc file at `path`, if it has one.
/// A file others may read is used, with a warning (as curl does).
pub(crate) fn token_for(path: &Path, host: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = lookup(&text, host)?;
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        eprintln!(
            "framegate: warning: {} can be read by other users (chmod 600 it)",
            path.display()
        );
    }
    Some(token)
}

/// The `password` of `host`'s entry, else of `default`.
fn lookup(text: &str, host: &str) -> Option<String> {
    let mut words = Vec::new();
    // `macdef NAME` runs to the next empty line: not credentials.
    let mut in_macro = false;
    for line in text.lines() {
        if in_macro {
            in_macro = !line.trim().is_empty();
            continue;
        }
        let mut it = line.split_whitespace();
        while let Some(w) = it.next() {
            if w.starts_with('#') && words.last().is_none_or(|l| *l != "password") {
                break;
            }
            if w == "macdef" {
                it.next();
                in_macro = true;
                break;
            }
            words.push(w);
        }
    }
    let mut found: Option<String> = None;
    let mut default: Option<String> = None;
    // Which entry the words belong to: Some(true) ours, Some(false) another,
    // None `default`.
    let mut current: Option<Option<bool>> = None;
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "machine" => {
                current = Some(Some(words.get(i + 1) == Some(&host)));
                i += 2;
            }
            "default" => {
                current = Some(None);
                i += 1;
            }
            "password" => {
                let value = words.get(i + 1).map(|s| s.to_string());
                match current {
                    Some(Some(true)) if found.is_none() => found = value,
                    Some(None) if default.is_none() => default = value,
                    _ => {}
                }
                i += 2;
            }
            "login" | "account" => i += 2,
            _ => i += 1,
        }
    }
    found.or(default).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn finds_the_hosts_password_or_the_default() {
        let text = "machine a.example login u password tokA\n\
                    # a comment\n\
                    macdef init\nmachine b.example password evil\n\n\
                    machine b.example\n  login x\n  password tokB\n\
                    default login anon password tokD\n";
        assert_eq!(lookup(text, "a.example").as_deref(), Some("tokA"));
        assert_eq!(lookup(text, "b.example").as_deref(), Some("tokB"));
        assert_eq!(lookup(text, "c.example").as_deref(), Some("tokD"));
        assert_eq!(lookup("machine a password x", "b"), None);
        assert_eq!(lookup("", "a"), None);
    }
}
