//! The server: [`accept`] and [`ServerBuilder`], with a callback that decides on each request.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use sockeye_proto::extension::DeflateConfig;
pub use sockeye_proto::handshake::{Accept, OriginPolicy, Reject};
use sockeye_proto::handshake::{
    Refusal, RefusalReason, RequestParser, ServerAccepted, ServerHandshake, UpgradeRequest,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::admission::{Admission, Progress, STALL_GRACE, Ticket};

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::{Error, Kind, Timeout, eof_in_handshake};
use crate::net::set_nodelay;
use crate::shutdown::Shutdown;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;
#[cfg(feature = "rustls")]
use crate::tls::TlsAcceptor;

/// The memory the default handshake budget is sized for: 64 MiB.
pub const DEFAULT_HANDSHAKE_MEMORY: usize = 64 << 20;

/// What one handshake in progress may hold at most, besides its request head: the connection's
/// task, its entry in the budget, the stream's user-space state (kernel buffers not counted).
pub const HANDSHAKE_OVERHEAD: usize = 2 << 10;

/// The default bound on opening handshakes in progress at once, per [`ServerBuilder`]:
/// [`DEFAULT_HANDSHAKE_MEMORY`] divided by what one may hold (the default 16 KiB request head
/// limit plus [`HANDSHAKE_OVERHEAD`]), 3,640.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize =
    DEFAULT_HANDSHAKE_MEMORY / ((16 << 10) + HANDSHAKE_OVERHEAD);

/// The default minimum rate of request bytes, per second, of a handshake still reading its
/// request one second after it started; below it, the handshake is stalled and makes room for
/// a newcomer when the budget is full.
pub const DEFAULT_MIN_HANDSHAKE_RATE: usize = 128;

/// How long a connection turned away for the handshake bound may take to read its 503.
const BUSY_LINGER: Duration = Duration::from_secs(1);
/// How much of a turned-away client's request is read (and dropped) before closing.
const BUSY_DRAIN: usize = 16 << 10;

/// Accepts a WebSocket connection on `stream` with the default settings: any path, the default
/// [`OriginPolicy`] (browsers only from the server's own host), no subprotocol.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let (tcp, _) = listener.accept().await?;
/// let mut ws = sockeye::accept(tcp).await?;
/// while let Some(message) = ws.next().await {
///     let message = message?;
///     if message.is_data() {
///         ws.send(message).await?;
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// A request that is not a valid WebSocket upgrade (it was answered with the status of
/// [`Error::status`]), a transport error, or the handshake timeout.
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    ServerBuilder::new().accept(stream).await
}

/// Accepts connections with chosen settings and a decision per request. Clones share the
/// bound on concurrent handshakes.
///
/// The decision on each request is the protocol core's ([`ServerHandshake`]); every front door
/// here ([`accept`](Self::accept), [`accept_tcp`](Self::accept_tcp),
/// [`accept_blocking`](Self::accept_blocking), `upgrade` for hyper and the axum extractor) reads
/// the request, asks the core once, and writes its answer.
#[derive(Clone)]
#[must_use]
pub struct ServerBuilder {
    config: WebSocketConfig,
    handshake: ServerHandshake,
    #[cfg(feature = "rustls")]
    tls: Option<TlsAcceptor>,
    handshakes: Arc<Admission>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        let config = WebSocketConfig::default();
        Self {
            handshake: ServerHandshake::new().config(config.proto.clone()),
            config,
            #[cfg(feature = "rustls")]
            tls: None,
            handshakes: Arc::new(Admission::new(
                DEFAULT_MAX_CONCURRENT_HANDSHAKES,
                default_per_address(DEFAULT_MAX_CONCURRENT_HANDSHAKES),
                DEFAULT_MIN_HANDSHAKE_RATE,
            )),
        }
    }
}

impl ServerBuilder {
    /// Default settings: every valid request accepted that the default [`OriginPolicy`]
    /// allows, at most [`DEFAULT_MAX_CONCURRENT_HANDSHAKES`] handshakes at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which `Origin` headers to accept; the others get 403.
    pub fn origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.handshake = self.handshake.origin_policy(policy);
        self
    }

    /// TLS for [`accept_tcp`](Self::accept_tcp): connections are `wss://`.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, tls: TlsAcceptor) -> Self {
        self.tls = Some(tls);
        self.served_over_tls(true)
    }

    /// Declares whether browsers reach this server over TLS, for the same-host
    /// [`OriginPolicy`]: `true` behind a proxy that terminates TLS, `false` for a plain server
    /// that wants `https` pages refused. [`tls`](Self::tls) sets `true`. Unset, an Origin's own
    /// scheme is taken at its word.
    pub fn served_over_tls(mut self, secure: bool) -> Self {
        self.handshake = self.handshake.served_over_tls(secure);
        self
    }

    /// At most `max` opening handshakes (TLS included) at once, across this builder and its
    /// clones (the free [`accept`] function has no such bound). Default
    /// [`DEFAULT_MAX_CONCURRENT_HANDSHAKES`], sized by memory; see also
    /// [`handshake_memory`](Self::handshake_memory). At least 1. Resets the share of one
    /// address to its default, a quarter of `max` (all of it up to 32).
    ///
    /// When the budget is full, a newcomer takes the place of the worst *stalled* handshake:
    /// one still reading its request a second after it started whose average rate of request
    /// bytes is below the minimum ([`min_handshake_rate`](Self::min_handshake_rate)), the
    /// slowest first, the oldest among equals; that one is closed at once. So silent
    /// connections, partial heads and one-byte-a-second senders (slowloris) cannot keep others
    /// out. Only when no handshake is stalled is the newcomer answered 503 (plain connections;
    /// TLS ones are closed) and dropped within a second. The same holds within the share of one
    /// address ([`max_handshakes_per_address`](Self::max_handshakes_per_address)), so that one
    /// address cannot take the whole budget. A TLS handshake counts no request bytes yet: past
    /// its first second it is judged stalled.
    pub fn max_concurrent_handshakes(mut self, max: usize) -> Self {
        let max = max.max(1);
        self.handshakes = Arc::new(Admission::new(
            max,
            default_per_address(max),
            self.handshakes.min_rate(),
        ));
        self
    }

    /// Sizes the handshake budget by memory: as many handshakes as `bytes` holds at what one may
    /// hold at most (the request head limit, [`Config`](crate::Config)'s
    /// `max_handshake_bytes`, plus [`HANDSHAKE_OVERHEAD`]). Call it after
    /// [`config`](Self::config). Default [`DEFAULT_HANDSHAKE_MEMORY`].
    pub fn handshake_memory(self, bytes: usize) -> Self {
        let each = self.config.proto.max_handshake_bytes() + HANDSHAKE_OVERHEAD;
        self.max_concurrent_handshakes(bytes / each)
    }

    /// At most `max` opening handshakes at once from one address (an IPv4 address or an IPv6
    /// /64), known for connections accepted with [`accept_tcp`](Self::accept_tcp). Beyond it
    /// the address's worst stalled handshake makes room, or the newcomer is answered 503.
    /// Default a quarter of the budget (all of it for budgets up to 32). Between 1 and the
    /// budget.
    pub fn max_handshakes_per_address(mut self, max: usize) -> Self {
        self.handshakes = Arc::new(Admission::new(
            self.handshakes.max(),
            max,
            self.handshakes.min_rate(),
        ));
        self
    }

    /// The minimum average rate, in request bytes per second, of a handshake still reading its
    /// request one second after it started; below it the handshake is stalled, and makes room
    /// for a newcomer when the budget is full. Default [`DEFAULT_MIN_HANDSHAKE_RATE`].
    pub fn min_handshake_rate(mut self, bytes_per_second: usize) -> Self {
        self.handshakes = Arc::new(Admission::new(
            self.handshakes.max(),
            self.handshakes.per_address(),
            bytes_per_second,
        ));
        self
    }

    /// How many opening handshakes are in progress now, across this builder and its clones.
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshakes.in_progress()
    }

    /// Limits, timeouts and buffer sizes.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.handshake = self.handshake.config(config.proto.clone());
        let shutdown = self.config.shutdown.take();
        self.config = config;
        self.config.shutdown = self.config.shutdown.take().or(shutdown);
        self
    }

    /// Graceful shutdown: every connection this builder (and its clones) accepts from now on
    /// watches `shutdown`, and, once it is [triggered](Shutdown::trigger), writes out what it
    /// had queued, closes with 1001 and ends within the grace period; handshakes that start
    /// after the signal are answered 503. See [`Shutdown`].
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.config.shutdown = Some(shutdown.clone());
        self
    }

    /// Whether a shutdown given to [`shutdown`](Self::shutdown) was triggered.
    fn shutting_down(&self) -> bool {
        self.config
            .shutdown
            .as_ref()
            .is_some_and(Shutdown::is_triggered)
    }

    /// Subprotocols this server speaks, in order of preference; when no callback picks one, the
    /// first of these the client offered is selected.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.handshake = self.handshake.protocols(protocols);
        self
    }

    /// Accepts permessage-deflate (RFC 7692) when a client offers it, with these parameters.
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.handshake = self.handshake.deflate(config);
        self
    }

    /// Decides on each valid request: its path, query, headers (Origin, cookies, credentials)
    /// and offered subprotocols are in the [`UpgradeRequest`].
    pub fn on_request<F>(mut self, decide: F) -> Self
    where
        F: Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync + 'static,
    {
        self.handshake = self.handshake.on_request(decide);
        self
    }

    /// Reads the request on `stream`, answers it, and returns the connection.
    ///
    /// # Errors
    /// As [`accept`]; a refusal by the callback is an error whose [`Error::status`] is the
    /// status sent.
    pub async fn accept<S>(&self, stream: S) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        self.accept_with_request(stream).await.map(|(ws, _)| ws)
    }

    /// As [`accept`](Self::accept), and also returns the request (for its path and headers).
    ///
    /// # Errors
    /// As [`accept`].
    pub async fn accept_with_request<S>(
        &self,
        mut stream: S,
    ) -> Result<(WebSocket<S>, Request<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let Some(ticket) = self.admit(None) else {
            Box::pin(turn_away(&mut stream)).await;
            return Err(Error::new(Kind::Busy));
        };
        set_nodelay(&stream, self.config.nodelay);
        let progress = ticket.progress();
        // Boxed: the handshake's state (the request buffer, the parser) is freed when it ends,
        // rather than sized into the future of a task that holds the connection for its life.
        let handshake = Box::pin(tokio::time::timeout(
            self.config.handshake_timeout,
            self.handshake(stream, progress),
        ));
        unless_evicted(progress, handshake)
            .await
            .ok_or_else(|| Error::new(Kind::Timeout(Timeout::Handshake)))?
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    /// Accepts a TCP connection: the TLS handshake first when [`tls`](Self::tls) is set, then
    /// the WebSocket handshake, both within the handshake timeout.
    ///
    /// # Errors
    /// As [`accept`]; a failed TLS handshake is [`Kind::Tls`].
    pub async fn accept_tcp(&self, tcp: TcpStream) -> Result<WebSocket<MaybeTlsStream>, Error> {
        self.accept_tcp_with_request(tcp).await.map(|(ws, _)| ws)
    }

    /// As [`accept_tcp`](Self::accept_tcp), and also returns the request.
    ///
    /// # Errors
    /// As [`accept_tcp`](Self::accept_tcp).
    pub async fn accept_tcp_with_request(
        &self,
        mut tcp: TcpStream,
    ) -> Result<(WebSocket<MaybeTlsStream>, Request<()>), Error> {
        let address = tcp.peer_addr().ok().map(|a| a.ip());
        let Some(ticket) = self.admit(address) else {
            #[cfg(feature = "rustls")]
            let plain = self.tls.is_none();
            #[cfg(not(feature = "rustls"))]
            let plain = true;
            if plain {
                Box::pin(turn_away(&mut tcp)).await;
            }
            return Err(Error::new(Kind::Busy));
        };
        set_nodelay(&tcp, self.config.nodelay);
        let progress = ticket.progress();
        // Boxed: the TLS and WebSocket handshakes' state (several KiB) is freed when they end,
        // rather than sized into the future of a task that holds the connection for its life.
        unless_evicted(progress, Box::pin(self.handshake_tcp(tcp, progress)))
            .await
            .ok_or_else(|| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    /// The TLS handshake if any, then the WebSocket one, within the handshake timeout.
    async fn handshake_tcp(
        &self,
        tcp: TcpStream,
        progress: &Progress,
    ) -> Result<(WebSocket<MaybeTlsStream>, Request<()>), Error> {
        let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
        #[cfg(not(feature = "rustls"))]
        let stream = MaybeTlsStream::Plain(tcp);
        #[cfg(feature = "rustls")]
        let stream = match &self.tls {
            Some(tls) => {
                let tls = tokio::time::timeout_at(deadline, tls.accept(tcp))
                    .await
                    .map_err(|_| Error::new(Kind::Timeout(Timeout::Tls)))??;
                MaybeTlsStream::ServerTls(Box::new(tls))
            }
            None => MaybeTlsStream::Plain(tcp),
        };
        tokio::time::timeout_at(deadline, self.handshake(stream, progress))
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    #[cfg(feature = "blocking")]
    /// Accepts a WebSocket connection on a blocking stream, as [`accept`](Self::accept) does
    /// on an async one. There is no handshake timeout here: set one on the stream.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_blocking<S: std::io::Read + std::io::Write>(
        &self,
        stream: S,
    ) -> Result<crate::blocking::WebSocket<S>, Error> {
        crate::blocking::accept_with(&self.handshake, stream)
    }

    /// Answers a WebSocket upgrade request that hyper parsed: the core checks it (RFC 6455
    /// section 4.2.1), applies the Origin policy and the `on_request` callback, and picks the
    /// subprotocol and extension. Returns the 101 response for hyper to send and the WebSocket
    /// to await after it; or, refused, the response to send instead.
    ///
    /// `R` is the response body type (`Full<Bytes>`, `String`, axum's `Body`...); a refusal's
    /// body is plain text.
    ///
    /// The connection to take over is taken out of `request`'s extensions whether or not the
    /// upgrade is accepted.
    ///
    /// # Errors
    /// [`Refused`](crate::hyper::Refused) with 400, 403, 405, 426 or 505, or the callback's
    /// status; 500 when hyper offers no connection to take over, or the callback's answer
    /// cannot be sent.
    #[cfg(feature = "hyper")]
    pub fn upgrade<B, R>(
        &self,
        request: &mut Request<B>,
    ) -> Result<(http::Response<R>, crate::hyper::PendingUpgrade), crate::hyper::Refused<R>>
    where
        R: From<String>,
    {
        crate::hyper::upgrade(self, crate::hyper::take_head(request))
    }

    /// A place in the handshake budget for a connection from `address`; `None` when the budget
    /// is full of handshakes that are not stalled, or the server is shutting down.
    fn admit(&self, address: Option<std::net::IpAddr>) -> Option<Ticket> {
        if self.shutting_down() {
            return None;
        }
        self.handshakes.admit(address)
    }

    async fn handshake<S>(
        &self,
        mut stream: S,
        progress: &Progress,
    ) -> Result<(WebSocket<S>, Request<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::with_capacity(1024);
        let outcome = loop {
            let n = stream.read_buf(&mut buf).await?;
            if n == 0 {
                return Err(eof_in_handshake());
            }
            progress.received(n);
            if let Some(outcome) = self.handshake.handle_bytes(&mut parser, &mut buf, now()) {
                break outcome;
            }
        };
        progress.request_read();
        let mut out = Vec::with_capacity(256);
        match outcome {
            Ok(accepted) => {
                accepted.encode(&mut out);
                stream.write_all(&out).await?;
                stream.flush().await?;
                Ok(open(&self.config, stream, accepted, buf))
            }
            Err(refusal) => {
                refusal.encode(&mut out);
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
                Err(refused(refusal))
            }
        }
    }

    /// The core's policy, for the hyper and axum adapters.
    #[cfg(feature = "hyper")]
    pub(crate) fn handshake_policy(&self) -> &ServerHandshake {
        &self.handshake
    }

    /// The settings of the connections it opens.
    #[cfg(feature = "hyper")]
    pub(crate) fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }
}

/// The WebSocket over `stream` once the response accepting it is sent; `buf` holds what
/// arrived after the request.
pub(crate) fn open<S>(
    config: &WebSocketConfig,
    stream: S,
    accepted: ServerAccepted,
    buf: BytesMut,
) -> (WebSocket<S>, Request<()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ServerAccepted {
        connection,
        protocol,
        request,
        ..
    } = accepted;
    let ws = WebSocket::from_connection(stream, connection, config, buf, protocol);
    (ws, request)
}

/// The error that reports a refusal the server sent.
pub(crate) fn refused(refusal: Refusal) -> Error {
    let (response, reason) = refusal.into_parts();
    match reason {
        RefusalReason::Invalid(error) => Error::from(error),
        RefusalReason::Misuse(misuse) => Error::from(misuse),
        // The Origin policy, the callback, the server's own refusals.
        _ => {
            let (parts, body) = response.into_parts();
            Error::new(Kind::Refused {
                status: parts.status,
                headers: parts.headers,
                body: body.into(),
                version: parts.version,
            })
        }
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerBuilder");
        d.field("config", &self.config)
            .field("handshake", &self.handshake);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls.is_some());
        d.field("max_concurrent_handshakes", &self.handshakes.max())
            .field("max_handshakes_per_address", &self.handshakes.per_address())
            .field("min_handshake_rate", &self.handshakes.min_rate())
            .field("handshakes_in_progress", &self.handshakes_in_progress())
            .finish_non_exhaustive()
    }
}

/// The default share of one address in a budget of `max` handshakes.
fn default_per_address(max: usize) -> usize {
    (max / 4).max(max.min(32))
}

/// Runs `work` unless the handshake is evicted first (`None`).
async fn unless_evicted<F: Future>(progress: &Progress, work: F) -> Option<F::Output> {
    let evicted = progress.evicted();
    let mut evicted = std::pin::pin!(evicted);
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if evicted.as_mut().poll(cx).is_ready() {
            tracing::debug!(grace = ?STALL_GRACE, "stalled handshake closed to make room");
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Answers 503 and closes, within [`BUSY_LINGER`].
async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(BUSY_LINGER, async {
        stream.write_all(&busy_response()).await?;
        stream.shutdown().await?;
        // Closing with the request unread would reset the connection, and the client would see
        // the reset rather than the 503: read what it sent (up to a bound) until it closes.
        let mut sink = [0_u8; 2048];
        let mut drained = 0;
        while drained < BUSY_DRAIN {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            drained += n;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// What a server over its handshake limit answers: 503, try again in a second.
fn busy_response() -> Vec<u8> {
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    let mut out = Vec::with_capacity(160);
    Refusal::from(Reject::new(StatusCode::SERVICE_UNAVAILABLE, "").headers(headers))
        .encode(&mut out);
    out
}
