//! The transport API: open a URL (probing for a framegate server and falling
//! back to plain HTTP), then read and write files, alone or in batches.
//!
//! ```no_run
//! # async fn demo() -> Result<(), framegate_client::Error> {
//! use framegate_client::{Options, Transport};
//!
//! let t = Transport::open("https://files.example.com/repo/", Options::default()).await?;
//! let readme = t.get("README.md").await?;
//!
//! // A thousand reads, one round trip.
//! let mut batch = t.batch();
//! let slots: Vec<_> = (0..1000).map(|i| batch.get(&format!("objects/{i}"))).collect();
//! let mut results = batch.send().await?;
//! for slot in slots {
//!     let bytes = results.take(slot)?;
//! #   let _ = bytes;
//! }
//! # let _ = readme;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use framegate_wire::{Arguments, HelloPayload, StatAnswer};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Refusal, Result};
use crate::http::HttpMedium;
use crate::smart::{self, Hooks, Probe};

mod answer;
mod backend;
mod batch;
mod download;
mod ops;
mod options;
mod partial;

use backend::{Backend, Plain, Reply, Smart, Stream, Streamed};
pub use batch::{Batch, BatchResults, Slot};
use ops::path_args;
pub use options::{DEFAULT_RETRY_DEADLINE, MAX_REDIRECTS, Options};

pub use download::{DownloadOptions, FIRST_BACKOFF, MAX_BACKOFF};
pub use partial::{
    PARTIAL_SUFFIX, local_path_below, partial_path, partial_record_path, replace_file,
};

/// Requests per message: the protocol's default per-message limit.
pub const MAX_REQUESTS_PER_MESSAGE: usize = 4096;

#[derive(Clone, Debug)]
enum Verdict {
    Smart(HelloPayload),
    Plain,
}

/// How long what a base URL's server is (its `hello`, or plain) is
/// remembered in this process: a server restarted with other limits, or a
/// framegate server put where a plain one was, is seen again after this.
pub const VERDICT_TTL: Duration = Duration::from_secs(60);

fn verdicts() -> &'static Mutex<HashMap<String, (std::time::Instant, Verdict)>> {
    static CACHE: OnceLock<Mutex<HashMap<String, (std::time::Instant, Verdict)>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// An open connection to a tree: a framegate server over HTTP(S), a plain
/// web server, or a framegate server over a byte stream (TCP, SSH),
/// decided once.
#[derive(Debug)]
pub struct Transport {
    /// The base URL (a byte stream's without its password).
    base: Url,
    /// HTTP(S): what messages go by before the server is known (a
    /// transport opened with [`Transport::open_lazy`]).
    http: Option<HttpMedium>,
    /// What it talks to, chosen once: at open, or by the first message
    /// of a lazy transport.
    backend: OnceLock<Backend>,
    /// `framegate+http(s)://`: plain HTTP is an error.
    require_smart: bool,
    unsupported: Mutex<HashSet<String>>,
    hooks: Hooks,
    /// [`Options::retry_deadline`].
    retry_deadline: Duration,
}

/// Splits a URL into its scheme family and the base URL (ending in `/`).
fn parse_url(url: &str) -> Result<(Url, bool)> {
    let (url, require_smart) = match url.split_once("://") {
        Some(("framegate+http", rest)) => (format!("http://{rest}"), true),
        Some(("framegate+https", rest)) => (format!("https://{rest}"), true),
        Some(("http" | "https", _)) => (url.to_string(), false),
        _ => {
            return Err(Error::InvalidUrl(format!(
                "{url} (use http://, https://, framegate+http:// or framegate+https://)"
            )));
        }
    };
    let mut parsed = Url::parse(&url).map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok((parsed, require_smart))
}

impl Transport {
    /// Opens `url` (a directory). For `http(s)://` it probes for a framegate
    /// server once per base URL and process, falling back to plain HTTP if
    /// none answers; `framegate+http(s)://` requires one;
    /// `framegate://host[:port]/path` (TCP) and
    /// `framegate+ssh://[user@]host[:port]/path` (an SSH child running
    /// `framegate-server serve --stdio /`) connect and say `hello`.
    pub async fn open(url: &str, options: Options) -> Result<Transport> {
        let t = Self::open_lazy(url, options).await?;
        t.resolve().await?;
        Ok(t)
    }

    /// Opens `url` like [`Transport::open`], but without a probe of its
    /// own: the first message carries `hello` with its reads (one round
    /// trip for a cold batch, §7.4 folded into it), and falls back to
    /// plain HTTP if no framegate server answers; a first message with
    /// writes probes first. Until then [`Transport::is_smart`] and
    /// [`Transport::hello`] say no. A verdict already known in this
    /// process (per base URL) is used at once. A byte stream connects at
    /// its first call.
    pub async fn open_lazy(url: &str, options: Options) -> Result<Transport> {
        if url.starts_with("framegate://") || url.starts_with("framegate+ssh://") {
            // Connected by the first call (a download retries connecting).
            let stream = Stream::new(url, &options)?;
            return Ok(Transport {
                base: stream.url.clone(),
                http: None,
                backend: OnceLock::from(Backend::Stream(stream)),
                require_smart: true,
                unsupported: Mutex::new(HashSet::new()),
                hooks: options.hooks,
                retry_deadline: options.retry_deadline,
            });
        }
        let (base, require_smart) = parse_url(url)?;
        let client = options.http_client()?;
        // The medium keeps URL credentials out of its base.
        let medium = HttpMedium::new(client, base, options.token.clone(), options.compress);
        let t = Transport {
            base: medium.base().clone(),
            http: Some(medium),
            backend: OnceLock::new(),
            require_smart,
            unsupported: Mutex::new(HashSet::new()),
            hooks: options.hooks,
            retry_deadline: options.retry_deadline,
        };
        if let Some(v) = verdicts().lock().ok().and_then(|c| {
            c.get(t.base.as_str())
                .filter(|(at, _)| at.elapsed() < VERDICT_TTL)
                .map(|(_, v)| v.clone())
        }) {
            t.settle(match v {
                Verdict::Smart(hello) => Some(hello),
                Verdict::Plain => None,
            })?;
        }
        Ok(t)
    }

    /// The HTTP(S) medium (an HTTP transport's; a usage error otherwise).
    fn medium(&self) -> Result<&HttpMedium> {
        self.http
            .as_ref()
            .ok_or_else(|| Error::Usage("not an HTTP transport".into()))
    }

    /// Chooses the backend of an HTTP transport from what the server is
    /// (its `hello`, or `None` for plain HTTP), remembers it for this base
    /// URL in this process, and sizes request frames to the server's limit.
    fn settle(&self, hello: Option<HelloPayload>) -> Result<&Backend> {
        if let Some(b) = self.backend.get() {
            return Ok(b);
        }
        let medium = self.medium()?;
        let key = medium.base().to_string();
        if hello.is_none() && self.require_smart {
            return Err(Error::Refused(Refusal::NotSmart {
                url: key,
                reason: "plain HTTP".into(),
            }));
        }
        if let Ok(mut c) = verdicts().lock() {
            c.retain(|_, (at, _)| at.elapsed() < VERDICT_TTL);
            c.insert(
                key,
                (
                    std::time::Instant::now(),
                    match &hello {
                        Some(h) => Verdict::Smart(h.clone()),
                        None => Verdict::Plain,
                    },
                ),
            );
        }
        tracing::info!(
            base = %medium.base(),
            server = hello.as_ref().map_or("plain HTTP", |h| h.server.as_str()),
            "server chosen"
        );
        let backend = match hello {
            Some(hello) => {
                medium.set_peer_max_frame(
                    usize::try_from(hello.max_frame_size).unwrap_or(usize::MAX),
                );
                Backend::Smart(Smart {
                    medium: medium.clone(),
                    hello,
                })
            }
            None => Backend::Plain(Plain {
                medium: medium.clone(),
            }),
        };
        Ok(self.backend.get_or_init(|| backend))
    }

    /// The backend, probing (a `hello` of its own) if not chosen yet; a
    /// byte stream connects if it is not connected.
    async fn resolve(&self) -> Result<&Backend> {
        if let Some(b) = self.backend.get() {
            if let Backend::Stream(s) = b {
                s.revive().await?;
            }
            return Ok(b);
        }
        let medium = self.medium()?;
        let hello = match smart::probe(medium).await? {
            Probe::Smart(hello) => Some(hello),
            Probe::NotSmart(reason) => {
                if self.require_smart {
                    return Err(Error::Refused(Refusal::NotSmart {
                        url: medium.base().to_string(),
                        reason,
                    }));
                }
                tracing::debug!(%reason, "no framegate server; using plain HTTP");
                None
            }
        };
        self.settle(hello)
    }

    /// Disconnects a byte-stream session cleanly (HTTP: nothing to do).
    pub async fn close(&self) -> Result<()> {
        match self.backend.get() {
            Some(Backend::Stream(s)) => s.close().await,
            _ => Ok(()),
        }
    }

    /// Whether a framegate server answers (as far as known: a lazy
    /// transport says no before its first message).
    pub fn is_smart(&self) -> bool {
        self.hello().is_some()
    }

    /// The server's `hello`, if smart (and known).
    pub fn hello(&self) -> Option<&HelloPayload> {
        self.backend.get().and_then(Backend::hello)
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Whether the server runs `command` (as far as we know).
    pub fn supports(&self, command: &str) -> bool {
        let listed = self.hello().is_some_and(|h| h.has_command(command));
        listed && !self.unsupported.lock().is_ok_and(|u| u.contains(command))
    }

    /// A new batch: many commands, one message.
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(self)
    }

    async fn single<T>(&self, build: impl FnOnce(&mut Batch<'_>) -> Slot<T>) -> Result<T> {
        let mut batch = self.batch();
        let slot = build(&mut batch);
        batch.send().await?.take(slot)
    }

    /// The whole file.
    pub async fn get(&self, path: &str) -> Result<Bytes> {
        self.single(|b| b.get(path)).await
    }

    /// Byte ranges `(offset, length)` of a file, one `Bytes` each.
    pub async fn readv(&self, path: &str, ranges: &[(u64, u64)]) -> Result<Vec<Bytes>> {
        self.single(|b| b.readv(path, ranges)).await
    }

    /// Whether the path exists.
    pub async fn has(&self, path: &str) -> Result<bool> {
        self.single(|b| b.has(path)).await
    }

    /// Metadata (the `stat` answer, §9.2). Over plain HTTP, `mode` is 0644
    /// for files and 0755 for directories, and `mtime` is `Last-Modified`.
    pub async fn stat(&self, path: &str) -> Result<StatAnswer> {
        self.single(|b| b.stat(path)).await
    }

    /// The file's SHA-256 (with the version and size it covers), computed
    /// by the server: framegate servers only.
    pub async fn digest(&self, path: &str) -> Result<framegate_wire::DigestAnswer> {
        self.single(|b| b.digest(path)).await
    }

    /// Entry names of a directory, sorted.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<String>> {
        self.single(|b| b.list_dir(path)).await
    }

    /// Relative paths of all files below `path`, sorted.
    pub async fn iter_files_recursive(&self, path: &str) -> Result<Vec<String>> {
        self.single(|b| b.iter_files_recursive(path)).await
    }

    /// Every entry below `path` (files, directories, links not followed),
    /// sorted: framegate servers that offer `tree` only.
    pub async fn tree(&self, path: &str) -> Result<Vec<framegate_wire::TreeEntry>> {
        self.single(|b| b.tree(path)).await
    }

    /// Replaces (atomically) or creates a file.
    pub async fn put(&self, path: &str, data: impl Into<Bytes>, mode: Option<u32>) -> Result<()> {
        let data = data.into();
        self.single(|b| b.put(path, data, mode)).await
    }

    /// Appends; returns the size before.
    pub async fn append(&self, path: &str, data: impl Into<Bytes>) -> Result<u64> {
        let data = data.into();
        self.single(|b| b.append(path, data)).await
    }

    /// Creates a directory.
    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> Result<()> {
        self.single(|b| b.mkdir(path, mode)).await
    }

    /// Renames.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.single(|b| b.rename(from, to)).await
    }

    /// Deletes a file.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.single(|b| b.delete(path)).await
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: &str) -> Result<()> {
        self.single(|b| b.rmdir(path)).await
    }

    /// An application command (smart servers only); `write` picks the `rw`
    /// endpoint.
    pub async fn call(
        &self,
        name: &str,
        args: Arguments,
        data: Option<Bytes>,
        write: bool,
    ) -> Result<Bytes> {
        self.single(|b| b.call(name, args, data, write)).await
    }

    /// Streams a file into `out`; returns its length. Retried once if the
    /// connection drops before any byte was written.
    pub async fn get_into(
        &self,
        path: &str,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        if let Some(Backend::Plain(p)) = self.backend.get() {
            return p.get_into(path, out).await;
        }
        let mut into = Streamed::new(&mut *out);
        match self.stream_request("get", path_args(path), &mut into).await {
            Ok(true) => Ok(into.written),
            Ok(false) => self.plain()?.get_into(path, out).await,
            Err(e) if e.is_dropped_connection() && into.written == 0 => {
                let mut again = Streamed::new(out);
                self.stream_request("get", path_args(path), &mut again)
                    .await?;
                Ok(again.written)
            }
            Err(e) => Err(e),
        }
    }

    /// The plain backend (after a verdict of plain HTTP).
    fn plain(&self) -> Result<&Plain> {
        match self.backend.get() {
            Some(Backend::Plain(p)) => Ok(p),
            _ => Err(Error::Usage("not a plain HTTP transport".into())),
        }
    }

    /// One read whose answer streams into `into`. On a transport whose
    /// server is not known yet, the request goes with `hello` in one
    /// message. `Ok(false)` if the server is a plain one (nothing was
    /// written: use plain HTTP).
    async fn stream_request(
        &self,
        name: &str,
        args: Arguments,
        into: &mut Streamed<'_>,
    ) -> Result<bool> {
        match self.backend.get() {
            Some(Backend::Stream(s)) => s.call_into(name, args, into).await.map(|()| true),
            Some(Backend::Smart(s)) => s
                .call_into(name, args, into, &self.hooks)
                .await
                .map(|()| true),
            Some(Backend::Plain(_)) => Ok(false),
            None => {
                let medium = self.medium()?;
                let reply =
                    backend::call_into_http(medium, true, name, args, into, &self.hooks).await?;
                match reply {
                    Reply::Answered { hello, result } => {
                        if let Some(hello) = hello {
                            self.settle(Some(hello))?;
                        }
                        result.map(|()| true)
                    }
                    Reply::NotSmart => {
                        self.settle(None)?;
                        Ok(false)
                    }
                }
            }
        }
    }

    /// Replaces a file with the bytes of `source`, streamed.
    pub async fn put_from(
        &self,
        path: &str,
        source: &mut (dyn AsyncRead + Unpin + Send),
        mode: Option<u32>,
    ) -> Result<()> {
        let mut args = path_args(path);
        if let Some(mode) = mode {
            let _ = args.insert("mode", format!("{mode:o}"));
        }
        match self.resolve().await? {
            Backend::Plain(p) => Err(p.refuse("put")),
            Backend::Smart(s) => s.put_from(args, source, &self.hooks).await,
            Backend::Stream(s) => s.put_from(args, source).await,
        }
    }
}
