//! The served tree: path rules of PROTOCOL.md §9.4 and error mapping.
//!
//! Every file operation goes through a `cap_std::fs::Dir` opened on the base
//! directory of the message, so `..`, absolute symlinks and symlinks leading
//! outside are refused by the operating-system-level sandbox, not by string
//! checks. [`clean_path`] adds the lexical rules on top (no NUL, not
//! absolute, not leaving the base, no `.framegate` component) so that a
//! hostile path is answered with a precise code before any system call.

use std::io;
use std::path::{Component, Path, PathBuf};

use framegate_wire::ErrorCode;

use crate::answer::CommandError;

/// The reserved path component: endpoints live under it, it holds no files.
pub const RESERVED_COMPONENT: &str = ".framegate";

/// Prefix of staging files of uploads (hidden from listings).
pub const TEMP_PREFIX: &str = ".framegate-upload-";

/// Normalizes a command path (bytes, `/`-separated, relative to the base).
/// Empty or `.` is the base itself (returned as `.`).
pub fn clean_path(raw: &[u8]) -> Result<PathBuf, CommandError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| CommandError::new(ErrorCode::INVALID_PATH, "path is not UTF-8"))?;
    if text.contains('\0') {
        return Err(CommandError::new(
            ErrorCode::INVALID_PATH,
            "path contains a NUL byte",
        ));
    }
    if text.starts_with('/') || Path::new(text).has_root() {
        return Err(CommandError::new(
            ErrorCode::INVALID_PATH,
            "path is absolute",
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(CommandError::new(
                        ErrorCode::PATH_OUTSIDE_BASE,
                        "path leaves the base",
                    ));
                }
            }
            RESERVED_COMPONENT => {
                return Err(CommandError::new(
                    ErrorCode::INVALID_PATH,
                    "`.framegate` is reserved",
                ));
            }
            other if other.starts_with(TEMP_PREFIX) => {
                return Err(CommandError::new(
                    ErrorCode::INVALID_PATH,
                    "reserved file name",
                ));
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Ok(PathBuf::from("."));
    }
    let path: PathBuf = parts.iter().collect();
    // Belt and braces: nothing but normal components may remain.
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(CommandError::new(
            ErrorCode::INVALID_PATH,
            "path has a bad component",
        ));
    }
    Ok(path)
}

/// Splits a cleaned path into parent and final name; the base itself has no name.
pub(crate) fn split_parent(path: &Path) -> Result<(PathBuf, String), CommandError> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        CommandError::new(
            ErrorCode::INVALID_PATH,
            "the base itself cannot be the target",
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

/// Maps an I/O error to a §10 code. Messages never include server paths:
/// `path` is the client's own (relative) path.
pub(crate) fn io_error(err: &io::Error, path: &Path) -> CommandError {
    let shown = path.display();
    let (code, what) = match err.kind() {
        io::ErrorKind::NotFound => (ErrorCode::NO_SUCH_FILE, "no such file"),
        io::ErrorKind::AlreadyExists => (ErrorCode::FILE_EXISTS, "file exists"),
        io::ErrorKind::NotADirectory => (ErrorCode::NOT_A_DIRECTORY, "not a directory"),
        io::ErrorKind::IsADirectory => (ErrorCode::IS_A_DIRECTORY, "is a directory"),
        io::ErrorKind::DirectoryNotEmpty => (ErrorCode::DIRECTORY_NOT_EMPTY, "directory not empty"),
        // cap-std reports sandbox escapes as PermissionDenied with this text.
        io::ErrorKind::PermissionDenied if err.to_string().contains("outside") => {
            (ErrorCode::PATH_OUTSIDE_BASE, "path leads outside the base")
        }
        io::ErrorKind::PermissionDenied => (ErrorCode::PERMISSION_DENIED, "permission denied"),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidFilename => {
            (ErrorCode::INVALID_PATH, "invalid path")
        }
        _ if err.raw_os_error() == Some(40) => (ErrorCode::INVALID_PATH, "too many symbolic links"),
        _ if err.raw_os_error() == Some(18) => (ErrorCode::NOT_SUPPORTED, "cross-device rename"),
        _ => {
            tracing::warn!(error = %err, path = %shown, "file operation failed");
            (ErrorCode::INTERNAL, "input/output error")
        }
    };
    CommandError::new(code, format!("{what}: {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_rules() {
        assert_eq!(clean_path(b"").unwrap(), PathBuf::from("."));
        assert_eq!(clean_path(b"./a//b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(clean_path(b"a/../b").unwrap(), PathBuf::from("b"));
        let code = |p: &[u8]| clean_path(p).unwrap_err().code;
        assert_eq!(code(b".."), ErrorCode::PATH_OUTSIDE_BASE);
        assert_eq!(code(b"a/../../b"), ErrorCode::PATH_OUTSIDE_BASE);
        assert_eq!(code(b"/etc/passwd"), ErrorCode::INVALID_PATH);
        assert_eq!(code(b"a\0b"), ErrorCode::INVALID_PATH);
        assert_eq!(code(b"\xff"), ErrorCode::INVALID_PATH);
        assert_eq!(code(b"x/.framegate/ro"), ErrorCode::INVALID_PATH);
    }
}
