//! An echo server over TLS (`wss://`) that reloads its certificate on SIGHUP, without a
//! restart: connections already open keep theirs, new ones get the new certificate.
//!
//! ```text
//! cargo run -p sockeye --example tls_server -- CHAIN.pem KEY.pem [ADDR]
//! # after renewing the files:
//! kill -HUP PID
//! ```
//!
//! `CHAIN.pem` holds the server's certificate then its intermediates, `KEY.pem` its private
//! key (PKCS#8, PKCS#1 or SEC1). `docs/tutorial.md` shows how to make a test pair with
//! `openssl`.

use sockeye::{ServerBuilder, TlsAcceptor, TlsSetupError};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tls_server CHAIN.pem KEY.pem [ADDR]";
    let chain = args.next().ok_or(usage)?;
    let key = args.next().ok_or(usage)?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9443".into());
    let acceptor = TlsAcceptor::from_pem_files(&chain, &key)?;
    let listener = TcpListener::bind(&addr).await?;
    println!("echo server on wss://{}/", listener.local_addr()?);
    let server = ServerBuilder::new().tls(acceptor.clone());
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match reload(&acceptor, &chain, &key) {
                Ok(()) => eprintln!("certificate reloaded from {chain}"),
                // A bad file keeps the certificate in use: the server stays up.
                Err(e) => eprintln!("certificate not reloaded: {e}"),
            }
        }
    });
    serve(listener, server).await?;
    Ok(())
}

/// Reads the certificate and key again; `acceptor` (and every clone of it, such as the one in
/// the `ServerBuilder`) presents them from the next connection on.
pub(crate) fn reload(acceptor: &TlsAcceptor, chain: &str, key: &str) -> Result<(), TlsSetupError> {
    acceptor.reload(&TlsAcceptor::from_pem_files(chain, key)?);
    Ok(())
}

/// Accepts connections for ever: the TLS handshake, then the WebSocket one, then an echo.
pub(crate) async fn serve(listener: TcpListener, server: ServerBuilder) -> std::io::Result<()> {
    loop {
        let (tcp, _peer) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            // TLS and WebSocket handshakes, both within the handshake timeout.
            let Ok(mut ws) = server.accept_tcp(tcp).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_data() && ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}
