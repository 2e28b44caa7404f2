//! Requests shared by the handshake's tests.

use http::{Request, Version};

/// RFC 6455 section 1.3, with the version header of section 4.1 added.
pub(crate) const SAMPLE: &str = "GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// SAMPLE with the header line starting with `name:` replaced by `line` (removed if empty).
pub(crate) fn sample_with(name: &str, line: &str) -> String {
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

/// A request as an HTTP server (hyper, say) would hand it over, parsed from `input`.
pub(crate) fn as_parsed_elsewhere(input: &str) -> Request<()> {
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
