//! Streaming mode over real loopback TCP: a message larger than `max_message_size` read frame
//! by frame, text checked for UTF-8 across frames, control messages between the frames, with
//! the tokio and the blocking API. The server is a hand-written peer on a thread, so it can
//! send frames of its choosing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;

use sockeye::proto::handshake::accept_key;
use sockeye::{
    ClientBuilder, CloseCode, Config, DataKind, Incoming, Kind, MaybeTlsStream, Message, WebSocket,
    WebSocketConfig,
};
use sockeye_test_support::{LIMIT, bounded, listen_blocking};

/// The client's limits: a message may hold 64 KiB, a frame 16 KiB.
const MAX_MESSAGE: usize = 64 << 10;
const MAX_FRAME: usize = 16 << 10;
/// The large message: 1 MiB, sixteen times the message limit, in frames of `MAX_FRAME`.
const LARGE: usize = 1 << 20;

fn streaming_config() -> WebSocketConfig {
    let proto = Config::builder()
        .streaming(true)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_FRAME)
        .close_timeout(LIMIT)
        .build()
        .unwrap();
    WebSocketConfig::builder()
        .proto(proto)
        .handshake_timeout(LIMIT)
        .build()
        .unwrap()
}

/// A client with [`streaming_config`], connected to the peer at `addr`.
async fn streaming_client(addr: SocketAddr) -> WebSocket<MaybeTlsStream> {
    let (ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
        .config(streaming_config())
        .connect()
        .await
        .unwrap();
    ws
}

/// Byte `i` of the large message: a pattern that a misplaced or lost frame would break.
fn pattern(i: usize) -> u8 {
    u8::try_from(i * 7 % 251).unwrap()
}

// ---- The peer ----

/// A server frame: unmasked, with `fin` and `opcode`.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(u8::try_from(n).unwrap()),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads one frame the client sent (masked, as a client must): its opcode and payload.
fn read_client_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0; 2];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0x80, "a client must mask");
    let len = match head[1] & 0x7f {
        126 => {
            let mut len = [0; 2];
            tcp.read_exact(&mut len).unwrap();
            usize::from(u16::from_be_bytes(len))
        }
        127 => panic!("no large frames expected from the client"),
        n => usize::from(n),
    };
    let mut key = [0; 4];
    tcp.read_exact(&mut key).unwrap();
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    (head[0] & 0x0f, payload)
}

/// Answers one opening handshake on a thread, then runs `script` on the connection.
fn peer<T: Send + 'static>(
    script: impl FnOnce(&mut TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let (listener, addr) = listen_blocking();
    let thread = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let mut request = Vec::new();
        let mut byte = [0; 1];
        while !request.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        let key = request
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim())
            })
            .expect("a key");
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key.as_bytes())
        );
        tcp.write_all(response.as_bytes()).unwrap();
        script(&mut tcp)
    });
    (addr, thread)
}

/// Sends the large binary message in frames of `MAX_FRAME` with a Ping after the first, then
/// a text message whose code points are cut between frames, then a Close; returns the frames
/// the client sent back (its Pong and its Close).
fn send_large_then_close(tcp: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let data: Vec<u8> = (0..LARGE).map(pattern).collect();
    let mut out = Vec::new();
    for (i, chunk) in data.chunks(MAX_FRAME).enumerate() {
        let opcode = if i == 0 { 0x2 } else { 0x0 };
        out.extend(frame((i + 1) * MAX_FRAME >= LARGE, opcode, chunk));
        if i == 0 {
            out.extend(frame(true, 0x9, b"hi"));
        }
    }
    // "héllo wörld": each two-byte code point cut in half by a frame boundary.
    out.extend(frame(false, 0x1, b"h\xc3"));
    out.extend(frame(false, 0x0, b"\xa9llo w\xc3"));
    out.extend(frame(true, 0x0, b"\xb6rld"));
    out.extend(frame(true, 0x8, &1000u16.to_be_bytes()));
    tcp.write_all(&out).unwrap();
    // The client answers the Ping and the Close; then the server closes first (7.1.1).
    let mut got = Vec::new();
    loop {
        let (opcode, payload) = read_client_frame(tcp);
        got.push((opcode, payload));
        if opcode == 0x8 {
            return got;
        }
    }
}

/// Sends text that stops being UTF-8 in its second frame; returns the client's Close frame.
fn send_invalid_text(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut out = frame(false, 0x1, b"ok\xc3");
    // 0x28 cannot continue the two-byte sequence begun by 0xc3.
    out.extend(frame(true, 0x0, b"\x28"));
    tcp.write_all(&out).unwrap();
    read_client_frame(tcp)
}

/// What a client read, item by item.
#[derive(Default)]
struct Seen {
    binary: Vec<u8>,
    binary_frames: usize,
    text: Vec<u8>,
    text_frames: usize,
    largest_frame: usize,
    ping_after_frames: Option<usize>,
    close: Option<CloseCode>,
}

impl Seen {
    fn take(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Frame(frame) => {
                self.largest_frame = self.largest_frame.max(frame.payload.len());
                let (bytes, count) = match frame.kind {
                    DataKind::Binary => (&mut self.binary, &mut self.binary_frames),
                    DataKind::Text => (&mut self.text, &mut self.text_frames),
                };
                assert_eq!(frame.first, *count == 0, "first marks the first frame");
                bytes.extend_from_slice(&frame.payload);
                *count += 1;
                let whole = match frame.kind {
                    DataKind::Binary => LARGE,
                    DataKind::Text => "héllo wörld".len(),
                };
                assert_eq!(frame.fin, bytes.len() == whole, "fin marks the last frame");
            }
            Incoming::Message(Message::Ping(data)) => {
                assert_eq!(&data[..], b"hi");
                self.ping_after_frames = Some(self.binary_frames);
            }
            Incoming::Message(Message::Close(frame)) => {
                self.close = frame.map(|f| f.code);
            }
            Incoming::Message(other) => panic!("unexpected {other:?}"),
            _ => panic!("unexpected item"),
        }
    }

    fn check(&self) {
        assert_eq!(self.binary.len(), LARGE);
        assert!(
            self.binary
                .iter()
                .enumerate()
                .all(|(i, b)| *b == pattern(i)),
            "the content arrived in order"
        );
        assert_eq!(self.binary_frames, LARGE / MAX_FRAME);
        assert!(self.largest_frame <= MAX_FRAME);
        assert_eq!(
            self.ping_after_frames,
            Some(1),
            "the Ping came between frames"
        );
        assert_eq!(String::from_utf8(self.text.clone()).unwrap(), "héllo wörld");
        assert_eq!(self.text_frames, 3);
        assert_eq!(self.close, Some(CloseCode::NORMAL));
    }
}

/// The client's answers: a Pong with the Ping's data, then a Close echoing 1000.
fn check_answers(answers: &[(u8, Vec<u8>)]) {
    assert_eq!(
        answers,
        [(0xa, b"hi".to_vec()), (0x8, 1000u16.to_be_bytes().to_vec())]
    );
}

// ---- The tokio API ----

#[tokio::test]
async fn a_message_larger_than_the_limit_arrives_frame_by_frame() {
    bounded(async {
        let (addr, peer) = peer(send_large_then_close);
        let mut ws = streaming_client(addr).await;
        let mut seen = Seen::default();
        while let Some(item) = ws.next_frame().await {
            seen.take(item.unwrap());
        }
        seen.check();
        assert!(ws.close_status().unwrap().is_clean());
        check_answers(&peer.join().unwrap());
    })
    .await;
}

#[tokio::test]
async fn the_split_reader_streams_too() {
    bounded(async {
        let (addr, peer) = peer(send_large_then_close);
        let ws = streaming_client(addr).await;
        let (mut reader, _writer) = ws.split();
        let mut seen = Seen::default();
        while let Some(item) = reader.next_frame().await {
            seen.take(item.unwrap());
        }
        seen.check();
        check_answers(&peer.join().unwrap());
    })
    .await;
}

#[tokio::test]
async fn reading_whole_messages_in_streaming_mode_is_a_misuse_that_loses_no_frame() {
    bounded(async {
        let (addr, peer) = peer(send_large_then_close);
        let mut ws = streaming_client(addr).await;
        let e = ws.next().await.unwrap().unwrap_err();
        assert!(e.is_misuse(), "{e:?}");
        assert!(matches!(e.kind(), Kind::StreamingFrame), "{e:?}");
        // The frame that `next` came upon is the next one read.
        let mut seen = Seen::default();
        while let Some(item) = ws.next_frame().await {
            seen.take(item.unwrap());
        }
        seen.check();
        check_answers(&peer.join().unwrap());
    })
    .await;
}

#[tokio::test]
async fn invalid_text_across_frames_fails_with_1007() {
    bounded(async {
        let (addr, peer) = peer(send_invalid_text);
        let mut ws = streaming_client(addr).await;
        // The first frame is a valid beginning; it is handed out.
        let Some(Ok(Incoming::Frame(first))) = ws.next_frame().await else {
            panic!("the first frame")
        };
        assert_eq!(&first.payload[..], b"ok\xc3");
        let e = ws.next_frame().await.unwrap().unwrap_err();
        assert!(e.is_protocol(), "{e:?}");
        assert_eq!(e.close_code(), Some(CloseCode::INVALID_PAYLOAD));
        assert!(ws.next_frame().await.is_none());
        let (opcode, payload) = peer.join().unwrap();
        assert_eq!(opcode, 0x8);
        assert_eq!(payload[..2], 1007u16.to_be_bytes());
    })
    .await;
}

#[tokio::test]
async fn without_streaming_next_frame_yields_whole_messages() {
    bounded(async {
        let (addr, peer) = peer(|tcp| {
            let mut out = frame(false, 0x1, b"wh");
            out.extend(frame(true, 0x0, b"ole"));
            out.extend(frame(true, 0x8, &1000u16.to_be_bytes()));
            tcp.write_all(&out).unwrap();
            read_client_frame(tcp)
        });
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
            .connect()
            .await
            .unwrap();
        assert_eq!(
            ws.next_frame().await.unwrap().unwrap(),
            Incoming::Message(Message::text("whole"))
        );
        assert!(matches!(
            ws.next_frame().await.unwrap().unwrap(),
            Incoming::Message(Message::Close(_))
        ));
        assert!(ws.next_frame().await.is_none());
        assert_eq!(peer.join().unwrap().0, 0x8);
    })
    .await;
}

// ---- The blocking API ----

#[cfg(feature = "blocking")]
#[test]
fn blocking_a_message_larger_than_the_limit_arrives_frame_by_frame() {
    let (addr, peer) = peer(send_large_then_close);
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
        .config(streaming_config())
        .connect_blocking()
        .unwrap();
    ws.get_ref().tcp().set_read_timeout(Some(LIMIT)).unwrap();
    // A read of whole messages is refused, and loses nothing.
    let e = ws.read().unwrap().unwrap_err();
    assert!(matches!(e.kind(), Kind::StreamingFrame), "{e:?}");
    let mut seen = Seen::default();
    while let Some(item) = ws.read_frame() {
        seen.take(item.unwrap());
    }
    seen.check();
    check_answers(&peer.join().unwrap());
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_invalid_text_across_frames_fails_with_1007() {
    let (addr, peer) = peer(send_invalid_text);
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/"))
        .config(streaming_config())
        .connect_blocking()
        .unwrap();
    ws.get_ref().tcp().set_read_timeout(Some(LIMIT)).unwrap();
    let Some(Ok(Incoming::Frame(first))) = ws.read_frame() else {
        panic!("the first frame")
    };
    assert_eq!(&first.payload[..], b"ok\xc3");
    let e = ws.read_frame().unwrap().unwrap_err();
    assert_eq!(e.close_code(), Some(CloseCode::INVALID_PAYLOAD), "{e:?}");
    assert!(ws.read_frame().is_none());
    let (opcode, payload) = peer.join().unwrap();
    assert_eq!(opcode, 0x8);
    assert_eq!(payload[..2], 1007u16.to_be_bytes());
}
