//! Echoes every text and binary message on every path until killed.
//!
//! `cargo run --release -p sockeye --example echo_server -- [ADDR] [--deflate]
//!  [--tls-cert CHAIN.pem --tls-key KEY.pem]`
//!
//! With `--deflate` it accepts permessage-deflate when a client offers it; with `--tls-cert` and
//! `--tls-key` it serves `wss://`. It accepts any Origin: it is a test peer, not a site.
//!
//! SIGINT (Ctrl-C) or SIGTERM shuts it down gracefully: each connection writes out the echoes
//! it owes, closes with 1001 and gets 5 s for the peer's Close; the report says what was lost.
//! A second signal exits at once.

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::{
    DeflateConfig, MaybeTlsStream, Message, OriginPolicy, ServerBuilder, Shutdown, TlsAcceptor,
    WebSocket, WebSocketConfig,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut deflate, mut cert, mut key) = (None, false, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--deflate" => deflate = true,
            "--tls-cert" => cert = Some(args.next().ok_or("--tls-cert needs a path")?),
            "--tls-key" => key = Some(args.next().ok_or("--tls-key needs a path")?),
            other if !other.starts_with("--") => addr = Some(other.to_owned()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    let config = WebSocketConfig::default();
    let shutdown = Shutdown::new().grace_period(Duration::from_secs(5));
    let mut server = ServerBuilder::new()
        .config(config)
        .origin_policy(OriginPolicy::any())
        .shutdown(&shutdown);
    let scheme = match (cert, key) {
        (Some(cert), Some(key)) => {
            server = server.tls(TlsAcceptor::from_pem_files(cert, key)?);
            "wss"
        }
        (None, None) => "ws",
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    eprintln!(
        "echo server listening on {scheme}://{}",
        listener.local_addr()?
    );
    if deflate {
        server = server.deflate(DeflateConfig::new());
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let server = server.clone();
        // The handshake in a task of its own, and the connection in another: the connection's
        // task holds only the WebSocket, not the builder (memory per idle connection).
        tokio::spawn(async move {
            match server.accept_tcp(tcp).await {
                Ok(ws) => drop(tokio::spawn(echo(ws, peer))),
                Err(e) => eprintln!("{peer}: handshake failed: {e}"),
            }
        });
    }
    drop(listener);
    eprintln!(
        "shutting down: draining {} connection(s)",
        shutdown.connections()
    );
    shutdown.trigger();
    let report = tokio::select! {
        report = shutdown.drained() => report,
        _ = terminate.recv() => shutdown.report(),
        _ = interrupt.recv() => shutdown.report(),
    };
    eprintln!("{report}");
    Ok(())
}

/// Echoes text and binary messages until the connection ends.
///
/// Not an `async fn`: one keeps its arguments twice in its future (the argument, and the local
/// it is moved into), a second WebSocket's worth of memory for the connection's whole life.
#[allow(clippy::manual_async_fn)]
fn echo(mut ws: WebSocket<MaybeTlsStream>, peer: SocketAddr) -> impl Future<Output = ()> {
    async move {
        while let Some(message) = ws.next().await {
            match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    // Fails once the shutdown began (or the transport failed): keep reading,
                    // the connection ends by itself.
                    let _ = ws.send(message).await;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{peer}: {e}");
                    break;
                }
            }
        }
    }
}
