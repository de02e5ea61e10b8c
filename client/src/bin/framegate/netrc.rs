//! Tokens from `~/.netrc` (or `$NETRC`), curl's and git's habit: the
//! `password` of the `machine` entry for the URL's host is the bearer
//! token, used when no --token, --token-file or FRAMEGATE_TOKEN is given
//! (a `default` entry is not: a token belongs to one server).

use std::path::{Path, PathBuf};

/// The netrc file: `$NETRC`, else `~/.netrc`.
pub(crate) fn netrc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETRC") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".netrc"))
}

/// The token for `host` in the netrc file at `path`, if it has one.
/// A file others may read is used, with a warning (as curl does) unless
/// `quiet`.
pub(crate) fn token_for(path: &Path, host: &str, quiet: bool) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = lookup(&text, host)?;
    use std::os::unix::fs::PermissionsExt;
    if !quiet && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        eprintln!(
            "framegate: warning: {} can be read by other users (chmod 600 it)",
            path.display()
        );
    }
    Some(token)
}

/// The words of a netrc file: whitespace-separated, `"quoted strings"`
/// with `\"` and `\\` escapes (curl's reading); a line whose first word
/// starts with `#` is a comment; `macdef NAME` and its lines up to the
/// next empty line are skipped.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_macro = false;
    for line in text.lines() {
        if in_macro {
            in_macro = !line.trim().is_empty();
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut chars = line.chars().peekable();
        let mut line_words = Vec::new();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&first) = chars.peek() else { break };
            let mut word = String::new();
            if first == '"' {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
            line_words.push(word);
        }
        if line_words.first().is_some_and(|w| w == "macdef") {
            in_macro = true;
            continue;
        }
        out.extend(line_words);
    }
    out
}

/// The `password` of `host`'s `machine` entry. A `default` entry is not
/// used: its password is usually an FTP anonymous one, and a bearer token
/// belongs to one server (curl would send it to any host).
fn lookup(text: &str, host: &str) -> Option<String> {
    let words = words(text);
    let mut ours = false;
    let mut i = 0;
    while i < words.len() {
        match words[i].as_str() {
            "machine" => {
                ours = words.get(i + 1).is_some_and(|m| m == host);
                i += 2;
            }
            "default" => {
                ours = false;
                i += 1;
            }
            "password" => {
                if ours {
                    return words.get(i + 1).filter(|t| !t.is_empty()).cloned();
                }
                i += 2;
            }
            "login" | "account" => i += 2,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn finds_the_hosts_password_and_never_the_default() {
        let text = "machine a.example login u password tokA\n\
                    # a comment\n\
                    macdef init\nmachine b.example password evil\n\n\
                    machine b.example\n  login #x\n  password tokB\n\
                    machine q.example password \"two words \\\" here\"\n\
                    machine nopw.example login me\n\
                    default login anon password tokD\n";
        assert_eq!(lookup(text, "a.example").as_deref(), Some("tokA"));
        assert_eq!(lookup(text, "b.example").as_deref(), Some("tokB"));
        assert_eq!(
            lookup(text, "q.example").as_deref(),
            Some("two words \" here")
        );
        assert_eq!(lookup(text, "c.example"), None, "default is not used");
        assert_eq!(lookup(text, "nopw.example"), None);
        assert_eq!(lookup("machine a password x", "b"), None);
        assert_eq!(lookup("", "a"), None);
    }
}
