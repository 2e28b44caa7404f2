//! `sockeye-proto`: the WebSocket protocol (RFC 6455) without I/O.
//!
//! No sockets, no async runtime, no clock: bytes and the current time go in, events and bytes
//! come out. The same core drives the tokio client and server of the `sockeye` crate, its blocking
//! API, and can drive any other runtime.
//!
//! # The contract
//! A [`Connection`] exists once the opening handshake is done (see [`handshake`]). Feed it what
//! the transport reads, take out what it wants written, and deliver its events:
//!
//! ```
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use sockeye_proto::{Config, Connection, Event, Message, Role};
//!
//! let now = Instant::now();
//! let mut server = Connection::new(Role::Server, Config::default(), now);
//!
//! // A masked text frame "Hello" from a client (RFC 6455 section 5.7).
//! let mut inbuf = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
//! let more = server.handle_bytes(&mut inbuf, now); // true: take events, then call again
//! assert!(!more && inbuf.is_empty());
//!
//! while let Some(event) = server.poll_event() {
//!     if let Event::Message(Message::Text(text)) = event {
//!         server.send_text(text).unwrap(); // echo; Err only for API misuse
//!     }
//! }
//! let mut wire = Vec::new();
//! while let Some(chunk) = server.poll_transmit() {
//!     wire.extend_from_slice(&chunk); // a real driver writes these, vectored
//! }
//! assert_eq!(wire, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
//! if let Some(deadline) = server.poll_timeout() {
//!     // arm one timer; call server.handle_timeout(now) when it fires
//! #   let _ = deadline;
//! }
//! assert!(!server.should_close_transport());
//! ```
//!
//! Call order after any input (`handle_bytes`, `handle_eof`, `handle_timeout`) or command
//! (`send_*`, `close`): drain [`Connection::poll_transmit`], drain [`Connection::poll_event`],
//! re-arm the timer from [`Connection::poll_timeout`], and close the transport when
//! [`Connection::should_close_transport`] says so.
//!
//! # Errors
//! A peer that breaks the protocol does not produce an `Err` anywhere: the connection fails
//! itself with the right close code and reports [`Event::Closed`] carrying a
//! [`ConnectionError`]. `Err` values are [`ApiMisuse`] (a bug in the caller), [`ConfigError`],
//! and the handshake's [`HandshakeError`](handshake::HandshakeError), whose
//! [`status`](handshake::HandshakeError::status) is the HTTP answer to send.
//!
//! # Layout
//! [`frame`] holds the wire format and every header rule, [`mask`] the masking loop and key
//! sources, [`utf8`] the streaming validator, [`close`] close codes and frames, [`extension`]
//! the extension seam, [`handshake`] the opening handshake for both roles.

#![forbid(unsafe_code)]

pub mod close;
mod config;
mod connection;
mod display;
mod error;
mod event;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
mod prepared;
mod role;
pub mod utf8;

#[cfg(fuzzing)]
pub mod fuzzing;

pub use crate::close::{CloseCode, CloseFrame};
pub use crate::config::{Config, ConfigBuilder};
pub use crate::connection::Connection;
pub use crate::error::{ApiMisuse, ConfigError, ConnectionError, ExtensionError, ProtocolError};
pub use crate::event::{Closed, DataFrame, DataKind, Event, Initiator, Message};
pub use crate::prepared::{PreparedMessage, SharedEncoding};
pub use crate::role::Role;
pub use crate::utf8::Utf8Bytes;
