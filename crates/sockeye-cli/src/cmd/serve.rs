//! `sockeye serve`: the demo page at `/`, rooms at `/rooms/NAME`, or an echo server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sockeye::hyper::{PendingUpgrade, is_upgrade_request};
use sockeye::{
    Accept, Config, DeflateConfig, MaybeTlsStream, OriginPolicy, Reject, ServerBuilder, Shutdown,
    TlsAcceptor, TlsAcceptorBuilder, WebSocket, WebSocketConfig,
};
use sockeye_relay::backplane::wire::HEADER_LEN;
use sockeye_relay::{
    HistoryLimits, JoinOptions, RedisBackplane, RedisError, RedisLimits, Relay, Since,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::Usage;
use crate::args::ServeArgs;
use crate::exit;

const PAGE: &str = include_str!("../../assets/index.html");
/// The page of `--echo`: a message box and the echoes, with their round-trip times.
const ECHO_PAGE: &str = include_str!("../../assets/echo.html");
/// The most a request head may take (hyper's read buffer; a larger head is answered 431).
const MAX_HEAD: usize = 16 << 10;
/// How long a TLS handshake may take, and then each request head, the first one or the next on
/// a kept-alive connection (hyper's header read timeout, which also closes idle connections).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may go on serving HTTP requests (kept alive) before it is closed after
/// its current response, which then gets `HEAD_TIMEOUT` more: a client that sends requests and
/// never reads the answers cannot hold a connection for ever. Upgraded connections are not held
/// to it. An HTTP/2 connection is closed (GOAWAY) when it has had no WebSocket for this long.
const HTTP_LIFETIME: Duration = Duration::from_secs(60);
/// How many connections may be opening at once (in TLS or before their first request head).
const MAX_OPENING: usize = sockeye::DEFAULT_MAX_CONCURRENT_HANDSHAKES;
/// How long one send to a room member may wait for the member to read.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections get, from the first Ctrl-C or SIGTERM, to write out what was queued for
/// them and finish their close handshakes; then they are cut and what they lost is reported.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

struct Shared {
    server: ServerBuilder,
    tls: Option<TlsAcceptor>,
    /// How connections are served: HTTP/1.1 with keep-alive, limits on the request head.
    http: http1::Builder,
    /// How HTTP/2 connections (ALPN `h2`, over TLS only) are served: extended CONNECT enabled,
    /// the library's HTTP/2 limits (`sockeye::hyper::http2_builder`).
    h2: http2::Builder<TokioExecutor>,
    rooms: Relay,
    echo: bool,
    /// Every connection drains on it: the echo server's through the builder, room members
    /// through the relay.
    shutdown: Shutdown,
    /// Every connection's task, and every WebSocket's once it runs in a task of its own: the
    /// shutdown waits for them.
    tasks: TaskTracker,
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
        // HTTP/2 first, HTTP/1.1 for clients without it, on the same port.
        (Some(cert), Some(key)) => Some(
            TlsAcceptorBuilder::from_pem_files(cert, key)
                .and_then(|tls| tls.alpn_protocols(["h2", "http/1.1"]).build())
                .map_err(|e| Usage(format!("--tls-cert/--tls-key: {e}")))?,
        ),
        _ => None,
    };
    let shutdown = Shutdown::new().grace_period(SHUTDOWN_GRACE);
    let rooms = rooms(&args, &shutdown).await?;
    let (http, ws) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    if args.echo {
        eprintln!(
            "sockeye serve: echo server on {ws}://{addr}/, its page at {http}://{addr}/ (Ctrl-C to stop)"
        );
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
        .protocols(args.subprotocols.iter().cloned())
        .on_request(route(args.echo, addr.ip().is_loopback()));
    // TLS ends here, in front of hyper, so the builder is told that pages come over https: the
    // same-host Origin must then be https too.
    if tls.is_some() {
        server = server.served_over_tls(true);
    }
    if !args.no_compress {
        server = server.deflate(DeflateConfig::new());
    }
    // Echo connections drain through the builder; room members through the relay, which
    // writes out their queues first (a builder watching the same shutdown would refuse them).
    if args.echo {
        server = server.shutdown(&shutdown);
    }
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let shared = Arc::new(Shared {
        server,
        tls,
        http,
        h2: sockeye::hyper::http2_builder(),
        rooms,
        echo: args.echo,
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
    });
    accept_until_stopped(&listener, &shared).await;
    shared.tasks.close();
    // The first signal drains: every connection writes out what was queued for it before the
    // signal, then closes with 1001, within the grace period; a second exits at once (130).
    shutdown.trigger();
    drop(listener);
    eprintln!(
        "sockeye serve: shutting down: {} connection(s) write out their queues and close with 1001 (at most {} s; Ctrl-C again to quit now)",
        shutdown.connections(),
        SHUTDOWN_GRACE.as_secs()
    );
    // Connections are cut at the end of the grace period; a moment more for their tasks.
    let _ =
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), shared.tasks.wait()).await;
    let report = shutdown.report();
    tracing::info!(
        dropped_messages = report.dropped_messages,
        cut = report.cut,
        "shutdown: done"
    );
    eprintln!("sockeye serve: shutdown: {report}");
    Ok(exit::OK)
}

/// Serves every connection in a task of its own (in `shared.tasks`) until Ctrl-C.
async fn accept_until_stopped(listener: &TcpListener, shared: &Arc<Shared>) {
    // The one bound on connections still opening (TLS, then their first request head) lives
    // here, in the accept loop: hyper reads the heads, and the library's
    // `max_concurrent_handshakes` bounds only its own accept, not `ServerBuilder::upgrade`. A
    // connection holds its permit until its first request reaches `answer`; hyper's header read
    // timeout closes one that sends nothing, so the permits come back.
    let opening = Arc::new(Semaphore::new(MAX_OPENING));
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
                if let Ok(permit) = Arc::clone(&opening).try_acquire_owned() {
                    shared.tasks.spawn(handle(Arc::clone(shared), tcp, peer, permit));
                } else {
                    tracing::info!(%peer, "too many connections opening at once; closed");
                }
            }
            () = crate::signal::terminate() => break,
        }
    }
}

/// The most messages `--history` keeps per room.
const MAX_HISTORY: usize = 100_000;

/// The rooms: in this process, or shared with other servers over Redis.
async fn rooms(args: &ServeArgs, shutdown: &Shutdown) -> anyhow::Result<Relay> {
    let mut relay = Relay::builder()
        .queue_limits(args.queue_limits())
        .send_timeout(SEND_TIMEOUT)
        .shutdown(shutdown);
    if args.history > MAX_HISTORY {
        return Err(Usage(format!("--history must be at most {MAX_HISTORY}")).into());
    }
    if args.history > 0 {
        relay = relay.history(HistoryLimits::new(args.history));
    }
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
    // Several URLs: nodes of a Redis Cluster (one node's URL is found to be one, too).
    let builder = if url.contains(',') {
        RedisBackplane::cluster_builder(url.split(','))
    } else {
        RedisBackplane::builder(url)
    };
    let backplane = builder
        .ca(ca)
        .limits(limits)
        .prefix(args.redis_prefix.as_str())
        .connect()
        .await
        .map_err(|e| match e {
            RedisError::Unreachable { .. } => anyhow::Error::new(e),
            RedisError::Config(_) => Usage(format!("--redis-prefix: {e}")).into(),
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
    // The Host header on HTTP/1.1, the :authority on HTTP/2.
    let Some(host) = request.host() else {
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

/// A response of this server: a small page or text, whole.
type Page = Response<Full<Bytes>>;

/// The hyper service of one connection (either version): each request answered by [`answer`].
fn service(
    shared: &Arc<Shared>,
    handover: &Arc<Handover>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Page,
    Error = Infallible,
    Future = std::future::Ready<Result<Page, Infallible>>,
> + Clone
+ use<> {
    let shared = Arc::clone(shared);
    let handover = Arc::clone(handover);
    service_fn(move |request| {
        std::future::ready(Ok::<_, Infallible>(answer(
            &shared, &handover, peer, request,
        )))
    })
}

/// One connection: TLS, then HTTP/1.1 requests served by hyper until one of them upgrades to a
/// WebSocket, which then runs in a task of its own in `shared.tasks` (so that shutdown finds it); or, when the client
/// chose `h2` by ALPN, an HTTP/2 connection ([`serve_h2`]).
async fn handle(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    opening: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match &shared.tls {
        // Boxed, as is `serve_h2` below: what an `await` holds inline stays in this task's
        // future for the WebSocket's whole life, as large as the largest of them.
        Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, Box::pin(tls.accept(tcp))).await {
            Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                let stream = MaybeTlsStream::ServerTls(Box::new(tls));
                return Box::pin(serve_h2(shared, stream, peer, opening)).await;
            }
            Ok(Ok(tls)) => MaybeTlsStream::ServerTls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "connection failed before its request");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "no TLS handshake in time");
                return;
            }
        },
        None => MaybeTlsStream::Plain(tcp),
    };
    let handover = Arc::new(Handover {
        opening: Mutex::new(Some(opening)),
        upgrade: Mutex::new(None),
        streams: None,
    });
    let service = service(&shared, &handover, peer);
    let connection = shared
        .http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // On the heap, and dropped before the WebSocket runs: hyper's connection state would
    // otherwise stay in this task's future for the WebSocket's whole life.
    let mut connection = Box::pin(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        // Finish the request in progress (an upgrade among them), then close.
        () = shared.shutdown.triggered() => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
        () = tokio::time::sleep(HTTP_LIFETIME) => {
            connection.as_mut().graceful_shutdown();
            if let Ok(served) = tokio::time::timeout(HEAD_TIMEOUT, connection.as_mut()).await {
                served
            } else {
                tracing::info!(%peer, "response not read in time");
                return;
            }
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            tracing::info!(%peer, "no request in time");
        } else {
            tracing::info!(%peer, error = %e, "connection failed");
        }
    }
    drop(connection);
    let upgrade = lock(&handover.upgrade).take();
    drop(handover);
    if let Some(upgrade) = upgrade {
        // A task of its own, holding only the WebSocket's future: this one's (the TLS and HTTP
        // states it went through) ends here rather than live as long as the WebSocket.
        if shared.echo {
            // The echo loop's task holds only the WebSocket and its loop: the upgrade (ready
            // by now) is awaited here, in this task, which ends.
            let (websocket, path, _) = upgrade;
            let Some(ws) = opened(peer, websocket, &path).await else {
                return;
            };
            drop(path);
            shared.tasks.spawn(echo_running(peer, ws));
        } else {
            spawn_websocket(&shared, peer, upgrade, &mut &shared.tasks);
        }
    }
}

/// An HTTP/2 connection: its requests are served by hyper, each accepted WebSocket runs on its
/// stream in a task of this connection's own, and the connection ends when hyper is done with it
/// and its WebSockets have ended (so that shutdown finds them).
async fn serve_h2(
    shared: Arc<Shared>,
    stream: MaybeTlsStream,
    peer: SocketAddr,
    opening: OwnedSemaphorePermit,
) {
    // Unbounded, but each entry is an accepted stream (at most `max_concurrent_streams` open),
    // moved into `websockets` as soon as it comes.
    let (streams, mut accepted) = mpsc::unbounded_channel();
    let handover = Arc::new(Handover {
        opening: Mutex::new(Some(opening)),
        upgrade: Mutex::new(None),
        streams: Some(streams),
    });
    let service = service(&shared, &handover, peer);
    let connection = shared.h2.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut websockets = JoinSet::new();
    let mut stopping = false;
    // hyper's HTTP/2 server has no header read timeout: a connection that sends no request
    // gives its place among those opening back after `HEAD_TIMEOUT`, by closing.
    let first_request = tokio::time::sleep(HEAD_TIMEOUT);
    let mut first_request = std::pin::pin!(first_request);
    let idle = tokio::time::sleep(HTTP_LIFETIME);
    let mut idle = std::pin::pin!(idle);
    loop {
        let opening = lock(&handover.opening).is_some();
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::info!(%peer, error = %e, "HTTP/2 connection failed");
                }
                break;
            }
            Some(upgrade) = accepted.recv() => {
                spawn_websocket(&shared, peer, upgrade, &mut websockets);
            }
            Some(_) = websockets.join_next(), if !websockets.is_empty() => {}
            () = shared.shutdown.triggered(), if !stopping => {
                // GOAWAY: no new streams; the WebSockets drain and close with 1001 on the same
                // signal.
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = first_request.as_mut(), if opening => {
                tracing::info!(%peer, "no request in time");
                return;
            }
            () = idle.as_mut(), if !stopping => {
                if websockets.is_empty() {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                } else {
                    idle.as_mut().reset(tokio::time::Instant::now() + HTTP_LIFETIME);
                }
            }
        }
    }
    // The connection is gone, and its streams with it: the WebSockets end on their own.
    while websockets.join_next().await.is_some() {}
}

/// Runs an accepted upgrade (HTTP/1.1 or HTTP/2) in a task of `tasks`: the WebSocket once the
/// response is sent, in the echo server or its room. The task holds what the log lines need and
/// the loop, on the heap at its own size (the echo loop's, or the room member's).
fn spawn_websocket(shared: &Shared, peer: SocketAddr, upgrade: Upgrade, tasks: &mut impl Spawn) {
    let (websocket, path, join) = upgrade;
    if shared.echo {
        tasks.spawn(echo_task(peer, websocket, path));
    } else if join.since.is_some() {
        // A member that asked for ids: a task of its own kind, its room and options on the
        // heap, so that the others keep just the one string of `Joining`.
        let resuming = Box::new((
            room_name(&path).unwrap_or("lobby").to_owned(),
            join.options(),
        ));
        drop(path);
        tasks.spawn(resuming_member_task(
            shared.rooms.clone(),
            peer,
            websocket,
            resuming,
        ));
    } else {
        // Only `/rooms/NAME` is accepted without `--echo`.
        let joining = Joining::new(room_name(&path).unwrap_or("lobby"), join.name.as_deref());
        drop(path);
        tasks.spawn(member_task(shared.rooms.clone(), peer, websocket, joining));
    }
}

/// An echo connection's loop, then its log line: the loop's future and the peer's address,
/// no more (`map`, not an `async` block, which would keep the loop's future twice). The address
/// is boxed: 8 bytes rather than 32 take the task under 1,024 bytes (tokio rounds a task up to
/// 128).
fn echo_running<S>(peer: SocketAddr, ws: WebSocket<S>) -> impl Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = Box::new(peer);
    echo(ws).map(move |result| disconnected(*peer, result))
}

/// The WebSocket an accepted upgrade resolves to ([`PendingUpgrade`]; another future in tests).
trait Opening: Future<Output = Result<Ws, sockeye::Error>> + Send + 'static {}

impl<F: Future<Output = Result<Ws, sockeye::Error>> + Send + 'static> Opening for F {}

/// An echo connection's task: the upgrade, then the echo loop. Not an `async fn`, which would
/// keep its arguments twice (see [`echo`]).
#[allow(clippy::manual_async_fn)]
fn echo_task(
    peer: SocketAddr,
    websocket: impl Opening,
    path: String,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let Some(ws) = opened(peer, websocket, &path).await else {
            return;
        };
        drop(path);
        disconnected(peer, echo(ws).await);
    }
}

/// A room member's task: the upgrade, then the relay's loop. The relay drains a member at
/// shutdown (it watches the server's `Shutdown`).
#[allow(clippy::manual_async_fn)]
fn member_task(
    rooms: Relay,
    peer: SocketAddr,
    websocket: impl Opening,
    joining: Joining,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let Some(ws) = opened(peer, websocket, RoomPath(joining.get().0)).await else {
            return;
        };
        let served = {
            let (room, name) = joining.get();
            rooms.serve_named_until(ws, room, name, std::future::pending())
        }
        .await;
        disconnected(peer, served);
    }
}

/// A room member's task for a member that asked for ids (`?since=`): as [`member_task`], with
/// its room and [`JoinOptions`].
#[allow(clippy::manual_async_fn, clippy::type_complexity)]
fn resuming_member_task(
    rooms: Relay,
    peer: SocketAddr,
    websocket: impl Opening,
    joining: Box<(String, JoinOptions)>,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let Some(ws) = opened(peer, websocket, RoomPath(&joining.0)).await else {
            return;
        };
        let (room, options) = &*joining;
        let served = rooms
            .serve_with(ws, room, options, std::future::pending())
            .await;
        disconnected(peer, served);
    }
}

/// The room a member joins, and its display name: one pointer in the member's task (which
/// keeps them for its whole life) rather than two `String`s, and one string on the heap: the
/// room's name, then a line feed and the display name if there is one (a room's name has no
/// line feed).
#[allow(clippy::box_collection)] // 8 bytes in the task, not 24: the point.
struct Joining(Box<String>);

impl Joining {
    fn new(room: &str, name: Option<&str>) -> Self {
        let mut text = room.to_owned();
        if let Some(name) = name {
            text.push('\n');
            text.push_str(name);
        }
        Self(Box::new(text))
    }

    /// The room, and the display name.
    fn get(&self) -> (&str, Option<&str>) {
        match self.0.split_once('\n') {
            Some((room, name)) => (room, Some(name)),
            None => (&self.0, None),
        }
    }
}

/// A room's path, for the log line: `/rooms/NAME`.
struct RoomPath<'a>(&'a str);

impl std::fmt::Display for RoomPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/rooms/{}", self.0)
    }
}

/// Where a WebSocket's task goes: the server's tasks (HTTP/1.1), or its HTTP/2 connection's.
trait Spawn {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static);
}

impl Spawn for &TaskTracker {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        drop(TaskTracker::spawn(self, task));
    }
}

impl Spawn for JoinSet<()> {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        // The inherent method, not this one.
        #[allow(clippy::use_self)]
        drop(JoinSet::spawn(self, task));
    }
}

/// The WebSocket of an accepted upgrade, once the response is sent; logged. Its own future,
/// gone when it is done: a local that the log line borrows would otherwise stay in the task's
/// future for the connection's whole life (a second WebSocket's worth). Take the WebSocket
/// out with `let Some(ws) = ... else`: an `Option` local matched in place stays in the
/// future too.
async fn opened(
    peer: SocketAddr,
    websocket: impl Opening,
    path: impl std::fmt::Display + Send,
) -> Option<Ws> {
    match websocket.await {
        Ok(ws) => {
            tracing::info!(%peer, %path, extension = ?ws.extension(), "connected");
            Some(ws)
        }
        Err(e) => {
            tracing::info!(%peer, error = %e, "handshake failed");
            None
        }
    }
}

fn disconnected(peer: SocketAddr, result: Result<(), sockeye::Error>) {
    match result {
        Ok(()) => tracing::info!(%peer, "disconnected"),
        Err(e) => tracing::info!(%peer, error = %e, "disconnected"),
    }
}

/// An accepted upgrade, its path, and how the member joins (`?name=`, `?since=`).
type Upgrade = (PendingUpgrade, String, Join);

/// How a member joins, from its room URL's query.
#[derive(Debug, Default)]
struct Join {
    /// Its display name (`name=`).
    name: Option<String>,
    /// Ids and what it missed (`since=`).
    since: Option<Since>,
}

impl Join {
    fn options(self) -> JoinOptions {
        let mut options = JoinOptions::new();
        if let Some(name) = self.name {
            options = options.name(name);
        }
        if let Some(since) = self.since {
            options = options.since(since);
        }
        options
    }
}

/// What a connection's requests hand back to the task that serves it.
struct Handover {
    /// The connection's place among those opening, given back at its first request head.
    opening: Mutex<Option<OwnedSemaphorePermit>>,
    /// HTTP/1.1: the accepted upgrade, to run once hyper lets the connection go.
    upgrade: Mutex<Option<Upgrade>>,
    /// HTTP/2: where accepted WebSockets go, to run on their streams at once.
    streams: Option<mpsc::UnboundedSender<Upgrade>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    /// The demo page.
    Page,
    /// No icon: 204.
    Favicon,
    /// A WebSocket: the library answers, 101 or why not (426 to a plain GET).
    WebSocket,
    /// A page asked for with a method other than GET or HEAD.
    MethodNotAllowed,
    /// Anything else.
    NotFound,
}

/// Routes a request: every upgrade goes to the library (whose `route` answers 404 for a path
/// with no room), and so does a plain request for a WebSocket route (every path for `--echo`,
/// `/rooms/NAME` otherwise) that is not a page.
fn resource(echo: bool, method: &Method, path: &str, upgrade: bool) -> Resource {
    if upgrade {
        return Resource::WebSocket;
    }
    let page = match path {
        "/" | "/index.html" => Resource::Page,
        "/favicon.ico" => Resource::Favicon,
        _ if echo || room_name(path).is_some() => return Resource::WebSocket,
        _ => return Resource::NotFound,
    };
    if method == Method::GET || method == Method::HEAD {
        page
    } else {
        Resource::MethodNotAllowed
    }
}

/// Answers one request (hyper writes the response, and the body of none to a HEAD).
fn answer(
    shared: &Shared,
    handover: &Handover,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // A request head is in: the connection is no longer opening.
    drop(lock(&handover.opening).take());
    let upgrade = is_upgrade_request(&request);
    match resource(shared.echo, request.method(), request.uri().path(), upgrade) {
        Resource::Page => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            if shared.echo { ECHO_PAGE } else { PAGE },
        ),
        Resource::Favicon => text(StatusCode::NO_CONTENT, "text/plain", ""),
        Resource::NotFound => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        Resource::MethodNotAllowed => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "use GET or HEAD\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        Resource::WebSocket if !shared.echo && join_options(request.uri().query()).is_none() => {
            text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "since: not a message id (MS-SEQ)\n",
            )
        }
        Resource::WebSocket => match shared.server.upgrade(&mut request) {
            Ok((response, websocket)) => {
                let path = request.uri().path().to_owned();
                let join = join_options(request.uri().query()).unwrap_or_default();
                match &handover.streams {
                    Some(streams) => {
                        let _ = streams.send((websocket, path, join));
                    }
                    None => *lock(&handover.upgrade) = Some((websocket, path, join)),
                }
                response
            }
            Err(refused) => {
                tracing::info!(%peer, error = %refused.error(), "handshake failed");
                refused.into_response()
            }
        },
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

type Ws = WebSocket<sockeye::hyper::Upgraded>;

/// Echoes every message until the connection ends. At shutdown the WebSocket drains itself
/// (it watches the server's [`Shutdown`]): its sends fail from the signal on, and it is read
/// until its close handshake is over.
///
/// Not an `async fn`: one keeps its argument twice in its future (the argument, and the local
/// it is moved into), a second WebSocket's worth of memory for the connection's whole life.
#[allow(clippy::manual_async_fn)]
fn echo<S>(mut ws: WebSocket<S>) -> impl Future<Output = Result<(), sockeye::Error>> + Send
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async move {
        // Not `while let`: its scrutinee would stay in the future across the `send`.
        loop {
            let Some(message) = ws.next().await else {
                return Ok(());
            };
            let message = message?;
            if message.is_data() {
                // Queued, and written by the next `next` before it waits for input, with the
                // answers to the rest of the same read, as `send` would: `Sink::feed` holds the
                // message once (`send`'s future is 200 bytes, kept in this task for its whole
                // life). Refused once the shutdown began; reading goes on until the end.
                let _ = futures_util::SinkExt::feed(&mut ws, message).await;
            }
        }
    }
}

/// The `name` of a room URL's query (`/rooms/lobby?name=ann`): a member that gives one takes
/// part in presence (the relay lists it and tells it who joins and leaves).
fn display_name(query: Option<&str>) -> Option<String> {
    let query = query?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "name").then(|| percent_decode(value))
    })
}

/// How a member joins, from its room URL's query: `name=` (presence) and `since=` (history:
/// empty for the ids of the messages from now on, or the id of the last message seen, for what
/// came after it too); `None` for a `since` that is not an id.
fn join_options(query: Option<&str>) -> Option<Join> {
    let name = display_name(query);
    let since = query.and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == "since").then_some(value)
        })
    });
    let since = match since {
        None => None,
        Some("") => Some(Since::Now),
        Some(id) => Some(Since::After(id.parse().ok()?)),
    };
    Some(Join { name, since })
}

/// `%XX` escapes and `+` decoded, as a browser's `encodeURIComponent` or form encoding writes
/// them; what is not valid UTF-8 afterwards is replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|d| char::from(*d).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a WebSocket's task holds for the connection's life (run with `--nocapture`).
    #[test]
    fn task_sizes() {
        type Pending = std::pin::Pin<Box<dyn Future<Output = Result<Ws, sockeye::Error>> + Send>>;
        assert_eq!(size_of::<Pending>(), size_of::<PendingUpgrade>());
        let pending = || -> Pending { Box::pin(std::future::pending()) };
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let echo = echo_task(peer, pending(), "/".into());
        let member = member_task(Relay::new(), peer, pending(), Joining::new("r", None));
        let resuming = resuming_member_task(
            Relay::new(),
            peer,
            pending(),
            Box::new(("r".into(), JoinOptions::new().since(Since::Now))),
        );
        // The echo loop's task over a stream of no size: add the `WebSocket`'s stream.
        let ws = WebSocket::from_raw(
            tokio::io::empty(),
            sockeye::Role::Server,
            &WebSocketConfig::default(),
            bytes::BytesMut::new(),
        );
        let ws_empty = size_of_val(&ws);
        let running = size_of_val(&echo_running(peer, ws));
        println!(
            "echo task {} (over a stream of no size: {running} once the upgrade is done, the WebSocket {ws_empty}), member task {} (with ids {}), WebSocket {}",
            size_of_val(&echo),
            size_of_val(&member),
            size_of_val(&resuming),
            size_of::<Ws>()
        );
    }

    #[test]
    fn display_names_from_the_query() {
        assert_eq!(display_name(Some("name=ann")).as_deref(), Some("ann"));
        assert_eq!(
            display_name(Some("x=1&name=caf%C3%A9+au+lait")).as_deref(),
            Some("caf\u{e9} au lait")
        );
        assert_eq!(display_name(Some("name=100%")).as_deref(), Some("100%"));
        assert_eq!(display_name(Some("other=1")), None);
        assert_eq!(display_name(None), None);
    }

    #[test]
    fn join_options_from_the_query() {
        let options = |query| join_options(query).map(Join::options);
        assert_eq!(options(None), Some(JoinOptions::new()));
        assert_eq!(
            options(Some("name=ann&since=")),
            Some(JoinOptions::new().name("ann").since(Since::Now))
        );
        assert_eq!(
            options(Some("since=1733-4")),
            Some(JoinOptions::new().since(Since::After("1733-4".parse().unwrap())))
        );
        assert_eq!(
            options(Some("since")),
            Some(JoinOptions::new().since(Since::Now))
        );
        assert_eq!(options(Some("since=x")), None);
    }

    #[test]
    fn joining_keeps_the_room_and_the_display_name() {
        assert_eq!(Joining::new("r", None).get(), ("r", None));
        assert_eq!(Joining::new("r", Some("a\nb")).get(), ("r", Some("a\nb")));
        assert_eq!(Joining::new("r", Some("")).get(), ("r", Some("")));
    }

    #[test]
    fn room_names() {
        assert_eq!(room_name("/rooms/lobby"), Some("lobby"));
        assert_eq!(room_name("/rooms/a-b_c.1"), Some("a-b_c.1"));
        assert_eq!(room_name("/rooms/"), None);
        assert_eq!(room_name("/rooms/a/b"), None);
        assert_eq!(room_name("/other"), None);
    }

    #[test]
    fn routes_requests() {
        use Resource::{Favicon, MethodNotAllowed, NotFound, Page, WebSocket};
        let get = &Method::GET;
        assert_eq!(resource(false, get, "/", false), Page);
        assert_eq!(resource(false, &Method::HEAD, "/index.html", false), Page);
        assert_eq!(resource(false, get, "/favicon.ico", false), Favicon);
        assert_eq!(resource(false, &Method::POST, "/", false), MethodNotAllowed);
        assert_eq!(resource(false, get, "/other", false), NotFound);
        assert_eq!(resource(false, get, "/rooms/bad/name", false), NotFound);
        // A plain request for a WebSocket route, and every upgrade, go to the library.
        assert_eq!(resource(false, get, "/rooms/x", false), WebSocket);
        assert_eq!(resource(false, &Method::POST, "/rooms/x", false), WebSocket);
        assert_eq!(resource(false, get, "/other", true), WebSocket);
        assert_eq!(resource(false, get, "/", true), WebSocket);
        assert_eq!(resource(true, get, "/any/path", false), WebSocket);
        assert_eq!(resource(true, get, "/", false), Page);
    }
}
