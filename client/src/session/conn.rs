//! One live connection of a session: the state its calls share, the
//! reader task that matches answers to calls, the writer task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use framegate_wire::{ClientEvent, ClientReactor, FrameDecoder, RequestId, TextAtom};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::codec::FramedRead;

use super::{BoxRead, BoxWrite, RunState, StateCell};
use crate::error::{Error, TransportError};
use crate::gathered::Gathered;
use crate::smart::{Hooks, Validator};

/// A piece of a streamed answer.
pub(super) enum Piece {
    /// The version of the file the answer comes from (before its bytes).
    Validator(Validator),
    Data(Bytes),
    End,
    Failed(Error),
}

/// Where a call's answer goes.
pub(super) enum Reply {
    /// Gathered, then sent whole.
    Whole {
        data: Gathered,
        reply: oneshot::Sender<Result<Bytes, Error>>,
    },
    /// Streamed piece by piece (bounded: the reader waits for the caller).
    Stream(mpsc::Sender<Piece>),
}

impl Reply {
    /// A reply gathered whole, and where it arrives.
    pub(super) fn whole() -> (Reply, oneshot::Receiver<Result<Bytes, Error>>) {
        let (reply, answer) = oneshot::channel();
        let whole = Reply::Whole {
            data: Gathered::default(),
            reply,
        };
        (whole, answer)
    }
}

pub(super) struct Shared {
    pub(super) reactor: Mutex<ClientReactor>,
    pub(super) pending: Mutex<HashMap<RequestId, Reply>>,
    pub(super) outgoing: Mutex<Option<mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>>>,
    pub(super) budget: Arc<Semaphore>,
    pub(super) broken: Mutex<Option<String>>,
    pub(super) target: String,
    pub(super) hooks: Hooks,
    pub(super) state: Arc<StateCell>,
}

/// A piece to hand to a streaming caller, outside the locks.
type Delivery = (mpsc::Sender<Piece>, Piece);

impl Shared {
    pub(super) fn lost(&self, why: &str) -> Error {
        Error::Transport(TransportError::Lost {
            url: self.target.clone(),
            source: (why.to_string()).into(),
        })
    }

    /// Fails every pending call with `why`; the connection is over.
    pub(super) fn fail_all(&self, why: &str) {
        if let Ok(mut broken) = self.broken.lock() {
            broken.get_or_insert_with(|| why.to_string());
        }
        let drained: Vec<Reply> = self
            .pending
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for p in drained {
            match p {
                Reply::Whole { reply, .. } => {
                    let _ = reply.send(Err(self.lost(why)));
                }
                Reply::Stream(tx) => {
                    let _ = tx.try_send(Piece::Failed(self.lost(why)));
                }
            }
        }
    }

    /// Applies one event; returns what must be handed to a streaming
    /// caller (awaited by the reader, outside the locks).
    fn dispatch(&self, event: ClientEvent) -> Option<Delivery> {
        let Ok(mut pending) = self.pending.lock() else {
            return None;
        };
        match event {
            ClientEvent::Data { request_id, data } => match pending.get_mut(&request_id)? {
                Reply::Whole { data: d, .. } => {
                    d.push(data);
                    None
                }
                Reply::Stream(tx) => Some((tx.clone(), Piece::Data(data))),
            },
            ClientEvent::End { request_id } => match pending.remove(&request_id)? {
                Reply::Whole { mut data, reply } => {
                    let _ = reply.send(Ok(data.take()));
                    None
                }
                Reply::Stream(tx) => Some((tx, Piece::End)),
            },
            ClientEvent::Failed {
                request_id,
                kind,
                error,
            } => match pending.remove(&request_id)? {
                Reply::Whole { reply, .. } => {
                    let _ = reply.send(Err(Error::from_failure(kind, error)));
                    None
                }
                Reply::Stream(tx) => Some((tx, Piece::Failed(Error::from_failure(kind, error)))),
            },
            ClientEvent::Unanswered { request_id } => {
                let err = self.lost("the server closed the connection before answering");
                match pending.remove(&request_id)? {
                    Reply::Whole { reply, .. } => {
                        let _ = reply.send(Err(err));
                        None
                    }
                    Reply::Stream(tx) => Some((tx, Piece::Failed(err))),
                }
            }
            ClientEvent::ConnectionError { error, .. } => {
                tracing::warn!(code = %error.code, message = %error.message, "server reported a connection error");
                None
            }
            ClientEvent::TextOutput { atoms, .. } => {
                let text: String = atoms.iter().map(TextAtom::render).collect();
                match &self.hooks.on_text {
                    Some(hook) => hook(&text),
                    None => tracing::info!(target: "framegate::server", "{text}"),
                }
                None
            }
            ClientEvent::Progress {
                request_id,
                progress,
            } => {
                if let Some(hook) = &self.hooks.on_progress {
                    hook(&progress);
                }
                match (
                    pending.get(&request_id),
                    Validator::from_progress(&progress),
                ) {
                    (Some(Reply::Stream(tx)), Some(v)) => Some((tx.clone(), Piece::Validator(v))),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

pub(super) async fn write_loop(
    mut writer: BoxWrite,
    mut rx: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    while let Some((bytes, permit)) = rx.recv().await {
        let result = writer.write_all(&bytes).await;
        drop(permit);
        if let Err(e) = result {
            shared.fail_all(&format!("writing failed: {e}"));
            shared.state.lose();
            return Err(shared.lost(&e.to_string()));
        }
        if rx.is_empty() {
            let _ = writer.flush().await;
        }
    }
    // Disconnecting: our side is done; the server answers what it has, then closes.
    let _ = writer.shutdown().await;
    Ok(())
}

pub(super) async fn read_loop(
    reader: BufReader<BoxRead>,
    shared: Arc<Shared>,
    max_frame: usize,
    read_timeout: Duration,
) -> Result<(), Error> {
    let mut frames = FramedRead::new(reader, FrameDecoder::new(max_frame));
    // Silence counts only while calls wait for answers: from the last
    // frame, or from when calls began to wait if that was later.
    let slice = read_timeout.min(Duration::from_secs(1));
    let mut quiet_since = std::time::Instant::now();
    let mut was_waiting = false;
    let result = loop {
        let waiting = shared.pending.lock().is_ok_and(|p| !p.is_empty());
        if waiting && !was_waiting {
            quiet_since = std::time::Instant::now();
        }
        was_waiting = waiting;
        let next = match tokio::time::timeout(slice, frames.next()).await {
            Ok(next) => {
                quiet_since = std::time::Instant::now();
                next
            }
            Err(_) if waiting && quiet_since.elapsed() >= read_timeout => {
                break Err(format!(
                    "no data from the server for {read_timeout:?} (read timeout)"
                ));
            }
            Err(_) => continue,
        };
        let frame = match next {
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
        deliver(&shared, events).await;
    };
    let events: Vec<ClientEvent> = match shared.reactor.lock() {
        Ok(mut reactor) => {
            reactor.handle_input_ended();
            std::iter::from_fn(|| reactor.poll_event()).collect()
        }
        Err(_) => Vec::new(),
    };
    deliver(&shared, events).await;
    let why = match &result {
        Ok(()) => "the server closed the connection".to_string(),
        Err(why) => why.clone(),
    };
    shared.fail_all(&why);
    // A connection the server ended is over: the session is idle again
    // (unless it is being disconnected, which ends there anyway).
    shared.state.lose();
    result.map_err(|why| shared.lost(&why))
}

/// Dispatches events, handing streamed pieces to their callers (waiting
/// for a slow one: the connection's answers wait with it). A caller that
/// went away gets nothing more.
async fn deliver(shared: &Shared, events: Vec<ClientEvent>) {
    for event in events {
        if let Some((tx, piece)) = shared.dispatch(event) {
            let _ = tx.send(piece).await;
        }
    }
}

impl StateCell {
    /// The connection ended while running: back to idle.
    pub(super) fn lose(&self) {
        let lost = self.state.send_if_modified(|s| {
            let running = *s == RunState::Running;
            if running {
                *s = RunState::Idle;
            }
            running
        });
        if lost {
            let _ = self.transitions.send(RunState::Idle);
        }
    }
}
