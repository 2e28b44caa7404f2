//! The server's decision, bytes in and bytes out: each refusal with its status, headers and
//! body; acceptance with a subprotocol and permessage-deflate; the RFC 8441 shape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version, header};

use super::*;
use crate::extension::ExtensionParams;
use crate::handshake::testing::{SAMPLE, as_parsed_elsewhere, sample_with};
use crate::handshake::{ClientHandshake, WsUri};
use crate::{Event, Message};

fn now() -> Instant {
    Instant::now()
}

/// A server that lets any Origin through, so that the other rules can be seen.
fn open_server() -> ServerHandshake {
    ServerHandshake::new().origin_policy(OriginPolicy::any())
}

/// Feeds `input` whole and returns what the server writes, and the outcome.
fn exchange(
    server: &ServerHandshake,
    input: &[u8],
) -> (Vec<u8>, Result<ServerAccepted, RefusalReason>) {
    let mut buf = BytesMut::from(input);
    let outcome = server
        .handle_bytes(&mut RequestParser::new(), &mut buf, now())
        .expect("a whole head");
    let mut out = Vec::new();
    match outcome {
        Ok(accepted) => {
            accepted.encode(&mut out);
            (out, Ok(accepted))
        }
        Err(refusal) => {
            refusal.encode(&mut out);
            (out, Err(refusal.into_parts().1))
        }
    }
}

/// The status, the headers (names lower-cased) and the body of an encoded response.
fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = response.parse(bytes).unwrap() else {
        panic!("incomplete response");
    };
    let headers = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    let body = String::from_utf8(bytes[len..].to_vec()).unwrap();
    (response.code.unwrap(), headers, body)
}

/// The refusal headers every HTTP/1.1 refusal starts with, for a body of `len` bytes.
fn plain(len: usize) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "text/plain; charset=utf-8".into()),
        ("content-length".into(), len.to_string()),
        ("connection".into(), "close".into()),
    ]
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

mod rfc6455_4_2_2_accept {
    use super::*;

    #[test]
    fn the_sample_request_gets_the_sample_response() {
        let server = open_server().protocols(["chat"]);
        let mut input = SAMPLE.as_bytes().to_vec();
        input.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let mut buf = BytesMut::from(&input[..]);
        let accepted = server
            .handle_bytes(&mut RequestParser::new(), &mut buf, now())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        accepted.encode(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
        assert_eq!(accepted.protocol.as_deref(), Some("chat"));
        assert_eq!(accepted.request.uri().path(), "/chat");
        // The frame after the head is left for the connection.
        assert_eq!(&buf[..], [0x81, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn subprotocol_deflate_and_headers_and_a_ready_connection() {
        // The server's order of preference wins over the client's.
        let server = open_server()
            .protocols(["superchat", "chat"])
            .deflate(DeflateConfig::new())
            .on_request(|_| {
                let mut headers = HeaderMap::new();
                headers.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
                Ok(Accept::new().headers(headers))
            });
        let input = sample_with(
            "Origin",
            "Sec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits\r\n",
        );
        let (out, accepted) = exchange(&server, input.as_bytes());
        let mut accepted = accepted.unwrap();
        let (status, headers, body) = parse_response(&out);
        assert_eq!(status, 101);
        assert_eq!(
            headers,
            pairs(&[
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ("sec-websocket-protocol", "superchat"),
                ("sec-websocket-extensions", "permessage-deflate"),
                ("set-cookie", "s=1"),
            ])
        );
        assert!(body.is_empty());
        assert_eq!(accepted.protocol.as_deref(), Some("superchat"));

        // The connection compresses: RFC 7692 section 7.2.3.1's "Hello", with RSV1 set.
        let conn = &mut accepted.connection;
        conn.send_text("Hello").unwrap();
        let mut wire = Vec::new();
        while let Some(chunk) = conn.poll_transmit() {
            wire.extend_from_slice(&chunk);
        }
        assert_eq!(wire, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // And inflates: the same message from a client, masked with a zero key.
        let mut inbuf = BytesMut::from(
            &[
                0xc1, 0x87, 0, 0, 0, 0, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
            ][..],
        );
        let _ = conn.handle_bytes(&mut inbuf, now());
        let mut got = None;
        while let Some(event) = conn.poll_event() {
            if let Event::Message(message) = event {
                got = Some(message);
            }
        }
        assert_eq!(got, Some(Message::text("Hello")));
    }

    #[test]
    fn no_subprotocol_and_no_extension_unless_both_sides_have_one() {
        let server = open_server()
            .protocols(["v2"])
            .deflate(DeflateConfig::new());
        let (out, accepted) = exchange(&server, SAMPLE.as_bytes());
        assert_eq!(accepted.unwrap().protocol, None);
        let (_, headers, _) = parse_response(&out);
        assert!(
            headers
                .iter()
                .all(|(n, _)| n != "sec-websocket-protocol" && n != "sec-websocket-extensions"),
            "{headers:?}"
        );
    }

    #[test]
    fn a_request_parsed_elsewhere_gets_the_same_answer() {
        let server = open_server().protocols(["chat"]).on_request(|request| {
            let mut headers = HeaderMap::new();
            headers.insert("x-path", HeaderValue::from_str(request.path()).unwrap());
            Ok(Accept::new().headers(headers))
        });
        let (bytes, _) = exchange(&server, SAMPLE.as_bytes());
        let accepted = server
            .accept_request(as_parsed_elsewhere(SAMPLE), now())
            .unwrap();
        let mut out = Vec::new();
        accepted.encode(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(accepted.response.headers()["x-path"], "/chat");
        // And the same refusal.
        let bad = sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n");
        let (bytes, _) = exchange(&server, bad.as_bytes());
        let refusal = server
            .accept_request(as_parsed_elsewhere(&bad), now())
            .unwrap_err();
        let mut out = Vec::new();
        refusal.encode(&mut out);
        assert_eq!(out, bytes);
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
            .origin(Some(HeaderValue::from_static("https://[::1]:9443")))
            .protocols(vec!["v2.json".into(), "v1.json".into()])
            .extensions(offers.clone())
            .headers(extra);
        let mut wire = BytesMut::new();
        client.encode_request(&mut wire).unwrap();
        wire.extend_from_slice(b"\x81\x80mask");

        let seen = Arc::new(Mutex::new(None));
        let seen_by_callback = seen.clone();
        let key = client.key().to_owned();
        let server = ServerHandshake::new()
            .served_over_tls(true)
            .deflate(DeflateConfig::new())
            .on_request(move |req| {
                assert_eq!(req.key(), Some(key.as_str()));
                assert_eq!(req.protocols(), ["v2.json", "v1.json"]);
                assert_eq!(req.origin().unwrap(), "https://[::1]:9443");
                assert_eq!(req.path(), "/rooms/a");
                assert_eq!(req.query(), Some("token=x"));
                assert_eq!(req.headers()["host"], "[::1]:9443");
                assert_eq!(req.headers()["authorization"], "Bearer abc");
                let traces: Vec<_> = req.headers().get_all("x-trace").iter().collect();
                assert_eq!(traces, ["1", "2"]);
                *seen_by_callback.lock().unwrap() = Some(req.extensions().to_vec());
                let mut headers = HeaderMap::new();
                headers.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
                Ok(Accept::new().protocol("v1.json").headers(headers))
            });
        let accepted = server
            .handle_bytes(&mut RequestParser::new(), &mut wire, now())
            .unwrap()
            .unwrap();
        assert_eq!(seen.lock().unwrap().as_deref(), Some(&offers[..]));
        assert_eq!(&wire[..], b"\x81\x80mask");
        let mut wire = BytesMut::new();
        accepted.encode(&mut wire);
        wire.extend_from_slice(b"\x81\x02hi");
        let answered = client
            .handle_response(&mut wire, &Config::default())
            .unwrap()
            .unwrap();
        assert_eq!(&wire[..], b"\x81\x02hi");
        assert_eq!(answered.protocol.as_deref(), Some("v1.json"));
        assert_eq!(answered.extensions.len(), 1);
        assert!(answered.extensions[0].is_named("permessage-deflate"));
        assert_eq!(answered.response.headers()["set-cookie"], "s=1");
    }
}

mod rfc6455_4_2_1_refusals {
    use super::*;

    #[test]
    #[allow(clippy::too_many_lines, clippy::type_complexity)] // one table
    fn every_invalid_request_gets_its_status_headers_and_body() {
        let e426 = [("upgrade", "websocket")];
        let cases: Vec<(String, u16, &str, Vec<(String, String)>)> = vec![
            (
                SAMPLE.replacen("GET", "POST", 1),
                405,
                "Method Not Allowed",
                pairs(&[("allow", "GET")]),
            ),
            (
                SAMPLE.replacen("HTTP/1.1", "HTTP/1.0", 1),
                400,
                "Bad Request",
                vec![],
            ),
            (
                SAMPLE.replacen("HTTP/1.1", "HTTP/2.0", 1),
                505,
                "HTTP Version Not Supported",
                vec![],
            ),
            (sample_with("Host", ""), 400, "Bad Request", vec![]),
            (
                sample_with("Upgrade", ""),
                426,
                "Upgrade Required",
                pairs(&e426),
            ),
            (
                sample_with("Upgrade", "Upgrade: h2c\r\n"),
                400,
                "Bad Request",
                vec![],
            ),
            (sample_with("Connection", ""), 400, "Bad Request", vec![]),
            (
                sample_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: c2hvcnQ=\r\n"),
                400,
                "Bad Request",
                vec![],
            ),
            (
                sample_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n"),
                426,
                "Upgrade Required",
                pairs(&[("upgrade", "websocket"), ("sec-websocket-version", "13")]),
            ),
            (
                sample_with("Sec-WebSocket-Version", ""),
                426,
                "Upgrade Required",
                pairs(&[("upgrade", "websocket"), ("sec-websocket-version", "13")]),
            ),
            (
                sample_with("Origin", "Sec-WebSocket-Extensions: a=\r\n"),
                400,
                "Bad Request",
                vec![],
            ),
            (
                sample_with("Origin", &format!("X-Big: {}\r\n", "a".repeat(20_000))),
                431,
                "Request Header Fields Too Large",
                vec![],
            ),
            (
                SAMPLE.replacen("/chat", "/chat#x", 1),
                400,
                "Bad Request",
                vec![],
            ),
        ];
        let called = Arc::new(AtomicBool::new(false));
        let flag = called.clone();
        let server = open_server().on_request(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(Accept::new())
        });
        for (input, code, reason, extra) in cases {
            let (out, outcome) = exchange(&server, input.as_bytes());
            let Err(RefusalReason::Invalid(error)) = outcome else {
                panic!("{}: {outcome:?}", &input[..60]);
            };
            assert_eq!(error.status().map(|s| s.as_u16()), Some(code), "{error}");
            let text = String::from_utf8(out.clone()).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {code} {reason}\r\n")),
                "{text}"
            );
            let (status, headers, body) = parse_response(&out);
            assert_eq!(status, code);
            assert_eq!(body, format!("{error}\n"));
            let mut want = plain(body.len());
            want.extend(extra);
            assert_eq!(headers, want, "{error}");
        }
        assert!(
            !called.load(Ordering::SeqCst),
            "no callback for a bad request"
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let server = open_server().config(Config::builder().max_headers(7).build().unwrap());
        let input = sample_with("Origin", "Origin: x\r\nX-Eighth: 1\r\n");
        let (out, outcome) = exchange(&server, input.as_bytes());
        assert!(matches!(
            outcome,
            Err(RefusalReason::Invalid(HandshakeError::TooManyHeaders {
                max: 7,
                ..
            }))
        ));
        assert!(out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    }

    #[test]
    fn origin_refused_is_403_before_the_callback() {
        let called = Arc::new(AtomicBool::new(false));
        let flag = called.clone();
        // The default policy: same host only; SAMPLE's Origin is another host.
        let server = ServerHandshake::new().on_request(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(Accept::new())
        });
        let (out, outcome) = exchange(&server, SAMPLE.as_bytes());
        assert_eq!(outcome.unwrap_err(), RefusalReason::OriginNotAllowed);
        assert_eq!(
            out,
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 19\r\nConnection: close\r\n\r\norigin not allowed\n"
        );
        assert!(!called.load(Ordering::SeqCst));
        // The same host is let through.
        let same = sample_with("Origin", "Origin: http://server.example.com\r\n");
        assert!(exchange(&server, same.as_bytes()).1.is_ok());
        assert!(called.load(Ordering::SeqCst));
        // Over TLS, the page must be https.
        let tls = ServerHandshake::new().served_over_tls(true);
        assert!(exchange(&tls, same.as_bytes()).1.is_err());
        let https = sample_with("Origin", "Origin: https://server.example.com\r\n");
        assert!(exchange(&tls, https.as_bytes()).1.is_ok());
    }

    #[test]
    fn the_callbacks_401_with_www_authenticate() {
        let server = open_server().on_request(|request| {
            if request.query() == Some("token=ok") {
                return Ok(Accept::new());
            }
            let mut headers = HeaderMap::new();
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(Reject::new(StatusCode::UNAUTHORIZED, "token needed\n").headers(headers))
        });
        let (out, outcome) = exchange(&server, SAMPLE.as_bytes());
        assert_eq!(
            outcome.unwrap_err(),
            RefusalReason::Rejected(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            out,
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 13\r\nConnection: close\r\nWWW-Authenticate: Bearer\r\n\r\n\
              token needed\n"
        );
        let ok = SAMPLE.replacen("/chat", "/chat?token=ok", 1);
        assert!(exchange(&server, ok.as_bytes()).1.is_ok());
    }

    type Decision = Box<dyn Fn() -> Result<Accept, Reject> + Send + Sync>;

    #[test]
    fn the_callbacks_misuse_is_a_500() {
        let reserved = |name: header::HeaderName| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("x"));
            headers
        };
        let cases: Vec<(Decision, HandshakeMisuse)> = vec![
            (
                Box::new(|| Ok(Accept::new().protocol("other"))),
                HandshakeMisuse::ProtocolNotOffered,
            ),
            (
                Box::new(move || Ok(Accept::new().headers(reserved(header::SEC_WEBSOCKET_ACCEPT)))),
                HandshakeMisuse::ReservedHeader {
                    name: header::SEC_WEBSOCKET_ACCEPT,
                },
            ),
            (
                Box::new(move || Ok(Accept::new().headers(reserved(header::UPGRADE)))),
                HandshakeMisuse::ReservedHeader {
                    name: header::UPGRADE,
                },
            ),
            (
                Box::new(|| Err(Reject::new(StatusCode::SWITCHING_PROTOCOLS, "no"))),
                HandshakeMisuse::InvalidRejectStatus {
                    status: StatusCode::SWITCHING_PROTOCOLS,
                },
            ),
            (
                Box::new(|| Err(Reject::new(StatusCode::NO_CONTENT, "no"))),
                HandshakeMisuse::InvalidRejectStatus {
                    status: StatusCode::NO_CONTENT,
                },
            ),
            (
                Box::new(|| Err(Reject::new(StatusCode::NOT_MODIFIED, "no"))),
                HandshakeMisuse::InvalidRejectStatus {
                    status: StatusCode::NOT_MODIFIED,
                },
            ),
            (
                Box::new(move || {
                    Err(Reject::new(StatusCode::FORBIDDEN, "no")
                        .headers(reserved(header::CONTENT_LENGTH)))
                }),
                HandshakeMisuse::ReservedHeader {
                    name: header::CONTENT_LENGTH,
                },
            ),
            (
                Box::new(move || {
                    Err(Reject::new(StatusCode::FORBIDDEN, "no")
                        .headers(reserved(header::CONNECTION)))
                }),
                HandshakeMisuse::ReservedHeader {
                    name: header::CONNECTION,
                },
            ),
        ];
        for (decide, want) in cases {
            let server = open_server().on_request(move |_| decide());
            let (out, outcome) = exchange(&server, SAMPLE.as_bytes());
            assert_eq!(outcome.unwrap_err(), RefusalReason::Misuse(want));
            let body = "the server could not answer this request\n";
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!(
                    "HTTP/1.1 500 Internal Server Error\r\n\
                     Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                )
            );
        }
    }

    #[test]
    fn a_refusal_of_the_servers_own() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        let refusal =
            Refusal::from(Reject::new(StatusCode::SERVICE_UNAVAILABLE, "").headers(headers));
        assert_eq!(
            refusal.reason(),
            &RefusalReason::Rejected(StatusCode::SERVICE_UNAVAILABLE)
        );
        let mut out = Vec::new();
        refusal.encode(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
        );
        // The response an HTTP server sends is the same.
        let response = refusal.response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(response.headers().len(), 4);
    }
}

mod rfc8441_5_extended_connect {
    use super::*;

    fn request(origin: &str) -> Request<()> {
        Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("https://server.example.com/chat")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat, superchat")
            .header(
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            )
            .header("origin", origin)
            .body(())
            .unwrap()
    }

    #[test]
    fn answered_200_with_only_the_negotiated_headers() {
        let server = ServerHandshake::new()
            .served_over_tls(true)
            .protocols(["chat"])
            .deflate(DeflateConfig::new());
        let mut accepted = server
            .accept_extended_connect(
                request("https://server.example.com"),
                Some("websocket"),
                now(),
            )
            .unwrap();
        assert_eq!(accepted.response.status(), StatusCode::OK);
        let headers: Vec<_> = accepted
            .response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("sec-websocket-protocol", "chat"),
                ("sec-websocket-extensions", "permessage-deflate"),
            ]
        );
        assert_eq!(accepted.protocol.as_deref(), Some("chat"));
        assert_eq!(accepted.request.method(), Method::CONNECT);
        // A server connection with deflate: compressed "Hello" with RSV1.
        accepted.connection.send_text("Hello").unwrap();
        let first = accepted.connection.poll_transmit().unwrap();
        assert_eq!(first.first(), Some(&0xc1));
    }

    #[test]
    fn the_origin_is_checked_against_the_authority() {
        let server = ServerHandshake::new().served_over_tls(true);
        let refusal = server
            .accept_extended_connect(request("https://evil.example"), Some("websocket"), now())
            .unwrap_err();
        assert_eq!(refusal.reason(), &RefusalReason::OriginNotAllowed);
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        // No Connection header on HTTP/2.
        assert!(
            !refusal
                .response()
                .headers()
                .contains_key(header::CONNECTION)
        );
    }

    #[test]
    fn refusals_carry_no_http1_headers() {
        let server = open_server();
        let mut old = request("https://server.example.com");
        old.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        let refusal = server
            .accept_extended_connect(old, Some("websocket"), now())
            .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::UPGRADE_REQUIRED);
        let names: Vec<_> = refusal
            .response()
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("content-type", "text/plain; charset=utf-8"),
                (
                    "content-length",
                    &*refusal.response().body().len().to_string()
                ),
                ("sec-websocket-version", "13"),
            ]
        );

        let mut get = request("https://server.example.com");
        *get.method_mut() = Method::GET;
        let refusal = server
            .accept_extended_connect(get, Some("websocket"), now())
            .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refusal.response().headers()[header::ALLOW], "CONNECT");

        let refusal = server
            .accept_extended_connect(request("https://server.example.com"), None, now())
            .unwrap_err();
        assert_eq!(
            refusal.reason(),
            &RefusalReason::Invalid(HandshakeError::ConnectProtocolNotWebSocket)
        );
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_2xx_refusal_would_open_the_tunnel_so_it_is_a_500() {
        let server = open_server().on_request(|_| Err(Reject::new(StatusCode::OK, "page")));
        let refusal = server
            .accept_extended_connect(
                request("https://server.example.com"),
                Some("websocket"),
                now(),
            )
            .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            refusal.reason(),
            &RefusalReason::Misuse(HandshakeMisuse::InvalidRejectStatus {
                status: StatusCode::OK
            })
        );
        // On HTTP/1.1 a 200 page is a valid refusal.
        let (out, outcome) = exchange(&server, SAMPLE.as_bytes());
        assert_eq!(
            outcome.unwrap_err(),
            RefusalReason::Rejected(StatusCode::OK)
        );
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

proptest::proptest! {
    #[test]
    fn every_outcome_encodes_as_a_response_that_parses(
        pos in 0usize..SAMPLE.len(),
        byte in proptest::num::u8::ANY,
    ) {
        let mut input = SAMPLE.as_bytes().to_vec();
        input[pos] = byte;
        let server = open_server().protocols(["chat"]);
        let mut buf = BytesMut::from(&input[..]);
        if let Some(outcome) = server.handle_bytes(&mut RequestParser::new(), &mut buf, now()) {
            let mut out = Vec::new();
            let status = match outcome {
                Ok(accepted) => { accepted.encode(&mut out); 101 }
                Err(refusal) => { refusal.encode(&mut out); refusal.status().as_u16() }
            };
            let (code, _, body) = parse_response(&out);
            proptest::prop_assert_eq!(code, status);
            proptest::prop_assert!(status == 101 || !body.is_empty());
        }
    }
}
