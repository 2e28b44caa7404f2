//! Connecting through real proxies started on loopback for each test: Debian's `tinyproxy`
//! (HTTP CONNECT, plain and with basic auth) and `microsocks` (SOCKS5, without and with a
//! username and password), for `ws://` and for `wss://` tunnelled through them; and proxies
//! that misbehave, played by the test itself.

use http::StatusCode;
use sockeye::{
    ClientBuilder, ConnectError, Kind, Message, Proxy, ProxyError, ServerBuilder, SocksReply,
    Timeout, TlsAcceptor, TlsConfig, WebSocketConfig,
};
use sockeye_test_support::{Ca, bounded, echo_server, free_port, listen, microsocks, tinyproxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An echo server over TLS for `localhost` and `127.0.0.1`, and the client TLS that trusts it.
async fn tls_echo() -> (std::net::SocketAddr, TlsConfig) {
    let ca = Ca::new("proxy test ca");
    let leaf = ca.server(&["localhost", "127.0.0.1"]);
    let acceptor =
        TlsAcceptor::from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    let (addr, _) = echo_server(ServerBuilder::new().tls(acceptor)).await;
    let tls = TlsConfig::new()
        .webpki_roots(false)
        .add_root_pem(ca.pem().as_bytes())
        .unwrap();
    (addr, tls)
}

/// Echoes one message through `proxy` to the plain server at `url` (`ws://`).
async fn echo_through(url: &str, proxy: Proxy) -> Result<(), sockeye::Error> {
    echo_through_tls(url, proxy, TlsConfig::new()).await
}

/// Echoes one message through `proxy` to the server at `url`, with `tls` for `wss://`.
async fn echo_through_tls(url: &str, proxy: Proxy, tls: TlsConfig) -> Result<(), sockeye::Error> {
    let (mut ws, _) = ClientBuilder::new(url)
        .proxy(proxy)
        .tls(tls)
        .connect()
        .await?;
    let text = format!("through the proxy to {url}");
    ws.send(Message::text(text.clone())).await?;
    assert_eq!(ws.next().await.expect("a reply")?, Message::text(text));
    ws.close(sockeye::CloseCode::NORMAL, "").await
}

#[tokio::test]
async fn http_connect_carries_ws_and_wss() {
    bounded(async {
        let Some(proxy) = tinyproxy("").await else {
            return;
        };
        let via = Proxy::http("127.0.0.1", proxy.port);
        let (plain, _) = echo_server(ServerBuilder::new()).await;
        echo_through(&format!("ws://{plain}/"), via.clone())
            .await
            .unwrap();
        let (secure, tls) = tls_echo().await;
        echo_through_tls(&format!("wss://localhost:{}/", secure.port()), via, tls)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn http_connect_with_basic_auth() {
    bounded(async {
        let Some(proxy) = tinyproxy("BasicAuth alice s3cret\n").await else {
            return;
        };
        let (plain, _) = echo_server(ServerBuilder::new()).await;
        let url = format!("ws://{plain}/");
        let url_of = |creds: &str| format!("http://{creds}127.0.0.1:{}", proxy.port);
        echo_through(&url, url_of("alice:s3cret@").parse().unwrap())
            .await
            .unwrap();
        let (secure, tls) = tls_echo().await;
        echo_through_tls(
            &format!("wss://127.0.0.1:{}/", secure.port()),
            Proxy::http("127.0.0.1", proxy.port).credentials("alice", "s3cret"),
            tls,
        )
        .await
        .unwrap();
        // tinyproxy answers missing credentials with 407 and wrong ones with 401.
        for (creds, expected) in [
            ("", StatusCode::PROXY_AUTHENTICATION_REQUIRED),
            ("alice:wrong@", StatusCode::UNAUTHORIZED),
        ] {
            let e = echo_through(&url, url_of(creds).parse().unwrap())
                .await
                .unwrap_err();
            assert_eq!(e.proxy_status(), Some(expected), "{e:?}");
            let Kind::Proxy {
                error: ProxyError::Refused { headers, .. },
                ..
            } = e.kind()
            else {
                panic!("{e:?}")
            };
            assert!(
                headers.contains_key("proxy-authenticate")
                    || headers.contains_key("www-authenticate"),
                "{headers:?}"
            );
            assert!(e.is_connect());
            assert_eq!(e.status(), None, "a proxy's refusal is not the server's");
        }
    })
    .await;
}

#[tokio::test]
async fn a_proxy_that_forbids_the_port_gives_403() {
    bounded(async {
        // With a ConnectPort line, tinyproxy tunnels to the ports listed only.
        let Some(proxy) = tinyproxy("ConnectPort 443\n").await else {
            return;
        };
        let (plain, _) = echo_server(ServerBuilder::new()).await;
        let e = echo_through(
            &format!("ws://{plain}/"),
            Proxy::http("127.0.0.1", proxy.port),
        )
        .await
        .unwrap_err();
        assert_eq!(e.proxy_status(), Some(StatusCode::FORBIDDEN), "{e:?}");
        assert!(e.to_string().contains("403"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn socks5_carries_ws_and_wss_with_remote_and_local_resolution() {
    bounded(async {
        let Some(proxy) = microsocks(None).await else {
            return;
        };
        let (plain, _) = echo_server(ServerBuilder::new()).await;
        let (secure, tls) = tls_echo().await;
        for scheme in ["socks5h", "socks5"] {
            let via: Proxy = format!("{scheme}://127.0.0.1:{}", proxy.port)
                .parse()
                .unwrap();
            echo_through(&format!("ws://localhost:{}/", plain.port()), via.clone())
                .await
                .unwrap();
            echo_through_tls(
                &format!("wss://localhost:{}/", secure.port()),
                via,
                tls.clone(),
            )
            .await
            .unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn socks5_with_username_and_password() {
    bounded(async {
        let Some(proxy) = microsocks(Some(("bob", "pa55"))).await else {
            return;
        };
        let (plain, _) = echo_server(ServerBuilder::new()).await;
        let url = format!("ws://{plain}/");
        let via = Proxy::socks5("127.0.0.1", proxy.port);
        echo_through(&url, via.clone().credentials("bob", "pa55"))
            .await
            .unwrap();
        for attempt in [via.clone().credentials("bob", "nope"), via] {
            let e = echo_through(&url, attempt).await.unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    Kind::Proxy {
                        error: ProxyError::AuthRejected(_),
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn socks5_reports_a_destination_it_cannot_reach() {
    bounded(async {
        let Some(proxy) = microsocks(None).await else {
            return;
        };
        // Nothing listens on the port of a listener just closed.
        let port = free_port();
        let e = echo_through(
            &format!("ws://127.0.0.1:{port}/"),
            Proxy::socks5("127.0.0.1", proxy.port),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e.kind(),
                Kind::Proxy {
                    error: ProxyError::SocksRefused(SocksReply::ConnectionRefused),
                    ..
                }
            ),
            "{e:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_proxy_error() {
    bounded(async {
        let port = free_port();
        let e = echo_through("ws://127.0.0.1:9/", Proxy::http("127.0.0.1", port))
            .await
            .unwrap_err();
        let Kind::Proxy {
            error: ProxyError::Unreachable(inner),
            proxy,
        } = e.kind()
        else {
            panic!("{e:?}")
        };
        assert_eq!(proxy, &format!("http://127.0.0.1:{port}"));
        assert!(matches!(inner, ConnectError::Refused { .. }), "{inner:?}");
    })
    .await;
}

#[tokio::test]
async fn a_server_name_resolved_for_socks5_that_does_not_resolve_is_a_dns_error() {
    bounded(async {
        // `socks5://` resolves the server's name here, before the proxy is reached (and no
        // proxy listens on this port): the failure is the name's, as for a direct connection.
        let via: Proxy = format!("socks5://127.0.0.1:{}", free_port())
            .parse()
            .unwrap();
        let e = echo_through("ws://no-such-host.invalid/", via)
            .await
            .unwrap_err();
        let Kind::Dns { host, .. } = e.kind() else {
            panic!("{e:?}")
        };
        assert_eq!(host, "no-such-host.invalid");
        assert!(e.is_connect());
    })
    .await;
}

// ---- Proxies that misbehave, played by the test on a loopback socket ----

/// What a fake proxy does after its answer.
enum After {
    /// Relays bytes to this address.
    Relay(std::net::SocketAddr),
    /// Holds the connection open without a word more.
    Hold,
    /// Closes the connection.
    Close,
}

/// A one-connection HTTP proxy that reads the CONNECT request, answers with `answer`, and then
/// does what `after` says.
async fn fake_proxy(answer: Vec<u8>, after: After) -> u16 {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0_u8; 1];
            if client.read_exact(&mut byte).await.is_err() {
                return;
            }
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"CONNECT "), "{head:?}");
        let _ = client.write_all(&answer).await;
        match after {
            After::Relay(addr) => {
                let mut server = TcpStream::connect(addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
            After::Hold => {
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest).await;
            }
            After::Close => {}
        }
    });
    addr.port()
}

fn proxy_error(e: &sockeye::Error) -> &ProxyError {
    match e.kind() {
        Kind::Proxy { error, .. } => error,
        _ => panic!("not a proxy error: {e:?}"),
    }
}

#[tokio::test]
async fn interim_answers_before_the_connect_answer_are_skipped() {
    bounded(async {
        let (echo, _) = echo_server(ServerBuilder::new()).await;
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\n";
        let port = fake_proxy(answer.to_vec(), After::Relay(echo)).await;
        echo_through(&format!("ws://{echo}/"), Proxy::http("127.0.0.1", port))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_connect_answer_that_is_too_large_or_followed_by_data_is_refused() {
    bounded(async {
        let huge = format!("HTTP/1.1 200 OK\r\nX-Filler: {}", "a".repeat(20_000));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X-Filler: a\r\n".repeat(100));
        let early = b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        let not_http = b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec();
        for (answer, expected, after) in [
            (huge.into_bytes(), "too large", After::Hold),
            (many.into_bytes(), "too many headers", After::Hold),
            (early, "data after", After::Hold),
            (not_http, "not HTTP", After::Hold),
            (Vec::new(), "closed the connection", After::Close),
        ] {
            let port = fake_proxy(answer, after).await;
            let e = echo_through("ws://127.0.0.1:9/", Proxy::http("127.0.0.1", port))
                .await
                .unwrap_err();
            let ProxyError::Malformed(why) = proxy_error(&e) else {
                panic!("{e:?}")
            };
            assert!(why.contains(expected), "{why}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_silent_proxy_tls_server_or_server_is_bounded_by_the_handshake_timeout() {
    bounded(async {
        let config = WebSocketConfig::builder()
            .handshake_timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap();
        // A proxy that reads CONNECT and never answers.
        let (listener, addr) = listen().await;
        let port = addr.port();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let e = ClientBuilder::new("ws://127.0.0.1:9/")
            .config(config.clone())
            .proxy(Proxy::http("127.0.0.1", port))
            .connect()
            .await
            .map(|_| ())
            .unwrap_err();
        // The stage that ran out is named: the tunnel is part of connecting.
        assert!(matches!(e.kind(), Kind::Timeout(Timeout::Connect)), "{e:?}");
        // A "TLS server" that accepts and never answers the ClientHello.
        let e = ClientBuilder::new(format!("wss://127.0.0.1:{port}/"))
            .config(config.clone())
            .connect()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(e.kind(), Kind::Timeout(Timeout::Tls)), "{e:?}");
        // A server that takes TCP but never answers the upgrade request.
        let e = ClientBuilder::new(format!("ws://127.0.0.1:{port}/"))
            .config(config)
            .connect()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(e.kind(), Kind::Timeout(Timeout::Handshake)),
            "{e:?}"
        );
        held.abort();
    })
    .await;
}
