//! A WebSocket client over HTTP/2 (RFC 8441) for the tests: the `h2` crate opens the stream with
//! an extended CONNECT, and the core's `Connection` is driven by hand over it.

#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

use std::future::poll_fn;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response, StatusCode, header};
use sockeye::DeflateConfig;
use sockeye::proto::extension::header::parse_extensions;
use sockeye::proto::{CloseCode, CloseFrame, Config, Connection, Event, Message, Progress, Role};
use tokio::io::{AsyncRead, AsyncWrite};

/// An HTTP/2 connection over `io`, once the server's SETTINGS are in (the PONG to our PING
/// comes after them), and the task driving it.
pub async fn h2_connect<T>(
    io: T,
) -> (
    SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::handshake(io).await.unwrap();
    let mut ping = connection.ping_pong().unwrap();
    let driver = tokio::spawn(connection);
    ping.ping(h2::Ping::opaque()).await.unwrap();
    assert!(send.is_extended_connect_protocol_enabled());
    (send, driver)
}

/// An extended CONNECT for a WebSocket at `uri` (`https://host:port/path`).
pub fn extended_connect(uri: &str) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(uri)
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    request
}

/// A client WebSocket on an h2 stream: the core's connection driven by hand.
pub struct Client {
    send: SendStream<Bytes>,
    recv: RecvStream,
    conn: Connection,
    buf: BytesMut,
    more: bool,
    eof: bool,
}

impl Client {
    /// Opens the stream; the response's status and headers, and the client if it is 200.
    pub async fn open(
        sender: &SendRequest<Bytes>,
        request: Request<()>,
    ) -> (Response<()>, Option<Self>) {
        let mut sender = sender.clone().ready().await.unwrap();
        let (response, send) = sender.send_request(request, false).unwrap();
        let response = response.await.unwrap();
        let (parts, recv) = response.into_parts();
        let head = Response::from_parts(parts, ());
        if head.status() != StatusCode::OK {
            return (head, None);
        }
        let mut conn = Connection::new(Role::Client, Config::default(), Instant::now());
        let offers = parse_extensions(
            head.headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(|v| v.to_str().unwrap()),
        )
        .unwrap();
        if let Some(answer) = offers.first() {
            let deflate = DeflateConfig::new().accept_response(answer).unwrap();
            conn = conn.with_extension(Box::new(deflate));
        }
        let client = Self {
            send,
            recv,
            conn,
            buf: BytesMut::new(),
            more: false,
            eof: false,
        };
        (head, Some(client))
    }

    /// Opens the stream, which the server must accept (200); the response and the client.
    pub async fn accepted(
        sender: &SendRequest<Bytes>,
        request: Request<()>,
    ) -> (Response<()>, Self) {
        let (head, client) = Self::open(sender, request).await;
        assert_eq!(head.status(), StatusCode::OK);
        (head, client.unwrap())
    }

    /// The core's connection, for what the WebSocket API does not do (fragments).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Resets the stream (`RST_STREAM` `CANCEL`): an abort, not a close.
    pub fn reset(mut self) {
        self.send.send_reset(h2::Reason::CANCEL);
    }

    pub async fn flush(&mut self) -> Result<(), h2::Error> {
        while let Some(mut bytes) = self.conn.poll_transmit() {
            while !bytes.is_empty() {
                self.send.reserve_capacity(bytes.len());
                let granted = poll_fn(|cx| self.send.poll_capacity(cx))
                    .await
                    .expect("stream open")?;
                let chunk = bytes.split_to(granted.min(bytes.len()));
                self.send.send_data(chunk, false)?;
            }
        }
        Ok(())
    }

    pub async fn send(&mut self, message: Message) {
        self.conn.send(message).unwrap();
        self.flush().await.unwrap();
    }

    /// The next event; `None` once the stream ended and nothing is left.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            // Answers (a Pong, the Close in reply) go out before the event is handed over.
            self.flush().await.ok()?;
            if let Some(event) = self.conn.poll_event() {
                return Some(event);
            }
            if self.more {
                self.more =
                    self.conn.handle_bytes(&mut self.buf, Instant::now()) == Progress::Paused;
                continue;
            }
            if self.eof {
                return None;
            }
            match self.recv.data().await {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.buf.extend_from_slice(&data);
                    self.more = true;
                }
                Some(Err(e)) => panic!("the stream failed: {e}"),
                None => {
                    assert!(self.recv.is_end_stream());
                    self.conn.handle_eof();
                    self.eof = true;
                }
            }
        }
    }

    pub async fn message(&mut self) -> Message {
        match self.next().await {
            Some(Event::Message(message)) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The close handshake: Close 1000, the server's Close, then the stream ends both ways
    /// with `END_STREAM` (no reset).
    pub async fn close(mut self) {
        self.conn
            .close(
                Instant::now(),
                Some(CloseFrame::new(CloseCode::NORMAL, "bye").unwrap()),
            )
            .unwrap();
        let closed = loop {
            match self.next().await {
                Some(Event::Closed(closed)) => break closed,
                Some(_) => {}
                None => panic!("the stream ended before the Close"),
            }
        };
        assert_eq!(closed.code(), CloseCode::NORMAL);
        self.end().await;
    }

    /// After the close handshake: ends our side of the stream, then expects the server's side
    /// to end with `END_STREAM` (no reset).
    pub async fn end(mut self) {
        self.send.send_data(Bytes::new(), true).unwrap();
        assert!(self.next().await.is_none());
        assert!(self.recv.is_end_stream());
    }
}
