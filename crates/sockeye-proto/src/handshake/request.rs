//! The client's request, as a server reads it: the HTTP/1.1 upgrade of RFC 6455 section 4.2.1,
//! parsed here or by an HTTP server, or the extended CONNECT of RFC 8441 an HTTP/2 server
//! parsed. Either way the result is an [`UpgradeRequest`] for [`ServerHandshake`] to answer.
//!
//! [`ServerHandshake`]: super::ServerHandshake

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, Request, Version, header};

use super::http::{HeadScanner, parse_request_head};
use super::{HandshakeError, Side, VERSION, has_token, header_texts, parse_protocols};
use crate::config::Config;
use crate::extension::header::{ExtensionParams, parse_extensions};

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
    /// WebSocket data. On error `buf` is left as it was; answer with the
    /// [`Refusal`](super::Refusal) made from the error and close the connection.
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
    // A WebSocket over HTTP/2 or later is RFC 8441's extended CONNECT, checked by
    // `validate_extended_connect`; a server handing such a request to this HTTP/1.1 path does
    // not speak it: 505, before the method (whose 405 would name GET as the way).
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
    let key = Some(key.to_owned());
    // Items 6, 8 and 9.
    offers(request, RequestForm::Upgrade, key)
}

/// The checks of RFC 8441 section 5 on an extended CONNECT: the method, the `:protocol`
/// pseudo-header (which `http` has no field for, so the HTTP/2 server passes it in), and the
/// `Sec-WebSocket-*` headers as on HTTP/1.1 without a key or `Upgrade`/`Connection` (HTTP/2 has
/// no such headers: the stream itself is the tunnel).
fn validate_extended_connect(
    request: Request<()>,
    protocol: Option<&str>,
) -> Result<UpgradeRequest, HandshakeError> {
    // RFC 8441 section 4 (and RFC 9220 for HTTP/3): the extended CONNECT exists from HTTP/2 on.
    if request.version() < Version::HTTP_2 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    // Section 5: "method of CONNECT", with ":protocol" naming the protocol to speak.
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotConnect);
    }
    if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::ConnectProtocolNotWebSocket);
    }
    // Section 4: ":scheme" and ":path" are required on such a request.
    if request.uri().scheme().is_none() || request.uri().path_and_query().is_none() {
        return Err(HandshakeError::Malformed {
            side: Side::Request,
            kind: super::HeadSyntax::Target,
        });
    }
    offers(request, RequestForm::ExtendedConnect, None)
}

/// What both forms check alike: section 4.2.1 item 6, then the optional offers of items 8
/// and 9 (RFC 8441 section 5 keeps all three as they are).
fn offers(
    request: Request<()>,
    form: RequestForm,
    key: Option<String>,
) -> Result<UpgradeRequest, HandshakeError> {
    let headers = request.headers();
    // Item 6: Sec-WebSocket-Version 13, else 426 naming the version we speak (section 4.4).
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let protocols = header_texts(headers, &header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(parse_protocols)
        .map_err(|error| HandshakeError::InvalidProtocols { error })?;
    let extensions = header_texts(headers, &header::SEC_WEBSOCKET_EXTENSIONS)
        .and_then(parse_extensions)
        .map_err(|error| HandshakeError::InvalidExtensions {
            side: Side::Request,
            error,
        })?;
    Ok(UpgradeRequest {
        request,
        form,
        key,
        protocols,
        extensions,
    })
}

/// How a client asked for a WebSocket, which decides how the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestForm {
    /// An HTTP/1.1 GET with `Upgrade: websocket` and a `Sec-WebSocket-Key` (RFC 6455 section
    /// 4.1), answered with 101 and `Sec-WebSocket-Accept`.
    Upgrade,
    /// An extended CONNECT with `:protocol websocket` on an HTTP/2 stream (RFC 8441 section 5),
    /// answered with 200; the stream then carries the frames.
    ExtendedConnect,
}

/// A valid upgrade request, waiting for the application to accept or reject it.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    request: Request<()>,
    form: RequestForm,
    key: Option<String>,
    protocols: Vec<String>,
    extensions: Vec<ExtensionParams>,
}

impl UpgradeRequest {
    /// Checks a request an HTTP/1.1 server already parsed (hyper, say) against section 4.2.1,
    /// as [`RequestParser`] checks one it parsed itself. The size limits are the HTTP server's.
    ///
    /// # Errors
    /// A [`Side::Request`] [`HandshakeError`]; [`Refusal::from`](super::Refusal) makes the
    /// answer.
    pub fn from_request(request: Request<()>) -> Result<Self, HandshakeError> {
        validate(request)
    }

    /// Checks an RFC 8441 extended CONNECT an HTTP/2 (or HTTP/3) server parsed: method CONNECT,
    /// `protocol` the value of its `:protocol` pseudo-header (`websocket`), `:scheme` and `:path`
    /// in the URI, `Sec-WebSocket-Version: 13`, and the offered subprotocols and extensions.
    /// There is no `Sec-WebSocket-Key`, and the answer is 200 rather than 101.
    ///
    /// # Errors
    /// A [`Side::Request`] [`HandshakeError`].
    pub fn from_extended_connect(
        request: Request<()>,
        protocol: Option<&str>,
    ) -> Result<Self, HandshakeError> {
        validate_extended_connect(request, protocol)
    }

    /// How the client asked: an HTTP/1.1 upgrade or an extended CONNECT.
    pub fn form(&self) -> RequestForm {
        self.form
    }

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

    /// The `Sec-WebSocket-Key` value, without surrounding whitespace; `None` for an extended
    /// CONNECT, which has none.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
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

    /// The host the client addressed: the `Host` header on HTTP/1.1, the `:authority` (kept in
    /// the URI) on HTTP/2.
    pub fn host(&self) -> Option<&str> {
        match self.request.headers().get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => self
                .request
                .uri()
                .authority()
                .map(http::uri::Authority::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use bytes::BufMut as _;

    use super::*;
    use crate::extension::header::ExtensionHeaderError;
    use crate::handshake::testing::{SAMPLE, as_parsed_elsewhere, sample_with};
    use crate::handshake::{HeadSyntax, Refusal};

    fn parse(input: &str) -> Result<Option<UpgradeRequest>, HandshakeError> {
        parse_request(&mut BytesMut::from(input.as_bytes()), &Config::default())
    }

    fn status(e: &HandshakeError) -> u16 {
        e.status().unwrap().as_u16()
    }

    #[test]
    fn rfc6455_1_3_sample_request() {
        let req = parse(SAMPLE).unwrap().unwrap();
        assert_eq!(req.key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.form(), RequestForm::Upgrade);
        assert_eq!(req.protocols(), ["chat", "superchat"]);
        assert!(req.extensions().is_empty());
        assert_eq!(req.origin().unwrap(), "http://example.com");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), None);
        assert_eq!(req.request().method(), Method::GET);
        assert_eq!(req.headers()["host"], "server.example.com");
        assert_eq!(req.host(), Some("server.example.com"));
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
        assert_eq!(req.key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
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
                let status = e.status();
                Refusal::from(e).encode(&mut out);
                let status = format!("HTTP/1.1 {} ", status.unwrap().as_str());
                proptest::prop_assert!(out.starts_with(status.as_bytes()));
            }
        }
    }

    #[test]
    fn a_request_parsed_elsewhere_gets_the_same_checks() {
        let req = UpgradeRequest::from_request(as_parsed_elsewhere(SAMPLE)).unwrap();
        let ours = parse(SAMPLE).unwrap().unwrap();
        assert_eq!(req.key(), ours.key());
        assert_eq!(req.protocols(), ours.protocols());
        assert_eq!(req.headers(), ours.headers());
        for input in [
            SAMPLE.replacen("GET", "POST", 1),
            sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n"),
            sample_with("Upgrade", ""),
            sample_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: c2hvcnQ=\r\n"),
        ] {
            assert_eq!(
                UpgradeRequest::from_request(as_parsed_elsewhere(&input)).unwrap_err(),
                parse(&input).unwrap_err(),
                "{input}"
            );
        }
        // HTTP/2 does not come this way (RFC 8441 is `from_extended_connect`): 505.
        for method in [Method::CONNECT, Method::GET] {
            let mut h2 = as_parsed_elsewhere(SAMPLE);
            *h2.version_mut() = Version::HTTP_2;
            *h2.method_mut() = method;
            assert_eq!(
                UpgradeRequest::from_request(h2).unwrap_err(),
                HandshakeError::HttpVersionNotSupported
            );
        }
    }

    /// An RFC 8441 section 5 request, as an HTTP/2 server hands it over (the `:protocol`
    /// pseudo-header apart).
    fn extended_connect() -> Request<()> {
        Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("https://server.example.com/chat?room=1")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat, superchat")
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("origin", "https://server.example.com")
            .body(())
            .unwrap()
    }

    #[test]
    fn rfc8441_5_extended_connect() {
        let req =
            UpgradeRequest::from_extended_connect(extended_connect(), Some("websocket")).unwrap();
        assert_eq!(req.form(), RequestForm::ExtendedConnect);
        assert_eq!(req.key(), None);
        assert_eq!(req.protocols(), ["chat", "superchat"]);
        assert_eq!(
            req.extensions(),
            [ExtensionParams::new("permessage-deflate")]
        );
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=1"));
        // No Host header on HTTP/2: the :authority stands for it.
        assert_eq!(req.host(), Some("server.example.com"));
        // HTTP/3 (RFC 9220) the same.
        let mut h3 = extended_connect();
        *h3.version_mut() = Version::HTTP_3;
        assert!(UpgradeRequest::from_extended_connect(h3, Some("WebSocket")).is_ok());
    }

    #[test]
    fn rfc8441_5_extended_connect_validation_rules() {
        use HandshakeError as E;
        let with = |edit: &dyn Fn(&mut Request<()>)| {
            let mut request = extended_connect();
            edit(&mut request);
            request
        };
        let cases: Vec<(Request<()>, Option<&str>, E, u16)> = vec![
            (
                extended_connect(),
                None,
                E::ConnectProtocolNotWebSocket,
                400,
            ),
            (
                extended_connect(),
                Some("h2c"),
                E::ConnectProtocolNotWebSocket,
                400,
            ),
            (
                with(&|r| *r.method_mut() = Method::GET),
                Some("websocket"),
                E::MethodNotConnect,
                405,
            ),
            (
                with(&|r| *r.version_mut() = Version::HTTP_11),
                Some("websocket"),
                E::HttpVersionTooOld,
                400,
            ),
            (
                with(&|r| *r.uri_mut() = "server.example.com:443".parse().unwrap()),
                Some("websocket"),
                E::Malformed {
                    side: Side::Request,
                    kind: HeadSyntax::Target,
                },
                400,
            ),
            (
                with(&|r| {
                    r.headers_mut().remove("sec-websocket-version");
                }),
                Some("websocket"),
                E::UnsupportedVersion,
                426,
            ),
            (
                with(&|r| {
                    r.headers_mut()
                        .insert("sec-websocket-version", HeaderValue::from_static("8"));
                }),
                Some("websocket"),
                E::UnsupportedVersion,
                426,
            ),
            (
                with(&|r| {
                    r.headers_mut()
                        .insert("sec-websocket-protocol", HeaderValue::from_static("a b"));
                }),
                Some("websocket"),
                E::InvalidProtocols {
                    error: ExtensionHeaderError::UnexpectedByte {
                        offset: 2,
                        byte: b'b',
                    },
                },
                400,
            ),
        ];
        for (request, protocol, want, code) in cases {
            let err = UpgradeRequest::from_extended_connect(request, protocol).unwrap_err();
            assert_eq!(err, want);
            assert_eq!(status(&err), code, "{err:?}");
        }
    }
}
