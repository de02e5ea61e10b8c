//! Running a gateway on a TCP listener, with graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;

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

    /// Waits until the server has stopped.
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
    let app = gateway.router();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task_stop = stop.clone();
    let task = tokio::spawn(async move {
        let server =
            axum::serve(listener, app).with_graceful_shutdown(task_stop.clone().cancelled_owned());
        tokio::select! {
            result = server => result,
            _ = async {
                task_stop.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs_f64(), "grace period over; stopping with messages in flight");
                Ok(())
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
