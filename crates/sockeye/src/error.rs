//! The error of the tokio layer: opaque, small, with predicates. Its `Display` text is not API.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sockeye_proto::extension::deflate::NegotiationError;
use sockeye_proto::handshake::{HandshakeError, HandshakeMisuse, UriError};
use sockeye_proto::{ApiMisuse, CloseCode, CloseFrame, ConnectionError, Initiator, ProtocolError};

use crate::net::ConnectError;
#[cfg(feature = "proxy")]
use crate::proxy::{Proxy, ProxyError, ProxyUrlError};
#[cfg(feature = "rustls")]
use crate::tls::{TlsError, TlsFailure, TlsHandshakeError, TlsSetupError};

/// What went wrong with a WebSocket connection or its handshake.
///
/// A clean close by either side is not an error: the message stream just ends. Everything else
/// is, and the predicates say which kind it is.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
}

/// The kinds of [`Error`], for matching. `#[non_exhaustive]`: new kinds may come.
#[derive(Debug)]
#[non_exhaustive]
pub enum Kind {
    /// The transport failed.
    Io(io::Error),
    /// The server's host name could not be resolved.
    Dns {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens at the server's address (the last address tried, when the name had
    /// several).
    ConnectionRefused {
        /// The address.
        addr: SocketAddr,
    },
    /// The TCP connection could not be opened for another reason (unreachable network, say).
    Connect {
        /// The address (the last tried).
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake failed, or TLS failed later: [`TlsError::failure`] says why (an
    /// unknown issuer, an expired certificate, a wrong host name...).
    #[cfg(feature = "rustls")]
    Tls(TlsError),
    /// The TLS settings could not be built (bad PEM, no root certificates).
    #[cfg(feature = "rustls")]
    TlsSetup(TlsSetupError),
    /// The proxy did not open the tunnel.
    #[cfg(feature = "proxy")]
    Proxy {
        /// The proxy's URL, without credentials.
        proxy: String,
        /// Why.
        error: ProxyError,
    },
    /// A proxy URL (given, or from the environment) could not be used.
    #[cfg(feature = "proxy")]
    ProxyUrl(ProxyUrlError),
    /// The server is handling as many opening handshakes as it allows at once; this connection
    /// was turned away (with 503 when the transport took it at once).
    Busy,
    /// The URL could not be used.
    Url(UriError),
    /// The opening handshake failed: a bad request (server side) or response (client side).
    Handshake(HandshakeError),
    /// The server answered the handshake with another status than 101.
    Refused {
        /// The status.
        status: StatusCode,
        /// The response's headers.
        headers: HeaderMap,
        /// The start of the response body, as far as it had arrived.
        body: Bytes,
        /// The HTTP version of the response: HTTP/2 for an extended CONNECT (RFC 8441),
        /// HTTP/1.1 for an upgrade request.
        version: http::Version,
    },
    /// The connection ended other than by a clean close handshake.
    Closed {
        /// Why.
        error: ConnectionError,
        /// Who ended it.
        initiator: Initiator,
        /// The Close frame we sent, if any.
        local: Option<CloseFrame>,
        /// The Close frame the peer sent, if any.
        remote: Option<CloseFrame>,
    },
    /// The operation did not finish in time.
    Timeout(Timeout),
    /// The caller used the API wrongly (sending after close, a bad close code, ...).
    Misuse(ApiMisuse),
    /// The handshake could not be built from what the caller gave.
    HandshakeMisuse(HandshakeMisuse),
    /// A message was sent after the connection closed.
    AlreadyClosed,
    /// The server's permessage-deflate answer could not be accepted (RFC 7692 section 7).
    Negotiation(NegotiationError),
    /// In streaming mode, a frame of a text or binary message arrived while whole messages
    /// were being read (`next`, `read`): read with `next_frame` (`read_frame`), which hands
    /// that frame out next.
    StreamingFrame,
}

/// Which stage of opening a connection ran out of the handshake timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeout {
    /// The WebSocket upgrade (the HTTP request and its 101).
    Handshake,
    /// Connecting: name resolution, TCP, and the proxy's tunnel when there is one.
    Connect,
    /// The TLS handshake.
    Tls,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            inner: Box::new(Inner { kind }),
        }
    }

    /// The kind, for matching.
    pub fn kind(&self) -> &Kind {
        &self.inner.kind
    }

    /// The kind, by value.
    pub fn into_kind(self) -> Kind {
        self.inner.kind
    }

    /// Whether the transport failed.
    pub fn is_io(&self) -> bool {
        matches!(self.inner.kind, Kind::Io(_))
    }

    /// Whether the peer broke the protocol (and was sent the close code that says so).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Closed {
                error: ConnectionError::Protocol(_),
                ..
            }
        )
    }

    /// Whether something timed out: the handshake, connecting, the close handshake, or the
    /// keepalive pong.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Timeout(_)
                | Kind::Closed {
                    error: ConnectionError::CloseTimeout | ConnectionError::PongTimeout,
                    ..
                }
        )
    }

    /// Whether TLS failed (not its setup).
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "rustls")]
        return matches!(self.inner.kind, Kind::Tls(_));
        #[cfg(not(feature = "rustls"))]
        false
    }

    /// Why TLS failed, if it did.
    #[cfg(feature = "rustls")]
    pub fn tls_failure(&self) -> Option<TlsFailure> {
        match &self.inner.kind {
            Kind::Tls(e) => Some(e.failure()),
            _ => None,
        }
    }

    /// Whether opening the connection failed before any WebSocket or TLS byte: a name that did
    /// not resolve, a refused or unreachable address, a proxy that did not open the tunnel.
    pub fn is_connect(&self) -> bool {
        match self.inner.kind {
            Kind::Dns { .. } | Kind::ConnectionRefused { .. } | Kind::Connect { .. } => true,
            #[cfg(feature = "proxy")]
            Kind::Proxy { .. } => true,
            _ => false,
        }
    }

    /// The status an HTTP proxy refused `CONNECT` with (407, 403...).
    #[cfg(feature = "proxy")]
    pub fn proxy_status(&self) -> Option<StatusCode> {
        match &self.inner.kind {
            Kind::Proxy {
                error: ProxyError::Refused { status, .. },
                ..
            } => Some(*status),
            _ => None,
        }
    }

    /// Whether the opening handshake failed (including a refusal with another status than 101).
    pub fn is_handshake(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Handshake(_) | Kind::Refused { .. } | Kind::Negotiation(_)
        )
    }

    /// Whether the peer exceeded a configured limit (frame size, message size, fragment count,
    /// decompressed size); the connection was closed with 1009.
    pub fn is_limit(&self) -> bool {
        self.close_code() == Some(CloseCode::MESSAGE_TOO_BIG) && self.is_protocol()
    }

    /// Whether the caller misused the API.
    pub fn is_misuse(&self) -> bool {
        match self.inner.kind {
            Kind::Misuse(_)
            | Kind::HandshakeMisuse(_)
            | Kind::AlreadyClosed
            | Kind::Url(_)
            | Kind::StreamingFrame => true,
            #[cfg(feature = "proxy")]
            Kind::ProxyUrl(_) => true,
            #[cfg(feature = "rustls")]
            Kind::TlsSetup(_) => true,
            _ => false,
        }
    }

    /// The protocol error the peer committed, if that is what this is.
    pub fn protocol_error(&self) -> Option<&ProtocolError> {
        match &self.inner.kind {
            Kind::Closed {
                error: ConnectionError::Protocol(e),
                ..
            } => Some(e),
            _ => None,
        }
    }

    /// The close code that describes a connection that ended badly: the code we sent for a
    /// protocol error, 1006 for a transport that ended or timed out.
    pub fn close_code(&self) -> Option<CloseCode> {
        match &self.inner.kind {
            Kind::Closed { error, .. } => Some(error.close_code()),
            Kind::Io(_) => Some(CloseCode::ABNORMAL),
            _ => None,
        }
    }

    /// The HTTP status: the one a server refused us with, or the one we answer a bad request with.
    pub fn status(&self) -> Option<StatusCode> {
        match &self.inner.kind {
            Kind::Refused { status, .. } => Some(*status),
            Kind::Handshake(e) => e.status(),
            _ => None,
        }
    }

    /// Who ended the connection, for a connection that ended badly.
    pub fn initiator(&self) -> Option<Initiator> {
        match &self.inner.kind {
            Kind::Closed { initiator, .. } => Some(*initiator),
            _ => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner.kind, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            Kind::Io(e) => write!(f, "I/O error: {e}"),
            Kind::Dns { host, source } => write!(f, "cannot resolve {host:?}: {source}"),
            Kind::ConnectionRefused { addr } => write!(f, "connection refused by {addr}"),
            Kind::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            #[cfg(feature = "rustls")]
            Kind::Tls(e) => write!(f, "TLS failed: {e}"),
            #[cfg(feature = "rustls")]
            Kind::TlsSetup(e) => write!(f, "invalid TLS settings: {e}"),
            #[cfg(feature = "proxy")]
            Kind::Proxy { proxy, error } => write!(f, "proxy {proxy}: {error}"),
            #[cfg(feature = "proxy")]
            Kind::ProxyUrl(e) => write!(f, "invalid proxy URL: {e}"),
            Kind::Busy => f.write_str("too many opening handshakes at once"),
            Kind::Url(e) => write!(f, "invalid WebSocket URL: {e}"),
            Kind::Handshake(e) => write!(f, "opening handshake failed: {e}"),
            Kind::Refused { status, .. } => {
                write!(f, "server refused the WebSocket upgrade with HTTP {status}")
            }
            Kind::Closed {
                error,
                initiator,
                local,
                ..
            } => {
                write!(f, "connection closed abnormally ({initiator:?}): {error}")?;
                if let (ConnectionError::Protocol(_), Some(frame)) = (error, local) {
                    write!(f, "; sent close code {}", frame.code)?;
                }
                Ok(())
            }
            Kind::Timeout(Timeout::Handshake) => f.write_str("opening handshake timed out"),
            Kind::Timeout(Timeout::Connect) => f.write_str("connecting timed out"),
            Kind::Timeout(Timeout::Tls) => f.write_str("TLS handshake timed out"),
            Kind::Misuse(e) => write!(f, "API misuse: {e}"),
            Kind::HandshakeMisuse(e) => write!(f, "invalid handshake options: {e}"),
            Kind::AlreadyClosed => f.write_str("the connection is closed"),
            Kind::Negotiation(e) => write!(f, "extension negotiation failed: {e}"),
            Kind::StreamingFrame => f.write_str(
                "a frame of a streamed message came to a read of whole messages (read frames)",
            ),
        }
    }
}

impl std::error::Error for Error {
    /// What the message does not already say. The message names every cause in one line, so
    /// the chain continues below the cause whose text it already holds: printing the chain
    /// (`{:#}` with anyhow, say) shows each text once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.kind {
            Kind::Io(e) | Kind::Dns { source: e, .. } | Kind::Connect { source: e, .. } => {
                e.source()
            }
            #[cfg(feature = "rustls")]
            Kind::Tls(e) => e.source(),
            #[cfg(feature = "rustls")]
            Kind::TlsSetup(e) => e.source(),
            #[cfg(feature = "proxy")]
            Kind::Proxy { error, .. } => error.source(),
            #[cfg(feature = "proxy")]
            Kind::ProxyUrl(e) => e.source(),
            Kind::Url(e) => e.source(),
            Kind::Handshake(e) => e.source(),
            Kind::Closed { error, .. } => error.source(),
            Kind::Misuse(e) => e.source(),
            Kind::HandshakeMisuse(e) => e.source(),
            Kind::Negotiation(e) => e.source(),
            Kind::Refused { .. }
            | Kind::Timeout(_)
            | Kind::AlreadyClosed
            | Kind::ConnectionRefused { .. }
            | Kind::Busy
            | Kind::StreamingFrame => None,
        }
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        Self::new(match e {
            ConnectError::Dns { host, source } => Kind::Dns { host, source },
            ConnectError::Refused { addr } => Kind::ConnectionRefused { addr },
            ConnectError::Failed { addr, source } => Kind::Connect { addr, source },
            ConnectError::TimedOut => Kind::Timeout(Timeout::Connect),
        })
    }
}

#[cfg(feature = "rustls")]
impl From<TlsHandshakeError> for Error {
    fn from(e: TlsHandshakeError) -> Self {
        match e {
            TlsHandshakeError::Setup(e) => e.into(),
            TlsHandshakeError::Tls(e) => Self::new(Kind::Tls(e)),
            TlsHandshakeError::Io(e) => Self::new(Kind::Io(e)),
        }
    }
}

#[cfg(feature = "rustls")]
impl From<TlsSetupError> for Error {
    fn from(e: TlsSetupError) -> Self {
        Self::new(Kind::TlsSetup(e))
    }
}

#[cfg(feature = "proxy")]
impl Error {
    /// The error for a connection through `proxy` that failed with `error`: [`Kind::Proxy`],
    /// but [`Kind::Dns`] for the server's name that `socks5://` resolves here, as for a direct
    /// connection.
    pub(crate) fn proxy(proxy: &Proxy, error: ProxyError) -> Self {
        match error {
            ProxyError::Resolve(e) => e.into(),
            error => Self::new(Kind::Proxy {
                proxy: proxy.to_string(),
                error,
            }),
        }
    }
}

#[cfg(feature = "proxy")]
impl From<ProxyUrlError> for Error {
    fn from(e: ProxyUrlError) -> Self {
        Self::new(Kind::ProxyUrl(e))
    }
}

impl From<io::Error> for Error {
    /// An I/O error that carries a rustls error becomes [`Kind::Tls`]; one made from an
    /// [`Error`] (by `From<Error> for io::Error`) is that error again.
    fn from(e: io::Error) -> Self {
        type Custom = dyn std::error::Error + Send + Sync;
        if e.get_ref().is_some_and(<Custom>::is::<Self>) {
            let kind = e.kind();
            if let Some(Ok(ours)) = e.into_inner().map(<Custom>::downcast::<Self>) {
                return *ours;
            }
            // Not reached: the check above saw an `Error` inside.
            return Self::new(Kind::Io(kind.into()));
        }
        #[cfg(feature = "rustls")]
        if let Some(tls) = TlsError::from_io(&e) {
            return Self::new(Kind::Tls(tls));
        }
        Self::new(Kind::Io(e))
    }
}

impl From<ApiMisuse> for Error {
    fn from(e: ApiMisuse) -> Self {
        if e == ApiMisuse::Closing {
            return Self::new(Kind::AlreadyClosed);
        }
        Self::new(Kind::Misuse(e))
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::new(Kind::Handshake(e))
    }
}

impl From<HandshakeMisuse> for Error {
    fn from(e: HandshakeMisuse) -> Self {
        Self::new(Kind::HandshakeMisuse(e))
    }
}

impl From<UriError> for Error {
    fn from(e: UriError) -> Self {
        Self::new(Kind::Url(e))
    }
}

/// The error for a connection that ended before the opening handshake did.
pub(crate) fn eof_in_handshake() -> Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed during the opening handshake",
    )
    .into()
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.kind() {
            Kind::Io(inner) => inner.kind(),
            Kind::Dns { .. } => io::ErrorKind::NotFound,
            Kind::ConnectionRefused { .. } => io::ErrorKind::ConnectionRefused,
            Kind::Connect { source, .. } => source.kind(),
            Kind::Busy => io::ErrorKind::ResourceBusy,
            Kind::Timeout(_) => io::ErrorKind::TimedOut,
            Kind::Closed {
                error: ConnectionError::UnexpectedEof,
                ..
            } => io::ErrorKind::UnexpectedEof,
            Kind::Closed { .. } | Kind::AlreadyClosed => io::ErrorKind::ConnectionAborted,
            #[cfg(feature = "rustls")]
            Kind::Tls(_) => io::ErrorKind::ConnectionAborted,
            #[cfg(feature = "proxy")]
            Kind::Proxy { .. } => io::ErrorKind::ConnectionAborted,
            Kind::Handshake(_) | Kind::Refused { .. } | Kind::Negotiation(_) => {
                io::ErrorKind::ConnectionRefused
            }
            Kind::Url(_) | Kind::Misuse(_) | Kind::HandshakeMisuse(_) | Kind::StreamingFrame => {
                io::ErrorKind::InvalidInput
            }
            #[cfg(feature = "proxy")]
            Kind::ProxyUrl(_) => io::ErrorKind::InvalidInput,
            #[cfg(feature = "rustls")]
            Kind::TlsSetup(_) => io::ErrorKind::InvalidInput,
        };
        match e.into_kind() {
            Kind::Io(inner) => inner,
            other => Self::new(kind, Error::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(size_of::<Error>(), size_of::<usize>());
    }

    #[test]
    fn predicates() {
        let e = Error::new(Kind::Closed {
            error: ConnectionError::Protocol(ProtocolError::InvalidUtf8 { valid_up_to: 0 }),
            initiator: Initiator::Library,
            local: None,
            remote: None,
        });
        assert!(e.is_protocol());
        assert!(!e.is_io());
        assert_eq!(e.close_code(), Some(CloseCode::INVALID_PAYLOAD));
        let e = Error::from(ApiMisuse::Closing);
        assert!(e.is_misuse());
        let io: io::Error = Error::new(Kind::Timeout(Timeout::Handshake)).into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    }

    /// Every text of `e`'s chain, the error's own first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |e| e.source())
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn each_cause_is_told_once() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        #[cfg_attr(not(any(feature = "proxy", feature = "rustls")), allow(unused_mut))]
        let mut errors = vec![
            Error::from(reset()),
            Error::from(io::Error::other(Error::from(reset()))),
            Error::from(ConnectError::Failed {
                addr,
                source: reset(),
            }),
            Error::from(ConnectError::Refused { addr }),
            Error::new(Kind::Closed {
                error: ConnectionError::Protocol(ProtocolError::InvalidUtf8 { valid_up_to: 3 }),
                initiator: Initiator::Library,
                local: Some(CloseFrame::new(CloseCode::INVALID_PAYLOAD, "").unwrap()),
                remote: None,
            }),
        ];
        #[cfg(feature = "proxy")]
        errors.push(Error::new(Kind::Proxy {
            proxy: "http://p:1".into(),
            error: ProxyError::Unreachable(ConnectError::Refused { addr }),
        }));
        #[cfg(feature = "rustls")]
        errors.push(Error::from(TlsSetupError::Read {
            path: "/x.pem".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        }));
        for e in &errors {
            let texts = chain(e);
            let whole = texts.join(": ");
            for text in &texts[1..] {
                assert_eq!(
                    whole.matches(text.as_str()).count(),
                    1,
                    "{text:?} twice in {whole:?}"
                );
            }
            // The message alone names the cause.
            assert!(texts[0].contains("reset by peer") || !whole.contains("reset by peer"));
        }
        assert_eq!(errors[1].to_string(), "I/O error: reset by peer");
        assert_eq!(
            errors[3].to_string(),
            "connection refused by 127.0.0.1:9",
            "the message of a kind is kept"
        );
    }
}
