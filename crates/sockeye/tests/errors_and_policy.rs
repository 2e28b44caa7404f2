//! Over real loopback sockets: the server's defences (the Origin policy: allowed, refused with
//! 403, missing; the bound on handshakes in progress) and the client's errors, one kind each
//! (a name that does not resolve, a refused connection, a status other than 101).

use http::{HeaderValue, StatusCode};
use sockeye::{ClientBuilder, Kind, OriginPolicy, ServerBuilder};
use sockeye_test_support::{bounded, echo_server, free_port, listen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect_with_origin(url: &str, origin: Option<&str>) -> Result<(), sockeye::Error> {
    let mut client = ClientBuilder::new(url);
    if let Some(origin) = origin {
        client = client.origin(HeaderValue::from_str(origin).unwrap());
    }
    client.connect().await.map(|_| ())
}

fn assert_refused_403(result: Result<(), sockeye::Error>) {
    let e = result.expect_err("the server must refuse");
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN), "{e:?}");
    let Kind::Refused { body, .. } = e.kind() else {
        panic!("{e:?}")
    };
    assert_eq!(&body[..], b"origin not allowed\n");
}

#[tokio::test]
async fn the_default_policy_allows_the_same_host_and_clients_without_origin() {
    bounded(async {
        let (addr, mut outcomes) = echo_server(ServerBuilder::new()).await;
        let url = format!("ws://{addr}/");
        connect_with_origin(&url, Some(&format!("http://{addr}")))
            .await
            .unwrap();
        outcomes.recv().await.unwrap().unwrap();
        connect_with_origin(&url, None).await.unwrap();
        outcomes.recv().await.unwrap().unwrap();
        for evil in [
            "http://evil.example",
            &format!("http://{}:{}", addr.ip(), addr.port() + 1),
            "null",
        ] {
            assert_refused_403(connect_with_origin(&url, Some(evil)).await);
            let server_side = outcomes.recv().await.unwrap().unwrap_err();
            assert_eq!(server_side.status(), Some(StatusCode::FORBIDDEN));
        }
    })
    .await;
}

#[tokio::test]
async fn an_allow_list_and_a_policy_that_requires_origin() {
    bounded(async {
        let policy = OriginPolicy::allow(["https://app.example", "http://localhost:3000"])
            .allow_missing(false);
        let (addr, _outcomes) = echo_server(ServerBuilder::new().origin_policy(policy)).await;
        let url = format!("ws://{addr}/");
        connect_with_origin(&url, Some("https://APP.example"))
            .await
            .unwrap();
        connect_with_origin(&url, Some("http://localhost:3000"))
            .await
            .unwrap();
        assert_refused_403(connect_with_origin(&url, Some("http://localhost:3001")).await);
        assert_refused_403(connect_with_origin(&url, Some(&format!("http://{addr}"))).await);
        assert_refused_403(connect_with_origin(&url, None).await);
    })
    .await;
}

#[tokio::test]
async fn any_and_custom_policies() {
    bounded(async {
        let (addr, _o) = echo_server(ServerBuilder::new().origin_policy(OriginPolicy::any())).await;
        connect_with_origin(&format!("ws://{addr}/"), Some("http://evil.example"))
            .await
            .unwrap();
        let policy = OriginPolicy::custom(|origin, request| {
            origin.ends_with(".trusted.example") && request.path() == "/feed"
        });
        let (addr, _o) = echo_server(ServerBuilder::new().origin_policy(policy)).await;
        let origin = Some("https://a.trusted.example");
        connect_with_origin(&format!("ws://{addr}/feed"), origin)
            .await
            .unwrap();
        assert_refused_403(connect_with_origin(&format!("ws://{addr}/other"), origin).await);
        assert_refused_403(
            connect_with_origin(&format!("ws://{addr}/feed"), Some("https://x.example")).await,
        );
    })
    .await;
}

#[tokio::test]
async fn handshakes_beyond_the_bound_are_turned_away_with_503() {
    bounded(async {
        let (listener, addr) = listen().await;
        // No minimum rate: the two silent handshakes are never judged stalled (this test takes
        // more than the second after which they would be), so they keep their slots.
        let server = ServerBuilder::new()
            .max_concurrent_handshakes(2)
            .min_handshake_rate(0);

        // Two clients connect and send nothing: they hold both handshake slots.
        let mut silent = Vec::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
            let (tcp, _) = listener.accept().await.unwrap();
            let server = server.clone();
            held.push(tokio::spawn(async move {
                server.accept_tcp(tcp).await.map(|_| ())
            }));
        }
        while server.handshakes_in_progress() < 2 {
            tokio::task::yield_now().await;
        }

        // A third that has already sent its request is answered 503 (its unread request must
        // not turn the close into a reset that would hide the answer).
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let (turned_away, answer) = tokio::join!(server.accept_tcp(tcp), async {
            let mut answer = Vec::new();
            third.read_to_end(&mut answer).await.map(|_| answer)
        });
        let e = turned_away.map(|_| ()).unwrap_err();
        assert!(matches!(e.kind(), Kind::Busy), "{e:?}");
        let answer = String::from_utf8(answer.expect("the 503, not a reset")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");

        // Our own client sees the status.
        let url = format!("ws://{addr}/");
        let client = tokio::spawn(async move { sockeye::connect(&url).await.map(|_| ()) });
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(matches!(
            server.accept_tcp(tcp).await.map(|_| ()).unwrap_err().kind(),
            Kind::Busy
        ));
        let e = client.await.unwrap().unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{e:?}");

        // A silent client leaving frees its slot, and a real client gets in.
        drop(silent.remove(0));
        let first = held.remove(0).await.unwrap().unwrap_err();
        assert!(first.is_io(), "{first:?}");
        assert_eq!(server.handshakes_in_progress(), 1);
        let url = format!("ws://{addr}/");
        let client = tokio::spawn(async move { sockeye::connect(&url).await });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = server.accept_tcp(tcp).await.unwrap();
        let (mut client_ws, _) = client.await.unwrap().unwrap();
        client_ws.send(sockeye::Message::text("in")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            sockeye::Message::text("in")
        );
        assert_eq!(server.handshakes_in_progress(), 1);
        silent[0].shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_dns_error() {
    bounded(async {
        // `.invalid` never resolves (RFC 6761 section 6.4).
        let e = sockeye::connect("ws://no-such-host.invalid/")
            .await
            .map(|_| ())
            .unwrap_err();
        let Kind::Dns { host, .. } = e.kind() else {
            panic!("{e:?}")
        };
        assert_eq!(host, "no-such-host.invalid");
        assert!(e.is_connect());
    })
    .await;
}

#[tokio::test]
async fn a_port_nobody_listens_on_is_connection_refused() {
    bounded(async {
        let port = free_port();
        let e = sockeye::connect(&format!("ws://127.0.0.1:{port}/"))
            .await
            .map(|_| ())
            .unwrap_err();
        let Kind::ConnectionRefused { addr } = e.kind() else {
            panic!("{e:?}")
        };
        assert_eq!(addr.port(), port);
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    })
    .await;
}

#[tokio::test]
async fn a_plain_http_server_gives_its_status_and_body() {
    bounded(async {
        let (listener, addr) = listen().await;
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = tcp.read(&mut buf).await;
            tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno route\n")
                .await
                .unwrap();
        });
        let e = sockeye::connect(&format!("ws://{addr}/x"))
            .await
            .map(|_| ())
            .unwrap_err();
        let Kind::Refused { status, body, .. } = e.kind() else {
            panic!("{e:?}")
        };
        assert_eq!(*status, StatusCode::NOT_FOUND);
        assert_eq!(&body[..], b"no route\n");
    })
    .await;
}

#[tokio::test]
async fn same_host_or_a_list() {
    bounded(async {
        let policy = OriginPolicy::same_host_or(["https://app.example"]);
        let (addr, _o) = echo_server(ServerBuilder::new().origin_policy(policy)).await;
        let url = format!("ws://{addr}/");
        connect_with_origin(&url, Some(&format!("http://{addr}")))
            .await
            .unwrap();
        connect_with_origin(&url, Some("HTTPS://app.example:443/"))
            .await
            .unwrap();
        connect_with_origin(&url, None).await.unwrap();
        assert_refused_403(connect_with_origin(&url, Some("https://evil.example")).await);
    })
    .await;
}

#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn wss_without_the_rustls_feature_is_unsupported() {
    // Nothing listens there: the URL is refused before any connection is tried.
    let port = free_port();
    let e = sockeye::connect(&format!("wss://127.0.0.1:{port}/"))
        .await
        .map(|_| ())
        .unwrap_err();
    let Kind::Io(io) = e.kind() else {
        panic!("{e:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("rustls"), "{e}");
}
