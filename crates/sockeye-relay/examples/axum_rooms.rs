//! Rooms in axum: `cargo run --example axum_rooms [redis://HOST]`, members at `/rooms/NAME`.
use axum::extract::{Path, State};
use axum::{Router, response::Response, routing::get};
use sockeye::{DeflateConfig, ServerBuilder, axum::WebSocketUpgrade};
use sockeye_relay::{RedisBackplane, RedisError, RedisLimits, Relay};

async fn room(
    Path(name): Path<String>,
    State((server, relay)): State<(ServerBuilder, Relay)>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.accept(&server, move |ws| async move {
        let _ = relay.serve(ws, &name).await;
    })
}

/// The app: rooms at `/rooms/{name}`, shared over Redis when `redis` names one.
pub async fn app(redis: Option<&str>) -> Result<Router, RedisError> {
    let relay = match redis {
        Some(url) => Relay::builder()
            .backplane(RedisBackplane::connect(url, None, RedisLimits::new()).await?)
            .build(),
        None => Relay::new(),
    };
    // Without server context takeover, members share one compressed frame per message.
    let deflate = DeflateConfig::new().server_no_context_takeover(true);
    let state = (ServerBuilder::new().deflate(deflate), relay);
    Ok(Router::new()
        .route("/rooms/{name}", get(room))
        .with_state(state))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = app(std::env::args().nth(1).as_deref()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    Ok(axum::serve(listener, app).await?)
}
