//! Tests of the built `sockeye` binary: real processes, real loopback sockets.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sockeye::{CloseCode, Message};

#[path = "../../sockeye/tests/support/h2_client.rs"]
mod h2_client;

use sockeye_test_support::{self as support, redis_command, redis_server};

mod common;
use common::{Running, serve_tls, signal, sockeye, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn run(args: &[&str], stdin: &str) -> Output {
    run_with_env(args, stdin, &[])
}

fn run_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = sockeye()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sockeye {args:?} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connect_once_against_serve_echo() {
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let url = format!("ws://{addr}/any/path");
    let out = run(&["connect", "--once", &url], "first line\nsecond \u{e9}\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first line\nsecond \u{e9}\n"
    );
}

#[test]
fn connect_pretty_prints_json() {
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let out = run(
        &["connect", "--once", "--pretty", &format!("ws://{addr}/")],
        "{\"a\":[1,2]}\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
    );
}

#[test]
fn bad_url_and_refused_connection_have_their_exit_codes() {
    let out = run(&["connect", "http://example.com/"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ws://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A port nobody listens on: bind one, then free it.
    let port = support::free_port();
    let out = run(&["connect", &format!("ws://127.0.0.1:{port}/")], "");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing listens at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reconnecting gives up after the attempts it is allowed, with the same code.
    let url = format!("ws://127.0.0.1:{port}/");
    let out = run(
        &["connect", "--reconnect", "--reconnect-tries", "3", &url],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.matches("reconnecting in").count(), 2, "{stderr}");
    assert!(stderr.contains("giving up after 3 attempts"), "{stderr}");

    // A path the room server refuses: an HTTP status instead of 101.
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let out = run(&["connect", &format!("ws://{addr}/not-a-room")], "");
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[test]
fn serve_shows_the_demo_page() {
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut page).unwrap();
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("new WebSocket("));
}

#[tokio::test]
async fn serve_keeps_a_page_connection_alive_for_the_websocket() {
    // The echo server serves the page too, and answers without the race of joining a room.
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let host = format!("Host: {addr}\r\n");
    tcp.write_all(format!("GET / HTTP/1.1\r\n{host}\r\n").as_bytes())
        .await
        .unwrap();
    let (status, head, page) = support::http::read_response(&mut tcp).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&page).contains("new WebSocket("));

    // The same connection answers again: HEAD gives the page's head and no body.
    tcp.write_all(format!("HEAD /index.html HTTP/1.1\r\n{host}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", page.len())),
        "{head}"
    );

    // And then upgrades: the page's WebSocket over the page's connection.
    let (mut ws, _) = sockeye::ClientBuilder::new(format!("ws://{addr}/echo"))
        .connect_on(tcp)
        .await
        .unwrap();
    ws.send(Message::text("over the page's connection"))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("over the page's connection")
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.next().await.is_none());
}

#[tokio::test]
async fn serve_answers_plain_requests_by_route() {
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let host = format!("Host: {addr}\r\n");
    // On one kept-alive connection: an unknown path, a bad room name, a method the page does
    // not take, the icon, and then a room without an upgrade: the library's 426, which closes.
    for (request, status) in [
        ("GET /nope", 404),
        ("GET /rooms/a/b", 404),
        ("POST /", 405),
        ("GET /favicon.ico", 204),
        ("GET /rooms/lobby", 426),
    ] {
        tcp.write_all(format!("{request} HTTP/1.1\r\n{host}content-length: 0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (got, head, _) = support::http::read_response(&mut tcp).await;
        assert_eq!(got, status, "{request}: {head}");
        if status == 405 {
            assert!(
                head.to_ascii_lowercase().contains("allow: get, head"),
                "{head}"
            );
        }
        if status == 426 {
            assert!(
                head.to_ascii_lowercase().contains("upgrade: websocket"),
                "{head}"
            );
        }
    }
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));

    // A request head larger than the server takes: 431, not a read without end.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let filler = "x".repeat(32 << 10);
    tcp.write_all(format!("GET / HTTP/1.1\r\n{host}x-filler: {filler}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, head, _) = support::http::read_response(&mut tcp).await;
    assert_eq!(status, 431, "{head}");
}

#[tokio::test]
async fn two_clients_in_one_room() {
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let url = format!("ws://{addr}/rooms/test");
    // a has a name: the room's member list it is sent says it has joined.
    let (mut a, _) = sockeye::connect(&format!("{url}?name=a")).await.unwrap();
    match a.next().await.unwrap().unwrap() {
        Message::Text(text) => assert!(text.contains(r#""event":"members""#), "{text}"),
        other => panic!("expected the member list, got {other:?}"),
    }
    let (mut b, _) = sockeye::connect(&url).await.unwrap();
    let (mut elsewhere, _) = sockeye::connect(&format!("ws://{addr}/rooms/other"))
        .await
        .unwrap();
    // b's membership is settled once b's first message went through the room.
    b.send(Message::text("b here")).await.unwrap();
    assert_eq!(a.next().await.unwrap().unwrap(), Message::text("b here"));
    a.send(Message::text("hello room")).await.unwrap();
    a.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        b.next().await.unwrap().unwrap(),
        Message::text("hello room")
    );
    assert_eq!(
        b.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    // Nothing reached the other room: its next message is our own echo-free close.
    elsewhere.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(elsewhere.next().await.is_none());
    a.close(CloseCode::NORMAL, "").await.unwrap();
    b.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn ctrl_c_closes_every_connection_with_1001() {
    let (server, addr) = start(&["serve", "127.0.0.1:0"]);
    let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/rooms/lobby"))
        .await
        .unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    signal(&server, "-INT");
    let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    match message {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason, "server shutting down");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(ws.next().await.is_none());
}

#[tokio::test]
async fn forward_round_trip_through_a_tcp_echo() {
    // A TCP echo server.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    // WebSocket clients to the TCP echo, then TCP clients to that WebSocket: both directions.
    let (_ws_side, ws_addr) = start(&[
        "forward",
        "--listen",
        "ws://127.0.0.1:0",
        &echo_addr.to_string(),
    ]);
    let (_tcp_side, tcp_addr) = start(&[
        "forward",
        "--listen",
        "tcp:127.0.0.1:0",
        &format!("ws://{ws_addr}/"),
    ]);
    let mut tcp = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    tcp.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
}

#[test]
fn bench_json_against_serve_echo() {
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let out = run(
        &[
            "bench",
            &format!("ws://{addr}/"),
            "-c",
            "4",
            "-s",
            "64",
            "--in-flight",
            "4",
            "-d",
            "1s",
            "--json",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0));
    assert!(report["messages_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        report["latency_us"]["p99"].as_u64().unwrap()
            >= report["latency_us"]["p50"].as_u64().unwrap()
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_and_connect_over_tls() {
    let (_server, addr, certs) = serve_tls("cli-tls", &["--echo"]);
    let (ca, chain) = (&certs.ca_file, &certs.chain_file);
    let url = format!("wss://localhost:{}/", addr.port());
    let out = run(
        &["connect", "--once", "--cacert", ca, &url],
        "secret hello\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secret hello\n");

    // Without our CA: a TLS failure, exit 3, and the way out in the message.
    let out = run(&["connect", "--once", &url], "x\n");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown authority"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--cacert"), "{}", stderr(&out));

    // The platform's roots, which rustls-native-certs reads from SSL_CERT_FILE when it is set.
    let out = run_with_env(
        &["connect", "--once", "--native-roots", &url],
        "native\n",
        &[("SSL_CERT_FILE", ca)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "native\n");
    let out = run_with_env(
        &["connect", "--once", &url],
        "x\n",
        &[("SSL_CERT_FILE", ca)],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "without --native-roots: {}",
        stderr(&out)
    );

    // -k skips verification.
    let out = run(&["connect", "--once", "-k", &url], "unverified\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unverified\n");

    // A key file that does not exist is a usage error that names it.
    let out = run(
        &[
            "serve",
            "--tls-cert",
            chain,
            "--tls-key",
            "/nonexistent.pem",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent.pem"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_refuses_foreign_origins_unless_allowed() {
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let url = format!("ws://{addr}/");
    let own = format!("http://{addr}");
    let out = run(&["connect", "--once", "--origin", &own, &url], "mine\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(
        &[
            "connect",
            "--once",
            "--origin",
            "https://evil.example",
            &url,
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));

    // A Host that is not a loopback name (a DNS-rebinding page) is refused on loopback.
    for (host, status) in [("rebind.example:9001", "403"), ("localhost:9001", "101")] {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        write!(
            tcp,
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut answer = [0_u8; 12];
        std::io::Read::read_exact(&mut tcp, &mut answer).unwrap();
        assert_eq!(&answer[9..12], status.as_bytes(), "Host {host}");
    }

    let (_server, addr) = start(&[
        "serve",
        "--echo",
        "--allow-origin",
        "https://app.example",
        "127.0.0.1:0",
    ]);
    let url = format!("ws://{addr}/");
    let out = run(
        &["connect", "--once", "--origin", "https://app.example", &url],
        "ok\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(
        &[
            "connect",
            "--once",
            "--origin",
            "https://evil.example",
            &url,
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[tokio::test]
async fn connect_through_proxies_from_flags_and_from_the_environment() {
    let Some(proxy) = support::tinyproxy("BasicAuth alice s3cret\n").await else {
        return;
    };
    let port = proxy.port;
    let (_secure, secure, certs) = serve_tls("cli-proxy-certs", &["--echo"]);
    let ca = &certs.ca_file;
    let (_plain, plain) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let plain_url = format!("ws://{plain}/");
    let secure_url = format!("wss://localhost:{}/", secure.port());
    let with_auth = format!("http://alice:s3cret@127.0.0.1:{port}");
    let without_auth = format!("http://127.0.0.1:{port}");

    // --proxy, ws:// and wss:// (TLS inside the tunnel).
    let out = run(
        &["connect", "--once", "--proxy", &with_auth, &plain_url],
        "a\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n");
    let out = run(
        &[
            "connect",
            "--once",
            "--proxy",
            &with_auth,
            "--cacert",
            ca,
            &secure_url,
        ],
        "b\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b\n");

    // The environment: HTTP_PROXY for ws://, HTTPS_PROXY for wss://. The proxy without
    // credentials refuses, which shows the variable was used.
    let out = run_with_env(
        &["connect", "--once", &plain_url],
        "c\n",
        &[("HTTP_PROXY", &with_auth)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_with_env(
        &["connect", "--once", &plain_url],
        "c\n",
        &[("HTTP_PROXY", &without_auth)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("407"), "{}", stderr(&out));
    assert!(stderr(&out).contains("USER:PASS"), "{}", stderr(&out));
    // HTTPS_PROXY, not HTTP_PROXY, is the one for wss://: the refusing proxy named there is
    // used, the accepting one in HTTP_PROXY is not.
    let out = run_with_env(
        &["connect", "--once", "--cacert", ca, &secure_url],
        "d\n",
        &[("HTTPS_PROXY", &without_auth), ("HTTP_PROXY", &with_auth)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("407"), "{}", stderr(&out));
    let out = run_with_env(
        &["connect", "--once", "--cacert", ca, &secure_url],
        "d\n",
        &[("HTTPS_PROXY", &with_auth), ("HTTP_PROXY", &without_auth)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A malformed --proxy is a usage error that does not repeat the password.
    let out = run(
        &[
            "connect",
            "--proxy",
            "ftp://alice:s3cret@127.0.0.1:1",
            &plain_url,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    // NO_PROXY and --no-proxy bypass the proxy that would refuse.
    let out = run_with_env(
        &["connect", "--once", &plain_url],
        "e\n",
        &[
            ("HTTP_PROXY", &without_auth),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_with_env(
        &["connect", "--once", "--no-proxy", &plain_url],
        "f\n",
        &[("HTTP_PROXY", &without_auth)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// ---- Rooms across servers over Redis ----

/// Waits until `servers` servers are subscribed to `room`'s channel: only then does a message
/// published anywhere reach every server.
async fn until_subscribed(port: u16, room: &str, servers: usize) {
    support::until_redis_subscribers(port, &format!("sockeye:room:{room}"), servers).await;
}

#[tokio::test]
async fn rooms_span_servers_over_redis() {
    if support::program("redis-server").is_none() {
        return;
    }
    support::bounded(async move {
        let port = support::free_port();
        let redis = redis_server(port).await.expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        let (_one, one) = start(&["serve", "--redis", &url, "127.0.0.1:0"]);
        let (_two, two) = start(&["serve", "--redis", &url, "127.0.0.1:0"]);
        let room = |addr: SocketAddr, name: &str| format!("ws://{addr}/rooms/{name}");
        let (mut a, _) = sockeye::connect(&room(one, "r")).await.unwrap();
        let (mut a2, _) = sockeye::connect(&room(one, "r")).await.unwrap();
        let (mut b, _) = sockeye::connect(&room(two, "r")).await.unwrap();
        let (mut elsewhere, _) = sockeye::connect(&room(two, "other")).await.unwrap();
        until_subscribed(port, "r", 2).await;
        until_subscribed(port, "other", 1).await;

        // In order, from one sender, to members on both servers; each exactly once, so a
        // server does not deliver its own messages again when Redis hands them back.
        for i in 0..200 {
            a.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        a.send(Message::binary(vec![0u8, 1, 255])).await.unwrap();
        for member in [&mut a2, &mut b] {
            for i in 0..200 {
                assert_eq!(
                    member.next().await.unwrap().unwrap(),
                    Message::text(format!("m{i}"))
                );
            }
            assert_eq!(
                member.next().await.unwrap().unwrap(),
                Message::binary(vec![0u8, 1, 255])
            );
        }
        b.send(Message::text("from two")).await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap(), Message::text("from two"));
        assert_eq!(a2.next().await.unwrap().unwrap(), Message::text("from two"));
        // Another room's message, published by server two before b's marker (its close
        // handshake ends after the server took the message), reaches no member of r.
        elsewhere.send(Message::text("alone")).await.unwrap();
        elsewhere.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(elsewhere.next().await.is_none());
        b.send(Message::text("end")).await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap(), Message::text("end"));
        assert_eq!(a2.next().await.unwrap().unwrap(), Message::text("end"));

        // When the room empties on a server, that server unsubscribes.
        b.close(CloseCode::NORMAL, "").await.unwrap();
        until_subscribed(port, "r", 1).await;

        // Redis restarts: the servers reconnect and subscribe again to the rooms in use.
        drop(redis);
        let _redis = redis_server(port).await.expect("redis-server ran before");
        let (mut b, _) = sockeye::connect(&room(two, "r")).await.unwrap();
        until_subscribed(port, "r", 2).await;
        a.send(Message::text("after the restart")).await.unwrap();
        assert_eq!(
            b.next().await.unwrap().unwrap(),
            Message::text("after the restart")
        );
        b.send(Message::text("and back")).await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap(), Message::text("and back"));
    })
    .await;
}

#[tokio::test]
async fn a_stalled_backplane_closes_senders_with_1013_then_recovers() {
    if support::program("redis-server").is_none() {
        return;
    }
    support::bounded(async move {
        let port = support::free_port();
        let _redis = redis_server(port).await.expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        // The byte bound (2,000) is what fills first: a byte that is never given back would
        // refuse the messages after the stall too.
        let limits = [
            "--redis-queue",
            "1000",
            "--redis-queue-bytes",
            "2000",
            "--max-message",
            "1000",
        ];
        let (_one, one) =
            start(&[&["serve", "--redis", &url][..], &limits, &["127.0.0.1:0"]].concat());
        let (_two, two) = start(&["serve", "--redis", &url, "127.0.0.1:0"]);
        let (a, _) = sockeye::connect(&format!("ws://{one}/rooms/r"))
            .await
            .unwrap();
        let (mut b, _) = sockeye::connect(&format!("ws://{two}/rooms/r"))
            .await
            .unwrap();
        until_subscribed(port, "r", 2).await;
        // Redis stops answering writes (PUBLISH among them) for a while: shorter than the
        // command timeout, so the link stays and its queue fills.
        assert_eq!(
            redis_command(port, &["CLIENT", "PAUSE", "4000", "WRITE"]).await,
            "+OK\r\n"
        );
        let (mut reader, writer) = a.split();
        let mut sent = 0;
        let close = loop {
            tokio::select! {
                message = reader.next() => break message,
                result = writer.send(Message::text("x")) => {
                    result.unwrap();
                    sent += 1;
                    assert!(sent < 100_000, "never told to back off");
                }
            }
        };
        match close {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::TRY_AGAIN_LATER);
            }
            other => panic!("expected 1013, got {other:?}"),
        }
        assert!(sent > 4, "the queue held {sent} messages");
        assert_eq!(redis_command(port, &["CLIENT", "UNPAUSE"]).await, "+OK\r\n");
        // What was queued reaches the other server, in order, and the queue is free again.
        for _ in 0..sent.min(100) {
            assert_eq!(b.next().await.unwrap().unwrap(), Message::text("x"));
        }
        let (mut c, _) = sockeye::connect(&format!("ws://{one}/rooms/r"))
            .await
            .unwrap();
        c.send(Message::text("after the stall")).await.unwrap();
        loop {
            match b.next().await.unwrap().unwrap() {
                Message::Text(t) if t == "x" => {}
                other => break assert_eq!(other, Message::text("after the stall")),
            }
        }
    })
    .await;
}

#[test]
fn an_unreachable_redis_is_exit_code_3() {
    let port = support::free_port();
    let out = run(
        &[
            "serve",
            "--redis",
            &format!("redis://:pw@127.0.0.1:{port}"),
            "127.0.0.1:0",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach Redis"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("pw@"), "{}", stderr(&out));
}

#[tokio::test]
async fn rooms_over_a_redis_that_speaks_tls() {
    if support::program("redis-server").is_none() {
        return;
    }
    support::bounded(async move {
        let certs = support::TlsFiles::new("redis-tls");
        // A plain port for the test's own PUBSUB queries, a TLS port for the servers.
        let (port, tls_port) = (support::free_port(), support::free_port());
        let _redis = support::redis_server_tls(port, tls_port, &certs)
            .await
            .expect("redis-server is installed");
        let url = format!("rediss://localhost:{tls_port}");
        let ca_arg = certs.ca_file.as_str();
        let (_one, one) = start(&[
            "serve",
            "--redis",
            &url,
            "--redis-cacert",
            ca_arg,
            "127.0.0.1:0",
        ]);
        let (_two, two) = start(&[
            "serve",
            "--redis",
            &url,
            "--redis-cacert",
            ca_arg,
            "127.0.0.1:0",
        ]);
        let (mut a, _) = sockeye::connect(&format!("ws://{one}/rooms/t"))
            .await
            .unwrap();
        let (mut b, _) = sockeye::connect(&format!("ws://{two}/rooms/t"))
            .await
            .unwrap();
        until_subscribed(port, "t", 2).await;
        a.send(Message::text("over rediss")).await.unwrap();
        assert_eq!(
            b.next().await.unwrap().unwrap(),
            Message::text("over rediss")
        );
        // Without our CA, the certificate is not trusted: exit 3.
        let out = run(&["serve", "--redis", &url, "127.0.0.1:0"], "");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach Redis"),
            "{}",
            stderr(&out)
        );
    })
    .await;
}

// ---- The command as websocat and wscat users expect it ----

/// Starts `sockeye ARGS` with stdin, stdout and stderr piped, stdin left open.
fn spawn_piped(args: &[&str]) -> Running {
    Running(
        sockeye()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs"),
    )
}

/// Waits (bounded) for a child to exit, and returns its exit code and output.
fn finish(mut running: Running, within: Duration) -> (Option<i32>, String, String) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = running.0.try_wait().expect("wait") {
            let mut stdout = String::new();
            let mut stderr = String::new();
            if let Some(mut out) = running.0.stdout.take() {
                std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
            }
            if let Some(mut err) = running.0.stderr.take() {
                std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
            }
            return (status.code(), stdout, stderr);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One WebSocket server for a test: hands each accepted connection to `serve`, and reports
/// the request it came with.
async fn test_server<F, Fut>(
    serve: F,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<http::Request<()>>,
)
where
    F: Fn(sockeye::WebSocket<sockeye::MaybeTlsStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = sockeye::ServerBuilder::new();
            if let Ok((ws, request)) = server.accept_tcp_with_request(tcp).await {
                let _ = tx.send(request);
                tokio::spawn(serve(ws));
            }
        }
    });
    (addr, rx)
}

#[test]
fn connect_exits_when_the_server_closes_though_stdin_is_open() {
    // Before: the command waited for the next line of input after the server's close.
    let (server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let mut client = spawn_piped(&["connect", &format!("ws://{addr}/")]);
    let mut stdin = client.0.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(client.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    // serve handles SIGTERM as Ctrl-C: every connection gets 1001.
    signal(&server, "-TERM");
    let (code, _, stderr) = finish(client, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("1001"), "{stderr}");
    drop(stdin);
}

#[tokio::test]
async fn connect_closes_with_1000_on_sigterm_and_on_ctrl_c() {
    let (tx, mut closes) = tokio::sync::mpsc::unbounded_channel();
    let (addr, mut requests) = test_server(move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(frame) = message {
                    let _ = tx.send(frame.map(|f| f.code));
                }
            }
        }
    })
    .await;
    for name in ["-TERM", "-INT"] {
        let client = spawn_piped(&["connect", &format!("ws://{addr}/")]);
        support::bounded(requests.recv()).await.unwrap();
        signal(&client, name);
        let code = support::bounded(closes.recv()).await.unwrap();
        assert_eq!(code, Some(CloseCode::NORMAL), "{name}");
        let (status, _, stderr) = finish(client, Duration::from_secs(10));
        assert_eq!(status, Some(0), "{name}: {stderr}");
    }
}

#[test]
fn addresses_and_urls_as_people_type_them() {
    // A bare port listens on loopback, :PORT on every interface.
    let (_server, addr) = start(&["serve", "--echo", "0"]);
    assert!(addr.ip().is_loopback(), "{addr}");
    let (_any, any) = start(&["serve", "--echo", ":0"]);
    assert!(any.ip().is_unspecified(), "{any}");
    let (_named, named) = start(&["serve", "--echo", "localhost:0"]);
    assert!(named.ip().is_loopback(), "{named}");
    // A URL without a scheme is ws://.
    let out = run(
        &["connect", "--once", &format!("127.0.0.1:{}/x", any.port())],
        "no scheme\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no scheme\n");
    let out = run(&["serve", "not-an-address"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_messages_are_raw_with_binary_and_a_note_otherwise() {
    let (addr, _requests) = test_server(|mut ws| async move {
        let _ = ws.send(Message::binary(vec![0_u8, 1, 2, 255])).await;
        let _ = ws.close(CloseCode::NORMAL, "").await;
    })
    .await;
    let url = format!("ws://{addr}/");
    let out = run(&["connect", "-u", &url], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(
        stderr(&out).contains("binary message of 4 bytes") && stderr(&out).contains("00 01 02 ff"),
        "{}",
        stderr(&out)
    );
    let out = run(&["connect", "--binary", "-u", &url], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, [0, 1, 2, 255]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_commands_and_basic_auth() {
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let (addr, mut requests) = test_server(move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.next().await {
                let _ = tx.send(message);
            }
        }
    })
    .await;
    let out = run(
        &[
            "connect",
            "-i",
            "--auth",
            "ann:s3cret",
            &format!("ws://{addr}/"),
        ],
        "/ping hi\n/binary 01 02\nhello\n//slash\n/nope\n/close 4000 bye now\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let request = requests.recv().await.unwrap();
    // "ann:s3cret" in base64.
    assert_eq!(request.headers()["authorization"], "Basic YW5uOnMzY3JldA==");
    let mut messages = Vec::new();
    while let Some(message) = support::bounded(got.recv()).await {
        let last = matches!(message, Message::Close(_));
        messages.push(message);
        if last {
            break;
        }
    }
    assert_eq!(
        messages,
        [
            Message::Ping(bytes::Bytes::from_static(b"hi")),
            Message::binary(vec![1_u8, 2]),
            Message::text("hello"),
            Message::text("/slash"),
            Message::Close(Some(
                sockeye::CloseFrame::new(CloseCode::from(4000), "bye now").unwrap()
            )),
        ]
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("connected to ws://"), "{stdout}");
    assert!(stdout.contains("unknown command /nope"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_close_stays_for_the_server_after_stdin_ends() {
    let (addr, _requests) = test_server(|mut ws| async move {
        // Answers only after the client's input has long ended.
        if let Some(Ok(message)) = ws.next().await {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = ws.send(message).await;
        }
        let _ = ws.close(CloseCode::NORMAL, "done").await;
    })
    .await;
    let out = run(&["connect", "-n", &format!("ws://{addr}/")], "late\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
}

#[test]
fn subprotocols_headers_and_message_limits_are_reported() {
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    // The server selects no subprotocol: said, not silent.
    let out = run(
        &[
            "connect",
            "--once",
            "--subprotocol",
            "chat",
            &format!("ws://{addr}/rooms/a"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("selected none of the subprotocols offered (chat)"),
        "{}",
        stderr(&out)
    );
    // serve --subprotocol selects one the client offers.
    let (_chat, chat) = start(&["serve", "--echo", "--subprotocol", "chat", "127.0.0.1:0"]);
    let out = run(
        &[
            "connect",
            "--once",
            "--subprotocol",
            "x",
            "--subprotocol",
            "chat",
            &format!("ws://{chat}/"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("selected none"), "{}", stderr(&out));
    // --show-headers shows the whole handshake both ways, with the server's reason phrase.
    let out = run(
        &[
            "connect",
            "--once",
            "--show-headers",
            "--subprotocol",
            "chat",
            &format!("ws://{chat}/"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for line in [
        "> GET / HTTP/1.1",
        &format!("> Host: {chat}"),
        "> Sec-WebSocket-Key: ",
        "> Sec-WebSocket-Version: 13",
        "> Sec-WebSocket-Protocol: chat",
        "< HTTP/1.1 101 Switching Protocols",
        "< sec-websocket-protocol: chat",
    ] {
        assert!(stderr(&out).contains(line), "{line}: {}", stderr(&out));
    }
    // --show-headers shows a refusal's response.
    let out = run(
        &["connect", "--show-headers", &format!("ws://{addr}/nope")],
        "",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("< HTTP/1.1 404 Not Found"),
        "{}",
        stderr(&out)
    );
    // A line over the server's limit: its 1009, whatever the size (before: a 5 MB line ended
    // in a reset and "the connection is closed").
    let (_echo, echo) = start(&["serve", "--echo", "127.0.0.1:0"]);
    for size in [2_000_000, 5_000_000] {
        let out = run(
            &["connect", &format!("ws://{echo}/")],
            &format!("{}\n", "x".repeat(size)),
        );
        assert_eq!(out.status.code(), Some(5), "{size}: {}", stderr(&out));
        assert!(stderr(&out).contains("1009"), "{size}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn bench_names_its_errors_and_checks_for_an_echo() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(
        &["bench", "-c", "2", "-d", "1s", &format!("ws://{free}/")],
        "",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing listens"), "{}", stderr(&out));

    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let out = run(
        &["bench", "-c", "2", "-d", "1s", &format!("ws://{addr}/nope")],
        "",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    // A room relays the others' messages: reported, not measured as echoes, and the run
    // keeps to its duration.
    let started = std::time::Instant::now();
    let out = run(
        &[
            "bench",
            "-c",
            "3",
            "-d",
            "2s",
            &format!("ws://{addr}/rooms/bench"),
        ],
        "",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an echo endpoint"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn forward_checks_its_target_before_it_listens() {
    for args in [
        [
            "forward",
            "--listen",
            "tcp:127.0.0.1:0",
            "http://example.com/",
        ],
        [
            "forward",
            "--listen",
            "ws://127.0.0.1:0",
            "ws://example.com/",
        ],
        ["forward", "--listen", "ws://127.0.0.1:0", "127.0.0.1"],
        ["forward", "--listen", "wss://127.0.0.1:0", "127.0.0.1:7"],
        [
            "forward",
            "--listen",
            "udp:127.0.0.1:0",
            "ws://example.com/",
        ],
    ] {
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[cfg(unix)]
#[tokio::test]
async fn forward_to_and_from_unix_sockets() {
    let (_echo, echo) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let dir = support::TempDir::new("forward-unix");
    // unix:PATH -> ws://: a Unix client's bytes go through the echo server and back.
    let path = dir.0.join("in.sock");
    let path_arg = format!("unix:{}", path.display());
    let _forward = start(&["forward", "--listen", &path_arg, &format!("ws://{echo}/")]);
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream.write_all(b"through a unix socket").await.unwrap();
    let mut buf = vec![0_u8; 21];
    support::bounded(stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, b"through a unix socket");

    // ws:// -> unix:PATH: a WebSocket client reaches a Unix socket server.
    let upstream = dir.0.join("up.sock");
    let listener = tokio::net::UnixListener::bind(&upstream).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0_u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
    });
    let (_back, back) = start(&[
        "forward",
        "--listen",
        "ws://127.0.0.1:0",
        &format!("unix:{}", upstream.display()),
    ]);
    let (mut ws, _) = sockeye::connect(&format!("ws://{back}/")).await.unwrap();
    ws.send(Message::binary(&b"hello"[..])).await.unwrap();
    let echoed = support::bounded(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(&b"hello"[..]));
}

/// A TLS client that trusts `ca_pem` and offers `alpn`.
fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use sockeye::rustls::pki_types::CertificateDer;
    use sockeye::rustls::pki_types::pem::PemObject;
    let mut roots = sockeye::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(sockeye::rustls::crypto::ring::default_provider());
    let mut config = sockeye::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

async fn tls_to(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = sockeye::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn http2_and_http11_members_share_a_room_on_one_tls_port() {
    support::bounded(Box::pin(async {
        let (_server, addr, certs) = serve_tls("cli-h2", &[]);
        let ca = &certs.ca_file;
        let ca_pem = std::fs::read_to_string(ca).unwrap();
        let port = addr.port();
        let room = format!("https://localhost:{port}/rooms/mixed");

        // Two WebSockets on one HTTP/2 connection, chosen by ALPN.
        let tls = tls_to(&tls_connector(&ca_pem, &[b"h2", b"http/1.1"]), addr).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, _driver) = h2_client::h2_connect(tls).await;
        let (_, mut a) =
            h2_client::Client::accepted(&sender, h2_client::extended_connect(&room)).await;
        // As a browser sends it: the page's own https Origin passes the same-host policy
        // (the host is the :authority), another site's does not.
        let mut request = h2_client::extended_connect(&room);
        let own = format!("https://localhost:{port}");
        request
            .headers_mut()
            .insert(http::header::ORIGIN, own.parse().unwrap());
        let (head, c) = h2_client::Client::open(&sender, request).await;
        assert_eq!(head.status(), http::StatusCode::OK);
        let mut c = c.unwrap();
        let mut request = h2_client::extended_connect(&room);
        request.headers_mut().insert(
            http::header::ORIGIN,
            http::HeaderValue::from_static("https://evil.example"),
        );
        let (head, _) = h2_client::Client::open(&sender, request).await;
        assert_eq!(head.status(), http::StatusCode::FORBIDDEN);
        // A page served over plain http may not reach the TLS rooms.
        let mut request = h2_client::extended_connect(&room);
        request.headers_mut().insert(
            http::header::ORIGIN,
            format!("http://localhost:{port}").parse().unwrap(),
        );
        let (head, _) = h2_client::Client::open(&sender, request).await;
        assert_eq!(head.status(), http::StatusCode::FORBIDDEN);
        // A route without a WebSocket: 404 over HTTP/2 too.
        let (head, _) = h2_client::Client::open(
            &sender,
            h2_client::extended_connect(&format!("https://localhost:{port}/nowhere")),
        )
        .await;
        assert_eq!(head.status(), http::StatusCode::NOT_FOUND);

        // An HTTP/1.1 member on the same port (the library's client offers ALPN http/1.1).
        let tls_config = sockeye::TlsConfig::new()
            .add_root_pem(ca_pem.as_bytes())
            .unwrap();
        let (mut b, _) = sockeye::ClientBuilder::new(format!("wss://localhost:{port}/rooms/mixed"))
            .tls(tls_config)
            .connect()
            .await
            .unwrap();

        b.send(Message::text("from http/1.1")).await.unwrap();
        assert_eq!(a.message().await, Message::text("from http/1.1"));
        assert_eq!(c.message().await, Message::text("from http/1.1"));
        a.send(Message::text("from h2")).await;
        assert_eq!(b.next().await.unwrap().unwrap(), Message::text("from h2"));
        assert_eq!(c.message().await, Message::text("from h2"));

        // HTTP/1.1 without ALPN at all, on the same port.
        let mut plain = tls_to(&tls_connector(&ca_pem, &[]), addr).await;
        assert_eq!(plain.get_ref().1.alpn_protocol(), None);
        plain
            .write_all(
                format!(
                    "GET /rooms/mixed HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut head = vec![0u8; 12];
        plain.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");

        b.close(CloseCode::NORMAL, "").await.unwrap();
        a.close().await;
        c.close().await;
    }))
    .await;
}

/// Interop with another implementation: Node's `http2` module as the client, speaking
/// `conformance/h2/node-client.mjs`'s few lines of RFC 6455 over an extended CONNECT.
#[test]
fn node_http2_client_against_serve() {
    let Some(node) = support::program("node") else {
        return;
    };
    let (_server, addr, certs) = serve_tls("cli-h2-node", &["--echo"]);
    let ca = &certs.ca_file;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/h2/node-client.mjs"
    );
    let out = Command::new(node)
        .arg(script)
        .arg(format!("https://localhost:{}/echo", addr.port()))
        .arg(ca)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
}

#[tokio::test]
async fn ctrl_c_closes_http2_websockets_with_1001_and_exits() {
    let (server, addr, certs) = serve_tls("cli-h2-stop", &[]);
    let ca = &certs.ca_file;
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    let tls = tls_to(&tls_connector(&ca_pem, &[b"h2"]), addr).await;
    let (sender, _driver) = h2_client::h2_connect(tls).await;
    let room = format!("https://localhost:{}/rooms/lobby", addr.port());
    let (_, mut ws) =
        h2_client::Client::accepted(&sender, h2_client::extended_connect(&room)).await;
    ws.send(Message::text("ping")).await;
    signal(&server, "-INT");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(sockeye::proto::Event::Closed(closed)) => break closed,
                Some(_) => {}
                None => panic!("the stream ended without a Close"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.code(), CloseCode::GOING_AWAY);
    ws.end().await;
    // The connection ends with its last stream: the server exits before its grace period.
    let (code, _, _) = tokio::task::spawn_blocking(move || finish(server, Duration::from_secs(4)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[test]
fn connect_http2_uses_h2_when_offered_and_falls_back_when_not() {
    let (_tls_server, tls_addr, certs) = serve_tls("cli-h2-connect", &["--echo"]);
    let ca = &certs.ca_file;
    let url = format!("wss://localhost:{}/", tls_addr.port());
    let out = run(
        &["-v", "connect", "--once", "--http2", "--cacert", ca, &url],
        "over h2\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over h2\n");
    assert!(stderr(&out).contains("http=HTTP/2"), "{}", stderr(&out));
    // Without a flag, wss:// prefers HTTP/2 too.
    let out = run(
        &["-v", "connect", "--once", "--cacert", ca, &url],
        "by default\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "by default\n");
    assert!(stderr(&out).contains("http=HTTP/2"), "{}", stderr(&out));
    // With --http1, HTTP/1.1 on the same port.
    let out = run(
        &["-v", "connect", "--once", "--http1", "--cacert", ca, &url],
        "over h1\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over h1\n");
    assert!(stderr(&out).contains("http=HTTP/1.1"), "{}", stderr(&out));

    // A server without HTTP/2 (plain ws://, HTTP/1.1 only): --prefer-http2 tries HTTP/2 with
    // prior knowledge, then HTTP/1.1 on a new connection.
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let out = run(
        &[
            "-v",
            "connect",
            "--once",
            "--prefer-http2",
            &format!("ws://{addr}/"),
        ],
        "fallback\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fallback\n");
    assert!(
        stderr(&out).contains("falling back to HTTP/1.1"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("http=HTTP/1.1"), "{}", stderr(&out));
}

/// `--http2` requires HTTP/2: a server without it is an error that says so, not a fallback.
#[test]
fn connect_http2_requires_it_and_shows_the_extended_connect() {
    let (_server, addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let out = run(
        &["connect", "--once", "--http2", &format!("ws://{addr}/")],
        "nothing\n",
    );
    // Exit code 3: the connection could not be made as asked.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("HTTP/2 unavailable"),
        "{}",
        stderr(&out)
    );
    // Contradictory flags are a usage error.
    let out = run(
        &["connect", "--http2", "--http1", &format!("ws://{addr}/")],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // --show-headers over HTTP/2: the extended CONNECT's pseudo-headers and the 200.
    let (_tls_server, tls_addr, certs) = serve_tls("cli-h2-headers", &["--echo"]);
    let url = format!("wss://localhost:{}/room", tls_addr.port());
    let out = run(
        &[
            "connect",
            "--once",
            "--show-headers",
            "--cacert",
            &certs.ca_file,
            &url,
        ],
        "shown\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for line in [
        "> :method: CONNECT",
        "> :protocol: websocket",
        "> :scheme: https",
        "> :path: /room",
        "> sec-websocket-version: 13",
        "< HTTP/2.0 200 OK",
    ] {
        assert!(err.contains(line), "{line:?} not in {err}");
    }
    assert!(!err.contains("sec-websocket-key"), "{err}");
}

/// `--show-headers` prints a refusal's status line with the HTTP version it came over, also
/// when the version was not forced: HTTP/2 where the server took it, HTTP/1.1 after a fallback.
#[test]
fn connect_show_headers_names_the_version_of_a_refusal() {
    let (_tls_server, tls_addr, certs) = serve_tls("cli-h2-refusal", &[]);
    let url = format!("wss://localhost:{}/nope", tls_addr.port());
    for (flag, status_line) in [
        // wss:// prefers HTTP/2 by default.
        (None, "< HTTP/2.0 404 Not Found"),
        (Some("--http2"), "< HTTP/2.0 404 Not Found"),
        (Some("--http1"), "< HTTP/1.1 404 Not Found"),
    ] {
        let mut args = vec!["connect", "--show-headers"];
        args.extend(flag);
        args.extend(["--cacert", &certs.ca_file, &url]);
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(4), "{flag:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(status_line),
            "{flag:?}: {status_line:?} not in {}",
            stderr(&out)
        );
    }
    // Plain ws:// without HTTP/2: --prefer-http2 falls back, and the refusal is HTTP/1.1's.
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let out = run(
        &[
            "connect",
            "--show-headers",
            "--prefer-http2",
            &format!("ws://{addr}/nope"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("< HTTP/1.1 404 Not Found"),
        "{}",
        stderr(&out)
    );
}

/// A TLS WebSocket server (ALPN h2 and http/1.1) that first sends each client the HTTP version
/// of its request, then echoes.
async fn version_echo_server(certs: &support::TlsFiles) -> SocketAddr {
    let tls = sockeye::TlsAcceptorBuilder::from_pem_files(&certs.chain_file, &certs.key_file)
        .unwrap()
        .alpn_protocols(["h2", "http/1.1"])
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(tls) = tls.accept(tcp).await else {
                    return;
                };
                let _ = sockeye::hyper::serve_connection(
                    sockeye::ServerBuilder::new(),
                    sockeye::MaybeTlsStream::ServerTls(Box::new(tls)),
                    |mut ws, request| async move {
                        let version = format!("{:?}\n", request.version());
                        if ws
                            .send(Message::binary(version.into_bytes()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        support::echo(&mut ws).await;
                    },
                )
                .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn forward_reaches_a_websocket_over_http2_or_http11_as_asked() {
    let certs = support::TlsFiles::new("cli-h2-forward");
    let addr = version_echo_server(&certs).await;
    let url = format!("wss://localhost:{}/tunnel", addr.port());
    for (flag, expected) in [
        (None, "HTTP/2.0\n"),
        (Some("--http2"), "HTTP/2.0\n"),
        (Some("--http1"), "HTTP/1.1\n"),
    ] {
        let mut args = vec!["forward", "--listen", "tcp:127.0.0.1:0"];
        args.extend(flag);
        args.extend(["--cacert", &certs.ca_file, &url]);
        let (_forward, tcp_addr) = start(&args);
        let mut tcp = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
        let mut first = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut first))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&first), expected, "{flag:?}");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        tcp.write_all(&data).await.unwrap();
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(20), tcp.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, data, "{flag:?}");
    }
    // --http2 and the like are for reaching a WebSocket URL, not for a WebSocket listener.
    let out = run(
        &[
            "forward",
            "--listen",
            "ws://127.0.0.1:0",
            "--http2",
            "127.0.0.1:9",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn bench_multiplexes_over_http2_connections() {
    let (_server, addr, certs) = serve_tls("cli-h2-bench", &["--echo"]);
    let url = format!("wss://localhost:{}/", addr.port());
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            &url,
            "--cacert",
            &certs.ca_file,
            "-c",
            "6",
            "-s",
            "2000",
            "--in-flight",
            "2",
            "-d",
            "1s",
            "--json",
        ];
        args.extend(extra);
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stderr(&out));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
        report
    };
    // Six WebSockets over two HTTP/2 connections.
    let report = bench(&["--http2", "--h2-connections", "2"]);
    assert_eq!(report["http"], "HTTP/2", "{report}");
    assert_eq!(report["websockets_over_http2"], 6, "{report}");
    assert_eq!(report["http2_connections"], 2, "{report}");
    // By default each connection of its own, over HTTP/2 since the server takes it.
    let report = bench(&[]);
    assert_eq!(report["http"], "HTTP/2", "{report}");
    assert!(report["http2_connections"].is_null(), "{report}");
    let report = bench(&["--http1"]);
    assert_eq!(report["http"], "HTTP/1.1", "{report}");
    assert_eq!(report["websockets_over_http2"], 0, "{report}");
    // The text report says it too.
    let out = run(
        &[
            "bench",
            &url,
            "--cacert",
            &certs.ca_file,
            "-c",
            "3",
            "-d",
            "1s",
            "--http2",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("http: HTTP/2, 3 WebSockets over 1 HTTP/2 connection"),
        "{text}"
    );
    // --h2-connections needs --http2; --http2 against a server without HTTP/2 fails.
    let out = run(&["bench", &url, "--h2-connections", "2"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (_plain, plain_addr) = start(&["serve", "--echo", "127.0.0.1:0"]);
    let out = run(
        &[
            "bench",
            &format!("ws://{plain_addr}/"),
            "--http2",
            "-d",
            "1s",
        ],
        "",
    );
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("HTTP/2 unavailable"),
        "{}",
        stderr(&out)
    );
}

/// A TCP proxy to `target` that can cut every connection it carries and refuse new ones
/// until it is let up again: a network drop, for clients that reconnect.
struct Dropper {
    addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    carried: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Dropper {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let carried = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, carried2) = (up.clone(), carried.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                carried2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, up, carried }
    }

    /// Cuts every connection and refuses new ones.
    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.carried.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The lines a child writes to stdout, as they come.
fn stdout_lines(running: &mut Running) -> std::sync::mpsc::Receiver<String> {
    let stdout = BufReader::new(running.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reconnect_gets_what_it_missed_from_serve_history() {
    let (_server, addr) = start(&["serve", "--history", "100", "127.0.0.1:0"]);
    support::bounded(reconnect_gets_what_it_missed(addr, addr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reconnect_gets_what_it_missed_from_two_servers_over_redis() {
    if support::program("redis-server").is_none() {
        return;
    }
    let port = support::free_port();
    let _redis = redis_server(port).await.expect("redis-server is installed");
    let url = format!("redis://127.0.0.1:{port}");
    let serve = ["serve", "--history", "100", "--redis", &url, "127.0.0.1:0"];
    let (_one, one) = start(&serve);
    let (_two, two) = start(&serve);
    support::bounded(reconnect_gets_what_it_missed(one, two)).await;
}

/// A `connect --reconnect` client of the room `h` on `client_side`, through a [`Dropper`],
/// and a sender on `sender_side`: the client misses what is sent while its network is down,
/// and gets it, in order and once, when it is back.
async fn reconnect_gets_what_it_missed(sender_side: SocketAddr, client_side: SocketAddr) {
    let addr = sender_side;
    let dropper = Dropper::start(client_side).await;
    let url = format!("ws://{}/rooms/h?since=", dropper.addr);
    let mut client = spawn_piped(&["connect", "--reconnect", "-u", &url]);
    let lines = stdout_lines(&mut client);
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line: expected {what}"))
    };
    let (mut sender, _) = sockeye::connect(&format!("ws://{addr}/rooms/h"))
        .await
        .unwrap();
    // Until the client is in the room.
    loop {
        sender.send(Message::text("warm")).await.unwrap();
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(line, "warm");
            break;
        }
    }
    sender.send(Message::text("m0")).await.unwrap();
    while next("m0") != "m0" {}
    // The network drops; the room goes on without the client.
    dropper.down();
    for i in 1..=5 {
        sender.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    // A member that joins now sees that the room has taken them all.
    let (mut witness, _) = sockeye::connect(&format!("ws://{addr}/rooms/h"))
        .await
        .unwrap();
    sender.send(Message::text("mark")).await.unwrap();
    // (Over Redis, it may see some of the others first: they come back through Redis.)
    while witness.next().await.unwrap().unwrap() != Message::text("mark") {}
    dropper.up();
    // Back with ?since=ID of m0: what it missed, in order, once, and no id notices printed.
    for expected in ["m1", "m2", "m3", "m4", "m5", "mark"] {
        assert_eq!(next(expected), expected);
    }
    sender.send(Message::text("live")).await.unwrap();
    assert_eq!(next("live"), "live");
    signal(&client, "-TERM");
    let (code, _, stderr) = finish(client, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
}
