//! Echoes every text and binary message on every path until killed.
//!
//! `cargo run --release -p sockeye --example echo_server -- 127.0.0.1:9001`

use sockeye::{Message, ServerBuilder, WebSocketConfig};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo server listening on ws://{}", listener.local_addr()?);
    let config = WebSocketConfig::default();
    let server = ServerBuilder::new().config(config);
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
