//! A blocking client and server on the same protocol core, for programs without an async
//! runtime: std's `Read + Write` streams, one call at a time.
//!
//! ```no_run
//! # fn run() -> Result<(), sockeye::Error> {
//! use sockeye::Message;
//!
//! let (mut ws, _response) = sockeye::blocking::connect("ws://127.0.0.1:9001/chat")?;
//! ws.send(Message::text("hello"))?;
//! while let Some(message) = ws.read() {
//!     println!("{:?}", message?);
//! }
//! # Ok(()) }
//! ```
//!
//! What is automatic is as in the async API (Pong replies, the close reply, masking,
//! permessage-deflate), done while reading or sending. What needs a clock runs only when a
//! call returns: there are no keepalive pings, and on a stream of the caller's no handshake
//! timeout. Set read and write timeouts on it ([`TcpStream::set_read_timeout`]): a read that
//! times out returns the I/O error and leaves the connection usable, and lets the close timeout
//! end a close handshake the peer does not finish. The client of [`connect`] holds TCP, TLS
//! and the handshake to the configured handshake timeout (the name lookup is the system
//! resolver's), and its [`close`](WebSocket::close) to the close timeout. The blocking client
//! does not go through proxies. A write that would block is a failure of the transport.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::Response;
use sockeye_proto::handshake::{RequestParser, WsUri};
use sockeye_proto::{CloseCode, CloseFrame, Connection, Event, Message};

use crate::client::{ClientBuilder, connect_failed, eof_in_handshake};
use crate::driver::{closed_error, now, queue};
use crate::error::{Error, Kind, Timeout};
use crate::server::{ServerBuilder, server_connection};

/// What one read takes at most: the size of the reusable read scratch.
const READ_CHUNK: usize = 32 << 10;
/// The most the read buffer grows by at once (room for a large frame as it arrives).
const MAX_RESERVE: usize = 1 << 20;

/// Connects to a `ws://` or `wss://` URL with the default settings.
///
/// # Errors
/// As [`crate::connect`].
pub fn connect(url: &str) -> Result<(WebSocket<Stream>, Response<()>), Error> {
    ClientBuilder::new(url).connect_blocking()
}

/// Accepts a WebSocket connection on `stream` with the default settings.
///
/// # Errors
/// As [`crate::accept`].
pub fn accept<S: Read + Write>(stream: S) -> Result<WebSocket<S>, Error> {
    ServerBuilder::new().accept_blocking(stream)
}

/// The stream of a blocking client: TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP connection, to set timeouts on, say.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
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
}

impl<S: Read + Write> WebSocket<S> {
    fn new(stream: S, conn: Connection, buf: BytesMut, protocol: Option<String>) -> Self {
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
        };
        // The bytes that came with the handshake.
        ws.pending = ws.conn.handle_bytes(&mut ws.buf, now()).is_paused();
        ws
    }

    /// The next message, blocking until one arrives; `None` after a clean close. A read that
    /// times out (a timeout set on the stream) is returned as its I/O error, and the
    /// connection stays usable.
    pub fn read(&mut self) -> Option<Result<Message, Error>> {
        loop {
            while let Some(event) = self.conn.poll_event() {
                if let Event::Message(message) = event {
                    // Answer what the core owes (a Pong, the close reply) before handing out.
                    if let Err(e) = self.write_out() {
                        self.transport_failed(e);
                    }
                    return Some(Ok(message));
                }
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
        while let Some(item) = self.read() {
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

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Reads once during a handshake into the end of `buf` (a few KiB at a time).
fn read_into(stream: &mut impl Read, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0; 4096];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n.min(chunk.len())]);
    Ok(n)
}

/// A timeout of the opening, as its stage.
fn stage_timeout(stage: Timeout) -> impl Fn(io::Error) -> Error {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::new(Kind::Timeout(stage)),
        _ => Error::from(e),
    }
}

impl ClientBuilder {
    /// Connects without an async runtime: the blocking [`WebSocket`]. DNS, TCP, TLS and the
    /// handshake share the handshake timeout. Proxies are not supported here.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); a proxy set on the builder is refused.
    pub fn connect_blocking(self) -> Result<(WebSocket<Stream>, Response<()>), Error> {
        if self.proxy_for_blocking()? {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the blocking client does not go through proxies",
            )
            .into());
        }
        let uri: WsUri = self.url().parse()?;
        let config = self.websocket_config();
        let deadline = Instant::now() + config.handshake_timeout;
        let tcp = open_tcp(uri.host(), uri.port(), deadline)?;
        let _ = tcp.set_nodelay(config.nodelay);
        let mut stream = if uri.is_secure() {
            let tls = self
                .tls_config()
                .connect_blocking(uri.host(), tcp, deadline)?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let (mut handshake, request) = self.begin(uri)?;
        let timed_out = stage_timeout(Timeout::Handshake);
        until(stream.tcp(), deadline, Timeout::Handshake)?;
        stream.write_all(&request).map_err(&timed_out)?;
        stream.flush().map_err(&timed_out)?;
        let mut buf = BytesMut::with_capacity(1024);
        let accepted = loop {
            if let Some(accepted) = self.answer(&mut handshake, &mut buf)? {
                break accepted;
            }
            until(stream.tcp(), deadline, Timeout::Handshake)?;
            if read_into(&mut stream, &mut buf).map_err(&timed_out)? == 0 {
                return Err(eof_in_handshake());
            }
        };
        let conn = self.establish(&accepted)?;
        stream.tcp().set_read_timeout(None)?;
        stream.tcp().set_write_timeout(None)?;
        let mut ws = WebSocket::new(stream, conn, buf, accepted.protocol);
        ws.set_read_timeout = Some(|stream, timeout| stream.tcp().set_read_timeout(timeout));
        Ok((ws, accepted.response))
    }
}

/// Sets `tcp`'s timeouts to the time left before `deadline`, or fails with `stage`'s timeout
/// when none is left.
fn until(tcp: &TcpStream, deadline: Instant, stage: Timeout) -> Result<(), Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::new(Kind::Timeout(stage)));
    }
    tcp.set_read_timeout(Some(left))?;
    tcp.set_write_timeout(Some(left))?;
    Ok(())
}

/// Resolves and connects, each address getting a share of the time left.
fn open_tcp(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, Error> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| {
            Error::new(Kind::Dns {
                host: host.to_owned(),
                source,
            })
        })?
        .collect();
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX).max(1);
        if share.is_zero() {
            return Err(Error::new(Kind::Timeout(Timeout::Connect)));
        }
        match TcpStream::connect_timeout(addr, share) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some((*addr, e)),
        }
    }
    Err(match last {
        // A connect that ran out of its share of the deadline is the opening's timeout.
        Some((_, e))
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Error::new(Kind::Timeout(Timeout::Connect))
        }
        last => connect_failed(host, last),
    })
}

impl ServerBuilder {
    /// Accepts a WebSocket connection on a blocking stream, as [`accept`](Self::accept) does
    /// on an async one. There is no handshake timeout here: set one on the stream.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_blocking<S: Read + Write>(&self, mut stream: S) -> Result<WebSocket<S>, Error> {
        let config = self.websocket_config();
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::with_capacity(1024);
        let request = loop {
            if read_into(&mut stream, &mut buf)? == 0 {
                return Err(eof_in_handshake());
            }
            match parser.parse(&mut buf, &config.proto) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(e) => {
                    let mut out = Vec::new();
                    e.write_response(&mut out);
                    let _ = stream.write_all(&out).and_then(|()| stream.flush());
                    return Err(e.into());
                }
            }
        };
        let agreement = match self.agree(&request) {
            Ok(agreement) => agreement,
            Err(reject) => {
                let (out, error) = reject.response()?;
                let _ = stream.write_all(&out).and_then(|()| stream.flush());
                return Err(error);
            }
        };
        stream.write_all(&agreement.response(&request)?)?;
        stream.flush()?;
        let (conn, protocol) = server_connection(config, agreement);
        Ok(WebSocket::new(stream, conn, buf, protocol))
    }
}

impl crate::tls::TlsConfig {
    /// TLS over a blocking TCP connection, the handshake done before returning.
    pub(crate) fn connect_blocking(
        &self,
        host: &str,
        mut tcp: TcpStream,
        deadline: Instant,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, Error> {
        let config: Arc<rustls::ClientConfig> = self
            .client_config()
            .map_err(|e| Error::new(Kind::TlsSetup(e)))?;
        let name = Self::server_name(host)?;
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::from(io::Error::other(e)))?;
        let timed_out = stage_timeout(Timeout::Tls);
        while conn.is_handshaking() {
            until(&tcp, deadline, Timeout::Tls)?;
            conn.complete_io(&mut tcp).map_err(&timed_out)?;
        }
        Self::check_alpn(conn.alpn_protocol())?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}
