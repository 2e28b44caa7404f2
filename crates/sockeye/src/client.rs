//! The client: [`connect`] and [`ClientBuilder`].

use std::net::SocketAddr;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::extension::deflate::NAME as DEFLATE;
use sockeye_proto::handshake::{ClientAccepted, ClientHandshake, HandshakeError, WsUri};
use sockeye_proto::{Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::{Error, Kind, Timeout};
use crate::proxy::Proxy;
use crate::socket::WebSocket;
use crate::stream::{MaybeTlsStream, set_nodelay};
use crate::tls::TlsConfig;

/// How much of a refusal's body is kept in the error.
const REFUSAL_BODY_PREFIX: usize = 1024;

/// Connects to a `ws://` or `wss://` URL with the default settings: certificates verified
/// against the Mozilla root store, no proxy.
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
    tls: TlsConfig,
    proxy: ProxyChoice,
}

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
            tls: TlsConfig::new(),
            proxy: ProxyChoice::Direct,
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
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Connects through this proxy. For `wss://` the TLS session runs inside the tunnel, end to
    /// end with the server.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxyChoice::Fixed(proxy);
        self
    }

    /// Connects through the proxy the environment names for the URL, if any: see
    /// [`Proxy::from_env`] for `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`.
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy = ProxyChoice::FromEnv;
        self
    }

    /// Opens the transport (through the proxy, with TLS for `wss://`) and performs the
    /// handshake, all within the handshake timeout.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        let uri: WsUri = self.url.parse()?;
        let proxy = match &self.proxy {
            ProxyChoice::Direct => None,
            ProxyChoice::Fixed(proxy) => Some(proxy.clone()),
            ProxyChoice::FromEnv => Proxy::from_env(uri.is_secure(), uri.host(), uri.port())
                .map_err(|e| Error::new(Kind::ProxyUrl(e)))?,
        };
        // One budget for the whole opening, and the error says which stage ran out of it.
        let timeout = self.config.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let expired = |stage| move |_| Error::new(Kind::Timeout(stage));
        let tcp = tokio::time::timeout_at(deadline, async {
            match &proxy {
                Some(proxy) => proxy.connect(uri.host(), uri.port()).await,
                None => open_tcp(uri.host(), uri.port(), Some(timeout)).await,
            }
        })
        .await
        .map_err(expired(Timeout::Connect))??;
        set_nodelay(&tcp, self.config.nodelay);
        let stream = if uri.is_secure() {
            let tls = tokio::time::timeout_at(deadline, self.tls.connect(uri.host(), tcp))
                .await
                .map_err(expired(Timeout::Tls))??;
            MaybeTlsStream::ClientTls(Box::new(tls))
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        tokio::time::timeout_at(deadline, self.handshake(uri, stream))
            .await
            .map_err(expired(Timeout::Handshake))?
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
        self,
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
        Ok((ws, accepted.response))
    }

    /// The handshake's first half, without I/O: the request to send.
    pub(crate) fn begin(&self, uri: WsUri) -> Result<(ClientHandshake, Vec<u8>), Error> {
        let handshake = ClientHandshake::new(uri)
            .map_err(|e| Error::from(std::io::Error::other(e.to_string())))?
            .origin(self.origin.clone())
            .protocols(self.protocols.clone())
            .extensions(self.deflate.iter().map(DeflateConfig::offer).collect())
            .headers(self.headers.clone());
        let mut request = Vec::with_capacity(256);
        handshake.encode_request(&mut request)?;
        Ok((handshake, request))
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

    /// Whether a proxy applies to this URL (set, or from the environment).
    pub(crate) fn proxy_for_blocking(&self) -> Result<bool, Error> {
        Ok(match &self.proxy {
            ProxyChoice::Direct => false,
            ProxyChoice::Fixed(_) => true,
            ProxyChoice::FromEnv => {
                let uri: WsUri = self.url.parse()?;
                Proxy::from_env(uri.is_secure(), uri.host(), uri.port())
                    .map_err(|e| Error::new(Kind::ProxyUrl(e)))?
                    .is_some()
            }
        })
    }

    /// The settings of the connection.
    pub(crate) fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// The URL to connect to.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The TLS settings.
    pub(crate) fn tls_config(&self) -> &TlsConfig {
        &self.tls
    }
}

/// The error for a connection that ended before the handshake did.
pub(crate) fn eof_in_handshake() -> Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed during the opening handshake",
    )
    .into()
}

/// Resolves `host:port`, as [`Kind::Dns`] on failure.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let dns = |source| {
        Error::new(Kind::Dns {
            host: host.to_owned(),
            source,
        })
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(dns)?
        .collect();
    if addrs.is_empty() {
        return Err(dns(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name has no addresses",
        )));
    }
    Ok(addrs)
}

/// Opens TCP to `host:port`, trying each address in turn. With a `budget`, every address but
/// the last gets an equal share of it, so that one that never answers (a black-holed IPv6
/// route, say) leaves time for the others.
pub(crate) async fn open_tcp(
    host: &str,
    port: u16,
    budget: Option<std::time::Duration>,
) -> Result<TcpStream, Error> {
    let addrs = resolve(host, port).await?;
    let count = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
    let share = budget.map(|b| b / count.max(1));
    let mut last = None;
    for (i, addr) in addrs.iter().copied().enumerate() {
        let attempt = TcpStream::connect(addr);
        let result = match share {
            Some(share) if i + 1 < addrs.len() => tokio::time::timeout(share, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer in this address's share of the time",
                    ))
                }),
            _ => attempt.await,
        };
        match result {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(connect_failed(host, last))
}

/// The error for a name none of whose addresses took the connection: refused, another
/// failure (with the last address tried), or a name without addresses.
pub(crate) fn connect_failed(host: &str, last: Option<(SocketAddr, std::io::Error)>) -> Error {
    match last {
        Some((addr, e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Error::new(Kind::ConnectionRefused { addr })
        }
        Some((addr, source)) => Error::new(Kind::Connect { addr, source }),
        None => Error::new(Kind::Dns {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no addresses"),
        }),
    }
}
