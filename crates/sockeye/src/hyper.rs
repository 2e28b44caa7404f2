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
//! Serve the connection with upgrades on (`with_upgrades()` after hyper's
//! `http1::Builder::serve_connection`, or hyper-util's
//! `auto::Builder::serve_connection_with_upgrades`), or hyper never hands the connection over.
//! The size and time limits of the request head are hyper's;
//! [`ServerBuilder::max_concurrent_handshakes`] does not apply here. Where TLS ends in front of
//! hyper, tell the builder ([`ServerBuilder::served_over_tls`]), so that a same-host Origin is
//! held to `https`.
//!
//! HTTP/2 requests are answered 505: a WebSocket over HTTP/2 is RFC 8441's extended CONNECT,
//! which the core decides on (`ServerHandshake::accept_extended_connect`) but this adapter does
//! not serve yet.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sockeye_proto::handshake::{Refusal, Reject, asks_for_websocket};

use crate::config::WebSocketConfig;
use crate::driver::now;
use crate::error::Error;
use crate::server::{ServerBuilder, open, refused};
use crate::socket::WebSocket;

/// The stream under a WebSocket that hyper handed over.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Whether `request` asks for a WebSocket (`Upgrade: websocket` and `Connection: upgrade`):
/// a cheap test to route on. [`ServerBuilder::upgrade`] checks the rest.
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    asks_for_websocket(request.headers())
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

/// The request head and the connection hyper left in its extensions.
pub(crate) fn take_head<B>(request: &mut Request<B>) -> (Request<()>, Option<OnUpgrade>) {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    (head, request.extensions_mut().remove::<OnUpgrade>())
}

/// [`ServerBuilder::upgrade`] on a request head and the connection hyper left in its
/// extensions (`None`: one that cannot be upgraded): the core decides, this converts.
pub(crate) fn upgrade<R>(
    server: &ServerBuilder,
    head: Request<()>,
    on_upgrade: Option<OnUpgrade>,
) -> Result<(Response<R>, PendingUpgrade), Refused<R>>
where
    R: From<String>,
{
    let accepted = server
        .handshake_policy()
        .accept_request(head, now())
        .map_err(|refusal| {
            let response = refusal.response().clone().map(R::from);
            Refused {
                response,
                error: refused(refusal),
            }
        })?;
    // Without a connection to take over, a 101 would leave the client with nobody.
    let Some(on_upgrade) = on_upgrade else {
        let reason = "hyper offers no connection to upgrade (HTTP/1.1 with upgrades on is needed)";
        let refusal = Refusal::from(Reject::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{reason}\n"),
        ));
        return Err(Refused {
            response: refusal.response().clone().map(R::from),
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
