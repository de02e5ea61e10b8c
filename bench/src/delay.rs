//! A userspace TCP delay proxy for the benches (the kernel here has no
//! netem): every chunk read is delivered `rtt / 2` later, each way.
//!
//! Each direction of a connection is two OS threads (a reader stamping
//! chunks with their due time, a writer sleeping until it), so a delay is
//! kept to the timer's slack (tens of microseconds), not to an async
//! runtime's millisecond ticks, which added about 1 ms each way.
//!
//! The proxy delays bytes, not TCP's own handshake: the client's connect
//! completes against the proxy on loopback. [`link_proxy`] makes up for it:
//! a connection's first client bytes are delivered no earlier than one
//! round trip plus `rtt / 2` after it was accepted, as on a real link,
//! where the client can send only once its SYN was answered.

// Each binary uses what it needs.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Copies `from` to `to`, each read delivered `delay` after it was read
/// (in order), and none before `not_before`: a one-way latency.
fn delayed(mut from: TcpStream, mut to: TcpStream, delay: Duration, not_before: Instant) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = (Instant::now() + delay).max(not_before);
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn proxy(upstream: SocketAddr, rtt: Duration, handshake: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let accepted = Instant::now();
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let first = if handshake {
                accepted + rtt + rtt / 2
            } else {
                accepted
            };
            delayed(client, server2, rtt / 2, first);
            delayed(server, client2, rtt / 2, accepted);
        }
    });
    addr
}

/// A proxy to `upstream` adding `rtt / 2` each way.
pub(crate) async fn delay_proxy(upstream: SocketAddr, rtt: Duration) -> SocketAddr {
    proxy(upstream, rtt, false)
}

/// [`delay_proxy`] that also charges each connection TCP's handshake: its
/// first client bytes arrive no earlier than 1.5 `rtt` after the connect.
pub(crate) async fn link_proxy(upstream: SocketAddr, rtt: Duration) -> SocketAddr {
    proxy(upstream, rtt, true)
}
