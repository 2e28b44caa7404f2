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
//! timeout. Set read and write timeouts on it
//! ([`TcpStream::set_read_timeout`](std::net::TcpStream::set_read_timeout)): a read that times
//! out returns the I/O error and leaves the connection usable, and lets the close timeout end a
//! close handshake the peer does not finish. The client of [`connect`] holds TCP, TLS
//! and the handshake to the configured handshake timeout (the name lookup is the system
//! resolver's), and its [`close`](WebSocket::close) to the close timeout. The blocking client
//! does not go through proxies. A write that would block is a failure of the transport.
//!
//! In streaming mode ([`Config`](crate::Config)'s `streaming`), read with
//! [`read_frame`](WebSocket::read_frame): text and binary messages come frame by frame as
//! [`Incoming::Frame`](crate::Incoming::Frame), as in the async API.

use std::io::{Read, Write};

use bytes::BytesMut;
use http::Response;
use sockeye_proto::handshake::RequestParser;

use self::socket::read_into;
pub use self::socket::{Stream, WebSocket};
use crate::client::ClientBuilder;
use crate::error::{Error, eof_in_handshake};
use crate::server::{ServerBuilder, server_connection};

pub(crate) mod socket;

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
