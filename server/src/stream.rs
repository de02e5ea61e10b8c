//! The byte-stream binding (§8): TCP connections and one stdio session (as
//! started by sshd), full duplex, reactor in immediate mode.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use framegate_wire::OutputMode;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;
use crate::message::{Message, MessageSpec, parse_preamble};

/// Default TCP port of `framegate://`.
pub const DEFAULT_TCP_PORT: u16 = 4159;

/// Longest preamble line accepted.
pub const MAX_PREAMBLE_LEN: u64 = 1024;

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
    let read = tokio::time::timeout(
        idle,
        (&mut reader).take(MAX_PREAMBLE_LEN).read_line(&mut line),
    )
    .await;
    let encoding = match read {
        Err(_) => {
            tracing::info!("closing connection: no preamble within the idle timeout");
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => match parse_preamble(&line) {
            Ok(encoding) => encoding,
            Err(code) => {
                tracing::info!(code, "refusing connection: bad preamble");
                writer
                    .write_all(format!("framegate/1 error {code}\n").as_bytes())
                    .await?;
                writer.shutdown().await?;
                return Ok(());
            }
        },
    };
    writer.write_all(b"framegate/1 ok\n").await?;
    writer.flush().await?;
    let writable = match policy {
        WritePolicy::TrustLogin => config.allow_writes,
        WritePolicy::TokenInHello => config.allow_writes && config.write_token.is_none(),
    };
    let spec = MessageSpec {
        base: gateway.root.clone(),
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
    let message = Message::new(gateway.clone(), spec, OutputMode::Immediate);
    message.run_stream(reader, writer, idle, stop).await
}

/// Accepts TCP connections until `stop`, then lets each finish what is in
/// flight (bounded by the shutdown grace).
pub async fn serve_tcp(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    stop: CancellationToken,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                let stop = stop.clone();
                tracker.spawn(async move {
                    let (r, w) = stream.into_split();
                    if let Err(e) = serve_connection(gw, r, w, WritePolicy::TokenInHello, stop).await {
                        tracing::info!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(listener);
    tracker.close();
    let grace = gateway.config().shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over; closing connections with requests in flight");
    }
    Ok(())
}

/// One session on stdin/stdout (started by sshd). Nothing else may be
/// written to stdout: logs go to stderr.
pub async fn serve_stdio(gateway: Arc<Gateway>, stop: CancellationToken) -> io::Result<()> {
    serve_connection(
        gateway,
        tokio::io::stdin(),
        tokio::io::stdout(),
        WritePolicy::TrustLogin,
        stop,
    )
    .await
}
