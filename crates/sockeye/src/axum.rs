//! WebSocket connections in an axum app (feature `axum`): the [`WebSocketUpgrade`] extractor.
//!
//! ```no_run
//! use axum::Router;
//! use axum::extract::State;
//! use axum::response::Response;
//! use axum::routing::any;
//! use sockeye::axum::WebSocketUpgrade;
//! use sockeye::{DeflateConfig, ServerBuilder};
//!
//! async fn chat(State(server): State<ServerBuilder>, upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.accept(&server, |mut ws| async move {
//!         while let Some(Ok(message)) = ws.next().await {
//!             if message.is_data() && ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = ServerBuilder::new().deflate(DeflateConfig::new());
//! // `any`: an HTTP/1.1 upgrade is a GET, an HTTP/2 one (RFC 8441) a CONNECT.
//! let app = Router::new().route("/chat", any(chat)).with_state(server);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Over HTTP/2 the request is an extended CONNECT: route it with `any` (or
//! `get(chat).connect(chat)`), and serve HTTP/2 with `SETTINGS_ENABLE_CONNECT_PROTOCOL`
//! advertised ([`crate::hyper::http2_builder`] has it; with `axum::serve`, HTTP/2 is not offered).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::Request;
use http::request::Parts;

use crate::hyper::{Head, Upgraded};
use crate::server::ServerBuilder;
use crate::socket::WebSocket;

/// An extractor for a WebSocket upgrade: the request head and the connection to take over.
/// It never rejects; a request that is not a valid upgrade is answered (400, 426...) by
/// [`accept`](Self::accept).
pub struct WebSocketUpgrade {
    head: Head,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let head = Head::new(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            &mut parts.extensions,
        );
        Ok(Self { head })
    }
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for a WebSocket, so one
/// route can serve a page and a WebSocket.
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Infallible> {
        let extended_connect = parts.method == http::Method::CONNECT
            && parts.extensions.get::<hyper::ext::Protocol>().is_some();
        if !sockeye_proto::handshake::asks_for_websocket(&parts.headers) && !extended_connect {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

impl WebSocketUpgrade {
    /// The request (method, URI, headers), to decide on before accepting.
    pub fn request(&self) -> &Request<()> {
        &self.head.request
    }

    /// Accepts with `server`'s settings (Origin policy, `on_request` callback, subprotocols,
    /// deflate, limits) and runs `callback` on the WebSocket once the 101 is sent. Returns the
    /// response: 101, or the refusal (400, 403, 426, the callback's status).
    pub fn accept<F, Fut>(self, server: &ServerBuilder, callback: F) -> Response
    where
        F: FnOnce(WebSocket<Upgraded>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match crate::hyper::upgrade::<Body>(server, self.head) {
            Ok((response, websocket)) => {
                tokio::spawn(async move {
                    match websocket.await {
                        Ok(ws) => callback(ws).await,
                        Err(e) => tracing::debug!(error = %e, "the upgrade did not complete"),
                    }
                });
                response
            }
            Err(refused) => {
                tracing::debug!(error = %refused.error(), "upgrade refused");
                refused.into_response()
            }
        }
    }

    /// [`accept`](Self::accept) with the default settings ([`ServerBuilder::new`]).
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket<Upgraded>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.accept(&ServerBuilder::new(), callback)
    }
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("uri", self.head.request.uri())
            .field("protocol", &self.head.protocol)
            .field("upgradable", &self.head.on_upgrade.is_some())
            .finish()
    }
}

/// A refusal is a response an axum handler can return as it is.
impl IntoResponse for crate::hyper::Refused<Body> {
    fn into_response(self) -> Response {
        self.into_parts().0
    }
}
