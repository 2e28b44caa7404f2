//! End-to-end tests over real TCP on 127.0.0.1: a sockeye client against a sockeye echo server,
//! and hand-written raw peers that do what a well-behaved client would not (stop reading, vanish
//! mid-frame, send unmasked frames, pipeline frames behind the handshake).
//!
//! Every test is bounded by [`LIMIT`], so a hang fails fast instead of stalling the suite.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use sockeye::proto::frame::{FrameHead, OpCode};
use sockeye::proto::mask::apply_mask;
use sockeye::{
    Accept, ClientBuilder, CloseCode, CloseFrame, Config, Error, Kind, MaybeTlsStream, Message,
    Reject, ServerBuilder, WebSocket, WebSocketConfig, WebSocketConfigBuilder,
};
use sockeye_test_support::http::{exchange as raw_exchange, header};
use sockeye_test_support::{LIMIT, TempDir, bounded, listen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Barrier, mpsc};
use tokio::task::JoinSet;

/// The key of RFC 6455 section 1.3, and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The masking key raw clients use.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// ---- Helpers ----

/// The default settings, but with a close timeout longer than [`LIMIT`]: a close handshake
/// that stalls (say, on a lost wakeup) then fails the test instead of being finished quietly by
/// the close timer.
fn patient() -> WebSocketConfigBuilder {
    let proto = Config::builder()
        .close_timeout(3 * LIMIT)
        .build()
        .expect("proto config");
    WebSocketConfig::builder().proto(proto)
}

fn server() -> ServerBuilder {
    ServerBuilder::new().config(patient().build().expect("config"))
}

async fn connect(url: &str) -> WebSocket<MaybeTlsStream> {
    let (ws, response) = ClientBuilder::new(url)
        .config(patient().build().expect("config"))
        .connect()
        .await
        .expect("connect");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// What one connection of the echo server saw, reported when it ended.
#[derive(Debug)]
enum Served {
    /// The handshake failed (or was refused) with this error.
    Refused(Error),
    /// The connection ran; its stream ended with `None`.
    Done {
        /// Data messages echoed.
        echoed: usize,
        /// Everything else, in order: control messages, stream errors, send errors.
        log: Vec<Result<Message, Error>>,
    },
}

impl Served {
    fn done(self) -> (usize, Vec<Result<Message, Error>>) {
        match self {
            Self::Done { echoed, log } => (echoed, log),
            Self::Refused(e) => panic!("handshake failed: {e:?}"),
        }
    }

    fn refused(self) -> Error {
        match self {
            Self::Refused(e) => e,
            Self::Done { .. } => panic!("the handshake was accepted"),
        }
    }
}

/// An echo server for any number of connections; each reports a [`Served`] when it ends.
async fn echo_server(builder: ServerBuilder) -> (SocketAddr, mpsc::UnboundedReceiver<Served>) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let builder = builder.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let served = match builder.accept(tcp).await {
                    Ok(mut ws) => {
                        let mut echoed = 0;
                        let mut log = Vec::new();
                        // Runs until the stream ends: a stream that never does fails the test.
                        while let Some(item) = ws.next().await {
                            match item {
                                Ok(message) if message.is_data() => match ws.send(message).await {
                                    Ok(()) => echoed += 1,
                                    Err(e) => log.push(Err(e)),
                                },
                                other => log.push(other),
                            }
                        }
                        Served::Done { echoed, log }
                    }
                    Err(e) => Served::Refused(e),
                };
                let _ = tx.send(served);
            });
        }
    });
    (addr, rx)
}

/// Accepts one connection with [`sockeye::accept`] (the default settings) on a fresh port.
async fn one_server() -> (SocketAddr, tokio::task::JoinHandle<WebSocket<TcpStream>>) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        sockeye::accept(tcp).await.expect("server handshake")
    });
    (addr, server)
}

/// `len` bytes that differ with `seed`: a block of prime length (so no power-of-two shift of
/// the payload matches it) repeated.
fn binary_pattern(len: usize, seed: usize) -> Vec<u8> {
    const BLOCK: usize = 4093;
    let block: Vec<u8> = (0..BLOCK)
        .map(|i| u8::try_from((i * 31 + seed * 7) % 251).expect("below 251"))
        .collect();
    let mut data = block.repeat(len / BLOCK + 1);
    data.truncate(len);
    data
}

/// Exactly `len` bytes of UTF-8 with 2- to 4-byte characters, so code points straddle frame
/// and read boundaries: densely in the first 64 KiB, then about one per KiB, because validating
/// dense non-ASCII text is slow in an unoptimized build.
fn text_pattern(len: usize, seed: usize) -> String {
    const WIDE: [char; 4] = ['é', '€', '𝄞', 'ж'];
    let mut text = String::with_capacity(len);
    let mut k = seed;
    while text.len() < len {
        let c = if text.len() < 1 << 16 && k.is_multiple_of(2) || k.is_multiple_of(1021) {
            WIDE[k % WIDE.len()]
        } else {
            char::from(b'a' + u8::try_from(k % 26).expect("below 26"))
        };
        text.push(if text.len() + c.len_utf8() > len {
            'x'
        } else {
            c
        });
        k += 1;
    }
    text
}

/// Compares payloads without printing megabytes on failure.
fn assert_payload(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if got == want {
        return;
    }
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at} of {}", want.len());
    }
}

fn close_frame(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(
        CloseFrame::new(code, reason).expect("valid close frame"),
    ))
}

/// A frame as a client sends it: header with the mask key, then the masked payload.
fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let head = FrameHead {
        mask: Some(MASK),
        ..FrameHead::new(true, opcode, payload.len() as u64)
    };
    let mut out = Vec::new();
    head.encode_into(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], MASK, 0);
    out
}

fn upgrade_request(version: &str) -> String {
    format!(
        "GET /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// Reads up to the end of an HTTP response head; returns the head, leaving the rest in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> String {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf.split_to(end + 4);
            return String::from_utf8(head.to_vec()).expect("ASCII response head");
        }
        let n = stream.read_buf(buf).await.expect("read response head");
        assert_ne!(n, 0, "EOF inside the response head: {buf:?}");
    }
}

/// Does the opening handshake by hand, writing `after` in the same write as the request.
/// Returns what arrived after the 101 head.
async fn raw_handshake(stream: &mut TcpStream, after: &[u8]) -> BytesMut {
    let mut out = upgrade_request("13").into_bytes();
    out.extend_from_slice(after);
    stream.write_all(&out).await.expect("write request");
    let mut buf = BytesMut::new();
    let head = read_head(stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(ACCEPT),
        "{head}"
    );
    buf
}

/// Reads one frame the server sent (unmasked, as a server must); `None` at EOF between frames.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<(FrameHead, Bytes)> {
    loop {
        if let Some((head, head_len)) = FrameHead::parse(buf).expect("valid frame header") {
            let len = usize::try_from(head.payload_len).expect("frame fits in memory");
            if buf.len() >= head_len + len {
                assert_eq!(head.mask, None, "a server must not mask");
                let _ = buf.split_to(head_len);
                return Some((head, buf.split_to(len).freeze()));
            }
        }
        if stream.read_buf(buf).await.expect("read frame") == 0 {
            assert!(buf.is_empty(), "EOF inside a frame: {buf:?}");
            return None;
        }
    }
}

fn expect_message(item: Option<Result<Message, Error>>) -> Message {
    match item {
        Some(Ok(message)) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

// ---- 1. Sizes ----

/// The length boundaries of the frame header (7-bit, 16-bit, 64-bit) and the default frame
/// limit, which allows exactly 16 MiB.
const SIZES: [usize; 7] = [0, 1, 125, 126, 65535, 65536, 16 << 20];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_text_and_binary_of_every_length_boundary() {
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;
        let mut ws = connect(&format!("ws://{addr}/echo")).await;
        for (seed, len) in SIZES.into_iter().enumerate() {
            let text = text_pattern(len, seed);
            ws.send(Message::text(text.as_str()))
                .await
                .expect("send text");
            match expect_message(ws.next().await) {
                Message::Text(got) => assert_payload(got.as_bytes(), text.as_bytes(), "text"),
                other => panic!("expected text of {len} bytes, got {other:?}"),
            }
            let data = binary_pattern(len, seed);
            ws.send(Message::binary(data.clone())).await.expect("send");
            match expect_message(ws.next().await) {
                Message::Binary(got) => assert_payload(&got, &data, "binary"),
                other => panic!("expected binary of {len} bytes, got {other:?}"),
            }
        }
        ws.close(CloseCode::NORMAL, "done").await.expect("close");
        let (echoed, log) = served.recv().await.expect("served").done();
        assert_eq!(echoed, 2 * SIZES.len());
        assert!(
            matches!(&log[..], [Ok(m)] if *m == close_frame(CloseCode::NORMAL, "done")),
            "{log:?}"
        );
    })
    .await;
}

// ---- 2. Concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_get_their_own_echoes() {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 20;
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;
        let url = format!("ws://{addr}/echo");
        // Every client connects before any sends, so all 50 connections are open at once.
        let barrier = std::sync::Arc::new(Barrier::new(CLIENTS));
        let mut clients = JoinSet::new();
        for c in 0..CLIENTS {
            let (url, barrier) = (url.clone(), barrier.clone());
            clients.spawn(async move {
                let mut ws = connect(&url).await;
                barrier.wait().await;
                for i in 0..MESSAGES {
                    let message = if i % 2 == 0 {
                        Message::text(format!("client {c} message {i}"))
                    } else {
                        Message::binary(binary_pattern(100 + i, c))
                    };
                    ws.send(message.clone()).await.expect("send");
                    assert_eq!(expect_message(ws.next().await), message, "client {c}");
                }
                ws.close(CloseCode::NORMAL, "").await.expect("close");
            });
        }
        while let Some(result) = clients.join_next().await {
            result.expect("client task");
        }
        for _ in 0..CLIENTS {
            let (echoed, log) = served.recv().await.expect("served").done();
            assert_eq!(echoed, MESSAGES);
            assert!(matches!(&log[..], [Ok(Message::Close(Some(_)))]), "{log:?}");
        }
    })
    .await;
}

// ---- 3. Ping and pong ----

#[tokio::test]
async fn ping_is_answered_with_a_pong_of_the_same_payload() {
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;
        let mut ws = connect(&format!("ws://{addr}/echo")).await;
        let payload = Bytes::from_static(b"are you there?");
        ws.send(Message::ping(payload.clone())).await.expect("ping");
        ws.send("after the ping").await.expect("send");
        // The Pong is queued as soon as the Ping is read, before the echo of what followed it.
        assert_eq!(expect_message(ws.next().await), Message::Pong(payload.clone()));
        assert_eq!(
            expect_message(ws.next().await),
            Message::text("after the ping")
        );
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        let (echoed, log) = served.recv().await.expect("served").done();
        assert_eq!(echoed, 1);
        assert!(
            matches!(&log[..], [Ok(Message::Ping(p)), Ok(Message::Close(Some(_)))] if *p == payload),
            "{log:?}"
        );
    })
    .await;
}

// ---- 4. Close ----

#[tokio::test]
async fn client_close_code_and_reason_reach_the_server() {
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;
        let mut ws = connect(&format!("ws://{addr}/echo")).await;
        ws.close(CloseCode(4001), "bye").await.expect("close");
        // The server's stream yielded the Close and then `None` (no error): that ends `Done`.
        let (echoed, log) = served.recv().await.expect("served").done();
        assert_eq!(echoed, 0);
        assert!(
            matches!(&log[..], [Ok(m)] if *m == close_frame(CloseCode(4001), "bye")),
            "{log:?}"
        );
        assert!(ws.next().await.is_none(), "closed stream yields None");
        let late = ws.send("late").await.expect_err("send after close");
        assert!(late.is_misuse(), "{late:?}");
    })
    .await;
}

#[tokio::test]
async fn server_close_code_and_reason_reach_the_client() {
    bounded(async {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = server().accept(tcp).await.expect("server handshake");
            ws.close(CloseCode::GOING_AWAY, "shutting down").await
        });
        let mut ws = connect(&format!("ws://{addr}/")).await;
        assert_eq!(
            expect_message(ws.next().await),
            close_frame(CloseCode::GOING_AWAY, "shutting down")
        );
        let end = ws.next().await;
        assert!(end.is_none(), "clean close ends with None, got {end:?}");
        server.await.expect("server task").expect("server close");
    })
    .await;
}

// ---- 5. Refused handshakes ----

#[tokio::test]
async fn refused_handshake_reports_status_and_body() {
    bounded(async {
        let builder = server().on_request(|req| {
            if req.path() == "/private" {
                Err(Reject::new(StatusCode::FORBIDDEN, "no entry here"))
            } else {
                Ok(Accept::new())
            }
        });
        let (addr, mut served) = echo_server(builder).await;

        let err = sockeye::connect(&format!("ws://{addr}/private"))
            .await
            .expect_err("refused");
        assert!(err.is_handshake(), "{err:?}");
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        match err.kind() {
            Kind::Refused { status, body, .. } => {
                assert_eq!(*status, StatusCode::FORBIDDEN);
                assert!(body.starts_with(b"no entry here"), "body {body:?}");
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        let server_err = served.recv().await.expect("served").refused();
        assert_eq!(server_err.status(), Some(StatusCode::FORBIDDEN));

        // The same server accepts another path: the decision really is per request.
        let mut ws = connect(&format!("ws://{addr}/public")).await;
        ws.send("hello").await.expect("send");
        assert_eq!(expect_message(ws.next().await), Message::text("hello"));
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        assert_eq!(served.recv().await.expect("served").done().0, 1);
    })
    .await;
}

#[tokio::test]
async fn non_websocket_requests_get_426() {
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;

        let response = raw_exchange(addr, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 426 "), "{response}");
        assert_eq!(
            header(&response, "upgrade"),
            Some("websocket"),
            "{response}"
        );
        let e = served.recv().await.expect("served").refused();
        assert_eq!(e.status(), Some(StatusCode::UPGRADE_REQUIRED), "{e:?}");

        let response = raw_exchange(addr, &upgrade_request("8")).await;
        assert!(response.starts_with("HTTP/1.1 426 "), "{response}");
        assert_eq!(
            header(&response, "sec-websocket-version"),
            Some("13"),
            "{response}"
        );
        let e = served.recv().await.expect("served").refused();
        assert_eq!(e.status(), Some(StatusCode::UPGRADE_REQUIRED), "{e:?}");
    })
    .await;
}

// ---- 6. Backpressure ----

const CHUNK: usize = 64 << 10;
const HIGH_WATER: usize = 256 << 10;
/// Socket buffers are pinned small (which also turns off their autotuning) so that what the
/// kernel can absorb is known; Linux doubles the value for its bookkeeping.
const SOCKET_BUFFER: u32 = 64 << 10;
/// How many 64 KiB messages can complete at most before sending must wait: our queue up to the
/// high-water mark, one message over it, both kernel buffers (doubled), and slack.
const MAX_BEFORE_WAIT: usize = (HIGH_WATER + CHUNK + 4 * SOCKET_BUFFER as usize) / CHUNK + 4;
/// How long a send may take to count as completed; one that takes longer is waiting.
const STALL: Duration = Duration::from_millis(300);

/// A sockeye server with a 256 KiB high-water mark, and a raw peer that has done the handshake
/// and reads nothing until asked; both ends with small socket buffers.
async fn stalled_peer() -> (WebSocket<TcpStream>, TcpStream, BytesMut) {
    // Accepted sockets inherit the listener's buffer size.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_send_buffer_size(SOCKET_BUFFER)
        .expect("SO_SNDBUF");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(8).expect("listen");
    let addr = listener.local_addr().expect("local_addr");
    let config = patient()
        .write_buffer_high_water(HIGH_WATER)
        .build()
        .expect("config");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        ServerBuilder::new().config(config).accept(tcp).await
    });
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(SOCKET_BUFFER)
        .expect("SO_RCVBUF");
    let mut raw = socket.connect(addr).await.expect("connect");
    let buf = raw_handshake(&mut raw, b"").await;
    let ws = server.await.expect("server task").expect("handshake");
    (ws, raw, buf)
}

/// The raw peer starts reading: it collects binary payloads until the server's Close, answers
/// it, and expects EOF.
fn drain(mut raw: TcpStream, mut buf: BytesMut) -> tokio::task::JoinHandle<Vec<Bytes>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let (head, payload) = read_frame(&mut raw, &mut buf).await.expect("frame");
            match head.opcode {
                OpCode::Binary => got.push(payload),
                OpCode::Close => {
                    raw.write_all(&masked_frame(OpCode::Close, &payload))
                        .await
                        .expect("close reply");
                    assert!(read_frame(&mut raw, &mut buf).await.is_none(), "EOF");
                    return got;
                }
                other => panic!("unexpected {other:?} frame"),
            }
        }
    })
}

fn assert_chunks(got: &[Bytes]) {
    for (i, payload) in got.iter().enumerate() {
        assert_payload(payload, &binary_pattern(CHUNK, i), &format!("message {i}"));
    }
}

#[tokio::test]
async fn send_waits_when_the_peer_does_not_read() {
    bounded(async {
        let (mut ws, raw, buf) = stalled_peer().await;
        let mut sent = 0;
        loop {
            let attempt = ws.send(Message::binary(binary_pattern(CHUNK, sent)));
            match tokio::time::timeout(STALL, attempt).await {
                Ok(result) => result.expect("send"),
                Err(_elapsed) => break,
            }
            sent += 1;
            assert!(
                sent <= MAX_BEFORE_WAIT,
                "{sent} sends of 64 KiB completed to a peer that reads nothing"
            );
        }
        assert!(sent >= 1, "not even one message fitted");

        // Now the peer reads. The cancelled send had queued its message (the previous send
        // had flushed everything), so it is delivered; the next send completes; all arrive
        // intact and in order.
        let reader = drain(raw, buf);
        ws.send(Message::binary(binary_pattern(CHUNK, sent + 1)))
            .await
            .expect("send after the peer reads");
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        let got = reader.await.expect("reader task");
        assert_eq!(
            got.len(),
            sent + 2,
            "{sent} completed sends, 1 cancelled, 1 more"
        );
        assert_chunks(&got);
    })
    .await;
}

#[tokio::test]
async fn feed_queues_up_to_the_high_water_mark_then_waits() {
    bounded(async {
        let (mut ws, raw, buf) = stalled_peer().await;
        let mut fed = 0;
        loop {
            let attempt = ws.feed(Message::binary(binary_pattern(CHUNK, fed)));
            match tokio::time::timeout(STALL, attempt).await {
                Ok(result) => result.expect("feed"),
                Err(_elapsed) => break,
            }
            fed += 1;
            assert!(
                fed <= MAX_BEFORE_WAIT,
                "{fed} feeds of 64 KiB completed to a peer that reads nothing"
            );
        }
        // Feeding does not wait below the mark, whatever the transport does.
        assert!(fed > HIGH_WATER / CHUNK, "only {fed} feeds before waiting");

        // The cancelled feed was waiting for room: its message was never queued.
        let reader = drain(raw, buf);
        ws.flush().await.expect("flush after the peer reads");
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        let got = reader.await.expect("reader task");
        assert_eq!(got.len(), fed, "every completed feed, nothing else");
        assert_chunks(&got);
    })
    .await;
}

// ---- 7. A peer that vanishes mid-frame ----

#[tokio::test]
async fn peer_vanishing_mid_frame_ends_the_stream_with_an_error() {
    bounded(async {
        let (addr, server) = one_server().await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        let _ = raw_handshake(&mut raw, b"").await;
        let mut ws = server.await.expect("server task");

        // A header announcing 1000 bytes, and only 10 of them.
        let head = FrameHead {
            mask: Some(MASK),
            ..FrameHead::new(true, OpCode::Binary, 1000)
        };
        let mut partial = Vec::new();
        head.encode_into(&mut partial);
        let start = partial.len();
        partial.extend_from_slice(&binary_pattern(10, 0));
        apply_mask(&mut partial[start..], MASK, 0);
        raw.write_all(&partial).await.expect("write");
        drop(raw);

        match ws.next().await {
            Some(Err(e)) => {
                assert_eq!(e.close_code(), Some(CloseCode::ABNORMAL), "{e:?}");
                assert!(!e.is_protocol(), "{e:?}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let end = ws.next().await;
        assert!(end.is_none(), "then None, got {end:?}");
    })
    .await;
}

// ---- 8. A protocol violation ----

#[tokio::test]
async fn unmasked_client_frame_is_answered_with_close_1002() {
    bounded(async {
        let (addr, server) = one_server().await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        let _ = raw_handshake(&mut raw, b"").await;
        let mut ws = server.await.expect("server task");

        let mut unmasked = Vec::new();
        FrameHead::new(true, OpCode::Text, 2).encode_into(&mut unmasked);
        unmasked.extend_from_slice(b"hi");
        raw.write_all(&unmasked).await.expect("write");

        let (first, second) = (ws.next().await, ws.next().await);
        match first {
            Some(Err(e)) => {
                assert_eq!(e.close_code(), Some(CloseCode::PROTOCOL_ERROR), "{e:?}");
                assert!(e.is_protocol(), "{e:?}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(second.is_none(), "then None, got {second:?}");

        // The server sent a Close frame with 1002 (and maybe a reason), then closed TCP.
        let mut wire = Vec::new();
        raw.read_to_end(&mut wire).await.expect("read");
        assert!(wire.len() >= 4, "{wire:02x?}");
        assert_eq!(wire[0], 0x88, "FIN + Close: {wire:02x?}");
        let len = usize::from(wire[1]);
        assert!((2..=125).contains(&len), "unmasked, short: {wire:02x?}");
        assert_eq!(wire.len(), 2 + len, "nothing after the Close: {wire:02x?}");
        assert_eq!(&wire[2..4], &[0x03, 0xea], "code 1002: {wire:02x?}");
        assert!(std::str::from_utf8(&wire[4..]).is_ok(), "UTF-8 reason");
    })
    .await;
}

// ---- 9. Split ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_writer_in_another_task_while_reader_receives() {
    const COUNT: usize = 100;
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;
        let ws = connect(&format!("ws://{addr}/echo")).await;
        let (mut reader, writer) = ws.split();
        assert!(writer.is_pair_of(&reader));

        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = reader.next().await {
                got.push(item.expect("receive"));
            }
            got
        });
        let clone = writer.clone();
        let writing = tokio::spawn(async move {
            for i in 0..COUNT {
                clone
                    .send(format!("message {i}"))
                    .await
                    .expect("send from the clone");
            }
        });
        writing.await.expect("writer task");
        // The reader keeps receiving while the original writer closes; the Close frame goes
        // after all 100 messages, so every echo comes before the server's Close reply.
        writer.close(CloseCode::NORMAL, "").await.expect("close");
        let got = reading.await.expect("reader task");
        assert_eq!(got.len(), COUNT + 1, "{got:?}");
        for (i, message) in got[..COUNT].iter().enumerate() {
            assert_eq!(*message, Message::text(format!("message {i}")));
        }
        assert_eq!(got[COUNT], close_frame(CloseCode::NORMAL, ""));
        let (echoed, _) = served.recv().await.expect("served").done();
        assert_eq!(echoed, COUNT);
    })
    .await;
}

// ---- 10. Bytes behind the handshake ----

#[tokio::test]
async fn frames_in_the_same_write_as_the_handshake_are_not_lost() {
    bounded(async {
        let (addr, mut served) = echo_server(server()).await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        let mut pipelined = masked_frame(OpCode::Text, "right behind the handshake".as_bytes());
        pipelined.extend_from_slice(&masked_frame(OpCode::Binary, &[1, 2, 3, 4, 5]));
        let mut buf = raw_handshake(&mut raw, &pipelined).await;

        let (head, payload) = read_frame(&mut raw, &mut buf).await.expect("text echo");
        assert_eq!(head.opcode, OpCode::Text);
        assert_eq!(&payload[..], b"right behind the handshake");
        let (head, payload) = read_frame(&mut raw, &mut buf).await.expect("binary echo");
        assert_eq!(head.opcode, OpCode::Binary);
        assert_eq!(&payload[..], [1, 2, 3, 4, 5]);

        raw.write_all(&masked_frame(OpCode::Close, &1000u16.to_be_bytes()))
            .await
            .expect("close");
        let (head, payload) = read_frame(&mut raw, &mut buf).await.expect("close reply");
        assert_eq!(head.opcode, OpCode::Close);
        assert_eq!(&payload[..], 1000u16.to_be_bytes());
        assert!(
            read_frame(&mut raw, &mut buf).await.is_none(),
            "server closes TCP"
        );

        let (echoed, log) = served.recv().await.expect("served").done();
        assert_eq!(echoed, 2);
        assert!(
            matches!(&log[..], [Ok(m)] if *m == close_frame(CloseCode::NORMAL, "")),
            "{log:?}"
        );
    })
    .await;
}

/// A writer's close against a peer that never answers (and a reader nobody polls) ends with the
/// close timeout as an error, after our Close frame was written.
#[tokio::test]
async fn split_writer_close_reports_the_timeout() {
    bounded(async {
        let (listener, addr) = listen().await;
        let quick = Config::builder()
            .close_timeout(Duration::from_millis(300))
            .build()
            .expect("proto config");
        let config = WebSocketConfig::builder()
            .proto(quick)
            .build()
            .expect("config");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            ServerBuilder::new()
                .config(config)
                .accept(tcp)
                .await
                .expect("handshake")
        });
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        let mut buf = raw_handshake(&mut raw, &[]).await;
        let ws = server.await.expect("server task");
        let (_reader, writer) = ws.split();
        let error = writer
            .close(CloseCode::GOING_AWAY, "bye")
            .await
            .expect_err("no answer came");
        assert!(error.is_timeout(), "{error:?}");
        // The Close frame did go out before the wait.
        let (head, payload) = read_frame(&mut raw, &mut buf).await.expect("a frame");
        assert_eq!(head.opcode, OpCode::Close);
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn over_a_unix_socket() {
    bounded(async {
        let dir = TempDir::new("unix");
        let path = dir.path().join("ws.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let served = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = server().accept(stream).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                if message.is_data() {
                    ws.send(message).await.unwrap();
                }
            }
        });
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (mut ws, response) = ClientBuilder::new("ws://localhost/over-unix")
            .connect_on(stream)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("over a unix socket")).await.unwrap();
        assert_eq!(
            expect_message(ws.next().await),
            Message::text("over a unix socket")
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        served.await.unwrap();
    })
    .await;
}
