//! A handshake flood does not deny service: with 2,000 connections stalled mid-handshake
//! (silent, a partial head, one byte a second) against a budget of 1,024, newcomers are served
//! within a second; and one address cannot take the whole budget. Loopback only: the stalled
//! connections come from 127.0.0.2 to 127.0.0.9, the newcomers from 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sockeye::{Message, ServerBuilder};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// The whole test's bound.
const LIMIT: Duration = Duration::from_secs(60);

/// The soft limit on open descriptors (Linux), to size the flood to what the machine allows.
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A server with a budget of `max` handshakes that echoes on what it accepts.
async fn server(builder: ServerBuilder) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let builder = builder.clone();
            tokio::spawn(async move {
                if let Ok(mut ws) = builder.accept_tcp(tcp).await {
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_data() {
                            let _ = ws.send(message).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// Connects, upgrades and echoes one message; returns how long it took.
async fn newcomer(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/"))
        .await
        .expect("the newcomer is served");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_are_served_within_a_second_while_2000_handshakes_are_stalled() {
    tokio::time::timeout(LIMIT, async {
        // Two descriptors per stalled connection (both ends are in this process).
        let stalled =
            descriptor_limit().map_or(2000, |limit| 2000.min(limit.saturating_sub(256) / 2));
        assert!(
            stalled >= 1100,
            "raise `ulimit -n` to run this test: {stalled}"
        );
        let builder = ServerBuilder::new()
            .max_concurrent_handshakes(1024)
            .handshake_timeout_for_test();
        let addr = server(builder.clone()).await;

        // The storm: a third silent, a third with a partial head, a third at one byte a second.
        let mut held = Vec::new();
        let mut trickling = Vec::new();
        for i in 0..stalled {
            let source = Ipv4Addr::new(127, 0, 0, [2, 3, 4, 5, 6, 7, 8, 9][i % 8]);
            let mut tcp = connect_from(source, addr).await.unwrap();
            match i % 3 {
                0 => held.push(tcp),
                1 => {
                    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                        .await
                        .unwrap();
                    held.push(tcp);
                }
                _ => trickling.push(tokio::spawn(async move {
                    for &byte in b"GET / HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                        if tcp.write_all(&[byte]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })),
            }
        }
        // The budget is full of the storm; past their first second they count as stalled.
        assert!(builder.handshakes_in_progress() <= 1024);
        while builder.handshakes_in_progress() < 1024 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;

        for _ in 0..20 {
            let took = newcomer(addr).await;
            assert!(took < Duration::from_secs(1), "a newcomer took {took:?}");
            assert!(builder.handshakes_in_progress() <= 1024);
        }
        for task in trickling {
            task.abort();
        }
        drop(held);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_the_whole_budget() {
    tokio::time::timeout(LIMIT, async {
        let builder = ServerBuilder::new()
            .max_concurrent_handshakes(1024)
            .max_handshakes_per_address(256)
            .handshake_timeout_for_test();
        let addr = server(builder.clone()).await;
        // 600 silent connections from one address, young: the address's share is full and
        // nothing of it is stalled yet, so the rest are answered 503.
        let mut held = Vec::new();
        for _ in 0..600 {
            held.push(
                connect_from(Ipv4Addr::new(127, 0, 0, 2), addr)
                    .await
                    .unwrap(),
            );
        }
        // Another address is served at once, within the first second of the storm.
        let took = newcomer(addr).await;
        assert!(took < Duration::from_secs(1), "a newcomer took {took:?}");
        assert!(
            builder.handshakes_in_progress() <= 256,
            "{}",
            builder.handshakes_in_progress()
        );
        drop(held);
    })
    .await
    .expect("bounded");
}

trait ForTest {
    fn handshake_timeout_for_test(self) -> Self;
}

impl ForTest for ServerBuilder {
    /// Longer than the test: no stalled handshake leaves by the timeout, only by eviction.
    fn handshake_timeout_for_test(self) -> Self {
        let config = sockeye::WebSocketConfig::builder()
            .handshake_timeout(2 * LIMIT)
            .build()
            .unwrap();
        self.config(config)
    }
}
