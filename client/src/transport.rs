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
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use framegate_wire::preamble::DEFAULT_TCP_PORT;
use framegate_wire::ranges::encode_ranges;
use framegate_wire::{Arguments, ErrorCode, HelloPayload, StatAnswer};
use reqwest::Url;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite};

use crate::error::{Error, Result};
use crate::http::HttpMedium;
use crate::plain;
use crate::session::{Connector, Session, SshTarget};
use crate::smart::{self, Hooks, Probe, Request, Sink, Source};

/// Requests per message: the protocol's default per-message limit.
pub const MAX_REQUESTS_PER_MESSAGE: usize = 4096;

/// How many times an interrupted download resumes before giving up.
pub const MAX_RESUMES: usize = 5;

/// Client settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// A PEM CA certificate trusted in addition to the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Bearer token for writes (default: `FRAMEGATE_TOKEN`).
    pub token: Option<String>,
    /// Connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Longest silence while reading a response (default 120 s; the server
    /// sends keepalives every 15 s while commands run).
    pub read_timeout: Duration,
    /// Ask for zstd-compressed answers (default true).
    pub compress: bool,
    /// Speak only HTTP/1.1 (default false: HTTP/2 when TLS ALPN offers it).
    pub http1_only: bool,
    /// Text-output and progress callbacks.
    pub hooks: Hooks,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ca_cert: None,
            token: std::env::var("FRAMEGATE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            compress: true,
            http1_only: false,
            hooks: Hooks::default(),
        }
    }
}

impl Options {
    /// Builds the HTTP client these options describe.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("framegate/", env!("CARGO_PKG_VERSION")));
        if self.http1_only {
            builder = builder.http1_only();
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Error::Usage(format!("cannot use CA certificate {}: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))
    }
}

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
    /// Prepended to every path (byte streams address the server's root).
    prefix: String,
    smart: Option<HelloPayload>,
    unsupported: Mutex<HashSet<String>>,
    hooks: Hooks,
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
        if url.starts_with("framegate://") || url.starts_with("framegate+ssh://") {
            return Self::open_stream(url, options).await;
        }
        let (base, require_smart) = parse_url(url)?;
        let client = options.http_client()?;
        let medium = HttpMedium::new(client, base, options.token.clone(), options.compress);
        let key = medium.base().to_string();
        let cached = verdicts().lock().ok().and_then(|c| c.get(&key).cloned());
        let verdict = match cached {
            Some(v) => v,
            None => {
                let v = match smart::probe(&medium).await? {
                    Probe::Smart(hello) => Verdict::Smart(hello),
                    Probe::NotSmart(reason) if require_smart => {
                        return Err(Error::NotSmart { url: key, reason });
                    }
                    Probe::NotSmart(reason) => {
                        tracing::debug!(%reason, "no framegate server; using plain HTTP");
                        Verdict::Plain
                    }
                };
                if let Ok(mut c) = verdicts().lock() {
                    c.insert(key.clone(), v.clone());
                }
                v
            }
        };
        if require_smart && matches!(verdict, Verdict::Plain) {
            return Err(Error::NotSmart {
                url: key,
                reason: "probed earlier: plain HTTP".into(),
            });
        }
        Ok(Transport {
            medium,
            session: None,
            prefix: String::new(),
            smart: match verdict {
                Verdict::Smart(h) => Some(h),
                Verdict::Plain => None,
            },
            unsupported: Mutex::new(HashSet::new()),
            hooks: options.hooks,
        })
    }

    /// Opens `framegate://host[:port]/path` (TCP) or
    /// `framegate+ssh://[user@]host[:port]/path` (an SSH child running
    /// `framegate-server serve --stdio /`). These media carry nothing but
    /// framegate, so there is no probe (`should_probe() == false`).
    async fn open_stream(url: &str, options: Options) -> Result<Transport> {
        let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::InvalidUrl(format!("{url}: no host")))?
            .to_string();
        let connector = if parsed.scheme() == "framegate" {
            let port = parsed.port().unwrap_or(DEFAULT_TCP_PORT);
            Connector::Tcp(format!("{host}:{port}"))
        } else {
            let user = parsed.username();
            let dest = if user.is_empty() {
                host.clone()
            } else {
                format!("{user}@{host}")
            };
            Connector::Ssh(SshTarget::new(&dest, parsed.port()))
        };
        let session = Arc::new(Session::new());
        session.connect(connector).await?;
        let mut args = Arguments::new();
        if let Some(token) = &options.token {
            let _ = args.insert("token", token.clone());
        }
        let hello = session.call("hello", &args, None).await?;
        let hello = HelloPayload::decode(&hello)
            .map_err(|e| Error::Usage(format!("{url}: malformed hello answer: {e}")))?;
        // The server serves its root; the URL path is a prefix (without the leading `/`).
        let prefix = percent_encoding::percent_decode_str(parsed.path().trim_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        let placeholder =
            Url::parse("http://stream.invalid/").map_err(|e| Error::InvalidUrl(e.to_string()))?;
        let medium = HttpMedium::new(options.http_client()?, placeholder, None, false);
        Ok(Transport {
            medium,
            session: Some(session),
            prefix,
            smart: Some(hello),
            unsupported: Mutex::new(HashSet::new()),
            hooks: options.hooks,
        })
    }

    /// Disconnects a byte-stream session cleanly (HTTP: nothing to do).
    pub async fn close(&self) -> Result<()> {
        match &self.session {
            Some(session) => session.disconnect().await,
            None => Ok(()),
        }
    }

    /// Whether a framegate server answers.
    pub fn is_smart(&self) -> bool {
        self.smart.is_some()
    }

    /// The server's `hello`, if smart.
    pub fn hello(&self) -> Option<&HelloPayload> {
        self.smart.as_ref()
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        self.medium.base()
    }

    /// Whether the server runs `command` (as far as we know).
    pub fn supports(&self, command: &str) -> bool {
        let listed = self.smart.as_ref().is_some_and(|h| h.has_command(command));
        listed && !self.unsupported.lock().is_ok_and(|u| u.contains(command))
    }

    /// A new batch: many commands, one message.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            transport: self,
            ops: Vec::new(),
        }
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
        let Some(_) = &self.smart else {
            return plain::get_into(&self.medium, path, out).await;
        };
        if self.session.is_some() {
            use tokio::io::AsyncWriteExt;
            let data = self.get(path).await?;
            out.write_all(&data).await?;
            out.flush().await?;
            return Ok(data.len() as u64);
        }
        let mut written = 0u64;
        let result = self
            .stream_request("get", path_args(path), &mut *out, &mut written)
            .await;
        match result {
            Err(e) if e.is_dropped_connection() && written == 0 => {
                self.stream_request("get", path_args(path), out, &mut written)
                    .await?;
                Ok(written)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(written),
        }
    }

    async fn stream_request(
        &self,
        name: &str,
        args: Arguments,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        written: &mut u64,
    ) -> Result<()> {
        let mut requests = [Request {
            name: name.into(),
            args,
            source: Source::None,
            sink: Sink::Writer { out, written: 0 },
        }];
        let result = smart::run_message(&self.medium, false, &mut requests, &self.hooks).await;
        if let Sink::Writer { written: w, .. } = &requests[0].sink {
            *written = *w;
        }
        result?
            .pop()
            .unwrap_or_else(|| Err(Error::Usage("no answer".into())))?;
        Ok(())
    }

    /// Downloads a file to `dest`, resuming with `readv` from the bytes
    /// already written if the connection drops. Returns the size.
    pub async fn download(&self, path: &str, dest: &Path) -> Result<u64> {
        let mut file = tokio::fs::File::create(dest).await?;
        let mut written = 0u64;
        let first = if self.session.is_some() {
            self.get_into(path, &mut file).await.map(|n| written = n)
        } else if self.smart.is_some() {
            self.stream_request("get", path_args(path), &mut file, &mut written)
                .await
        } else {
            plain::get_into(&self.medium, path, &mut file)
                .await
                .map(|n| written = n)
        };
        let mut error = match first {
            Ok(()) => return Ok(written),
            Err(e) if e.is_dropped_connection() => e,
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(dest).await;
                return Err(e);
            }
        };
        for attempt in 1..=MAX_RESUMES {
            tracing::info!(attempt, written, "connection dropped; resuming");
            let size = match self.stat(path).await {
                Ok(stat) => stat.size,
                Err(e) if e.is_dropped_connection() => {
                    error = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            file.set_len(written).await?;
            file.seek(std::io::SeekFrom::Start(written)).await?;
            if written >= size {
                return Ok(written);
            }
            let mut args = path_args(path);
            let _ = args.insert("ranges", encode_ranges(&[(written, size - written)]));
            let mut more = 0u64;
            let result = if self.supports("readv") {
                self.stream_request("readv", args, &mut file, &mut more)
                    .await
            } else {
                let got = self.readv(path, &[(written, size - written)]).await;
                match got {
                    Ok(parts) => {
                        use tokio::io::AsyncWriteExt;
                        for p in parts {
                            file.write_all(&p).await?;
                            more += p.len() as u64;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            written += more;
            match result {
                Ok(()) => return Ok(written),
                Err(e) if e.is_dropped_connection() => error = e,
                Err(e) => return Err(e),
            }
        }
        Err(error)
    }

    /// Replaces a file with the bytes of `source`, streamed.
    pub async fn put_from(
        &self,
        path: &str,
        source: &mut (dyn AsyncRead + Unpin + Send),
        mode: Option<u32>,
    ) -> Result<()> {
        if self.smart.is_none() {
            return Err(plain::write_refused(&self.medium, "put"));
        }
        if self.session.is_some() {
            use tokio::io::AsyncReadExt;
            let mut data = Vec::new();
            source.read_to_end(&mut data).await?;
            return self.put(path, data, mode).await;
        }
        let mut args = path_args(path);
        if let Some(mode) = mode {
            let _ = args.insert("mode", format!("{mode:o}"));
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

fn path_args(path: &str) -> Arguments {
    let mut args = Arguments::new();
    let _ = args.insert("path", path.to_string());
    args
}

/// A command waiting in a batch.
#[derive(Debug, Clone)]
enum Op {
    Get(String),
    Readv(String, Vec<(u64, u64)>),
    Has(String),
    Stat(String),
    ListDir(String),
    Iter(String),
    Put(String, Bytes, Option<u32>),
    Append(String, Bytes),
    Mkdir(String, Option<u32>),
    Rename(String, String),
    Delete(String),
    Rmdir(String),
    Call {
        name: String,
        args: Arguments,
        data: Option<Bytes>,
        write: bool,
    },
}

impl Op {
    fn is_write(&self) -> bool {
        match self {
            Op::Put(..)
            | Op::Append(..)
            | Op::Mkdir(..)
            | Op::Rename(..)
            | Op::Delete(..)
            | Op::Rmdir(..) => true,
            Op::Call { write, .. } => *write,
            _ => false,
        }
    }

    fn name(&self) -> &str {
        match self {
            Op::Get(_) => "get",
            Op::Readv(..) => "readv",
            Op::Has(_) => "has",
            Op::Stat(_) => "stat",
            Op::ListDir(_) => "list_dir",
            Op::Iter(_) => "iter_files_recursive",
            Op::Put(..) => "put",
            Op::Append(..) => "append",
            Op::Mkdir(..) => "mkdir",
            Op::Rename(..) => "rename",
            Op::Delete(_) => "delete",
            Op::Rmdir(_) => "rmdir",
            Op::Call { name, .. } => name,
        }
    }

    fn request(&self, prefix: &str) -> Request<'static> {
        let full = |path: &str| -> String {
            match (prefix.is_empty(), path.trim_matches('/').is_empty()) {
                (true, _) => path.to_string(),
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}/{}", path.trim_start_matches('/')),
            }
        };
        let path_args = |path: &str| path_args(&full(path));
        let with_mode = |path: &str, mode: &Option<u32>| {
            let mut a = path_args(path);
            if let Some(m) = mode {
                let _ = a.insert("mode", format!("{m:o}"));
            }
            a
        };
        match self {
            Op::Get(p)
            | Op::Has(p)
            | Op::Stat(p)
            | Op::ListDir(p)
            | Op::Iter(p)
            | Op::Delete(p)
            | Op::Rmdir(p) => Request::new(self.name(), path_args(p), None),
            Op::Readv(p, ranges) => {
                let mut a = path_args(p);
                let _ = a.insert("ranges", encode_ranges(ranges));
                Request::new("readv", a, None)
            }
            Op::Put(p, data, mode) => Request::new("put", with_mode(p, mode), Some(data.clone())),
            Op::Append(p, data) => Request::new("append", path_args(p), Some(data.clone())),
            Op::Mkdir(p, mode) => Request::new("mkdir", with_mode(p, mode), None),
            Op::Rename(from, to) => {
                let mut a = Arguments::new();
                let _ = a.insert("from", full(from));
                let _ = a.insert("to", full(to));
                Request::new("rename", a, None)
            }
            Op::Call {
                name, args, data, ..
            } => Request::new(name, args.clone(), data.clone()),
        }
    }
}

/// A typed handle on one result of a batch.
#[derive(Debug)]
pub struct Slot<T> {
    index: usize,
    decode: fn(&Op, Bytes) -> Result<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Slot<T> {}

fn cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| Error::Usage(format!("malformed CBOR answer: {e}")))
}

fn decode_bytes(_: &Op, b: Bytes) -> Result<Bytes> {
    Ok(b)
}
fn decode_unit(_: &Op, b: Bytes) -> Result<()> {
    let _: Option<()> = cbor(&b)?;
    Ok(())
}
fn decode_bool(_: &Op, b: Bytes) -> Result<bool> {
    cbor(&b)
}
fn decode_u64(_: &Op, b: Bytes) -> Result<u64> {
    cbor(&b)
}
fn decode_stat(_: &Op, b: Bytes) -> Result<StatAnswer> {
    cbor(&b)
}
fn decode_names(_: &Op, b: Bytes) -> Result<Vec<String>> {
    cbor(&b)
}
fn decode_ranges(op: &Op, b: Bytes) -> Result<Vec<Bytes>> {
    let Op::Readv(_, ranges) = op else {
        return Err(Error::Usage("not a readv".into()));
    };
    let mut at = 0usize;
    let mut out = Vec::with_capacity(ranges.len());
    for (_, len) in ranges {
        let end = at + *len as usize;
        let piece = (end <= b.len()).then(|| b.slice(at..end)).ok_or_else(|| {
            Error::remote(
                ErrorCode::SHORT_READ,
                "the readv answer is shorter than the ranges asked for",
            )
        })?;
        out.push(piece);
        at = end;
    }
    Ok(out)
}

/// Commands collected for one message (or a few, past 4,096).
#[derive(Debug)]
pub struct Batch<'t> {
    transport: &'t Transport,
    ops: Vec<Op>,
}

macro_rules! batch_op {
    ($(#[$doc:meta])* $fn:ident($($arg:ident: $ty:ty),*) -> $t:ty = $decode:ident, $op:expr) => {
        $(#[$doc])*
        pub fn $fn(&mut self, $($arg: $ty),*) -> Slot<$t> {
            self.push($op, $decode)
        }
    };
}

impl<'t> Batch<'t> {
    fn push<T>(&mut self, op: Op, decode: fn(&Op, Bytes) -> Result<T>) -> Slot<T> {
        self.ops.push(op);
        Slot {
            index: self.ops.len() - 1,
            decode,
            _t: PhantomData,
        }
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    batch_op!(/// `get`.
        get(path: &str) -> Bytes = decode_bytes, Op::Get(path.into()));
    batch_op!(/// `readv`.
        readv(path: &str, ranges: &[(u64, u64)]) -> Vec<Bytes> = decode_ranges, Op::Readv(path.into(), ranges.to_vec()));
    batch_op!(/// `has`.
        has(path: &str) -> bool = decode_bool, Op::Has(path.into()));
    batch_op!(/// `stat`.
        stat(path: &str) -> StatAnswer = decode_stat, Op::Stat(path.into()));
    batch_op!(/// `list_dir`.
        list_dir(path: &str) -> Vec<String> = decode_names, Op::ListDir(path.into()));
    batch_op!(/// `iter_files_recursive`.
        iter_files_recursive(path: &str) -> Vec<String> = decode_names, Op::Iter(path.into()));
    batch_op!(/// `put`.
        put(path: &str, data: Bytes, mode: Option<u32>) -> () = decode_unit, Op::Put(path.into(), data, mode));
    batch_op!(/// `append`: the size before.
        append(path: &str, data: Bytes) -> u64 = decode_u64, Op::Append(path.into(), data));
    batch_op!(/// `mkdir`.
        mkdir(path: &str, mode: Option<u32>) -> () = decode_unit, Op::Mkdir(path.into(), mode));
    batch_op!(/// `rename`.
        rename(from: &str, to: &str) -> () = decode_unit, Op::Rename(from.into(), to.into()));
    batch_op!(/// `delete`.
        delete(path: &str) -> () = decode_unit, Op::Delete(path.into()));
    batch_op!(/// `rmdir`.
        rmdir(path: &str) -> () = decode_unit, Op::Rmdir(path.into()));
    batch_op!(/// An application command; `write` picks the `rw` endpoint.
        call(name: &str, args: Arguments, data: Option<Bytes>, write: bool) -> Bytes = decode_bytes,
        Op::Call { name: name.into(), args, data, write });

    /// Sends everything: one message per 4,096 commands against a framegate
    /// server (reads retried once if the connection drops), or plain HTTP
    /// requests otherwise.
    pub async fn send(self) -> Result<BatchResults> {
        let t = self.transport;
        let mut results: Vec<Option<Result<Bytes>>> = self.ops.iter().map(|_| None).collect();
        if t.smart.is_none() {
            for (op, slot) in self.ops.iter().zip(results.iter_mut()) {
                *slot = Some(plain_op(&t.medium, op).await);
            }
        } else {
            // Commands the server does not run: emulate readv with get, refuse the rest.
            let mut emulate = Vec::new();
            let mut send_idx = Vec::new();
            for (i, op) in self.ops.iter().enumerate() {
                if t.supports(op.name()) {
                    send_idx.push(i);
                } else if matches!(op, Op::Readv(..)) && t.supports("get") {
                    emulate.push(i);
                } else if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(Error::remote(
                        ErrorCode::UNKNOWN_COMMAND,
                        format!("the server does not offer {}", op.name()),
                    )));
                }
            }
            for chunk in send_idx.chunks(MAX_REQUESTS_PER_MESSAGE) {
                let answers = t.send_ops(&self.ops, chunk).await?;
                for (&i, answer) in chunk.iter().zip(answers) {
                    if answer
                        .as_ref()
                        .err()
                        .is_some_and(|e| e.is(&ErrorCode::UNKNOWN_COMMAND))
                        && let (Some(op), Ok(mut u)) = (self.ops.get(i), t.unsupported.lock())
                    {
                        u.insert(op.name().to_string());
                        if matches!(op, Op::Readv(..)) {
                            emulate.push(i);
                            continue;
                        }
                    }
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(answer);
                    }
                }
            }
            if !emulate.is_empty() {
                let gets: Vec<Op> = emulate
                    .iter()
                    .filter_map(|&i| match self.ops.get(i) {
                        Some(Op::Readv(p, _)) => Some(Op::Get(p.clone())),
                        _ => None,
                    })
                    .collect();
                let idx: Vec<usize> = (0..gets.len()).collect();
                let answers = t.send_ops(&gets, &idx).await?;
                for (&i, answer) in emulate.iter().zip(answers) {
                    let sliced = answer.and_then(|whole| slice_ranges(self.ops.get(i), whole));
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(sliced);
                    }
                }
            }
        }
        Ok(BatchResults {
            ops: self.ops,
            results,
        })
    }
}

/// A `get` answer cut into the ranges of a `readv`, as the readv answer.
fn slice_ranges(op: Option<&Op>, whole: Bytes) -> Result<Bytes> {
    let Some(Op::Readv(path, ranges)) = op else {
        return Err(Error::Usage("not a readv".into()));
    };
    let mut out = bytes::BytesMut::new();
    for &(o, l) in ranges {
        let piece = whole.get(o as usize..(o + l) as usize).ok_or_else(|| {
            Error::remote(
                ErrorCode::SHORT_READ,
                format!("range {o},{l} ends past the end of {path}"),
            )
        })?;
        out.extend_from_slice(piece);
    }
    Ok(out.freeze())
}

impl Transport {
    async fn send_ops(&self, ops: &[Op], idx: &[usize]) -> Result<Vec<Result<Bytes>>> {
        if let Some(session) = &self.session {
            // Pipelined on one connection: every call in flight at once.
            let calls = idx.iter().filter_map(|&i| ops.get(i)).map(|op| {
                let req = op.request(&self.prefix);
                let data = match req.source {
                    Source::Bytes(b) => Some(b),
                    _ => None,
                };
                let (name, args) = (req.name, req.args);
                async move { session.call(&name, &args, data).await }
            });
            return Ok(futures_util::future::join_all(calls).await);
        }
        let write = idx.iter().any(|&i| ops.get(i).is_some_and(Op::is_write));
        let attempt = || async {
            let mut requests: Vec<Request<'static>> = idx
                .iter()
                .filter_map(|&i| ops.get(i))
                .map(|op| op.request(&self.prefix))
                .collect();
            smart::run_message(&self.medium, write, &mut requests, &self.hooks).await
        };
        match attempt().await {
            Err(e) if e.is_dropped_connection() && !write => attempt().await,
            Ok(answers)
                if !write
                    && answers
                        .iter()
                        .all(|a| a.as_ref().err().is_some_and(Error::is_dropped_connection))
                    && !answers.is_empty() =>
            {
                attempt().await
            }
            other => other,
        }
    }
}

async fn plain_op(medium: &HttpMedium, op: &Op) -> Result<Bytes> {
    fn cbor_bytes<T: Serialize>(value: &T) -> Bytes {
        framegate_wire::payload::encode_cbor(value)
    }
    match op {
        Op::Get(p) => plain::get(medium, p).await,
        Op::Readv(p, ranges) => {
            let parts = plain::readv(medium, p, ranges).await?;
            Ok(parts.concat().into())
        }
        Op::Has(p) => Ok(cbor_bytes(&plain::has(medium, p).await?)),
        Op::Stat(p) => Ok(cbor_bytes(&plain::stat(medium, p).await?)),
        Op::ListDir(p) => Ok(cbor_bytes(&plain::list_dir(medium, p).await?)),
        Op::Iter(p) => Ok(cbor_bytes(&plain::iter_files_recursive(medium, p).await?)),
        Op::Call {
            write: false, name, ..
        } => Err(Error::remote(
            ErrorCode::NOT_SUPPORTED,
            format!(
                "{name} needs a framegate server; {} serves plain files only",
                medium.base()
            ),
        )),
        other => Err(plain::write_refused(medium, other.name())),
    }
}

/// The results of a sent batch.
#[derive(Debug)]
pub struct BatchResults {
    ops: Vec<Op>,
    results: Vec<Option<Result<Bytes>>>,
}

impl BatchResults {
    /// Takes one result (once; a second take is a usage error).
    pub fn take<T>(&mut self, slot: Slot<T>) -> Result<T> {
        let answer = self
            .results
            .get_mut(slot.index)
            .and_then(Option::take)
            .ok_or_else(|| Error::Usage("result already taken or not in this batch".into()))?;
        let op = self
            .ops
            .get(slot.index)
            .ok_or_else(|| Error::Usage("slot from another batch".into()))?;
        (slot.decode)(op, answer?)
    }
}
