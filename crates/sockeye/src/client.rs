//! The client: [`connect`] and [`ClientBuilder`], async and (feature `blocking`) blocking.

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::extension::deflate::NAME as DEFLATE;
use sockeye_proto::handshake::{ClientAccepted, ClientHandshake, HandshakeError, WsUri};
use sockeye_proto::{Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[cfg(feature = "blocking")]
use crate::blocking::socket as blocking;
use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::{Error, Kind, Timeout, eof_in_handshake};
use crate::net::{self, set_nodelay};
#[cfg(feature = "proxy")]
use crate::proxy::Proxy;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;
#[cfg(feature = "rustls")]
use crate::tls::TlsConfig;
#[cfg(all(feature = "rustls", feature = "blocking"))]
use crate::tls::TlsHandshakeError;

/// How much of a refusal's body is kept in the error.
const REFUSAL_BODY_PREFIX: usize = 1024;

/// Connects to a `ws://` or `wss://` URL with the default settings: certificates verified
/// against the Mozilla root store, no proxy, and for `wss://` HTTP/2 when the server takes
/// WebSocket connections over it, HTTP/1.1 otherwise ([`Http2Policy::Prefer`]).
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// let (mut ws, _response) = sockeye::connect("ws://127.0.0.1:9001/chat").await?;
/// ws.send(sockeye::Message::text("hello")).await?;
/// while let Some(message) = ws.next().await {
///     println!("{:?}", message?);
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// Each its own [`Kind`]: a bad URL, a name that does not resolve ([`Kind::Dns`]), a refused
/// connection ([`Kind::ConnectionRefused`]), a TLS failure ([`Kind::Tls`]: unknown issuer,
/// expired, wrong name), a proxy's refusal ([`Kind::Proxy`]), a handshake that fails or times
/// out, or a server that answers with another status than 101 ([`Kind::Refused`]).
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
    ClientBuilder::new(url).connect().await
}

/// The request head the client sent, as it went on the wire (request line and headers,
/// `Sec-WebSocket-Key` included): in the extensions of the response that
/// [`ClientBuilder::connect`] returns, for logging the whole handshake. The server's reason
/// phrase is there too, as [`ReasonPhrase`](sockeye_proto::handshake::ReasonPhrase).
///
/// Over HTTP/2 it is the extended CONNECT's header list as text, pseudo-headers first
/// (`:method: CONNECT`, `:protocol: websocket`, `:scheme`, `:authority`, `:path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest(pub bytes::Bytes);

/// Which HTTP version may carry a client's WebSocket: HTTP/1.1 (RFC 6455's upgrade) or
/// HTTP/2 (RFC 8441's extended CONNECT, on a stream of an HTTP/2 connection). Set with
/// [`ClientBuilder::http2`]; the default is [`Prefer`](Self::Prefer) for `wss://` URLs and
/// [`Never`](Self::Never) for `ws://`. Whichever is used, the WebSocket is the same type and
/// the handshake's response tells the version ([`Response::version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Http2Policy {
    /// Offer ALPN `h2` and `http/1.1` (for `ws://`, try HTTP/2 with prior knowledge), wait for
    /// the server's SETTINGS, and open the WebSocket as an HTTP/2 stream when they enable the
    /// extended CONNECT (`SETTINGS_ENABLE_CONNECT_PROTOCOL`). Otherwise HTTP/1.1: on the same
    /// connection when the server chose `http/1.1`, on a new connection offering only
    /// `http/1.1` when it chose `h2` without the extended CONNECT (or, for `ws://`, did not
    /// speak HTTP/2). A server that answers the CONNECT with a refusal (403, 404) is not
    /// asked again over HTTP/1.1: its refusal is the error. Needs the `http2` feature, without
    /// which it is [`Never`](Self::Never).
    Prefer,
    /// HTTP/2 or nothing: the same negotiation, and an error for which
    /// [`is_http2_unavailable`](crate::http2::is_http2_unavailable) holds where `Prefer` falls
    /// back (always so without the `http2` feature).
    Require,
    /// HTTP/1.1 only: ALPN offers `http/1.1`, as before HTTP/2 existed.
    Never,
}

/// Builds a client connection: subprotocols, headers, Origin, limits and timeouts.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    url: String,
    config: WebSocketConfig,
    protocols: Vec<String>,
    headers: HeaderMap,
    origin: Option<HeaderValue>,
    deflate: Option<DeflateConfig>,
    #[cfg(feature = "rustls")]
    tls: TlsConfig,
    #[cfg(feature = "proxy")]
    proxy: ProxyChoice,
    /// `None`: the default for the URL's scheme.
    http2: Option<Http2Policy>,
}

#[cfg(feature = "proxy")]
#[derive(Debug, Clone)]
enum ProxyChoice {
    Direct,
    Fixed(Proxy),
    FromEnv,
}

impl ClientBuilder {
    /// A client for `url` (`ws://host[:port]/path?query`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            config: WebSocketConfig::default(),
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            origin: None,
            deflate: None,
            #[cfg(feature = "rustls")]
            tls: TlsConfig::new(),
            #[cfg(feature = "proxy")]
            proxy: ProxyChoice::Direct,
            http2: None,
        }
    }

    /// Limits, timeouts and buffer sizes.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Offers a subprotocol (`Sec-WebSocket-Protocol`); call again to offer more, in order of
    /// preference.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Adds a header to the request (authentication, cookies). The handshake's own headers
    /// cannot be replaced this way.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sends an `Origin` header, as a browser does.
    pub fn origin(mut self, origin: HeaderValue) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Offers permessage-deflate (RFC 7692) with these parameters; the server may decline.
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// The TLS settings for `wss://` (trusted roots, a client certificate).
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Connects through this proxy. For `wss://` the TLS session runs inside the tunnel, end to
    /// end with the server.
    #[cfg(feature = "proxy")]
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxyChoice::Fixed(proxy);
        self
    }

    /// Connects through the proxy the environment names for the URL, if any: see
    /// [`Proxy::from_env`] for `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`.
    #[cfg(feature = "proxy")]
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy = ProxyChoice::FromEnv;
        self
    }

    /// Which HTTP version may carry the WebSocket ([`Http2Policy`]). Default:
    /// [`Prefer`](Http2Policy::Prefer) for `wss://`, [`Never`](Http2Policy::Never) for
    /// `ws://` (HTTP/2 over plain TCP needs prior knowledge, which few servers have). Through a
    /// proxy as directly: TLS runs end to end inside the tunnel, and ALPN with it.
    /// [`connect_on`](Self::connect_on) and the blocking client always speak HTTP/1.1.
    pub fn http2(mut self, policy: Http2Policy) -> Self {
        self.http2 = Some(policy);
        self
    }

    /// The HTTP version policy for `uri`: the one set, or the scheme's default.
    fn http2_policy(&self, uri: &WsUri) -> Http2Policy {
        self.http2.unwrap_or(if uri.is_secure() {
            Http2Policy::Prefer
        } else {
            Http2Policy::Never
        })
    }

    /// Opens the transport (through the proxy, with TLS for `wss://`) and performs the
    /// handshake, all within the handshake timeout: over HTTP/2 or HTTP/1.1 as
    /// [`http2`](Self::http2) says, which the response's [`version`](Response::version) tells.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        let uri: WsUri = self.url.parse()?;
        #[cfg(not(feature = "rustls"))]
        if uri.is_secure() {
            return Err(no_tls());
        }
        // One budget for the whole opening, and the error says which stage ran out of it.
        let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
        match self.http2_policy(&uri) {
            Http2Policy::Never => {}
            // Boxed: the HTTP/2 handshake makes a large future, and the HTTP/1.1 path keeps
            // its size.
            #[cfg(feature = "http2")]
            policy => return Box::pin(crate::http2::connect(self, uri, policy, deadline)).await,
            #[cfg(not(feature = "http2"))]
            Http2Policy::Prefer => {}
            #[cfg(not(feature = "http2"))]
            Http2Policy::Require => return Err(no_http2()),
        }
        self.connect_http1(uri, deadline).await
    }

    /// [`connect`](Self::connect) over HTTP/1.1: ALPN offers `http/1.1` alone.
    pub(crate) async fn connect_http1(
        &self,
        uri: WsUri,
        deadline: tokio::time::Instant,
    ) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        let tcp = self.open_tcp(&uri, deadline).await?;
        #[cfg(feature = "rustls")]
        let stream = if uri.is_secure() {
            let tls = tokio::time::timeout_at(deadline, self.tls.connect(uri.host(), tcp))
                .await
                .map_err(|_| Error::new(Kind::Timeout(Timeout::Tls)))??;
            MaybeTlsStream::ClientTls(Box::new(tls))
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        #[cfg(not(feature = "rustls"))]
        let stream = MaybeTlsStream::Plain(tcp);
        self.handshake_by(uri, stream, deadline).await
    }

    /// The HTTP/1.1 handshake over `stream`, by `deadline`.
    pub(crate) async fn handshake_by(
        &self,
        uri: WsUri,
        stream: MaybeTlsStream,
        deadline: tokio::time::Instant,
    ) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        tokio::time::timeout_at(deadline, self.handshake(uri, stream))
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    /// Opens a WebSocket over HTTP/2 (RFC 8441) on a new connection: see
    /// [`Http2Connection`](crate::http2::Http2Connection) to open several on one.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); an error for which
    /// [`is_http2_unavailable`](crate::http2::is_http2_unavailable) holds when the server does
    /// not take WebSocket connections over HTTP/2.
    #[cfg(feature = "http2")]
    pub async fn connect_http2(
        self,
    ) -> Result<(WebSocket<crate::http2::Http2Stream>, Response<()>), Error> {
        // Boxed: the TLS and HTTP/2 handshakes make large futures.
        let connection = Box::pin(crate::http2::Http2Connection::open(&self)).await?;
        Box::pin(connection.websocket(self)).await
    }

    /// The TCP connection (through the proxy, if any) to the URL's server, by `deadline`.
    pub(crate) async fn open_tcp(
        &self,
        uri: &WsUri,
        deadline: tokio::time::Instant,
    ) -> Result<tokio::net::TcpStream, Error> {
        #[cfg(feature = "proxy")]
        let proxy = self.proxy_for(uri)?;
        let timeout = self.config.handshake_timeout;
        let tcp = tokio::time::timeout_at(deadline, async {
            #[cfg(feature = "proxy")]
            if let Some(proxy) = &proxy {
                return proxy
                    .connect(uri.host(), uri.port())
                    .await
                    .map_err(|error| Error::proxy(proxy, error));
            }
            Ok::<_, Error>(net::connect(uri.host(), uri.port(), Some(timeout)).await?)
        })
        .await
        .map_err(|_| Error::new(Kind::Timeout(Timeout::Connect)))??;
        set_nodelay(&tcp, self.config.nodelay);
        Ok(tcp)
    }

    /// The URL given.
    #[cfg(feature = "http2")]
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The WebSocket settings.
    #[cfg(feature = "http2")]
    pub(crate) fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// The TLS settings.
    #[cfg(feature = "http2")]
    pub(crate) fn tls_config(&self) -> &TlsConfig {
        &self.tls
    }

    /// Connects without an async runtime: the blocking
    /// [`WebSocket`](crate::blocking::WebSocket). DNS (the system resolver), TCP, TLS and the
    /// handshake share the handshake timeout. Proxies are not supported here.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); a proxy set on the builder (or named by the environment,
    /// after [`proxy_from_env`](Self::proxy_from_env)) is refused.
    #[cfg(feature = "blocking")]
    pub fn connect_blocking(
        self,
    ) -> Result<(blocking::WebSocket<blocking::Stream>, Response<()>), Error> {
        use std::io::Write as _;

        let uri: WsUri = self.url.parse()?;
        #[cfg(not(feature = "rustls"))]
        if uri.is_secure() {
            return Err(no_tls());
        }
        #[cfg(feature = "proxy")]
        if self.proxy_for(&uri)?.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the blocking client does not go through proxies",
            )
            .into());
        }
        let deadline = std::time::Instant::now() + self.config.handshake_timeout;
        // A timeout set on the socket for the deadline, as the stage that ran out of it.
        let expired = |stage| {
            move |e: std::io::Error| {
                if net::is_timeout(&e) {
                    Error::new(Kind::Timeout(stage))
                } else {
                    Error::from(e)
                }
            }
        };
        let tcp = net::connect_blocking(uri.host(), uri.port(), deadline)?;
        let _ = tcp.set_nodelay(self.config.nodelay);
        #[cfg(feature = "rustls")]
        let mut stream = if uri.is_secure() {
            let tls = self
                .tls
                .connect_blocking(uri.host(), tcp, deadline)
                .map_err(|e| match e {
                    TlsHandshakeError::Io(e) => expired(Timeout::Tls)(e),
                    e => Error::from(e),
                })?;
            blocking::Stream::Tls(Box::new(tls))
        } else {
            blocking::Stream::Plain(tcp)
        };
        #[cfg(not(feature = "rustls"))]
        let mut stream = blocking::Stream::Plain(tcp);
        let (mut handshake, request) = self.begin(uri)?;
        let timed_out = expired(Timeout::Handshake);
        net::until(stream.tcp(), deadline).map_err(&timed_out)?;
        stream.write_all(&request).map_err(&timed_out)?;
        stream.flush().map_err(&timed_out)?;
        let mut buf = BytesMut::with_capacity(1024);
        let accepted = loop {
            if let Some(accepted) = self.answer(&mut handshake, &mut buf)? {
                break accepted;
            }
            net::until(stream.tcp(), deadline).map_err(&timed_out)?;
            if blocking::read_into(&mut stream, &mut buf).map_err(&timed_out)? == 0 {
                return Err(eof_in_handshake());
            }
        };
        let conn = self.establish(&accepted)?;
        stream.tcp().set_read_timeout(None)?;
        stream.tcp().set_write_timeout(None)?;
        let ws = blocking::WebSocket::client(stream, conn, buf, accepted.protocol);
        let mut response = accepted.response;
        response
            .extensions_mut()
            .insert(SentRequest(request.into()));
        Ok((ws, response))
    }

    /// Performs the handshake over a stream the caller opened (a tunnel, a Unix socket, TLS of
    /// its own), within the handshake timeout. The URL gives the Host header and the path.
    ///
    /// # Errors
    /// As [`connect`], less the transport's.
    pub async fn connect_on<S>(self, stream: S) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let uri: WsUri = self.url.parse()?;
        set_nodelay(&stream, self.config.nodelay);
        let timeout = self.config.handshake_timeout;
        tokio::time::timeout(timeout, self.handshake(uri, stream))
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    async fn handshake<S>(
        &self,
        uri: WsUri,
        mut stream: S,
    ) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut handshake, request) = self.begin(uri)?;
        stream.write_all(&request).await?;
        stream.flush().await?;
        let mut buf = BytesMut::with_capacity(1024);
        let accepted = loop {
            if let Some(accepted) = self.answer(&mut handshake, &mut buf)? {
                break accepted;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(eof_in_handshake());
            }
        };
        let conn = self.establish(&accepted)?;
        let ws = WebSocket::from_connection(stream, conn, &self.config, buf, accepted.protocol);
        let mut response = accepted.response;
        response
            .extensions_mut()
            .insert(SentRequest(request.into()));
        Ok((ws, response))
    }

    /// The handshake's first half, without I/O: the request to send.
    pub(crate) fn begin(&self, uri: WsUri) -> Result<(ClientHandshake, Vec<u8>), Error> {
        let handshake = self.client_handshake(uri)?;
        let mut request = Vec::with_capacity(256);
        handshake.encode_request(&mut request)?;
        Ok((handshake, request))
    }

    /// The core's handshake with this builder's options.
    pub(crate) fn client_handshake(&self, uri: WsUri) -> Result<ClientHandshake, Error> {
        Ok(ClientHandshake::new(uri)
            .map_err(|e| Error::from(std::io::Error::other(e.to_string())))?
            .origin(self.origin.clone())
            .protocols(self.protocols.clone())
            .extensions(self.deflate.iter().map(DeflateConfig::offer).collect())
            .headers(self.headers.clone()))
    }

    /// Reads the server's answer from `buf`: `None` until it is whole.
    pub(crate) fn answer(
        &self,
        handshake: &mut ClientHandshake,
        buf: &mut BytesMut,
    ) -> Result<Option<ClientAccepted>, Error> {
        match handshake.handle_response(buf, &self.config.proto) {
            Ok(accepted) => Ok(accepted),
            Err(HandshakeError::UnexpectedStatus { status, headers }) => {
                // What of the body has arrived helps to tell why (a 401's reason, say).
                let body = buf.split_to(buf.len().min(REFUSAL_BODY_PREFIX)).freeze();
                Err(Error::new(Kind::Refused {
                    status,
                    headers: *headers,
                    body,
                    version: http::Version::HTTP_11,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The handshake's second half, without I/O: the connection the answer agreed to.
    pub(crate) fn establish(&self, accepted: &ClientAccepted) -> Result<Connection, Error> {
        let mut conn = Connection::new(Role::Client, self.config.proto.clone(), now());
        // The handshake checked that every extension in the answer was offered; ours is the
        // only one we offer.
        if let (Some(deflate), Some(answer)) = (
            &self.deflate,
            accepted.extensions.iter().find(|e| e.is_named(DEFLATE)),
        ) {
            // Section 4.1 of RFC 6455: an answer we cannot accept fails the connection.
            let extension = deflate
                .accept_response(answer)
                .map_err(|e| Error::new(Kind::Negotiation(e)))?;
            conn = conn.with_extension(Box::new(extension));
        }
        Ok(conn)
    }

    /// The proxy for this URL: the one set, or the environment's.
    #[cfg(feature = "proxy")]
    fn proxy_for(&self, uri: &WsUri) -> Result<Option<Proxy>, Error> {
        Ok(match &self.proxy {
            ProxyChoice::Direct => None,
            ProxyChoice::Fixed(proxy) => Some(proxy.clone()),
            ProxyChoice::FromEnv => Proxy::from_env(uri.is_secure(), uri.host(), uri.port())?,
        })
    }
}

/// The error for [`Http2Policy::Require`] without HTTP/2 support.
#[cfg(not(feature = "http2"))]
fn no_http2() -> Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "HTTP/2 unavailable: Http2Policy::Require needs sockeye's `http2` feature",
    )
    .into()
}

/// The error for a `wss://` URL without TLS support.
#[cfg(not(feature = "rustls"))]
fn no_tls() -> Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "wss:// needs sockeye's `rustls` feature",
    )
    .into()
}
