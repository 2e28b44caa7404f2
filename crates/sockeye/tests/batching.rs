//! The answers to a burst of messages that arrived in one read leave in one write, with the
//! plain `next()`/`send()` loop: counted on an in-memory stream that records its writes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use sockeye::proto::frame::{FrameHead, MAX_HEAD_LEN, OpCode};
use sockeye::proto::mask::apply_mask;
use sockeye::{Message, Role, WebSocket, WebSocketConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// A stream that counts the write calls that wrote something.
struct Counting {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A server over a [`Counting`] stream that has already read `read` (as if it came in the same
/// read as the skipped handshake); the peer's end of the stream, and the count of writes.
fn counting_server(read: &[u8]) -> (WebSocket<Counting>, DuplexStream, Arc<AtomicUsize>) {
    let (ours, peer) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let stream = Counting {
        inner: ours,
        writes: Arc::clone(&writes),
    };
    let ws = WebSocket::from_raw(
        stream,
        Role::Server,
        &WebSocketConfig::default(),
        BytesMut::from(read),
    );
    (ws, peer, writes)
}

fn masked(payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut head = FrameHead::new(true, OpCode::Text, payload.len() as u64);
    head.mask = Some(key);
    let mut bytes = [0; MAX_HEAD_LEN];
    let len = head.encode(&mut bytes);
    let mut out = bytes[..len].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out
}

#[tokio::test]
async fn a_burst_is_answered_in_one_write() {
    // Ten messages in one read, right behind a (skipped) handshake.
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(masked(format!("message {i}").as_bytes()));
    }
    let (mut ws, mut peer, writes) = counting_server(&burst);

    // The plain echo loop; after the tenth answer its next() writes the batch, then waits.
    let echo = tokio::spawn(async move {
        for i in 0..10 {
            let message = ws.next().await.expect("a message").expect("no error");
            assert_eq!(message, Message::text(format!("message {i}")));
            ws.send(message).await.expect("send");
        }
        ws.next().await.map(|m| m.is_ok())
    });

    // Everything arrives, in order (bounded, so a lost write fails instead of hanging).
    let mut got = vec![0u8; 10 * 11];
    tokio::time::timeout(Duration::from_secs(10), peer.read_exact(&mut got))
        .await
        .expect("the answers arrived")
        .expect("read");
    let mut expected = Vec::new();
    for i in 0..10 {
        expected.extend_from_slice(&[0x81, 9]);
        expected.extend_from_slice(format!("message {i}").as_bytes());
    }
    assert_eq!(got, expected);
    assert_eq!(writes.load(Ordering::Relaxed), 1, "ten answers, one write");
    drop(peer);
    let _ = echo.await;
}

#[tokio::test]
async fn a_single_message_is_written_before_send_returns() {
    let (mut ws, mut peer, writes) = counting_server(&[]);
    peer.write_all(&masked(b"one")).await.unwrap();
    let message = ws.next().await.unwrap().unwrap();
    ws.send(message).await.unwrap();
    // No burst was waiting: the answer is already written.
    assert_eq!(writes.load(Ordering::Relaxed), 1);
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"\x81\x03one");
}

#[tokio::test]
async fn flush_writes_a_deferred_answer_at_once() {
    let mut burst = masked(b"a");
    burst.extend(masked(b"b"));
    let (mut ws, mut peer, writes) = counting_server(&burst);
    let message = ws.next().await.unwrap().unwrap();
    ws.send(message).await.unwrap();
    assert_eq!(
        writes.load(Ordering::Relaxed),
        0,
        "deferred: b is waiting to be read"
    );
    ws.flush().await.unwrap();
    assert_eq!(writes.load(Ordering::Relaxed), 1);
    let mut got = [0u8; 3];
    peer.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"\x81\x01a");
}
