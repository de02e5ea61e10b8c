//! 10,000 small calls (`has`) over one TCP connection, pipelined, vs the
//! same as 10 HTTP messages of 1,000 — measured side by side in one run,
//! server and client in one process on loopback.
//!
//! `cargo bench -p framegate-client --bench stream_vs_http`

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use framegate_client::{Connector, Options, Session, Transport};
use framegate_server::serve_tcp;
use framegate_server::{Gateway, GatewayConfig, Registry, serve};
use framegate_wire::Arguments;
use tokio_util::sync::CancellationToken;

const CALLS: usize = 10_000;
const PER_MESSAGE: usize = 1_000;
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), b"x").unwrap();
    let gateway = Gateway::new(GatewayConfig::new(dir.path()), Registry::files()).unwrap();
    let http = serve(
        gateway.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
    .unwrap();
    let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp_listener.local_addr().unwrap().to_string();
    tokio::spawn(serve_tcp(
        gateway.clone(),
        tcp_listener,
        CancellationToken::new(),
    ));

    let session = Arc::new(Session::new());
    session.connect(Connector::Tcp(tcp_addr)).await.unwrap();
    let transport = Transport::open(&format!("http://{}/", http.local_addr), Options::default())
        .await
        .unwrap();
    let mut args = Arguments::new();
    args.insert("path", "x").unwrap();
    let args = Arc::new(args);

    let (mut tcp_times, mut http_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        // Interleave the two so machine noise hits both alike.
        let started = Instant::now();
        let calls = (0..CALLS).map(|_| {
            let (s, a) = (session.clone(), args.clone());
            async move { s.call("has", &a, None).await.unwrap() }
        });
        let answers = futures_util::future::join_all(calls).await;
        assert!(answers.iter().all(|a| a.as_ref() == [0xf5]));
        tcp_times.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        for _ in 0..CALLS / PER_MESSAGE {
            let mut batch = transport.batch();
            let slots: Vec<_> = (0..PER_MESSAGE).map(|_| batch.has("x")).collect();
            let mut r = batch.send().await.unwrap();
            for s in slots {
                assert!(r.take(s).unwrap());
            }
        }
        http_times.push(started.elapsed().as_secs_f64());
    }
    let (tcp, http) = (median(tcp_times), median(http_times));
    println!("10,000 has calls, median of {ROUNDS} interleaved rounds:");
    println!(
        "  TCP, one connection, pipelined: {:8.1} ms  {:>9.0} calls/s",
        tcp * 1e3,
        CALLS as f64 / tcp
    );
    println!(
        "  HTTP, 10 messages of 1,000:     {:8.1} ms  {:>9.0} calls/s",
        http * 1e3,
        CALLS as f64 / http
    );
    println!("  ratio (TCP calls/s / HTTP calls/s): {:.2}", http / tcp);
    session.disconnect().await.unwrap();
}
