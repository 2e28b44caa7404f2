//! `sockeye`: a WebSocket (RFC 6455) client and server for tokio.
//!
//! ```no_run
//! # async fn run() -> Result<(), sockeye::Error> {
//! use sockeye::Message;
//!
//! let (mut ws, _response) = sockeye::connect("ws://127.0.0.1:9001/chat").await?;
//! ws.send(Message::text("hello")).await?;
//! while let Some(message) = ws.next().await {
//!     match message? {
//!         Message::Text(text) => println!("{text}"),
//!         Message::Binary(data) => println!("{} bytes", data.len()),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! A [`WebSocket`] is a `Stream` of received messages and a `Sink` of messages to send; it
//! [`split`s](WebSocket::split) into a reader and a cloneable writer. The protocol itself lives
//! in [`sockeye_proto`], which does no I/O; this crate drives it over any
//! `AsyncRead + AsyncWrite` stream.
//!
//! Automatic: Pong replies, the reply to a peer's Close, keepalive Pings (with
//! [`Config`]'s ping interval), backpressure (sending waits above the write-buffer high-water
//! mark, and reading pauses too), and a close that flushes what was sent first.
//!
//! `wss://` runs over rustls: [`TlsConfig`] says what a client trusts (the Mozilla roots by
//! default) and [`TlsAcceptor`] what a server presents. A `wss://` client opens its WebSocket as
//! an HTTP/2 stream (RFC 8441) when the server takes WebSocket streams over HTTP/2, HTTP/1.1 otherwise
//! ([`Http2Policy`]; `sockeye::http2` opens many on one connection). [`Proxy`] reaches servers through HTTP
//! CONNECT or SOCKS5, or as the environment says. On the server, [`OriginPolicy`] refuses pages
//! of other sites (403) and [`ServerBuilder::max_concurrent_handshakes`] bounds handshakes in
//! progress (making room for a newcomer by closing the slowest stalled one). A [`Shutdown`]
//! given to [`ServerBuilder::shutdown`] drains a server gracefully: on its signal every
//! connection writes out what it had queued, closes with 1001 and waits for the peer's Close,
//! up to a grace period, and the [`DrainReport`] counts what was lost. Every failure to
//! connect has its own [`Kind`]: DNS, refused, TLS (with the reason), proxy (with its status),
//! or an HTTP status instead of 101.
//!
//! Without an async runtime, `sockeye::blocking` has a client and server over std's
//! `Read + Write`. In a hyper 1 server (feature `hyper`), `ServerBuilder::upgrade` answers an
//! upgrade request hyper parsed; in axum 0.8 (feature `axum`), `sockeye::axum::WebSocketUpgrade`
//! is the extractor.
//!
//! Messages too large to hold arrive frame by frame in streaming mode
//! ([`Config`]'s `streaming`): read them with [`WebSocket::next_frame`] (or the blocking
//! `read_frame`), which yields [`Incoming::Frame`]s as they arrive.
//!
//! # Cargo features
//!
//! | Feature    | Default | What it adds | Dependencies |
//! |------------|---------|--------------|--------------|
//! | `rustls`   | yes | `wss://`, `TlsConfig`, `TlsAcceptor`, `ServerBuilder::tls`, [`Kind`]`::Tls` | rustls, tokio-rustls, webpki-roots, rustls-native-certs |
//! | `proxy`    | yes | `Proxy` (HTTP CONNECT, SOCKS5, the proxy environment variables), [`Kind`]`::Proxy` | tokio-socks, base64 |
//! | `blocking` | yes | `sockeye::blocking`: client and server over std's `Read + Write` | none |
//! | `hyper`    | no  | `sockeye::hyper`: upgrades in a hyper 1 server, HTTP/1.1 and HTTP/2 (RFC 8441) | hyper, hyper-util |
//! | `http2`    | yes | the client over HTTP/2 (RFC 8441): `wss://` prefers it ([`Http2Policy`]), `ClientBuilder::connect_http2`, `sockeye::http2` (implies `rustls`) | h2 |
//! | `axum`     | no  | `sockeye::axum::WebSocketUpgrade`, the axum 0.8 extractor (implies `hyper`) | axum-core |
//!
//! Without default features this is the tokio client and server over plain TCP (`ws://`;
//! a `wss://` URL is refused with an `Unsupported` I/O error).
//!
//! The modules are layered, each using only those below it: `net` (resolving and connecting,
//! async and blocking, one classification of failures: [`ConnectError`]) under `proxy` and
//! `tls` (each with its own errors), under `error` ([`Error`], with `From` each of them),
//! under the connection (`driver`, `socket`, `split`) and the front doors (`client`,
//! `server`, `blocking`, `hyper`, `axum`).

// docs.rs (`--cfg docsrs`, on nightly): each item marked with the Cargo features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The docs link the items of every feature; built with fewer, those links have no target.
#![cfg_attr(
    not(all(
        feature = "rustls",
        feature = "proxy",
        feature = "blocking",
        feature = "http2"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

mod admission;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "blocking")]
pub mod blocking;
mod client;
mod config;
mod driver;
mod error;
#[cfg(feature = "http2")]
pub mod http2;
#[cfg(feature = "hyper")]
pub mod hyper;
mod net;
#[cfg(feature = "proxy")]
mod proxy;
mod server;
mod shutdown;
mod socket;
mod split;
mod stream;
#[cfg(feature = "rustls")]
mod tls;

pub use sockeye_proto::{self as proto, CloseCode, CloseFrame, Config, Message, Role, Utf8Bytes};

pub use crate::client::{ClientBuilder, Http2Policy, SentRequest, connect};
pub use crate::config::{WebSocketConfig, WebSocketConfigBuilder};
pub use crate::driver::Incoming;
pub use crate::error::{Error, Kind, Timeout};
pub use crate::net::ConnectError;
#[cfg(feature = "proxy")]
pub use crate::proxy::{Proxy, ProxyError, ProxyProtocol, ProxyUrlError, SocksReply};
pub use crate::server::{
    Accept, DEFAULT_HANDSHAKE_MEMORY, DEFAULT_MAX_CONCURRENT_HANDSHAKES,
    DEFAULT_MIN_HANDSHAKE_RATE, HANDSHAKE_OVERHEAD, OriginPolicy, Reject, ServerBuilder, accept,
};
pub use crate::shutdown::{DEFAULT_GRACE_PERIOD, DrainGuard, DrainReport, Shutdown};
pub use crate::socket::WebSocket;
pub use crate::split::{WsReader, WsWriter};
pub use crate::stream::MaybeTlsStream;
#[cfg(feature = "rustls")]
pub use crate::tls::{
    TlsAcceptor, TlsAcceptorBuilder, TlsConfig, TlsError, TlsFailure, TlsHandshakeError,
    TlsSetupError,
};
/// The rustls crate, for [`TlsConfig::from_rustls`] and [`TlsAcceptor::from_rustls`].
#[cfg(feature = "rustls")]
pub use rustls;
pub use sockeye_proto::PreparedMessage;
pub use sockeye_proto::extension::DeflateConfig;
pub use sockeye_proto::handshake::UpgradeRequest;
pub use sockeye_proto::{DataFrame, DataKind};
