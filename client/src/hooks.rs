//! What a caller hears from the server besides answers: text-output and
//! progress (through hooks), and the version of a file an answer comes
//! from (a leaf module: every medium uses it).

use std::sync::Arc;

use framegate_wire::ProgressPayload;

/// A callback for rendered text-output.
pub type TextHook = Arc<dyn Fn(&str) + Send + Sync>;

/// A callback for progress reports.
pub type ProgressHook = Arc<dyn Fn(&ProgressPayload) + Send + Sync>;

/// Called with text-output (rendered) and progress of a request.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Text-output messages (already rendered).
    pub on_text: Option<TextHook>,
    /// Progress reports.
    pub on_progress: Option<ProgressHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

/// The version of the file a `get`/`readv` answer is read from, as the
/// server announced it before the bytes: what a later `readv` names in
/// `if-match` to continue the same version, or fail `file-changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validator {
    /// The file's etag.
    pub(crate) etag: String,
    /// The answer's length in bytes.
    pub(crate) total: u64,
}

impl Validator {
    /// The validator a progress report carries, if it is one: position 0,
    /// topic `get` or `readv`, the etag as its item.
    pub(crate) fn from_progress(progress: &ProgressPayload) -> Option<Validator> {
        let file_answer = progress.topic == "get" || progress.topic == "readv";
        match &progress.item {
            Some(etag) if file_answer && progress.pos == 0 && !etag.is_empty() => Some(Validator {
                etag: etag.clone(),
                total: progress.total,
            }),
            _ => None,
        }
    }
}
