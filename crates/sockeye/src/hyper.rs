//! WebSocket connections from a hyper 1 server (feature `hyper`): hyper parses the request and writes the
//! response; [`ServerBuilder::upgrade`] decides on the request with the builder's settings (the
//! [`OriginPolicy`](crate::OriginPolicy), the `on_request` callback, subprotocols,
//! permessage-deflate) and hands back the 101 response and the WebSocket to come.
//!
//! ```no_run
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//!
//! async fn handle(
//!     server: sockeye::ServerBuilder,
//!     mut request: Request<Incoming>,
//! ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
//!     if !sockeye::hyper::is_upgrade_request(&request) {
//!         return Ok(Response::new(Full::from("not a WebSocket request\n")));
//!     }
//!     match server.upgrade(&mut request) {
//!         Ok((response, websocket)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = websocket.await else { return };
//!                 while let Some(Ok(message)) = ws.next().await {
//!                     if message.is_data() && ws.send(message).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         // 400, 403, 426...: the response says why.
//!         Err(refused) => Ok(refused.into_response()),
//!     }
//! }
//! ```
//!
//! Serve HTTP/1.1 connections with upgrades on (`with_upgrades()` after hyper's
//! `http1::Builder::serve_connection`, or hyper-util's
//! `auto::Builder::serve_connection_with_upgrades`), or hyper never hands the connection over.
//! The size and time limits of the request head are hyper's;
//! [`ServerBuilder::max_concurrent_handshakes`] does not apply here. Where TLS ends in front of
//! hyper, tell the builder ([`ServerBuilder::served_over_tls`]), so that a same-host Origin is
//! held to `https`.
//!
//! # HTTP/2 (RFC 8441)
//!
//! Over HTTP/2 a WebSocket is a stream opened by an extended CONNECT (`:method CONNECT`,
//! `:protocol websocket`), which hyper accepts only when told to advertise
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`. [`http2_builder`] returns hyper's HTTP/2 builder with that
//! setting on and the limits this crate recommends; serve HTTP/2 connections with it, and the
//! same handler serves both versions: [`is_upgrade_request`] also recognizes an extended CONNECT
//! (hyper leaves its `:protocol` in the request's extensions as [`hyper::ext::Protocol`]), and
//! [`ServerBuilder::upgrade`] then answers `200` (or the refusal) instead of `101`, the core
//! making the same decision on Origin, subprotocols and extensions as over HTTP/1.1. The
//! WebSocket runs on the stream; its close handshake ends the stream (`END_STREAM`), and dropping
//! it resets the stream.
//!
//! A route without a WebSocket handler should answer extended CONNECTs as it answers HTTP/1.1
//! upgrades (404, say): a browser that was told the server speaks RFC 8441 does not fall back to
//! HTTP/1.1.
//!
//! Without a hyper service of your own, [`serve_connection`] serves one TLS connection for
//! WebSocket connections only, in whichever version ALPN chose.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::ext::Protocol;
use hyper::server::conn::http2;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sockeye_proto::handshake::{Refusal, Reject, asks_for_websocket};

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::Error;
use crate::server::{ServerBuilder, open, refused};
use crate::socket::WebSocket;

/// The stream under a WebSocket that hyper handed over.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Whether `request` asks for a WebSocket: an HTTP/1.1 upgrade (`Upgrade: websocket` and
/// `Connection: upgrade`) or an HTTP/2 extended CONNECT (method CONNECT with a `:protocol`): a
/// cheap test to route on. [`ServerBuilder::upgrade`] checks the rest.
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    asks_for_websocket(request.headers()) || is_extended_connect(request)
}

/// An RFC 8441 extended CONNECT: method CONNECT with a `:protocol` pseudo-header, which hyper
/// leaves in the request's extensions.
fn is_extended_connect<B>(request: &Request<B>) -> bool {
    request.method() == Method::CONNECT && request.extensions().get::<Protocol>().is_some()
}

/// How many streams (WebSocket connections and plain requests) one HTTP/2 connection may have open at
/// once ([`http2_builder`]).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// How many streams the client may reset before the server has even accepted them, the rapid
/// reset attack (CVE-2023-44487); past it the connection is closed with `ENHANCE_YOUR_CALM`.
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// How many streams the server may reset for the client's errors before it closes the
/// connection (a client that provokes resets in a loop).
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
/// The largest header list (decoded, HEADERS and CONTINUATION frames together) a request may
/// have: a CONTINUATION flood ends there.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 16 << 10;
/// How much a stream may buffer for sending beyond what the peer's window lets through: a
/// WebSocket whose peer stops reading then waits, it does not buffer more.
pub const H2_MAX_SEND_BUF_SIZE: usize = 256 << 10;
/// The receive window of each stream: what one WebSocket whose application stopped reading can
/// hold of the connection's window.
pub const H2_STREAM_WINDOW: u32 = 256 << 10;
/// The receive window of the connection, shared by its streams: sixteen stalled streams' worth,
/// so that one WebSocket that stops reading does not stall the others.
pub const H2_CONNECTION_WINDOW: u32 = 16 * H2_STREAM_WINDOW;

/// hyper's HTTP/2 server builder, ready for WebSocket streams: `SETTINGS_ENABLE_CONNECT_PROTOCOL`
/// advertised (RFC 8441), and the limits against HTTP/2's own attacks (the `H2_*` constants):
/// concurrent streams, rapid reset, resets provoked by errors, header list size (CONTINUATION
/// floods), the send buffer of each stream, and receive windows such that one stream that is
/// not read holds a sixteenth of the connection's window at most. Keep-alive pings every 30
/// seconds close a connection whose peer stopped answering for 20 more.
///
/// Change what you need on the returned builder; serve with
/// `builder.serve_connection(TokioIo::new(stream), service)` (no `with_upgrades` is needed on
/// HTTP/2).
#[must_use]
pub fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_send_buf_size(H2_MAX_SEND_BUF_SIZE)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The WebSocket of an accepted upgrade, once hyper has sent the 101 and handed the connection
/// over. Resolves to an error if the connection ends first.
#[must_use = "the WebSocket comes only when this is awaited (spawn it)"]
pub struct PendingUpgrade {
    inner: Pin<Box<dyn Future<Output = Result<WebSocket<Upgraded>, Error>> + Send>>,
}

impl Future for PendingUpgrade {
    type Output = Result<WebSocket<Upgraded>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for PendingUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingUpgrade").finish_non_exhaustive()
    }
}

/// A refused upgrade: the HTTP response to send instead of 101, and why.
pub struct Refused<R> {
    response: Response<R>,
    error: Error,
}

impl<R> Refused<R> {
    /// The response to send (its body is a short text naming the reason).
    pub fn into_response(self) -> Response<R> {
        self.response
    }

    /// Why: [`Error::status`] is the response's status.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The response and the error.
    pub fn into_parts(self) -> (Response<R>, Error) {
        (self.response, self.error)
    }
}

impl<R> fmt::Debug for Refused<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("status", &self.response.status())
            .field("error", &self.error)
            .finish()
    }
}

/// What the hyper and axum adapters take from a request: its head, the `:protocol` of an
/// extended CONNECT, and the connection (or HTTP/2 stream) to take over.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) request: Request<()>,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) on_upgrade: Option<OnUpgrade>,
}

impl Head {
    /// The head of a request hyper parsed; the connection to take over is taken out of
    /// `extensions`.
    pub(crate) fn new(
        method: &Method,
        uri: &http::Uri,
        version: Version,
        headers: &http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Self {
        let mut request = Request::new(());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.version_mut() = version;
        *request.headers_mut() = headers.clone();
        Self {
            request,
            protocol: extensions.get::<Protocol>().cloned(),
            on_upgrade: extensions.remove::<OnUpgrade>(),
        }
    }
}

/// The request head and the connection hyper left in its extensions.
pub(crate) fn take_head<B>(request: &mut Request<B>) -> Head {
    let (method, uri, version) = (
        request.method().clone(),
        request.uri().clone(),
        request.version(),
    );
    let headers = request.headers().clone();
    Head::new(&method, &uri, version, &headers, request.extensions_mut())
}

/// [`ServerBuilder::upgrade`] on a request head and the connection hyper left in its
/// extensions (`None`: one that cannot be upgraded): the core decides, this converts. An
/// HTTP/2 request is decided as an extended CONNECT, anything else as an HTTP/1.1 upgrade.
pub(crate) fn upgrade<R>(
    server: &ServerBuilder,
    head: Head,
) -> Result<(Response<R>, PendingUpgrade), Refused<R>>
where
    R: From<String>,
{
    let Head {
        request: head,
        protocol,
        on_upgrade,
    } = head;
    let policy = server.handshake_policy();
    let decided = if head.version() == Version::HTTP_2 {
        policy.accept_extended_connect(head, protocol.as_ref().map(Protocol::as_str), now())
    } else {
        policy.accept_request(head, now())
    };
    let accepted = decided.map_err(|refusal| {
        let response = refusal.response().clone().map(R::from);
        Refused {
            response,
            error: refused(refusal),
        }
    })?;
    // Without a connection to take over, a 101 would leave the client with nobody.
    let Some(on_upgrade) = on_upgrade else {
        let reason = "hyper offers no connection to upgrade (HTTP/1.1 with upgrades on, or HTTP/2 with the CONNECT protocol enabled, is needed)";
        let refusal = Refusal::from(Reject::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{reason}\n"),
        ));
        let mut response = refusal.response().clone().map(R::from);
        // HTTP/2 has no Connection header (RFC 9113 section 8.2.2).
        if accepted.request.version() == Version::HTTP_2 {
            response.headers_mut().remove(http::header::CONNECTION);
        }
        return Err(Refused {
            response,
            error: Error::from(std::io::Error::other(reason)),
        });
    };
    let response = accepted.response.clone().map(|()| R::from(String::new()));
    let config: WebSocketConfig = server.websocket_config().clone();
    let inner = Box::pin(async move {
        let upgraded = on_upgrade
            .await
            .map_err(|e| Error::from(std::io::Error::other(e)))?;
        Ok(open(&config, TokioIo::new(upgraded), accepted, BytesMut::new()).0)
    });
    Ok((response, PendingUpgrade { inner }))
}

/// Serves one connection with hyper, for WebSocket connections only: HTTP/2 when TLS chose
/// `h2` by ALPN ([`http2_builder`]; offer it with
/// [`TlsAcceptorBuilder::alpn_protocols`](crate::TlsAcceptorBuilder::alpn_protocols)), HTTP/1.1
/// with keep-alive otherwise. Every request goes to [`ServerBuilder::upgrade`]: each WebSocket
/// it accepts is handed to `on_websocket` with its request head, in a task of its own; other
/// requests get the refusal (426 to a plain HTTP/1.1 request, 405 to a plain HTTP/2 one).
/// Returns when the connection ends (on HTTP/1.1, once it has been upgraded).
///
/// For a server that also serves pages, route in a hyper service of your own instead.
///
/// # Errors
/// hyper's, as an I/O error: the connection failed or broke HTTP.
pub async fn serve_connection<F, Fut>(
    server: ServerBuilder,
    stream: crate::MaybeTlsStream,
    on_websocket: F,
) -> Result<(), Error>
where
    F: Fn(WebSocket<Upgraded>, Request<()>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let h2 = stream.alpn_protocol() == Some(b"h2");
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let head = {
            let mut head = Request::new(());
            *head.method_mut() = request.method().clone();
            *head.uri_mut() = request.uri().clone();
            *head.version_mut() = request.version();
            *head.headers_mut() = request.headers().clone();
            head
        };
        let response = match server.upgrade::<_, String>(&mut request) {
            Ok((response, websocket)) => {
                let on_websocket = on_websocket.clone();
                tokio::spawn(async move {
                    match websocket.await {
                        Ok(ws) => on_websocket(ws, head).await,
                        Err(e) => tracing::debug!(error = %e, "the upgrade did not complete"),
                    }
                });
                response
            }
            Err(refused) => {
                tracing::debug!(error = %refused.error(), "upgrade refused");
                refused.into_response()
            }
        };
        std::future::ready(Ok::<_, std::convert::Infallible>(
            response.map(http_body_util_full),
        ))
    });
    let io = TokioIo::new(stream);
    let outcome = if h2 {
        http2_builder().serve_connection(io, service).await
    } else {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(io, service)
            .with_upgrades()
            .await
    };
    outcome.map_err(|e| Error::from(std::io::Error::other(e)))
}

/// A response body of one chunk.
fn http_body_util_full(body: String) -> Full {
    Full(Some(bytes::Bytes::from(body)))
}

/// A response body of one chunk, without a dependency on `http-body-util`.
#[derive(Debug)]
struct Full(Option<bytes::Bytes>);

impl hyper::body::Body for Full {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(
            self.0
                .take()
                .filter(|data| !data.is_empty())
                .map(|data| Ok(hyper::body::Frame::data(data))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(bytes::Bytes::is_empty)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
    }
}
