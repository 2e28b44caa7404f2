//! An echo server that reports how each of its handshakes ended, and the echo loop itself.

use std::net::SocketAddr;

use sockeye::{Error, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Sends every data message of `ws` back, until it ends, fails, or a send fails.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    while let Some(Ok(message)) = ws.next().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// An echo server on 127.0.0.1 that accepts with `builder` (TLS when it has it), echoes data
/// messages, and sends the outcome of every handshake down the channel.
pub async fn echo_server(
    builder: ServerBuilder,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<(), Error>>) {
    let (listener, addr) = crate::listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let builder = builder.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match builder.accept_tcp(tcp).await {
                    Ok(mut ws) => {
                        let _ = tx.send(Ok(()));
                        echo(&mut ws).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (addr, rx)
}
