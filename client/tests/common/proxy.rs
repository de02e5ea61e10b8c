//! A TCP proxy for tests that break connections: cut, refuse, stall,
//! throttle; and the file helpers those tests share.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy does with one connection.
#[derive(Clone, Copy, Debug)]
pub enum Conn {
    Forward,
    /// Cut after this many response bytes (running the proxy's cut hook).
    CutAfter(usize),
    /// Close at once.
    Refuse,
    /// Forward responses at about this many bytes a second.
    Slow(usize),
    /// Forward this many response bytes, then nothing (the connection
    /// stays open).
    StallAfter(usize),
}

pub type Plan = Arc<dyn Fn(usize) -> Conn + Send + Sync>;
pub type Hook = Arc<dyn Fn() + Send + Sync>;

pub struct Proxy {
    pub addr: SocketAddr,
    /// Response bytes forwarded, over all connections.
    pub down: Arc<AtomicU64>,
}

/// A TCP proxy to `upstream`; connection `n` (from 0) gets `plan(n)`.
pub async fn proxy(upstream: SocketAddr, plan: Plan, on_cut: Hook) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let down = Arc::new(AtomicU64::new(0));
    let counted = down.clone();
    let conns = AtomicUsize::new(0);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let how = plan(conns.fetch_add(1, Ordering::SeqCst));
            if matches!(how, Conn::Refuse) {
                drop(client);
                continue;
            }
            let (down, on_cut) = (counted.clone(), on_cut.clone());
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let pipe = async {
                    let size = match how {
                        Conn::Slow(rate) => (rate / 10).max(1024),
                        _ => 16 * 1024,
                    };
                    let mut buf = vec![0u8; size];
                    let mut sent = 0usize;
                    loop {
                        let want = match how {
                            Conn::Slow(rate) => buf.len().min(rate / 10),
                            _ => buf.len(),
                        };
                        let n = sr.read(&mut buf[..want]).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let n = match how {
                            Conn::CutAfter(limit) | Conn::StallAfter(limit) => n.min(limit - sent),
                            _ => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        down.fetch_add(n as u64, Ordering::SeqCst);
                        if let Conn::CutAfter(limit) = how
                            && sent >= limit
                        {
                            on_cut();
                            break;
                        }
                        if let Conn::StallAfter(limit) = how
                            && sent >= limit
                        {
                            on_cut();
                            std::future::pending::<()>().await;
                        }
                        if let Conn::Slow(_) = how {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                tokio::select! { _ = up => {}, () = pipe => {} }
            });
        }
    });
    Proxy { addr, down }
}

pub fn no_hook() -> Hook {
    Arc::new(|| {})
}

/// Deterministic bytes, different per `seed`.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Replaces `path` atomically (write beside it, rename over it).
pub fn replace(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Client options for download tests: no compression, a 10 s read
/// timeout, retries until `retry`.
pub fn download_options(retry: Duration) -> framegate_client::Options {
    let mut o = framegate_client::Options::default();
    o.compress = false;
    o.read_timeout = Duration::from_secs(10);
    o.retry_deadline = retry;
    o
}
