//! `sockeye::axum`: the `WebSocketUpgrade` extractor in a real axum app, over loopback sockets.

#[path = "support/h2_client.rs"]
mod h2_client;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::{HeaderValue, StatusCode};
use sockeye::axum::WebSocketUpgrade;
use sockeye::hyper::Upgraded;
use sockeye::{ClientBuilder, DeflateConfig, Message, OriginPolicy, ServerBuilder, WebSocket};
use sockeye_test_support::{self as support, listen};

async fn echo(mut ws: WebSocket<Upgraded>) {
    support::echo(&mut ws).await;
}

async fn with_settings(State(server): State<ServerBuilder>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.accept(&server, echo)
}

async fn with_defaults(upgrade: WebSocketUpgrade) -> Response {
    assert_eq!(upgrade.request().uri().path(), "/default");
    upgrade.on_upgrade(echo)
}

/// One route for a page and a WebSocket: `Option<WebSocketUpgrade>`.
async fn page_or_websocket(upgrade: Option<WebSocketUpgrade>) -> Response {
    match upgrade {
        Some(upgrade) => upgrade.on_upgrade(echo),
        None => axum::response::IntoResponse::into_response("the page"),
    }
}

async fn app() -> SocketAddr {
    let server = ServerBuilder::new()
        .origin_policy(OriginPolicy::allow(["https://app.example"]))
        .protocols(["chat"])
        .deflate(DeflateConfig::new());
    let app = Router::new()
        .route("/ws", get(with_settings))
        .route("/default", get(with_defaults))
        .route("/both", get(page_or_websocket))
        .route("/", get(|| async { "a plain page" }))
        .with_state(server);
    let (listener, addr) = listen().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn an_axum_route_echoes_with_the_server_settings() {
    support::bounded(async {
        let addr = app().await;
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/ws"))
            .origin(HeaderValue::from_static("https://app.example"))
            .protocol("chat")
            .deflate(DeflateConfig::new())
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(ws.extension(), Some("permessage-deflate"));
        ws.send(Message::text("through axum")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("through axum")
        );
        let big = vec![7u8; 2 << 20];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

        // The server's Origin policy applies: another site's page gets 403.
        let error = ClientBuilder::new(format!("ws://{addr}/ws"))
            .origin(HeaderValue::from_static("https://evil.example"))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");

        // The default settings: no subprotocol, no deflate.
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/default"))
            .protocol("chat")
            .deflate(DeflateConfig::new())
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), None);
        assert_eq!(ws.extension(), None);
        ws.send(Message::text("defaults")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("defaults"));
    })
    .await;
}

#[tokio::test]
async fn a_plain_request_to_a_websocket_route_gets_426() {
    support::bounded(async {
        let addr = app().await;
        let response = support::http::get(addr, "/ws").await;
        assert!(response.starts_with("HTTP/1.1 426"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("upgrade: websocket"),
            "{response}"
        );
    })
    .await;
}

#[tokio::test]
async fn one_route_serves_a_page_and_a_websocket() {
    support::bounded(async {
        let addr = app().await;
        let response = support::http::get(addr, "/both").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("the page"), "{response}");
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/both"))
            .connect()
            .await
            .unwrap();
        ws.send(Message::text("both")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("both"));
    })
    .await;
}

/// The same app served over HTTP/2 (prior knowledge) with `sockeye::hyper::http2_builder`:
/// the extractor takes the extended CONNECT of a route routed with `any`.
async fn app_over_h2() -> SocketAddr {
    let server = ServerBuilder::new()
        .origin_policy(OriginPolicy::allow(["https://app.example"]))
        .protocols(["chat"]);
    let app = Router::new()
        .route("/ws", axum::routing::any(with_settings))
        .route("/", get(|| async { "a plain page" }))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let app = app.clone();
            let service = hyper::service::service_fn(move |request| {
                tower_service::Service::call(&mut app.clone(), request)
            });
            tokio::spawn(
                sockeye::hyper::http2_builder()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn an_axum_route_takes_an_extended_connect_over_http2() {
    support::bounded(async {
        let addr = app_over_h2().await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, _driver) = h2_client::h2_connect(tcp).await;
        let mut request = h2_client::extended_connect(&format!("http://{addr}/ws"));
        request.headers_mut().insert(
            http::header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat"),
        );
        let (head, ws) = h2_client::Client::open(&sender, request).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()[http::header::SEC_WEBSOCKET_PROTOCOL], "chat");
        let mut ws = ws.unwrap();
        ws.send(Message::text("through axum over h2")).await;
        assert_eq!(ws.message().await, Message::text("through axum over h2"));
        ws.close().await;

        // The Origin policy holds over HTTP/2 too.
        let mut request = h2_client::extended_connect(&format!("http://{addr}/ws"));
        request.headers_mut().insert(
            http::header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let (head, _) = h2_client::Client::open(&sender, request).await;
        assert_eq!(head.status(), StatusCode::FORBIDDEN);
        // A route without a WebSocket handler: axum's 404.
        let request = h2_client::extended_connect(&format!("http://{addr}/nowhere"));
        let (head, _) = h2_client::Client::open(&sender, request).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
    })
    .await;
}
