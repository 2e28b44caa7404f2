//! The opening handshake (RFC 6455 section 4), without I/O.
//!
//! A client builds a [`ClientHandshake`] from a [`WsUri`], writes its request with
//! [`ClientHandshake::encode_request`], then feeds the bytes it reads to
//! [`ClientHandshake::handle_response`] until it returns the [`ClientAccepted`] result.
//!
//! A server decides with one [`ServerHandshake`]: its policy (the [`OriginPolicy`], the
//! subprotocols it speaks, permessage-deflate, whether it is reached over TLS, the limits, and a
//! callback returning [`Accept`] or [`Reject`]) turns each request into either a
//! [`ServerAccepted`] (the response and a ready [`Connection`](crate::Connection)) or a
//! [`Refusal`] (the response and why). The request comes from the bytes the server reads
//! ([`ServerHandshake::handle_bytes`] with a [`RequestParser`]), from an HTTP/1.1 server that
//! parsed it ([`ServerHandshake::accept_request`]), or from an HTTP/2 server as an RFC 8441
//! extended CONNECT ([`ServerHandshake::accept_extended_connect`]). Both outcomes encode
//! themselves as HTTP/1.1 bytes, or hand their `http::Response` to an HTTP server.
//!
//! Both sides remove exactly the HTTP head from the caller's buffer: the bytes after it are the
//! first WebSocket frames. Head size and header count are bounded by [`Config`](crate::config::Config).

mod client;
mod http;
mod origin;
mod request;
mod server;
#[cfg(test)]
mod testing;
mod uri;

use ::http::{HeaderMap, HeaderName, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BufMut;
use sha1::{Digest as _, Sha1};

use crate::extension::header::{ExtensionHeaderError, parse_token_list};

pub use client::{ClientAccepted, ClientHandshake};
pub use http::ReasonPhrase;
pub use origin::OriginPolicy;
pub use request::{RequestForm, RequestParser, UpgradeRequest, parse_request};
pub use server::{Accept, Refusal, RefusalReason, Reject, ServerAccepted, ServerHandshake};
pub use uri::{UriError, WsUri};

/// The GUID appended to `Sec-WebSocket-Key` to derive `Sec-WebSocket-Accept` (section 1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only `Sec-WebSocket-Version` RFC 6455 defines (section 4.1).
pub const VERSION: &str = "13";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` value (section 4.2.2, step 5.4):
/// base64 of the SHA-1 of the key, as sent, followed by [`GUID`].
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes from the operating system, base64-encoded
/// (section 4.1 requires a new random nonce per connection).
///
/// # Errors
/// When the operating system's random source fails.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)?;
    Ok(BASE64.encode(nonce))
}

/// Parses `Sec-WebSocket-Protocol` header values (section 11.3.4: a comma-separated list of
/// tokens), one per header line, keeping order. Empty list elements are tolerated.
pub fn parse_protocols<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, ExtensionHeaderError> {
    parse_token_list(values)
}

/// Which handshake message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client's request, as checked by a server. Such errors have an HTTP status to answer.
    Request,
    /// The server's response, as checked by a client. The client just closes the connection.
    Response,
}

impl Side {
    /// `status` for a request error, `None` for a response error.
    fn status(self, status: StatusCode) -> Option<StatusCode> {
        match self {
            Self::Request => Some(status),
            Self::Response => None,
        }
    }
}

/// What was wrong with the syntax of an HTTP head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeadSyntax {
    /// A malformed method or other token in the start line.
    Token,
    /// A malformed HTTP version.
    Version,
    /// A malformed status code or reason phrase.
    Status,
    /// A request target that is not an absolute path (or absolute URI) without a fragment.
    Target,
    /// A malformed header name.
    HeaderName,
    /// A header value with forbidden bytes (or an obsolete line folding).
    HeaderValue,
    /// A malformed line ending.
    NewLine,
}

/// The opening handshake failed: the peer's request or response broke RFC 6455 section 4, or a
/// limit from [`Config`](crate::config::Config).
///
/// A server answers a [`Side::Request`] error with the [`Refusal`] made from it
/// (`Refusal::from(error)`); a client fails the connection on a [`Side::Response`] error.
/// `Display` text is not API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No complete head within the configured maximum size.
    #[error("handshake head exceeds {max} bytes")]
    HeadTooLarge {
        /// Whose head it was.
        side: Side,
        /// The limit in force, in bytes.
        max: usize,
    },
    /// More header fields than the configured maximum.
    #[error("handshake head has more than {max} header fields")]
    TooManyHeaders {
        /// Whose head it was.
        side: Side,
        /// The limit in force.
        max: usize,
    },
    /// The head is not valid HTTP/1.1.
    #[error("malformed HTTP head: {kind:?}")]
    Malformed {
        /// Whose head it was.
        side: Side,
        /// What was wrong.
        kind: HeadSyntax,
    },
    /// A required header field is absent.
    #[error("missing {name} header")]
    MissingHeader {
        /// Whose head it was.
        side: Side,
        /// The header's name.
        name: &'static str,
    },
    /// A header field that must appear once appears several times.
    #[error("duplicate {name} header")]
    DuplicateHeader {
        /// Whose head it was.
        side: Side,
        /// The header's name.
        name: &'static str,
    },
    /// `Upgrade` is present but does not name `websocket`.
    #[error("Upgrade header does not name websocket")]
    UpgradeNotWebSocket {
        /// Whose head it was.
        side: Side,
    },
    /// `Connection` is present but lacks the `upgrade` option.
    #[error("Connection header lacks the upgrade option")]
    ConnectionNotUpgrade {
        /// Whose head it was.
        side: Side,
    },
    /// `Sec-WebSocket-Extensions` does not follow the section 9.1 grammar.
    #[error("invalid Sec-WebSocket-Extensions header: {error}")]
    InvalidExtensions {
        /// Whose head it was.
        side: Side,
        /// Where the grammar failed.
        error: ExtensionHeaderError,
    },
    /// A request method other than GET (answered with 405 and `Allow: GET`).
    #[error("request method is not GET")]
    MethodNotGet,
    /// An HTTP/2 WebSocket request whose method is not CONNECT (RFC 8441 section 5; answered
    /// with 405 and `Allow: CONNECT`).
    #[error("request method is not CONNECT")]
    MethodNotConnect,
    /// An extended CONNECT without `:protocol websocket` (RFC 8441 section 4).
    #[error("CONNECT request does not name the websocket protocol")]
    ConnectProtocolNotWebSocket,
    /// A request older than HTTP/1.1.
    #[error("request is older than HTTP/1.1")]
    HttpVersionTooOld,
    /// A request announcing HTTP/2 or later on an HTTP/1 connection (answered with 505).
    #[error("HTTP version not supported")]
    HttpVersionNotSupported,
    /// A request without an `Upgrade` header (answered with 426 and `Upgrade: websocket`).
    #[error("missing Upgrade header")]
    UpgradeRequired,
    /// `Sec-WebSocket-Version` is missing or not 13 (answered with 426 and
    /// `Sec-WebSocket-Version: 13`, section 4.4).
    #[error("unsupported or missing Sec-WebSocket-Version; 13 is required")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes.
    #[error("invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// `Sec-WebSocket-Protocol` in a request is not a list of tokens.
    #[error("invalid Sec-WebSocket-Protocol header: {error}")]
    InvalidProtocols {
        /// Where the grammar failed.
        error: ExtensionHeaderError,
    },
    /// The server answered with a status other than 101. The response head has been removed
    /// from the buffer; its body, if any, follows there.
    #[error("server answered {status} instead of 101")]
    UnexpectedStatus {
        /// The status received.
        status: StatusCode,
        /// The response's headers (boxed to keep the error small).
        headers: Box<HeaderMap>,
    },
    /// `Sec-WebSocket-Accept` does not match the key sent.
    #[error("Sec-WebSocket-Accept does not match the key")]
    AcceptMismatch,
    /// The server chose a subprotocol the client did not offer, or sent something other than a
    /// single token in `Sec-WebSocket-Protocol`.
    #[error("server selected a subprotocol that was not offered")]
    ProtocolNotOffered,
    /// The server accepted an extension the client did not offer.
    #[error("server accepted extension {name} that was not offered")]
    ExtensionNotOffered {
        /// The extension's name as received.
        name: Box<str>,
    },
}

impl HandshakeError {
    /// The HTTP status a server answers this request error with; `None` for errors about a
    /// server's response, which a client handles by closing the connection.
    pub fn status(&self) -> Option<StatusCode> {
        // Every variant is listed so that a new one cannot ship without a status decision.
        match self {
            Self::HeadTooLarge { side, .. } | Self::TooManyHeaders { side, .. } => {
                side.status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            Self::Malformed { side, .. }
            | Self::MissingHeader { side, .. }
            | Self::DuplicateHeader { side, .. }
            | Self::UpgradeNotWebSocket { side }
            | Self::ConnectionNotUpgrade { side }
            | Self::InvalidExtensions { side, .. } => side.status(StatusCode::BAD_REQUEST),
            Self::MethodNotGet | Self::MethodNotConnect => Some(StatusCode::METHOD_NOT_ALLOWED),
            Self::HttpVersionTooOld
            | Self::ConnectProtocolNotWebSocket
            | Self::InvalidKey
            | Self::InvalidProtocols { .. } => Some(StatusCode::BAD_REQUEST),
            Self::HttpVersionNotSupported => Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            Self::UpgradeRequired | Self::UnsupportedVersion => Some(StatusCode::UPGRADE_REQUIRED),
            Self::UnexpectedStatus { .. }
            | Self::AcceptMismatch
            | Self::ProtocolNotOffered
            | Self::ExtensionNotOffered { .. } => None,
        }
    }

    /// Whether the error is about a client's request or a server's response.
    pub fn side(&self) -> Side {
        match self {
            Self::HeadTooLarge { side, .. }
            | Self::TooManyHeaders { side, .. }
            | Self::Malformed { side, .. }
            | Self::MissingHeader { side, .. }
            | Self::DuplicateHeader { side, .. }
            | Self::UpgradeNotWebSocket { side }
            | Self::ConnectionNotUpgrade { side }
            | Self::InvalidExtensions { side, .. } => *side,
            Self::MethodNotGet
            | Self::MethodNotConnect
            | Self::ConnectProtocolNotWebSocket
            | Self::HttpVersionTooOld
            | Self::HttpVersionNotSupported
            | Self::UpgradeRequired
            | Self::UnsupportedVersion
            | Self::InvalidKey
            | Self::InvalidProtocols { .. } => Side::Request,
            Self::UnexpectedStatus { .. }
            | Self::AcceptMismatch
            | Self::ProtocolNotOffered
            | Self::ExtensionNotOffered { .. } => Side::Response,
        }
    }
}

/// The caller asked the handshake to write something invalid. No network input causes these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeMisuse {
    /// A subprotocol to offer is not a token.
    #[error("subprotocol #{index} is not a token")]
    InvalidProtocol {
        /// Its position in the list given.
        index: usize,
    },
    /// A subprotocol is offered twice (section 4.1 requires unique values).
    #[error("subprotocol #{index} is offered twice")]
    DuplicateProtocol {
        /// The position of the second occurrence.
        index: usize,
    },
    /// An extension whose name, parameter names or values are not all tokens.
    #[error("extension #{index} is not valid")]
    InvalidExtension {
        /// Its position in the list given.
        index: usize,
    },
    /// A server selecting a subprotocol the client did not offer (section 4.2.2).
    #[error("the client did not offer this subprotocol")]
    ProtocolNotOffered,
    /// An extra header that the handshake writes itself.
    #[error("header {name} is set by the handshake and cannot be given as an extra header")]
    ReservedHeader {
        /// The header given.
        name: HeaderName,
    },
    /// The WebSocket URI does not make an HTTP/2 request URI (`:authority` and `:path`).
    #[error("the URI cannot be sent in an HTTP/2 request")]
    InvalidUri,
    /// A rejection with a status that cannot carry a body (1xx, 204, 304).
    #[error("status {status} cannot be used for a rejection")]
    InvalidRejectStatus {
        /// The status given.
        status: StatusCode,
    },
}

/// Whether `headers` ask for a WebSocket (`Upgrade: websocket` and `Connection: upgrade`):
/// a cheap test for an HTTP server to route on; the rest of section 4.2.1 is checked by
/// [`UpgradeRequest::from_request`].
pub fn asks_for_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, &header::UPGRADE, "websocket")
        && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Whether any comma-separated element of any `name` header equals `token`, ignoring ASCII case
/// (the way `Upgrade` and `Connection` are checked, RFC 7230 section 6.1 and 6.7).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
}

/// The values of every `name` header as text, or the offset of the first byte that is not
/// UTF-8 (the grammar then rejects what remains non-ASCII).
fn header_texts<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Vec<&'h str>, ExtensionHeaderError> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            std::str::from_utf8(v.as_bytes()).map_err(|e| ExtensionHeaderError::UnexpectedByte {
                offset: e.valid_up_to(),
                byte: v.as_bytes().get(e.valid_up_to()).copied().unwrap_or(0),
            })
        })
        .collect()
}

/// Rejects an extra header that collides with one the handshake writes itself.
fn check_extra(extra: &HeaderMap, reserved: &[HeaderName]) -> Result<(), HandshakeMisuse> {
    match extra.keys().find(|k| reserved.contains(k)) {
        Some(name) => Err(HandshakeMisuse::ReservedHeader { name: name.clone() }),
        None => Ok(()),
    }
}

/// Writes `name: value\r\n`.
fn put_header(out: &mut impl BufMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Writes every header of `map`. `HeaderValue` cannot hold CR or LF, so no header can be
/// injected through a value.
fn put_headers(out: &mut impl BufMut, map: &HeaderMap) {
    for (name, value) in map {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_1_3_accept_vector() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn generated_keys_are_16_random_bytes() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_eq!(BASE64.decode(&a).unwrap().len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn protocols_parse_as_token_lists() {
        assert_eq!(
            parse_protocols(["chat", "superchat, v2"]),
            Ok(vec!["chat".into(), "superchat".into(), "v2".into()])
        );
        assert!(parse_protocols(["a/b"]).is_err());
    }

    #[test]
    fn error_stays_small() {
        assert!(size_of::<HandshakeError>() <= 32);
    }

    #[test]
    fn statuses_and_sides() {
        use HandshakeError as E;
        let req = Side::Request;
        let res = Side::Response;
        let cases = [
            (E::HeadTooLarge { side: req, max: 1 }, Some(431)),
            (E::HeadTooLarge { side: res, max: 1 }, None),
            (E::TooManyHeaders { side: req, max: 1 }, Some(431)),
            (
                E::Malformed {
                    side: req,
                    kind: HeadSyntax::Token,
                },
                Some(400),
            ),
            (
                E::MissingHeader {
                    side: res,
                    name: "Upgrade",
                },
                None,
            ),
            (E::MethodNotGet, Some(405)),
            (E::MethodNotConnect, Some(405)),
            (E::ConnectProtocolNotWebSocket, Some(400)),
            (E::HttpVersionNotSupported, Some(505)),
            (E::UpgradeRequired, Some(426)),
            (E::UnsupportedVersion, Some(426)),
            (E::InvalidKey, Some(400)),
            (E::AcceptMismatch, None),
            (E::ProtocolNotOffered, None),
        ];
        for (e, want) in cases {
            assert_eq!(e.status().map(|s| s.as_u16()), want, "{e:?}");
            assert_eq!(e.side() == Side::Request, want.is_some(), "{e:?}");
        }
    }
}
