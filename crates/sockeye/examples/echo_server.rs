//! Echoes every text and binary message on every path until killed.
//!
//! `cargo run --release -p sockeye --example echo_server -- [ADDR] [--deflate]
//!  [--tls-cert CHAIN.pem --tls-key KEY.pem]`
//!
//! With `--deflate` it accepts permessage-deflate when a client offers it; with `--tls-cert` and
//! `--tls-key` it serves `wss://`. It accepts any Origin: it is a test peer, not a site.

use sockeye::{DeflateConfig, Message, OriginPolicy, ServerBuilder, TlsAcceptor, WebSocketConfig};
use tokio::net::TcpListener;

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
    let mut server = ServerBuilder::new()
        .config(config)
        .origin_policy(OriginPolicy::any());
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
    loop {
        let (tcp, peer) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let mut ws = match server.accept_tcp(tcp).await {
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
