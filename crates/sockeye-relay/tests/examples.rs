//! Runs the `chat` example, the one `docs/tutorial.md` builds, as each step of the tutorial
//! does: two members in a room, then over TLS, then across two servers sharing a real
//! `redis-server`.

use std::net::SocketAddr;

use sockeye::{
    ClientBuilder, CloseCode, MaybeTlsStream, Message, ServerBuilder, TlsAcceptor, TlsConfig,
    WebSocket,
};
use sockeye_relay::{RedisBackplane, RedisLimits, Relay};
use sockeye_test_support::{self as support, Ca, bounded, listen};

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

type Member = WebSocket<MaybeTlsStream>;

/// The chat example serving `relay`'s rooms with `server` on a fresh loopback port.
async fn chat_example(server: ServerBuilder, relay: Relay) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(chat::serve(listener, server, relay));
    addr
}

/// A member named `name` of the room at `url`, once it has joined: the room's member list,
/// which the server sends to named members as they join, has arrived.
async fn join(client: ClientBuilder, name: &str) -> Member {
    let (mut ws, _) = client.connect().await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Text(text) => {
            assert!(text.contains(r#""event":"members""#), "{text}");
            assert!(text.contains(&format!(r#""name":"{name}""#)), "{text}");
        }
        other => panic!("expected the member list, got {other:?}"),
    }
    ws
}

/// Waits for the notice that `name` joined. A member answers only once it has read what was
/// waiting for it: `send` leaves its write to the next `next()` while received messages are
/// already buffered, so a notice read in the same read as the member list would hold it back.
async fn heard_join(ws: &mut Member, name: &str) {
    match ws.next().await.unwrap().unwrap() {
        Message::Text(text) => {
            assert!(text.contains(r#""event":"join""#), "{text}");
            assert!(text.contains(&format!(r#""name":"{name}""#)), "{text}");
        }
        other => panic!("expected {name}'s joining, got {other:?}"),
    }
}

/// The next chat message, skipping presence notices.
async fn said(ws: &mut Member) -> Message {
    loop {
        let message = ws.next().await.unwrap().unwrap();
        match &message {
            Message::Text(text) if text.contains(r#""sockeye":"presence""#) => {}
            _ => return message,
        }
    }
}

/// Two members of `url`'s room and one of another room: what is said in the room reaches the
/// other member, in order, and nothing reaches the other room.
async fn talk(client: impl Fn(&str) -> ClientBuilder) {
    let mut ann = join(client("/rooms/lobby?name=ann"), "ann").await;
    let mut bob = join(client("/rooms/lobby?name=bob"), "bob").await;
    heard_join(&mut ann, "bob").await;
    let mut cy = join(client("/rooms/kitchen?name=cy"), "cy").await;
    ann.send(Message::text("hi bob")).await.unwrap();
    ann.send(Message::binary(vec![1_u8, 2, 3])).await.unwrap();
    assert_eq!(said(&mut bob).await, Message::text("hi bob"));
    assert_eq!(said(&mut bob).await, Message::binary(vec![1_u8, 2, 3]));
    bob.send(Message::text("hi ann")).await.unwrap();
    assert_eq!(said(&mut ann).await, Message::text("hi ann"));
    // The other room heard nothing: its next message is the answer to its own close.
    cy.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(cy.next().await.is_none());
    ann.close(CloseCode::NORMAL, "").await.unwrap();
    // Bob is told that ann left; nothing is on its way to bob when it closes.
    match bob.next().await.unwrap().unwrap() {
        Message::Text(text) => assert!(text.contains(r#""event":"leave""#), "{text}"),
        other => panic!("expected ann's leaving, got {other:?}"),
    }
    bob.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn chat_members_of_a_room_hear_each_other() {
    bounded(async {
        let addr = chat_example(ServerBuilder::new(), Relay::new()).await;
        talk(|path| ClientBuilder::new(format!("ws://{addr}{path}"))).await;
        // A path outside /rooms/ is closed with 1008 and a reason.
        let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/")).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::POLICY_VIOLATION);
                assert_eq!(frame.reason, "rooms are at /rooms/NAME");
            }
            other => panic!("expected a Close, got {other:?}"),
        }
        assert!(ws.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn chat_over_tls() {
    bounded(async {
        let ca = Ca::new("chat ca");
        let leaf = ca.server(&["localhost"]);
        let tls =
            TlsAcceptor::from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let addr = chat_example(ServerBuilder::new().tls(tls), Relay::new()).await;
        let roots = TlsConfig::new()
            .webpki_roots(false)
            .add_root_pem(ca.pem().as_bytes())
            .unwrap();
        talk(|path| {
            ClientBuilder::new(format!("wss://localhost:{}{path}", addr.port())).tls(roots.clone())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn chat_across_two_servers_over_redis() {
    bounded(async {
        let port = support::free_port();
        let Some(_redis) = support::redis_server(port).await else {
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let mut servers = Vec::new();
        for _ in 0..2 {
            let redis = RedisBackplane::connect(&url, None, RedisLimits::new())
                .await
                .unwrap();
            let relay = Relay::builder().backplane(redis).build();
            servers.push(chat_example(ServerBuilder::new(), relay).await);
        }
        let mut ann = join(
            ClientBuilder::new(format!("ws://{}/rooms/lobby?name=ann", servers[0])),
            "ann",
        )
        .await;
        let mut bob = join(
            ClientBuilder::new(format!("ws://{}/rooms/lobby?name=bob", servers[1])),
            "bob",
        )
        .await;
        // Each server subscribes to the room's channel while it has members there.
        support::until_redis_subscribers(port, "sockeye:room:lobby", 2).await;
        heard_join(&mut ann, "bob").await;
        ann.send(Message::text("hi from one")).await.unwrap();
        assert_eq!(said(&mut bob).await, Message::text("hi from one"));
        bob.send(Message::text("hi from two")).await.unwrap();
        assert_eq!(said(&mut ann).await, Message::text("hi from two"));
        ann.close(CloseCode::NORMAL, "").await.unwrap();
        bob.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}
