//! `sockeye forward`: TCP to WebSocket and WebSocket to TCP, bytes both ways as binary messages.

use anyhow::Context as _;
use bytes::BytesMut;
use sockeye::{ClientBuilder, CloseCode, Message, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Usage;
use crate::args::ForwardArgs;

/// Where `forward` listens.
enum Listen {
    /// TCP clients, bridged to a WebSocket URL.
    Tcp(std::net::SocketAddr),
    /// Unix socket clients, bridged to a WebSocket URL.
    Unix(std::path::PathBuf),
    /// WebSocket clients (over TLS when `tls`), bridged to a TCP address or a Unix socket.
    WebSocket {
        addr: std::net::SocketAddr,
        tls: bool,
    },
}

/// Where `forward --listen ws://` goes.
#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The listener and the target, checked before anything listens (exit code 2 when wrong).
fn parse(args: &ForwardArgs) -> Result<Listen, Usage> {
    let listen = args.listen.as_str();
    let addr = |text: &str| {
        crate::addr::listen_addr(text.trim_end_matches('/'))
            .map_err(|e| Usage(format!("--listen {listen}: {e}")))
    };
    let parsed = if let Some(rest) = listen.strip_prefix("tcp:") {
        Listen::Tcp(addr(rest)?)
    } else if let Some(path) = listen.strip_prefix("unix:") {
        Listen::Unix(path.into())
    } else if let Some(rest) = listen.strip_prefix("ws://") {
        Listen::WebSocket {
            addr: addr(rest)?,
            tls: false,
        }
    } else if let Some(rest) = listen.strip_prefix("wss://") {
        Listen::WebSocket {
            addr: addr(rest)?,
            tls: true,
        }
    } else {
        return Err(Usage(format!(
            "--listen {listen}: use tcp:ADDR, unix:PATH, ws://ADDR or wss://ADDR"
        )));
    };
    match &parsed {
        Listen::Tcp(_) | Listen::Unix(_) => {
            crate::addr::check_ws_url(&crate::addr::ws_url(&args.target)).map_err(|e| {
                Usage(format!(
                    "target {e} (--listen {listen} forwards to a WebSocket URL)"
                ))
            })?;
            if args.tls_cert.is_some() {
                return Err(Usage(format!(
                    "--tls-cert is for a wss:// listener, not --listen {listen}"
                )));
            }
        }
        Listen::WebSocket { tls, .. } => {
            if !args.target.starts_with("unix:") {
                crate::addr::check_host_port(&args.target).map_err(|e| {
                    Usage(format!("target {e} (--listen {listen} forwards to TCP)"))
                })?;
            }
            if args.http.policy().is_some() {
                return Err(Usage(format!(
                    "--http2, --http1 and --prefer-http2 choose how to reach a WebSocket URL, not \
                     --listen {listen}"
                )));
            }
            if *tls != args.tls_cert.is_some() {
                return Err(Usage(if *tls {
                    "--listen wss:// needs --tls-cert and --tls-key".to_owned()
                } else {
                    "--tls-cert and --tls-key need a wss:// listener".to_owned()
                }));
            }
        }
    }
    Ok(parsed)
}

pub(crate) async fn run(args: ForwardArgs) -> anyhow::Result<u8> {
    match parse(&args)? {
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let url = crate::addr::ws_url(&args.target);
            eprintln!("sockeye forward: tcp://{} -> {url}", listener.local_addr()?);
            let client = args.http.apply(args.net.apply(ClientBuilder::new(&url))?);
            loop {
                let (tcp, peer) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                tokio::spawn(to_websocket(
                    client.clone(),
                    url.clone(),
                    tcp,
                    peer.to_string(),
                ));
            }
        }
        #[cfg(unix)]
        Listen::Unix(path) => {
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
            let url = crate::addr::ws_url(&args.target);
            eprintln!("sockeye forward: unix:{} -> {url}", path.display());
            let client = args.http.apply(args.net.apply(ClientBuilder::new(&url))?);
            let result = async {
                loop {
                    let (stream, _) = listener.accept().await?;
                    tokio::spawn(to_websocket(
                        client.clone(),
                        url.clone(),
                        stream,
                        format!("unix:{}", path.display()),
                    ));
                }
            };
            let result: anyhow::Result<u8> = tokio::select! {
                result = result => result,
                () = crate::signal::terminate() => Ok(crate::exit::OK),
            };
            // The socket file is ours: leave no stale one behind.
            let _ = std::fs::remove_file(&path);
            result
        }
        #[cfg(not(unix))]
        Listen::Unix(_) => Err(Usage("unix: sockets need a Unix system".into()).into()),
        Listen::WebSocket { addr, tls } => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let upstream = match args.target.strip_prefix("unix:") {
                Some(path) => Upstream::Unix(path.into()),
                None => Upstream::Tcp(args.target.clone()),
            };
            let mut server = ServerBuilder::new();
            if let (true, Some(cert), Some(key)) = (tls, &args.tls_cert, &args.tls_key) {
                let acceptor = sockeye::TlsAcceptor::from_pem_files(cert, key)
                    .map_err(|e| Usage(format!("--tls-cert/--tls-key: {e}")))?;
                server = server.tls(acceptor);
            }
            let scheme = if tls { "wss" } else { "ws" };
            eprintln!(
                "sockeye forward: {scheme}://{} -> {upstream}",
                listener.local_addr()?
            );
            loop {
                let (tcp, peer) = listener.accept().await?;
                tokio::spawn(from_websocket(server.clone(), upstream.clone(), tcp, peer));
            }
        }
    }
}

/// Bridges one local client to a new WebSocket connection.
async fn to_websocket<S>(client: ClientBuilder, url: String, local: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match client.connect().await {
        Ok((ws, response)) => {
            let http = super::connect::http_version(response.version());
            tracing::info!(%peer, %url, %http, "bridging");
            bridge(ws, local).await;
        }
        Err(e) => {
            tracing::warn!(%peer, %url, error = %e, "cannot reach the WebSocket side");
        }
    }
}

/// Accepts one WebSocket client and bridges it to a new upstream connection.
async fn from_websocket(
    server: ServerBuilder,
    upstream: Upstream,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
) {
    let mut ws = match server.accept_tcp(tcp).await {
        Ok(ws) => ws,
        Err(e) => return tracing::info!(%peer, error = %e, "handshake failed"),
    };
    let failed = match &upstream {
        Upstream::Tcp(addr) => match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                tracing::info!(%peer, %upstream, "bridging");
                return bridge(ws, tcp).await;
            }
            Err(e) => e,
        },
        #[cfg(unix)]
        Upstream::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(stream) => {
                tracing::info!(%peer, %upstream, "bridging");
                return bridge(ws, stream).await;
            }
            Err(e) => e,
        },
        #[cfg(not(unix))]
        Upstream::Unix(_) => std::io::ErrorKind::Unsupported.into(),
    };
    tracing::warn!(%peer, %upstream, error = %failed, "cannot reach the upstream side");
    let _ = ws
        .close(CloseCode::BAD_GATEWAY, "upstream unreachable")
        .await;
}

/// Copies bytes both ways until either side ends; the other side is then closed too.
async fn bridge<S, T>(mut ws: WebSocket<S>, mut tcp: T)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
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
