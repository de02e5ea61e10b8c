//! The HTTP message loops: the request body in (frames fed to the driver
//! as they arrive, commands running meanwhile), then — only once the whole
//! body was read (deferred output) — the answers out as the response body.

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_wire::FrameDecoder;
use framegate_wire::codec::CodecError;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::io::StreamReader;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::connection::ConnectionHandle;
use crate::driver::{BODY_CHUNK, Driver};
use crate::gateway::Gateway;
use crate::pace::Pace;

use crate::outflow::{Charge, Outflow, OutputBudget};

/// A response-body chunk and its charge on the output budget.
pub(super) type Item = (Bytes, Charge);

/// Response-body chunks buffered between the answer loop and hyper.
pub const BODY_CHANNEL_CHUNKS: usize = 1;

/// How a message ended when it cannot be answered with frames.
#[derive(Debug)]
pub(super) enum Abandoned {
    /// No byte came for the body-read timeout.
    TimedOut,
    /// The body broke (client gone, proxy error).
    BodyError(io::Error),
}

fn abandoned(err: io::Error) -> Abandoned {
    if err.kind() == io::ErrorKind::TimedOut {
        Abandoned::TimedOut
    } else {
        Abandoned::BodyError(err)
    }
}

/// Reads the whole body into the driver, running commands meanwhile.
pub(super) async fn read_body(
    driver: &mut Driver,
    gw: &Gateway,
    body: axum::body::Body,
) -> Result<(), Abandoned> {
    let pace = Pace::new(gw.config.body_read_timeout, gw.config.min_body_rate);
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), pace),
        move |(mut s, mut pace)| async move {
            match tokio::time::timeout_at(pace.deadline(), s.next()).await {
                Ok(Some(Ok(bytes))) => {
                    pace.received(bytes.len());
                    Some((Ok(bytes), (s, pace)))
                }
                Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), (s, pace))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "body read timed out (too slow)",
                    )),
                    (s, pace),
                )),
            }
        },
    )
    .boxed();
    let decoder = FrameDecoder::new(gw.config.limits.max_frame_size);
    let mut frames = FramedRead::new(StreamReader::new(stream), decoder);
    loop {
        let next = tokio::select! {
            biased;
            () = driver.progress(), if driver.is_busy() => continue,
            next = frames.next() => next,
        };
        match next {
            None => break,
            Some(Ok(frame)) => {
                if !driver.handle_frame(frame).await {
                    break;
                }
            }
            Some(Err(CodecError::Frame(err))) => {
                driver.handle_decode_error(err).await;
                break;
            }
            Some(Err(CodecError::Io(err))) => return Err(abandoned(err)),
            Some(Err(err)) => {
                return Err(Abandoned::BodyError(io::Error::other(err.to_string())));
            }
        }
    }
    if !driver.wants_input() || !frames.decoder().is_between_frames() {
        // Deferred output: never answer while the client still sends.
        // Drain what is left (without decoding), up to a bound.
        let mut rest = frames.into_inner();
        let limit = gw.config.max_drain_after_error;
        let mut sink = tokio::io::sink();
        let mut take = tokio::io::AsyncReadExt::take(&mut rest, limit);
        let drained = driver.meanwhile(tokio::io::copy(&mut take, &mut sink));
        if let Err(err) = drained.await {
            return Err(abandoned(err));
        }
    }
    driver.handle_input_ended().await;
    Ok(())
}

/// Streams every answer into `tx`; returns when all went out or the
/// client is gone (dropping the driver then aborts what still runs). Sets
/// `finished` only when every answer went out: a body that ends otherwise
/// ends with an error ([`body_from`]), never as if complete. A client that
/// stops reading has its connection cut by the connection's watchdog
/// (`conn`; see [`room`]).
pub(super) async fn write_answers(
    mut driver: Driver,
    tx: mpsc::Sender<Item>,
    budget: OutputBudget,
    keepalive: Duration,
    send_timeout: Duration,
    finished: Arc<AtomicBool>,
    conn: Option<ConnectionHandle>,
) {
    let mut last_output = Instant::now();
    let flow = Arc::new(Outflow::default());
    loop {
        // Room for the next chunk first, then its bytes: a client that
        // does not read holds no piece read for it here.
        // Commands that finish meanwhile are taken in (their answer
        // slots go back); none starts while the client takes nothing.
        let waiting = room(&tx, send_timeout, conn.as_ref());
        let Some(room) = driver.while_output_waits(waiting).await else {
            return;
        };
        // Answers of small commands wait briefly for others (before the
        // charge: an answer that turns up meanwhile is charged before its
        // bytes are read).
        driver.coalesce_output().await;
        // And its charge, before its bytes are read or made (a chunk is
        // charged as [`BODY_CHUNK`]: it is gathered up to at least that,
        // and only a single larger frame makes it larger).
        let charge = if driver.has_output_to_feed() {
            Some(driver.meanwhile(flow.charge(&budget, BODY_CHUNK)).await)
        } else {
            None
        };
        let limit = charge.as_ref().map_or(BODY_CHUNK, Charge::limit);
        driver.feed_output(limit).await;
        if let Some(chunk) = driver.transmit(limit) {
            let charge = match charge {
                Some(charge) => charge,
                None => driver.meanwhile(flow.charge(&budget, chunk.len())).await,
            };
            room.send((chunk, charge));
            last_output = Instant::now();
        }
        if driver.is_done() {
            finished.store(true, Ordering::SeqCst);
            break;
        }
        if driver.has_output_to_feed() {
            continue;
        }
        if !driver.is_busy() {
            tracing::error!("message stalled: requests active but nothing running");
            break;
        }
        tokio::select! {
            () = driver.progress() => {}
            () = tokio::time::sleep_until((last_output + keepalive).into()) => {
                driver.queue_keepalive();
                last_output = Instant::now();
            }
        }
    }
    driver.finish_metrics();
}

/// Waits for room for one chunk in the response body; `None` if the body
/// is gone. On a connection of ours (`conn`), a client that stops reading
/// is the watchdog's to cut ([`super::connection`]): its connection closes,
/// hyper drops the body, and this returns `None`. Without one (a router
/// served some other way), a client that takes no chunk for
/// `send_timeout` ends the message here.
async fn room<'a>(
    tx: &'a mpsc::Sender<Item>,
    send_timeout: Duration,
    conn: Option<&ConnectionHandle>,
) -> Option<mpsc::Permit<'a, Item>> {
    let reserved = if conn.is_some() {
        Ok(tx.reserve().await)
    } else {
        tokio::time::timeout(send_timeout, tx.reserve()).await
    };
    match reserved {
        Ok(Ok(permit)) => Some(permit),
        Ok(Err(_)) => {
            tracing::info!("client went away; cancelling the message's commands");
            None
        }
        Err(_) => {
            tracing::info!(
                send_timeout_secs = send_timeout.as_secs_f64(),
                "client stopped reading; ending its message"
            );
            None
        }
    }
}

/// The body stream of a response fed by [`write_answers`]: it ends cleanly
/// only if `finished` was set, else with an error (hyper then resets the
/// stream or closes the connection instead of ending the body).
pub(super) fn body_from(rx: mpsc::Receiver<Item>, finished: Arc<AtomicBool>) -> axum::body::Body {
    // The last chunk's charge is kept until hyper asks for the next one.
    let stream = futures_util::stream::unfold(Some((rx, None)), move |state| {
        let finished = finished.clone();
        async move {
            let (mut rx, last): (_, Option<Charge>) = state?;
            drop(last);
            match rx.recv().await {
                Some((chunk, charge)) => Some((Ok(chunk), Some((rx, Some(charge))))),
                None if finished.load(Ordering::SeqCst) => None,
                None => Some((
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "message abandoned before all answers were sent",
                    )),
                    None,
                )),
            }
        }
    });
    axum::body::Body::from_stream(stream.map_err(|e: io::Error| e))
}
