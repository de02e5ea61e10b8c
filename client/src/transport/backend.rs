//! The three backends a transport can have, chosen once per transport:
//! a framegate server over HTTP(S) ([`Smart`]), a plain web server
//! ([`Plain`]: files by GET, Range, HEAD and listings; no writes), or
//! framegate over a byte stream, TCP or SSH ([`Stream`]). Each states
//! how it sends a batch's commands, streams an answer into a writer and
//! streams an upload from a reader.

use std::sync::Arc;

use bytes::Bytes;
use framegate_wire::preamble::DEFAULT_TCP_PORT;
use framegate_wire::{Arguments, ErrorCode, HelloPayload};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};

use super::answer::{Answer, PlainAnswer};
use super::ops::{Op, prefixed};
use super::options::Options;
use crate::error::{Error, Misbehavior, Result};
use crate::http::HttpMedium;
use crate::plain;
use crate::session::{Connector, RunState, Session, SshTarget};
use crate::smart::{self, Hooks, Request, Sink, Source, Validator};

/// What a transport talks to.
#[derive(Debug)]
pub(crate) enum Backend {
    Smart(Smart),
    Plain(Plain),
    Stream(Stream),
}

impl Backend {
    /// The server's `hello` (a framegate server's).
    pub(crate) fn hello(&self) -> Option<&HelloPayload> {
        match self {
            Backend::Smart(s) => Some(&s.hello),
            Backend::Stream(s) => s.hello(),
            Backend::Plain(_) => None,
        }
    }
}

/// Where a streamed answer goes, and what it reported: the bytes
/// written and the version of the file (if the server announced it) are
/// set whatever the outcome.
pub(crate) struct Streamed<'a> {
    pub(crate) out: &'a mut (dyn AsyncWrite + Unpin + Send),
    pub(crate) written: u64,
    pub(crate) validator: Option<Validator>,
    /// Called when the version is announced, before the first byte.
    pub(crate) on_validator: Option<&'a (dyn Fn(&Validator) + Sync)>,
}

impl<'a> Streamed<'a> {
    pub(crate) fn new(out: &'a mut (dyn AsyncWrite + Unpin + Send)) -> Self {
        Streamed {
            out,
            written: 0,
            validator: None,
            on_validator: None,
        }
    }
}

/// How a request sent over HTTP came back.
pub(crate) enum Reply {
    /// No framegate server answered the first message (nothing was
    /// written): the server is a plain one.
    NotSmart,
    /// A framegate server answered: its `hello` if the message carried
    /// one, and the request's outcome.
    Answered {
        hello: Option<HelloPayload>,
        result: Result<()>,
    },
}

/// One request whose answer streams into `into`, in a message of its
/// own over HTTP; `hello` goes with it when `cold` (the server is not
/// known yet). An error is one no answer came back from.
pub(crate) async fn call_into_http(
    medium: &HttpMedium,
    cold: bool,
    name: &str,
    args: Arguments,
    into: &mut Streamed<'_>,
    hooks: &Hooks,
) -> Result<Reply> {
    let mut requests = [Request {
        name: name.into(),
        args,
        source: Source::None,
        sink: Sink::Writer {
            out: &mut *into.out,
            written: 0,
            validator: None,
            on_validator: into.on_validator,
        },
    }];
    let (hello, answers) = if cold {
        match smart::run_cold(medium, &mut requests, hooks).await {
            Ok(Some((hello, answers))) => (Some(hello), Ok(answers)),
            Ok(None) => return Ok(Reply::NotSmart),
            Err(e) => (None, Err(e)),
        }
    } else {
        (
            None,
            smart::run_message(medium, false, &mut requests, hooks).await,
        )
    };
    if let Sink::Writer {
        written, validator, ..
    } = &mut requests[0].sink
    {
        into.written += *written;
        into.validator = validator.take();
    }
    let result = answers.and_then(|mut a| {
        a.pop()
            .unwrap_or_else(|| Err(Error::Usage("no answer".into())))
            .map(drop)
    });
    Ok(Reply::Answered { hello, result })
}

/// A framegate server over HTTP(S): one POST per message.
#[derive(Debug)]
pub(crate) struct Smart {
    pub(crate) medium: HttpMedium,
    pub(crate) hello: HelloPayload,
}

impl Smart {
    /// The commands `idx` of `ops` in one message (reads retried once on
    /// a new connection if this one dropped).
    pub(crate) async fn send(
        &self,
        ops: &[Op],
        idx: &[usize],
        hooks: &Hooks,
    ) -> Result<Vec<Result<Bytes>>> {
        let write = idx.iter().any(|&i| ops.get(i).is_some_and(Op::is_write));
        let attempt = || async {
            let mut requests: Vec<Request<'static>> = idx
                .iter()
                .filter_map(|&i| ops.get(i))
                .map(|op| op.request(""))
                .collect();
            smart::run_message(&self.medium, write, &mut requests, hooks).await
        };
        match attempt().await {
            Err(e) if e.is_dropped_connection() && !write => attempt().await,
            Ok(answers)
                if !write
                    && !answers.is_empty()
                    && answers
                        .iter()
                        .all(|a| a.as_ref().err().is_some_and(Error::is_dropped_connection)) =>
            {
                attempt().await
            }
            other => other,
        }
    }

    /// A read whose answer streams into `into`.
    pub(crate) async fn call_into(
        &self,
        name: &str,
        args: Arguments,
        into: &mut Streamed<'_>,
        hooks: &Hooks,
    ) -> Result<()> {
        match call_into_http(&self.medium, false, name, args, into, hooks).await? {
            Reply::Answered { result, .. } => result,
            Reply::NotSmart => Err(Error::Usage("a warm message came back not smart".into())),
        }
    }

    /// `put` with its data read from `source` as it is sent.
    pub(crate) async fn put_from(
        &self,
        args: Arguments,
        source: &mut (dyn AsyncRead + Unpin + Send),
        hooks: &Hooks,
    ) -> Result<()> {
        let mut requests = [Request {
            name: "put".into(),
            args,
            source: Source::Reader(source),
            sink: Sink::Memory,
        }];
        smart::run_message(&self.medium, true, &mut requests, hooks)
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Usage("no answer".into())))?;
        Ok(())
    }
}

/// A plain web server: reads only.
#[derive(Debug)]
pub(crate) struct Plain {
    pub(crate) medium: HttpMedium,
}

impl Plain {
    /// One command of a batch, as plain HTTP requests.
    pub(crate) async fn op(&self, op: &Op) -> Result<Answer> {
        let m = &self.medium;
        Ok(match op {
            Op::Get(p) => Answer::Wire(plain::get(m, p).await?),
            Op::Readv(p, ranges) => {
                Answer::Plain(PlainAnswer::Parts(plain::readv(m, p, ranges).await?))
            }
            Op::Has(p) => Answer::Plain(PlainAnswer::Bool(plain::has(m, p).await?)),
            Op::Stat(p) => Answer::Plain(PlainAnswer::Stat(plain::stat(m, p).await?)),
            Op::ListDir(p) => Answer::Plain(PlainAnswer::Names(plain::list_dir(m, p).await?)),
            Op::Iter(p) => {
                Answer::Plain(PlainAnswer::Names(plain::iter_files_recursive(m, p).await?))
            }
            Op::Call {
                write: false, name, ..
            } => {
                return Err(Error::remote(
                    ErrorCode::NOT_SUPPORTED,
                    format!(
                        "{name} needs a framegate server; {} serves plain files only",
                        m.base()
                    ),
                ));
            }
            other => return Err(self.refuse(other.name())),
        })
    }

    /// A whole file into `out`.
    pub(crate) async fn get_into(
        &self,
        path: &str,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        plain::get_into(&self.medium, path, out).await
    }

    /// The error for a write.
    pub(crate) fn refuse(&self, command: &str) -> Error {
        plain::write_refused(&self.medium, command)
    }
}

/// framegate over a byte stream: one full-duplex session, every call
/// pipelined on it; connected at the first call (or at open) and again
/// before a call if the server ended the connection.
#[derive(Debug)]
pub(crate) struct Stream {
    session: Arc<Session>,
    /// The URL (without a password), for [`Transport::base_url`](super::Transport::base_url).
    pub(crate) url: Url,
    token: Option<String>,
    /// Prepended to every path: the server serves its root.
    prefix: String,
    /// The server's `hello`, from the first connection.
    hello: std::sync::OnceLock<HelloPayload>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
}

impl Stream {
    /// `framegate://host[:port]/path` (TCP) or
    /// `framegate+ssh://[user@]host[:port]/path` (an SSH child running
    /// `framegate-server serve --stdio /`), not connected yet.
    pub(crate) fn new(url: &str, options: &Options) -> Result<Stream> {
        let mut parsed = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
        connector_for(&parsed)?;
        let session = Arc::new(
            Session::new()
                .connect_timeout(options.connect_timeout)
                .read_timeout(options.read_timeout)
                .compress(options.compress)
                .hooks(options.hooks.clone()),
        );
        let prefix = percent_encoding::percent_decode_str(parsed.path().trim_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        if !parsed.path().ends_with('/') {
            let path = format!("{}/", parsed.path());
            parsed.set_path(&path);
        }
        let _ = parsed.set_password(None);
        Ok(Stream {
            session,
            url: parsed,
            token: options.token.clone(),
            prefix,
            hello: std::sync::OnceLock::new(),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// The server's `hello`, once connected.
    pub(crate) fn hello(&self) -> Option<&HelloPayload> {
        self.hello.get()
    }

    /// Connects (and says `hello`) if not connected: the first time, or
    /// after the server ended the connection (or it broke).
    pub(crate) async fn revive(&self) -> Result<()> {
        let _one = self.connecting.lock().await;
        if self.session.state() != RunState::Idle {
            return Ok(());
        }
        // Reap what is left of an old connection (its child, its tasks).
        let _ = self.session.disconnect().await;
        let hello = start_session(
            &self.session,
            connector_for(&self.url)?,
            self.token.as_deref(),
        )
        .await?;
        let _ = self.hello.set(hello);
        Ok(())
    }

    /// `args` with its `path` below the prefix.
    fn rooted(&self, mut args: Arguments) -> Arguments {
        if let Some(Ok(path)) = args.get_str("path") {
            let full = prefixed(&self.prefix, path);
            let _ = args.remove("path");
            let _ = args.insert("path", full);
        }
        args
    }

    /// The commands `idx` of `ops`, all in flight at once.
    pub(crate) async fn send(&self, ops: &[Op], idx: &[usize]) -> Result<Vec<Result<Bytes>>> {
        self.revive().await?;
        let calls = idx.iter().filter_map(|&i| ops.get(i)).map(|op| {
            let req = op.request(&self.prefix);
            let data = match req.source {
                Source::Bytes(b) => Some(b),
                _ => None,
            };
            let (name, args) = (req.name, req.args);
            async move { self.session.call(&name, &args, data).await }
        });
        Ok(futures_util::future::join_all(calls).await)
    }

    /// A read whose answer streams into `into`.
    pub(crate) async fn call_into(
        &self,
        name: &str,
        args: Arguments,
        into: &mut Streamed<'_>,
    ) -> Result<()> {
        let args = self.rooted(args);
        self.revive().await?;
        self.session
            .call_into(
                name,
                &args,
                &mut *into.out,
                &mut into.written,
                &mut into.validator,
                into.on_validator,
            )
            .await
    }

    /// `put` with its data read from `source` as it is sent.
    pub(crate) async fn put_from(
        &self,
        args: Arguments,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<()> {
        let args = self.rooted(args);
        self.revive().await?;
        self.session.call_from("put", &args, source).await?;
        Ok(())
    }

    /// Disconnects cleanly.
    pub(crate) async fn close(&self) -> Result<()> {
        self.session.disconnect().await
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
    let hello = HelloPayload::decode(&hello).map_err(|e| {
        Error::Misbehaved(Misbehavior::Protocol {
            url: target.to_string(),
            source: e.into(),
        })
    })?;
    session.limit_payload(usize::try_from(hello.max_frame_size).unwrap_or(usize::MAX));
    Ok(hello)
}
