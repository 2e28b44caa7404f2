//! `sockeye serve`: the demo page at `/`, rooms at `/rooms/NAME`, or an echo server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use http::StatusCode;
use sockeye::{
    Accept, CloseCode, Config, DeflateConfig, MaybeTlsStream, OriginPolicy, Reject, ServerBuilder,
    TlsAcceptor, WebSocket, WebSocketConfig,
};
use sockeye_relay::backplane::wire::HEADER_LEN;
use sockeye_relay::{QueueLimits, RedisBackplane, RedisError, RedisLimits, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::Usage;
use crate::args::ServeArgs;
use crate::exit;
use crate::rewind::Rewind;

const PAGE: &str = include_str!("../../assets/index.html");
/// The most a request head may take before we tell a page request from an upgrade.
const MAX_HEAD: usize = 16 << 10;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one send to a room member may wait for the member to read.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections get to finish their close handshakes at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

struct Shared {
    server: ServerBuilder,
    tls: Option<TlsAcceptor>,
    /// Connections still in TLS or in their request head; beyond the bound, new ones are closed.
    opening: Arc<Semaphore>,
    rooms: Relay,
    echo: bool,
    shutdown: watch::Receiver<bool>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    if args.client_queue == 0 {
        return Err(Usage("--client-queue must be at least 1".into()).into());
    }
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsAcceptor::from_pem_files(cert, key)
                .map_err(|e| Usage(format!("--tls-cert/--tls-key: {e}")))?,
        ),
        _ => None,
    };
    let rooms = rooms(&args).await?;
    let (http, ws) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    if args.echo {
        eprintln!("sockeye serve: echo server on {ws}://{addr}/ (Ctrl-C to stop)");
    } else {
        let shared_over = if args.redis.is_some() {
            ", shared over Redis"
        } else {
            ""
        };
        eprintln!(
            "sockeye serve: demo chat on {http}://{addr}/, rooms at {ws}://{addr}/rooms/NAME{shared_over} (Ctrl-C to stop)"
        );
    }
    // A relay holds messages for every member: keep them small by default.
    let proto = Config::builder()
        .max_message_size(args.max_message)
        .max_frame_size(args.max_message)
        .build()?;
    let config = WebSocketConfig::builder().proto(proto).build()?;
    let origin = if args.allow_origins.iter().any(|o| o == "*") {
        OriginPolicy::any()
    } else {
        OriginPolicy::same_host_or(args.allow_origins.iter().cloned())
    };
    let mut server = ServerBuilder::new()
        .config(config)
        .origin_policy(origin)
        .on_request(route(args.echo, addr.ip().is_loopback()));
    // This loop runs TLS itself (to tell page requests from upgrades first), so the builder is
    // told that pages come over https: the same-host Origin must then be https too.
    if tls.is_some() {
        server = server.served_over_tls(true);
    }
    if !args.no_compress {
        server = server.deflate(DeflateConfig::new());
    }
    let (stop, shutdown) = watch::channel(false);
    let shared = Arc::new(Shared {
        server,
        tls,
        opening: Arc::new(Semaphore::new(sockeye::DEFAULT_MAX_CONCURRENT_HANDSHAKES)),
        rooms,
        echo: args.echo,
        shutdown,
    });
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                tasks.spawn(handle(Arc::clone(&shared), tcp, peer));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    eprintln!(
        "sockeye serve: shutting down, closing {} connections with 1001",
        tasks.len()
    );
    let _ = stop.send(true);
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(exit::OK)
}

/// The rooms: in this process, or shared with other servers over Redis.
async fn rooms(args: &ServeArgs) -> anyhow::Result<Relay> {
    let relay = Relay::builder()
        .queue_limits(QueueLimits::new(args.client_queue, args.client_queue_bytes))
        .send_timeout(SEND_TIMEOUT);
    let Some(url) = &args.redis else {
        return Ok(relay.build());
    };
    let max_queue = RedisLimits::MAX_QUEUE;
    if !(1..=max_queue).contains(&args.redis_queue) {
        return Err(Usage(format!("--redis-queue must be 1 to {max_queue}")).into());
    }
    if args.redis_queue_bytes < args.max_message + HEADER_LEN {
        return Err(Usage(format!(
            "--redis-queue-bytes must hold the largest message: at least {} (--max-message + {HEADER_LEN})",
            args.max_message + HEADER_LEN
        ))
        .into());
    }
    let limits = RedisLimits::new()
        .queue(args.redis_queue)
        .queue_bytes(args.redis_queue_bytes)
        .max_message(args.max_message);
    let ca = match &args.redis_cacert {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| Usage(format!("--redis-cacert {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let backplane = RedisBackplane::connect(url, ca, limits)
        .await
        .map_err(|e| match e {
            RedisError::Unreachable { .. } => anyhow::Error::new(e),
            e => Usage(format!("--redis: {e}")).into(),
        })?;
    Ok(relay.backplane(backplane).build())
}

/// Which upgrade requests are accepted: every path for `--echo`, `/rooms/NAME` otherwise. On a
/// loopback address, only with a loopback `Host`: a page on another site that rebinds its own
/// name to 127.0.0.1 would otherwise pass the same-host Origin check.
fn route(
    echo: bool,
    loopback: bool,
) -> impl Fn(&sockeye::UpgradeRequest) -> Result<Accept, Reject> + Send + Sync + 'static {
    move |request| {
        if loopback && !loopback_host(request) {
            return Err(Reject::new(
                StatusCode::FORBIDDEN,
                "this server answers only to localhost, 127.0.0.1 and [::1]",
            ));
        }
        if echo || room_name(request.path()).is_some() {
            Ok(Accept::new())
        } else {
            Err(Reject::new(
                StatusCode::NOT_FOUND,
                "no such room: use /rooms/NAME",
            ))
        }
    }
}

/// Whether the request's Host names this machine's loopback interface.
fn loopback_host(request: &sockeye::UpgradeRequest) -> bool {
    let Some(host) = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn room_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/rooms/")?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    valid.then_some(name)
}

async fn handle(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    // TLS and the request head are bounded in time and in how many run at once, so that
    // connections that send nothing cannot pile up.
    let Ok(opening) = Arc::clone(&shared.opening).try_acquire_owned() else {
        tracing::info!(%peer, "too many connections opening at once; closed");
        return;
    };
    let opened = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut stream = match &shared.tls {
            Some(tls) => MaybeTlsStream::ServerTls(Box::new(tls.accept(tcp).await?)),
            None => MaybeTlsStream::Plain(tcp),
        };
        let head = read_head(&mut stream).await?;
        Ok::<_, anyhow::Error>((stream, head))
    })
    .await;
    let (mut tcp, head) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "connection failed before its request");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no request in time");
            return;
        }
    };
    drop(opening);
    let Some(head) = head else {
        let _ = respond(
            &mut tcp,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "text/plain",
            "request head too large\n",
        )
        .await;
        return;
    };
    let Some((path, upgrade)) = inspect(&head) else {
        let _ = respond(
            &mut tcp,
            StatusCode::BAD_REQUEST,
            "text/plain",
            "malformed request\n",
        )
        .await;
        return;
    };
    if !upgrade {
        let _ = match path.as_str() {
            "/" | "/index.html" => {
                respond(&mut tcp, StatusCode::OK, "text/html; charset=utf-8", PAGE).await
            }
            "/favicon.ico" => respond(&mut tcp, StatusCode::NO_CONTENT, "text/plain", "").await,
            _ => respond(&mut tcp, StatusCode::NOT_FOUND, "text/plain", "not found\n").await,
        };
        return;
    }
    let stream = Rewind::new(head.freeze(), tcp);
    let (ws, request) = match shared.server.accept_with_request(stream).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::info!(%peer, error = %e, "handshake failed");
            return;
        }
    };
    let path = request.uri().path().to_owned();
    tracing::info!(%peer, %path, extension = ?ws.extension(), "connected");
    let result = if shared.echo {
        echo(ws, shared.shutdown.clone()).await
    } else {
        let room = room_name(&path).unwrap_or("lobby").to_owned();
        member(ws, &shared, &room).await
    };
    match result {
        Ok(()) => tracing::info!(%peer, "disconnected"),
        Err(e) => tracing::info!(%peer, error = %e, "disconnected"),
    }
}

/// Reads until the end of the request head; `None` when it is too large.
async fn read_head(tcp: &mut MaybeTlsStream) -> std::io::Result<Option<BytesMut>> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The request's path, and whether it asks for a WebSocket upgrade.
fn inspect(head: &[u8]) -> Option<(String, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let target = request.path?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let upgrade = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(h.value).is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            })
    });
    Some((path, upgrade))
}

async fn respond(
    tcp: &mut MaybeTlsStream,
    status: StatusCode,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.shutdown().await
}

type Ws = WebSocket<Rewind<MaybeTlsStream>>;

async fn echo(mut ws: Ws, mut shutdown: watch::Receiver<bool>) -> Result<(), sockeye::Error> {
    if *shutdown.borrow_and_update() {
        return ws
            .close(CloseCode::GOING_AWAY, "server shutting down")
            .await;
    }
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message)) if message.is_data() => ws.send(message).await?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = shutdown.changed() => return ws.close(CloseCode::GOING_AWAY, "server shutting down").await,
        }
    }
}

async fn member(ws: Ws, shared: &Shared, room: &str) -> Result<(), sockeye::Error> {
    let mut shutdown = shared.shutdown.clone();
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    shared.rooms.serve_until(ws, room, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(room_name("/rooms/lobby"), Some("lobby"));
        assert_eq!(room_name("/rooms/a-b_c.1"), Some("a-b_c.1"));
        assert_eq!(room_name("/rooms/"), None);
        assert_eq!(room_name("/rooms/a/b"), None);
        assert_eq!(room_name("/other"), None);
    }

    #[test]
    fn inspects_requests() {
        let page = b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(inspect(page), Some(("/index.html".into(), false)));
        let upgrade = b"GET /rooms/x HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(inspect(upgrade), Some(("/rooms/x".into(), true)));
        assert_eq!(inspect(b"\x00\x01\r\n\r\n"), None);
    }
}
