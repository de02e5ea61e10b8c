//! One HTTP connection: counted while it lives, cut on demand, closed when
//! idle, and known to its requests.
//!
//! *Idle* is decided by requests, not bytes: a connection with no request
//! in flight is closed `idle_for` after its last request ended — or, if it
//! never carried one, `first_request_within` after it was accepted (a
//! silent connection, or HTTP/2 PINGs without requests, hold a connection
//! slot no longer than that). While a request is in flight, the connection
//! is idle only when no byte moved for `idle_for` (the body-rate and send
//! timeouts of the message usually come first).
//!
//! *Send timeout*, for every response body (framegate answers, plain files,
//! listings): a response whose body hyper has not taken a frame of for
//! `send_timeout`, while the body had one ready (hyper was not waiting on
//! us), cuts its connection — unless, on HTTP/1, the client took any byte
//! of the connection meanwhile (a slow but steady reader). On HTTP/2 only
//! the response's own frames count: PING acknowledgements and other
//! streams' progress do not keep a stalled stream alive.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::Service;

/// What a connection's requests share with it (in each request's
/// extensions).
#[derive(Debug)]
struct State {
    cut: CancellationToken,
    born: Instant,
    /// Milliseconds after `born` when the client last took bytes.
    last_write_ms: AtomicU64,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request ended.
    idle_since_ms: AtomicU64,
    /// Whether a request ever came.
    served: AtomicBool,
}

impl State {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }
}

/// A request's handle on its connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionHandle(Arc<State>);

impl ConnectionHandle {
    /// Every read and write of the connection fails from now on (its other
    /// requests too, on HTTP/2).
    pub(crate) fn cut(&self) {
        self.0.cut.cancel();
    }

    /// Whether the client took any byte of this connection within `within`.
    pub(crate) fn wrote_within(&self, within: Duration) -> bool {
        let last = self.0.at(self.0.last_write_ms.load(Ordering::Relaxed));
        last.elapsed() < within
    }

    fn begin_request(&self) -> InFlight {
        self.0.served.store(true, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.0.clone())
    }
}

/// A request in flight, until its response body ended or was dropped.
struct InFlight(Arc<State>);

/// How one response body is being taken: shared between the body (polled
/// by hyper) and its watchdog.
#[derive(Debug)]
struct Taking {
    /// Milliseconds after the connection's birth of the last frame hyper
    /// took, or of the last poll that found nothing ready.
    last_ms: AtomicU64,
    /// hyper's last poll found the body not ready: it waits on us.
    waiting_on_us: AtomicBool,
}

/// Cuts the connection of a response that stalled (see the module). Ends
/// when the body ends or is dropped (`done`).
async fn watchdog(
    conn: ConnectionHandle,
    taking: Arc<Taking>,
    http2: bool,
    send_timeout: Duration,
    done: CancellationToken,
) {
    let state = conn.0.clone();
    let mut check = send_timeout;
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(check) => {}
        }
        let last = state.at(taking.last_ms.load(Ordering::SeqCst));
        let since = last.elapsed();
        if taking.waiting_on_us.load(Ordering::SeqCst) || since < send_timeout {
            check = send_timeout
                .saturating_sub(since)
                .max(Duration::from_millis(100));
            continue;
        }
        if !http2 && conn.wrote_within(send_timeout) {
            check = send_timeout / 4;
            continue;
        }
        tracing::info!(
            send_timeout_secs = send_timeout.as_secs_f64(),
            http2,
            "client stopped reading; closing its connection"
        );
        conn.cut();
        return;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight and tells
/// its watchdog how it is taken.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
    taking: Arc<Taking>,
    state: Arc<State>,
    /// Stops the watchdog when the body is dropped.
    _done: tokio_util::sync::DropGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let now = self.state.now_ms();
        self.taking.last_ms.store(now, Ordering::SeqCst);
        self.taking
            .waiting_on_us
            .store(polled.is_pending(), Ordering::SeqCst);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The service of one connection: `app` with the [`ConnectionHandle`] in
/// each request and each request counted until its response ended.
#[derive(Clone)]
pub(crate) struct ConnectionService {
    app: Router,
    handle: ConnectionHandle,
    send_timeout: Duration,
}

impl ConnectionService {
    pub(crate) fn new(app: Router, handle: ConnectionHandle, send_timeout: Duration) -> Self {
        ConnectionService {
            app,
            handle,
            send_timeout,
        }
    }
}

impl Service<http::Request<hyper::body::Incoming>> for ConnectionService {
    type Response = http::Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let in_flight = self.handle.begin_request();
        let http2 = request.version() == http::Version::HTTP_2;
        request.extensions_mut().insert(self.handle.clone());
        let call = self.app.call(request);
        let (handle, send_timeout) = (self.handle.clone(), self.send_timeout);
        Box::pin(async move {
            let response = call.await?;
            let state = handle.0.clone();
            let taking = Arc::new(Taking {
                last_ms: AtomicU64::new(state.now_ms()),
                waiting_on_us: AtomicBool::new(false),
            });
            let done = CancellationToken::new();
            if !response.body().is_end_stream() {
                tokio::spawn(watchdog(
                    handle,
                    taking.clone(),
                    http2,
                    send_timeout,
                    done.clone(),
                ));
            }
            Ok(response.map(|inner| {
                axum::body::Body::new(Tracked {
                    inner,
                    _in_flight: in_flight,
                    taking,
                    state,
                    _done: done.drop_guard(),
                })
            }))
        })
    }
}

/// A listener that counts its open connections and can cut them all.
pub(crate) struct CountingListener {
    inner: TcpListener,
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) cut: CancellationToken,
    /// Connections idle this long are closed.
    idle: Duration,
    /// A connection that carried no request this long is closed.
    first_request_within: Duration,
}

impl CountingListener {
    pub(crate) fn new(inner: TcpListener, idle: Duration, first_request_within: Duration) -> Self {
        CountingListener {
            inner,
            open: Arc::new(AtomicUsize::new(0)),
            cut: CancellationToken::new(),
            idle,
            first_request_within,
        }
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedConnection, SocketAddr) {
        let (tcp, peer) = axum::serve::Listener::accept(&mut self.inner).await;
        crate::limits::tune_socket(&tcp);
        self.open.fetch_add(1, Ordering::SeqCst);
        // Cut with all the others at the end of a stop's grace, or alone.
        let cut = self.cut.child_token();
        let born = Instant::now();
        let state = Arc::new(State {
            cut: cut.clone(),
            born,
            last_write_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
        });
        let first = self.first_request_within.min(self.idle);
        let connection = CountedConnection {
            tcp,
            open: self.open.clone(),
            state,
            cut: Box::pin(cut.cancelled_owned()),
            idle_for: self.idle,
            first_request_within: first,
            last_io: born,
            idle: Box::pin(tokio::time::sleep(first)),
        };
        (connection, peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One connection of a [`CountingListener`]: counted while it lives; once
/// cut, every read and write fails (and a pending one is woken to fail);
/// once idle (see the module), a pending read or write fails too.
pub(crate) struct CountedConnection {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
    state: Arc<State>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    idle_for: Duration,
    first_request_within: Duration,
    last_io: Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl CountedConnection {
    /// The handle its requests get.
    pub(crate) fn handle(&self) -> ConnectionHandle {
        ConnectionHandle(self.state.clone())
    }

    /// Runs one I/O operation unless the connection was cut; while the
    /// operation is pending, a cut or idleness wakes the task.
    fn io<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let cut_error = || io::Error::new(io::ErrorKind::ConnectionAborted, "connection cut");
        if self.state.cut.is_cancelled() {
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

    /// Bytes moved (`written`: taken by the client).
    fn moved(&mut self, bytes: usize, written: bool) {
        if bytes > 0 {
            self.last_io = Instant::now();
            if written {
                let now = self.state.now_ms();
                self.state.last_write_ms.store(now, Ordering::Relaxed);
            }
        }
    }

    /// When the connection counts as idle (see the module).
    fn deadline(&self) -> Instant {
        let state = &self.state;
        if state.in_flight.load(Ordering::SeqCst) > 0 {
            self.last_io + self.idle_for
        } else if state.served.load(Ordering::Relaxed) {
            state.at(state.idle_since_ms.load(Ordering::SeqCst)) + self.idle_for
        } else {
            state.born + self.first_request_within
        }
    }

    /// Whether the connection is idle; else makes sure the task is woken
    /// when it may be. The timer is re-armed lazily (when it fires early),
    /// not at every read and write.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.deadline();
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= deadline {
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
            this.moved(buf.filled().len() - before, false);
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
            this.moved(n, true);
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
            this.moved(n, true);
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
