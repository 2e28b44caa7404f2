//! Rooms in axum: `cargo run --example axum_rooms [redis://HOST]`, members at `/rooms/NAME`.
use axum::extract::{Path, State};
use axum::{Router, response::Response, routing::get};
use sockeye::{DeflateConfig, ServerBuilder, axum::WebSocketUpgrade};
use sockeye_relay::{RedisBackplane, RedisLimits, Relay};

async fn room(
    Path(name): Path<String>,
    State((server, relay)): State<(ServerBuilder, Relay)>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.accept(&server, move |ws| async move {
        let _ = relay.serve(ws, &name).await;
    })
}

/// Members of `relay`'s rooms at `/rooms/{name}`. Without server context takeover, members that
/// compress share one compressed frame per message.
pub fn app(relay: Relay) -> Router {
    let deflate = DeflateConfig::new().server_no_context_takeover(true);
    let state = (ServerBuilder::new().deflate(deflate), relay);
    Router::new()
        .route("/rooms/{name}", get(room))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Shared with every other process on that Redis, or in this process only.
    let relay = match std::env::args().nth(1) {
        Some(url) => {
            let redis = RedisBackplane::connect(&url, None, RedisLimits::new()).await?;
            Relay::builder().backplane(redis).build()
        }
        None => Relay::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    Ok(axum::serve(listener, app(relay)).await?)
}
