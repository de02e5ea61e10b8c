//! An S3 bucket (or any store the `object_store` crate speaks) as the
//! served tree: the second implementation of the storage seam.
//!
//! Paths map to keys below a prefix (`s3://BUCKET/PREFIX`): the cleaned
//! path `a/b.txt` is the key `PREFIX/a/b.txt`, each name encoded as
//! `object_store` encodes path parts (control characters and
//! ``\ { ^ } % ` ] " > [ ~ < # | * ?`` percent-encoded) and decoded back in
//! listings. A directory is a prefix that has keys below it; `mkdir` makes
//! one visible while empty with a marker key `DIR/.framegate` (the reserved
//! name, hidden from every listing). What each command does, and what is
//! and is not atomic, is `docs/object-store.md`.
//!
//! Every request to the store holds one of [`ObjectConfig::max_requests`]
//! permits (a streamed `get` holds it until its body was sent), so a
//! message of 1,000 `get`s puts at most that many requests in flight.
//! Store errors reach clients as codes with a fixed text (`no-such-file`,
//! `permission-denied`, `file-changed`, `busy` for throttling); the store's
//! own message, which names the endpoint and the key, goes to the log only,
//! and no credential is ever in either.

mod ranges;
mod read;
mod write;

pub use write::SINGLE_PUT_MAX;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use framegate_wire::ErrorCode;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::{Path as Key, PathPart};
use object_store::{ClientOptions, RetryConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    EntryMeta, FileRead, ReadRanges, StagedUpload, Storage, StorageFuture, Tally,
    local::DEFAULT_STAGING_WAIT,
};
use crate::answer::CommandError;
use crate::tree::RESERVED_COMPONENT;

/// Requests in flight to the store unless configured otherwise.
pub const DEFAULT_STORE_REQUESTS: usize = 64;

/// How an object store is reached; built from `serve s3://BUCKET/PREFIX`,
/// its flags and the `AWS_*` environment.
#[derive(Clone)]
pub struct ObjectConfig {
    /// The bucket.
    pub bucket: String,
    /// Keys below this prefix are the served tree (no leading or trailing
    /// `/`; empty for the whole bucket).
    pub prefix: String,
    /// The S3 endpoint (`http(s)://host:port`); `None` for AWS's.
    pub endpoint: Option<String>,
    /// The region (`AWS_REGION` / `AWS_DEFAULT_REGION` when `None`).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most self-hosted
    /// stores (Garage, MinIO) want; else virtual-hosted style.
    pub path_style: bool,
    /// Plain HTTP to the endpoint (refused unless it is a loopback one).
    pub allow_http: bool,
    /// Requests in flight to the store at once, over the server.
    pub max_requests: usize,
    /// Connecting to the store.
    pub connect_timeout: Duration,
    /// One request to the store, until its response starts (a streamed
    /// body is then bounded by the send timeout of the client it goes to).
    pub request_timeout: Duration,
    /// Retries of a failed or throttled request, and how long they may
    /// take in all; then the command fails (`busy` when throttled).
    pub max_retries: usize,
    /// See `max_retries`.
    pub retry_timeout: Duration,
    /// Uploads spooled at once (a temporary file each) before they are
    /// sent to the store.
    pub max_staging_files: usize,
    /// How long an upload waits for a spool file before it fails `busy`.
    pub staging_wait: Duration,
}

impl std::fmt::Debug for ObjectConfig {
    // Credentials never are in it, but say so by construction: only what
    // an operator may see in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("max_requests", &self.max_requests)
            .finish_non_exhaustive()
    }
}

impl ObjectConfig {
    /// Parses `s3://BUCKET[/PREFIX]`; other settings at their defaults.
    pub fn from_url(url: &str) -> Result<ObjectConfig, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url}: not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: no bucket"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.contains('\0')
        {
            return Err(format!("{url}: the prefix must be plain names"));
        }
        Ok(ObjectConfig {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: None,
            region: None,
            path_style: false,
            allow_http: false,
            max_requests: DEFAULT_STORE_REQUESTS,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            max_staging_files: 64,
            staging_wait: DEFAULT_STAGING_WAIT,
        })
    }

    /// The store client: credentials and anything not set here from the
    /// `AWS_*` environment.
    fn build(&self) -> Result<AmazonS3, String> {
        // The store's HTTP client (reqwest 0.13, built without a TLS
        // provider of its own) needs the process's: ring, as everywhere
        // in this workspace. Installing it again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&self.bucket);
        if let Some(endpoint) = &self.endpoint {
            let shown = without_userinfo(endpoint);
            if endpoint.starts_with("http://") && !self.allow_http {
                return Err(format!(
                    "the endpoint {shown} is plain HTTP: pass --s3-allow-http (loopback only)"
                ));
            }
            if self.allow_http && !is_loopback_url(endpoint) {
                return Err(format!(
                    "--s3-allow-http is for loopback endpoints only, not {shown}"
                ));
            }
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        let retry = RetryConfig {
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
            ..RetryConfig::default()
        };
        builder
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_retry(retry)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(self.connect_timeout)
                    .with_timeout(self.request_timeout)
                    .with_allow_http(self.allow_http),
            )
            .build()
            .map_err(|e| format!("the object store settings are incomplete: {}", clean(&e)))
    }
}

/// Whether `url` names a loopback host (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    // `user:secret@host:port`: the host is after the last `@`.
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The parts of the store shared by every view.
struct Shared {
    store: AmazonS3,
    /// Requests in flight (`max_requests`).
    requests: Arc<Semaphore>,
    /// Spool files for uploads (`max_staging_files`).
    staging: Arc<Semaphore>,
    staging_wait: Duration,
    writes: bool,
}

/// A view of the bucket's prefix rooted at a base "directory".
#[derive(Clone)]
pub struct ObjectStorage {
    shared: Arc<Shared>,
    /// The key prefix of this view (the bucket prefix plus the base).
    root: Key,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("root", &self.root.as_ref())
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Connects to the store `config` names and checks that the bucket
    /// answers (a listing of one page of the prefix): a missing bucket,
    /// refused credentials or an unreachable endpoint fail here, at start.
    pub async fn open(config: &ObjectConfig, writes: bool) -> Result<ObjectStorage, String> {
        let store = config.build()?;
        let storage = ObjectStorage {
            shared: Arc::new(Shared {
                store,
                requests: Arc::new(Semaphore::new(config.max_requests.max(1))),
                staging: Arc::new(Semaphore::new(config.max_staging_files.max(1))),
                staging_wait: config.staging_wait,
                writes,
            }),
            root: Key::from_iter(config.prefix.split('/').filter(|p| !p.is_empty())),
        };
        let deadline = config.connect_timeout + config.request_timeout + config.retry_timeout;
        match tokio::time::timeout(deadline, storage.probe()).await {
            Ok(Ok(())) => Ok(storage),
            Ok(Err(err)) => Err(format!(
                "the bucket {} cannot be listed: {err}",
                config.bucket
            )),
            Err(_) => Err(format!(
                "the object store did not answer within {}",
                humantime::format_duration(deadline)
            )),
        }
    }

    /// One listing request of at most one key: the store, the bucket and
    /// the credentials work.
    async fn probe(&self) -> Result<(), String> {
        let _permit = self.permit().await.map_err(|e| e.message)?;
        read::first_key(self, &self.root)
            .await
            .map(|_| ())
            .map_err(|e| {
                let text = clean(&e);
                match kind_of(&e) {
                    Kind::NotFound => format!("no such bucket: {text}"),
                    Kind::Refused => format!("access refused (check the credentials): {text}"),
                    Kind::Unreachable => format!("cannot reach the object store: {text}"),
                    _ => text,
                }
            })
    }

    /// A permit for one request to the store.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, CommandError> {
        self.shared
            .requests
            .clone()
            .acquire_owned()
            .await
            .map_err(CommandError::internal)
    }

    /// The key of the cleaned relative path `path` in this view.
    fn key(&self, path: &Path) -> Result<Key, CommandError> {
        let mut key = self.root.clone();
        for component in path.components() {
            match component {
                std::path::Component::Normal(name) => {
                    let name = name.to_str().ok_or_else(|| {
                        CommandError::new(ErrorCode::INVALID_PATH, "a path must be UTF-8")
                    })?;
                    key = key.join(PathPart::from(name));
                }
                std::path::Component::CurDir => {}
                _ => {
                    return Err(CommandError::new(
                        ErrorCode::INVALID_PATH,
                        "a path must be relative names",
                    ));
                }
            }
        }
        Ok(key)
    }

    /// The marker key that keeps the directory `dir` visible while empty.
    fn marker(dir: &Key) -> Key {
        dir.clone().join(RESERVED_COMPONENT)
    }

    fn read_only(&self) -> Result<(), CommandError> {
        if self.shared.writes {
            Ok(())
        } else {
            Err(CommandError::new(
                ErrorCode::READ_ONLY,
                "this server does not write to its store",
            ))
        }
    }
}

/// The store's error text without what clients must not see: kept for
/// the log (it names the endpoint and the key, never a credential).
fn clean(err: &dyn std::fmt::Display) -> String {
    let text = without_userinfo(&err.to_string());
    let mut cut: String = text.chars().take(512).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// `text` with the user information (`user:secret@`) of every URL in it
/// removed: an endpoint given as `https://key:secret@host` must not reach
/// a message or the log.
fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = tail.get(..authority_end).unwrap_or_default();
        let host_from = authority.rfind('@').map_or(0, |i| i + 1);
        out.push_str(authority.get(host_from..).unwrap_or_default());
        rest = tail.get(authority_end..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// What a store error means for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NotFound,
    Changed,
    Exists,
    Refused,
    NotSupported,
    /// The store throttled us (429, 503, `SlowDown`) or did not answer in
    /// time: retry later.
    Throttled,
    /// The store could not be reached (connection refused, DNS, TLS).
    Unreachable,
    Failed,
}

/// The meaning of a store error: its variant; else the HTTP client's own
/// error kind, found in its source chain (a timed-out request, a refused
/// connection); else the status and S3 code the S3 client's generic error
/// names in its text (`status code: 503 …`, `<Code>SlowDown</Code>`).
/// Only those forms are matched, not bare words: the text also holds the
/// key and the retry settings (`retry_timeout: 15s` once made every
/// refused connection look like a timeout).
fn kind_of(err: &object_store::Error) -> Kind {
    use object_store::Error as E;
    use object_store::client::{HttpError, HttpErrorKind};
    match err {
        E::NotFound { .. } => return Kind::NotFound,
        E::Precondition { .. } | E::NotModified { .. } => return Kind::Changed,
        E::AlreadyExists { .. } => return Kind::Exists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => return Kind::Refused,
        E::NotSupported { .. } | E::NotImplemented { .. } => return Kind::NotSupported,
        _ => {}
    }
    let text = err.to_string();
    let says = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let status = |codes: &[u16]| {
        codes
            .iter()
            .any(|c| text.contains(&format!("status code: {c} ")))
    };
    let code = |names: &[&str]| {
        names
            .iter()
            .any(|n| text.contains(&format!("<Code>{n}</Code>")))
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            match http.kind() {
                HttpErrorKind::Timeout => return Kind::Throttled,
                HttpErrorKind::Connect => return Kind::Unreachable,
                _ => {}
            }
        }
        source = e.source();
    }
    if status(&[404]) || code(&["NoSuchBucket", "NoSuchKey"]) {
        Kind::NotFound
    } else if status(&[401, 403])
        || code(&[
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ])
    {
        Kind::Refused
    } else if status(&[412]) || code(&["PreconditionFailed"]) {
        Kind::Changed
    } else if status(&[429, 503]) || code(&["SlowDown"]) || says(&["Too Many Requests"]) {
        Kind::Throttled
    } else {
        Kind::Failed
    }
}

/// A store error as a command error: a code and a fixed text; the store's
/// own message is logged, not sent (it names the endpoint and the key).
pub(crate) fn store_error(err: object_store::Error, path: &Path) -> CommandError {
    let (code, text) = match kind_of(&err) {
        Kind::NotFound => (ErrorCode::NO_SUCH_FILE, "no such file"),
        Kind::Changed => (
            ErrorCode::FILE_CHANGED,
            "the object is no longer the version asked for",
        ),
        Kind::Exists => (ErrorCode::FILE_EXISTS, "the object exists"),
        Kind::Refused => (
            ErrorCode::PERMISSION_DENIED,
            "the object store refused access",
        ),
        Kind::NotSupported => (
            ErrorCode::NOT_SUPPORTED,
            "the object store does not support this",
        ),
        Kind::Throttled => (
            ErrorCode::BUSY,
            "the object store is busy (throttled or slow); retry later",
        ),
        Kind::Unreachable => (
            ErrorCode::INTERNAL,
            "the object store cannot be reached; see the server log",
        ),
        Kind::Failed => (
            ErrorCode::INTERNAL,
            "the object store failed; see the server log",
        ),
    };
    if code == ErrorCode::INTERNAL || code == ErrorCode::BUSY {
        tracing::warn!(error = %clean(&err), path = %path.display(), "object store request failed");
    } else {
        tracing::debug!(error = %clean(&err), "object store answered");
    }
    CommandError::new(code, text)
}

impl Storage for ObjectStorage {
    fn base(&self, path: &Path) -> StorageFuture<'_, Arc<dyn Storage>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let root = self.key(&path)?;
            if root != self.root && !read::is_dir(self, &root).await? {
                return Err(CommandError::new(
                    ErrorCode::NO_SUCH_FILE,
                    "no such directory",
                ));
            }
            Ok(Arc::new(ObjectStorage {
                shared: self.shared.clone(),
                root,
            }) as Arc<dyn Storage>)
        })
    }

    fn health(&self) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let _permit = self.permit().await?;
            read::first_key(self, &self.root)
                .await
                .map(|_| ())
                .map_err(|e| store_error(e, Path::new(".")))
        })
    }

    fn read(
        &self,
        path: &Path,
        ranges: ReadRanges,
        if_match: Option<&str>,
    ) -> StorageFuture<'_, FileRead> {
        let path = path.to_path_buf();
        let if_match = if_match.map(str::to_owned);
        Box::pin(async move { read::read(self, &path, ranges, if_match).await })
    }

    fn stat(&self, path: &Path) -> StorageFuture<'_, EntryMeta> {
        let path = path.to_path_buf();
        Box::pin(async move { read::stat(self, &path).await })
    }

    fn exists(&self, path: &Path) -> StorageFuture<'_, bool> {
        let path = path.to_path_buf();
        Box::pin(async move {
            match read::stat(self, &path).await {
                Ok(_) => Ok(true),
                Err(e) if e.code == ErrorCode::NO_SUCH_FILE => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self, path: &Path) -> StorageFuture<'_, Vec<(String, EntryMeta)>> {
        let path = path.to_path_buf();
        Box::pin(async move { read::list(self, &path, super::MAX_LIST_ENTRIES).await })
    }

    fn list_names(&self, path: &Path, max: usize) -> StorageFuture<'_, Vec<String>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let entries = read::list(self, &path, max).await?;
            Ok(entries.into_iter().map(|(name, _)| name).collect())
        })
    }

    fn walk(&self, path: &Path, max: usize, tally: Tally) -> StorageFuture<'_, Vec<String>> {
        let path = path.to_path_buf();
        Box::pin(async move { read::walk(self, &path, max, tally).await })
    }

    fn stage(&self) -> StorageFuture<'_, Box<dyn StagedUpload>> {
        Box::pin(async move { write::stage(self).await })
    }

    fn put(
        &self,
        path: &Path,
        staged: Box<dyn StagedUpload>,
        _mode: Option<u32>,
    ) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        Box::pin(async move { write::put(self, &path, staged).await })
    }

    fn append(
        &self,
        _path: &Path,
        _staged: Box<dyn StagedUpload>,
        _mode: Option<u32>,
    ) -> StorageFuture<'_, u64> {
        Box::pin(async move {
            self.read_only()?;
            Err(CommandError::new(
                ErrorCode::NOT_SUPPORTED,
                "append is not supported on an object store",
            ))
        })
    }

    fn mkdir(&self, path: &Path, _mode: Option<u32>) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        Box::pin(async move { write::mkdir(self, &path).await })
    }

    fn rename(&self, from: &Path, to: &Path) -> StorageFuture<'_, ()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        Box::pin(async move { write::rename(self, &from, &to).await })
    }

    fn delete(&self, path: &Path) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        Box::pin(async move { write::delete(self, &path).await })
    }

    fn rmdir(&self, path: &Path) -> StorageFuture<'_, ()> {
        let path = path.to_path_buf();
        Box::pin(async move { write::rmdir(self, &path).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_endpoint_with_user_information_is_loopback() {
        assert!(is_loopback_url("http://GK1:pw@127.0.0.1:3900"));
        assert!(is_loopback_url("http://u@[::1]:3900/x"));
        assert!(!is_loopback_url("http://127.0.0.1@example.com:3900"));
    }

    #[test]
    fn userinfo_never_shows() {
        let w = without_userinfo;
        assert_eq!(
            w("bad https://GK1:s3cr3t@s3.example:9000/b?x=1 and http://h/x"),
            "bad https://s3.example:9000/b?x=1 and http://h/x"
        );
        assert_eq!(w("http://a@b@c d"), "http://c d");
        assert_eq!(w("no url here"), "no url here");
        assert_eq!(w("trailing ://"), "trailing ://");
    }

    #[test]
    fn urls_name_a_bucket_and_a_plain_prefix() {
        let c = ObjectConfig::from_url("s3://bucket/a/b/").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bucket", "a/b"));
        let c = ObjectConfig::from_url("s3://bucket").unwrap();
        assert_eq!(c.prefix, "");
        assert!(ObjectConfig::from_url("s3:///x").is_err());
        assert!(ObjectConfig::from_url("s3://b/../x").is_err());
        assert!(ObjectConfig::from_url("s3://b/a//x").is_err());
        assert!(ObjectConfig::from_url("http://b/x").is_err());
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for url in [
            "http://127.0.0.1:3900",
            "http://localhost:3900/",
            "http://[::1]:3900",
            "http://127.1.2.3",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:3900",
            "http://s3.example.com",
            "http://127.0.0.1.example.com",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
        let mut c = ObjectConfig::from_url("s3://b").unwrap();
        c.endpoint = Some("http://10.0.0.1:3900".into());
        assert!(c.build().unwrap_err().contains("plain HTTP"));
        c.allow_http = true;
        assert!(c.build().unwrap_err().contains("loopback"));
    }
}
