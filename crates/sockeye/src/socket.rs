//! [`WebSocket`]: a `Stream` of received messages and a `Sink` of messages to send.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_core::Stream;
use futures_sink::Sink;
use sockeye_proto::{
    CloseCode, CloseFrame, Closed, Config, Connection, Message, PreparedMessage, Role,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::WebSocketConfig;
use crate::driver::{Driver, Incoming, now};
use crate::error::Error;
use crate::split::{WsReader, WsWriter, split};

/// A WebSocket connection over a stream `S` (TCP, TLS, a Unix socket, an in-memory pipe).
///
/// Receive with [`next`](Self::next) (or as a [`Stream`]); send with [`send`](Self::send) (or as
/// a [`Sink`]). Pings are answered, a peer's Close is answered, and keepalive pings are sent
/// (when configured) while you poll either side. A clean close by either side ends the stream
/// with `None`; anything else ends it with one `Err` first.
///
/// Received messages are [`Message::Text`] (valid UTF-8), [`Message::Binary`], and, for
/// information, [`Message::Ping`], [`Message::Pong`] and the peer's [`Message::Close`].
///
/// With [`Config`]'s `streaming` on, text and binary messages are not assembled: read with
/// [`next_frame`](Self::next_frame), which yields their frames as they arrive ([`Incoming`]).
pub struct WebSocket<S> {
    driver: Driver<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream on which the opening handshake is already done.
    ///
    /// `read_buf` holds bytes already read past the handshake (the first frames), if any.
    pub fn from_raw(stream: S, role: Role, config: &WebSocketConfig, read_buf: BytesMut) -> Self {
        Self::from_connection(
            stream,
            Connection::new(role, config.proto.clone(), now()),
            config,
            read_buf,
            None,
        )
    }

    pub(crate) fn from_connection(
        stream: S,
        conn: Connection,
        config: &WebSocketConfig,
        read_buf: BytesMut,
        protocol: Option<String>,
    ) -> Self {
        let mut driver = Driver::new(stream, conn, config, read_buf, protocol);
        driver.feed_core_now();
        Self { driver }
    }

    /// The next message; `None` after a clean close.
    ///
    /// Cancel-safe: dropping the future before it completes loses no message.
    ///
    /// In streaming mode a frame of a text or binary message is not a message: it is an
    /// [`Error::is_misuse`] ([`Kind::StreamingFrame`](crate::Kind::StreamingFrame)), and
    /// [`next_frame`](Self::next_frame) hands that frame out next.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.driver.poll_next_message(cx)).await
    }

    /// The next message or, in streaming mode, the next frame of a text or binary message as
    /// it arrives; `None` after a clean close. See [`Incoming`]. Without streaming mode it
    /// yields what [`next`](Self::next) does, as [`Incoming::Message`].
    ///
    /// Cancel-safe, as [`next`](Self::next) is.
    pub async fn next_frame(&mut self) -> Option<Result<Incoming, Error>> {
        poll_fn(|cx| self.driver.poll_next_incoming(cx)).await
    }

    /// Sends a message.
    ///
    /// The message is written to the transport before this returns, with one exception that
    /// batches the answers to a burst: while more received messages are already waiting to be
    /// read (they arrived in the same read), the write is left to the next [`next`](Self::next),
    /// which writes before it waits for input, so a loop that answers each message sends one
    /// write per burst instead of one per message. Call [`flush`](Self::flush) to write at once.
    ///
    /// Waits while the unsent backlog is over the high-water mark. Cancelling it before the
    /// message was queued drops the message; after, the message is sent anyway.
    ///
    /// # Errors
    /// [`Error::is_misuse`] for a message the protocol does not allow (a Ping over 125 bytes, a
    /// bad close code), an error for a connection that is closed or whose transport failed.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        // `feed` and the flush as one future: one state machine per message rather than two
        // nested, and the message held once.
        let mut message = Some(message.into());
        poll_fn(|cx| {
            if message.is_some() {
                std::task::ready!(self.driver.poll_ready(cx))?;
                if let Some(message) = message.take() {
                    self.driver.start_send(message)?;
                }
            }
            self.driver.poll_flush_deferred(cx)
        })
        .await
    }

    /// Queues a message without flushing, waiting only while the backlog is over the high-water
    /// mark. Use it with [`flush`](Self::flush) to send many messages in one write. Cancel-safe
    /// as [`send`](Self::send) is.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_ready(cx)).await?;
        self.driver.start_send(message.into())
    }

    /// Sends a message framed once for many connections, as [`send`](Self::send) does: the
    /// prepared frame's bytes are written as they are (see [`PreparedMessage`]).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        self.feed_prepared(message).await?;
        poll_fn(|cx| self.driver.poll_flush_deferred(cx)).await
    }

    /// Queues a prepared message without flushing, as [`feed`](Self::feed) does.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_ready(cx)).await?;
        self.driver.start_send_prepared(message)
    }

    /// Writes everything queued to the transport. Cancel-safe: what was not written stays queued.
    ///
    /// # Errors
    /// When the transport fails.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_flush(cx)).await
    }

    /// Closes the connection: sends what was queued, then a Close frame with `code` and
    /// `reason`, waits (up to the close timeout) for the peer's Close, and shuts the transport
    /// down; a server closes TCP first, a client waits for it (RFC 6455 section 7.1.1).
    /// Messages that arrive meanwhile are dropped. If the peer closed first, this just finishes.
    /// Cancel-safe: once it has run, the Close frame stays queued, and polling [`next`](Self::next)
    /// finishes the handshake.
    ///
    /// # Errors
    /// [`Error::is_misuse`] for a code that may not be sent or a reason over 123 bytes; an
    /// error when the close handshake did not finish cleanly (timeout, transport failure).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame::new(code, reason)?;
        self.driver.start_close(Some(frame))?;
        poll_fn(|cx| self.driver.poll_closed(cx, true)).await
    }

    /// Splits into a reader and a cloneable writer that can move to other tasks.
    ///
    /// The reader must keep being polled for pongs, close replies and the close handshake to
    /// happen; the writers only send.
    pub fn split(self) -> (WsReader<S>, WsWriter<S>) {
        split(self.driver)
    }

    /// How the connection ended, once it has: who closed, both sides' codes and reasons, and
    /// the error for an ending that was not a clean close handshake.
    pub fn close_status(&self) -> Option<&Closed> {
        self.driver.closed()
    }

    /// The subprotocol the handshake agreed on.
    pub fn protocol(&self) -> Option<&str> {
        self.driver.protocol()
    }

    /// The negotiated extension, by name.
    pub fn extension(&self) -> Option<&str> {
        self.driver.connection().extension_name()
    }

    /// The protocol settings in force.
    pub fn config(&self) -> &Config {
        self.driver.connection().config()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.driver.io()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.driver.poll_next_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.driver.poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.driver.start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.driver.poll_flush(cx)
    }

    /// Closes with 1000 (normal) if no Close was sent yet, and drives the close handshake to its
    /// end, dropping messages that arrive meanwhile.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.driver
            .start_close(Some(CloseFrame::new(CloseCode::NORMAL, "")?))?;
        self.driver.poll_closed(cx, true)
    }
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket").finish_non_exhaustive()
    }
}
