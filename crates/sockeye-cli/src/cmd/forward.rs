//! `sockeye forward`: TCP to WebSocket and WebSocket to TCP, bytes both ways as binary messages.

use anyhow::Context as _;
use bytes::BytesMut;
use sockeye::{ClientBuilder, CloseCode, Message, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Usage;
use crate::args::ForwardArgs;

pub(crate) async fn run(args: ForwardArgs) -> anyhow::Result<u8> {
    if let Some(addr) = args.listen.strip_prefix("tcp:") {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "sockeye forward: tcp://{} -> {}",
            listener.local_addr()?,
            args.target
        );
        let client = args.net.apply(ClientBuilder::new(&args.target))?;
        loop {
            let (tcp, peer) = listener.accept().await?;
            let url = args.target.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match client.connect().await {
                    Ok((ws, _)) => {
                        tracing::info!(%peer, %url, "bridging");
                        bridge(ws, tcp).await;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, %url, error = %e, "cannot reach the WebSocket side");
                    }
                }
            });
        }
    }
    if let Some(addr) = args.listen.strip_prefix("ws://") {
        let addr = addr.trim_end_matches('/');
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "sockeye forward: ws://{} -> tcp://{}",
            listener.local_addr()?,
            args.target
        );
        let server = ServerBuilder::new();
        loop {
            let (tcp, peer) = listener.accept().await?;
            let target = args.target.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let ws = match server.accept(tcp).await {
                    Ok(ws) => ws,
                    Err(e) => return tracing::info!(%peer, error = %e, "handshake failed"),
                };
                match TcpStream::connect(&target).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        tracing::info!(%peer, %target, "bridging");
                        bridge(ws, tcp).await;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, %target, error = %e, "cannot reach the TCP side");
                        let mut ws = ws;
                        let _ = ws
                            .close(CloseCode::BAD_GATEWAY, "upstream unreachable")
                            .await;
                    }
                }
            });
        }
    }
    Err(Usage(format!(
        "--listen {}: use tcp:HOST:PORT or ws://HOST:PORT",
        args.listen
    ))
    .into())
}

/// Copies bytes both ways until either side ends; the other side is then closed too.
async fn bridge<S>(mut ws: WebSocket<S>, mut tcp: TcpStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        tokio::select! {
            read = tcp.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = ws.close(CloseCode::NORMAL, "").await;
                    return;
                }
                Ok(_) => {
                    if ws.send(Message::binary(buf.split().freeze())).await.is_err() {
                        return;
                    }
                    buf.reserve(64 << 10);
                }
            },
            message = ws.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if tcp.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if tcp.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = tcp.shutdown().await;
                    return;
                }
            },
        }
    }
}
