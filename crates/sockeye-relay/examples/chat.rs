//! A chat with rooms: every message a member of `/rooms/NAME` sends reaches the room's other
//! members. Over TLS with a certificate, and across servers with a Redis.
//!
//! ```text
//! cargo run -p sockeye-relay --example chat -- [ADDR]              # ws://127.0.0.1:9001/rooms/NAME
//! cargo run -p sockeye-relay --example chat -- [ADDR] --tls-cert CHAIN.pem --tls-key KEY.pem
//! cargo run -p sockeye-relay --example chat -- [ADDR] --redis redis://127.0.0.1:6379
//! ```
//!
//! Add `?name=ann` to the URL to take part in presence: the member is told who is in the room
//! and who comes and goes. `docs/tutorial.md` builds this file step by step.

use std::future::pending;

use sockeye::{CloseCode, ServerBuilder, TlsAcceptor};
use sockeye_relay::{RedisBackplane, RedisLimits, Relay};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut cert, mut key, mut redis) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tls-cert" => cert = Some(args.next().ok_or("--tls-cert needs a file")?),
            "--tls-key" => key = Some(args.next().ok_or("--tls-key needs a file")?),
            "--redis" => redis = Some(args.next().ok_or("--redis needs a URL")?),
            other if !other.starts_with("--") => addr = Some(other.to_owned()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    // Step 4: with a Redis, the rooms are shared by every server on it.
    let relay = match redis {
        Some(url) => {
            let redis = RedisBackplane::connect(&url, None, RedisLimits::new()).await?;
            Relay::builder().backplane(redis).build()
        }
        None => Relay::new(),
    };
    // Step 3: with a certificate, wss:// (and pages served over https may connect).
    let (server, scheme) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let tls = TlsAcceptor::from_pem_files(cert, key)?;
            (ServerBuilder::new().tls(tls), "wss")
        }
        (None, None) => (ServerBuilder::new(), "ws"),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let addr = addr.unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("chat on {scheme}://{}/rooms/NAME", listener.local_addr()?);
    serve(listener, server, relay).await?;
    Ok(())
}

/// Step 2: accepts connections for ever and makes each a member of the room its path names.
pub(crate) async fn serve(
    listener: TcpListener,
    server: ServerBuilder,
    relay: Relay,
) -> std::io::Result<()> {
    loop {
        let (tcp, _peer) = listener.accept().await?;
        let (server, relay) = (server.clone(), relay.clone());
        tokio::spawn(async move {
            // The request comes back with the WebSocket: its path names the room.
            let Ok((mut ws, request)) = server.accept_tcp_with_request(tcp).await else {
                return;
            };
            let Some(room) = request.uri().path().strip_prefix("/rooms/") else {
                let _ = ws
                    .close(CloseCode::POLICY_VIOLATION, "rooms are at /rooms/NAME")
                    .await;
                return;
            };
            let name = request
                .uri()
                .query()
                .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("name=")));
            // Until the member leaves; a member too slow for its room is closed with 1008.
            let _ = relay.serve_named_until(ws, room, name, pending()).await;
        });
    }
}
