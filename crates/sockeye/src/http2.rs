//! The client over HTTP/2 (feature `http2`): a WebSocket as a stream of an HTTP/2 connection,
//! opened by RFC 8441's extended CONNECT. Many WebSocket connections can share one connection
//! ([`Http2Connection`]); [`ClientBuilder::connect_http2`] opens a connection and one WebSocket
//! on it.
//!
//! ```no_run
//! # async fn run() -> Result<(), sockeye::Error> {
//! use sockeye::ClientBuilder;
//! use sockeye::http2::Http2Connection;
//!
//! let connection = Http2Connection::open(&ClientBuilder::new("wss://example.com/")).await?;
//! let (mut a, _) = connection.websocket(ClientBuilder::new("wss://example.com/rooms/a")).await?;
//! let (mut b, _) = connection.websocket(ClientBuilder::new("wss://example.com/rooms/b")).await?;
//! a.send(sockeye::Message::text("hello a")).await?;
//! b.send(sockeye::Message::text("hello b")).await?;
//! # Ok(()) }
//! ```
//!
//! The server must choose `h2` by ALPN (over TLS; a `ws://` URL speaks HTTP/2 with prior
//! knowledge) and advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`; otherwise opening fails with
//! an I/O error of kind [`Unsupported`](std::io::ErrorKind::Unsupported) (see
//! [`is_http2_unavailable`]), and the caller can connect over HTTP/1.1 instead
//! ([`ClientBuilder::connect`]). There is no fallback inside these calls.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::Response;
use sockeye_proto::handshake::{ClientHandshake, HandshakeError, WsUri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::ClientBuilder;
use crate::error::{Error, Kind, Timeout};
use crate::socket::WebSocket;

/// How much of a refusal's body is kept in the error.
const REFUSAL_BODY_PREFIX: usize = 1024;

/// An HTTP/2 connection to a server that accepts WebSocket streams (RFC 8441). Cheap to
/// clone; the connection closes when every clone and every WebSocket on it is dropped.
#[derive(Clone)]
pub struct Http2Connection {
    send: SendRequest<Bytes>,
}

impl fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection").finish_non_exhaustive()
    }
}

impl Http2Connection {
    /// Connects to the server of `builder`'s URL (its TLS settings, proxy and handshake
    /// timeout), speaks HTTP/2 and waits for the server's SETTINGS.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`]'s transport; an error when the server
    /// does not choose `h2` or does not enable the extended CONNECT ([`is_http2_unavailable`]).
    pub async fn open(builder: &ClientBuilder) -> Result<Self, Error> {
        let uri: WsUri = builder.url().parse()?;
        let deadline = tokio::time::Instant::now() + builder.websocket_config().handshake_timeout;
        let tcp = builder.open_tcp(&uri, deadline).await?;
        let expired = |_| Error::new(Kind::Timeout(Timeout::Tls));
        if uri.is_secure() {
            let tls =
                tokio::time::timeout_at(deadline, builder.tls_config().connect_h2(uri.host(), tcp))
                    .await
                    .map_err(expired)??
                    .ok_or_else(|| unavailable("the server did not choose h2 by ALPN"))?;
            Self::handshake(tls, deadline).await
        } else {
            // Prior knowledge: a server that does not answer in HTTP/2 has none.
            Self::handshake(tcp, deadline).await.map_err(|e| {
                if matches!(e.kind(), Kind::Timeout(_)) || is_http2_unavailable(&e) {
                    e
                } else {
                    tracing::debug!(error = %e, "no HTTP/2 with prior knowledge");
                    unavailable("the server does not speak HTTP/2 with prior knowledge")
                }
            })
        }
    }

    async fn handshake<T>(io: T, deadline: tokio::time::Instant) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let expired = |_| Error::new(Kind::Timeout(Timeout::Handshake));
        let (send, mut connection) = tokio::time::timeout_at(deadline, h2::client::handshake(io))
            .await
            .map_err(expired)?
            .map_err(h2_error)?;
        let mut ping = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
            }
        });
        // The server's SETTINGS come first: once our PING is answered, they are in.
        if let Some(ping) = ping.as_mut() {
            tokio::time::timeout_at(deadline, ping.ping(h2::Ping::opaque()))
                .await
                .map_err(expired)?
                .map_err(h2_error)?;
        }
        if !send.is_extended_connect_protocol_enabled() {
            return Err(unavailable(
                "the server does not enable the extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)",
            ));
        }
        Ok(Self { send })
    }

    /// Opens a WebSocket on this connection for `builder`'s URL (its path and query; the
    /// authority should be this connection's server), with its subprotocols, headers, Origin,
    /// permessage-deflate and limits, within its handshake timeout.
    ///
    /// # Errors
    /// [`Kind::Refused`] for an answer other than 2xx (with the start of its body), the
    /// handshake's errors for an answer that breaks the negotiation, HTTP/2 errors as I/O
    /// errors.
    pub async fn websocket(
        &self,
        builder: ClientBuilder,
    ) -> Result<(WebSocket<Http2Stream>, Response<()>), Error> {
        let timeout = builder.websocket_config().handshake_timeout;
        tokio::time::timeout(timeout, self.open_stream(builder))
            .await
            .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))?
    }

    async fn open_stream(
        &self,
        builder: ClientBuilder,
    ) -> Result<(WebSocket<Http2Stream>, Response<()>), Error> {
        let uri: WsUri = builder.url().parse()?;
        let handshake: ClientHandshake = builder.client_handshake(uri)?;
        let mut request = handshake.extended_connect_request()?;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let mut send = self.send.clone().ready().await.map_err(h2_error)?;
        let (response, stream) = send.send_request(request, false).map_err(h2_error)?;
        let (parts, mut recv) = response.await.map_err(h2_error)?.into_parts();
        let head = Response::from_parts(parts, ());
        let accepted = match handshake.handle_extended_connect_response(head) {
            Ok(accepted) => accepted,
            Err(HandshakeError::UnexpectedStatus { status, headers }) => {
                let mut body = BytesMut::new();
                while body.len() < REFUSAL_BODY_PREFIX {
                    match recv.data().await {
                        Some(Ok(data)) => {
                            let _ = recv.flow_control().release_capacity(data.len());
                            body.extend_from_slice(&data);
                        }
                        _ => break,
                    }
                }
                body.truncate(REFUSAL_BODY_PREFIX);
                return Err(Error::new(Kind::Refused {
                    status,
                    headers: *headers,
                    body: body.freeze(),
                }));
            }
            Err(e) => return Err(e.into()),
        };
        let conn = builder.establish(&accepted)?;
        let stream = Http2Stream {
            send: stream,
            recv,
            buf: Bytes::new(),
            ended: false,
        };
        let ws = WebSocket::from_connection(
            stream,
            conn,
            builder.websocket_config(),
            BytesMut::new(),
            accepted.protocol,
        );
        Ok((ws, accepted.response))
    }
}

/// One HTTP/2 stream carrying a WebSocket, as a byte stream. Flow-control capacity is given
/// back as the WebSocket consumes what arrived, so a WebSocket that is not read holds its
/// stream's window and no more. Shutting it down (the end of the close handshake) ends the
/// stream with `END_STREAM`; dropping it before resets the stream.
pub struct Http2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    buf: Bytes,
    ended: bool,
}

impl fmt::Debug for Http2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Stream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Http2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.buf.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                // END_STREAM: the end of the byte stream.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => self.buf = data,
                // RST_STREAM, GOAWAY or a connection error: an abort.
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        let _ = self.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Http2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // What the peer's windows let through now; the rest waits for WINDOW_UPDATEs.
        self.send.reserve_capacity(buf.len());
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                self.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes the frames out.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    io::Error::other(e)
}

fn h2_error(e: h2::Error) -> Error {
    Error::from(io_error(e))
}

/// The message of the errors that say HTTP/2 cannot carry the WebSocket.
const UNAVAILABLE: &str = "HTTP/2 unavailable: ";

fn unavailable(why: &'static str) -> Error {
    Error::from(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{UNAVAILABLE}{why}"),
    ))
}

/// Whether `error` says that the server does not take WebSocket connections over HTTP/2 (it did not
/// choose `h2`, or did not enable the extended CONNECT): then connect over HTTP/1.1, on a new
/// connection.
pub fn is_http2_unavailable(error: &Error) -> bool {
    matches!(error.kind(), Kind::Io(e) if e.kind() == io::ErrorKind::Unsupported
        && e.to_string().starts_with(UNAVAILABLE))
}
