//! The client: [`connect`] and [`ClientBuilder`].

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::extension::deflate::NAME as DEFLATE;
use sockeye_proto::handshake::{ClientHandshake, HandshakeError, WsUri};
use sockeye_proto::{Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::{Error, Kind, Timeout};
use crate::socket::WebSocket;
use crate::stream::{MaybeTlsStream, set_nodelay};

/// How much of a refusal's body is kept in the error.
const REFUSAL_BODY_PREFIX: usize = 1024;

/// Connects to a `ws://` URL with the default settings.
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
/// A bad URL, a transport that cannot be reached, a handshake that fails or times out, or a
/// server that answers with another status than 101 ([`Error::status`]).
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

    /// Opens the transport and performs the handshake, within the handshake timeout.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        let uri: WsUri = self.url.parse()?;
        if uri.is_secure() {
            return Err(Error::new(Kind::Unsupported(
                "wss:// needs TLS, which this version of sockeye does not have yet",
            )));
        }
        let timeout = self.config.handshake_timeout;
        let work = async {
            let tcp = TcpStream::connect((uri.host(), uri.port())).await?;
            set_nodelay(&tcp, self.config.nodelay);
            self.handshake(uri, MaybeTlsStream::Plain(tcp)).await
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
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
        let mut handshake = ClientHandshake::new(uri)
            .map_err(|e| Error::from(std::io::Error::other(e.to_string())))?
            .origin(self.origin)
            .protocols(self.protocols)
            .extensions(self.deflate.iter().map(DeflateConfig::offer).collect())
            .headers(self.headers);
        let mut request = Vec::with_capacity(256);
        handshake.encode_request(&mut request)?;
        stream.write_all(&request).await?;
        stream.flush().await?;

        let mut buf = BytesMut::with_capacity(1024);
        let accepted = loop {
            match handshake.handle_response(&mut buf, &self.config.proto) {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => {}
                Err(HandshakeError::UnexpectedStatus { status, headers }) => {
                    // What of the body has arrived helps to tell why (a 401's reason, say).
                    let body = buf.split_to(buf.len().min(REFUSAL_BODY_PREFIX)).freeze();
                    return Err(Error::new(Kind::Refused {
                        status,
                        headers: *headers,
                        body,
                    }));
                }
                Err(e) => return Err(e.into()),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the opening handshake",
                )
                .into());
            }
        };
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
        let ws = WebSocket::from_connection(stream, conn, &self.config, buf, accepted.protocol);
        Ok((ws, accepted.response))
    }
}
