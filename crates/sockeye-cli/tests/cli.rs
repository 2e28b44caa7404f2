//! Tests of the built `sockeye` binary: real processes, real loopback sockets.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sockeye::{CloseCode, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_sockeye");

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sockeye ARGS` and returns it with the address it printed (`scheme://ADDR...`).
fn start(args: &[&str]) -> (Running, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    reader.read_line(&mut line).expect("a first line");
    // Keep reading, so the child's later messages do not meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ']).next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (Running(child), addr)
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&["connect", &format!("ws://127.0.0.1:{port}/")], "");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));

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
async fn two_clients_in_one_room() {
    let (_server, addr) = start(&["serve", "127.0.0.1:0"]);
    let url = format!("ws://{addr}/rooms/test");
    let (mut a, _) = sockeye::connect(&url).await.unwrap();
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
    let status = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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
