//! Embedding framegate-server: the file commands plus two of our own.
//!
//! ```sh
//! cargo run -p framegate-server --example custom_command -- ./some/dir 127.0.0.1:8090
//! ```
//!
//! `shout` answers its data in upper case (a command with data reads it
//! first, then waits for its turn); `count` answers how many entries the
//! base directory has, as CBOR.

use std::net::SocketAddr;

use framegate_server::command::{Answer, Call, read_command};
use framegate_server::{Gateway, GatewayConfig, Registry, serve};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8090".into())
        .parse()?;

    let mut registry = Registry::files();
    registry.register(
        "shout",
        read_command(|mut call: Call| async move {
            let mut text = Vec::new();
            if let Some(data) = call.data.as_mut() {
                while let Some(chunk) = data.next().await? {
                    text.extend_from_slice(&chunk);
                }
            }
            call.turn.wait().await?;
            Ok(Answer::Bytes(text.to_ascii_uppercase().into()))
        }),
    );
    registry.register(
        "count",
        read_command(|mut call: Call| async move {
            call.turn.wait().await?;
            let entries = call.ctx.storage.list(std::path::Path::new(".")).await?;
            Ok(Answer::cbor(&entries.len()))
        }),
    );

    let gateway = Gateway::new(GatewayConfig::new(dir), registry)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let handle = serve(gateway, listener, None).await?;
    println!(
        "serving with `shout` and `count` at http://{}/",
        handle.local_addr
    );
    let stop = handle.stop_token();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    handle.wait().await?;
    Ok(())
}
