//! Running a gateway on a TCP listener, with graceful shutdown.
//!
//! A stop ([`ServeHandle::shutdown`]) closes the listener at once and lets
//! the connections open at that moment finish their messages, for at most
//! the gateway's `shutdown_grace`. What is still open then is cut, and
//! [`ServeHandle::wait`] returns an error carrying [`GraceExpired`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::ServiceExt;

use crate::gateway::Gateway;
use crate::stop::GraceExpired;

/// How long cut connections get to notice the cut and close, once the
/// grace period is over.
const CUT_WAIT: Duration = Duration::from_secs(1);

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
    let listener = CountingListener {
        inner: listener,
        open: Arc::new(AtomicUsize::new(0)),
        cut: CancellationToken::new(),
        idle: gateway.config().connection_idle_timeout,
    };
    let slots = gateway.connection_slots.clone();
    let open = listener.open.clone();
    let cut = listener.cut.clone();
    let task_stop = stop.clone();
    let header_timeout = gateway.config().header_read_timeout;
    let task = tokio::spawn(async move {
        // hyper with a timer (axum's `serve` runs it without one, so no
        // header timeout could apply): HTTP/1 connections whose headers do
        // not arrive in time — slowloris, idle keep-alive — are closed.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        // Each HTTP/2 stream is a message with its own budgets: bound them
        // per connection (hyper's default is 200).
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(
                u32::try_from(gateway.config().http2_max_streams).unwrap_or(u32::MAX),
            );
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
                    // Its messages can close it (a client that stopped
                    // reading: the body cannot end while hyper waits on a
                    // full socket).
                    let cut = ConnectionCut(io.cut_token.clone());
                    let service = TowerToHyperService::new(app.clone().map_request(
                        move |mut request: http::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(cut.clone());
                            request
                        },
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

/// Closes the connection a request came on (in the request's extensions).
#[derive(Clone, Debug)]
pub(crate) struct ConnectionCut(CancellationToken);

impl ConnectionCut {
    /// Every read and write of the connection fails from now on.
    pub(crate) fn cut(&self) {
        self.0.cancel();
    }
}

/// A listener that counts its open connections and can cut them all.
struct CountingListener {
    inner: TcpListener,
    open: Arc<AtomicUsize>,
    cut: CancellationToken,
    /// Connections idle this long are closed.
    idle: Duration,
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedConnection, SocketAddr) {
        let (tcp, peer) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = tcp.set_nodelay(true);
        self.open.fetch_add(1, Ordering::SeqCst);
        // Cut with all the others at the end of a stop's grace, or alone.
        let cut = self.cut.child_token();
        let connection = CountedConnection {
            tcp,
            open: self.open.clone(),
            cut_token: cut.clone(),
            cut: Box::pin(cut.cancelled_owned()),
            idle_for: self.idle,
            last_io: tokio::time::Instant::now(),
            idle: Box::pin(tokio::time::sleep(self.idle)),
        };
        (connection, peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One connection of a [`CountingListener`]: counted while it lives; once
/// cut, every read and write fails (and a pending one is woken to fail).
/// With no byte read or written for `idle_for`, a pending read or write
/// fails too (HTTP/2 keeps idle connections forever otherwise; for HTTP/1
/// the header-read timeout usually comes first).
struct CountedConnection {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
    cut_token: CancellationToken,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    idle_for: Duration,
    last_io: tokio::time::Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl CountedConnection {
    /// Runs one I/O operation unless the connection was cut; while the
    /// operation is pending, a cut wakes the task.
    fn io<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let cut_error = || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "shutdown grace period over",
            )
        };
        if self.cut_token.is_cancelled() {
            return Poll::Ready(Err(cut_error()));
        }
        match op(Pin::new(&mut self.tcp), cx) {
            Poll::Pending if self.cut.as_mut().poll(cx).is_ready() => Poll::Ready(Err(cut_error())),
            Poll::Pending if self.idle_expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle",
            ))),
            other => other,
        }
    }

    /// Bytes moved: the connection is not idle.
    fn moved(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last_io = tokio::time::Instant::now();
        }
    }

    /// Whether the connection has been idle for `idle_for`; else makes sure
    /// the task is woken when it will have been. The timer is re-armed
    /// lazily (only when it fires early), not at every read and write.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.last_io + self.idle_for;
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            if tokio::time::Instant::now() >= deadline {
                return true;
            }
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = this.io(cx, |tcp, cx| tcp.poll_read(cx, buf));
        if let Poll::Ready(Ok(())) = result {
            this.moved(buf.filled().len() - before);
        }
        result
    }
}

impl AsyncWrite for CountedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = this.io(cx, |tcp, cx| tcp.poll_write(cx, buf));
        if let Poll::Ready(Ok(n)) = result {
            this.moved(n);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = this.io(cx, |tcp, cx| tcp.poll_write_vectored(cx, bufs));
        if let Poll::Ready(Ok(n)) = result {
            this.moved(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io(cx, |tcp, cx| tcp.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io(cx, |tcp, cx| tcp.poll_shutdown(cx))
    }
}
