//! The byte-stream binding (§8): TCP connections and one stdio session (as
//! started by sshd), full duplex, the driver's reactor in immediate mode.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use framegate_wire::codec::CodecError;
use framegate_wire::preamble::{MAX_PREAMBLE_LEN, OK_LINE, parse_client_line};
use framegate_wire::{FrameDecoder, OutputMode};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::{BODY_CHUNK, Driver, MessageSpec, OUTPUT_WATERMARK};
use crate::gateway::Gateway;
use crate::pace::Pace;

pub use framegate_wire::preamble::DEFAULT_TCP_PORT;

/// How writes are authorized on a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePolicy {
    /// stdio under sshd: the SSH login is trusted; writes as `--allow-writes` says.
    TrustLogin,
    /// TCP: writes need `--allow-writes`, and if a write token is set, a
    /// `hello` carrying it (§9.1).
    TokenInHello,
}

/// Runs one session over `reader`/`writer`, preamble first.
pub async fn serve_connection<R, W>(
    gateway: Arc<Gateway>,
    reader: R,
    mut writer: W,
    policy: WritePolicy,
    stop: CancellationToken,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = gateway.config();
    let idle = config.idle_timeout;
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    let mut limited = (&mut reader).take(MAX_PREAMBLE_LEN);
    let read = tokio::select! {
        read = tokio::time::timeout(idle, limited.read_line(&mut line)) => read,
        () = stop.cancelled() => return Ok(()),
    };
    let encoding = match read {
        Err(_) => {
            tracing::info!("closing connection: no preamble within the idle timeout");
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => match parse_client_line(&line) {
            Ok(encoding) => encoding,
            Err(err) => {
                tracing::info!(code = err.code(), "refusing connection: bad preamble");
                writer.write_all(err.answer_line().as_bytes()).await?;
                writer.shutdown().await?;
                return Ok(());
            }
        },
    };
    writer.write_all(OK_LINE.as_bytes()).await?;
    writer.flush().await?;
    let writable = match policy {
        WritePolicy::TrustLogin => config.allow_writes,
        WritePolicy::TokenInHello => config.allow_writes && config.write_token.is_none(),
    };
    let spec = MessageSpec {
        storage: gateway.storage.clone(),
        writable: Arc::new(AtomicBool::new(writable)),
        token_unlocks: policy == WritePolicy::TokenInHello && config.allow_writes,
        encoding,
        endpoint: "stream",
        base_display: "/".into(),
    };
    gateway
        .metrics
        .messages
        .with_label_values(&["stream"])
        .inc();
    let driver = Driver::new(gateway.clone(), spec, OutputMode::Immediate);
    let max_frame = config.limits.max_frame_size;
    let times = Times {
        idle,
        stall: config.send_timeout.min(idle),
        min_rate: config.min_body_rate,
    };
    // Its commands' file jobs are handed to the pool a poll at a time.
    crate::pool::grouped(run_session(driver, reader, writer, times, max_frame, stop)).await
}

/// A session's timeouts (see [`run_session`]).
#[derive(Debug, Clone, Copy)]
struct Times {
    idle: Duration,
    /// A write making no progress this long ends the session.
    stall: Duration,
    min_rate: u64,
}

/// Runs a full-duplex session after the preamble: frames are read,
/// commands run and answers written all at once. Ends when the peer closed
/// its side and every answer went out; on a protocol error once complete
/// requests are answered; after `idle` without input while nothing runs;
/// when a request is sent slower than `min_rate` bytes/s on average (from
/// its first frame, with `idle` of grace: a request dripped a frame at a
/// time cannot hold the connection); when a write makes no progress for
/// `idle` (a peer that stops reading; one reading slowly is waited for);
/// or (finishing what is in flight, reading nothing new) when `stop` fires.
/// Our side is shut down (half-close) at the end.
async fn run_session<R, W>(
    mut driver: Driver,
    reader: R,
    writer: W,
    times: Times,
    max_frame: usize,
    stop: CancellationToken,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = session_loop(&mut driver, reader, writer, times, max_frame, stop).await;
    // However it ended: the session's access-log event and metrics.
    driver.finish_metrics();
    result
}

async fn session_loop<R, W>(
    driver: &mut Driver,
    reader: R,
    mut writer: W,
    times: Times,
    max_frame: usize,
    stop: CancellationToken,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Times {
        idle,
        stall,
        min_rate,
    } = times;
    let mut frames = FramedRead::new(reader, FrameDecoder::new(max_frame));
    let mut reading = true;
    let mut stopping = false;
    let mut last_input = Instant::now();
    // The pace of the requests being received, while any is.
    let mut pace: Option<Pace> = None;
    loop {
        driver.feed_output(OUTPUT_WATERMARK).await;
        if let Some(chunk) = driver.transmit(BODY_CHUNK) {
            // A peer that stops reading: a write making no progress for
            // the send timeout (as over HTTP; at most the idle timeout)
            // ends the session, and gives back the answer slots it held.
            // Commands that finish meanwhile are taken in (their answer
            // slots go back); none starts while the write waits.
            let written = driver
                .while_output_waits(async {
                    let whole = write_with_progress(&mut writer, &chunk, stall).await?;
                    let flushed = tokio::time::timeout(stall, writer.flush()).await.is_ok();
                    Ok::<_, io::Error>(whole && flushed)
                })
                .await?;
            if !written {
                tracing::info!(
                    send_timeout_secs = stall.as_secs_f64(),
                    "closing connection: the peer stopped reading"
                );
                return Ok(());
            }
        }
        if !reading && driver.is_done() {
            break;
        }
        let feeding = driver.has_output_to_feed();
        // Silence counts while nothing is active and while a request is
        // half sent; not while complete requests run (the peer waits).
        // Past the active-request cap the input is not read (see
        // `has_room_for_requests`): neither silence nor the pace count then.
        let taking = reading && driver.has_room_for_requests();
        if !taking {
            pace = None; // the peer is not slow: we are not reading
        }
        let idle_armed =
            taking && (driver.active_requests() == 0 || driver.receiving_requests() > 0);
        tokio::select! {
            next = frames.next(), if taking => match next {
                None => {
                    driver.handle_input_ended().await;
                    reading = false;
                }
                Some(Ok(frame)) => {
                    last_input = Instant::now();
                    let len = frame.wire_len();
                    if !driver.handle_frame(frame).await {
                        reading = false;
                    }
                    if driver.receiving_requests() == 0 {
                        pace = None;
                    } else {
                        pace.get_or_insert_with(|| Pace::new(idle, min_rate)).received(len);
                    }
                    if stopping && reading && driver.receiving_requests() == 0 {
                        driver.handle_input_ended().await;
                        reading = false;
                    }
                }
                Some(Err(CodecError::Frame(err))) => {
                    driver.handle_decode_error(err).await;
                    reading = false;
                }
                Some(Err(err)) => {
                    tracing::info!(error = %err, "connection broke; cancelling its commands");
                    return Ok(());
                }
            },
            () = driver.progress(), if driver.is_busy() => {}
            () = pace_deadline(pace.as_ref()), if taking && pace.is_some() => {
                tracing::info!(min_rate, "closing connection: a request is sent too slowly");
                break;
            }
            () = tokio::time::sleep_until((last_input + idle).into()), if idle_armed => {
                tracing::info!(idle_secs = idle.as_secs_f64(), "closing idle connection");
                break;
            }
            () = stop.cancelled(), if reading && !stopping => {
                tracing::info!("stopping: finishing requests in flight on this connection");
                stopping = true;
                // Requests still arriving are read to their end (their
                // data is in flight); new ones are refused at once. Every
                // frame still goes through the reactor (stream state and
                // the stream's decoder are shared by all requests).
                driver.refuse_new_requests();
                if driver.receiving_requests() == 0 {
                    driver.handle_input_ended().await;
                    reading = false;
                }
            }
            () = std::future::ready(()), if feeding => {}
        }
    }
    writer.shutdown().await
}

/// Writes `chunk`; false if a write took no byte for `idle`.
async fn write_with_progress<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut chunk: &[u8],
    idle: Duration,
) -> io::Result<bool> {
    while !chunk.is_empty() {
        match tokio::time::timeout(idle, writer.write(chunk)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => chunk = chunk.get(n..).unwrap_or_default(),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Waits until `pace`'s deadline (forever without one).
async fn pace_deadline(pace: Option<&Pace>) {
    match pace {
        Some(pace) => tokio::time::sleep_until(pace.deadline()).await,
        None => std::future::pending().await,
    }
}

/// Accepts TCP connections until `stop`, then lets each finish what is in
/// flight (bounded by the shutdown grace).
///
/// Returns `Ok` when every connection finished in time; when the grace
/// period runs out, the connections still busy are cut and the error (of
/// kind [`io::ErrorKind::TimedOut`]) carries [`crate::stop::GraceExpired`].
pub async fn serve_tcp(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    stop: CancellationToken,
) -> io::Result<()> {
    /// How long a finished connection keeps reading (and dropping) what the
    /// client still sends before it closes: closing with unread input would
    /// reset the connection and could destroy the answer's tail in flight.
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    /// How long cut connections get to wind down.
    const CUT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
    /// Counts one session while it runs (not while it lingers).
    struct Busy(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Busy {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let tracker = TaskTracker::new();
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cut = CancellationToken::new();
    let slots = gateway.connection_slots.clone();
    loop {
        // At most `max_connections` (shared with HTTP) at once: past it,
        // new connections wait in the listen backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = stop.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors (EMFILE) and the like: do not
                        // spin; the budgets free some soon.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                crate::limits::tune_socket(&stream);
                let gw = gateway.clone();
                let stop = stop.clone();
                let cut = cut.clone();
                busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let busy = Busy(busy.clone());
                tracker.spawn(async move {
                    let _slot = slot;
                    let (mut r, w) = stream.into_split();
                    let session = tracing::Instrument::instrument(
                        serve_connection(gw, &mut r, w, WritePolicy::TokenInHello, stop),
                        tracing::info_span!("tcp", %peer),
                    );
                    tokio::select! {
                        result = session => {
                            if let Err(e) = result {
                                tracing::info!(%peer, error = %e, "connection ended with an error");
                            }
                        }
                        _ = cut.cancelled() => return,
                    }
                    drop(busy);
                    // Our side is shut down; wait (briefly) for the client's.
                    let mut sink = [0u8; 8192];
                    let drain = async {
                        while let Ok(1..) = r.read(&mut sink).await {}
                    };
                    tokio::select! {
                        _ = tokio::time::timeout(LINGER, drain) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(listener);
    tracker.close();
    let grace = gateway.config().shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_ok() {
        return Ok(());
    }
    let connections = busy.load(std::sync::atomic::Ordering::SeqCst);
    cut.cancel();
    let _ = tokio::time::timeout(CUT_WAIT, tracker.wait()).await;
    if connections == 0 {
        return Ok(());
    }
    tracing::warn!(
        grace_secs = grace.as_secs_f64(),
        connections,
        "grace period over; cut {connections} byte-stream connection(s) with requests in flight"
    );
    Err(crate::stop::GraceExpired { grace, connections }.into_io_error())
}

/// One session on stdin/stdout (started by sshd). Nothing else may be
/// written to stdout: logs go to stderr.
///
/// `stop` ends the session like the end of input: at once before the
/// preamble or when idle, else after the requests in flight, for at most
/// the shutdown grace (then the session is cut and the error carries
/// [`crate::stop::GraceExpired`]). The caller should end the process
/// without waiting for the runtime's blocking threads: tokio reads stdin on
/// one, and it stays blocked until the peer closes stdin.
pub async fn serve_stdio(gateway: Arc<Gateway>, stop: CancellationToken) -> io::Result<()> {
    let grace = gateway.config().shutdown_grace;
    let session = serve_connection(
        gateway,
        tokio::io::stdin(),
        tokio::io::stdout(),
        WritePolicy::TrustLogin,
        stop.clone(),
    );
    tokio::select! {
        result = session => result,
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                connections = 1,
                "grace period over; cut the stdio session with requests in flight"
            );
            Err(crate::stop::GraceExpired { grace, connections: 1 }.into_io_error())
        }
    }
}
