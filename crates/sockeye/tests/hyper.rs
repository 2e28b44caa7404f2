//! `sockeye::hyper`: WebSocket connections served by a real hyper 1 server, over loopback sockets.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sockeye::{ClientBuilder, DeflateConfig, Message, OriginPolicy, Reject, ServerBuilder};
use sockeye_test_support::{self as support, listen};

/// A hyper server: WebSocket echo at `/ws`, a plain page everywhere else.
async fn hyper_server(server: ServerBuilder) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    std::future::ready(Ok::<_, Infallible>(handle(&server, request)))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn handle(server: &ServerBuilder, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/ws" {
        return Response::new(Full::from("a plain page\n"));
    }
    match server.upgrade(&mut request) {
        Ok((response, websocket)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = websocket.await else {
                    return;
                };
                support::echo(&mut ws).await;
            });
            response
        }
        Err(refused) => refused.into_response(),
    }
}

#[tokio::test]
async fn echo_with_deflate_and_a_subprotocol_over_hyper() {
    support::bounded(async {
        let server = ServerBuilder::new()
            .protocols(["chat"])
            .deflate(DeflateConfig::new());
        let addr = hyper_server(server).await;
        let (mut ws, response) = ClientBuilder::new(format!("ws://{addr}/ws"))
            .protocol("chat")
            .deflate(DeflateConfig::new())
            .connect()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(ws.extension(), Some("permessage-deflate"));
        ws.send(Message::text("hello hyper")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("hello hyper")
        );
        // A message larger than any buffer on the way, in pieces both ways.
        let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        // The same hyper server still serves plain requests.
        let page = support::http::request_head(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_the_rfc_status_through_hyper() {
    support::bounded(async {
        let addr = hyper_server(ServerBuilder::new()).await;
        // No Upgrade at all: 426, naming websocket.
        let head = support::http::request_head(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket"),
            "{head}"
        );
        // A version we do not speak: 426 with the one we do (section 4.4).
        let head = support::http::request_head(
            addr,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-version: 13"),
            "{head}"
        );
        // A key that is not 16 bytes of base64: 400.
        let head = support::http::request_head(
            addr,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    })
    .await;
}

#[tokio::test]
async fn origin_policy_and_callback_refusals_through_hyper() {
    support::bounded(async {
        let server = ServerBuilder::new()
            .origin_policy(OriginPolicy::allow(["https://app.example"]))
            .on_request(|request| {
                if request.query() == Some("token=ok") {
                    Ok(sockeye::Accept::new())
                } else {
                    let mut headers = HeaderMap::new();
                    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    Err(Reject::new(StatusCode::UNAUTHORIZED, "token needed\n").headers(headers))
                }
            });
        let addr = hyper_server(server).await;
        let connect = |query: &str, origin: &'static str| {
            ClientBuilder::new(format!("ws://{addr}/ws{query}"))
                .origin(HeaderValue::from_static(origin))
                .connect()
        };
        let error = connect("?token=ok", "https://evil.example")
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");
        let error = connect("", "https://app.example").await.unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{error}");
        let sockeye::Kind::Refused { headers, .. } = error.kind() else {
            panic!("expected a refusal, got {error:?}");
        };
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        let (mut ws, _) = connect("?token=ok", "https://app.example").await.unwrap();
        ws.send(Message::text("in")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("in"));
    })
    .await;
}

#[test]
fn upgrade_requests_are_told_from_plain_ones() {
    let request = |headers: &[(&str, &str)]| {
        let mut builder = Request::builder().uri("/ws");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    };
    assert!(sockeye::hyper::is_upgrade_request(&request(&[
        ("Upgrade", "WebSocket"),
        ("Connection", "keep-alive, Upgrade"),
    ])));
    assert!(!sockeye::hyper::is_upgrade_request(&request(&[(
        "Upgrade",
        "websocket"
    )])));
    assert!(!sockeye::hyper::is_upgrade_request(&request(&[
        ("Upgrade", "h2c"),
        ("Connection", "upgrade"),
    ])));
}

/// A valid upgrade request as hyper would hand it over, but built here: hyper put no
/// connection to take over in its extensions.
fn handmade(version: http::Version) -> Request<()> {
    Request::builder()
        .uri("/ws")
        .version(version)
        .header("Host", "x")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
        .body(())
        .unwrap()
}

#[test]
fn no_101_without_a_connection_to_take_over_nor_a_get_over_http2() {
    let server = ServerBuilder::new();
    let refused = server
        .upgrade::<_, String>(&mut handmade(http::Version::HTTP_11))
        .unwrap_err();
    let response = refused.into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    assert!(
        response.body().contains("no connection to upgrade"),
        "{}",
        response.body()
    );
    // Over HTTP/2 a WebSocket is an extended CONNECT (RFC 8441): an HTTP/1.1-style GET upgrade
    // is 405, naming CONNECT.
    let refused = server
        .upgrade::<_, String>(&mut handmade(http::Version::HTTP_2))
        .unwrap_err();
    assert_eq!(
        refused.error().status(),
        Some(StatusCode::METHOD_NOT_ALLOWED)
    );
    let response = refused.into_response();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "CONNECT");
    // A valid extended CONNECT with no stream to take over: no 200 either.
    let mut connect = Request::builder()
        .method(http::Method::CONNECT)
        .uri("https://x/ws")
        .version(http::Version::HTTP_2)
        .header("Sec-WebSocket-Version", "13")
        .body(())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    assert!(sockeye::hyper::is_upgrade_request(&connect));
    let refused = server.upgrade::<_, String>(&mut connect).unwrap_err();
    let response = refused.into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().get(header::CONNECTION).is_none());
}

#[test]
fn a_refusal_that_is_no_valid_response_is_a_500() {
    for (status, header) in [
        (StatusCode::SWITCHING_PROTOCOLS, None),
        (StatusCode::NO_CONTENT, None),
        (StatusCode::FORBIDDEN, Some(header::CONTENT_TYPE)),
        (StatusCode::FORBIDDEN, Some(header::CONNECTION)),
    ] {
        let server = ServerBuilder::new().on_request(move |_| {
            let mut headers = HeaderMap::new();
            if let Some(name) = &header {
                headers.insert(name.clone(), HeaderValue::from_static("x"));
            }
            Err(Reject::new(status, "no").headers(headers))
        });
        let refused = server
            .upgrade::<_, String>(&mut handmade(http::Version::HTTP_11))
            .unwrap_err();
        assert!(refused.error().is_misuse(), "{:?}", refused.error());
        assert_eq!(
            refused.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // A valid refusal keeps its status, headers and body, and closes the connection.
    let server = ServerBuilder::new().on_request(|_| {
        let mut headers = HeaderMap::new();
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Reject::new(StatusCode::UNAUTHORIZED, "token needed\n").headers(headers))
    });
    let response = server
        .upgrade::<_, String>(&mut handmade(http::Version::HTTP_11))
        .unwrap_err()
        .into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        response
            .headers()
            .get_all(header::CONTENT_TYPE)
            .iter()
            .count(),
        1
    );
    assert_eq!(response.headers()[header::CONNECTION], "close");
    assert_eq!(response.body(), "token needed\n");
}
