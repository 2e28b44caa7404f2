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
use sockeye_proto::handshake::{RequestParser, ServerHandshake};

use self::socket::read_into;
pub use self::socket::{Stream, WebSocket};
use crate::client::ClientBuilder;
use crate::driver::now;
use crate::error::{Error, eof_in_handshake};
use crate::server::{ServerBuilder, refused};

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

/// [`ServerBuilder::accept_blocking`]: reads the request, lets `handshake` decide, writes its
/// answer.
pub(crate) fn accept_with<S: Read + Write>(
    handshake: &ServerHandshake,
    mut stream: S,
) -> Result<WebSocket<S>, Error> {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::with_capacity(1024);
    let outcome = loop {
        if read_into(&mut stream, &mut buf)? == 0 {
            return Err(eof_in_handshake());
        }
        if let Some(outcome) = handshake.handle_bytes(&mut parser, &mut buf, now()) {
            break outcome;
        }
    };
    let mut out = Vec::with_capacity(256);
    match outcome {
        Ok(accepted) => {
            accepted.encode(&mut out);
            stream.write_all(&out)?;
            stream.flush()?;
            Ok(WebSocket::new(
                stream,
                accepted.connection,
                buf,
                accepted.protocol,
            ))
        }
        Err(refusal) => {
            refusal.encode(&mut out);
            let _ = stream.write_all(&out).and_then(|()| stream.flush());
            Err(refused(refusal))
        }
    }
}
