//! Mass resets do not leak descriptors: hundreds of clients reset their connections (RST, by
//! `SO_LINGER` 0) in the middle of a request head, of a frame's header, of a frame's payload, or
//! while the server is writing them an echo they do not read, all at once; the server's tasks
//! end and the process's open descriptors (`/proc/self/fd`) come back to what they were before.
//!
//! Alone in its test binary: other tests running beside it would open descriptors of their own.

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::{Message, ServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The whole test's bound.
const LIMIT: Duration = Duration::from_secs(60);
/// How long the descriptors may take to come back after the resets.
const SETTLE: Duration = Duration::from_secs(10);
/// The payload of a message the server echoes to a client that does not read it: more than
/// loopback's socket buffers hold, so the server is caught mid-write.
const LARGE: usize = 2 << 20;

/// The process's open descriptors.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd (Linux)")
        .count()
}

/// The soft limit on open descriptors (Linux).
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// An echo server, in this process.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = ServerBuilder::new().config(
        sockeye::WebSocketConfig::builder()
            .proto(
                sockeye::Config::builder()
                    .max_message_size(2 * LARGE)
                    .max_frame_size(2 * LARGE)
                    .build()
                    .unwrap(),
            )
            // The clients stalled mid-head are not dropped for it while the others open.
            .handshake_timeout(LIMIT)
            .build()
            .unwrap(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let builder = builder.clone();
            tokio::spawn(async move {
                if let Ok(mut ws) = builder.accept_tcp(tcp).await {
                    sockeye_test_support::echo(&mut ws).await;
                }
            });
        }
    });
    addr
}

const REQUEST: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A client frame: binary, FIN, masked with a zero key (the payload is sent as is).
fn frame_header(len: usize) -> Vec<u8> {
    let mut header = vec![0x82];
    if len < 126 {
        header.push(0x80 | u8::try_from(len).unwrap());
    } else if let Ok(len) = u16::try_from(len) {
        header.push(0xfe); // masked, 16-bit length
        header.extend_from_slice(&len.to_be_bytes());
    } else {
        header.push(0xff); // masked, 64-bit length
        header.extend_from_slice(&(len as u64).to_be_bytes());
    }
    header.extend_from_slice(&[0; 4]);
    header
}

/// Opens a WebSocket by hand: the request, then the server's 101 head.
async fn open(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(REQUEST.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// One client, left in the middle of something, ready to be reset.
async fn client(addr: SocketAddr, kind: usize) -> TcpStream {
    match kind {
        // Mid request head.
        0 => {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&REQUEST.as_bytes()[..40]).await.unwrap();
            tcp
        }
        // One echo, then half of the next frame's header.
        1 => {
            let mut tcp = open(addr).await;
            let mut message = frame_header(5);
            message.extend_from_slice(b"hello");
            tcp.write_all(&message).await.unwrap();
            let mut echo = [0; 7];
            tcp.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo[2..], b"hello");
            tcp.write_all(&frame_header(70_000)[..3]).await.unwrap();
            tcp
        }
        // A frame's header and part of its payload.
        2 => {
            let mut tcp = open(addr).await;
            tcp.write_all(&frame_header(64 << 10)).await.unwrap();
            tcp.write_all(&[7; 1000]).await.unwrap();
            tcp
        }
        // A large message whose echo is never read: the server is mid-write when the reset
        // comes, and mid-frame in the next message.
        _ => {
            let mut tcp = open(addr).await;
            let mut message = frame_header(LARGE);
            message.resize(message.len() + LARGE, 1);
            message.extend_from_slice(&frame_header(1000));
            message.extend_from_slice(&[2; 100]);
            tcp.write_all(&message).await.unwrap();
            tcp
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_come_back_after_mass_resets_mid_frame() {
    tokio::time::timeout(LIMIT, async {
        // Two descriptors per connection (both ends are in this process).
        let count = descriptor_limit().map_or(400, |limit| 400.min(limit.saturating_sub(128) / 2));
        assert!(count >= 100, "raise `ulimit -n` to run this test: {count}");
        let addr = server().await;
        // The listener and the runtime's own descriptors.
        let floor = open_descriptors();
        // One whole connection first, so that anything set up lazily is in the baseline.
        {
            let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/")).await.unwrap();
            ws.send(Message::text("warm")).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("warm"));
            ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        }
        // Once the warm-up connection's descriptors are closed.
        let baseline = wait_for_descriptors(|n| n <= floor, SETTLE).await;

        let mut clients = Vec::with_capacity(count);
        for i in 0..count {
            clients.push(client(addr, i % 4).await);
        }
        // Every server side is open once the listener has accepted the last ones.
        let held = wait_for_descriptors(|n| n >= baseline + 2 * count, SETTLE).await;
        assert!(
            held >= baseline + 2 * count,
            "{held} open with {count} connections, {baseline} before"
        );
        for tcp in &clients {
            tcp.set_zero_linger().unwrap();
        }
        // All at once: each drop sends a RST.
        drop(clients);

        let reset_at = Instant::now();
        let after = wait_for_descriptors(|n| n <= baseline, SETTLE).await;
        eprintln!(
            "{count} resets: {held} descriptors open while held, {after} after {:?} ({baseline} before)",
            reset_at.elapsed()
        );
        assert_eq!(
            after, baseline,
            "descriptors still open {SETTLE:?} after {count} resets ({held} while held)"
        );
    })
    .await
    .expect("the test ran out of time");
}

/// Polls the count of open descriptors until `done` holds or `deadline` passes; returns the
/// last count.
async fn wait_for_descriptors(done: impl Fn(usize) -> bool, deadline: Duration) -> usize {
    let start = Instant::now();
    loop {
        let n = open_descriptors();
        if done(n) || start.elapsed() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
