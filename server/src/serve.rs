//! Running a gateway on a TCP listener, with graceful shutdown.
//!
//! A stop ([`ServeHandle::shutdown`]) closes the listener at once and lets
//! the connections open at that moment finish their messages, for at most
//! the gateway's `shutdown_grace`. What is still open then is cut, and
//! [`ServeHandle::wait`] returns an error carrying [`GraceExpired`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::http::connection::{ConnectionService, CountingListener};
use crate::stop::GraceExpired;

/// How long cut connections get to notice the cut and close, once the
/// grace period is over.
const CUT_WAIT: Duration = Duration::from_secs(1);

/// hyper's HTTP/1 buffer limit per connection (its default is ~400 KiB).
pub const HTTP1_MAX_BUF: usize = 128 * 1024;

/// Connections the kernel may queue before they are accepted (capped by
/// `net.core.somaxconn`): past `max_connections`, clients wait here rather
/// than have their SYNs dropped.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` with address reuse and a backlog of
/// [`LISTEN_BACKLOG`] (tokio's `bind` uses 1,024).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A gateway serving in the background.
#[derive(Debug)]
pub struct ServeHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The metrics listener's address, if any.
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

impl ServeHandle {
    /// Starts a graceful stop: no new connections; in-flight messages get
    /// the grace period to finish.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits until the server has stopped: `Ok` when every connection
    /// finished within the grace period; an error of kind
    /// [`io::ErrorKind::TimedOut`] carrying [`GraceExpired`] when the grace
    /// period ran out and the connections still open were cut.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }

    /// A token that stops the server when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Serves `gateway` on `listener` (and metrics on `metrics`, if given).
/// Connections get `TCP_NODELAY`: answers go out without Nagle delays.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
) -> io::Result<ServeHandle> {
    let local_addr = listener.local_addr()?;
    let metrics_addr = match &metrics {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let stop = CancellationToken::new();
    let grace = gateway.config().shutdown_grace;
    if let Some(metrics) = metrics {
        let gw = gateway.clone();
        let app = Router::new().route("/metrics", get(move || async move { gw.metrics.render() }));
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(metrics, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    let app = crate::http::router(&gateway);
    let header_timeout = gateway.config().header_read_timeout;
    let send_timeout = gateway.config().send_timeout;
    let listener = CountingListener::new(
        listener,
        gateway.config().connection_idle_timeout,
        header_timeout,
    );
    let slots = gateway.connection_slots.clone();
    let open = listener.open.clone();
    let cut = listener.cut.clone();
    let task_stop = stop.clone();
    let task = tokio::spawn(async move {
        // hyper with a timer (axum's `serve` runs it without one, so no
        // header timeout could apply): HTTP/1 connections whose headers do
        // not arrive in time — slowloris, idle keep-alive — are closed.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            // What hyper buffers per connection (reads and queued writes;
            // default ~400 KiB): a client that stops reading costs less.
            .max_buf_size(HTTP1_MAX_BUF);
        // Each HTTP/2 stream is a message with its own budgets: bound them
        // per connection (hyper's default is 200).
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(
                u32::try_from(gateway.config().http2_max_streams).unwrap_or(u32::MAX),
            )
            // What a connection may buffer of bodies not yet read (a
            // message waiting for its slot does not read; hyper's default
            // is 1 MiB): part of CONNECTION_COST.
            .initial_connection_window_size(crate::H2_CONNECTION_WINDOW)
            .initial_stream_window_size(crate::H2_STREAM_WINDOW);
        let graceful = GracefulShutdown::new();
        let mut listener = listener;
        loop {
            // At most `max_connections` at once: past it, new connections
            // wait in the listen backlog.
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot,
                () = task_stop.cancelled() => break,
            };
            let Ok(slot) = slot else { break };
            tokio::select! {
                (io, _peer) = axum::serve::Listener::accept(&mut listener) => {
                    // Its requests know it: a message can cut it (a client
                    // that stopped reading: the body cannot end while hyper
                    // waits on a full socket), and it is idle only when no
                    // request is in flight.
                    let service = TowerToHyperService::new(ConnectionService::new(
                        app.clone(),
                        io.handle(),
                        send_timeout,
                    ));
                    let connection = builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _slot = slot;
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                () = task_stop.cancelled() => break,
            }
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => Ok(()),
            () = tokio::time::sleep(grace) => {
                let connections = open.load(Ordering::SeqCst);
                let messages = gateway.metrics.in_flight.get();
                tracing::warn!(
                    grace_secs = grace.as_secs_f64(),
                    connections,
                    messages,
                    "grace period over; cutting {connections} connection(s) with {messages} message(s) in flight"
                );
                cut.cancel();
                // The connections notice the cut at their next read or write.
                tokio::time::sleep(CUT_WAIT.min(grace)).await;
                if connections == 0 {
                    return Ok(());
                }
                Err(GraceExpired { grace, connections }.into_io_error())
            }
        }
    });
    Ok(ServeHandle {
        local_addr,
        metrics_addr,
        stop,
        task,
    })
}
