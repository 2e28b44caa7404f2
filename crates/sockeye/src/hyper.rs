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
//! which is not spoken here.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sockeye_proto::handshake::{UpgradeRequest, asks_for_websocket, check_reject};

use crate::config::WebSocketConfig;
use crate::error::{Error, Kind};
use crate::server::{ServerBuilder, open};
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

impl ServerBuilder {
    /// Answers a WebSocket upgrade request that hyper parsed: checks it (RFC 6455 section
    /// 4.2.1), applies the Origin policy and the `on_request` callback, and picks the
    /// subprotocol and extension. Returns the 101 response for hyper to send and the WebSocket
    /// to await after it; or, refused, the response to send instead.
    ///
    /// `R` is the response body type (`Full<Bytes>`, `String`, axum's `Body`...); a refusal's
    /// body is plain text.
    ///
    /// The connection to take over is taken out of `request`'s extensions whether or not the
    /// upgrade is accepted.
    ///
    /// # Errors
    /// [`Refused`] with 400, 403, 405, 426 or 505, or the callback's status; 500 when hyper
    /// offers no connection to take over, or the callback's refusal is not a valid response.
    pub fn upgrade<B, R>(
        &self,
        request: &mut Request<B>,
    ) -> Result<(Response<R>, PendingUpgrade), Refused<R>>
    where
        R: From<String>,
    {
        let mut head = Request::new(());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.version_mut() = request.version();
        *head.headers_mut() = request.headers().clone();
        let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
        self.upgrade_head(head, on_upgrade)
    }

    /// [`upgrade`](Self::upgrade) on a request head and the connection hyper left in its
    /// extensions (`None`: one that cannot be upgraded).
    pub(crate) fn upgrade_head<R>(
        &self,
        head: Request<()>,
        on_upgrade: Option<OnUpgrade>,
    ) -> Result<(Response<R>, PendingUpgrade), Refused<R>>
    where
        R: From<String>,
    {
        let checked = UpgradeRequest::from_request(head).map_err(|e| {
            let (status, headers, body) = e
                .response_parts()
                .unwrap_or_else(|| (StatusCode::BAD_REQUEST, HeaderMap::new(), format!("{e}\n")));
            refused(status, &headers, body, Error::from(e))
        })?;
        let agreement = self.agree(&checked).map_err(|reject| {
            let (status, headers, body) = reject.parts();
            // The checks `reject_response` makes on the other path: a status with a body, and
            // none of the headers the refusal sets.
            if let Err(misuse) = check_reject(status, headers) {
                return internal_error(Error::from(misuse));
            }
            let error = Error::new(Kind::Refused {
                status,
                headers: headers.clone(),
                body: body.to_owned().into(),
            });
            refused(status, headers, body.to_owned(), error)
        })?;
        // Without a connection to take over, a 101 would leave the client with nobody.
        let Some(on_upgrade) = on_upgrade else {
            return Err(internal_error(Error::from(std::io::Error::other(
                "hyper offers no connection to upgrade (HTTP/1.1 with upgrades on is needed)",
            ))));
        };
        let response = checked
            .accept_response(
                agreement.protocol.as_deref(),
                &agreement.answers,
                &agreement.headers,
            )
            .map_err(|e| internal_error(Error::from(e)))?;
        let config: WebSocketConfig = self.websocket_config().clone();
        let inner = Box::pin(async move {
            let upgraded = on_upgrade
                .await
                .map_err(|e| Error::from(std::io::Error::other(e)))?;
            Ok(open(
                &config,
                TokioIo::new(upgraded),
                agreement,
                BytesMut::new(),
            ))
        });
        let (parts, ()) = response.into_parts();
        Ok((
            Response::from_parts(parts, R::from(String::new())),
            PendingUpgrade { inner },
        ))
    }
}

/// A 500 for a misuse on the server's side.
fn internal_error<R: From<String>>(error: Error) -> Refused<R> {
    let body = format!("{error}\n");
    refused(
        StatusCode::INTERNAL_SERVER_ERROR,
        &HeaderMap::new(),
        body,
        error,
    )
}

/// A plain-text refusal; the connection closes after it, as on the other path.
fn refused<R: From<String>>(
    status: StatusCode,
    headers: &HeaderMap,
    body: String,
    error: Error,
) -> Refused<R> {
    let mut response = Response::new(R::from(body));
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    out.insert(CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in headers {
        out.append(name, value.clone());
    }
    Refused { response, error }
}
