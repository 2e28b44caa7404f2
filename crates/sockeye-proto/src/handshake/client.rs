//! The client side: write the upgrade request, validate the server's response (RFC 6455
//! section 4.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use super::http::{HeadScanner, parse_response_head};
use super::{
    HandshakeError, HandshakeMisuse, Side, VERSION, accept_key, check_extra, generate_key,
    has_token, header_texts, put_header, put_headers,
};
use crate::config::Config;
use crate::extension::header::{ExtensionParams, format_extensions, is_token, parse_extensions};

/// A client's opening handshake: the request to send and the state to check the response.
///
/// Build it with [`new`](Self::new), set options, write the request with
/// [`encode_request`](Self::encode_request), then feed what the server sends to
/// [`handle_response`](Self::handle_response) until it returns `Some`.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    uri: super::WsUri,
    key: String,
    origin: Option<HeaderValue>,
    protocols: Vec<String>,
    extensions: Vec<ExtensionParams>,
    headers: HeaderMap,
    scanner: HeadScanner,
}

impl ClientHandshake {
    /// A handshake for `uri` with a fresh random key and no options.
    ///
    /// # Errors
    /// When the operating system's random source fails.
    pub fn new(uri: super::WsUri) -> Result<Self, getrandom::Error> {
        Ok(Self::with_encoded_key(uri, generate_key()?))
    }

    /// A handshake with a chosen 16-byte nonce instead of a random one, for tests. Section 4.1
    /// requires a random nonce per connection: do not use this in production.
    pub fn with_key(uri: super::WsUri, nonce: [u8; 16]) -> Self {
        Self::with_encoded_key(uri, BASE64.encode(nonce))
    }

    fn with_encoded_key(uri: super::WsUri, key: String) -> Self {
        Self {
            uri,
            key,
            origin: None,
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: HeaderMap::new(),
            scanner: HeadScanner::default(),
        }
    }

    /// Sends an `Origin` header (section 4.1: browsers must, other clients may).
    #[must_use]
    pub fn origin(mut self, origin: Option<HeaderValue>) -> Self {
        self.origin = origin;
        self
    }

    /// Offers these subprotocols, in order of preference. Each must be a token, offered once.
    #[must_use]
    pub fn protocols(mut self, protocols: Vec<String>) -> Self {
        self.protocols = protocols;
        self
    }

    /// Offers these extensions, in order of preference.
    #[must_use]
    pub fn extensions(mut self, offers: Vec<ExtensionParams>) -> Self {
        self.extensions = offers;
        self
    }

    /// Adds these headers to the request (authentication, cookies, ...). They may not include
    /// the headers the handshake writes itself.
    #[must_use]
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// The URI this handshake connects to.
    pub fn uri(&self) -> &super::WsUri {
        &self.uri
    }

    /// The `Sec-WebSocket-Key` value sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Appends the request head to `out`. Nothing is written on error.
    ///
    /// # Errors
    /// [`HandshakeMisuse`] when a subprotocol is not a token or is repeated, an extension offer
    /// is not valid, or an extra header is one the handshake writes itself.
    pub fn encode_request(&self, out: &mut impl BufMut) -> Result<(), HandshakeMisuse> {
        self.check_options(&[
            header::HOST,
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_KEY,
        ])?;

        // Section 4.1: a GET for the resource name, HTTP/1.1, with these headers.
        out.put_slice(b"GET ");
        out.put_slice(self.uri.path_and_query().as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        put_header(out, b"Host", self.uri.host_header().as_bytes());
        put_header(out, b"Upgrade", b"websocket");
        put_header(out, b"Connection", b"Upgrade");
        put_header(out, b"Sec-WebSocket-Key", self.key.as_bytes());
        put_header(out, b"Sec-WebSocket-Version", VERSION.as_bytes());
        if let Some(origin) = &self.origin {
            put_header(out, b"Origin", origin.as_bytes());
        }
        if !self.protocols.is_empty() {
            put_header(
                out,
                b"Sec-WebSocket-Protocol",
                self.protocols.join(", ").as_bytes(),
            );
        }
        if !self.extensions.is_empty() {
            put_header(
                out,
                b"Sec-WebSocket-Extensions",
                format_extensions(&self.extensions).as_bytes(),
            );
        }
        put_headers(out, &self.headers);
        out.put_slice(b"\r\n");
        Ok(())
    }

    /// The RFC 8441 extended CONNECT for an HTTP/2 client to send: method CONNECT, the URI
    /// (`https` or `http`, the authority, the path and query), `Sec-WebSocket-Version`, the
    /// Origin, the offered subprotocols and extensions and the extra headers; the caller adds
    /// the `:protocol` pseudo-header (`websocket`) its HTTP/2 library takes separately. There is
    /// no key: the answer is a 200, checked by
    /// [`handle_extended_connect_response`](Self::handle_extended_connect_response).
    ///
    /// # Errors
    /// As [`encode_request`](Self::encode_request); also an extra header HTTP/2 forbids
    /// (`Connection`, `Upgrade`, `Host`, `Transfer-Encoding`...).
    pub fn extended_connect_request(&self) -> Result<http::Request<()>, HandshakeMisuse> {
        self.check_options(&[
            header::HOST,
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_KEY,
            header::TRANSFER_ENCODING,
            header::TE,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
        ])?;
        let scheme = if self.uri.is_secure() {
            "https"
        } else {
            "http"
        };
        let uri = format!(
            "{scheme}://{}{}",
            self.uri.host_header(),
            self.uri.path_and_query()
        );
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::CONNECT;
        *request.version_mut() = http::Version::HTTP_2;
        *request.uri_mut() = uri.parse().map_err(|_| HandshakeMisuse::InvalidUri)?;
        let headers = request.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(VERSION),
        );
        if let Some(origin) = &self.origin {
            headers.insert(header::ORIGIN, origin.clone());
        }
        // Tokens, checked above: valid header values.
        if !self.protocols.is_empty()
            && let Ok(value) = HeaderValue::from_str(&self.protocols.join(", "))
        {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if !self.extensions.is_empty()
            && let Ok(value) = HeaderValue::from_str(&format_extensions(&self.extensions))
        {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        Ok(request)
    }

    /// Checks the answer to [`extended_connect_request`](Self::extended_connect_request)
    /// (RFC 8441 section 5): a 2xx opens the WebSocket, and the subprotocol and extensions are
    /// held to what was offered, as for an HTTP/1.1 upgrade. There is no `Sec-WebSocket-Accept`
    /// to check.
    ///
    /// # Errors
    /// [`HandshakeError::UnexpectedStatus`] for any other status (the caller reads the body if
    /// it wants it); a [`Side::Response`] error for an answer that breaks the negotiation.
    pub fn handle_extended_connect_response(
        &self,
        response: Response<()>,
    ) -> Result<ClientAccepted, HandshakeError> {
        if !response.status().is_success() {
            let status = response.status();
            let (parts, ()) = response.into_parts();
            return Err(HandshakeError::UnexpectedStatus {
                status,
                headers: Box::new(parts.headers),
            });
        }
        self.negotiated(response)
    }

    /// The options of the request, checked before either form is written: subprotocols are
    /// tokens offered once, extension offers are valid, and the extra headers are none of those
    /// the handshake writes itself nor `forbidden`.
    fn check_options(&self, forbidden: &[HeaderName]) -> Result<(), HandshakeMisuse> {
        for (index, p) in self.protocols.iter().enumerate() {
            if !is_token(p) {
                return Err(HandshakeMisuse::InvalidProtocol { index });
            }
            if self.protocols.iter().take(index).any(|q| q == p) {
                return Err(HandshakeMisuse::DuplicateProtocol { index });
            }
        }
        if let Some(index) = self.extensions.iter().position(|e| !e.is_valid()) {
            return Err(HandshakeMisuse::InvalidExtension { index });
        }
        let mut reserved = forbidden.to_vec();
        reserved.extend([
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ]);
        if self.origin.is_some() {
            reserved.push(header::ORIGIN);
        }
        check_extra(&self.headers, &reserved)
    }

    /// Feeds bytes received from the server. `Ok(None)`: the response head is incomplete and
    /// nothing was consumed; call again when more bytes arrive (append to the same `buf`).
    ///
    /// On success the response head, and only it, is removed from `buf`: what follows is the
    /// first WebSocket data. On [`HandshakeError::UnexpectedStatus`] the head is removed too, and
    /// the body, if any, follows in `buf`. On other errors `buf` is left as it was.
    ///
    /// # Errors
    /// A [`Side::Response`] [`HandshakeError`] when the response breaks section 4.1 or exceeds
    /// the limits of `config`; the client must then fail the connection.
    pub fn handle_response(
        &mut self,
        buf: &mut BytesMut,
        config: &Config,
    ) -> Result<Option<ClientAccepted>, HandshakeError> {
        let Some(end) = self.scanner.scan(buf, config, Side::Response)? else {
            return Ok(None);
        };
        let head = buf.get(..end.len).unwrap_or_default();
        let response = parse_response_head(head, end, config)?;
        let checked = self.check(response);
        if matches!(
            checked,
            Ok(_) | Err(HandshakeError::UnexpectedStatus { .. })
        ) {
            let _head = buf.split_to(end.len);
        }
        checked.map(Some)
    }

    /// The section 4.1 checks of a complete response, in the RFC's order.
    fn check(&self, response: Response<()>) -> Result<ClientAccepted, HandshakeError> {
        let side = Side::Response;
        // Section 4.1: anything but 101 is handled as plain HTTP (redirect, auth, ...).
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let (parts, ()) = response.into_parts();
            return Err(HandshakeError::UnexpectedStatus {
                status,
                headers: Box::new(parts.headers),
            });
        }
        let headers = response.headers();
        // Upgrade must contain websocket, Connection must contain upgrade (ASCII case ignored).
        require_token(headers, &header::UPGRADE, "Upgrade", "websocket")
            .map_err(|missing| missing.unwrap_or(HandshakeError::UpgradeNotWebSocket { side }))?;
        require_token(headers, &header::CONNECTION, "Connection", "upgrade")
            .map_err(|missing| missing.unwrap_or(HandshakeError::ConnectionNotUpgrade { side }))?;

        // Sec-WebSocket-Accept must be the hash of our key, compared exactly.
        let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        let accept = accepts.next().ok_or(HandshakeError::MissingHeader {
            side,
            name: "Sec-WebSocket-Accept",
        })?;
        if accepts.next().is_some() {
            return Err(HandshakeError::DuplicateHeader {
                side,
                name: "Sec-WebSocket-Accept",
            });
        }
        if accept.as_bytes().trim_ascii() != accept_key(self.key.as_bytes()).as_bytes() {
            return Err(HandshakeError::AcceptMismatch);
        }
        self.negotiated(response)
    }

    /// The checks both forms share: the extensions and the subprotocol the server selected
    /// must be among those offered.
    fn negotiated(&self, response: Response<()>) -> Result<ClientAccepted, HandshakeError> {
        let side = Side::Response;
        let headers = response.headers();

        // Extensions the server uses must be among those we offered.
        let values = header_texts(headers, &header::SEC_WEBSOCKET_EXTENSIONS)
            .map_err(|error| HandshakeError::InvalidExtensions { side, error })?;
        let extensions = parse_extensions(values)
            .map_err(|error| HandshakeError::InvalidExtensions { side, error })?;
        if let Some(ext) = extensions
            .iter()
            .find(|e| !self.extensions.iter().any(|o| o.is_named(&e.name)))
        {
            return Err(HandshakeError::ExtensionNotOffered {
                name: ext.name.as_str().into(),
            });
        }

        // A subprotocol, if any, must be exactly one of those we offered. Subprotocol names are
        // compared exactly, as browsers do.
        let mut protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        let protocol = match (protocols.next(), protocols.next()) {
            (None, _) => None,
            (Some(value), None) => {
                let value = value
                    .to_str()
                    .map_err(|_| HandshakeError::ProtocolNotOffered)?
                    .trim_matches([' ', '\t']);
                match self.protocols.iter().find(|p| *p == value) {
                    Some(p) => Some(p.clone()),
                    None => return Err(HandshakeError::ProtocolNotOffered),
                }
            }
            (Some(_), Some(_)) => return Err(HandshakeError::ProtocolNotOffered),
        };

        Ok(ClientAccepted {
            response,
            protocol,
            extensions,
        })
    }
}

/// `Err(Some(missing))` when the header is absent, `Err(None)` when it lacks the token.
fn require_token(
    headers: &HeaderMap,
    name: &HeaderName,
    display: &'static str,
    token: &str,
) -> Result<(), Option<HandshakeError>> {
    if !headers.contains_key(name) {
        return Err(Some(HandshakeError::MissingHeader {
            side: Side::Response,
            name: display,
        }));
    }
    if has_token(headers, name, token) {
        Ok(())
    } else {
        Err(None)
    }
}

/// A successful opening handshake, seen from the client.
#[derive(Debug)]
pub struct ClientAccepted {
    /// The server's 101 response head.
    pub response: Response<()>,
    /// The subprotocol the server selected, one of those offered.
    pub protocol: Option<String>,
    /// The extensions the server accepted, in its order; each was offered.
    pub extensions: Vec<ExtensionParams>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 16] = *b"the sample nonce";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn client() -> ClientHandshake {
        ClientHandshake::with_key("ws://server.example.com/chat".parse().unwrap(), NONCE)
            .protocols(vec!["chat".into(), "superchat".into()])
            .extensions(vec![ExtensionParams::new("permessage-deflate")])
    }

    fn response(extra: &str) -> BytesMut {
        BytesMut::from(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
    }

    fn run(c: &mut ClientHandshake, buf: &[u8]) -> Result<Option<ClientAccepted>, HandshakeError> {
        c.handle_response(&mut BytesMut::from(buf), &Config::default())
    }

    #[test]
    fn rfc8441_extended_connect_request_and_answer() {
        let c = ClientHandshake::with_key(
            "wss://server.example.com:8443/chat?x=1".parse().unwrap(),
            NONCE,
        )
        .protocols(vec!["chat".into(), "superchat".into()])
        .extensions(vec![ExtensionParams::new("permessage-deflate")])
        .origin(Some(HeaderValue::from_static("https://example.com")));
        let request = c.extended_connect_request().unwrap();
        assert_eq!(request.method(), http::Method::CONNECT);
        assert_eq!(request.version(), http::Version::HTTP_2);
        assert_eq!(request.uri(), "https://server.example.com:8443/chat?x=1");
        let headers = request.headers();
        assert_eq!(headers[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat, superchat");
        assert_eq!(
            headers[header::SEC_WEBSOCKET_EXTENSIONS],
            "permessage-deflate"
        );
        assert_eq!(headers[header::ORIGIN], "https://example.com");
        for name in [
            header::SEC_WEBSOCKET_KEY,
            header::UPGRADE,
            header::CONNECTION,
            header::HOST,
        ] {
            assert!(!headers.contains_key(&name), "{name}");
        }
        // A header HTTP/2 forbids is the caller's misuse.
        let mut extra = HeaderMap::new();
        extra.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(
            c.clone()
                .headers(extra)
                .extended_connect_request()
                .unwrap_err(),
            HandshakeMisuse::ReservedHeader {
                name: header::CONNECTION
            }
        );

        let answer = |status: u16, headers: &[(&str, &str)]| {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in headers {
                response.headers_mut().append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            response
        };
        let accepted = c
            .handle_extended_connect_response(answer(
                200,
                &[
                    ("sec-websocket-protocol", "superchat"),
                    ("sec-websocket-extensions", "permessage-deflate"),
                ],
            ))
            .unwrap();
        assert_eq!(accepted.protocol.as_deref(), Some("superchat"));
        assert_eq!(accepted.extensions.len(), 1);
        assert!(matches!(
            c.handle_extended_connect_response(answer(403, &[])),
            Err(HandshakeError::UnexpectedStatus { status, .. }) if status == StatusCode::FORBIDDEN
        ));
        assert!(matches!(
            c.handle_extended_connect_response(answer(200, &[("sec-websocket-protocol", "other")])),
            Err(HandshakeError::ProtocolNotOffered)
        ));
        assert!(matches!(
            c.handle_extended_connect_response(answer(
                200,
                &[("sec-websocket-extensions", "x-other")]
            )),
            Err(HandshakeError::ExtensionNotOffered { .. })
        ));
    }

    #[test]
    fn rfc6455_1_3_request_bytes() {
        let mut out = Vec::new();
        client()
            .origin(Some(HeaderValue::from_static("http://example.com")))
            .encode_request(&mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
    }

    #[test]
    fn random_keys_differ() {
        let uri: super::super::WsUri = "ws://h".parse().unwrap();
        let a = ClientHandshake::new(uri.clone()).unwrap();
        let b = ClientHandshake::new(uri).unwrap();
        assert_ne!(a.key(), b.key());
        assert_eq!(BASE64.decode(a.key()).unwrap().len(), 16);
    }

    #[test]
    fn encode_rejects_misuse() {
        let mut out = Vec::new();
        let c = client().protocols(vec!["chat".into(), "a b".into()]);
        assert_eq!(
            c.encode_request(&mut out),
            Err(HandshakeMisuse::InvalidProtocol { index: 1 })
        );
        let c = client().protocols(vec!["chat".into(), "chat".into()]);
        assert_eq!(
            c.encode_request(&mut out),
            Err(HandshakeMisuse::DuplicateProtocol { index: 1 })
        );
        let c = client().extensions(vec![ExtensionParams::new("x").with_param("a", Some("b c"))]);
        assert_eq!(
            c.encode_request(&mut out),
            Err(HandshakeMisuse::InvalidExtension { index: 0 })
        );
        for name in [
            header::HOST,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_PROTOCOL,
            header::CONNECTION,
        ] {
            let mut extra = HeaderMap::new();
            extra.insert(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(
                client().headers(extra).encode_request(&mut out),
                Err(HandshakeMisuse::ReservedHeader { name })
            );
        }
        // Origin is reserved only when set through `origin`.
        let mut extra = HeaderMap::new();
        extra.insert(header::ORIGIN, HeaderValue::from_static("http://a"));
        assert!(
            client()
                .headers(extra.clone())
                .encode_request(&mut out)
                .is_ok()
        );
        out.clear();
        let c = client()
            .origin(Some(HeaderValue::from_static("http://b")))
            .headers(extra);
        assert!(c.encode_request(&mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn rfc6455_4_1_valid_response_keeps_following_frames() {
        let mut c = client();
        let mut buf = response(
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
        );
        buf.extend_from_slice(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        let accepted = c
            .handle_response(&mut buf, &Config::default())
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..], &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        assert_eq!(accepted.protocol.as_deref(), Some("chat"));
        assert_eq!(
            accepted.extensions,
            vec![
                ExtensionParams::new("permessage-deflate")
                    .with_param("server_no_context_takeover", None)
            ]
        );
        assert_eq!(accepted.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    }

    #[test]
    fn rfc6455_4_1_response_fed_byte_by_byte() {
        let whole = response("X-Extra: 1\r\n");
        let mut c = client();
        let mut buf = BytesMut::new();
        for (i, &b) in whole.iter().enumerate() {
            buf.put_u8(b);
            let r = c.handle_response(&mut buf, &Config::default()).unwrap();
            assert_eq!(r.is_some(), i + 1 == whole.len());
        }
        assert!(buf.is_empty());
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table
    fn rfc6455_4_1_response_checks() {
        use HandshakeError as E;
        let side = Side::Response;
        let ok = |s: &str| s.to_owned();
        let cases: Vec<(String, E)> = vec![
            (
                ok(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                ),
                E::MissingHeader {
                    side,
                    name: "Upgrade",
                },
            ),
            (
                ok(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                ),
                E::UpgradeNotWebSocket { side },
            ),
            (
                ok("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
                E::MissingHeader {
                    side,
                    name: "Connection",
                },
            ),
            (
                ok("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: keep-alive\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
                E::ConnectionNotUpgrade { side },
            ),
            (
                ok("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\n\r\n"),
                E::MissingHeader {
                    side,
                    name: "Sec-WebSocket-Accept",
                },
            ),
            (
                ok("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n"),
                E::AcceptMismatch,
            ),
            (
                String::from_utf8(response("Sec-WebSocket-Protocol: other\r\n").to_vec()).unwrap(),
                E::ProtocolNotOffered,
            ),
            (
                String::from_utf8(response("Sec-WebSocket-Protocol: chat, superchat\r\n").to_vec())
                    .unwrap(),
                E::ProtocolNotOffered,
            ),
            (
                String::from_utf8(
                    response("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n")
                        .to_vec(),
                )
                .unwrap(),
                E::ProtocolNotOffered,
            ),
            (
                String::from_utf8(response("Sec-WebSocket-Protocol: CHAT\r\n").to_vec()).unwrap(),
                E::ProtocolNotOffered,
            ),
            (
                String::from_utf8(response("Sec-WebSocket-Extensions: x-mux\r\n").to_vec())
                    .unwrap(),
                E::ExtensionNotOffered {
                    name: "x-mux".into(),
                },
            ),
            (
                String::from_utf8(response("Sec-WebSocket-Extensions: a;\r\n").to_vec()).unwrap(),
                E::InvalidExtensions {
                    side,
                    error: crate::extension::header::ExtensionHeaderError::ExpectedToken {
                        offset: 2,
                    },
                },
            ),
            (
                ok("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: a\r\nSec-WebSocket-Accept: b\r\n\r\n"),
                E::DuplicateHeader {
                    side,
                    name: "Sec-WebSocket-Accept",
                },
            ),
            (
                ok("HTTP/1.1 101 Switching Protocols\r\nUpgr ade: websocket\r\n\r\n"),
                E::Malformed {
                    side,
                    kind: super::super::HeadSyntax::HeaderName,
                },
            ),
        ];
        for (input, want) in cases {
            let mut buf = BytesMut::from(input.as_bytes());
            assert_eq!(
                client()
                    .handle_response(&mut buf, &Config::default())
                    .unwrap_err(),
                want,
                "{input}"
            );
            assert_eq!(&buf[..], input.as_bytes(), "buffer kept on error");
            assert_eq!(want.status(), None);
        }
    }

    #[test]
    fn rfc6455_4_1_tokens_are_case_insensitive_and_listed() {
        let mut c = client();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
             connection: keep-alive\r\nCONNECTION: x, UPGRADE\r\n\
             sec-websocket-accept:  {ACCEPT}\r\n\r\n"
        );
        let accepted = run(&mut c, head.as_bytes()).unwrap().unwrap();
        assert_eq!(accepted.protocol, None);
        assert!(accepted.extensions.is_empty());
    }

    #[test]
    fn protocol_without_offer_is_rejected() {
        let mut c = ClientHandshake::with_key("ws://h/".parse().unwrap(), NONCE);
        let head = response("Sec-WebSocket-Protocol: chat\r\n");
        assert_eq!(
            run(&mut c, &head).unwrap_err(),
            HandshakeError::ProtocolNotOffered
        );
        let head = response("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(matches!(
            run(&mut c, &head).unwrap_err(),
            HandshakeError::ExtensionNotOffered { .. }
        ));
    }

    #[test]
    fn unexpected_status_consumes_head_and_keeps_body() {
        let mut c = client();
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/\r\nContent-Length: 2\r\n\r\nhi"[..],
        );
        let err = c.handle_response(&mut buf, &Config::default()).unwrap_err();
        let HandshakeError::UnexpectedStatus { status, headers } = err else {
            panic!("{err:?}");
        };
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(headers["location"], "ws://elsewhere/");
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn response_limits() {
        let config = Config::builder()
            .max_handshake_bytes(100)
            .max_headers(3)
            .build()
            .unwrap();
        let mut c = client();
        let mut buf = BytesMut::new();
        let long = [b'a'; 200];
        let mut result = Ok(None);
        for &b in &long {
            buf.put_u8(b);
            result = c.handle_response(&mut buf, &config);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(buf.len(), 101);
        assert_eq!(
            result.unwrap_err(),
            HandshakeError::HeadTooLarge {
                side: Side::Response,
                max: 100
            }
        );
        let config = Config::builder().max_headers(3).build().unwrap();
        let mut head = response("A: 1\r\nB: 2\r\n");
        assert_eq!(
            client().handle_response(&mut head, &config).unwrap_err(),
            HandshakeError::TooManyHeaders {
                side: Side::Response,
                max: 3
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_responses_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            split in 0usize..300,
        ) {
            let config = Config::builder().max_handshake_bytes(256).max_headers(8).build().unwrap();
            let mut c = client();
            let split = split.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..split]);
            if let Ok(None) = c.handle_response(&mut buf, &config) {
                buf.extend_from_slice(&bytes[split..]);
                let _ = c.handle_response(&mut buf, &config);
            }
        }

        #[test]
        fn valid_prefix_with_arbitrary_headers_never_panics(
            extra in "([A-Za-z-]{1,8}: [ -~]{0,20}\r\n){0,4}",
        ) {
            let mut c = client();
            let _ = run(&mut c, &response(&extra));
        }
    }
}
