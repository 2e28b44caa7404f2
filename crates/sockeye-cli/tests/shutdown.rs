//! `sockeye serve` shutting down under room traffic, with real signals: on the first SIGINT
//! or SIGTERM every room member writes out what was published before it, then closes with
//! 1001; a second signal ends the process at once.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sockeye::{CloseCode, Message, WebSocket};
use tokio::net::TcpStream;

mod common;
use common::{Running, signal, sockeye, spawn_serving};
use sockeye_test_support::{Texts, client_with_rcvbuf, number, numbered, read_numbered};

/// Messages published before the signal, and their size: more than the kernel's socket
/// buffers hold for a slow member, so that part of them waits in the server's queues.
const COUNT: u32 = 720;
const SIZE: usize = 16 << 10;

/// `sockeye serve` on a loopback port, killed when dropped; its stderr kept.
struct Server {
    running: Running,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start() -> Self {
        let (running, addr, line, reader) = spawn_serving(
            sockeye()
                .args(["serve", "127.0.0.1:0"])
                .env_remove("RUST_LOG"),
        );
        let stderr = Arc::new(Mutex::new(line));
        let kept = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Self {
            running,
            addr,
            stderr,
        }
    }

    fn signal(&self, name: &str) {
        signal(&self.running, name);
    }

    /// Waits (bounded) for the process to exit; its exit code.
    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.running.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A named member of room `drain` (named members are told of each other's joining), its
/// receive buffer `rcvbuf` bytes when given.
async fn member(addr: SocketAddr, rcvbuf: Option<u32>) -> WebSocket<TcpStream> {
    client_with_rcvbuf(addr, "/rooms/drain?name=m", rcvbuf).await
}

/// Reads every message until the connection ends, each the next number, pausing `pause` after
/// each; how many came, and the close code.
fn reader(
    ws: WebSocket<TcpStream>,
    pause: Duration,
) -> tokio::task::JoinHandle<(u32, Option<CloseCode>)> {
    read_numbered(ws, pause, Texts::Skip)
}

/// Waits (bounded) until `others` other members are in the room with `ws`, as its presence
/// notices tell: the list it got on joining, and the joins since.
async fn until_joined(ws: &mut WebSocket<TcpStream>, others: usize) {
    let mut ids = std::collections::HashSet::new();
    let mut me = None;
    while ids.len() < others {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("presence notices")
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            panic!("only presence notices before the first message");
        };
        let notice: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        match notice["event"].as_str() {
            Some("members") => {
                me = notice["you"]["id"].as_u64();
                for member in notice["members"].as_array().unwrap() {
                    ids.insert(member["id"].as_u64().unwrap());
                }
            }
            Some("join") => {
                ids.insert(notice["member"]["id"].as_u64().unwrap());
            }
            _ => {}
        }
        if let Some(me) = me {
            ids.remove(&me);
        }
    }
}

/// Sends `COUNT` numbered messages, then reads until the server closes.
fn sender(mut ws: WebSocket<TcpStream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..COUNT {
            if ws.send(numbered(i, SIZE)).await.is_err() {
                return;
            }
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
}

/// Six slow but reading members (small receive buffers, a pause after each message), a fast
/// one that shows when everything is published, and a sender; then `signal`.
async fn slow_members_lose_nothing_on(signal: &str) {
    let mut server = Server::start();
    let addr = server.addr;
    let mut send = member(addr, None).await;
    let mut slow = Vec::new();
    for _ in 0..6 {
        slow.push(reader(
            member(addr, Some(4096)).await,
            Duration::from_millis(1),
        ));
    }
    let fast = reader_until(member(addr, None).await, COUNT);
    until_joined(&mut send, 7).await;
    let _sending = sender(send);
    let fast = tokio::time::timeout(Duration::from_secs(30), fast)
        .await
        .expect("all published")
        .unwrap();
    // Every message was published before the signal.
    server.signal(signal);
    for task in slow {
        let (received, code) = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("the slow member's connection ended")
            .unwrap();
        assert_eq!(
            received, COUNT,
            "{signal}: every message at each slow member"
        );
        assert_eq!(code, Some(CloseCode::GOING_AWAY), "{signal}");
    }
    drop(fast);
    let code = server.exit_code(Duration::from_secs(10)).await;
    let stderr = server.stderr();
    assert_eq!(code, Some(0), "{signal}: {stderr}");
    assert!(
        stderr.contains("0 cut with 0 message(s)"),
        "{signal}: the report names what was lost: {stderr}"
    );
}

/// Reads `count` messages in order at full speed; returns the connection, still open.
fn reader_until(
    mut ws: WebSocket<TcpStream>,
    count: u32,
) -> tokio::task::JoinHandle<WebSocket<TcpStream>> {
    tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            match ws.next().await.unwrap().unwrap() {
                message @ Message::Binary(_) => {
                    assert_eq!(number(&message), received);
                    received += 1;
                }
                Message::Text(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        ws
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_slow_room_members_without_losing_a_message() {
    slow_members_lose_nothing_on("-INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_slow_room_members_without_losing_a_message() {
    slow_members_lose_nothing_on("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_130() {
    let mut server = Server::start();
    let addr = server.addr;
    // A member that never reads: the drain would wait for it until the grace period ends.
    let mut send = member(addr, None).await;
    let stalled = member(addr, Some(4096)).await;
    let mut probe = member(addr, None).await;
    until_joined(&mut send, 2).await;
    let _sending = sender(send);
    // Published (at least) once the probe has the first message.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), probe.next())
            .await
            .unwrap();
        if let Some(Ok(Message::Binary(_))) = message {
            break;
        }
    }
    server.signal("-INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.running.0.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    let second = Instant::now();
    server.signal("-TERM");
    let code = server.exit_code(Duration::from_secs(3)).await;
    assert_eq!(code, Some(130), "{}", server.stderr());
    assert!(second.elapsed() < Duration::from_secs(2));
    drop(stalled);
}
