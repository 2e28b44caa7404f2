//! WebSocket over HTTP/2 (RFC 8441) through `sockeye::hyper`: a real hyper HTTP/2 server built
//! with `http2_builder`, and the `h2` crate as the client, over loopback sockets. The client side
//! drives the core's `Connection` by hand over the h2 stream.

#[path = "support/h2_client.rs"]
mod h2_client;
use sockeye_test_support as support;

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::client::SendRequest;
use h2_client::{Client, extended_connect, h2_connect};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sockeye::{DeflateConfig, Message, ServerBuilder};
use support::bounded;
use tokio::net::{TcpListener, TcpStream};

/// A hyper HTTP/2 server (prior knowledge, no TLS): echo at `/ws`, a WebSocket that is never
/// read at `/stall`, 404 for a WebSocket anywhere else, a plain page for other requests.
async fn h2_server(server: ServerBuilder) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    std::future::ready(Ok::<_, Infallible>(handle(&server, request)))
                });
                let _ = sockeye::hyper::http2_builder()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn handle(server: &ServerBuilder, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !sockeye::hyper::is_upgrade_request(&request) {
        return Response::new(Full::from("a plain page\n"));
    }
    let path = request.uri().path().to_owned();
    if path != "/ws" && path != "/stall" {
        let mut response = Response::new(Full::from("no WebSocket here\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    match server.upgrade(&mut request) {
        Ok((response, websocket)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = websocket.await else {
                    return;
                };
                if path == "/stall" {
                    // Never read: hold the WebSocket until the client goes away.
                    std::future::pending::<()>().await;
                }
                support::echo(&mut ws).await;
            });
            response
        }
        Err(refused) => refused.into_response(),
    }
}

fn chat_deflate_server() -> ServerBuilder {
    ServerBuilder::new()
        .protocols(["chat"])
        .deflate(DeflateConfig::new())
}

/// An h2 client connection to a fresh [`h2_server`] with `server`: the server's address, the
/// client's sender, and the task driving the connection.
async fn h2_session(server: ServerBuilder) -> (SocketAddr, SendRequest<Bytes>, Driver) {
    let addr = h2_server(server).await;
    let (sender, driver) = h2_connect(TcpStream::connect(addr).await.unwrap()).await;
    (addr, sender, driver)
}

type Driver = tokio::task::JoinHandle<Result<(), h2::Error>>;

/// An HTTP/2 server without the extended CONNECT on `io`: `page` for every request.
async fn serve_pages_only<T>(io: T, page: &'static str)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |_request: Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(
            page,
        ))))
    });
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A certificate authority named `ca_name`, and a TLS acceptor for `localhost` with a
/// certificate it signed, offering `alpn`.
fn tls_acceptor(ca_name: &str, alpn: &[&str]) -> (support::Ca, sockeye::TlsAcceptor) {
    let ca = support::Ca::new(ca_name);
    let leaf = ca.server(&["localhost"]);
    let tls = sockeye::TlsAcceptor::builder(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes())
        .unwrap()
        .alpn_protocols(alpn.iter().copied())
        .build()
        .unwrap();
    (ca, tls)
}

/// A client for `wss://localhost:{port}{path}` that trusts `ca`.
fn tls_client_at(port: u16, path: &str, ca: &support::Ca) -> sockeye::ClientBuilder {
    sockeye::ClientBuilder::new(format!("wss://localhost:{port}{path}")).tls(
        sockeye::TlsConfig::new()
            .add_root_pem(ca.pem().as_bytes())
            .unwrap(),
    )
}

#[tokio::test]
async fn echo_over_an_extended_connect() {
    bounded(async {
        let (addr, sender, _driver) = h2_session(chat_deflate_server()).await;
        let mut request = extended_connect(&format!("http://{addr}/ws"));
        let headers = request.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("superchat, chat"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
        );
        let (head, client) = Client::open(&sender, request).await;
        assert_eq!(head.status(), StatusCode::OK);
        let headers = head.headers();
        // RFC 8441: no key, no accept, no Upgrade or Connection.
        for name in [
            header::SEC_WEBSOCKET_ACCEPT,
            header::UPGRADE,
            header::CONNECTION,
        ] {
            assert!(headers.get(&name).is_none(), "{name} in a 200 to a CONNECT");
        }
        assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        let extensions = headers[header::SEC_WEBSOCKET_EXTENSIONS].to_str().unwrap();
        assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
        let mut client = client.unwrap();

        client.send(Message::text("hello over h2")).await;
        assert_eq!(client.message().await, Message::text("hello over h2"));
        client.send(Message::binary(vec![0u8, 1, 2, 255])).await;
        assert_eq!(
            client.message().await,
            Message::binary(vec![0u8, 1, 2, 255])
        );
        // Larger than the stream and connection windows, and not compressible.
        let big: Vec<u8> = (0..700_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        client.send(Message::binary(big.clone())).await;
        assert_eq!(client.message().await, Message::binary(big));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn many_websockets_share_one_connection() {
    bounded(async {
        let (addr, sender, _driver) = h2_session(ServerBuilder::new()).await;
        let mut clients = Vec::new();
        for _ in 0..10 {
            let (head, client) =
                Client::accepted(&sender, extended_connect(&format!("http://{addr}/ws"))).await;
            // Neither subprotocol nor extension offered: none selected.
            assert!(head.headers().get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
            assert!(
                head.headers()
                    .get(header::SEC_WEBSOCKET_EXTENSIONS)
                    .is_none()
            );
            clients.push(client);
        }
        for (i, client) in clients.iter_mut().enumerate() {
            client.send(Message::text(format!("stream {i}"))).await;
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(client.message().await, Message::text(format!("stream {i}")));
        }
        for client in clients {
            client.close().await;
        }
    })
    .await;
}

#[tokio::test]
async fn refusals_over_h2() {
    bounded(async {
        let (addr, sender, _driver) = h2_session(ServerBuilder::new()).await;

        // The default Origin policy: browsers only from the server's own host.
        let mut request = extended_connect(&format!("http://{addr}/ws"));
        request.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let (head, client) = Client::open(&sender, request).await;
        assert_eq!(head.status(), StatusCode::FORBIDDEN);
        assert!(client.is_none());
        assert!(head.headers().get(header::CONNECTION).is_none());

        // A route without a WebSocket handler.
        let (head, _) =
            Client::open(&sender, extended_connect(&format!("http://{addr}/nothing"))).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND);

        // The wrong version: 400 naming the version spoken, as over HTTP/1.1.
        let mut request = extended_connect(&format!("http://{addr}/ws"));
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let (head, _) = Client::open(&sender, request).await;
        assert!(head.status().is_client_error(), "{}", head.status());
        assert_eq!(head.headers()[header::SEC_WEBSOCKET_VERSION], "13");

        // The connection still serves WebSockets after the refusals.
        let (_, mut client) =
            Client::accepted(&sender, extended_connect(&format!("http://{addr}/ws"))).await;
        client.send(Message::text("still here")).await;
        assert_eq!(client.message().await, Message::text("still here"));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_stalled_websocket_does_not_stall_its_connection() {
    bounded(async {
        let (addr, sender, _driver) = h2_session(ServerBuilder::new()).await;
        // The server never reads this one: the client's sending stops at the stream's window.
        let (_, mut stalled) =
            Client::accepted(&sender, extended_connect(&format!("http://{addr}/stall"))).await;
        let stuck = tokio::spawn(async move {
            for _ in 0..8 {
                stalled.send(Message::binary(vec![7u8; 512 << 10])).await;
            }
        });
        // Each message on the other stream is larger than a stream window; together they are
        // far more than the connection's window, so they pass only if the stalled stream does
        // not hold the connection's window.
        let (_, mut client) =
            Client::accepted(&sender, extended_connect(&format!("http://{addr}/ws"))).await;
        for i in 0..12u8 {
            let message = Message::binary(vec![i; 600 << 10]);
            client.send(message.clone()).await;
            assert_eq!(client.message().await, message);
        }
        assert!(
            !stuck.is_finished(),
            "the stalled stream was read after all"
        );
        stuck.abort();
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn rapid_reset_closes_the_connection() {
    bounded(async {
        let (addr, sender, driver) = h2_session(ServerBuilder::new()).await;
        let mut sender = sender.ready().await.unwrap();
        // Open streams and reset them at once, far more than the server lets pass.
        for _ in 0..(sockeye::hyper::H2_MAX_PENDING_ACCEPT_RESET_STREAMS * 20) {
            let Ok((_, mut stream)) =
                sender.send_request(extended_connect(&format!("http://{addr}/ws")), false)
            else {
                // The connection is gone already.
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            if poll_fn(|cx| sender.poll_ready(cx)).await.is_err() {
                break;
            }
        }
        let ended = driver.await.unwrap();
        let error = ended.expect_err("the server let the rapid resets pass");
        assert!(error.is_go_away(), "{error}");
        assert_eq!(
            error.reason(),
            Some(h2::Reason::ENHANCE_YOUR_CALM),
            "{error}"
        );
    })
    .await;
}

// ---- The client: `ClientBuilder::connect_http2` and `Http2Connection` ----

#[tokio::test]
async fn the_client_opens_websockets_as_streams() {
    bounded(Box::pin(async {
        let addr = h2_server(chat_deflate_server()).await;
        let (mut ws, response) = sockeye::ClientBuilder::new(format!("ws://{addr}/ws"))
            .protocol("chat")
            .deflate(DeflateConfig::new())
            .connect_http2()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(ws.extension(), Some("permessage-deflate"));
        ws.send(Message::text("client over h2")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("client over h2")
        );
        let big = vec![9u8; 900_000];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.next().await.is_none());

        // Several WebSockets on one connection.
        let connection = sockeye::http2::Http2Connection::open(&sockeye::ClientBuilder::new(
            format!("ws://{addr}/"),
        ))
        .await
        .unwrap();
        let mut sockets = Vec::new();
        for _ in 0..5 {
            let (ws, _) = connection
                .websocket(sockeye::ClientBuilder::new(format!("ws://{addr}/ws")))
                .await
                .unwrap();
            sockets.push(ws);
        }
        for (i, ws) in sockets.iter_mut().enumerate() {
            ws.send(Message::text(format!("{i}"))).await.unwrap();
        }
        for (i, ws) in sockets.iter_mut().enumerate() {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(format!("{i}"))
            );
        }
        // A refusal is the server's status and body.
        let error = connection
            .websocket(sockeye::ClientBuilder::new(format!("ws://{addr}/nothing")))
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::NOT_FOUND), "{error}");
        assert!(
            matches!(
                error.kind(),
                sockeye::Kind::Refused {
                    version: http::Version::HTTP_2,
                    ..
                }
            ),
            "{error}"
        );
        for mut ws in sockets {
            ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
            assert!(ws.next().await.is_none());
        }
    }))
    .await;
}

#[tokio::test]
async fn the_client_says_when_http2_is_unavailable() {
    bounded(async {
        // HTTP/2 without the extended CONNECT.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve_pages_only(tcp, "no websockets here\n"));
            }
        });
        let error = sockeye::ClientBuilder::new(format!("ws://{addr}/ws"))
            .connect_http2()
            .await
            .unwrap_err();
        assert!(sockeye::http2::is_http2_unavailable(&error), "{error}");
    })
    .await;
}

/// Interop: Node's `http2` server with `enableConnectProtocol`, echoing WebSocket frames
/// (`conformance/h2/node-server.mjs`), and our client.
#[tokio::test]
async fn the_client_against_nodes_http2_server() {
    let Some(node) = support::program("node") else {
        return;
    };
    bounded(async {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../conformance/h2/node-server.mjs"
        );
        let mut child = tokio::process::Command::new(node)
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        let port: u16 = lines.next_line().await.unwrap().unwrap().parse().unwrap();
        let (mut ws, response) = sockeye::ClientBuilder::new(format!("ws://127.0.0.1:{port}/echo"))
            .protocol("chat")
            .connect_http2()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(ws.protocol(), Some("chat"));
        ws.send(Message::text("hello node")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("hello node")
        );
        let big: Vec<u8> = (0..300_000u32).map(|i| i.to_le_bytes()[0]).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.next().await.is_none());
    })
    .await;
}

/// `sockeye::hyper::serve_connection` over TLS: one port, HTTP/2 or HTTP/1.1 by ALPN; our
/// client over both, and over HTTP/2 through TLS with ALPN.
#[tokio::test]
async fn one_tls_port_serves_both_versions() {
    bounded(async {
        let (ca, tls) = tls_acceptor("h2 test ca", &["h2", "http/1.1"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = ServerBuilder::new().protocols(["chat"]);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, server) = (tls.clone(), server.clone());
                tokio::spawn(async move {
                    let stream = sockeye::MaybeTlsStream::ServerTls(Box::new(
                        tls.accept(tcp).await.unwrap(),
                    ));
                    let _ = sockeye::hyper::serve_connection(
                        server,
                        stream,
                        |mut ws, request| async move {
                            // Tell the client which version carried it.
                            let version =
                                format!("{:?} {}", request.version(), request.uri().path());
                            ws.send(Message::text(version)).await.unwrap();
                            support::echo(&mut ws).await;
                        },
                    )
                    .await;
                });
            }
        });
        let client = |path: &str| tls_client_at(port, path, &ca).protocol("chat");

        let (mut ws, response) = client("/two").connect_http2().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("HTTP/2.0 /two")
        );
        ws.send(Message::binary(vec![5u8; 400_000])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![5u8; 400_000])
        );
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.next().await.is_none());

        let (mut ws, response) = client("/one")
            .http2(sockeye::Http2Policy::Never)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("HTTP/1.1 /one")
        );
        ws.send(Message::text("h1")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("h1"));
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

// ---- `connect` over TLS: HTTP/2 when the server takes it, HTTP/1.1 otherwise ----

/// What a TLS test server saw: the protocol ALPN chose on each connection.
type Seen = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

/// A TLS server on loopback for `localhost` offering `alpn`. HTTP/2 connections are served
/// by `sockeye::hyper::serve_connection` when `websockets_over_h2`, otherwise by a hyper
/// HTTP/2 server that does not enable the extended CONNECT; HTTP/1.1 ones by
/// `serve_connection`. Each WebSocket is told the HTTP version of its request, then echoed.
async fn tls_server(alpn: &[&str], websockets_over_h2: bool) -> (u16, support::Ca, Seen) {
    let (ca, tls) = tls_acceptor("h2 client test ca", alpn);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, record) = (tls.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let Ok(tls) = tls.accept(tcp).await else {
                    return;
                };
                let stream = sockeye::MaybeTlsStream::ServerTls(Box::new(tls));
                let alpn = stream.alpn_protocol().map(<[u8]>::to_vec);
                record.lock().unwrap().push(alpn.clone());
                if alpn.as_deref() == Some(b"h2") && !websockets_over_h2 {
                    serve_pages_only(stream, "pages only\n").await;
                    return;
                }
                let _ = sockeye::hyper::serve_connection(
                    ServerBuilder::new(),
                    stream,
                    |mut ws, request| async move {
                        let version = format!("{:?}", request.version());
                        if ws.send(Message::text(version)).await.is_err() {
                            return;
                        }
                        support::echo(&mut ws).await;
                    },
                )
                .await;
            });
        }
    });
    (port, ca, seen)
}

fn tls_client(port: u16, ca: &support::Ca) -> sockeye::ClientBuilder {
    tls_client_at(port, "/ws", ca)
}

/// A message out and back, and the version the server saw, then the close handshake.
async fn exchange(mut ws: sockeye::WebSocket<sockeye::MaybeTlsStream>, version: &str) {
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(version));
    let big = vec![3u8; 300_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.next().await.is_none());
}

#[tokio::test]
async fn connect_uses_http2_when_the_server_offers_it() {
    bounded(async {
        let (port, ca, seen) = tls_server(&["h2", "http/1.1"], true).await;
        let (ws, response) = tls_client(port, &ca).connect().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(ws.get_ref().http_version(), http::Version::HTTP_2);
        assert!(ws.get_ref().is_tls());
        assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"h2"[..]));
        assert!(ws.get_ref().tcp().is_none());
        // The request as sent: the extended CONNECT's pseudo-headers.
        let sent = response.extensions().get::<sockeye::SentRequest>().unwrap();
        let sent = String::from_utf8_lossy(&sent.0);
        assert!(
            sent.starts_with(":method: CONNECT\r\n:protocol: websocket\r\n"),
            "{sent}"
        );
        assert!(sent.contains(":path: /ws\r\n"), "{sent}");
        exchange(ws, "HTTP/2.0").await;
        assert_eq!(seen.lock().unwrap().as_slice(), [Some(b"h2".to_vec())]);
        // Require: the same.
        let (ws, response) = tls_client(port, &ca)
            .http2(sockeye::Http2Policy::Require)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        exchange(ws, "HTTP/2.0").await;
        // Never: HTTP/1.1 on the same server.
        let (ws, response) = tls_client(port, &ca)
            .http2(sockeye::Http2Policy::Never)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
        exchange(ws, "HTTP/1.1").await;
    })
    .await;
}

#[tokio::test]
async fn connect_falls_back_when_h2_lacks_the_extended_connect() {
    bounded(async {
        let (port, ca, seen) = tls_server(&["h2", "http/1.1"], false).await;
        let (ws, response) = tls_client(port, &ca).connect().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ws.get_ref().http_version(), http::Version::HTTP_11);
        exchange(ws, "HTTP/1.1").await;
        // The first connection chose h2 and was given up; the second offered http/1.1 alone.
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [Some(b"h2".to_vec()), Some(b"http/1.1".to_vec())]
        );

        let error = tls_client(port, &ca)
            .http2(sockeye::Http2Policy::Require)
            .connect()
            .await
            .unwrap_err();
        assert!(sockeye::http2::is_http2_unavailable(&error), "{error}");
        assert!(
            error
                .to_string()
                .contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
            "{error}"
        );
    })
    .await;
}

#[tokio::test]
async fn connect_falls_back_when_alpn_chooses_http11() {
    bounded(async {
        let (port, ca, seen) = tls_server(&["http/1.1"], true).await;
        let (ws, response) = tls_client(port, &ca).connect().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
        exchange(ws, "HTTP/1.1").await;
        // On the same connection: no second one.
        assert_eq!(seen.lock().unwrap().len(), 1);

        let error = tls_client(port, &ca)
            .http2(sockeye::Http2Policy::Require)
            .connect()
            .await
            .unwrap_err();
        assert!(sockeye::http2::is_http2_unavailable(&error), "{error}");
        assert!(error.to_string().contains("did not choose h2"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn plain_ws_stays_on_http11_unless_asked() {
    bounded(async {
        // An HTTP/1.1-only server: the default client never sends it an HTTP/2 preface.
        let (addr, _accepted) = support::echo_server(ServerBuilder::new()).await;
        let url = format!("ws://{addr}/");
        let (mut ws, response) = sockeye::connect(&url).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        ws.send(Message::text("one")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        // Prefer: prior knowledge fails, HTTP/1.1 on a new connection.
        let (mut ws, response) = sockeye::ClientBuilder::new(&url)
            .http2(sockeye::Http2Policy::Prefer)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        ws.send(Message::text("two")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("two"));
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        // Require: a clear error.
        let error = sockeye::ClientBuilder::new(&url)
            .http2(sockeye::Http2Policy::Require)
            .connect()
            .await
            .unwrap_err();
        assert!(sockeye::http2::is_http2_unavailable(&error), "{error}");

        // And over a prior-knowledge HTTP/2 server, Prefer and Require use HTTP/2.
        let addr = h2_server(ServerBuilder::new()).await;
        for policy in [sockeye::Http2Policy::Prefer, sockeye::Http2Policy::Require] {
            let (mut ws, response) = sockeye::ClientBuilder::new(format!("ws://{addr}/ws"))
                .http2(policy)
                .connect()
                .await
                .unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert!(!ws.get_ref().is_tls());
            ws.send(Message::text("h2")).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("h2"));
            ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
            assert!(ws.next().await.is_none());
        }
    })
    .await;
}

// ---- The protocol over an h2 stream: the client's and the server's state machines over an
// in-memory HTTP/2 connection (`tokio::io::duplex`, sockeye's hyper server, its h2 client) ----

/// How a server WebSocket of [`memory_server`] ended: its path, `Ok` when `next` ended with
/// `None` or the error it gave, and the close status.
type Ending = (String, Result<(), String>, Option<sockeye::proto::Closed>);

/// sockeye's HTTP/2 server (`sockeye::hyper::http2_builder`) on one end of a small in-memory
/// pipe, echoing; at `/close` it sends one message and closes with 4001 first. How each
/// WebSocket ended comes back on the channel.
fn memory_server() -> (
    tokio::io::DuplexStream,
    tokio::sync::mpsc::UnboundedReceiver<Ending>,
) {
    let (client, server) = tokio::io::duplex(16 << 10);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let builder = ServerBuilder::new();
    let service = service_fn(move |mut request: Request<Incoming>| {
        let path = request.uri().path().to_owned();
        let response: Response<Full<Bytes>> = match builder.upgrade(&mut request) {
            Ok((response, websocket)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = websocket.await else {
                        return;
                    };
                    if path == "/close" {
                        ws.send(Message::text("closing")).await.unwrap();
                        ws.close(sockeye::CloseCode(4001), "server bye")
                            .await
                            .unwrap();
                    }
                    let ended = loop {
                        match ws.next().await {
                            Some(Ok(message)) => {
                                if message.is_data() && ws.send(message).await.is_err() {
                                    break Err("sending failed".to_owned());
                                }
                            }
                            Some(Err(e)) => break Err(e.to_string()),
                            None => break Ok(()),
                        }
                    };
                    let _ = tx.send((path, ended, ws.close_status().cloned()));
                });
                response
            }
            Err(refused) => refused.into_response(),
        };
        std::future::ready(Ok::<_, Infallible>(response))
    });
    tokio::spawn(sockeye::hyper::http2_builder().serve_connection(TokioIo::new(server), service));
    (client, rx)
}

/// Our client's HTTP/2 connection over `io` and a WebSocket on it at `ws://localhost/ws`, with
/// the server's response.
async fn in_memory_websocket(
    io: tokio::io::DuplexStream,
) -> (
    sockeye::http2::Http2Connection,
    sockeye::WebSocket<sockeye::http2::Http2Stream>,
    Response<()>,
) {
    let connection = sockeye::http2::Http2Connection::open_on(
        io,
        &sockeye::ClientBuilder::new("ws://localhost/"),
    )
    .await
    .unwrap();
    let (ws, response) = connection
        .websocket(sockeye::ClientBuilder::new("ws://localhost/ws"))
        .await
        .unwrap();
    (connection, ws, response)
}

/// Not compressible, so that it stays larger than every window on the wire.
fn noise(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (u32::try_from(i).unwrap().wrapping_mul(2_654_435_761) >> 11).to_le_bytes()[0])
        .collect()
}

#[tokio::test]
async fn the_protocol_over_an_in_memory_h2_stream() {
    bounded(Box::pin(async {
        let (io, mut endings) = memory_server();
        let (connection, mut ws, response) = in_memory_websocket(io).await;
        assert_eq!(response.version(), http::Version::HTTP_2);

        // Messages larger than the stream and connection windows (64 KiB by default), and
        // than the pipe, both ways, several in flight.
        let big = noise(700_000);
        for i in 0..3u8 {
            let mut message = big.clone();
            message[0] = i;
            ws.feed(Message::binary(message)).await.unwrap();
        }
        ws.flush().await.unwrap();
        for i in 0..3u8 {
            let mut message = big.clone();
            message[0] = i;
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(message));
        }
        // Ping and Pong: the server's state machine answers.
        ws.send(Message::ping(&b"over h2"[..])).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Pong(data) => assert_eq!(&data[..], b"over h2"),
            other => panic!("expected the Pong, got {other:?}"),
        }
        // The client closes with its own code: the server sees it, both sides end cleanly.
        ws.close(sockeye::CloseCode(4000), "client bye")
            .await
            .unwrap();
        assert!(ws.next().await.is_none());
        let closed = ws.close_status().unwrap();
        assert!(closed.is_clean(), "{closed:?}");
        let (path, ended, status) = endings.recv().await.unwrap();
        assert_eq!(path, "/ws");
        assert_eq!(ended, Ok(()));
        let status = status.unwrap();
        assert!(status.is_clean(), "{status:?}");
        assert_eq!(status.code(), sockeye::CloseCode(4000));
        assert_eq!(status.remote.unwrap().reason, "client bye");

        // The server closes with its code: the client sees it after the message before.
        let (mut ws, _) = connection
            .websocket(sockeye::ClientBuilder::new("ws://localhost/close"))
            .await
            .unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("closing"));
        // The peer's Close is handed over, then the end.
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, sockeye::CloseCode(4001));
                assert_eq!(frame.reason, "server bye");
            }
            other => panic!("expected the server's Close, got {other:?}"),
        }
        assert!(ws.next().await.is_none());
        let closed = ws.close_status().unwrap();
        assert!(closed.is_clean(), "{closed:?}");
        assert_eq!(closed.code(), sockeye::CloseCode(4001));
        let (path, ended, status) = endings.recv().await.unwrap();
        assert_eq!(path, "/close");
        assert_eq!(ended, Ok(()));
        assert!(status.unwrap().is_clean());
    }))
    .await;
}

#[tokio::test]
async fn fragments_and_stream_endings_over_an_in_memory_h2_stream() {
    bounded(async {
        let (io, mut endings) = memory_server();
        let (sender, _driver) = h2_connect(io).await;

        // The core's client state machine, by hand: a text message in fragments with a Ping
        // between them, and a binary one whose fragments outgrow the windows.
        let (_, mut client) =
            Client::accepted(&sender, extended_connect("http://localhost/ws")).await;
        let conn = client.connection();
        conn.send_fragment(sockeye::DataKind::Text, &b"frag"[..], false)
            .unwrap();
        conn.send_ping(&b"between"[..]).unwrap();
        // A code point split between two fragments.
        conn.send_fragment(
            sockeye::DataKind::Text,
            &"mented \u{e9}".as_bytes()[..8],
            false,
        )
        .unwrap();
        conn.send_fragment(
            sockeye::DataKind::Text,
            &"mented \u{e9}".as_bytes()[8..],
            true,
        )
        .unwrap();
        client.flush().await.unwrap();
        match client.next().await.unwrap() {
            sockeye::proto::Event::Message(Message::Pong(data)) => {
                assert_eq!(&data[..], b"between");
            }
            other => panic!("expected the Pong, got {other:?}"),
        }
        assert_eq!(client.message().await, Message::text("fragmented \u{e9}"));
        let big = noise(300_000);
        let conn = client.connection();
        for (i, chunk) in big.chunks(100_000).enumerate() {
            conn.send_fragment(sockeye::DataKind::Binary, chunk.to_vec(), i == 2)
                .unwrap();
        }
        client.flush().await.unwrap();
        assert_eq!(client.message().await, Message::binary(big));
        // Ends with END_STREAM both ways (asserted by `close`).
        client.close().await;
        let (_, ended, status) = endings.recv().await.unwrap();
        assert_eq!(ended, Ok(()));
        assert_eq!(status.unwrap().code(), sockeye::CloseCode::NORMAL);

        // RST_STREAM from the client: the server's WebSocket ends without a close handshake,
        // an abort.
        let (_, client) = Client::open(&sender, extended_connect("http://localhost/ws")).await;
        let mut client = client.unwrap();
        client.send(Message::text("then gone")).await;
        assert_eq!(client.message().await, Message::text("then gone"));
        client.reset();
        let (_, ended, status) = endings.recv().await.unwrap();
        let status = status.unwrap();
        assert!(ended.is_err(), "a reset taken for a clean close: {ended:?}");
        assert!(
            !status.is_clean(),
            "a reset taken for a clean close: {status:?}"
        );
        assert_eq!(status.code(), sockeye::CloseCode::ABNORMAL);
    })
    .await;
}

#[tokio::test]
async fn a_reset_stream_is_an_abort_for_the_client() {
    bounded(async {
        // A bare h2 server: it accepts the CONNECT, then resets the stream once data arrives.
        let (client_io, server_io) = tokio::io::duplex(16 << 10);
        tokio::spawn(async move {
            let mut connection = h2::server::Builder::new()
                .enable_connect_protocol()
                .handshake::<_, Bytes>(server_io)
                .await
                .unwrap();
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                let mut body = request.into_body();
                tokio::spawn(async move {
                    let _ = body.data().await;
                    send.send_reset(h2::Reason::INTERNAL_ERROR);
                });
            }
        });
        let (_connection, mut ws, _) = in_memory_websocket(client_io).await;
        ws.send(Message::text("hello")).await.unwrap();
        let error = ws
            .next()
            .await
            .expect("a reset taken for a clean close")
            .unwrap_err();
        assert!(!error.is_misuse(), "{error}");
        let closed = ws.close_status().unwrap();
        assert!(!closed.is_clean(), "{closed:?}");
        assert_eq!(closed.code(), sockeye::CloseCode::ABNORMAL);
    })
    .await;
}

/// The client's side of the stalled-stream defence: a WebSocket of an `Http2Connection` that
/// the application does not read holds its stream's window, not the connection's, so the
/// other WebSocket streams of the connection go on receiving. With the connection window equal to a
/// stream's (h2's defaults, 64 KiB each), this hangs.
#[tokio::test]
async fn an_unread_client_websocket_does_not_stall_its_connection() {
    bounded(Box::pin(async {
        let addr = h2_server(ServerBuilder::new()).await;
        let url = format!("ws://{addr}/ws");
        let connection = sockeye::http2::Http2Connection::open(&sockeye::ClientBuilder::new(&url))
            .await
            .unwrap();
        let (mut unread, _) = connection
            .websocket(sockeye::ClientBuilder::new(&url))
            .await
            .unwrap();
        // Its echo comes back and is never read.
        unread
            .send(Message::binary(vec![1u8; 1 << 20]))
            .await
            .unwrap();
        let (mut ws, _) = connection
            .websocket(sockeye::ClientBuilder::new(&url))
            .await
            .unwrap();
        for i in 0..12u8 {
            let message = Message::binary(vec![i; 600 << 10]);
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), message);
        }
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        // The unread one still has its message, whole.
        assert_eq!(
            unread.next().await.unwrap().unwrap(),
            Message::binary(vec![1u8; 1 << 20])
        );
    }))
    .await;
}

/// Through proxies (tinyproxy's HTTP CONNECT, microsocks' SOCKS5) TLS runs end to end in the
/// tunnel, ALPN with it: HTTP/2 when the server takes it, HTTP/1.1 when asked.
#[tokio::test]
async fn connect_uses_http2_through_proxies() {
    bounded(async {
        let (Some(http), Some(socks)) = (
            support::tinyproxy("").await,
            support::microsocks(None).await,
        ) else {
            return;
        };
        let (port, ca, seen) = tls_server(&["h2", "http/1.1"], true).await;
        for proxy in [
            sockeye::Proxy::http("127.0.0.1", http.port),
            sockeye::Proxy::socks5("127.0.0.1", socks.port),
        ] {
            let (ws, response) = tls_client(port, &ca)
                .proxy(proxy.clone())
                .connect()
                .await
                .unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2, "{proxy:?}");
            exchange(ws, "HTTP/2.0").await;
            let (ws, response) = tls_client(port, &ca)
                .proxy(proxy.clone())
                .http2(sockeye::Http2Policy::Never)
                .connect()
                .await
                .unwrap();
            assert_eq!(response.version(), http::Version::HTTP_11, "{proxy:?}");
            exchange(ws, "HTTP/1.1").await;
        }
        assert_eq!(seen.lock().unwrap().len(), 4);
    })
    .await;
}
