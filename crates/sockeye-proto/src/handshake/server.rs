//! The server side: parse and validate the client's upgrade request (RFC 6455 section 4.2.1),
//! then accept it (section 4.2.2) or reject it with an HTTP error.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};

use super::http::{HeadScanner, parse_request_head};
use super::{
    HandshakeError, HandshakeMisuse, Side, VERSION, accept_key, check_extra, has_token,
    header_texts, parse_protocols, put_header, put_headers, put_status_line, write_plain_response,
};
use crate::config::Config;
use crate::extension::header::{ExtensionParams, format_extensions, parse_extensions};

/// Parses a request head from `buf`, scanning it from the start on every call.
///
/// Fine when each call brings a whole read; when a request may arrive in many small pieces, keep
/// a [`RequestParser`] instead, which scans each byte only once. See [`RequestParser::parse`].
///
/// # Errors
/// As [`RequestParser::parse`].
pub fn parse_request(
    buf: &mut BytesMut,
    config: &Config,
) -> Result<Option<UpgradeRequest>, HandshakeError> {
    RequestParser::new().parse(buf, config)
}

/// Incremental parser of a client's upgrade request. It remembers how far it has scanned, so
/// feeding a request one byte at a time costs linear time.
#[derive(Debug, Clone, Default)]
pub struct RequestParser {
    scanner: HeadScanner,
}

impl RequestParser {
    /// A parser at the start of a request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the bytes received so far (append new bytes to the same `buf` between calls).
    /// `Ok(None)`: the head is incomplete and nothing was consumed.
    ///
    /// On success exactly the request head is removed from `buf`; what follows is the first
    /// WebSocket data. On error `buf` is left as it was; answer with
    /// [`HandshakeError::write_response`] and close the connection.
    ///
    /// # Errors
    /// A [`Side::Request`] [`HandshakeError`] when the request breaks section 4.2.1, or has more
    /// bytes or headers than `config` allows (checked as the bytes arrive).
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        config: &Config,
    ) -> Result<Option<UpgradeRequest>, HandshakeError> {
        let Some(end) = self.scanner.scan(buf, config, Side::Request)? else {
            return Ok(None);
        };
        let head = buf.get(..end.len).unwrap_or_default();
        let request = validate(parse_request_head(head, end, config)?)?;
        let _head = buf.split_to(end.len);
        Ok(Some(request))
    }
}

/// The section 4.2.1 checks, in the RFC's order.
fn validate(request: Request<()>) -> Result<UpgradeRequest, HandshakeError> {
    let side = Side::Request;
    // A WebSocket over HTTP/2 or later is RFC 8441's extended CONNECT, which this crate does
    // not speak: 505, before the method (whose 405 would name GET as the way).
    if request.version() > Version::HTTP_11 {
        return Err(HandshakeError::HttpVersionNotSupported);
    }
    // Item 1: an HTTP/1.1 or later GET.
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if request.version() < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    let headers = request.headers();
    // Item 2: a Host header (RFC 7230 section 5.4: exactly one).
    match headers.get_all(header::HOST).iter().count() {
        0 => {
            return Err(HandshakeError::MissingHeader { side, name: "Host" });
        }
        1 => {}
        _ => return Err(HandshakeError::DuplicateHeader { side, name: "Host" }),
    }
    // Item 3: Upgrade includes websocket. Without any Upgrade, this is plain HTTP for a
    // WebSocket resource: 426 tells the client to upgrade.
    if !headers.contains_key(header::UPGRADE) {
        return Err(HandshakeError::UpgradeRequired);
    }
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::UpgradeNotWebSocket { side });
    }
    // Item 4: Connection includes the upgrade option.
    if !headers.contains_key(header::CONNECTION) {
        return Err(HandshakeError::MissingHeader {
            side,
            name: "Connection",
        });
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::ConnectionNotUpgrade { side });
    }
    // Item 5: Sec-WebSocket-Key, once, the base64 of a 16-byte nonce.
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = keys.next().ok_or(HandshakeError::MissingHeader {
        side,
        name: "Sec-WebSocket-Key",
    })?;
    if keys.next().is_some() {
        return Err(HandshakeError::DuplicateHeader {
            side,
            name: "Sec-WebSocket-Key",
        });
    }
    let key = key
        .to_str()
        .map_err(|_| HandshakeError::InvalidKey)?
        .trim_matches([' ', '\t']);
    if BASE64.decode(key).map(|nonce| nonce.len()) != Ok(16) {
        return Err(HandshakeError::InvalidKey);
    }
    let key = key.to_owned();
    // Item 6: Sec-WebSocket-Version 13, else 426 naming the version we speak (section 4.4).
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    // Items 8 and 9 (optional): subprotocols and extensions the client offers.
    let protocols = header_texts(headers, &header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(parse_protocols)
        .map_err(|error| HandshakeError::InvalidProtocols { error })?;
    let extensions = header_texts(headers, &header::SEC_WEBSOCKET_EXTENSIONS)
        .and_then(parse_extensions)
        .map_err(|error| HandshakeError::InvalidExtensions { side, error })?;
    Ok(UpgradeRequest {
        request,
        key,
        protocols,
        extensions,
    })
}

/// A valid upgrade request, waiting for the application to accept or reject it.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    request: Request<()>,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<ExtensionParams>,
}

impl UpgradeRequest {
    /// The request head: method, URI, version and headers.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The request head, by value.
    pub fn into_request(self) -> Request<()> {
        self.request
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The `Sec-WebSocket-Key` value, without surrounding whitespace.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols the client offers, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions the client offers, in its order of preference.
    pub fn extensions(&self) -> &[ExtensionParams] {
        &self.extensions
    }

    /// The first `Origin` header, if any (section 4.2.1 item 7: sent by browsers; a server may
    /// refuse origins it does not trust, with 403).
    pub fn origin(&self) -> Option<&HeaderValue> {
        self.request.headers().get(header::ORIGIN)
    }

    /// The path of the request target, e.g. `/chat`.
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The query of the request target, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.request.uri().query()
    }

    /// Checks a request an HTTP server already parsed (hyper, say) against section 4.2.1, as
    /// [`RequestParser`] checks one it parsed itself. The size limits are the HTTP server's.
    ///
    /// # Errors
    /// A [`Side::Request`] [`HandshakeError`]: answer it with
    /// [`HandshakeError::response_parts`].
    pub fn from_request(request: Request<()>) -> Result<Self, HandshakeError> {
        validate(request)
    }

    /// The 101 response that accepts the upgrade, for an HTTP layer that writes responses
    /// itself: the same headers as [`accept`](Self::accept) writes.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_response(
        &self,
        protocol: Option<&str>,
        extensions: &[ExtensionParams],
        extra: &HeaderMap,
    ) -> Result<Response<()>, HandshakeMisuse> {
        self.check_accept(protocol, extensions, extra)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let accept = accept_key(self.key.as_bytes());
        // The accept key is base64, and the protocol and extensions were checked as tokens:
        // every one is a valid header value.
        if let Ok(value) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
        }
        if let Some(value) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if !extensions.is_empty()
            && let Ok(value) = HeaderValue::from_str(&format_extensions(extensions))
        {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        for (name, value) in extra {
            headers.append(name, value.clone());
        }
        Ok(response)
    }

    /// Writes the 101 response that accepts the upgrade (section 4.2.2): `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept`, the selected subprotocol and extensions, then
    /// `extra`. Nothing is written on error.
    ///
    /// # Errors
    /// [`HandshakeMisuse`] when `protocol` was not offered by the client, an extension was not
    /// offered or is not valid, or `extra` holds a header the handshake writes itself.
    pub fn accept(
        &self,
        protocol: Option<&str>,
        extensions: &[ExtensionParams],
        extra: &HeaderMap,
        out: &mut impl BufMut,
    ) -> Result<(), HandshakeMisuse> {
        self.check_accept(protocol, extensions, extra)?;
        put_status_line(out, StatusCode::SWITCHING_PROTOCOLS);
        put_header(out, b"Upgrade", b"websocket");
        put_header(out, b"Connection", b"Upgrade");
        put_header(
            out,
            b"Sec-WebSocket-Accept",
            accept_key(self.key.as_bytes()).as_bytes(),
        );
        if let Some(p) = protocol {
            put_header(out, b"Sec-WebSocket-Protocol", p.as_bytes());
        }
        if !extensions.is_empty() {
            put_header(
                out,
                b"Sec-WebSocket-Extensions",
                format_extensions(extensions).as_bytes(),
            );
        }
        put_headers(out, extra);
        out.put_slice(b"\r\n");
        Ok(())
    }

    /// What [`accept`](Self::accept) and [`accept_response`](Self::accept_response) check.
    fn check_accept(
        &self,
        protocol: Option<&str>,
        extensions: &[ExtensionParams],
        extra: &HeaderMap,
    ) -> Result<(), HandshakeMisuse> {
        // Section 4.2.2 step 5.4: the selected subprotocol must be one the client offered.
        if let Some(p) = protocol
            && !self.protocols.iter().any(|offered| offered == p)
        {
            return Err(HandshakeMisuse::ProtocolNotOffered);
        }
        for (index, ext) in extensions.iter().enumerate() {
            if !ext.is_valid() {
                return Err(HandshakeMisuse::InvalidExtension { index });
            }
            if !self.extensions.iter().any(|o| o.is_named(&ext.name)) {
                return Err(HandshakeMisuse::ExtensionNotOffered { index });
            }
        }
        check_extra(
            extra,
            &[
                header::UPGRADE,
                header::CONNECTION,
                header::SEC_WEBSOCKET_ACCEPT,
                header::SEC_WEBSOCKET_PROTOCOL,
                header::SEC_WEBSOCKET_EXTENSIONS,
            ],
        )?;
        Ok(())
    }
}

/// Writes a complete HTTP/1.1 response refusing the upgrade: `status`, `Content-Type:
/// text/plain`, `Content-Length`, `Connection: close`, then `extra`, then `body`. The server
/// closes the connection after sending it.
///
/// # Errors
/// [`HandshakeMisuse::InvalidRejectStatus`] for a status that cannot carry a body (1xx, 204,
/// 304), [`HandshakeMisuse::ReservedHeader`] when `extra` sets `Content-Type`,
/// `Content-Length`, `Transfer-Encoding` or `Connection`. Nothing is written on error.
pub fn reject_response(
    status: StatusCode,
    extra: &HeaderMap,
    body: &str,
    out: &mut impl BufMut,
) -> Result<(), HandshakeMisuse> {
    check_reject(status, extra)?;
    write_plain_response(status, extra, body, out);
    Ok(())
}

/// What [`reject_response`] checks, for an HTTP layer that writes the refusal itself: a status
/// that can carry a body, and no header the refusal sets (`Content-Type`, `Content-Length`,
/// `Transfer-Encoding`, `Connection`).
///
/// # Errors
/// As [`reject_response`].
pub fn check_reject(status: StatusCode, extra: &HeaderMap) -> Result<(), HandshakeMisuse> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(HandshakeMisuse::InvalidRejectStatus { status });
    }
    check_extra(
        extra,
        &[
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ],
    )
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::extension::header::ExtensionHeaderError;
    use crate::handshake::{ClientHandshake, HeadSyntax, WsUri};

    /// RFC 6455 section 1.3, with the version header of section 4.1 added.
    const SAMPLE: &str = "GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(input: &str) -> Result<Option<UpgradeRequest>, HandshakeError> {
        parse_request(&mut BytesMut::from(input.as_bytes()), &Config::default())
    }

    /// SAMPLE with the header line starting with `name:` replaced by `line` (removed if empty).
    fn sample_with(name: &str, line: &str) -> String {
        let mut out = String::new();
        for l in SAMPLE.split_inclusive("\r\n") {
            if l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                out.push_str(line);
            } else {
                out.push_str(l);
            }
        }
        out
    }

    fn status(e: &HandshakeError) -> u16 {
        e.status().unwrap().as_u16()
    }

    #[test]
    fn rfc6455_1_3_sample_request() {
        let req = parse(SAMPLE).unwrap().unwrap();
        assert_eq!(req.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(req.protocols(), ["chat", "superchat"]);
        assert!(req.extensions().is_empty());
        assert_eq!(req.origin().unwrap(), "http://example.com");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), None);
        assert_eq!(req.request().method(), Method::GET);
        assert_eq!(req.headers()["host"], "server.example.com");

        let mut out = Vec::new();
        req.accept(Some("chat"), &[], &HeaderMap::new(), &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table
    fn rfc6455_4_2_1_validation_rules() {
        use HandshakeError as E;
        let side = Side::Request;
        let cases: Vec<(String, E, u16)> = vec![
            (SAMPLE.replacen("GET", "POST", 1), E::MethodNotGet, 405),
            (SAMPLE.replacen("GET", "get", 1), E::MethodNotGet, 405),
            (
                SAMPLE.replacen("HTTP/1.1", "HTTP/1.0", 1),
                E::HttpVersionTooOld,
                400,
            ),
            (
                SAMPLE.replacen("HTTP/1.1", "HTTP/2.0", 1),
                E::HttpVersionNotSupported,
                505,
            ),
            (
                SAMPLE.replacen("HTTP/1.1", "HTTP/x", 1),
                E::Malformed {
                    side,
                    kind: HeadSyntax::Version,
                },
                400,
            ),
            (
                sample_with("Host", ""),
                E::MissingHeader { side, name: "Host" },
                400,
            ),
            (
                sample_with("Host", "Host: a\r\nHost: b\r\n"),
                E::DuplicateHeader { side, name: "Host" },
                400,
            ),
            (sample_with("Upgrade", ""), E::UpgradeRequired, 426),
            (
                sample_with("Upgrade", "Upgrade: h2c\r\n"),
                E::UpgradeNotWebSocket { side },
                400,
            ),
            (
                sample_with("Connection", ""),
                E::MissingHeader {
                    side,
                    name: "Connection",
                },
                400,
            ),
            (
                sample_with("Connection", "Connection: keep-alive\r\n"),
                E::ConnectionNotUpgrade { side },
                400,
            ),
            (
                sample_with("Connection", "Connection: upgraded\r\n"),
                E::ConnectionNotUpgrade { side },
                400,
            ),
            (
                sample_with("Sec-WebSocket-Key", ""),
                E::MissingHeader {
                    side,
                    name: "Sec-WebSocket-Key",
                },
                400,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                ),
                E::DuplicateHeader {
                    side,
                    name: "Sec-WebSocket-Key",
                },
                400,
            ),
            (
                // 15 bytes
                sample_with(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n",
                ),
                E::InvalidKey,
                400,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n",
                ),
                E::InvalidKey,
                400,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: not base64!!!!!!!!!!!!\r\n",
                ),
                E::InvalidKey,
                400,
            ),
            (
                sample_with("Sec-WebSocket-Version", ""),
                E::UnsupportedVersion,
                426,
            ),
            (
                sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n"),
                E::UnsupportedVersion,
                426,
            ),
            (
                sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8\r\n"),
                E::UnsupportedVersion,
                426,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Protocol",
                    "Sec-WebSocket-Protocol: chat super\r\n",
                ),
                E::InvalidProtocols {
                    error: ExtensionHeaderError::UnexpectedByte {
                        offset: 5,
                        byte: b's',
                    },
                },
                400,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Protocol",
                    "Sec-WebSocket-Extensions: permessage-deflate; x=\"a b\"\r\n",
                ),
                E::InvalidExtensions {
                    side,
                    error: ExtensionHeaderError::QuotedValueNotToken { offset: 22 },
                },
                400,
            ),
            (
                SAMPLE.replacen("/chat", "/chat#x", 1),
                E::Malformed {
                    side,
                    kind: HeadSyntax::Target,
                },
                400,
            ),
            (
                SAMPLE.replacen("/chat", "*", 1),
                E::Malformed {
                    side,
                    kind: HeadSyntax::Target,
                },
                400,
            ),
            (
                sample_with("Origin", "Or igin: x\r\n"),
                E::Malformed {
                    side,
                    kind: HeadSyntax::HeaderName,
                },
                400,
            ),
        ];
        for (input, want, code) in cases {
            let mut buf = BytesMut::from(input.as_bytes());
            let err = parse_request(&mut buf, &Config::default()).unwrap_err();
            assert_eq!(err, want, "{input}");
            assert_eq!(status(&err), code, "{input}");
            assert_eq!(err.side(), Side::Request);
            assert_eq!(&buf[..], input.as_bytes(), "buffer kept on error");
        }
    }

    #[test]
    fn rfc6455_4_2_1_lenient_forms() {
        // Token lists, other case, several header lines, bare LF, leading empty line,
        // absolute-form target, HTTP/1.1 extensions tolerated.
        let input = "\r\nGET ws://server.example.com/chat?room=1 HTTP/1.1\n\
            host: server.example.com\n\
            upgrade: WebSocket\n\
            connection: keep-alive\n\
            connection: UPGRADE\n\
            sec-websocket-key:  dGhlIHNhbXBsZSBub25jZQ== \n\
            sec-websocket-version: 13\n\
            sec-websocket-extensions: permessage-deflate; client_max_window_bits, , x\n\
            sec-websocket-extensions: y; a=\"1\"\n\n";
        let req = parse(input).unwrap().unwrap();
        assert_eq!(req.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=1"));
        assert!(req.protocols().is_empty());
        assert_eq!(
            req.extensions(),
            [
                ExtensionParams::new("permessage-deflate")
                    .with_param("client_max_window_bits", None),
                ExtensionParams::new("x"),
                ExtensionParams::new("y").with_param("a", Some("1")),
            ]
        );
        assert_eq!(req.origin(), None);
    }

    #[test]
    fn every_split_and_byte_by_byte_give_the_same_result() {
        let mut input = SAMPLE.as_bytes().to_vec();
        input.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
        let want = parse(SAMPLE).unwrap().unwrap();
        for split in 0..=input.len() {
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::from(&input[..split]);
            let first = parser.parse(&mut buf, &Config::default()).unwrap();
            assert_eq!(first.is_some(), split >= SAMPLE.len());
            if first.is_none() {
                assert_eq!(buf.len(), split, "nothing consumed");
            }
            buf.extend_from_slice(&input[split..]);
            let req = first
                .unwrap_or_else(|| parser.parse(&mut buf, &Config::default()).unwrap().unwrap());
            assert_eq!(req.key(), want.key());
            assert_eq!(req.protocols(), want.protocols());
            assert_eq!(req.headers(), want.headers());
            assert_eq!(
                &buf[..],
                &input[SAMPLE.len()..],
                "frames stay in the buffer"
            );
        }

        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        for (i, &b) in input.iter().enumerate() {
            buf.put_u8(b);
            match parser.parse(&mut buf, &Config::default()).unwrap() {
                Some(req) => {
                    assert_eq!(i + 1, SAMPLE.len());
                    assert_eq!(req.key(), want.key());
                    assert!(buf.is_empty());
                }
                None => assert!(i + 1 != SAMPLE.len()),
            }
        }
        assert_eq!(&buf[..], &input[SAMPLE.len()..]);
    }

    #[test]
    fn errors_are_the_same_in_every_split() {
        let input = sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n");
        for split in 0..input.len() {
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::from(&input.as_bytes()[..split]);
            assert!(matches!(
                parser.parse(&mut buf, &Config::default()),
                Ok(None)
            ));
            buf.extend_from_slice(&input.as_bytes()[split..]);
            assert_eq!(
                parser.parse(&mut buf, &Config::default()).unwrap_err(),
                HandshakeError::UnsupportedVersion
            );
        }
    }

    #[test]
    fn head_over_the_limit_is_431_as_soon_as_the_limit_is_passed() {
        let max = 128;
        let config = Config::builder().max_handshake_bytes(max).build().unwrap();
        let input = sample_with(
            "Origin",
            &format!("Origin: http://{}.example\r\n", "a".repeat(200)),
        );
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        for (i, &b) in input.as_bytes().iter().enumerate() {
            buf.put_u8(b);
            let r = parser.parse(&mut buf, &config);
            if i < max {
                assert!(matches!(r, Ok(None)), "byte {i}");
            } else {
                let err = r.unwrap_err();
                assert_eq!(
                    err,
                    HandshakeError::HeadTooLarge {
                        side: Side::Request,
                        max
                    }
                );
                assert_eq!(status(&err), 431);
                assert_eq!(buf.len(), max + 1);
                break;
            }
        }
        // Whole, too.
        let err = parse_request(&mut BytesMut::from(input.as_bytes()), &config).unwrap_err();
        assert_eq!(status(&err), 431);
        // A head of exactly the limit passes, with frames after it.
        let config = Config::builder()
            .max_handshake_bytes(SAMPLE.len())
            .build()
            .unwrap();
        let mut buf = BytesMut::from(SAMPLE.as_bytes());
        buf.extend_from_slice(b"\x81\x00");
        assert!(parse_request(&mut buf, &config).unwrap().is_some());
        assert_eq!(&buf[..], b"\x81\x00");
    }

    #[test]
    fn too_many_headers_is_431_as_soon_as_the_limit_is_passed() {
        // SAMPLE has 7 headers.
        let config = Config::builder().max_headers(7).build().unwrap();
        assert!(parse(SAMPLE).unwrap().is_some());
        assert!(
            parse_request(&mut BytesMut::from(SAMPLE.as_bytes()), &config)
                .unwrap()
                .is_some()
        );
        let mut input = SAMPLE.trim_end_matches("\r\n").to_owned();
        input.push_str("\r\n");
        let eighth_ends = input.len() + "X-A: 1\r\n".len();
        for i in 0..1000 {
            write!(input, "X-{i}: 1\r\n").unwrap();
        }
        input.push_str("\r\n");
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        for (i, &b) in input.as_bytes().iter().enumerate() {
            buf.put_u8(b);
            match parser.parse(&mut buf, &config) {
                Ok(None) => assert!(i + 1 < eighth_ends, "byte {i}"),
                Ok(Some(_)) => panic!("accepted"),
                Err(err) => {
                    assert_eq!(
                        err,
                        HandshakeError::TooManyHeaders {
                            side: Side::Request,
                            max: 7
                        }
                    );
                    assert_eq!(status(&err), 431);
                    assert_eq!(i + 1, eighth_ends);
                    break;
                }
            }
        }
        let err = parse_request(&mut BytesMut::from(input.as_bytes()), &config).unwrap_err();
        assert_eq!(status(&err), 431);
    }

    #[test]
    fn accept_rejects_misuse() {
        let mut buf = BytesMut::from(
            sample_with(
                "Origin",
                "Sec-WebSocket-Extensions: permessage-deflate, x-foo\r\n",
            )
            .as_bytes(),
        );
        let req = parse_request(&mut buf, &Config::default())
            .unwrap()
            .unwrap();
        let none = HeaderMap::new();
        let mut out = Vec::new();
        assert_eq!(
            req.accept(Some("other"), &[], &none, &mut out),
            Err(HandshakeMisuse::ProtocolNotOffered)
        );
        assert_eq!(
            req.accept(None, &[ExtensionParams::new("x-bar")], &none, &mut out),
            Err(HandshakeMisuse::ExtensionNotOffered { index: 0 })
        );
        assert_eq!(
            req.accept(None, &[ExtensionParams::new("x foo")], &none, &mut out),
            Err(HandshakeMisuse::InvalidExtension { index: 0 })
        );
        let mut extra = HeaderMap::new();
        extra.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("x"));
        assert_eq!(
            req.accept(None, &[], &extra, &mut out),
            Err(HandshakeMisuse::ReservedHeader {
                name: header::SEC_WEBSOCKET_ACCEPT
            })
        );
        assert!(out.is_empty());
        req.accept(None, &[ExtensionParams::new("X-Foo")], &none, &mut out)
            .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\r\nSec-WebSocket-Extensions: X-Foo\r\n")
        );
    }

    #[test]
    fn reject_response_bytes() {
        let mut extra = HeaderMap::new();
        extra.insert("x-reason", HeaderValue::from_static("origin"));
        let mut out = BytesMut::new();
        reject_response(
            StatusCode::FORBIDDEN,
            &extra,
            "origin not allowed\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 19\r\nConnection: close\r\nx-reason: origin\r\n\r\n\
              origin not allowed\n"
        );
        let mut out = Vec::new();
        for status in [StatusCode::SWITCHING_PROTOCOLS, StatusCode::NO_CONTENT] {
            assert_eq!(
                reject_response(status, &HeaderMap::new(), "", &mut out),
                Err(HandshakeMisuse::InvalidRejectStatus { status })
            );
        }
        let mut extra = HeaderMap::new();
        extra.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(reject_response(StatusCode::FORBIDDEN, &extra, "", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn error_responses_name_the_problem() {
        for input in [
            sample_with("Sec-WebSocket-Version", ""),
            sample_with("Upgrade", ""),
            SAMPLE.replacen("GET", "PUT", 1),
            sample_with("Host", ""),
        ] {
            let err = parse(&input).unwrap_err();
            let mut out = BytesMut::new();
            assert_eq!(err.write_response(&mut out), err.status());
            let text = std::str::from_utf8(&out).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {} ", err.status().unwrap().as_str())),
                "{text}"
            );
            assert!(text.ends_with(&format!("\r\n\r\n{err}\n")), "{text}");
        }
    }

    #[test]
    fn client_request_round_trips_through_server_and_back() {
        let uri: WsUri = "wss://[::1]:9443/rooms/a?token=x".parse().unwrap();
        let offers = vec![
            ExtensionParams::new("permessage-deflate")
                .with_param("client_max_window_bits", None)
                .with_param("server_max_window_bits", Some("12")),
            ExtensionParams::new("x-other"),
        ];
        let mut extra = HeaderMap::new();
        extra.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        extra.append("x-trace", HeaderValue::from_static("1"));
        extra.append("x-trace", HeaderValue::from_static("2"));
        let mut client = ClientHandshake::new(uri)
            .unwrap()
            .origin(Some(HeaderValue::from_static("https://app.example")))
            .protocols(vec!["v2.json".into(), "v1.json".into()])
            .extensions(offers.clone())
            .headers(extra);
        let mut wire = BytesMut::new();
        client.encode_request(&mut wire).unwrap();
        wire.extend_from_slice(b"\x81\x80mask");

        let req = parse_request(&mut wire, &Config::default())
            .unwrap()
            .unwrap();
        assert_eq!(&wire[..], b"\x81\x80mask");
        assert_eq!(req.key(), client.key());
        assert_eq!(req.protocols(), ["v2.json", "v1.json"]);
        assert_eq!(req.extensions(), &offers[..]);
        assert_eq!(req.origin().unwrap(), "https://app.example");
        assert_eq!(req.path(), "/rooms/a");
        assert_eq!(req.query(), Some("token=x"));
        assert_eq!(req.headers()["host"], "[::1]:9443");
        assert_eq!(req.headers()["authorization"], "Bearer abc");
        let traces: Vec<_> = req.headers().get_all("x-trace").iter().collect();
        assert_eq!(traces, ["1", "2"]);

        let answer = vec![
            ExtensionParams::new("permessage-deflate")
                .with_param("server_max_window_bits", Some("12")),
        ];
        let mut extra = HeaderMap::new();
        extra.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        let mut wire = BytesMut::new();
        req.accept(Some("v1.json"), &answer, &extra, &mut wire)
            .unwrap();
        wire.extend_from_slice(b"\x81\x02hi");
        let accepted = client
            .handle_response(&mut wire, &Config::default())
            .unwrap()
            .unwrap();
        assert_eq!(&wire[..], b"\x81\x02hi");
        assert_eq!(accepted.protocol.as_deref(), Some("v1.json"));
        assert_eq!(accepted.extensions, answer);
        assert_eq!(accepted.response.headers()["set-cookie"], "s=1");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            split in 0usize..300,
        ) {
            let config = Config::builder().max_handshake_bytes(256).max_headers(8).build().unwrap();
            let mut parser = RequestParser::new();
            let split = split.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..split]);
            if let Ok(None) = parser.parse(&mut buf, &config) {
                buf.extend_from_slice(&bytes[split..]);
                let _ = parser.parse(&mut buf, &config);
            }
        }

        #[test]
        fn mutated_sample_never_panics_and_errors_have_a_status(
            pos in 0usize..SAMPLE.len(),
            byte in proptest::num::u8::ANY,
        ) {
            let mut input = SAMPLE.as_bytes().to_vec();
            input[pos] = byte;
            if let Err(e) = parse_request(&mut BytesMut::from(&input[..]), &Config::default()) {
                proptest::prop_assert!(e.status().is_some());
                let mut out = Vec::new();
                proptest::prop_assert_eq!(e.write_response(&mut out), e.status());
            }
        }
    }

    /// A request as an HTTP server (hyper, say) would hand it over, parsed from `input`.
    fn as_parsed_elsewhere(input: &str) -> Request<()> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(input.as_bytes()).unwrap();
        let mut builder = Request::builder()
            .method(req.method.unwrap())
            .uri(req.path.unwrap())
            .version(if req.version == Some(1) {
                Version::HTTP_11
            } else {
                Version::HTTP_10
            });
        for h in req.headers.iter() {
            builder = builder.header(h.name, h.value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_request_parsed_elsewhere_gets_the_same_checks_and_answer() {
        let req = UpgradeRequest::from_request(as_parsed_elsewhere(SAMPLE)).unwrap();
        assert_eq!(req.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(req.protocols(), ["chat", "superchat"]);
        let mut extra = HeaderMap::new();
        extra.insert("x-served-by", HeaderValue::from_static("test"));
        let response = req.accept_response(Some("chat"), &[], &extra).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The same headers as the bytes `accept` writes.
        let mut out = Vec::new();
        req.accept(Some("chat"), &[], &extra, &mut out).unwrap();
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut written = httparse::Response::new(&mut headers);
        written.parse(&out).unwrap();
        let written: Vec<(String, Vec<u8>)> = written
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let built: Vec<(String, Vec<u8>)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(written, built);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // Misuse is refused the same way.
        assert_eq!(
            req.accept_response(Some("other"), &[], &HeaderMap::new())
                .unwrap_err(),
            HandshakeMisuse::ProtocolNotOffered
        );
        let mut reserved = HeaderMap::new();
        reserved.insert(header::UPGRADE, HeaderValue::from_static("x"));
        assert!(matches!(
            req.accept_response(None, &[], &reserved),
            Err(HandshakeMisuse::ReservedHeader { .. })
        ));
    }

    #[test]
    fn a_bad_request_parsed_elsewhere_gets_the_status_and_headers_to_send() {
        let post = SAMPLE.replacen("GET", "POST", 1);
        let error = UpgradeRequest::from_request(as_parsed_elsewhere(&post)).unwrap_err();
        assert_eq!(error, HandshakeError::MethodNotGet);
        let (status, headers, body) = error.response_parts().unwrap();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET");
        assert!(body.contains("GET"), "{body}");
        let old = sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n");
        let error = UpgradeRequest::from_request(as_parsed_elsewhere(&old)).unwrap_err();
        let (status, headers, _) = error.response_parts().unwrap();
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(headers[header::SEC_WEBSOCKET_VERSION], "13");
        // A response error has no response to send.
        assert!(HandshakeError::AcceptMismatch.response_parts().is_none());
        // HTTP/2 (RFC 8441's extended CONNECT, or a GET) is not spoken: 505.
        for method in [Method::CONNECT, Method::GET] {
            let mut h2 = as_parsed_elsewhere(SAMPLE);
            *h2.version_mut() = Version::HTTP_2;
            *h2.method_mut() = method;
            let error = UpgradeRequest::from_request(h2).unwrap_err();
            assert_eq!(error, HandshakeError::HttpVersionNotSupported);
            assert_eq!(
                error.response_parts().unwrap().0,
                StatusCode::HTTP_VERSION_NOT_SUPPORTED
            );
        }
    }
}
