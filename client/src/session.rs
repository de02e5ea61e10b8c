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
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use framegate_wire::{
    Arguments, ClientConfig, ClientEvent, ClientReactor, Encoding, ErrorKind, FrameDecoder,
    RequestId, preamble,
};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::error::Error;

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

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Not connected.
    Idle,
    /// Connecting and exchanging the preamble.
    Connecting,
    /// Calls can be made.
    Running,
    /// Closing: outgoing frames drain, the tasks stop.
    Disconnecting,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Idle => "idle",
            RunState::Connecting => "connecting",
            RunState::Running => "running",
            RunState::Disconnecting => "disconnecting",
        })
    }
}

type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// How to reach a server.
pub enum Connector {
    /// `framegate://host:port`.
    Tcp(String),
    /// An SSH child: `program args... [-p port] [user@]host remote-command...`.
    Ssh(SshTarget),
    /// Already-open streams (a child process's pipes, tests).
    Streams(BoxRead, BoxWrite),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connector::Tcp(a) => write!(f, "Tcp({a})"),
            Connector::Ssh(t) => write!(f, "Ssh({t:?})"),
            Connector::Streams(..) => f.write_str("Streams"),
        }
    }
}

impl Connector {
    /// Streams from any reader and writer.
    pub fn streams(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
    ) -> Self {
        Connector::Streams(Box::pin(reader), Box::pin(writer))
    }

    fn describe(&self) -> String {
        match self {
            Connector::Tcp(a) => format!("framegate://{a}"),
            Connector::Ssh(t) => format!("framegate+ssh://{}", t.host),
            Connector::Streams(..) => "streams".into(),
        }
    }
}

/// An SSH destination and how to run ssh there.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// `[user@]host`.
    pub host: String,
    /// Port, if not the default.
    pub port: Option<u16>,
    /// The ssh program and its options (`FRAMEGATE_SSH`, default `ssh`).
    pub ssh: Vec<String>,
    /// The remote command (`FRAMEGATE_REMOTE_COMMAND`, default
    /// `framegate-server serve --stdio /`).
    pub remote_command: Vec<String>,
}

impl SshTarget {
    /// A target with the ssh program and remote command from the environment.
    pub fn new(host: &str, port: Option<u16>) -> Self {
        let split = |var: &str, default: &str| -> Vec<String> {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        SshTarget {
            host: host.to_string(),
            port,
            ssh: split("FRAMEGATE_SSH", "ssh"),
            remote_command: split(
                "FRAMEGATE_REMOTE_COMMAND",
                "framegate-server serve --stdio /",
            ),
        }
    }
}

struct Pending {
    data: BytesMut,
    reply: oneshot::Sender<Result<Bytes, Error>>,
}

struct Shared {
    reactor: Mutex<ClientReactor>,
    pending: Mutex<HashMap<RequestId, Pending>>,
    outgoing: Mutex<Option<mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>>>,
    budget: Arc<Semaphore>,
    broken: Mutex<Option<String>>,
    target: String,
}

impl Shared {
    fn fail_all(&self, why: &str) {
        if let Ok(mut broken) = self.broken.lock() {
            broken.get_or_insert_with(|| why.to_string());
        }
        let drained: Vec<Pending> = self
            .pending
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for p in drained {
            let _ = p.reply.send(Err(Error::ConnectionLost {
                target: self.target.clone(),
                reason: why.to_string(),
            }));
        }
    }

    fn dispatch(&self, event: ClientEvent) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        match event {
            ClientEvent::Data { request_id, data } => {
                if let Some(p) = pending.get_mut(&request_id) {
                    p.data.extend_from_slice(&data);
                }
            }
            ClientEvent::End { request_id } => {
                if let Some(p) = pending.remove(&request_id) {
                    let _ = p.reply.send(Ok(p.data.freeze()));
                }
            }
            ClientEvent::Failed {
                request_id,
                kind,
                error,
            } => {
                if let Some(p) = pending.remove(&request_id) {
                    let err = match kind {
                        ErrorKind::Application => Error::Remote {
                            code: error.code,
                            message: error.message,
                        },
                        ErrorKind::Protocol => Error::Refused {
                            code: error.code,
                            message: error.message,
                        },
                    };
                    let _ = p.reply.send(Err(err));
                }
            }
            ClientEvent::Unanswered { request_id } => {
                if let Some(p) = pending.remove(&request_id) {
                    let _ = p.reply.send(Err(Error::ConnectionLost {
                        target: self.target.clone(),
                        reason: "the server closed the connection before answering".into(),
                    }));
                }
            }
            ClientEvent::ConnectionError { error, .. } => {
                tracing::warn!(code = %error.code, message = %error.message, "server reported a connection error");
            }
            ClientEvent::TextOutput { atoms, .. } => {
                for atom in atoms {
                    eprint!("{}", atom.render());
                }
            }
            _ => {}
        }
    }
}

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

/// A framegate session over one byte stream.
pub struct Session {
    state: watch::Sender<RunState>,
    transitions: broadcast::Sender<RunState>,
    live: tokio::sync::Mutex<Option<Live>>,
    shared: Mutex<Option<Arc<Shared>>>,
    encoding: Encoding,
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
            state: watch::Sender::new(RunState::Idle),
            transitions: broadcast::channel(TRANSITION_BUFFER).0,
            live: tokio::sync::Mutex::new(None),
            shared: Mutex::new(None),
            encoding: Encoding::Zstd8Mb,
        }
    }

    /// The current runstate.
    pub fn state(&self) -> RunState {
        *self.state.borrow()
    }

    /// The current runstate as a `watch` (latest value; quick successive
    /// changes may be seen as one).
    pub fn watch(&self) -> watch::Receiver<RunState> {
        self.state.subscribe()
    }

    /// Every transition from now on, in order (each new state once).
    pub fn transitions(&self) -> broadcast::Receiver<RunState> {
        self.transitions.subscribe()
    }

    fn set(&self, state: RunState) {
        self.state.send_replace(state);
        let _ = self.transitions.send(state);
    }

    fn state_error(&self, operation: &'static str) -> Error {
        Error::State {
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
        match self.open(connector).await {
            Ok((reader, writer, child)) => {
                let shared = Arc::new(Shared {
                    reactor: Mutex::new(ClientReactor::new(client_config())),
                    pending: Mutex::new(HashMap::new()),
                    outgoing: Mutex::new(None),
                    budget: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
                    broken: Mutex::new(None),
                    target,
                });
                let (tx, rx) = mpsc::unbounded_channel();
                if let Ok(mut out) = shared.outgoing.lock() {
                    *out = Some(tx);
                }
                let writer = tokio::spawn(write_loop(writer, rx, shared.clone()));
                let reader = tokio::spawn(read_loop(reader, shared.clone()));
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
                Err(Error::ConnectFailed { target, source })
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

    /// Calls a command and waits for its answer.
    pub async fn call(
        &self,
        name: &str,
        args: &Arguments,
        data: Option<Bytes>,
    ) -> Result<Bytes, Error> {
        let shared = match (
            self.state(),
            self.shared.lock().ok().and_then(|s| s.clone()),
        ) {
            (RunState::Running, Some(shared)) => shared,
            _ => return Err(self.state_error("call")),
        };
        if let Some(why) = shared.broken.lock().ok().and_then(|b| b.clone()) {
            return Err(Error::ConnectionLost {
                target: shared.target.clone(),
                reason: why,
            });
        }
        let size = 64
            + data.as_ref().map_or(0, Bytes::len)
            + args.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let permits = size.min(MAX_QUEUED_BYTES) as u32;
        let permit = shared
            .budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| self.state_error("call"))?;
        let (reply, answer) = oneshot::channel();
        {
            // One lock orders id assignment and frame queueing, so frames
            // reach the wire in the order the reactor made them.
            let mut reactor = shared
                .reactor
                .lock()
                .map_err(|_| self.state_error("call"))?;
            let id = reactor
                .request(name, args, data)
                .map_err(|e| Error::Usage(e.to_string()))?;
            let mut frames = BytesMut::new();
            reactor.write_transmit(&mut frames);
            if let Ok(mut pending) = shared.pending.lock() {
                pending.insert(
                    id,
                    Pending {
                        data: BytesMut::new(),
                        reply,
                    },
                );
            }
            let sent = shared
                .outgoing
                .lock()
                .ok()
                .and_then(|o| {
                    o.as_ref()
                        .map(|tx| tx.send((frames.freeze(), permit)).is_ok())
                })
                .unwrap_or(false);
            if !sent {
                if let Ok(mut pending) = shared.pending.lock() {
                    pending.remove(&id);
                }
                return Err(self.state_error("call"));
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::ConnectionLost {
                target: shared.target.clone(),
                reason: "the session stopped".into(),
            })
        })
    }

    /// Closes our side after the queued frames, lets the server finish
    /// answering, stops both tasks and returns to idle. Returns the first
    /// error that broke the connection, if any.
    pub async fn disconnect(&self) -> Result<(), Error> {
        let mut live_slot = self.live.lock().await;
        if self.state() != RunState::Running {
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
                Ok(Err(Error::ConnectionLost {
                    target: live.shared.target.clone(),
                    reason: "the server did not close the connection".into(),
                }))
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

fn client_config() -> ClientConfig {
    ClientConfig::default()
}

async fn write_loop(
    mut writer: BoxWrite,
    mut rx: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    while let Some((bytes, permit)) = rx.recv().await {
        let result = writer.write_all(&bytes).await;
        drop(permit);
        if let Err(e) = result {
            shared.fail_all(&format!("writing failed: {e}"));
            return Err(Error::ConnectionLost {
                target: shared.target.clone(),
                reason: e.to_string(),
            });
        }
        if rx.is_empty() {
            let _ = writer.flush().await;
        }
    }
    // Disconnecting: our side is done; the server answers what it has, then closes.
    let _ = writer.shutdown().await;
    Ok(())
}

async fn read_loop(reader: BufReader<BoxRead>, shared: Arc<Shared>) -> Result<(), Error> {
    let mut frames = FramedRead::new(reader, FrameDecoder::default());
    let result = loop {
        let frame = match frames.next().await {
            None => break Ok(()),
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break Err(e.to_string()),
        };
        let events: Vec<ClientEvent> = {
            let Ok(mut reactor) = shared.reactor.lock() else {
                break Err("reactor poisoned".into());
            };
            if let Err(e) = reactor.handle_frame(frame) {
                break Err(format!("the server broke the protocol: {e}"));
            }
            std::iter::from_fn(|| reactor.poll_event()).collect()
        };
        for event in events {
            shared.dispatch(event);
        }
    };
    let events: Vec<ClientEvent> = match shared.reactor.lock() {
        Ok(mut reactor) => {
            reactor.handle_input_ended();
            std::iter::from_fn(|| reactor.poll_event()).collect()
        }
        Err(_) => Vec::new(),
    };
    for event in events {
        shared.dispatch(event);
    }
    match result {
        Ok(()) => {
            shared.fail_all("the server closed the connection");
            Ok(())
        }
        Err(why) => {
            shared.fail_all(&why);
            Err(Error::ConnectionLost {
                target: shared.target.clone(),
                reason: why,
            })
        }
    }
}
