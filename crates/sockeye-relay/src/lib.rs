//! `sockeye-relay`: rooms for WebSocket servers. Every message a member of a room sends reaches
//! every other member, in the order it was sent, once; across processes too, over Redis.
//!
//! ```no_run
//! use axum::extract::{Path, State};
//! use axum::response::Response;
//! use axum::routing::get;
//! use sockeye::ServerBuilder;
//! use sockeye::axum::WebSocketUpgrade;
//! use sockeye_relay::Relay;
//!
//! async fn room(
//!     Path(name): Path<String>,
//!     State(relay): State<Relay>,
//!     upgrade: WebSocketUpgrade,
//! ) -> Response {
//!     upgrade.accept(&ServerBuilder::new(), move |ws| async move {
//!         let _ = relay.serve(ws, &name).await;
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = axum::Router::new()
//!     .route("/rooms/{name}", get(room))
//!     .with_state(Relay::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! For rooms shared by several processes, build the relay with a `RedisBackplane` (feature
//! `redis`, on by default):
//! `Relay::builder().backplane(RedisBackplane::connect(url, None, RedisLimits::new()).await?)`
//! (the `axum_rooms` example does).
//!
//! # Presence
//! A member served with a name ([`Relay::serve_named_until`]) takes part in presence: the
//! server sends it, and it alone, small JSON text messages that other clients never see:
//! - on joining, the room's named members (itself included):
//!   `{"sockeye":"presence","event":"members","you":{"id":7,"name":"ann"},"members":[{"id":3,"name":"bob"},{"id":7,"name":"ann"}]}`;
//! - when another named member joins or leaves (closed as too slow included):
//!   `{"sockeye":"presence","event":"join","member":{"id":9,"name":"cy"}}`, and `"leave"`.
//!
//! Names are display names, not identities: control characters are dropped and they are cut
//! to 32 characters. The lists cover the members of this process, and with a backplane that
//! shares presence (`RedisBackplane` does) those of the other nodes, whose ids are strings
//! (`"NODE.ID"`); the notices go through the members' queues and count against their limits
//! like any message.
//!
//! # History
//! With history on ([`RelayBuilder::history`]), each room keeps its last messages
//! ([`HistoryLimits`]: 100 by default, for an hour at most), each numbered with a
//! [`HistoryId`], `MS-SEQ`: in memory with the in-process backplane; with `RedisBackplane`, in
//! one Redis stream per room (`XADD … MAXLEN ~ N`), where Redis numbers each message as it
//! adds it and the same script publishes it with its id, so that every node hands out the same
//! ids. Without history nothing changes: no ids, no extra work on Redis.
//!
//! A member that asks for ids ([`JoinOptions::since`]; `sockeye serve`'s `?since=`) is sent,
//! right after each room message, a small JSON text with its id:
//! `{"sockeye":"id","id":"1733150000000-0"}`. Joining with [`Since::After`] the id of the last
//! message it saw, it first gets the room's messages after that id, each followed by its id,
//! then the live ones, with no gap and none twice (live messages wait aside while history is
//! read; those the replay had are dropped). When history no longer holds everything after the
//! id (trimmed, expired, a restarted process or Redis), or holds more than the member's queue
//! bound ([`QueueLimits::new`]; the newest are sent), the replay starts with
//! `{"sockeye":"history","event":"truncated"}`. Members that do not ask see exactly the room's
//! messages, as without history. A notice is a separate text message rather than an envelope
//! around the message so that such members and binary messages stay as they are; the notices
//! count against the member's queue like any message.
//!
//! With history over Redis, Redis orders each room: a member's message reaches the other
//! members of its own node too once Redis has stored it (one round trip later), so while Redis
//! is away the members of one node wait for it as the others do, their messages queued. A
//! sender waits while the pause threshold's worth of its own messages ([`QueueLimits::pause_at`])
//! is on its way back, so that a burst goes at the pace of Redis and the members.
//!
//! # Backpressure and shutdown
//! A sender whose room cannot take more waits, its reads paused, while another member has
//! half its queue bound waiting ([`QueueLimits::pause_at`]); a member is closed with 1008 only
//! for being slow: when it holds its room back for longer than [`QueueLimits::max_stall`]
//! (5 s), or when a message that cannot wait (from another node, from [`Relay::publish`])
//! would put it over its hard bound. Given a [`Shutdown`](sockeye::Shutdown)
//! ([`RelayBuilder::shutdown`]), the relay drains its members: each writes out what was queued
//! for it before the signal, closes with 1001, and what a member could not write within the
//! grace period is counted in the [`DrainReport`](sockeye::DrainReport).
//!
//! # Layers
//! - [`core`]: the rooms without I/O. Joining, leaving and publishing return who gets a message,
//!   whether the sender waits, and who is closed with which code (1008 for a member too slow to
//!   keep up with its room, 1013 for a sender the backplane cannot take a message from); each
//!   member's queue is bounded in messages and bytes ([`QueueLimits`]). Tested without sockets
//!   or runtime.
//! - [`Relay`]: that core on tokio; [`Relay::serve`] runs one member's connection. A message is
//!   framed once ([`PreparedMessage`](sockeye::PreparedMessage)) and the same bytes are written
//!   to every member, everything queued for a member in one flush; members that negotiated
//!   permessage-deflate without server context takeover share one compressed frame, the others
//!   compress their own.
//! - [`backplane`]: the [`Backplane`] trait, the in-process [`Local`] and `RedisBackplane`,
//!   and the [wire format](backplane::wire) on Redis.
//! - [`history`]: message ids, the in-memory history and the merge of a replay with the live
//!   messages, without I/O.

// docs.rs (`--cfg docsrs`, on nightly): each item marked with the Cargo features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backplane;
pub mod core;
pub mod history;
mod relay;

pub use crate::backplane::{Backplane, Inbound, Local, Overloaded, RemoteMember};
#[cfg(feature = "redis")]
pub use crate::backplane::{RedisBackplane, RedisBuilder, RedisError, RedisLimits};
pub use crate::core::{DEFAULT_MAX_STALL, MemberId, QueueLimits};
pub use crate::history::{HistoryId, HistoryLimits, Since};
pub use crate::relay::{JoinOptions, Relay, RelayBuilder, RelayStats};
