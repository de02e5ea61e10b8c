//! The HTTP message loops: the request body in (frames fed to the driver
//! as they arrive, commands running meanwhile), then — only once the whole
//! body was read (deferred output) — the answers out as the response body.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use framegate_wire::FrameDecoder;
use framegate_wire::codec::CodecError;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::io::StreamReader;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::driver::Driver;
use crate::gateway::Gateway;
use crate::serve::ConnectionCut;

/// Response-body chunks buffered between the answer loop and hyper.
pub const BODY_CHANNEL_CHUNKS: usize = 4;

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

/// The deadline for a body's next bytes: `per_read` after the last ones,
/// and no later than the average rate `min_rate` (bytes/s, 0: none) allows,
/// counted from the start with `per_read` of grace — a body trickled a byte
/// at a time is cut, however often its bytes come.
struct Pace {
    per_read: Duration,
    min_rate: u64,
    started: tokio::time::Instant,
    last: tokio::time::Instant,
    received: u64,
}

impl Pace {
    fn new(per_read: Duration, min_rate: u64) -> Pace {
        let now = tokio::time::Instant::now();
        Pace {
            per_read,
            min_rate,
            started: now,
            last: now,
            received: 0,
        }
    }

    fn received(&mut self, n: usize) {
        self.received += n as u64;
        self.last = tokio::time::Instant::now();
    }

    fn deadline(&self) -> tokio::time::Instant {
        let next_read = self.last + self.per_read;
        if self.min_rate == 0 {
            return next_read;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        next_read.min(self.started + self.per_read + earned)
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
        if let Err(err) = tokio::io::copy(&mut take, &mut sink).await {
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
/// stops reading for `send_timeout` has its connection cut (`cut`).
pub(super) async fn write_answers(
    mut driver: Driver,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    keepalive: Duration,
    send_timeout: Duration,
    finished: Arc<AtomicBool>,
    cut: Option<ConnectionCut>,
) {
    let mut out = BytesMut::new();
    let mut last_output = Instant::now();
    let mut chunks = Vec::new();
    loop {
        driver.feed_output().await;
        driver.transmit(&mut out, &mut chunks);
        if !chunks.is_empty() {
            for chunk in chunks.drain(..) {
                match tokio::time::timeout(send_timeout, tx.send(Ok(chunk))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        tracing::info!("client went away; cancelling the message's commands");
                        return;
                    }
                    Err(_) => {
                        // hyper waits on a full socket and would not look at
                        // the body again: the connection itself is cut (its
                        // other messages too, on HTTP/2), and the body ends
                        // with an error, so the client sees a cut answer,
                        // never a silently short one.
                        tracing::info!(
                            send_timeout_secs = send_timeout.as_secs_f64(),
                            "client stopped reading; closing its connection"
                        );
                        if let Some(cut) = &cut {
                            cut.cut();
                        }
                        return;
                    }
                }
            }
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

/// The body stream of a response fed by [`write_answers`]: it ends cleanly
/// only if `finished` was set, else with an error (hyper then resets the
/// stream or closes the connection instead of ending the body).
pub(super) fn body_from(
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    finished: Arc<AtomicBool>,
) -> axum::body::Body {
    let stream = futures_util::stream::unfold(Some(rx), move |rx| {
        let finished = finished.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(item) => Some((item, Some(rx))),
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
