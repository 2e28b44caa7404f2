//! Numbered messages, for tests that check a stream of them arrives whole and in order
//! (fan-out, backpressure, draining on shutdown), and clients whose small receive buffer makes
//! them slow.

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::{ClientBuilder, CloseCode, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Binary message `i` of `size` bytes (at least 4): its number first, big-endian.
pub fn numbered(i: u32, size: usize) -> Message {
    let mut payload = vec![0_u8; size];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    Message::binary(payload)
}

/// The number of a message made by [`numbered`].
pub fn number(message: &Message) -> u32 {
    let Message::Binary(payload) = message else {
        panic!("expected a binary message, got {message:?}");
    };
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

/// What [`read_numbered`] does with a text message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texts {
    /// Skips it (presence notices, say).
    Skip,
    /// Fails the test.
    Refuse,
}

/// Reads [`numbered`] messages until the connection ends, each of which must be the next
/// number, pausing `pause` after each (none for zero); how many came, and the close code.
pub fn read_numbered<S>(
    mut ws: WebSocket<S>,
    pause: Duration,
    texts: Texts,
) -> JoinHandle<(u32, Option<CloseCode>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut received = 0_u32;
        let mut code = None;
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Binary(_) => {
                    assert_eq!(number(&message), received, "in order, none missing");
                    received += 1;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                Message::Close(frame) => code = frame.map(|f| f.code),
                Message::Text(_) if texts == Texts::Skip => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (received, code)
    })
}

/// A client of `ws://ADDR{path}`, its socket's receive buffer `rcvbuf` bytes when given (small:
/// the server's writes to it wait).
pub async fn client_with_rcvbuf(
    addr: SocketAddr,
    path: &str,
    rcvbuf: Option<u32>,
) -> WebSocket<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(addr).await.unwrap();
    ClientBuilder::new(format!("ws://{addr}{path}"))
        .connect_on(tcp)
        .await
        .unwrap()
        .0
}
