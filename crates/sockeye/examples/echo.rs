//! The smallest WebSocket server: echoes every text and binary message back.
//!
//! ```text
//! cargo run -p sockeye --example echo -- [ADDR]      # ADDR defaults to 127.0.0.1:9001
//! ```
//!
//! It prints the URL it listens on; `sockeye connect ws://127.0.0.1:9001/` talks to it. The
//! tutorial (`docs/tutorial.md`) starts here; `tests/examples.rs` runs it.

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("echo server on ws://{}/", listener.local_addr()?);
    serve(listener).await
}

/// Accepts connections for ever, each in a task of its own.
pub(crate) async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (tcp, _peer) = listener.accept().await?;
        tokio::spawn(async move {
            // The opening handshake: Origin policy, subprotocols and limits are the defaults.
            let Ok(mut ws) = sockeye::accept(tcp).await else {
                return;
            };
            // Pings are answered and a Close is replied to by the library: only data arrives
            // here worth answering. `None` once the connection has closed.
            while let Some(Ok(message)) = ws.next().await {
                if message.is_data() && ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}
