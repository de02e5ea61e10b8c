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

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
}

impl ConnectionService {
    pub(crate) fn new(app: Router, handle: ConnectionHandle) -> Self {
        ConnectionService { app, handle }
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
        request.extensions_mut().insert(self.handle.clone());
        let call = self.app.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|inner| {
                axum::body::Body::new(Tracked {
                    inner,
                    _in_flight: in_flight,
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
