//! The blocking [`WebSocket`] and the client's [`Stream`]: the layer under the blocking client
//! and server.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use sockeye_proto::{CloseCode, CloseFrame, Connection, DataFrame, Event, Message};

use crate::driver::{Incoming, closed_error, now, queue};
use crate::error::{Error, Kind};

/// What one read takes at most: the size of the reusable read scratch.
const READ_CHUNK: usize = 32 << 10;
/// The most the read buffer grows by at once (room for a large frame as it arrives).
const MAX_RESERVE: usize = 1 << 20;

/// The stream of a blocking client: TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    #[cfg(feature = "rustls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP connection, to set timeouts on, say.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => tls.flush(),
        }
    }
}

/// Sets a stream's read timeout, where the stream has one.
type SetReadTimeout<S> = fn(&S, Option<Duration>) -> io::Result<()>;

/// A WebSocket over a blocking stream.
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    buf: BytesMut,
    /// Reads land here first (zeroed once), then are appended to `buf`.
    scratch: Box<[u8]>,
    set_read_timeout: Option<SetReadTimeout<S>>,
    /// `buf` may hold whole frames the core has not looked at yet.
    pending: bool,
    /// The stream's read side ended (or failed).
    read_done: bool,
    /// The final item was handed out.
    finished: bool,
    io_error: Option<io::Error>,
    protocol: Option<String>,
    /// A streamed frame that a read of whole messages came upon, for the next `read_frame`.
    stashed: Option<DataFrame>,
}

impl<S: Read + Write> WebSocket<S> {
    /// A server's connection, over a stream of the caller's.
    pub(crate) fn new(
        stream: S,
        conn: Connection,
        buf: BytesMut,
        protocol: Option<String>,
    ) -> Self {
        let mut ws = Self {
            stream,
            conn,
            buf,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            set_read_timeout: None,
            pending: false,
            read_done: false,
            finished: false,
            io_error: None,
            protocol,
            stashed: None,
        };
        // The bytes that came with the handshake.
        ws.pending = ws.conn.handle_bytes(&mut ws.buf, now()).is_paused();
        ws
    }

    /// The next message, blocking until one arrives; `None` after a clean close. A read that
    /// times out (a timeout set on the stream) is returned as its I/O error, and the
    /// connection stays usable.
    ///
    /// In streaming mode a frame of a text or binary message is not a message: it is an
    /// [`Error::is_misuse`] ([`Kind::StreamingFrame`]), and [`read_frame`](Self::read_frame)
    /// hands that frame out next.
    pub fn read(&mut self) -> Option<Result<Message, Error>> {
        match self.read_frame()? {
            Ok(Incoming::Message(message)) => Some(Ok(message)),
            Ok(Incoming::Frame(frame)) => {
                self.stashed = Some(frame);
                Some(Err(Error::new(Kind::StreamingFrame)))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The next message or, in streaming mode ([`Config`](crate::Config)'s `streaming`), the
    /// next frame of a text or binary message as it arrives, blocking until one does; `None`
    /// after a clean close. See [`Incoming`]. Without streaming mode it yields what
    /// [`read`](Self::read) does, as [`Incoming::Message`].
    pub fn read_frame(&mut self) -> Option<Result<Incoming, Error>> {
        if let Some(frame) = self.stashed.take() {
            return Some(Ok(Incoming::Frame(frame)));
        }
        loop {
            while let Some(event) = self.conn.poll_event() {
                let incoming = match event {
                    Event::Message(message) => Incoming::Message(message),
                    Event::Frame(frame) => Incoming::Frame(frame),
                    Event::Closed(_) => continue,
                };
                // Answer what the core owes (a Pong, the close reply) before handing out.
                if let Err(e) = self.write_out() {
                    self.transport_failed(e);
                }
                return Some(Ok(incoming));
            }
            if self.finished {
                return None;
            }
            if self.pending {
                self.pending = self.conn.handle_bytes(&mut self.buf, now()).is_paused();
                continue;
            }
            if let Err(e) = self.write_out() {
                self.transport_failed(e);
                continue;
            }
            if self.conn.is_closed() && self.conn.should_close_transport() {
                self.finished = true;
                return self.final_error().map(Err);
            }
            if self.read_done {
                // The core waits for a transport that will not say more.
                self.finished = true;
                return self.final_error().map(Err);
            }
            // Room for the frame in progress (bounded: a large frame commits memory as it
            // arrives), then one read through the scratch.
            self.buf
                .reserve(self.conn.read_hint(&self.buf).min(MAX_RESERVE));
            match self.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.read_done = true;
                    self.conn.handle_eof();
                }
                Ok(n) => {
                    self.buf
                        .extend_from_slice(&self.scratch[..n.min(READ_CHUNK)]);
                    self.pending = self.conn.handle_bytes(&mut self.buf, now()).is_paused();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // The clock's turn: the close timeout may have ended the handshake.
                    self.conn.handle_timeout(now());
                    if !self.conn.is_closed() || !self.conn.should_close_transport() {
                        return Some(Err(e.into()));
                    }
                }
                Err(e) => self.transport_failed(e),
            }
        }
    }

    /// Sends a message and writes it out.
    ///
    /// # Errors
    /// As [`crate::WebSocket::send`].
    pub fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed(message)?;
        self.flush()
    }

    /// Queues a message without writing it; [`flush`](Self::flush) writes what was queued.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        queue(&mut self.conn, message.into())
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// When the transport fails: the connection is closed then, and the next
    /// [`read`](Self::read) reports the transport's error, as in the async API.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.write_out().map_err(|e| {
            self.transport_failed(e);
            Error::new(Kind::AlreadyClosed)
        })
    }

    /// Sends a Close frame with `code` and `reason`, then reads (dropping messages) until the
    /// close handshake ends: the peer's Close, and for a client the server's end of the
    /// transport. Drop the WebSocket afterwards to close the stream.
    ///
    /// # Errors
    /// A code that may not be sent or a reason over 123 bytes; a transport failure.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.conn.is_open() {
            self.feed(Message::Close(Some(CloseFrame::new(code, reason)?)))?;
        }
        self.flush()?;
        // Where the stream has a read timeout to set, the close timeout bounds the wait.
        if let Some(set) = self.set_read_timeout {
            set(&self.stream, Some(self.conn.config().close_timeout()))?;
        }
        let mut result = Ok(());
        while let Some(item) = self.read_frame() {
            if let Err(e) = item {
                result = Err(e);
                break;
            }
        }
        if let Some(set) = self.set_read_timeout {
            let _ = set(&self.stream, None);
        }
        result
    }

    /// The subprotocol the handshake agreed on.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The negotiated extension's name (`permessage-deflate`), if any.
    pub fn extension(&self) -> Option<&str> {
        self.conn.extension_name()
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, to set timeouts on, say (reading or writing through it would break the
    /// framing).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    fn write_out(&mut self) -> io::Result<()> {
        let mut wrote = false;
        while let Some(chunk) = self.conn.poll_transmit() {
            self.stream.write_all(&chunk)?;
            wrote = true;
        }
        if wrote {
            self.stream.flush()?;
        }
        Ok(())
    }

    fn transport_failed(&mut self, e: io::Error) {
        if self.io_error.is_none() && !self.conn.is_closed() {
            self.io_error = Some(e);
        }
        self.read_done = true;
        self.conn.handle_eof();
        while self.conn.poll_transmit().is_some() {}
    }

    fn final_error(&mut self) -> Option<Error> {
        if let Some(e) = self.io_error.take() {
            return Some(Error::from(e));
        }
        closed_error(self.conn.close_status()?)
    }
}

impl WebSocket<Stream> {
    /// A client's connection: its close waits for the server within the close timeout.
    pub(crate) fn client(
        stream: Stream,
        conn: Connection,
        buf: BytesMut,
        protocol: Option<String>,
    ) -> Self {
        let mut ws = Self::new(stream, conn, buf, protocol);
        ws.set_read_timeout = Some(|stream, timeout| stream.tcp().set_read_timeout(timeout));
        ws
    }
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Reads once during a handshake into the end of `buf` (a few KiB at a time).
pub(crate) fn read_into(stream: &mut impl Read, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0; 4096];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n.min(chunk.len())]);
    Ok(n)
}
