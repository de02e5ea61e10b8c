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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use framegate_wire::preamble::DEFAULT_TCP_PORT;
use framegate_wire::{Arguments, HelloPayload, StatAnswer};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::http::HttpMedium;
use crate::plain;
use crate::session::{Connector, Session, SshTarget};
use crate::smart::{self, Hooks, Probe, Request, Sink, Source, Validator};

mod batch;
mod download;
mod ops;
mod options;

pub use batch::{Batch, BatchResults, Slot};
use ops::{path_args, prefixed};
pub use options::{DEFAULT_RETRY_DEADLINE, Options};

pub use download::{
    DownloadOptions, FIRST_BACKOFF, MAX_BACKOFF, PARTIAL_SUFFIX, partial_path, replace_file,
};

/// Requests per message: the protocol's default per-message limit.
pub const MAX_REQUESTS_PER_MESSAGE: usize = 4096;

#[derive(Clone, Debug)]
enum Verdict {
    Smart(HelloPayload),
    Plain,
}

fn verdicts() -> &'static Mutex<HashMap<String, Verdict>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Verdict>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// An open connection to a tree, smart or plain.
#[derive(Debug)]
pub struct Transport {
    medium: HttpMedium,
    /// A full-duplex session (`framegate://`, `framegate+ssh://`) instead of HTTP.
    session: Option<Arc<Session>>,
    /// A byte stream's URL (what [`Transport::base_url`] says) and token:
    /// what connecting again needs.
    stream: Option<(Url, Option<String>)>,
    /// Prepended to every path (byte streams address the server's root).
    prefix: String,
    /// What the server is, decided once: its `hello` (framegate) or `None`
    /// (plain HTTP). Unset until the first message of a transport opened
    /// with [`Transport::open_lazy`].
    verdict: OnceLock<Option<HelloPayload>>,
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
    /// none answers; `framegate+http(s)://` requires one.
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
    /// process (per base URL) is used at once.
    pub async fn open_lazy(url: &str, options: Options) -> Result<Transport> {
        if url.starts_with("framegate://") || url.starts_with("framegate+ssh://") {
            return Self::open_stream(url, options).await;
        }
        let (base, require_smart) = parse_url(url)?;
        let client = options.http_client()?;
        let medium = HttpMedium::new(client, base, options.token.clone(), options.compress);
        let t = Transport {
            medium,
            session: None,
            stream: None,
            prefix: String::new(),
            verdict: OnceLock::new(),
            require_smart,
            unsupported: Mutex::new(HashSet::new()),
            hooks: options.hooks,
            retry_deadline: options.retry_deadline,
        };
        let key = t.medium.base().to_string();
        if let Some(v) = verdicts().lock().ok().and_then(|c| c.get(&key).cloned()) {
            t.settle(match v {
                Verdict::Smart(hello) => Some(hello),
                Verdict::Plain => None,
            })?;
        }
        Ok(t)
    }

    /// Records what the server is (once), remembers it for this base URL
    /// in this process, and sizes request frames to its limit.
    fn settle(&self, hello: Option<HelloPayload>) -> Result<()> {
        let key = self.medium.base().to_string();
        if hello.is_none() && self.require_smart {
            return Err(Error::NotSmart {
                url: key,
                reason: "plain HTTP".into(),
            });
        }
        if let Some(h) = &hello {
            self.medium
                .set_peer_max_frame(usize::try_from(h.max_frame_size).unwrap_or(usize::MAX));
        }
        if let Ok(mut c) = verdicts().lock() {
            c.insert(
                key,
                match &hello {
                    Some(h) => Verdict::Smart(h.clone()),
                    None => Verdict::Plain,
                },
            );
        }
        let _ = self.verdict.set(hello);
        Ok(())
    }

    /// What the server is, probing (a `hello` of its own) if not known
    /// yet: its `hello`, or `None` for plain HTTP.
    async fn resolve(&self) -> Result<Option<&HelloPayload>> {
        if self.verdict.get().is_none() {
            let hello = match smart::probe(&self.medium).await? {
                Probe::Smart(hello) => Some(hello),
                Probe::NotSmart(reason) => {
                    if self.require_smart {
                        return Err(Error::NotSmart {
                            url: self.medium.base().to_string(),
                            reason,
                        });
                    }
                    tracing::debug!(%reason, "no framegate server; using plain HTTP");
                    None
                }
            };
            self.settle(hello)?;
        }
        Ok(self.verdict.get().and_then(Option::as_ref))
    }

    /// Whether the verdict is still open (a lazy transport before its
    /// first message).
    fn unknown(&self) -> bool {
        self.verdict.get().is_none()
    }

    /// Opens `framegate://host[:port]/path` (TCP) or
    /// `framegate+ssh://[user@]host[:port]/path` (an SSH child running
    /// `framegate-server serve --stdio /`). These media carry nothing but
    /// framegate, so there is no probe (`should_probe() == false`).
    async fn open_stream(url: &str, options: Options) -> Result<Transport> {
        let mut parsed = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
        let connector = connector_for(&parsed)?;
        let session = Arc::new(
            Session::new()
                .connect_timeout(options.connect_timeout)
                .read_timeout(options.read_timeout)
                .compress(options.compress)
                .hooks(options.hooks.clone()),
        );
        let hello = start_session(&session, connector, options.token.as_deref()).await?;
        // The server serves its root; the URL path is a prefix (without the leading `/`).
        let prefix = percent_encoding::percent_decode_str(parsed.path().trim_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        if !parsed.path().ends_with('/') {
            let path = format!("{}/", parsed.path());
            parsed.set_path(&path);
        }
        let _ = parsed.set_password(None);
        let placeholder =
            Url::parse("http://stream.invalid/").map_err(|e| Error::InvalidUrl(e.to_string()))?;
        let medium = HttpMedium::new(options.http_client()?, placeholder, None, false);
        Ok(Transport {
            medium,
            session: Some(session),
            stream: Some((parsed, options.token.clone())),
            prefix,
            verdict: OnceLock::from(Some(hello)),
            require_smart: true,
            unsupported: Mutex::new(HashSet::new()),
            hooks: options.hooks,
            retry_deadline: options.retry_deadline,
        })
    }

    /// A byte-stream transport whose connection the server ended (or that
    /// broke) connects again, before its next call.
    async fn revive(&self) -> Result<()> {
        let (Some(session), Some((url, token))) = (&self.session, &self.stream) else {
            return Ok(());
        };
        if session.state() != crate::session::RunState::Idle {
            return Ok(());
        }
        // Reap what is left of the old connection (its child, its tasks).
        let _ = session.disconnect().await;
        start_session(session, connector_for(url)?, token.as_deref()).await?;
        Ok(())
    }

    /// Disconnects a byte-stream session cleanly (HTTP: nothing to do).
    pub async fn close(&self) -> Result<()> {
        match &self.session {
            Some(session) => session.disconnect().await,
            None => Ok(()),
        }
    }

    /// Whether a framegate server answers (as far as known: a lazy
    /// transport says no before its first message).
    pub fn is_smart(&self) -> bool {
        self.hello().is_some()
    }

    /// The server's `hello`, if smart (and known).
    pub fn hello(&self) -> Option<&HelloPayload> {
        self.verdict.get().and_then(Option::as_ref)
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        match &self.stream {
            Some((url, _)) => url,
            None => self.medium.base(),
        }
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

    /// Entry names of a directory, sorted.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<String>> {
        self.single(|b| b.list_dir(path)).await
    }

    /// Relative paths of all files below `path`, sorted.
    pub async fn iter_files_recursive(&self, path: &str) -> Result<Vec<String>> {
        self.single(|b| b.iter_files_recursive(path)).await
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
        if !self.unknown() && !self.is_smart() {
            return plain::get_into(&self.medium, path, out).await;
        }
        let mut written = 0u64;
        let result = self
            .stream_request(
                "get",
                path_args(path),
                &mut *out,
                &mut written,
                &mut None,
                None,
            )
            .await;
        match result {
            Ok(false) => plain::get_into(&self.medium, path, out).await,
            Err(e) if e.is_dropped_connection() && written == 0 => {
                self.stream_request("get", path_args(path), out, &mut written, &mut None, None)
                    .await?;
                Ok(written)
            }
            Err(e) => Err(e),
            Ok(true) => Ok(written),
        }
    }

    /// One request whose answer streams into `out`: the bytes written
    /// and the version the server announced (if any) are set whatever the
    /// outcome. On a transport whose server is not known yet, the request
    /// goes with `hello` in one message; `Ok(false)` if no framegate
    /// server answered (nothing was written: use plain HTTP).
    async fn stream_request(
        &self,
        name: &str,
        args: Arguments,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        written: &mut u64,
        validator: &mut Option<Validator>,
        on_validator: Option<&(dyn Fn(&Validator) + Sync)>,
    ) -> Result<bool> {
        if let Some(session) = &self.session {
            let mut args = args;
            if let Some(Ok(path)) = args.get_str("path") {
                let full = prefixed(&self.prefix, path);
                let _ = args.remove("path");
                let _ = args.insert("path", full);
            }
            self.revive().await?;
            session
                .call_into(name, &args, out, written, validator, on_validator)
                .await?;
            return Ok(true);
        }
        let mut requests = [Request {
            name: name.into(),
            args,
            source: Source::None,
            sink: Sink::Writer {
                out,
                written: 0,
                validator: None,
                on_validator,
            },
        }];
        let result = if self.unknown() {
            match smart::run_cold(&self.medium, &mut requests, &self.hooks).await {
                Ok(Some((hello, answers))) => {
                    self.settle(Some(hello))?;
                    Ok(answers)
                }
                Ok(None) => {
                    self.settle(None)?;
                    return Ok(false);
                }
                Err(e) => Err(e),
            }
        } else {
            smart::run_message(&self.medium, false, &mut requests, &self.hooks).await
        };
        if let Sink::Writer {
            written: w,
            validator: v,
            ..
        } = &mut requests[0].sink
        {
            *written = *w;
            *validator = v.take();
        }
        result?
            .pop()
            .unwrap_or_else(|| Err(Error::Usage("no answer".into())))?;
        Ok(true)
    }

    /// Replaces a file with the bytes of `source`, streamed.
    pub async fn put_from(
        &self,
        path: &str,
        source: &mut (dyn AsyncRead + Unpin + Send),
        mode: Option<u32>,
    ) -> Result<()> {
        if self.resolve().await?.is_none() {
            return Err(plain::write_refused(&self.medium, "put"));
        }
        let mut args = path_args(path);
        if let Some(mode) = mode {
            let _ = args.insert("mode", format!("{mode:o}"));
        }
        if let Some(session) = &self.session {
            let _ = args.remove("path");
            let _ = args.insert("path", prefixed(&self.prefix, path));
            session.call_from("put", &args, source).await?;
            return Ok(());
        }
        let mut requests = [Request {
            name: "put".into(),
            args,
            source: Source::Reader(source),
            sink: Sink::Memory,
        }];
        smart::run_message(&self.medium, true, &mut requests, &self.hooks)
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Usage("no answer".into())))?;
        Ok(())
    }
}

/// How to reach the server of a `framegate://` or `framegate+ssh://` URL.
fn connector_for(parsed: &Url) -> Result<Connector> {
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::InvalidUrl(format!("{parsed}: no host")))?
        .to_string();
    Ok(if parsed.scheme() == "framegate" {
        let port = parsed.port().unwrap_or(DEFAULT_TCP_PORT);
        Connector::Tcp(format!("{host}:{port}"))
    } else {
        let user = parsed.username();
        let dest = if user.is_empty() {
            host
        } else {
            format!("{user}@{host}")
        };
        Connector::Ssh(SshTarget::new(&dest, parsed.port()))
    })
}

/// Connects `session` and says `hello` (with the token, if any); request
/// frames are then kept within the server's frame size.
async fn start_session(
    session: &Session,
    connector: Connector,
    token: Option<&str>,
) -> Result<HelloPayload> {
    let target = format!("{connector:?}");
    session.connect(connector).await?;
    let mut args = Arguments::new();
    if let Some(token) = token {
        let _ = args.insert("token", token.to_string());
    }
    let hello = session.call("hello", &args, None).await?;
    let hello = HelloPayload::decode(&hello).map_err(|e| Error::Misbehaved {
        url: target.to_string(),
        source: e.into(),
    })?;
    session.limit_payload(usize::try_from(hello.max_frame_size).unwrap_or(usize::MAX));
    Ok(hello)
}
