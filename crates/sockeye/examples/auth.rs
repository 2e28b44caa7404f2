//! Authenticating a browser in the opening handshake: a session cookie, or a token in the
//! query string (`?token=...`) for clients that cannot set a cookie. A request with neither is
//! refused with 401 before any WebSocket exists; the callback sees the request, not the socket.
//!
//! ```text
//! cargo run -p sockeye --example auth -- [ADDR]
//! sockeye connect -H 'Cookie: session=s3cret' ws://127.0.0.1:9001/   # welcome, ann
//! sockeye connect 'ws://127.0.0.1:9001/?token=t0ken'                  # welcome, bob
//! sockeye connect ws://127.0.0.1:9001/                                # exit code 4: 401
//! ```
//!
//! `docs/how-to/authentication.md` explains the choices (cookies and the Origin check, tokens
//! in URLs and logs). The sessions here are a fixed table; a real server looks them up.

use http::header::COOKIE;
use http::{Request, StatusCode};
use sockeye::proto::handshake::UpgradeRequest;
use sockeye::{Accept, Message, OriginPolicy, Reject, ServerBuilder};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("authenticating server on ws://{}/", listener.local_addr()?);
    serve(listener, server()).await
}

/// Who holds a session cookie or a token; a database or a signed token in a real server.
fn user_of(request: &Request<()>) -> Option<&'static str> {
    let cookies = request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim);
    for cookie in cookies {
        if cookie == "session=s3cret" {
            return Some("ann");
        }
    }
    let query = request.uri().query().unwrap_or("");
    if query.split('&').any(|pair| pair == "token=t0ken") {
        return Some("bob");
    }
    None
}

/// The handshake's policy: the default Origin check (pages of this host only: a cookie is sent
/// by the browser whichever site's page opens the connection), then the credentials.
pub(crate) fn server() -> ServerBuilder {
    ServerBuilder::new()
        .origin_policy(OriginPolicy::default())
        .on_request(
            |request: &UpgradeRequest| match user_of(request.request()) {
                Some(_) => Ok(Accept::new()),
                None => Err(Reject::new(StatusCode::UNAUTHORIZED, "log in first")),
            },
        )
}

/// Accepts connections for ever; each authenticated one is greeted by name.
pub(crate) async fn serve(listener: TcpListener, server: ServerBuilder) -> std::io::Result<()> {
    loop {
        let (tcp, _peer) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            // The request the callback admitted comes back with the WebSocket: the same
            // credentials name the user for the rest of the connection.
            let Ok((mut ws, request)) = server.accept_tcp_with_request(tcp).await else {
                return;
            };
            let user = user_of(&request).unwrap_or("?");
            let _ = ws.send(Message::text(format!("welcome, {user}"))).await;
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
}
