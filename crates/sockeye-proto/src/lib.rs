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
//! use sockeye_proto::{Config, Connection, Event, Message, Progress, Role};
//!
//! let now = Instant::now();
//! let mut server = Connection::new(Role::Server, Config::default(), now);
//!
//! // A masked text frame "Hello" from a client (RFC 6455 section 5.7).
//! let mut inbuf = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
//! loop {
//!     let progress = server.handle_bytes(&mut inbuf, now);
//!     while let Some(event) = server.poll_event() {
//!         if let Event::Message(Message::Text(text)) = event {
//!             server.send_text(text).unwrap(); // echo; Err only for API misuse
//!         }
//!     }
//!     // Paused: it stopped after a message with more input in `inbuf`; call it again.
//!     if progress == Progress::NeedBytes {
//!         break;
//!     }
//! }
//! assert!(inbuf.is_empty());
//! let mut wire = Vec::new();
//! while let Some(chunk) = server.poll_transmit() {
//!     wire.extend_from_slice(&chunk); // a real driver writes these, vectored
//! }
//! assert_eq!(wire, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
//! assert!(!server.should_close_transport()); // once written: close the transport if true
//! if let Some(deadline) = server.poll_timeout() {
//!     // arm one timer; call server.handle_timeout(now) when it fires
//! #   let _ = deadline;
//! }
//! ```
//!
//! The order after any input (`handle_bytes`, `handle_eof`, `handle_timeout`): drain
//! [`Connection::poll_event`], answering events; call `handle_bytes` again while it returns
//! [`Progress::Paused`]; drain [`Connection::poll_transmit`] and write it; close the transport
//! when [`Connection::should_close_transport`] says so; re-arm the timer from
//! [`Connection::poll_timeout`]. After a command (`send_*`, `close`), the last three. The
//! [`Connection`] docs give the details.
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

// docs.rs (`--cfg docsrs`, on nightly): each item marked with the Cargo features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
// Everything here may read what a peer sent: no indexing, unwrapping, panicking or overflowing
// arithmetic outside the tests, for the whole crate (an exception is allowed where it is
// written, with its reason).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

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
pub use crate::connection::{Connection, Progress};
pub use crate::error::{ApiMisuse, ConfigError, ConnectionError, ExtensionError, ProtocolError};
pub use crate::event::{Closed, DataFrame, DataKind, Event, Initiator, Message};
pub use crate::prepared::{PreparedMessage, SharedEncoding};
pub use crate::role::Role;
pub use crate::utf8::Utf8Bytes;
