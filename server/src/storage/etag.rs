//! File versions as validators: the one entity tag that `stat`, `get` and
//! `readv` (`if-match`) and plain HTTP (`ETag`, `If-Match`, `If-Range`)
//! all speak, so a client can resume a download without ever splicing two
//! versions of a file.
//!
//! A local file's tag is derived from its inode, size and modification
//! time in nanoseconds, read from the metadata of the *open* file wherever
//! bytes are sent (the tag then describes exactly those bytes, even if the
//! path is replaced meanwhile). The device number is left out: it is not
//! stable across reboots or across hosts that mount one tree (two
//! instances behind a load balancer), and the tag is only ever compared
//! for one path. It reveals no path.

use std::fmt;

/// A file's version as an entity tag, without the HTTP quotes (see the
/// module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Etag(String);

impl Etag {
    /// The tag of a local file: `ino-size-mtime_ns`, each in lowercase hex.
    pub(crate) fn of(meta: &cap_std::fs::Metadata) -> Etag {
        use cap_std::fs::MetadataExt as _;
        // Wrapping: a time before 1970 still gives a tag (and no overflow
        // panic); it is unique enough for what it is compared with.
        let mtime_ns = (meta.mtime() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(meta.mtime_nsec() as u64);
        Etag(format!("{:x}-{:x}-{mtime_ns:x}", meta.ino(), meta.len()))
    }

    /// A tag from another storage's text: `None` unless it is 1 to 256
    /// bytes of the characters an HTTP entity tag allows (visible ASCII but
    /// `"`).
    pub fn new(text: impl Into<String>) -> Option<Etag> {
        let text = text.into();
        let allowed = |b: u8| b.is_ascii_graphic() && b != b'"';
        (!text.is_empty() && text.len() <= 256 && text.bytes().all(allowed)).then_some(Etag(text))
    }

    /// The tag as `stat` answers it and `if-match` takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The HTTP form: the tag in double quotes (a strong entity tag).
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_open_file_and_reveal_no_path() {
        let dir = tempfile::tempdir().unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        root.write("secret-name.txt", b"one").unwrap();
        let open = root.open("secret-name.txt").unwrap();
        let first = Etag::of(&open.metadata().unwrap());
        assert!(!first.as_str().contains("secret"));
        assert_eq!(first.quoted(), format!("\"{first}\""));
        assert_eq!(Etag::of(&root.metadata("secret-name.txt").unwrap()), first);
        // Replaced by rename: the path's tag changes, the open file's not.
        root.write("new.tmp", b"two").unwrap();
        root.rename("new.tmp", &root, "secret-name.txt").unwrap();
        assert_ne!(Etag::of(&root.metadata("secret-name.txt").unwrap()), first);
        assert_eq!(Etag::of(&open.metadata().unwrap()), first);
    }

    #[test]
    fn foreign_tags_are_checked() {
        assert_eq!(Etag::new("abc-1").unwrap().as_str(), "abc-1");
        assert!(Etag::new("").is_none());
        assert!(Etag::new("a\"b").is_none());
        assert!(Etag::new("a b").is_none());
        assert!(Etag::new("x".repeat(257)).is_none());
    }
}
