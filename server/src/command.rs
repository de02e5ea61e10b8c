//! The embedding API: commands, their inputs and answers, and the registry.
//!
//! An application registers [`Command`]s in a [`Registry`] (next to, or
//! instead of, the file commands) and builds the gateway with it. The
//! gateway calls [`Command::run`] once per request with a [`Call`]:
//!
//! * For a request **without data**, `run` is called when the request is
//!   complete and the command's turn has come (§6 ordering); `call.turn` is
//!   already granted.
//! * For a request **with data** to a command that takes data
//!   ([`Command::takes_data`], the default), `run` is called as soon as the
//!   name and arguments are in, so the data can be streamed (e.g. into the
//!   storage's staging area, [`crate::Storage::stage`]). The command must
//!   read its data *first* and only then `call.turn.wait().await` before
//!   making any visible change: the turn comes after the request is
//!   complete and every earlier command that it must follow has finished.
//!   A command that holds its data unread for the body-read timeout is
//!   failed. Data sent to a command that takes none is discarded.
//!
//! A command's answer is an [`Answer`]: bytes, CBOR, or a lazy source (an
//! open file and byte ranges, or a stream) that is read only when the answer
//! is sent, so a large answer deferred behind a slow upload costs no memory.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use crate::answer::{Answer, CommandError, MAX_ERROR_MESSAGE};
use crate::storage::Storage;
use bytes::Bytes;
use framegate_wire::{Arguments, ErrorCode, ProgressPayload, RequestId, TextAtom};
use tokio::sync::{mpsc, oneshot};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Whether a command changes state (a barrier for ordering, refused on `ro`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: may run concurrently with other reads.
    Read,
    /// Writes: runs after every earlier command, before every later one.
    Write,
}

/// A piece of request data, or the end of it.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Data, with its charges on the server's queued-upload and memory
    /// budgets (given back when the command takes it).
    Data(Bytes, UploadCharge),
    End,
}

/// What a queued piece of upload data holds until its command takes it.
#[derive(Debug)]
pub(crate) struct UploadCharge {
    _queued: Option<tokio::sync::OwnedSemaphorePermit>,
    _memory: Option<framegate_wire::budget::Permit>,
}

impl UploadCharge {
    /// Holds a piece's units of the queued-upload budget and its bytes of
    /// the memory budget (either may be missing).
    pub(crate) fn new(
        queued: Option<tokio::sync::OwnedSemaphorePermit>,
        memory: Option<framegate_wire::budget::Permit>,
    ) -> Self {
        UploadCharge {
            _queued: queued,
            _memory: memory,
        }
    }
}

/// The request data of a command, streamed as it arrives.
#[derive(Debug)]
pub struct Upload {
    rx: mpsc::Receiver<Chunk>,
    ended: bool,
}

impl Upload {
    pub(crate) fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Upload { rx, ended: false }
    }

    /// The next piece; `Ok(None)` at the end; an error if the request was cut
    /// off (the client went away or the message broke).
    pub async fn next(&mut self) -> Result<Option<Bytes>, CommandError> {
        if self.ended {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Chunk::Data(bytes, _charge)) => Ok(Some(bytes)),
            Some(Chunk::End) => {
                self.ended = true;
                Ok(None)
            }
            None => Err(CommandError::new(
                ErrorCode::INTERNAL,
                "request data was cut off",
            )),
        }
    }
}

/// Permission to take effect: granted in completion order (§6) by the
/// message's driver, within its running-command limit.
#[derive(Debug)]
pub struct Turn {
    rx: Option<oneshot::Receiver<()>>,
}

impl Turn {
    pub(crate) fn pending(rx: oneshot::Receiver<()>) -> Self {
        Turn { rx: Some(rx) }
    }

    /// A turn that is already granted (embedding tests, direct calls).
    pub fn granted() -> Self {
        Turn { rx: None }
    }

    /// Waits for the turn. Errors if the message was abandoned.
    pub async fn wait(&mut self) -> Result<(), CommandError> {
        if let Some(rx) = self.rx.take() {
            let asked = std::time::Instant::now();
            rx.await
                .map_err(|_| CommandError::new(ErrorCode::INTERNAL, "message abandoned"))?;
            tracing::debug!(waited_us = asked.elapsed().as_micros() as u64, "turn");
        }
        Ok(())
    }
}

/// Messages a running command sends beside its answer.
#[derive(Debug)]
pub(crate) enum Note {
    Text(RequestId, Vec<TextAtom>),
    Progress(RequestId, ProgressPayload),
}

/// What a command knows about its request.
#[derive(Clone)]
pub struct Context {
    /// The request.
    pub request_id: RequestId,
    /// The storage, seen from the message's base (commands' paths are
    /// relative to it).
    pub storage: Arc<dyn Storage>,
    /// Whether the endpoint or connection accepts writes.
    pub writable: bool,
    pub(crate) notes: mpsc::UnboundedSender<Note>,
    pub(crate) hello: Arc<HelloInfo>,
    /// The server's budget of listing bytes held until sent
    /// (`GatewayConfig::listing_memory`).
    pub(crate) listing_budget: framegate_wire::SharedBudget,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("request_id", &self.request_id)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Context {
    /// Sends text-output for this request (shown to the user).
    pub fn text(&self, atoms: Vec<TextAtom>) {
        let _ = self.notes.send(Note::Text(self.request_id, atoms));
    }

    /// Sends a progress report for this request.
    pub fn progress(&self, progress: ProgressPayload) {
        let _ = self.notes.send(Note::Progress(self.request_id, progress));
    }
}

/// What `hello` reports, fixed per server.
#[derive(Debug, Clone)]
pub(crate) struct HelloInfo {
    pub(crate) commands: Vec<String>,
    pub(crate) max_frame_size: u64,
}

/// One call of a command.
#[derive(Debug)]
pub struct Call {
    /// The request's context.
    pub ctx: Context,
    /// Its arguments.
    pub args: Arguments,
    /// Its data, if the request has any.
    pub data: Option<Upload>,
    /// When to take effect (see the module docs).
    pub turn: Turn,
}

impl Call {
    /// A required argument.
    pub fn arg(&self, name: &str) -> Result<&Bytes, CommandError> {
        self.args
            .get(name)
            .ok_or_else(|| CommandError::missing(name))
    }

    /// A required UTF-8 argument.
    pub fn arg_str(&self, name: &str) -> Result<&str, CommandError> {
        std::str::from_utf8(self.arg(name)?).map_err(|_| CommandError::bad(name, "not UTF-8"))
    }
}

/// A command the gateway can run.
pub trait Command: Send + Sync + 'static {
    /// Read or write (default: read).
    fn access(&self) -> Access {
        Access::Read
    }

    /// Whether the command reads request data (default: true). A command
    /// that does not is started once its request is complete, and data
    /// sent with it is discarded as it arrives.
    fn takes_data(&self) -> bool {
        true
    }

    /// Runs the command (see the module docs for when it is called).
    fn run(&self, call: Call) -> BoxFuture<Result<Answer, CommandError>>;
}

impl<F, Fut> Command for F
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, CommandError>> + Send + 'static,
{
    fn run(&self, call: Call) -> BoxFuture<Result<Answer, CommandError>> {
        Box::pin(self(call))
    }
}

/// A read command from a closure (for [`Registry::register`]).
pub fn read_command<F, Fut>(f: F) -> Arc<dyn Command>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, CommandError>> + Send + 'static,
{
    Arc::new(f)
}

/// A write command from a closure.
pub fn write_command<F, Fut>(f: F) -> Arc<dyn Command>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, CommandError>> + Send + 'static,
{
    struct Writer<F>(F);
    impl<F, Fut> Command for Writer<F>
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Answer, CommandError>> + Send + 'static,
    {
        fn access(&self) -> Access {
            Access::Write
        }
        fn run(&self, call: Call) -> BoxFuture<Result<Answer, CommandError>> {
            Box::pin((self.0)(call))
        }
    }
    Arc::new(Writer(f))
}

/// Commands by name, and the names the operator's policy refuses.
#[derive(Clone, Default)]
pub struct Registry {
    commands: BTreeMap<String, Arc<dyn Command>>,
    refused: std::collections::BTreeSet<String>,
}

/// Which commands a server offers (`serve --allow-commands` /
/// `--deny-commands`): a refused command is missing from `hello` and
/// answered with `command-refused`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandPolicy {
    /// Only these (and `hello`), if given.
    pub allow: Option<Vec<String>>,
    /// Never these.
    pub deny: Vec<String>,
}

/// A policy naming a command the server does not have (a typo would
/// otherwise leave a command open), or refusing `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.commands.keys()).finish()
    }
}

impl Registry {
    /// No commands but `hello` (which the gateway always answers).
    pub fn empty() -> Self {
        Registry::default()
    }

    /// Adds or replaces a command. Names follow §4.1 (`[a-z0-9._-]`).
    pub fn register(&mut self, name: &str, command: Arc<dyn Command>) -> &mut Self {
        debug_assert!(framegate_wire::frame::check_name(name.as_bytes()).is_ok());
        self.commands.insert(name.to_string(), command);
        self
    }

    /// The command called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Command>> {
        self.commands.get(name)
    }

    /// Applies an operator's policy: the commands it does not allow, or
    /// denies, are refused (kept out of `hello`, answered
    /// `command-refused`). Every name must be a command of this registry;
    /// `hello` cannot be refused (clients need it to learn what is offered).
    pub fn apply(&mut self, policy: &CommandPolicy) -> Result<(), PolicyError> {
        let all: Vec<String> = self.names();
        let named = policy.allow.iter().flatten().chain(&policy.deny);
        for name in named {
            if !all.contains(name) {
                return Err(PolicyError(format!(
                    "no command named {name:?} (the server has: {})",
                    all.join(", ")
                )));
            }
        }
        if policy.deny.iter().any(|n| n == "hello") {
            return Err(PolicyError(
                "`hello` cannot be refused: clients ask it what the server offers".into(),
            ));
        }
        for name in all {
            let allowed = policy.allow.as_ref().is_none_or(|a| a.contains(&name));
            if name != "hello" && (!allowed || policy.deny.contains(&name)) {
                self.commands.remove(&name);
                self.refused.insert(name);
            }
        }
        Ok(())
    }

    /// Whether the operator's policy refuses `name` ([`Registry::apply`]).
    pub fn is_refused(&self, name: &str) -> bool {
        self.refused.contains(name)
    }

    /// All names offered, `hello` included, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.commands.keys().cloned().collect();
        if !self.commands.contains_key("hello") {
            names.push("hello".into());
            names.sort();
        }
        names
    }
}

/// The built-in `hello` (§9.1).
pub(crate) struct Hello;

impl Command for Hello {
    fn takes_data(&self) -> bool {
        false
    }

    fn run(&self, call: Call) -> BoxFuture<Result<Answer, CommandError>> {
        let hello = framegate_wire::HelloPayload {
            server: format!("framegate-server/{}", env!("CARGO_PKG_VERSION")),
            commands: call.ctx.hello.commands.clone(),
            protocol: framegate_wire::PROTOCOL_VERSION,
            writable: call.ctx.writable,
            encodings: framegate_wire::Encoding::SUPPORTED
                .iter()
                .map(|e| e.name().to_string())
                .collect(),
            max_frame_size: call.ctx.hello.max_frame_size,
        };
        Box::pin(async move { Ok(Answer::Bytes(hello.encode())) })
    }
}
