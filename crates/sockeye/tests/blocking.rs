//! `sockeye::blocking`: the blocking client and server, against the async ones and each other,
//! over real loopback sockets (and real TLS).

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use http::StatusCode;
use sockeye::{
    ClientBuilder, CloseCode, DeflateConfig, Message, Reject, ServerBuilder, TlsAcceptor,
    TlsConfig, TlsFailure,
};
use sockeye_test_support::{self as support, listen_blocking};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

/// Runs blocking code off the runtime, within the test's time limit.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    support::bounded(async { tokio::task::spawn_blocking(f).await.unwrap() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_against_the_async_server() {
    let (addr, _accepted) =
        support::echo_server(ServerBuilder::new().deflate(DeflateConfig::new())).await;
    blocking(move || {
        let (mut ws, response) = ClientBuilder::new(format!("ws://{addr}/"))
            .deflate(DeflateConfig::new())
            .connect_blocking()
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ws.extension(), Some("permessage-deflate"));
        ws.send(Message::text("hello, blocking")).unwrap();
        assert_eq!(
            ws.read().unwrap().unwrap(),
            Message::text("hello, blocking")
        );
        // Larger than one read: it arrives in pieces.
        let big = pattern(3 << 20);
        ws.send(Message::binary(big.clone())).unwrap();
        assert_eq!(ws.read().unwrap().unwrap(), Message::binary(big));
        // The server answers a Ping by itself.
        ws.send(Message::Ping("are you there".into())).unwrap();
        assert_eq!(
            ws.read().unwrap().unwrap(),
            Message::Pong("are you there".into())
        );
        ws.close(CloseCode::NORMAL, "done").unwrap();
        assert!(ws.read().is_none());
        let late = ws.send(Message::text("late")).unwrap_err();
        assert!(
            matches!(late.kind(), sockeye::Kind::AlreadyClosed),
            "{late:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_client_against_the_blocking_server() {
    let (listener, addr) = listen_blocking();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(support::LIMIT)).unwrap();
        let mut ws = ServerBuilder::new()
            .protocols(["chat"])
            .deflate(DeflateConfig::new())
            .accept_blocking(tcp)
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat"));
        let mut echoed = 0;
        let mut close = None;
        while let Some(message) = ws.read() {
            match message.unwrap() {
                Message::Close(frame) => close = frame,
                message if message.is_data() => {
                    ws.send(message).unwrap();
                    echoed += 1;
                }
                _ => {}
            }
        }
        (echoed, close.map(|f| f.code))
    });
    support::bounded(async {
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/chat"))
            .protocol("chat")
            .deflate(DeflateConfig::new())
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat"));
        assert_eq!(ws.extension(), Some("permessage-deflate"));
        // The blocking server answers a Ping as it reads.
        ws.send(Message::Ping("ping".into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong("ping".into())
        );
        for i in 0..50 {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        let big = pattern(2 << 20);
        ws.send(Message::binary(big.clone())).await.unwrap();
        for i in 0..50 {
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(format!("m{i}"))
            );
        }
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
    let (echoed, close) = blocking(move || server.join().unwrap()).await;
    assert_eq!(echoed, 51);
    assert_eq!(close, Some(CloseCode::NORMAL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_to_blocking_and_a_refusal() {
    let (listener, addr) = listen_blocking();
    let server = std::thread::spawn(move || {
        let builder = ServerBuilder::new().on_request(|request| {
            if request.path() == "/secret" {
                Err(Reject::new(StatusCode::UNAUTHORIZED, "no\n"))
            } else {
                Ok(sockeye::Accept::new())
            }
        });
        // First a refusal, then an echo.
        let (tcp, _) = listener.accept().unwrap();
        let refused = builder.accept_blocking(tcp).unwrap_err();
        assert_eq!(refused.status(), Some(StatusCode::UNAUTHORIZED));
        let (tcp, _) = listener.accept().unwrap();
        let mut ws = builder.accept_blocking(tcp).unwrap();
        // Every item is checked: a clean close must not end in an error.
        while let Some(message) = ws.read() {
            let message = message.unwrap();
            if message.is_data() {
                ws.send(message).unwrap();
            }
        }
    });
    blocking(move || {
        let error = sockeye::blocking::connect(&format!("ws://{addr}/secret")).unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{error}");
        let (mut ws, _) = sockeye::blocking::connect(&format!("ws://{addr}/open")).unwrap();
        ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
        assert_eq!(
            ws.read().unwrap().unwrap(),
            Message::binary(vec![1u8, 2, 3])
        );
        ws.close(CloseCode::NORMAL, "").unwrap();
        server.join().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_over_tls() {
    let ca = support::Ca::new("blocking test CA");
    let leaf = ca.server(&["localhost"]);
    let acceptor =
        TlsAcceptor::from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    let (addr, _accepted) = support::echo_server(ServerBuilder::new().tls(acceptor)).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let ca_pem = ca.pem();
    blocking(move || {
        let tls = TlsConfig::new().add_root_pem(ca_pem.as_bytes()).unwrap();
        let (mut ws, _) = ClientBuilder::new(&url)
            .tls(tls)
            .connect_blocking()
            .unwrap();
        assert!(matches!(ws.get_ref(), sockeye::blocking::Stream::Tls(_)));
        ws.send(Message::text("over TLS")).unwrap();
        assert_eq!(ws.read().unwrap().unwrap(), Message::text("over TLS"));
        ws.close(CloseCode::NORMAL, "").unwrap();
        // Without our CA: an unknown issuer.
        let error = sockeye::blocking::connect(&url).unwrap_err();
        assert_eq!(
            error.tls_failure(),
            Some(TlsFailure::UnknownIssuer),
            "{error}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_errors_of_the_blocking_client() {
    // A port nobody listens on.
    let port = support::free_port();
    let error = blocking(move || {
        sockeye::blocking::connect(&format!("ws://127.0.0.1:{port}/")).unwrap_err()
    })
    .await;
    assert!(
        matches!(error.kind(), sockeye::Kind::ConnectionRefused { .. }),
        "{error:?}"
    );
    // A server that accepts TCP and never answers the upgrade: the handshake timeout.
    let (silent, addr) = listen_blocking();
    let config = sockeye::WebSocketConfig::builder()
        .handshake_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = blocking(move || {
        let error = ClientBuilder::new(format!("ws://{addr}/"))
            .config(config)
            .connect_blocking()
            .unwrap_err();
        drop(silent);
        error
    })
    .await;
    assert!(
        matches!(
            error.kind(),
            sockeye::Kind::Timeout(sockeye::Timeout::Handshake)
        ),
        "{error:?}"
    );
    // A proxy is refused, not silently skipped.
    let error = blocking(|| {
        ClientBuilder::new("ws://127.0.0.1:1/")
            .proxy("http://127.0.0.1:3128".parse().unwrap())
            .connect_blocking()
            .unwrap_err()
    })
    .await;
    assert!(error.to_string().contains("proxies"), "{error}");
}

/// A blocking server on its own thread that accepts one connection and hands it to `then`.
fn one_blocking_server<T: Send + 'static>(
    then: impl FnOnce(sockeye::blocking::WebSocket<std::net::TcpStream>) -> T + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<T>) {
    let (listener, addr) = listen_blocking();
    let thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(support::LIMIT)).unwrap();
        then(sockeye::blocking::accept(tcp).unwrap())
    });
    (addr, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_times_out_mid_frame_can_be_resumed() {
    let (go_on, wait) = mpsc::channel::<()>();
    let (addr, server) = one_blocking_server(move |mut ws| {
        // A binary frame of 100 bytes, sent by hand in two pieces.
        let mut frame = vec![0x82, 100];
        frame.extend((0..100u8).collect::<Vec<_>>());
        ws.get_mut().write_all(&frame[..40]).unwrap();
        wait.recv().unwrap();
        ws.get_mut().write_all(&frame[40..]).unwrap();
        ws
    });
    blocking(move || {
        let (mut ws, _) = sockeye::blocking::connect(&format!("ws://{addr}/")).unwrap();
        ws.get_ref()
            .tcp()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let timed_out = ws.read().unwrap().unwrap_err();
        assert!(
            matches!(timed_out.kind(), sockeye::Kind::Io(_)),
            "{timed_out:?}"
        );
        go_on.send(()).unwrap();
        ws.get_ref().tcp().set_read_timeout(None).unwrap();
        assert_eq!(
            ws.read().unwrap().unwrap(),
            Message::binary((0..100u8).collect::<Vec<_>>())
        );
        drop(server.join().unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_gives_up_after_the_close_timeout_when_the_server_never_answers() {
    let (done, wait) = mpsc::channel::<()>();
    let (addr, server) = one_blocking_server(move |mut ws| {
        // Read the client's Close by hand, and answer nothing until the test is over.
        let mut byte = [0; 1];
        ws.get_mut().read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], 0x88, "a Close frame");
        let _ = wait.recv();
    });
    let config = sockeye::WebSocketConfig::builder()
        .proto(
            sockeye::Config::builder()
                .close_timeout(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let error = blocking(move || {
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
            .config(config)
            .connect_blocking()
            .unwrap();
        let started = std::time::Instant::now();
        let error = ws.close(CloseCode::NORMAL, "bye").unwrap_err();
        assert!(
            started.elapsed() < support::LIMIT / 2,
            "{:?}",
            started.elapsed()
        );
        done.send(()).unwrap();
        server.join().unwrap();
        error
    })
    .await;
    let sockeye::Kind::Closed { error, .. } = error.kind() else {
        panic!("expected the close timeout, got {error:?}");
    };
    assert_eq!(*error, sockeye::proto::ConnectionError::CloseTimeout);
}

#[test]
fn a_bad_request_to_the_blocking_server_gets_its_status() {
    let (listener, addr) = listen_blocking();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        sockeye::blocking::accept(tcp).unwrap_err()
    });
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(support::LIMIT)).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert_eq!(
        server.join().unwrap().status(),
        Some(StatusCode::UPGRADE_REQUIRED)
    );
}
