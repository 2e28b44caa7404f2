//! The client over HTTP/2 (feature `http2`, on by default): a WebSocket as a stream of an
//! HTTP/2 connection, opened by RFC 8441's extended CONNECT.
//!
//! [`connect`](crate::connect) and [`ClientBuilder::connect`] use it on their own for `wss://`
//! URLs ([`crate::Http2Policy::Prefer`]): they offer ALPN `h2` and
//! `http/1.1`, and when the server chooses `h2` and enables the extended CONNECT the
//! WebSocket is a stream ([`MaybeTlsStream::Http2`]); otherwise it is an HTTP/1.1 upgrade, on
//! the same connection when the server chose `http/1.1`, on a new one when it chose `h2`
//! without the extended CONNECT. The response's [`version`](http::Response::version) says
//! which.
//!
//! Many WebSocket connections can share one HTTP/2 connection ([`Http2Connection`]);
//! [`ClientBuilder::connect_http2`] opens a connection and one WebSocket on it.
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
//! For these explicit calls the server must choose `h2` by ALPN (over TLS; a `ws://` URL
//! speaks HTTP/2 with prior knowledge) and advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`;
//! otherwise opening fails with an I/O error of kind
//! [`Unsupported`](std::io::ErrorKind::Unsupported) (see [`is_http2_unavailable`]). There is
//! no fallback inside them.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::Response;
use sockeye_proto::Connection;
use sockeye_proto::handshake::{ClientAccepted, ClientHandshake, HandshakeError, WsUri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::client::{ClientBuilder, Http2Policy, SentRequest};
use crate::error::{Error, Kind, Timeout};
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;

/// The receive window of each stream the client opens: what one WebSocket whose application
/// stopped reading can hold of its connection's window.
pub const STREAM_WINDOW: u32 = 256 << 10;
/// The receive window of a client's connection, shared by its streams: sixteen stalled
/// streams' worth, so that one WebSocket that is not read does not stall the others.
pub const CONNECTION_WINDOW: u32 = 16 * STREAM_WINDOW;
/// How much a stream may buffer for sending beyond what the server's window lets through: a
/// WebSocket whose server stops reading then waits, it does not buffer more.
pub const MAX_SEND_BUF_SIZE: usize = 256 << 10;
/// The largest header list (HEADERS and CONTINUATION together, decoded) the client takes in a
/// response: a CONTINUATION flood ends there.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;

/// How much of a refusal's body is kept in the error.
const REFUSAL_BODY_PREFIX: usize = 1024;

/// An HTTP/2 connection to a server that accepts WebSocket streams (RFC 8441). Cheap to
/// clone; the connection closes when every clone and every WebSocket on it is dropped.
#[derive(Clone)]
pub struct Http2Connection {
    send: SendRequest<Bytes>,
    /// Whether TLS carries it.
    tls: bool,
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
        let deadline = Instant::now() + builder.websocket_config().handshake_timeout;
        match negotiate(builder, &uri, deadline).await? {
            Negotiated::Http2(connection) => Ok(connection),
            Negotiated::Http1(_) => Err(unavailable(NOT_CHOSEN)),
        }
    }

    /// Speaks HTTP/2 over a stream the caller opened (TLS that chose `h2`, a tunnel, an
    /// in-memory pipe) and waits for the server's SETTINGS, within `builder`'s handshake
    /// timeout. Its streams say they have no TLS ([`Http2Stream::is_tls`]), whatever `io` is.
    ///
    /// # Errors
    /// An HTTP/2 error as an I/O error, [`Kind::Timeout`], or an error for which
    /// [`is_http2_unavailable`] holds when the server does not enable the extended CONNECT.
    pub async fn open_on<T>(io: T, builder: &ClientBuilder) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let deadline = Instant::now() + builder.websocket_config().handshake_timeout;
        Self::handshake(io, false, deadline).await
    }

    async fn handshake<T>(io: T, tls: bool, deadline: Instant) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let expired = |_| Error::new(Kind::Timeout(Timeout::Handshake));
        let mut h2 = h2::client::Builder::new();
        h2.initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUF_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .enable_push(false);
        let (send, mut connection) = tokio::time::timeout_at(deadline, h2.handshake(io))
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
        Ok(Self { send, tls })
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
        let (stream, conn, accepted) = self.open_parts(&builder).await?;
        let ws = WebSocket::from_connection(
            stream,
            conn,
            builder.websocket_config(),
            BytesMut::new(),
            accepted.protocol,
        );
        Ok((ws, accepted.response))
    }

    /// The extended CONNECT and its answer: the stream, the core's connection as agreed, and
    /// the answer (with the request sent in its extensions, as [`SentRequest`]).
    async fn open_parts(
        &self,
        builder: &ClientBuilder,
    ) -> Result<(Http2Stream, Connection, ClientAccepted), Error> {
        let uri: WsUri = builder.url().parse()?;
        let handshake: ClientHandshake = builder.client_handshake(uri)?;
        let mut request = handshake.extended_connect_request()?;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let request_sent = describe(&request);
        let mut send = self.send.clone().ready().await.map_err(h2_error)?;
        let (response, stream) = send.send_request(request, false).map_err(h2_error)?;
        let (parts, mut recv) = response.await.map_err(h2_error)?.into_parts();
        let head = Response::from_parts(parts, ());
        let mut accepted = match handshake.handle_extended_connect_response(head) {
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
                    version: http::Version::HTTP_2,
                }));
            }
            Err(e) => return Err(e.into()),
        };
        let conn = builder.establish(&accepted)?;
        accepted.response.extensions_mut().insert(request_sent);
        let stream = Http2Stream {
            send: stream,
            recv,
            buf: Bytes::new(),
            ended: false,
            tls: self.tls,
        };
        Ok((stream, conn, accepted))
    }
}

/// What TLS (or, for `ws://`, prior knowledge) gave.
enum Negotiated {
    /// An HTTP/2 connection whose server enables the extended CONNECT.
    Http2(Http2Connection),
    /// TLS whose server chose `http/1.1` (or nothing) by ALPN.
    Http1(MaybeTlsStream),
}

/// The message of the error for a server that chose HTTP/1.1 by ALPN.
const NOT_CHOSEN: &str = "the server did not choose h2 by ALPN";

/// Opens the transport of `builder` to `uri` offering HTTP/2: over TLS, ALPN `h2` and
/// `http/1.1`; for `ws://`, HTTP/2 with prior knowledge. An HTTP/2 connection is returned once
/// the server's SETTINGS are in and enable the extended CONNECT; an error for which
/// [`is_http2_unavailable`] holds when they do not.
async fn negotiate(
    builder: &ClientBuilder,
    uri: &WsUri,
    deadline: Instant,
) -> Result<Negotiated, Error> {
    let tcp = builder.open_tcp(uri, deadline).await?;
    if uri.is_secure() {
        let tls =
            tokio::time::timeout_at(deadline, builder.tls_config().connect_h2(uri.host(), tcp))
                .await
                .map_err(|_| Error::new(Kind::Timeout(Timeout::Tls)))??;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(Negotiated::Http1(MaybeTlsStream::ClientTls(Box::new(tls))));
        }
        Http2Connection::handshake(tls, true, deadline)
            .await
            .map(Negotiated::Http2)
    } else {
        // Prior knowledge: a server that does not answer in HTTP/2 has none.
        Http2Connection::handshake(tcp, false, deadline)
            .await
            .map(Negotiated::Http2)
            .map_err(|e| {
                if matches!(e.kind(), Kind::Timeout(_)) || is_http2_unavailable(&e) {
                    e
                } else {
                    tracing::debug!(error = %e, "no HTTP/2 with prior knowledge");
                    unavailable("the server does not speak HTTP/2 with prior knowledge")
                }
            })
    }
}

/// [`ClientBuilder::connect`] when HTTP/2 may be used: the WebSocket over HTTP/2 when the
/// server takes it; otherwise, with [`Http2Policy::Prefer`], over HTTP/1.1 (on the same TLS
/// connection when the server chose `http/1.1` by ALPN, on a new one offering only `http/1.1`
/// when it chose `h2` without the extended CONNECT), all by `deadline`.
pub(crate) async fn connect(
    builder: ClientBuilder,
    uri: WsUri,
    policy: Http2Policy,
    deadline: Instant,
) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
    let prefer = policy == Http2Policy::Prefer;
    match negotiate(&builder, &uri, deadline).await {
        Ok(Negotiated::Http2(connection)) => {
            let (stream, conn, accepted) =
                tokio::time::timeout_at(deadline, connection.open_parts(&builder))
                    .await
                    .map_err(|_| Error::new(Kind::Timeout(Timeout::Handshake)))??;
            let ws = WebSocket::from_connection(
                MaybeTlsStream::Http2(Box::new(stream)),
                conn,
                builder.websocket_config(),
                BytesMut::new(),
                accepted.protocol,
            );
            Ok((ws, accepted.response))
        }
        Ok(Negotiated::Http1(stream)) if prefer => {
            tracing::debug!("the server chose HTTP/1.1 by ALPN");
            builder.handshake_by(uri, stream, deadline).await
        }
        Ok(Negotiated::Http1(_)) => Err(unavailable(NOT_CHOSEN)),
        Err(e) if prefer && is_http2_unavailable(&e) => {
            tracing::debug!(reason = %e, "HTTP/1.1 on a new connection");
            builder.connect_http1(uri, deadline).await
        }
        Err(e) => Err(e),
    }
}

/// The extended CONNECT as text, for logs (`--show-headers`): pseudo-headers first, as HTTP/2
/// sends them.
fn describe(request: &http::Request<()>) -> SentRequest {
    let uri = request.uri();
    let mut text = format!(
        ":method: {}\r\n:protocol: websocket\r\n:scheme: {}\r\n:authority: {}\r\n:path: {}\r\n",
        request.method(),
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map_or("", http::uri::Authority::as_str),
        uri.path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str),
    );
    for (name, value) in request.headers() {
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value.as_bytes()));
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    SentRequest(text.into())
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
    tls: bool,
}

impl Http2Stream {
    /// Whether TLS carries the connection (false for `ws://`, HTTP/2 with prior knowledge).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Sends up to what the peer's windows allow now of `chunks`, as one DATA frame: the
    /// number of bytes sent, or `Pending` until some window opens.
    fn poll_send(&mut self, cx: &mut Context<'_>, chunks: &[&[u8]]) -> Poll<io::Result<usize>> {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        // What the peer's windows let through now; the rest waits for WINDOW_UPDATEs.
        self.send.reserve_capacity(len);
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                let n = capacity.min(len);
                // One copy into the frame's buffer, however many chunks (a header and its
                // payload, several small messages) make it up.
                let mut data = BytesMut::with_capacity(n);
                for chunk in chunks {
                    let room = n - data.len();
                    if room == 0 {
                        break;
                    }
                    data.put_slice(&chunk[..chunk.len().min(room)]);
                }
                self.send
                    .send_data(data.freeze(), false)
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(cx, &[buf])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut chunks: [&[u8]; 64] = [&[]; 64];
        let count = bufs.len().min(chunks.len());
        for (chunk, buf) in chunks.iter_mut().zip(bufs) {
            *chunk = buf;
        }
        self.get_mut().poll_send(cx, &chunks[..count])
    }

    fn is_write_vectored(&self) -> bool {
        true
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
