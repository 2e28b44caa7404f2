//! The server: [`accept`] and [`ServerBuilder`], with a callback that decides on each request.

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderMap, Request, StatusCode};
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::handshake::{RequestParser, UpgradeRequest, reject_response};
use sockeye_proto::{Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::{Error, Kind, Timeout};
use crate::socket::WebSocket;
use crate::stream::set_nodelay;

/// Accepts a WebSocket connection on `stream` with the default settings: any path, any Origin,
/// no subprotocol.
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

/// What the server's callback decides about a request.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Accept {
    protocol: Option<String>,
    headers: HeaderMap,
}

impl Accept {
    /// Accept with no subprotocol and no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Select a subprotocol; it must be one the client offered.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Add headers to the 101 response (cookies, say).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }
}

/// A refusal: the HTTP response sent instead of 101.
#[derive(Debug, Clone)]
#[must_use]
pub struct Reject(Box<Refusal>);

/// Boxed so that `Result<Accept, Reject>` stays small for the callback.
#[derive(Debug, Clone)]
struct Refusal {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reject {
    /// Refuse with `status` (403 for a refused Origin, 401 for missing credentials, 404 for an
    /// unknown path...) and a short body naming the reason.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self(Box::new(Refusal {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }))
    }

    /// Add headers to the response (`WWW-Authenticate`, say).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.0.headers = headers;
        self
    }
}

type Decide = dyn Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync;

/// Accepts connections with chosen settings and a decision per request.
#[derive(Clone, Default)]
#[must_use]
pub struct ServerBuilder {
    config: WebSocketConfig,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    decide: Option<Arc<Decide>>,
}

impl ServerBuilder {
    /// Default settings, accepting every valid request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits, timeouts and buffer sizes.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Subprotocols this server speaks, in order of preference; when no callback picks one, the
    /// first of these the client offered is selected.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts permessage-deflate (RFC 7692) when a client offers it, with these parameters.
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// Decides on each valid request: its path, query, headers (Origin, cookies, credentials)
    /// and offered subprotocols are in the [`UpgradeRequest`].
    pub fn on_request<F>(mut self, decide: F) -> Self
    where
        F: Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync + 'static,
    {
        self.decide = Some(Arc::new(decide));
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
        stream: S,
    ) -> Result<(WebSocket<S>, Request<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        set_nodelay(&stream, self.config.nodelay);
        tokio::time::timeout(self.config.handshake_timeout, self.handshake(stream))
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    async fn handshake<S>(&self, mut stream: S) -> Result<(WebSocket<S>, Request<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::with_capacity(1024);
        let request = loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the opening handshake",
                )
                .into());
            }
            match parser.parse(&mut buf, &self.config.proto) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(e) => {
                    // Section 4.2.1: an invalid request gets an HTTP error, 426 with the
                    // version we speak for a version we do not.
                    let mut out = Vec::new();
                    e.write_response(&mut out);
                    let _ = stream.write_all(&out).await;
                    let _ = stream.shutdown().await;
                    return Err(e.into());
                }
            }
        };
        let decision = match &self.decide {
            Some(decide) => decide(&request),
            None => Ok(Accept::new()),
        };
        let accept = match decision {
            Ok(accept) => accept,
            Err(Reject(reject)) => {
                let mut out = Vec::new();
                reject_response(reject.status, &reject.headers, &reject.body, &mut out)?;
                stream.write_all(&out).await?;
                let _ = stream.shutdown().await;
                return Err(Error::new(Kind::Refused {
                    status: reject.status,
                    headers: reject.headers,
                    body: reject.body.into(),
                }));
            }
        };
        let protocol = accept.protocol.or_else(|| {
            self.protocols
                .iter()
                .find(|ours| request.protocols().iter().any(|offered| offered == *ours))
                .cloned()
        });
        let negotiated = self
            .deflate
            .as_ref()
            .and_then(|deflate| deflate.accept_offers(request.extensions()));
        let answers: Vec<_> = negotiated
            .iter()
            .map(|(answer, _)| answer.clone())
            .collect();
        let mut out = Vec::with_capacity(256);
        request.accept(protocol.as_deref(), &answers, &accept.headers, &mut out)?;
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut conn = Connection::new(Role::Server, self.config.proto.clone(), now());
        if let Some((_, extension)) = negotiated {
            conn = conn.with_extension(Box::new(extension));
        }
        let ws = WebSocket::from_connection(stream, conn, &self.config, buf, protocol);
        Ok((ws, request.into_request()))
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("protocols", &self.protocols)
            .field("deflate", &self.deflate)
            .field("on_request", &self.decide.is_some())
            .finish()
    }
}
