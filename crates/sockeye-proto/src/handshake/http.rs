//! Bounded HTTP/1.1 head parsing: find the end of the head incrementally, then parse it once
//! with httparse into `http` types. And the one encoder of the responses a server sends.
//!
//! The scan touches each byte once however the head is split across reads, and fails as soon as
//! the configured byte or header limit is passed, so a peer cannot make us buffer more.

use bytes::BufMut;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};

use super::{HandshakeError, HeadSyntax, Side};
use crate::config::Config;

/// Where a complete head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadEnd {
    /// Length of the head, final empty line included.
    pub(crate) len: usize,
    /// Header lines seen, an upper bound on the header fields httparse will find.
    pub(crate) header_lines: usize,
}

/// Finds the end of an HTTP head in a buffer that grows between calls.
///
/// The buffer may only be appended to between calls; if it shrinks, the scan starts over.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadScanner {
    /// Bytes of the buffer already scanned.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Non-empty lines completed so far: the start line, then one per header field.
    lines: usize,
}

impl HeadScanner {
    /// Scans the new bytes of `buf`. `Ok(None)` means the head is not complete yet.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        config: &Config,
        side: Side,
    ) -> Result<Option<HeadEnd>, HandshakeError> {
        if buf.len() < self.pos {
            *self = Self::default();
        }
        let max_bytes = config.max_handshake_bytes();
        let max_headers = config.max_headers();
        // Never look past the limit: a head that ends later is too large anyway.
        let end = buf.len().min(max_bytes);
        for idx in self.pos..end {
            if buf.get(idx) != Some(&b'\n') {
                continue;
            }
            // RFC 7230 section 3.5: a bare LF may end a line, as httparse accepts.
            let line = buf.get(self.line_start..idx).unwrap_or_default();
            let next = idx.saturating_add(1);
            self.line_start = next;
            if line.is_empty() || line == b"\r" {
                if self.lines > 0 {
                    let header_lines = self.lines.saturating_sub(1);
                    *self = Self::default();
                    return Ok(Some(HeadEnd {
                        len: next,
                        header_lines,
                    }));
                }
                // RFC 7230 section 3.5: empty lines before the start line are ignored.
                continue;
            }
            self.lines = self.lines.saturating_add(1);
            if self.lines.saturating_sub(1) > max_headers {
                return Err(HandshakeError::TooManyHeaders {
                    side,
                    max: max_headers,
                });
            }
        }
        self.pos = end;
        if buf.len() > max_bytes {
            return Err(HandshakeError::HeadTooLarge {
                side,
                max: max_bytes,
            });
        }
        Ok(None)
    }
}

/// Parses a complete request head found by [`HeadScanner`].
pub(crate) fn parse_request_head(
    head: &[u8],
    end: HeadEnd,
    config: &Config,
) -> Result<Request<()>, HandshakeError> {
    let side = Side::Request;
    let mut headers = vec![httparse::EMPTY_HEADER; end.header_lines];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(malformed(side, HeadSyntax::NewLine)),
        // Section 4.2.1 wants HTTP/1.1 or later; a later major version cannot be spoken here.
        Err(httparse::Error::Version) if announces_http2_or_later(head) => {
            return Err(HandshakeError::HttpVersionNotSupported);
        }
        Err(e) => return Err(from_httparse(side, e, config)),
    }
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| malformed(side, HeadSyntax::Token))?;
    let target = parsed.path.unwrap_or_default();
    let uri = parse_target(target).ok_or(malformed(side, HeadSyntax::Target))?;
    let version = version(parsed.version, side)?;
    let headers = header_map(parsed.headers, side, config)?;

    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Parses a complete response head found by [`HeadScanner`].
/// The reason phrase of a response's status line as the server wrote it (`Switching
/// Protocols`, or its own words), kept in the parsed response's extensions: `http` has no
/// field for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonPhrase(pub String);

pub(crate) fn parse_response_head(
    head: &[u8],
    end: HeadEnd,
    config: &Config,
) -> Result<Response<()>, HandshakeError> {
    let side = Side::Response;
    let mut headers = vec![httparse::EMPTY_HEADER; end.header_lines];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(malformed(side, HeadSyntax::NewLine)),
        Err(e) => return Err(from_httparse(side, e, config)),
    }
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(malformed(side, HeadSyntax::Status))?;
    let version = version(parsed.version, side)?;
    let headers = header_map(parsed.headers, side, config)?;

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    if let Some(reason) = parsed.reason.filter(|r| !r.is_empty()) {
        response
            .extensions_mut()
            .insert(ReasonPhrase(reason.to_owned()));
    }
    Ok(response)
}

fn malformed(side: Side, kind: HeadSyntax) -> HandshakeError {
    HandshakeError::Malformed { side, kind }
}

fn from_httparse(side: Side, e: httparse::Error, config: &Config) -> HandshakeError {
    let kind = match e {
        httparse::Error::HeaderName => HeadSyntax::HeaderName,
        httparse::Error::HeaderValue => HeadSyntax::HeaderValue,
        httparse::Error::NewLine => HeadSyntax::NewLine,
        httparse::Error::Status => HeadSyntax::Status,
        httparse::Error::Token => HeadSyntax::Token,
        httparse::Error::Version => HeadSyntax::Version,
        // Cannot happen (the header array holds one slot per header line), but if it did, the
        // head had too many headers.
        httparse::Error::TooManyHeaders => {
            return HandshakeError::TooManyHeaders {
                side,
                max: config.max_headers(),
            };
        }
    };
    malformed(side, kind)
}

/// httparse only knows HTTP/1.0 and 1.1; tell a request line ending in `HTTP/2` or later apart
/// from garbage, so that it gets 505 rather than 400.
fn announces_http2_or_later(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .find(|line| !line.is_empty())
        .and_then(|line| line.rsplit(|&b| b == b' ').next())
        .and_then(|version| version.strip_prefix(b"HTTP/"))
        .and_then(|rest| rest.first())
        .is_some_and(|major| (b'2'..=b'9').contains(major))
}

/// The request target: an absolute path with optional query (origin-form), or an absolute URI
/// (RFC 7230 section 5.3). Section 3 of RFC 6455 rules out fragments.
fn parse_target(target: &str) -> Option<Uri> {
    if target.contains('#') {
        return None;
    }
    let uri = Uri::try_from(target).ok()?;
    let has_path = uri
        .path_and_query()
        .is_some_and(|pq| pq.path().starts_with('/'));
    has_path.then_some(uri)
}

fn version(minor: Option<u8>, side: Side) -> Result<Version, HandshakeError> {
    match minor {
        Some(0) => Ok(Version::HTTP_10),
        Some(1) => Ok(Version::HTTP_11),
        _ => Err(malformed(side, HeadSyntax::Version)),
    }
}

fn header_map(
    headers: &[httparse::Header<'_>],
    side: Side,
    config: &Config,
) -> Result<HeaderMap, HandshakeError> {
    let too_many = || HandshakeError::TooManyHeaders {
        side,
        max: config.max_headers(),
    };
    let mut map = HeaderMap::try_with_capacity(headers.len()).map_err(|_| too_many())?;
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| malformed(side, HeadSyntax::HeaderName))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| malformed(side, HeadSyntax::HeaderValue))?;
        map.try_append(name, value).map_err(|_| too_many())?;
    }
    Ok(map)
}

/// Writes an HTTP/1.1 response: the status line, every header of `headers` in its order, an
/// empty line, then `body`. Header names go out in the customary capitalisation
/// (`Sec-WebSocket-Accept`), which some clients compare byte for byte. `HeaderValue` cannot
/// hold CR or LF, so no header can be injected through a value.
pub(crate) fn encode_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    out: &mut impl BufMut,
) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        put_name(out, name.as_str());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

/// A header name (lower case in `http`) with each word capitalised.
fn put_name(out: &mut impl BufMut, name: &str) {
    for (i, word) in name.split('-').enumerate() {
        if i > 0 {
            out.put_u8(b'-');
        }
        match word {
            "websocket" => out.put_slice(b"WebSocket"),
            "www" => out.put_slice(b"WWW"),
            _ => {
                let mut bytes = word.bytes();
                if let Some(first) = bytes.next() {
                    out.put_u8(first.to_ascii_uppercase());
                }
                bytes.for_each(|b| out.put_u8(b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_bytes: usize, max_headers: usize) -> Config {
        Config::builder()
            .max_handshake_bytes(max_bytes)
            .max_headers(max_headers)
            .build()
            .unwrap()
    }

    #[test]
    fn scan_finds_crlf_and_bare_lf_heads() {
        let c = Config::default();
        for (input, len, lines) in [
            (&b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"[..], 24, 1),
            (b"GET / HTTP/1.1\nA: b\n\nrest", 21, 1),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22, 0),
        ] {
            let end = HeadScanner::default()
                .scan(input, &c, Side::Request)
                .unwrap()
                .unwrap();
            assert_eq!(
                end,
                HeadEnd {
                    len,
                    header_lines: lines
                }
            );
        }
    }

    #[test]
    fn scan_resumes_and_restarts_when_buffer_shrinks() {
        let c = Config::default();
        let input = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        let mut s = HeadScanner::default();
        assert_eq!(s.scan(&input[..10], &c, Side::Request), Ok(None));
        assert_eq!(s.scan(&input[..20], &c, Side::Request), Ok(None));
        assert_eq!(s.scan(&input[..3], &c, Side::Request), Ok(None));
        assert!(s.scan(input, &c, Side::Request).unwrap().is_some());
    }

    #[test]
    fn head_of_exactly_the_limit_is_accepted() {
        let input = b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let c = config(input.len(), 8);
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"frames after the head");
        assert!(
            HeadScanner::default()
                .scan(&longer, &c, Side::Request)
                .unwrap()
                .is_some()
        );
        let c = config(input.len() - 1, 8);
        assert_eq!(
            HeadScanner::default().scan(input, &c, Side::Response),
            Err(HandshakeError::HeadTooLarge {
                side: Side::Response,
                max: input.len() - 1
            })
        );
    }

    #[test]
    fn http2_detection() {
        assert!(announces_http2_or_later(b"GET / HTTP/2.0\r\n\r\n"));
        assert!(announces_http2_or_later(b"\r\nPRI * HTTP/2\r\n\r\n"));
        assert!(!announces_http2_or_later(b"GET / HTTP/1.2\r\n\r\n"));
        assert!(!announces_http2_or_later(b"GET / FTP/2\r\n\r\n"));
    }

    #[test]
    fn request_targets() {
        for ok in ["/", "/chat?x=1", "ws://example.com/chat", "/%20a"] {
            assert!(parse_target(ok).is_some(), "{ok}");
        }
        for bad in ["*", "example.com:80", "/a#b", "chat", ""] {
            assert!(parse_target(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn responses_parse() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let end = HeadScanner::default()
            .scan(head, &Config::default(), Side::Response)
            .unwrap()
            .unwrap();
        let r = parse_response_head(head, end, &Config::default()).unwrap();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(r.headers()["upgrade"], "websocket");
        let head = b"HTTP/1.1 1x1 Oops\r\n\r\n";
        let end = HeadEnd {
            len: head.len(),
            header_lines: 0,
        };
        assert_eq!(
            parse_response_head(head, end, &Config::default()).unwrap_err(),
            malformed(Side::Response, HeadSyntax::Status)
        );
    }
}
