//! Full-duplex sessions (§8) over TCP or an SSH child's stdin/stdout, in
//! the spirit of QEMU's async protocol: explicit, observable runstates and a
//! reader task and a writer task per connection.
//!
//! ```text
//!   Idle ──connect()──► Connecting ──preamble ok──► Running
//!    ▲                       │                         │
//!    └──── connect failed ───┘                   disconnect()
//!    │                                                 ▼
//!    └─────────────── both tasks stopped ──────── Disconnecting
//! ```
//!
//! Many calls share one connection; answers are matched by request id and
//! may arrive in any order. A dropped connection fails every pending call.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use framegate_wire::{Arguments, ClientReactor, Encoding, RequestId, preamble};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Refusal, TransportError};
pub use crate::runstate::RunState;
use crate::smart::{Hooks, Validator};

mod conn;

use conn::{Piece, Reply, Shared};

/// Bytes of request frames queued for the writer before callers wait.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Longest wait for the server to finish after `disconnect()` closed our side.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `disconnect()` waits for an SSH child to exit before killing it.
pub const CHILD_EXIT_WAIT: Duration = Duration::from_secs(5);

/// Transitions kept for a slow [`Session::transitions`] receiver.
pub const TRANSITION_BUFFER: usize = 64;

/// Longest wait for the server's preamble answer.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`Session::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Default of [`Session::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pieces of a streamed answer buffered for its caller before the reader
/// waits.
pub const STREAM_PIECES: usize = 16;

/// Size of the reads of an upload's source.
pub const UPLOAD_READ: usize = 256 * 1024;

mod connector;

use connector::{BoxRead, BoxWrite};
pub use connector::{Connector, SshTarget};

struct Live {
    shared: Arc<Shared>,
    reader: JoinHandle<Result<(), Error>>,
    writer: JoinHandle<Result<(), Error>>,
    child: Option<tokio::process::Child>,
}

impl Drop for Live {
    /// A session dropped without `disconnect()` stops its tasks (and its
    /// SSH child, killed on drop) instead of leaking them.
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.fail_all("the session was dropped");
    }
}

/// The runstate and its transitions, shared with the connection's tasks
/// (a connection the server ends takes the session back to idle).
struct StateCell {
    state: watch::Sender<RunState>,
    transitions: broadcast::Sender<RunState>,
}

/// A framegate session over one byte stream.
pub struct Session {
    cell: Arc<StateCell>,
    live: tokio::sync::Mutex<Option<Live>>,
    shared: Mutex<Option<Arc<Shared>>>,
    encoding: Encoding,
    connect_timeout: Duration,
    read_timeout: Duration,
    hooks: Hooks,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state())
            .finish()
    }
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// An idle session.
    pub fn new() -> Self {
        Session {
            cell: Arc::new(StateCell {
                state: watch::Sender::new(RunState::Idle),
                transitions: broadcast::channel(TRANSITION_BUFFER).0,
            }),
            live: tokio::sync::Mutex::new(None),
            shared: Mutex::new(None),
            encoding: Encoding::Zstd8Mb,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            hooks: Hooks::default(),
        }
    }

    /// Longest wait to connect and exchange the preamble (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest silence of the server while calls wait for answers (default
    /// 120 s): then the connection is given up as lost, and every waiting
    /// call fails.
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Whether to ask for zstd-compressed answers (default true).
    #[must_use]
    pub fn compress(mut self, compress: bool) -> Self {
        self.encoding = if compress {
            Encoding::Zstd8Mb
        } else {
            Encoding::Identity
        };
        self
    }

    /// Where the server's text-output and progress reports go (default:
    /// text to the `tracing` log, progress nowhere).
    #[must_use]
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Keeps request frames within the server's `max-frame-size` (from its
    /// `hello`) for the rest of the connection.
    pub fn limit_payload(&self, max: usize) {
        let shared = self.shared.lock().ok().and_then(|s| s.clone());
        if let Some(shared) = shared
            && let Ok(mut reactor) = shared.reactor.lock()
        {
            reactor.limit_payload(max);
        }
    }

    /// The current runstate.
    pub fn state(&self) -> RunState {
        *self.cell.state.borrow()
    }

    /// The current runstate as a `watch` (latest value; quick successive
    /// changes may be seen as one).
    pub fn watch(&self) -> watch::Receiver<RunState> {
        self.cell.state.subscribe()
    }

    /// Every transition from now on, in order (each new state once).
    pub fn transitions(&self) -> broadcast::Receiver<RunState> {
        self.cell.transitions.subscribe()
    }

    fn set(&self, state: RunState) {
        self.cell.state.send_replace(state);
        let _ = self.cell.transitions.send(state);
    }

    fn state_error(&self, operation: &'static str) -> Error {
        Error::Session {
            operation,
            state: self.state(),
        }
    }

    /// Connects and exchanges the preamble. On failure the session is idle
    /// again and the error wraps the root cause.
    pub async fn connect(&self, connector: Connector) -> Result<(), Error> {
        let mut live = self.live.lock().await;
        if self.state() != RunState::Idle {
            return Err(self.state_error("connect"));
        }
        self.set(RunState::Connecting);
        let target = connector.describe();
        let opened = tokio::time::timeout(self.connect_timeout, self.open(connector))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no connection within {:?} (connect timeout)",
                    self.connect_timeout
                )
                .into())
            });
        match opened {
            Ok((reader, writer, child)) => {
                let shared = Arc::new(Shared {
                    reactor: Mutex::new(ClientReactor::default()),
                    pending: Mutex::new(HashMap::new()),
                    outgoing: Mutex::new(None),
                    budget: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
                    broken: Mutex::new(None),
                    target,
                    hooks: self.hooks.clone(),
                    state: self.cell.clone(),
                });
                let (tx, rx) = mpsc::unbounded_channel();
                if let Ok(mut out) = shared.outgoing.lock() {
                    *out = Some(tx);
                }
                let writer = tokio::spawn(conn::write_loop(writer, rx, shared.clone()));
                let reader = tokio::spawn(conn::read_loop(
                    reader,
                    shared.clone(),
                    framegate_wire::frame::DEFAULT_MAX_FRAME_SIZE,
                    self.read_timeout,
                ));
                if let Ok(mut s) = self.shared.lock() {
                    *s = Some(shared.clone());
                }
                *live = Some(Live {
                    shared,
                    reader,
                    writer,
                    child,
                });
                self.set(RunState::Running);
                Ok(())
            }
            Err(source) => {
                self.set(RunState::Idle);
                // Something answered, but not a framegate session: a
                // refusal, not a connection failure.
                Err(
                    match source.downcast::<framegate_wire::preamble::PreambleRefused>() {
                        Ok(refused) => match *refused {
                            framegate_wire::preamble::PreambleRefused::Refused { code } => {
                                Error::Refused(Refusal::Protocol {
                                    message: format!("{target} refused the session"),
                                    code: framegate_wire::ErrorCode::new(code),
                                })
                            }
                            other => Error::Refused(Refusal::NotSmart {
                                url: target,
                                reason: other.to_string(),
                            }),
                        },
                        Err(source) => Error::Transport(TransportError::Connect {
                            url: target,
                            source,
                        }),
                    },
                )
            }
        }
    }

    async fn open(
        &self,
        connector: Connector,
    ) -> Result<
        (BufReader<BoxRead>, BoxWrite, Option<tokio::process::Child>),
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let (reader, mut writer, mut child): (BoxRead, BoxWrite, Option<tokio::process::Child>) =
            match connector {
                Connector::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(&addr).await?;
                    stream.set_nodelay(true)?;
                    let (r, w) = stream.into_split();
                    (Box::pin(r), Box::pin(w), None)
                }
                Connector::Ssh(target) => {
                    let (program, options) =
                        target.ssh.split_first().ok_or("FRAMEGATE_SSH is empty")?;
                    let mut cmd = tokio::process::Command::new(program);
                    cmd.args(options);
                    if let Some(port) = target.port {
                        cmd.arg("-p").arg(port.to_string());
                    }
                    cmd.arg(&target.host).args(&target.remote_command);
                    cmd.stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .kill_on_drop(true);
                    let mut child = cmd
                        .spawn()
                        .map_err(|e| format!("cannot run {program}: {e}"))?;
                    let stdout = child.stdout.take().ok_or("no stdout")?;
                    let stdin = child.stdin.take().ok_or("no stdin")?;
                    (Box::pin(stdout), Box::pin(stdin), Some(child))
                }
                Connector::Streams(r, w) => (r, w, None),
            };
        let ours = preamble::client_line(&[self.encoding, Encoding::Identity]);
        writer.write_all(ours.as_bytes()).await?;
        writer.flush().await?;
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        let n = tokio::time::timeout(PREAMBLE_TIMEOUT, reader.read_line(&mut line))
            .await
            .map_err(|_| "no preamble answer in time")??;
        if n == 0 {
            if let Some(child) = child.as_mut()
                && let Ok(status) = child.wait().await
            {
                return Err(format!(
                    "{status} before the framegate preamble (see its messages above)"
                )
                .into());
            }
            return Err("the server closed the connection before the preamble".into());
        }
        preamble::parse_server_line(&line)?;
        Ok((reader, writer, child))
    }

    /// The live connection's shared state, if calls can be made.
    fn live_shared(&self, operation: &'static str) -> Result<Arc<Shared>, Error> {
        let shared = self.shared.lock().ok().and_then(|s| s.clone());
        if let Some(shared) = &shared
            && let Some(why) = shared.broken.lock().ok().and_then(|b| b.clone())
        {
            return Err(shared.lost(&why));
        }
        match (self.state(), shared) {
            (RunState::Running, Some(shared)) => Ok(shared),
            _ => Err(self.state_error(operation)),
        }
    }

    /// Room for `size` bytes of request frames in the writer's queue.
    async fn room(&self, shared: &Shared, size: usize) -> Result<OwnedSemaphorePermit, Error> {
        let permits = u32::try_from(size.min(MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
        shared
            .budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| self.state_error("call"))
    }

    /// Queues frames the reactor made (under its lock, so frames reach
    /// the wire in the order it made them).
    fn queue(&self, shared: &Shared, frames: BytesMut, permit: OwnedSemaphorePermit) -> bool {
        shared
            .outgoing
            .lock()
            .ok()
            .and_then(|o| {
                o.as_ref()
                    .map(|tx| tx.send((frames.freeze(), permit)).is_ok())
            })
            .unwrap_or(false)
    }

    /// Starts a request whose answer goes to `reply`: its name and
    /// arguments, and `data` (the whole of it) unless `more_data`, when
    /// data follows with [`Session::send_more`].
    async fn start(
        &self,
        shared: &Shared,
        name: &str,
        args: &Arguments,
        data: Option<Bytes>,
        more_data: bool,
        reply: Reply,
    ) -> Result<RequestId, Error> {
        let size = 64
            + data.as_ref().map_or(0, Bytes::len)
            + args.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let permit = self.room(shared, size).await?;
        let mut reactor = shared
            .reactor
            .lock()
            .map_err(|_| self.state_error("call"))?;
        let id = if more_data {
            reactor.start_request(name, args, true)
        } else {
            reactor.request(name, args, data)
        }
        .map_err(|e| Error::Usage(e.to_string()))?;
        let mut frames = BytesMut::new();
        reactor.write_transmit(&mut frames);
        if let Ok(mut pending) = shared.pending.lock() {
            pending.insert(id, reply);
        }
        if !self.queue(shared, frames, permit) {
            if let Ok(mut pending) = shared.pending.lock() {
                pending.remove(&id);
            }
            return Err(self.state_error("call"));
        }
        Ok(id)
    }

    /// More data for a request started with `more_data`; `last` ends it.
    async fn send_more(
        &self,
        shared: &Shared,
        id: RequestId,
        data: Bytes,
        last: bool,
    ) -> Result<(), Error> {
        let permit = self.room(shared, 16 + data.len()).await?;
        let mut reactor = shared
            .reactor
            .lock()
            .map_err(|_| self.state_error("call"))?;
        reactor
            .send_data(id, data, last)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut frames = BytesMut::new();
        reactor.write_transmit(&mut frames);
        if self.queue(shared, frames, permit) {
            Ok(())
        } else {
            Err(self.state_error("call"))
        }
    }

    /// Calls a command and waits for its answer.
    pub async fn call(
        &self,
        name: &str,
        args: &Arguments,
        data: Option<Bytes>,
    ) -> Result<Bytes, Error> {
        let shared = self.live_shared("call")?;
        let (whole, answer) = Reply::whole();
        self.start(&shared, name, args, data, false, whole).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(shared.lost("the session stopped")))
    }

    /// Calls a command whose data is read from `source` as it is sent (an
    /// upload never whole in memory); waits for its answer.
    pub async fn call_from(
        &self,
        name: &str,
        args: &Arguments,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Bytes, Error> {
        let shared = self.live_shared("call")?;
        let (whole, answer) = Reply::whole();
        let id = self.start(&shared, name, args, None, true, whole).await?;
        let mut chunk = BytesMut::with_capacity(UPLOAD_READ);
        loop {
            chunk.reserve(UPLOAD_READ);
            let n = source.read_buf(&mut chunk).await?;
            self.send_more(&shared, id, chunk.split().freeze(), n == 0)
                .await?;
            if n == 0 {
                break;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(shared.lost("the session stopped")))
    }

    /// Calls a command and streams its answer into `out` as it arrives (a
    /// large answer never whole in memory). Returns the bytes written and
    /// the version of the file the answer comes from, if the server named
    /// it; `on_validator` is called with it before the first byte. On an
    /// error, what was written is not the answer (§4.2).
    pub(crate) async fn call_into(
        &self,
        name: &str,
        args: &Arguments,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        written: &mut u64,
        validator: &mut Option<Validator>,
        on_validator: Option<&(dyn Fn(&Validator) + Sync)>,
    ) -> Result<(), Error> {
        let shared = self.live_shared("call")?;
        let (tx, mut rx) = mpsc::channel(STREAM_PIECES);
        self.start(&shared, name, args, None, false, Reply::Stream(tx))
            .await?;
        loop {
            match rx.recv().await {
                Some(Piece::Data(data)) => {
                    out.write_all(&data).await?;
                    *written += data.len() as u64;
                }
                Some(Piece::Validator(v)) => {
                    if let Some(hook) = on_validator {
                        hook(&v);
                    }
                    *validator = Some(v);
                }
                Some(Piece::End) => {
                    out.flush().await?;
                    return Ok(());
                }
                Some(Piece::Failed(e)) => return Err(e),
                None => return Err(shared.lost("the session stopped")),
            }
        }
    }

    /// Closes our side after the queued frames, lets the server finish
    /// answering, stops both tasks and returns to idle. Returns the first
    /// error that broke the connection, if any.
    pub async fn disconnect(&self) -> Result<(), Error> {
        let mut live_slot = self.live.lock().await;
        // Running, or idle after the server ended the connection (its
        // tasks and child are still to be reaped).
        let lost = self.state() == RunState::Idle && live_slot.is_some();
        if self.state() != RunState::Running && !lost {
            return Err(self.state_error("disconnect"));
        }
        self.set(RunState::Disconnecting);
        let Some(mut live) = live_slot.take() else {
            self.set(RunState::Idle);
            return Ok(());
        };
        if let Ok(mut out) = live.shared.outgoing.lock() {
            out.take();
        }
        let writer = (&mut live.writer).await;
        if writer.is_err() {
            live.reader.abort();
        }
        let reader = match tokio::time::timeout(DISCONNECT_TIMEOUT, &mut live.reader).await {
            Ok(r) => r,
            Err(_) => {
                live.reader.abort();
                Ok(Err(Error::Transport(TransportError::Lost {
                    url: live.shared.target.clone(),
                    source: "the server did not close the connection".into(),
                })))
            }
        };
        live.shared.fail_all("the session was disconnected");
        if let Some(mut child) = live.child.take() {
            let _ = tokio::time::timeout(CHILD_EXIT_WAIT, child.wait()).await;
            let _ = child.kill().await;
        }
        if let Ok(mut s) = self.shared.lock() {
            *s = None;
        }
        self.set(RunState::Idle);
        let flatten = |r: Result<Result<(), Error>, tokio::task::JoinError>| match r {
            Ok(inner) => inner,
            Err(e) => Err(Error::Usage(format!("session task failed: {e}"))),
        };
        flatten(writer)?;
        flatten(reader)
    }
}
