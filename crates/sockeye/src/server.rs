//! The server: [`accept`] and [`ServerBuilder`], with a callback that decides on each request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, Request, StatusCode, header};
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::handshake::{RequestParser, UpgradeRequest, reject_response};
use sockeye_proto::{Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::{Error, Kind, Timeout};
use crate::net::set_nodelay;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;
#[cfg(feature = "rustls")]
use crate::tls::TlsAcceptor;

/// The default bound on opening handshakes in progress at once, per [`ServerBuilder`].
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// How long a connection turned away for the handshake bound may take to read its 503.
const BUSY_LINGER: Duration = Duration::from_secs(1);
/// How much of a turned-away client's request is read (and dropped) before closing.
const BUSY_DRAIN: usize = 16 << 10;

/// What a server over its handshake limit answers.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";

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
type CheckOrigin = dyn Fn(&str, &UpgradeRequest) -> bool + Send + Sync;

/// Which `Origin` a server accepts, against cross-site WebSocket hijacking: a page on another
/// site opening a WebSocket to this server with the visitor's cookies (RFC 6455 section 10.2).
/// Browsers always send `Origin`; other clients usually send none. A refused Origin is
/// answered with 403.
///
/// The default is [`same_host`](Self::same_host) with requests without `Origin` allowed.
///
/// Same-host trusts the `Host` header, which a DNS-rebinding page controls as well as its
/// Origin: a server on a private address that must not be reached from any site should also
/// check `Host` against its own names (in [`ServerBuilder::on_request`]). Behind a reverse proxy
/// that rewrites `Host`, use an [`allow`](Self::allow) list.
#[derive(Clone)]
#[must_use]
pub struct OriginPolicy {
    rule: OriginRule,
    allow_missing: bool,
}

#[derive(Clone)]
enum OriginRule {
    Any,
    /// The request's own host, and these origins besides (normalised).
    SameHost(Vec<String>),
    List(Vec<String>),
    Custom(Arc<CheckOrigin>),
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::same_host()
    }
}

impl OriginPolicy {
    /// Any Origin: for servers that authenticate every connection without cookies.
    pub fn any() -> Self {
        Self {
            rule: OriginRule::Any,
            allow_missing: true,
        }
    }

    /// An Origin whose host and port are the request's `Host` (the page came from this server),
    /// and whose scheme is `https` when the server is reached over TLS
    /// ([`ServerBuilder::tls`] or [`ServerBuilder::served_over_tls`]) and `http` when it is
    /// known not to be.
    pub fn same_host() -> Self {
        Self {
            rule: OriginRule::SameHost(Vec::new()),
            allow_missing: true,
        }
    }

    /// [`same_host`](Self::same_host), and these origins besides (compared as
    /// [`allow`](Self::allow) compares them): for a server whose pages are also served from
    /// elsewhere.
    pub fn same_host_or<I, O>(origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        Self {
            rule: OriginRule::SameHost(normalized(origins)),
            allow_missing: true,
        }
    }

    /// Only these origins (`https://app.example`, `http://localhost:3000`). Both sides are
    /// normalised before comparing: ASCII case, a default port spelled out, a trailing `/`.
    pub fn allow<I, O>(origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        Self {
            rule: OriginRule::List(normalized(origins)),
            allow_missing: true,
        }
    }

    /// The callback decides, given the Origin and the request.
    pub fn custom<F>(check: F) -> Self
    where
        F: Fn(&str, &UpgradeRequest) -> bool + Send + Sync + 'static,
    {
        Self {
            rule: OriginRule::Custom(Arc::new(check)),
            allow_missing: true,
        }
    }

    /// Whether a request without `Origin` (not from a browser) is allowed; yes by default.
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Whether the policy accepts `request`, not knowing whether it came over TLS.
    pub fn allows(&self, request: &UpgradeRequest) -> bool {
        self.allows_over(request, None)
    }

    /// Whether the policy accepts `request`, which came over TLS if `secure` says so
    /// (`None`: not known).
    pub fn allows_over(&self, request: &UpgradeRequest, secure: Option<bool>) -> bool {
        let Some(origin) = request.origin() else {
            return self.allow_missing;
        };
        // A header that is not text (or the opaque origin "null") matches nothing.
        let Ok(origin) = origin.to_str() else {
            return matches!(self.rule, OriginRule::Any);
        };
        let origin = origin.trim();
        let listed = |list: &[String]| list.contains(&normalized_one(origin));
        match &self.rule {
            OriginRule::Any => true,
            OriginRule::SameHost(also) => {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .is_some_and(|host| same_host(origin, host, secure))
                    || (!also.is_empty() && listed(also))
            }
            OriginRule::List(list) => listed(list),
            OriginRule::Custom(check) => check(origin, request),
        }
    }
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match &self.rule {
            OriginRule::Any => "any".to_owned(),
            OriginRule::SameHost(also) if also.is_empty() => "same host".to_owned(),
            OriginRule::SameHost(also) => format!("same host or {also:?}"),
            OriginRule::List(list) => format!("{list:?}"),
            OriginRule::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("OriginPolicy")
            .field("rule", &rule)
            .field("allow_missing", &self.allow_missing)
            .finish()
    }
}

fn normalized<I, O>(origins: I) -> Vec<String>
where
    I: IntoIterator<Item = O>,
    O: Into<String>,
{
    origins
        .into_iter()
        .map(|o| normalized_one(&o.into()))
        .collect()
}

/// An origin as the lists keep it: normalised when it is an http(s) or ws(s) origin, else
/// lower-cased as it is.
fn normalized_one(origin: &str) -> String {
    normalize_origin(origin).unwrap_or_else(|| origin.to_ascii_lowercase())
}

/// `scheme://host[:port]` in lower case, without a default port or a trailing `/`; `None` for
/// what is not an http(s) or ws(s) origin.
fn normalize_origin(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = default_port(&scheme)?;
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_host_port(authority);
    let port = match port {
        Some(p) => p.parse::<u16>().ok()?,
        None => default_port,
    };
    let host = host.to_ascii_lowercase();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host and port of `host` (`host[:port]`,
/// the request's Host header), with an `https` scheme when `secure` is known true and `http`
/// when known false.
fn same_host(origin: &str, host: &str, secure: Option<bool>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let origin_secure = match scheme.as_str() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        _ => return false,
    };
    if secure.is_some_and(|secure| secure != origin_secure) {
        return false;
    }
    let server_secure = secure.unwrap_or(origin_secure);
    let port_of = |port: Option<&str>, secure: bool| match port {
        Some(p) => p.parse::<u16>().ok(),
        None => Some(if secure { 443 } else { 80 }),
    };
    let (origin_host, origin_port) = split_host_port(authority);
    let (host_host, host_port) = split_host_port(host.trim());
    let origin_port = port_of(origin_port, origin_secure);
    // The Host header leaves out the port when it is the default of the server's scheme.
    let host_port = port_of(host_port, server_secure);
    !origin_host.is_empty()
        && origin_host.eq_ignore_ascii_case(host_host)
        && origin_port.is_some()
        && origin_port == host_port
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.split_once(']') {
            Some((host, rest)) => (host.get(1..).map_or(host, |h| h), rest.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// Accepts connections with chosen settings and a decision per request. Clones share the
/// bound on concurrent handshakes.
#[derive(Clone)]
#[must_use]
pub struct ServerBuilder {
    config: WebSocketConfig,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    decide: Option<Arc<Decide>>,
    origin: OriginPolicy,
    #[cfg(feature = "rustls")]
    tls: Option<TlsAcceptor>,
    secure: Option<bool>,
    handshakes: Arc<Semaphore>,
    max_handshakes: usize,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            config: WebSocketConfig::default(),
            protocols: Vec::new(),
            deflate: None,
            decide: None,
            origin: OriginPolicy::default(),
            #[cfg(feature = "rustls")]
            tls: None,
            secure: None,
            handshakes: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENT_HANDSHAKES)),
            max_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
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
        self.origin = policy;
        self
    }

    /// TLS for [`accept_tcp`](Self::accept_tcp): connections are `wss://`.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, tls: TlsAcceptor) -> Self {
        self.tls = Some(tls);
        self.secure = Some(true);
        self
    }

    /// Declares whether browsers reach this server over TLS, for the same-host
    /// [`OriginPolicy`]: `true` behind a proxy that terminates TLS, `false` for a plain server
    /// that wants `https` pages refused. [`tls`](Self::tls) sets `true`. Unset, an Origin's own
    /// scheme is taken at its word.
    pub fn served_over_tls(mut self, secure: bool) -> Self {
        self.secure = Some(secure);
        self
    }

    /// At most `max` opening handshakes (TLS included) at once, across this builder and its
    /// clones (the free [`accept`] function has no such bound); a connection beyond that is
    /// answered 503 (plain connections; TLS ones are closed) and dropped within a second.
    /// With the handshake timeout this bounds what silent connections cost: each holds a slot
    /// for at most that timeout. It does not stop one address from taking every slot; limit
    /// connections per address in front of the server for that. At least 1.
    pub fn max_concurrent_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.clamp(1, Semaphore::MAX_PERMITS);
        self.handshakes = Arc::new(Semaphore::new(self.max_handshakes));
        self
    }

    /// How many opening handshakes are in progress now, across this builder and its clones.
    pub fn handshakes_in_progress(&self) -> usize {
        self.max_handshakes
            .saturating_sub(self.handshakes.available_permits())
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
        mut stream: S,
    ) -> Result<(WebSocket<S>, Request<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let Some(_permit) = self.permit() else {
            turn_away(&mut stream).await;
            return Err(Error::new(Kind::Busy));
        };
        set_nodelay(&stream, self.config.nodelay);
        tokio::time::timeout(self.config.handshake_timeout, self.handshake(stream))
            .await
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
        let Some(_permit) = self.permit() else {
            #[cfg(feature = "rustls")]
            let plain = self.tls.is_none();
            #[cfg(not(feature = "rustls"))]
            let plain = true;
            if plain {
                turn_away(&mut tcp).await;
            }
            return Err(Error::new(Kind::Busy));
        };
        set_nodelay(&tcp, self.config.nodelay);
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
        tokio::time::timeout_at(deadline, self.handshake(stream))
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
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
        let agreement = match self.agree(&request) {
            Ok(agreement) => agreement,
            Err(reject) => {
                let (out, error) = reject.response()?;
                stream.write_all(&out).await?;
                let _ = stream.shutdown().await;
                return Err(error);
            }
        };
        stream.write_all(&agreement.response(&request)?).await?;
        stream.flush().await?;
        let ws = self.open(stream, agreement, buf);
        Ok((ws, request.into_request()))
    }

    /// Decides on a valid request: the Origin policy first, then the caller's decision (a
    /// refusal by either is answered the same way); then the subprotocol and the extension.
    pub(crate) fn agree(&self, request: &UpgradeRequest) -> Result<Agreement, Reject> {
        let accept = if !self.origin.allows_over(request, self.secure) {
            return Err(Reject::new(StatusCode::FORBIDDEN, "origin not allowed\n"));
        } else if let Some(decide) = &self.decide {
            decide(request)?
        } else {
            Accept::new()
        };
        let protocol = accept.protocol.or_else(|| {
            self.protocols
                .iter()
                .find(|ours| request.protocols().iter().any(|offered| offered == *ours))
                .cloned()
        });
        let (answers, extension) = match self
            .deflate
            .as_ref()
            .and_then(|deflate| deflate.accept_offers(request.extensions()))
        {
            Some((answer, extension)) => (vec![answer], Some(extension)),
            None => (Vec::new(), None),
        };
        Ok(Agreement {
            protocol,
            answers,
            extension,
            headers: accept.headers,
        })
    }

    /// The WebSocket over `stream`, once the 101 is sent; `buf` holds what arrived after the
    /// request.
    pub(crate) fn open<S>(&self, stream: S, agreement: Agreement, buf: BytesMut) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        open(&self.config, stream, agreement, buf)
    }

    /// The settings of the connections it opens.
    #[cfg(any(feature = "blocking", feature = "hyper"))]
    pub(crate) fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }
}

/// The WebSocket over `stream` with `config`, once the 101 is sent.
pub(crate) fn open<S>(
    config: &WebSocketConfig,
    stream: S,
    agreement: Agreement,
    buf: BytesMut,
) -> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (conn, protocol) = server_connection(config, agreement);
    WebSocket::from_connection(stream, conn, config, buf, protocol)
}

/// The protocol state (and subprotocol) of a connection accepted with `agreement`.
pub(crate) fn server_connection(
    config: &WebSocketConfig,
    agreement: Agreement,
) -> (Connection, Option<String>) {
    let mut conn = Connection::new(Role::Server, config.proto.clone(), now());
    if let Some(extension) = agreement.extension {
        conn = conn.with_extension(Box::new(extension));
    }
    (conn, agreement.protocol)
}

/// What the server agreed to for one request.
pub(crate) struct Agreement {
    pub(crate) protocol: Option<String>,
    pub(crate) answers: Vec<sockeye_proto::extension::ExtensionParams>,
    extension: Option<sockeye_proto::extension::Deflate>,
    pub(crate) headers: HeaderMap,
}

impl Agreement {
    /// The 101 response that accepts `request` on these terms.
    pub(crate) fn response(&self, request: &UpgradeRequest) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(256);
        request.accept(
            self.protocol.as_deref(),
            &self.answers,
            &self.headers,
            &mut out,
        )?;
        Ok(out)
    }
}

impl Reject {
    /// The response of this refusal, and the error that reports it.
    ///
    /// # Errors
    /// A status or header the refusal may not have.
    pub(crate) fn response(&self) -> Result<(Vec<u8>, Error), Error> {
        let mut out = Vec::new();
        reject_response(self.0.status, &self.0.headers, &self.0.body, &mut out)?;
        let error = Error::new(Kind::Refused {
            status: self.0.status,
            headers: self.0.headers.clone(),
            body: self.0.body.clone().into(),
        });
        Ok((out, error))
    }

    /// The status, headers and body of this refusal.
    #[cfg(feature = "hyper")]
    pub(crate) fn parts(&self) -> (StatusCode, &HeaderMap, &str) {
        (self.0.status, &self.0.headers, &self.0.body)
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerBuilder");
        d.field("config", &self.config)
            .field("protocols", &self.protocols)
            .field("deflate", &self.deflate)
            .field("on_request", &self.decide.is_some())
            .field("origin", &self.origin);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls.is_some());
        d.field("max_concurrent_handshakes", &self.max_handshakes)
            .field("handshakes_in_progress", &self.handshakes_in_progress())
            .finish_non_exhaustive()
    }
}

/// Answers 503 and closes, within [`BUSY_LINGER`].
async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(BUSY_LINGER, async {
        stream.write_all(BUSY_RESPONSE).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_compares_host_and_port() {
        for secure in [None, Some(false)] {
            assert!(same_host("http://example.com", "example.com", secure));
            assert!(same_host("http://EXAMPLE.com:80", "example.com", secure));
            assert!(same_host("http://127.0.0.1:9001", "127.0.0.1:9001", secure));
            assert!(same_host("http://[::1]:9001", "[::1]:9001", secure));
            assert!(!same_host(
                "http://127.0.0.1:9002",
                "127.0.0.1:9001",
                secure
            ));
            assert!(!same_host("http://evil.example", "example.com", secure));
            assert!(!same_host("http://example.com.evil", "example.com", secure));
            assert!(!same_host("null", "example.com", secure));
            assert!(!same_host("file://", "example.com", secure));
            assert!(!same_host("http://example.com:x", "example.com", secure));
            assert!(!same_host("http://:80", ":80", secure));
        }
        // Not knowing the server's scheme, the Origin's is believed.
        assert!(same_host("https://example.com", "example.com", None));
        // Knowing it, the schemes must agree: a page of the plain-http site may not reach the
        // TLS server (and its secure cookies), nor the other way round.
        assert!(same_host("https://example.com", "example.com", Some(true)));
        assert!(!same_host("http://example.com", "example.com", Some(true)));
        assert!(!same_host(
            "http://example.com:443",
            "example.com",
            Some(true)
        ));
        assert!(!same_host(
            "https://example.com",
            "example.com",
            Some(false)
        ));
        assert!(same_host(
            "https://example.com:8443",
            "example.com:8443",
            Some(true)
        ));
    }

    #[test]
    fn origins_are_normalized() {
        let n = |o| normalize_origin(o);
        assert_eq!(
            n("HTTPS://App.Example:443/").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            n("http://a.example:8080").as_deref(),
            Some("http://a.example:8080")
        );
        assert_eq!(n("http://[::1]:80").as_deref(), Some("http://[::1]"));
        assert_eq!(n("null"), None);
        assert_eq!(n("http://u@a.example"), None);
        assert_eq!(n("http://a.example/path"), None);
        assert_eq!(n("ftp://a.example"), None);
    }
}
