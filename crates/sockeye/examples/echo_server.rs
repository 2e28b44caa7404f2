//! Echoes every text and binary message on every path until killed.
//!
//! `cargo run --release -p sockeye --example echo_server -- 127.0.0.1:9001 [--deflate]`
//!
//! With `--deflate` it accepts permessage-deflate when a client offers it.

use sockeye::{DeflateConfig, Message, ServerBuilder, WebSocketConfig};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let deflate = args.iter().any(|a| a == "--deflate");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo server listening on ws://{}", listener.local_addr()?);
    let config = WebSocketConfig::default();
    let mut server = ServerBuilder::new().config(config);
    if deflate {
        server = server.deflate(DeflateConfig::new());
    }
    loop {
        let (tcp, peer) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let mut ws = match server.accept(tcp).await {
                Ok(ws) => ws,
                Err(e) => {
                    eprintln!("{peer}: handshake failed: {e}");
                    return;
                }
            };
            while let Some(message) = ws.next().await {
                match message {
                    Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("{peer}: {e}");
                        break;
                    }
                }
            }
        });
    }
}
