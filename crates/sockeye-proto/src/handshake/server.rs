//! The server's decision on a valid request (RFC 6455 section 4.2.2), made once for every front
//! door: the Origin policy, the caller's callback, the subprotocol and the extension, then the
//! response (101 on HTTP/1.1, 200 for an RFC 8441 extended CONNECT) and a ready connection,
//! or the refusal.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use super::http::encode_response;
use super::{
    HandshakeError, HandshakeMisuse, OriginPolicy, RequestForm, RequestParser, UpgradeRequest,
    VERSION, accept_key, check_extra,
};
use crate::config::Config;
use crate::connection::Connection;
use crate::extension::DeflateConfig;
use crate::extension::header::format_extensions;
use crate::role::Role;

type Decide = dyn Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync;

/// A server's side of the opening handshake: its policy, and the decision it makes on each
/// request. Build it once and share it (clones are cheap: the callback is shared).
///
/// ```
/// use std::time::Instant;
/// use bytes::BytesMut;
/// use sockeye_proto::handshake::{OriginPolicy, RequestParser, ServerHandshake};
///
/// let server = ServerHandshake::new()
///     .origin_policy(OriginPolicy::any())
///     .protocols(["chat"]);
/// let mut parser = RequestParser::new();
/// let mut buf = BytesMut::from(
///     "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///      Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///      Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Version: 13\r\n\r\n",
/// );
/// let mut out = Vec::new();
/// match server.handle_bytes(&mut parser, &mut buf, Instant::now()) {
///     None => { /* read more into buf, call again */ }
///     Some(Ok(accepted)) => {
///         accepted.encode(&mut out); // write it, then drive accepted.connection
///         assert_eq!(accepted.protocol.as_deref(), Some("chat"));
///     }
///     Some(Err(refusal)) => refusal.encode(&mut out), // write it, then close
/// }
/// assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct ServerHandshake {
    config: Config,
    origin: OriginPolicy,
    secure: Option<bool>,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    decide: Option<Arc<Decide>>,
}

impl ServerHandshake {
    /// The default policy: the default [`OriginPolicy`] (browsers only from the server's own
    /// host), no subprotocol, no extension, [`Config::default`], every such request accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits of the request head ([`handle_bytes`](Self::handle_bytes)) and the
    /// configuration of the connections it opens.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Which `Origin` headers to accept; the others get 403.
    pub fn origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.origin = policy;
        self
    }

    /// Whether browsers reach this server over TLS, for the same-host [`OriginPolicy`]: an
    /// Origin's scheme must then be `https` (`true`) or `http` (`false`). Unset, an Origin's
    /// own scheme is taken at its word.
    pub fn served_over_tls(mut self, secure: bool) -> Self {
        self.secure = Some(secure);
        self
    }

    /// Subprotocols this server speaks, in order of preference; when the callback picks none,
    /// the first of these the client offered is selected.
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

    /// Decides on each valid request whose Origin the policy allows: its path, query, headers
    /// (cookies, credentials) and offered subprotocols are in the [`UpgradeRequest`].
    pub fn on_request<F>(mut self, decide: F) -> Self
    where
        F: Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync + 'static,
    {
        self.decide = Some(Arc::new(decide));
        self
    }

    /// Feeds the bytes read so far to `parser` (append new bytes to the same `buf` between
    /// calls), within the head limits of [`config`](Self::config). `None`: the head is not
    /// complete, read more. Otherwise the outcome: on acceptance the head has been removed
    /// from `buf` and what remains there is the first WebSocket data.
    #[must_use = "the outcome holds the response to send"]
    pub fn handle_bytes(
        &self,
        parser: &mut RequestParser,
        buf: &mut BytesMut,
        now: Instant,
    ) -> Option<Result<ServerAccepted, Refusal>> {
        match parser.parse(buf, &self.config) {
            Ok(None) => None,
            Ok(Some(request)) => Some(self.accept(request, now)),
            Err(error) => Some(Err(Refusal::from(error))),
        }
    }

    /// Answers a request an HTTP/1.1 server parsed (hyper, say): section 4.2.1's checks
    /// ([`UpgradeRequest::from_request`]), then [`accept`](Self::accept).
    ///
    /// # Errors
    /// The [`Refusal`] to send instead.
    pub fn accept_request(
        &self,
        request: Request<()>,
        now: Instant,
    ) -> Result<ServerAccepted, Refusal> {
        self.accept(UpgradeRequest::from_request(request)?, now)
    }

    /// Answers an RFC 8441 extended CONNECT an HTTP/2 server parsed, `protocol` being its
    /// `:protocol` pseudo-header ([`UpgradeRequest::from_extended_connect`]), then
    /// [`accept`](Self::accept): a 200 response without `Sec-WebSocket-Accept`.
    ///
    /// # Errors
    /// The [`Refusal`] to send instead (without the HTTP/1.1-only `Connection` and `Upgrade`
    /// headers).
    pub fn accept_extended_connect(
        &self,
        request: Request<()>,
        protocol: Option<&str>,
        now: Instant,
    ) -> Result<ServerAccepted, Refusal> {
        let request = UpgradeRequest::from_extended_connect(request, protocol)
            .map_err(|error| Refusal::invalid(RequestForm::ExtendedConnect, error))?;
        self.accept(request, now)
    }

    /// Decides on a valid request: the Origin policy first (403), then the callback (its
    /// refusal as given), then the subprotocol and the extension; the response and the
    /// connection on acceptance.
    ///
    /// # Errors
    /// The [`Refusal`] to send instead. The callback's misuse (a subprotocol the client did
    /// not offer, a header the handshake sets itself, a refusal status that cannot carry a
    /// body) is refused with 500 and [`RefusalReason::Misuse`].
    pub fn accept(&self, request: UpgradeRequest, now: Instant) -> Result<ServerAccepted, Refusal> {
        let form = request.form();
        // Section 4.2.2 step 4 leaves the Origin to the server; section 10.2 says why to check.
        if !self.origin.allows_over(&request, self.secure) {
            return Err(Refusal::build(
                form,
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "origin not allowed\n".to_owned(),
                RefusalReason::OriginNotAllowed,
            ));
        }
        let accept = match &self.decide {
            Some(decide) => decide(&request).map_err(|reject| Refusal::rejected(form, reject))?,
            None => Accept::new(),
        };
        let offered = request.protocols();
        // Section 4.2.2 step 5.4: the selected subprotocol must be one the client offered.
        let protocol = match accept.protocol {
            Some(chosen) if !offered.contains(&chosen) => {
                return Err(Refusal::misuse(form, HandshakeMisuse::ProtocolNotOffered));
            }
            Some(chosen) => Some(chosen),
            None => self.protocols.iter().find(|p| offered.contains(p)).cloned(),
        };
        check_extra(
            &accept.headers,
            &[
                header::UPGRADE,
                header::CONNECTION,
                header::SEC_WEBSOCKET_ACCEPT,
                header::SEC_WEBSOCKET_PROTOCOL,
                header::SEC_WEBSOCKET_EXTENSIONS,
            ],
        )
        .map_err(|misuse| Refusal::misuse(form, misuse))?;
        let negotiated = self
            .deflate
            .as_ref()
            .and_then(|deflate| deflate.accept_offers(request.extensions()));

        let mut headers = HeaderMap::new();
        let status = match request.key() {
            // Section 4.2.2 step 5: 101, `Upgrade`, `Connection` and the key's accept value.
            Some(key) => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                // Base64: always a valid header value.
                if let Ok(value) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
                    headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
                }
                StatusCode::SWITCHING_PROTOCOLS
            }
            // RFC 8441 section 5: a 2xx opens the stream; there is no key to answer.
            None => StatusCode::OK,
        };
        // The protocol was offered as a token, and the extension answer is built of tokens:
        // both are valid header values.
        if let Some(value) = protocol
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok())
        {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if let Some((answer, _)) = &negotiated
            && let Ok(value) =
                HeaderValue::from_str(&format_extensions(std::slice::from_ref(answer)))
        {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        for (name, value) in &accept.headers {
            headers.append(name, value.clone());
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;

        let mut connection = Connection::new(Role::Server, self.config.clone(), now);
        if let Some((_, deflate)) = negotiated {
            connection = connection.with_extension(Box::new(deflate));
        }
        Ok(ServerAccepted {
            response,
            connection,
            protocol,
            request: request.into_request(),
        })
    }
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("config", &self.config)
            .field("origin", &self.origin)
            .field("served_over_tls", &self.secure)
            .field("protocols", &self.protocols)
            .field("deflate", &self.deflate)
            .field("on_request", &self.decide.is_some())
            .finish()
    }
}

/// An accepted request: the response to send and the connection that follows it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerAccepted {
    /// 101 with `Upgrade`, `Connection` and `Sec-WebSocket-Accept` for an HTTP/1.1 upgrade,
    /// 200 for an extended CONNECT; then the selected subprotocol and extension, and the
    /// callback's headers.
    pub response: Response<()>,
    /// The server's protocol state, with the negotiated extension; feed it what follows the
    /// request.
    pub connection: Connection,
    /// The selected subprotocol, also in the response.
    pub protocol: Option<String>,
    /// The request head that was accepted.
    pub request: Request<()>,
}

impl ServerAccepted {
    /// Writes [`response`](Self::response) as HTTP/1.1 bytes (for an extended CONNECT, hand
    /// `response` to the HTTP/2 server instead).
    pub fn encode(&self, out: &mut impl BufMut) {
        encode_response(self.response.status(), self.response.headers(), b"", out);
    }
}

/// A refused request: the response to send instead (a short plain-text body naming the
/// reason), after which the server closes the connection, and why.
#[derive(Debug, Clone)]
pub struct Refusal(Box<RefusalParts>);

/// Boxed so that `Result<ServerAccepted, Refusal>` stays small.
#[derive(Debug, Clone)]
struct RefusalParts {
    response: Response<String>,
    reason: RefusalReason,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The request breaks RFC 6455 section 4.2.1 (or RFC 8441 section 5), or a limit; the
    /// status is [`HandshakeError::status`].
    #[error(transparent)]
    Invalid(HandshakeError),
    /// The [`OriginPolicy`] does not allow the request's Origin (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The callback refused, with this status.
    #[error("refused with {0}")]
    Rejected(StatusCode),
    /// The callback asked for something the handshake cannot send (500).
    #[error(transparent)]
    Misuse(HandshakeMisuse),
}

impl Refusal {
    /// The response: status, `Content-Type`, `Content-Length`, `Connection: close` (HTTP/1.1
    /// only), the headers the status requires or the callback added, and the body.
    pub fn response(&self) -> &Response<String> {
        &self.0.response
    }

    /// The response's status.
    pub fn status(&self) -> StatusCode {
        self.0.response.status()
    }

    /// Why the request was refused.
    pub fn reason(&self) -> &RefusalReason {
        &self.0.reason
    }

    /// The response and the reason.
    pub fn into_parts(self) -> (Response<String>, RefusalReason) {
        let RefusalParts { response, reason } = *self.0;
        (response, reason)
    }

    /// Writes [`response`](Self::response) as HTTP/1.1 bytes, body included (for an extended
    /// CONNECT, hand `response` to the HTTP/2 server instead).
    pub fn encode(&self, out: &mut impl BufMut) {
        let response = &self.0.response;
        encode_response(
            response.status(),
            response.headers(),
            response.body().as_bytes(),
            out,
        );
    }

    /// The answer to an invalid request: [`HandshakeError::status`] and the headers that
    /// status requires.
    fn invalid(form: RequestForm, error: HandshakeError) -> Self {
        // A response error is no request's fault: the caller passed the wrong error.
        let status = error.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let upgrade = form == RequestForm::Upgrade;
        let mut extra = HeaderMap::new();
        match error {
            // RFC 7231 section 6.5.5: a 405 response lists the allowed methods.
            HandshakeError::MethodNotGet => {
                extra.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            HandshakeError::MethodNotConnect => {
                extra.insert(header::ALLOW, HeaderValue::from_static("CONNECT"));
            }
            // RFC 7231 section 6.5.15: a 426 response names the protocol to upgrade to
            // (HTTP/2 has no Upgrade header: RFC 9113 section 8.2.2).
            HandshakeError::UpgradeRequired if upgrade => {
                extra.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            // Section 4.4: name the versions we support.
            HandshakeError::UnsupportedVersion => {
                if upgrade {
                    extra.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                }
                extra.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(VERSION),
                );
            }
            _ => {}
        }
        let body = format!("{error}\n");
        Self::build(form, status, &extra, body, RefusalReason::Invalid(error))
    }

    /// The callback's refusal, when it is a response that can be sent.
    fn rejected(form: RequestForm, reject: Reject) -> Self {
        let Refused {
            status,
            headers,
            body,
        } = *reject.0;
        // 1xx, 204 and 304 cannot carry the body; on HTTP/2 a 2xx would open the tunnel.
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || (form == RequestForm::ExtendedConnect && status.is_success())
        {
            return Self::misuse(form, HandshakeMisuse::InvalidRejectStatus { status });
        }
        if let Err(misuse) = check_extra(
            &headers,
            &[
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
            ],
        ) {
            return Self::misuse(form, misuse);
        }
        Self::build(
            form,
            status,
            &headers,
            body,
            RefusalReason::Rejected(status),
        )
    }

    /// 500 for the callback's misuse. The body does not say what went wrong: that is the
    /// server's business, in [`RefusalReason::Misuse`].
    fn misuse(form: RequestForm, misuse: HandshakeMisuse) -> Self {
        Self::build(
            form,
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            "the server could not answer this request\n".to_owned(),
            RefusalReason::Misuse(misuse),
        )
    }

    /// A plain-text response; the connection closes after it.
    fn build(
        form: RequestForm,
        status: StatusCode,
        extra: &HeaderMap,
        body: String,
        reason: RefusalReason,
    ) -> Self {
        let mut response = Response::new(String::new());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        // HTTP/2 ends the stream instead (and has no Connection header, RFC 9113 section
        // 8.2.2).
        if form == RequestForm::Upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        for (name, value) in extra {
            headers.append(name, value.clone());
        }
        *response.body_mut() = body;
        Self(Box::new(RefusalParts { response, reason }))
    }
}

/// The refusal of an invalid HTTP/1.1 request, as [`RequestParser`] or
/// [`UpgradeRequest::from_request`] report it.
impl From<HandshakeError> for Refusal {
    fn from(error: HandshakeError) -> Self {
        Self::invalid(RequestForm::Upgrade, error)
    }
}

/// A refusal of the server's own on an HTTP/1.1 connection (503 when busy, say), held to the
/// rules of the callback's: a status that cannot carry a body, or a header the refusal sets
/// itself, makes it a 500.
impl From<Reject> for Refusal {
    fn from(reject: Reject) -> Self {
        Self::rejected(RequestForm::Upgrade, reject)
    }
}

/// What the server's callback decides about a request it accepts.
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

    /// Select a subprotocol; it must be one the client offered (else the request is refused
    /// with 500).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Add headers to the response (cookies, say); not those the handshake sets itself
    /// (`Upgrade`, `Connection`, `Sec-WebSocket-*`), else the request is refused with 500.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }
}

/// A refusal: the HTTP response sent instead of 101.
#[derive(Debug, Clone)]
#[must_use]
pub struct Reject(Box<Refused>);

/// Boxed so that `Result<Accept, Reject>` stays small for the callback.
#[derive(Debug, Clone)]
struct Refused {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reject {
    /// Refuse with `status` (403 for a refused Origin, 401 for missing credentials, 404 for an
    /// unknown path...) and a short body naming the reason. A status that cannot carry a body
    /// (1xx, 204, 304) is refused with 500.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self(Box::new(Refused {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }))
    }

    /// Add headers to the response (`WWW-Authenticate`, say); not `Content-Type`,
    /// `Content-Length`, `Transfer-Encoding` or `Connection`, which the refusal sets itself
    /// (else the request is refused with 500).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.0.headers = headers;
        self
    }
}

#[cfg(test)]
mod tests;
